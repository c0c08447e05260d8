"""This process's counters file: where it lives, the rules its directory and
file must pass, and the writer's arming, fork and exit.

The writer itself is C (``_ext``'s telemetry functions, _ext_telemetry.c):
arming stores what it needs, and its thread starts at the first activation
of any probe, then opens the file through :func:`_Opener.__call__` (under
the GIL, in the writer's thread) and writes a snapshot every interval.

Rules (JVM hsperfdata's, with a per-service directory): the directory is
0700 (0750 when the files are widened to a group mode), owned by this user,
not a symlink, not writable by group or others, and opened with
``O_DIRECTORY|O_NOFOLLOW`` and checked against its ``lstat``; the file is
created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` in that directory, must have one
link, is locked ``LOCK_EX`` for the writer's life (liveness for readers),
and its blocks are reserved with ``posix_fallocate`` so that a full tmpfs
fails at open, never with SIGBUS later.

Imported only when telemetry is switched on: ``import fastpatch`` and an
activation without ``FASTPATCH_TELEMETRY`` never load it.
"""

from __future__ import annotations

import os
import sys

from .._errors import say
from .._native import ext as _ext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

#: Shortest and longest interval between snapshots, in seconds.
MIN_INTERVAL = 0.01
MAX_INTERVAL = 86400.0
DEFAULT_MODE = 0o600


class UnsafeDirectory(ValueError):
    """The telemetry directory breaks a rule; the message names the problem."""


def service_name(service: Optional[str] = None) -> str:
    """``service``, else FASTPATCH_SERVICE, else OTEL_SERVICE_NAME, else the
    program's name; as one path component."""
    env = os.environ
    name = service or env.get("FASTPATCH_SERVICE", "").strip() or env.get("OTEL_SERVICE_NAME", "").strip()
    if not name:
        argv0 = sys.argv[0] if sys.argv and isinstance(sys.argv[0], str) else ""
        name = "python" if argv0 in ("", "-c", "-m") else os.path.splitext(os.path.basename(argv0))[0] or "python"
        if name == "__main__":  # python -m pkg: the package's name
            main = sys.modules.get("__main__")
            spec = getattr(main, "__spec__", None)
            name = (getattr(spec, "name", "") or "python").split(".")[0]
    name = name.replace(os.sep, "_").replace("\0", "_")
    return "_" + name if name.startswith(".") else name


def default_root() -> str:
    """Where the service directories are: ``$XDG_RUNTIME_DIR/fastpatch``,
    else ``/dev/shm/fastpatch-<uid>`` (never bare /tmp)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return os.path.join(xdg, "fastpatch")
    return os.path.join("/dev/shm", f"fastpatch-{os.geteuid()}")


def default_directory(service: Optional[str] = None) -> str:
    """The default directory of a service (see :func:`service_name`)."""
    return os.path.join(default_root(), service_name(service))


def file_mode(text: Optional[str] = None) -> int:
    """The file mode of FASTPATCH_TELEMETRY_MODE (octal), 0600 by default;
    ValueError for anything but an octal mode with no execute, group-write
    or other-write bit."""
    text = os.environ.get("FASTPATCH_TELEMETRY_MODE", "") if text is None else text
    text = text.strip()
    if not text:
        return DEFAULT_MODE
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f"FASTPATCH_TELEMETRY_MODE={text!r} is not an octal file mode such as 0600 or 0640") from None
    if mode & ~0o644 or not mode & 0o600 == 0o600:
        raise ValueError(f"FASTPATCH_TELEMETRY_MODE={text!r} must give the owner read and write and nobody else "
                         "write or execute (0600, 0640 or 0644)")
    return mode


def directory_mode(mode: int) -> int:
    """The directory's mode for files of ``mode``: search where they are readable."""
    extra = (0o050 if mode & 0o040 else 0) | (0o005 if mode & 0o004 else 0)
    return 0o700 | extra


def _check_directory(path: str) -> int:
    """An O_DIRECTORY|O_NOFOLLOW descriptor of ``path`` once it passes the
    rules; UnsafeDirectory naming the problem otherwise."""
    import stat

    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDirectory(f"telemetry directory {path} is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"telemetry directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafeDirectory(f"telemetry directory {path} belongs to uid {st.st_uid}, not to this user "
                              f"(uid {os.geteuid()})")
    if st.st_mode & 0o022:
        raise UnsafeDirectory(f"telemetry directory {path} is writable by group or others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o})")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnsafeDirectory(f"telemetry directory {path} cannot be opened: {exc.strerror}") from None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise UnsafeDirectory(f"telemetry directory {path} was replaced while it was opened")
    return fd


def secure_directory(path: str, mode: int) -> int:
    """Make ``path`` (and missing parents, mode 0700) and return a checked
    descriptor of it (see :func:`_check_directory`). UnsafeDirectory or
    OSError when it cannot be had."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o700, exist_ok=True)
        if os.path.basename(parent).startswith("fastpatch"):
            os.close(_check_directory(parent))
    try:
        os.mkdir(path, directory_mode(mode))
    except FileExistsError:
        pass
    return _check_directory(path)


def start_ticks() -> int:
    """This process's start time in clock ticks since boot (field 22 of
    /proc/self/stat): with the pid, unique per boot. 0 where there is none."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            text = fh.read()
    except OSError:
        return 0
    return int(text[text.rindex(b")") + 2:].split()[19])


def file_name(pid: int, ticks: int) -> str:
    return f"fastpatch-{pid}-{ticks}.fpt"


#: The writer's warning lines on stderr: fastpatch's one helper for them.
_warn = say


#: statfs f_type of the RAM-backed filesystems (linux/magic.h).
TMPFS_MAGIC = 0x01021994
RAMFS_MAGIC = 0x858458F6
_warned_not_ram_backed = False


def _warn_unless_ram_backed(path: str, dir_fd: int) -> None:
    """One warning line per process when the directory is not on tmpfs or
    ramfs (Linux): every snapshot then dirties pages that the kernel writes
    back to a disk. The directory is used all the same."""
    global _warned_not_ram_backed
    if _warned_not_ram_backed or not sys.platform.startswith("linux"):
        return
    try:
        kind = _ext.filesystem_type(dir_fd)
    except OSError:
        return  # nothing known about it: no reason to complain
    if kind not in (TMPFS_MAGIC, RAMFS_MAGIC, -1):
        _warned_not_ram_backed = True
        _warn(f"telemetry directory {path} is not on a RAM-backed filesystem (tmpfs or ramfs): every snapshot "
              "is written back to disk; choose one in /dev/shm or $XDG_RUNTIME_DIR")


class _Opener:
    """Called by the writer's thread (under the GIL) at its first snapshot:
    creates this process's file in the checked directory and returns
    ``(fd, start_ticks)``, or None after one warning line."""

    def __init__(self, path: str, dir_fd: int, mode: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.mode = mode

    def __call__(self, size: int) -> Optional[Tuple[int, int]]:
        import fcntl
        import stat

        ticks = start_ticks()
        name = file_name(os.getpid(), ticks)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(name, flags, self.mode, dir_fd=self.dir_fd)
            except FileExistsError:
                # This process's own file from before a stop(): fold it into the archive, then start anew.
                from ._files import sweep

                sweep(self.path)
                fd = os.open(name, flags, self.mode, dir_fd=self.dir_fd)
        except OSError as exc:
            _warn(f"cannot create the telemetry file {os.path.join(self.path, name)}: {exc.strerror}; "
                  "no live telemetry")
            return None
        try:
            os.fchmod(fd, self.mode)  # the umask may have narrowed it
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
                raise OSError(0, "the new file is not a regular file of this user with one link")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            os.close(fd)
            try:
                os.unlink(name, dir_fd=self.dir_fd)
            except OSError:
                pass
            _warn(f"cannot set up the telemetry file {os.path.join(self.path, name)}: "
                  f"{exc.strerror or exc}; no live telemetry")
            return None
        return fd, ticks


def _join_run(path: str, dir_fd: int) -> int:
    """Join the run of the directory: every process of a run holds
    ``run.lock`` shared (forked children share their parent's). The first
    process that can lock it exclusively knows that no process of an
    earlier run lives: it folds their files into the archive and moves the
    archive aside as ``previous-archive.fpt``, so that a new run (a
    restarted service) counts from zero. Returns the lock's descriptor."""
    import fcntl

    from ._files import ARCHIVE_NAME, sweep

    fd = os.open("run.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # a run is under way: join it
        else:
            sweep(path)
            try:
                os.rename(ARCHIVE_NAME, "previous-archive.fpt", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _names(probes: Sequence[Any]) -> List[Tuple[str, str, str, int]]:
    """(module, qualname, filename, firstlineno) of each probe's definition,
    for the writer's new records."""
    # No lock and no registration here: this runs on the writer's thread,
    # and another thread may hold the registry's lock while it waits for the
    # writer (a fork joins it). A definition the import hook spliced and
    # nothing registered yet is named from its Origin in the lazy table.
    from .._registry import registered_definition

    out = []
    lazy: Optional[Dict[int, Any]] = None
    for probe in probes:
        d = registered_definition(probe)
        if d is not None:
            module, qualname, code = d.module, d.qualname, d.original()
        else:
            if lazy is None:
                lazy = {id(origin.probe): origin for origin in _ext.lazy_origins()}
            origin = lazy.get(id(probe))
            if origin is None or origin.probe is not probe:
                out.append(("<unknown>", f"probe-{id(probe):x}", "", 0))
                continue
            module, qualname, code = origin.module, origin.qualname, origin.code
        out.append((module, qualname, code.co_filename if code is not None else "",
                    code.co_firstlineno if code is not None else 0))
    return out


class _Writer:
    """The armed writer of this process: its directory and descriptor."""

    def __init__(self, path: str, dir_fd: int, run_fd: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.run_fd = run_fd


_writer: Optional[_Writer] = None
_fork_hooks = False


def arm(directory: Optional[str], service: Optional[str], interval: float, mode: int) -> str:
    """Arm the writer in ``directory`` (the default one if None); the
    resolved path is handed to child processes in FASTPATCH_TELEMETRY_DIR.
    UnsafeDirectory, OSError, ValueError when it cannot."""
    global _writer, _fork_hooks
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise TypeError(f"interval must be a number of seconds, not {type(interval).__name__}")
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ValueError(f"interval must be from {MIN_INTERVAL} to {MAX_INTERVAL:g} seconds, got {interval!r}")
    if _writer is not None:
        raise RuntimeError(f"live telemetry is already on in this process (directory {_writer.path})")
    path = os.path.abspath(directory if directory is not None else default_directory(service))
    dir_fd = secure_directory(path, mode)
    _warn_unless_ram_backed(path, dir_fd)
    try:
        run_fd = _join_run(path, dir_fd)
    except BaseException:
        os.close(dir_fd)
        raise
    from .. import _stats
    from .._reports.build import python_version
    from .._reports.schema import fastpatch_version

    crc = int(_stats.histogram_layout().rsplit("-", 1)[1], 16)
    try:
        named = service or os.environ.get("FASTPATCH_SERVICE", "").strip() or directory is None
        _ext.telemetry_arm(_Opener(path, dir_fd, mode), _names, max(1, round(interval * 1000)), crc,
                           service_name(service) if named else os.path.basename(path), python_version(),
                           fastpatch_version())
    except BaseException:
        os.close(dir_fd)
        os.close(run_fd)
        raise
    _writer = _Writer(path, dir_fd, run_fd)
    if not _fork_hooks:
        os.register_at_fork(before=_ext.telemetry_pause, after_in_parent=_ext.telemetry_resume,
                            after_in_child=_ext.telemetry_forked_child)
        _fork_hooks = True
    os.environ["FASTPATCH_TELEMETRY_DIR"] = path
    return path


def disarm(final: bool = True) -> None:
    """Stop the writer: with ``final``, a last snapshot and the file marked
    exited. Nothing if it is not armed."""
    global _writer
    _ext.telemetry_stop(final)
    if _writer is not None:
        os.close(_writer.dir_fd)
        os.close(_writer.run_fd)
        _writer = None


def current_directory() -> Optional[str]:
    return _writer.path if _writer is not None else None


def service_directories() -> Union[str, int]:
    """What ``report`` and ``top`` read without a DIR: the default directory
    of FASTPATCH_SERVICE; when it is unset, the service directories found
    are listed on stderr and the exit status 2 returned instead."""
    if os.environ.get("FASTPATCH_SERVICE", "").strip():
        return default_directory()
    root = default_root()
    try:
        names = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    except OSError:
        names = []
    if names:
        sys.stderr.write(f"fastpatch: error: name a telemetry directory or set FASTPATCH_SERVICE; services in "
                         f"{root}: {', '.join(names)}\n")
    else:
        sys.stderr.write(f"fastpatch: error: name a telemetry directory or set FASTPATCH_SERVICE; no service "
                         f"directory in {root}\n")
    return 2
