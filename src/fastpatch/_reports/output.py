"""Where a report file goes and how it gets there: ``{pid}`` and who owns a
name without it (:func:`claim`, :func:`resolve_path`), the atomic write and
its rules for links, devices and pipes (:func:`write_atomic`), the rule for
processes that share one name (:func:`write`), and the check made before a
program runs (:func:`check_writable`).

It imports only ``os`` and ``sys`` at module level (loaded already), and
the schema for :class:`ReportError`, so importing it early, to :func:`claim`
an output path before the program forks, costs almost nothing.
"""

from __future__ import annotations

import os
import sys

from .schema import ReportError

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time: activation imports this module
    from typing import Dict, Iterable, Optional, Tuple, Union

    from .._stats import Stats
    from .schema import Document, Report

# --------------------------------------------------------------------------
# Output paths: {pid}, and who owns a path without it
# --------------------------------------------------------------------------

#: template -> pid of the process that owns its exact path (see claim()).
_claims: Dict[str, int] = {}
#: template -> what its exact path held when this process claimed it, or
#: last wrote it (_file_state): anything else there at exit was written by
#: another process meanwhile (see write()).
_claimed_states: Dict[str, Tuple[int, ...]] = {}


def _with_pid(path: str, pid: str) -> str:
    head, tail = os.path.split(path)
    stem, ext = os.path.splitext(tail)
    return os.path.join(head, f"{stem}.{pid}{ext}")


def _file_state(path: str) -> Tuple[int, ...]:
    """What is at ``path`` itself (a link is not followed): ``()`` for
    nothing, else its device, inode, size and modification and change
    times. Every report is a new file renamed into place, so a report
    written there since changes it."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def claim(path_template: str) -> None:
    """Make this process the owner of ``path_template``'s exact path, unless
    a process already claimed it (this one, or the parent this process was
    forked from). A no-op for a template with ``{pid}``.

    Call it in the process whose report should carry the plain name (the
    ``run`` process, or the one the environment activated) *before* it
    forks: a forked child inherits the claim, sees another pid in it, and
    writes ``NAME.{pid}.EXT`` instead (see :func:`write`). The claim also
    notes what the path holds now (a report left by an earlier run, or
    nothing), so that :func:`write` can tell a report that another
    process wrote there meanwhile. :func:`check_writable` and :func:`write`
    claim too.
    """
    if "{pid}" not in path_template and path_template not in _claims:
        _claims[path_template] = os.getpid()
        _claimed_states[path_template] = _file_state(path_template)


def child_template(path_template: str) -> str:
    """The template to hand child processes through ``FASTPATCH_OUTPUT``:
    ``path_template`` itself if it has ``{pid}``, else the name a child
    writes, with ``.{pid}`` before the extension (``out.json`` gives
    ``out.{pid}.json``). A process started afresh (spawn, forkserver,
    subprocess) cannot inherit a claim, so the process that owns the plain
    name passes this to its children."""
    return path_template if "{pid}" in path_template else _with_pid(path_template, "{pid}")


def resolve_path(path_template: str) -> str:
    """The path this process writes for ``path_template``.

    ``{pid}`` (every occurrence) becomes ``os.getpid()``; nothing else in
    the template is special. Without ``{pid}``, the process that claimed
    the template (:func:`claim`), or any process if none did, writes the
    exact path, and every other process (a forked child of the claimant)
    writes the path with ``.<pid>`` before the extension: ``out.json`` in
    the parent, ``out.4243.json`` in its child. No process overwrites
    another's file, and ``python -m fastpatch report out.json out.*.json``
    merges them.
    """
    pid = os.getpid()
    if "{pid}" in path_template:
        return path_template.replace("{pid}", str(pid))
    owner = _claims.get(path_template, pid)
    return path_template if owner == pid else _with_pid(path_template, str(pid))


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------
#
# A report path may be in a directory that other users write (/tmp), under a
# name they can predict (FASTPATCH_OUTPUT=/tmp/app.{pid}.json). So a link
# there is never resolved here (no realpath) nor opened for writing when it
# leads to a regular file: the report goes to a new file, created with
# O_EXCL|O_NOFOLLOW beside it, and rename() replaces the link itself. Only a
# device, pipe or terminal is written through a link, and then the kernel
# follows it, so that fs.protected_symlinks still applies.

#: Seconds to wait for another process's lock on the report's directory
#: (see _lock_directory).
_LOCK_WAIT = 5.0


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; nothing to do there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path(target: str) -> str:
    directory, name = os.path.split(target)
    return os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def _open_new(path: str) -> int:
    """A new file at ``path``: never one that is there already, nor the target of a link there."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_CLOEXEC", 0))
    return os.open(path, flags, 0o666)  # the umask applies, as for any file the program writes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _own_stream(st: os.stat_result) -> Optional[int]:
    """This process's stdout or stderr descriptor (2 first) if it writes the file ``st`` describes."""
    for fd in (2, 1):
        try:
            own = os.fstat(fd)
        except OSError:
            continue
        if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
            return fd
    return None


def _in_place(path: str) -> Optional[Tuple[int, bool]]:
    """Where a report for ``path`` is written in place, not replaced: a
    descriptor to write to and whether this call opened it (and so the
    caller closes it); None when ``path`` is to be replaced (nothing there,
    a regular file, a link to one that is not this process's stdout or
    stderr).

    A device, named pipe or socket at ``path`` itself is opened without
    following a link. A link to one (``/dev/stderr`` is a link to
    ``/proc/self/fd/2``: a pipe or a terminal) is opened by the kernel,
    so that its protected-symlinks rule applies, and used only if what it
    opened is not a regular file. A link to the regular file that this
    process's stderr or stdout writes (``-o /dev/stderr 2>log``) gives
    that descriptor: the report follows what the program wrote there.
    Opening a named pipe waits for a reader, as any writer to it does.
    Raises IsADirectoryError for a directory, or a link to one, and
    :class:`ReportError` for a link that cannot be followed (:func:`_unfollowable`).
    """
    import errno
    import stat

    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return None
    flags = os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _unfollowable(path, exc) from None
        if stat.S_ISREG(st.st_mode):
            fd = _own_stream(st)
            return None if fd is None else (fd, False)
    else:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if stat.S_ISREG(st.st_mode):
        return None
    fd = os.open(path, flags)
    try:
        opened = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISREG(opened):  # replaced by a file since the look: replace it in turn
        os.close(fd)
        return None
    return fd, True


def _unfollowable(path: str, exc: OSError) -> ReportError:
    """The error for a link at ``path`` that cannot be followed: dangling, a
    loop, refused by the kernel's protected-symlinks rule, or ``/dev/stderr``
    of a process whose stderr is closed. Such a link is not replaced either:
    what it stands for may not be a file at all (replacing ``/dev/stderr``
    would put a file where every process finds its stderr)."""
    return ReportError(
        f"cannot write the report to {path}: it is a symbolic link that cannot be followed "
        f"({exc.strerror or exc}); a report is never written through a link, nor replaces one it cannot follow"
    )


def _lock_directory(directory: str) -> Optional[int]:
    """A descriptor of ``directory`` that holds an exclusive lock on it
    (``flock``; closing the descriptor, or the process dying, releases it),
    or None where none can be had: no ``fcntl`` (Windows), a directory that
    cannot be opened, a file system without ``flock``.

    Locking the directory itself, rather than a lock file, leaves nothing
    behind and gives no name that another user could plant first. A writer
    holds the lock for a look and a rename; one held for more than
    ``_LOCK_WAIT`` seconds is a process stuck or hostile, and the caller
    goes on without it rather than hang at exit.
    """
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    import time

    deadline = time.monotonic() + _LOCK_WAIT
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        except OSError:
            break
    os.close(fd)
    return None


def _refused_link(path: str, reason: str) -> ReportError:
    return ReportError(
        f"cannot write the report to {path}: it is a symbolic link, which this process may not replace "
        f"({reason}), and a report is never written through a link"
    )


def _is_link(path: str) -> bool:
    try:
        return os.path.islink(path)
    except ValueError:
        return False


def _replace(source: str, target: str) -> None:
    """os.replace, with a one-line ReportError when ``target`` is a link
    this process may not replace (another user's, in a sticky directory)."""
    try:
        os.replace(source, target)
    except PermissionError as exc:
        if _is_link(target):
            raise _refused_link(target, exc.strerror or str(exc)) from None
        raise


def write_atomic(path: str, data: bytes, replaceable: Optional[Tuple[int, ...]] = None) -> Tuple[str, Tuple[int, ...]]:
    """Replace the file ``path`` with ``data`` so that no reader ever sees
    a partial file, and return the path written and what is there now
    (``_file_state``, ``()`` for a device or a pipe).

    The bytes go to a new temporary file in the same directory, which is
    fsynced and then renamed over ``path``. A symbolic link at ``path`` is
    replaced, never written through: the file it points to is left as it
    is; where the link may not be replaced (another user's, in a sticky
    directory such as ``/tmp``) or cannot be followed (dangling, or
    ``/dev/stderr`` with stderr closed), :class:`ReportError` says so and
    nothing is written. A device or a named pipe (``-o /dev/null``, ``-o
    /dev/stderr``, directly or through a link) is written in place:
    replacing it would put a regular file where the device was. On any
    failure the temporary file is removed and ``path`` is left as it was.

    With ``replaceable`` (what ``path`` held when this process claimed it,
    see :func:`claim`), ``path`` is replaced only if it still holds that:
    otherwise another process wrote a report there meanwhile, and
    ``data`` goes to ``NAME.<pid>.EXT`` beside it. The look and the rename
    hold a lock on the directory (:func:`_lock_directory`), so that of two
    processes finishing together, the second sees the first one's report.
    OSError propagates.
    """
    in_place = _in_place(path)
    if in_place is not None:
        fd, opened = in_place
        try:
            if not opened:  # our own stdout or stderr: after what Python buffered for it
                for stream in (sys.stdout, sys.stderr):
                    if stream is not None:
                        stream.flush()
            _write_all(fd, data)
        finally:
            if opened:
                os.close(fd)
        return path, ()
    directory = os.path.dirname(path) or "."
    tmp = _temp_path(path)
    fd = _open_new(tmp)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        lock = _lock_directory(directory) if replaceable is not None else None
        try:
            target = path
            if replaceable is not None and _file_state(path) != replaceable:
                target = _with_pid(path, str(os.getpid()))
            _replace(tmp, target)
            state = _file_state(target)
        finally:
            if lock is not None:
                os.close(lock)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    return target, state


def shown(path: str) -> str:
    """``path`` as messages show it: relative to the working directory when it is below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


def write(path_template: str, fmt: Optional[str] = None, stats: Optional[Iterable[Stats]] = None, *,
          report: Optional[Union[Report, Document]] = None, sort: str = "total", keep_others: bool = True) -> str:
    """Write a report file and return the path written.

    The content is ``report`` (a Report, or a validated document) if
    given, else the report of ``stats`` (``build.this_process``; default:
    this process's definitions). The path is :func:`resolve_path` of
    ``path_template``: ``{pid}`` becomes this process's id, and without
    ``{pid}`` a process other than the one that claimed the template (its
    forked child) writes ``NAME.<pid>.EXT``, so no process overwrites
    another's file; this call claims the template if no process did. The
    format is the one named ``fmt`` or comes from the extension
    (``formats.format_for``); ``sort`` orders the text table. The
    write is atomic (:func:`write_atomic`).

    When the exact path holds a report that another process wrote after
    this one claimed it (two processes that are not parent and child,
    given one ``FASTPATCH_OUTPUT``: a pipeline, ``make -j``), that report is
    kept: this one goes to ``NAME.<pid>.EXT``, and one line on stderr says
    so. A report left by an earlier run, from before the claim, is
    replaced. ``keep_others=False`` replaces whatever is there (the output
    of ``python -m fastpatch report``).

    Raises :class:`ReportError` for an unknown format or sort key, or when
    the file cannot be written.
    """
    from . import formats
    from .build import this_process

    if report is not None and stats is not None:
        raise TypeError("write() takes stats or report, not both")
    formats.check_sort(sort)
    chosen = formats.format_for(path_template, fmt)
    claim(path_template)
    path = resolve_path(path_template)
    data = formats.serialize(report if report is not None else this_process(stats), chosen, sort)
    mine = keep_others and path == path_template and _claims.get(path_template) == os.getpid()
    try:
        written, state = write_atomic(path, data, _claimed_states.get(path_template) if mine else None)
    except OSError as exc:
        raise ReportError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    if written == path and mine and state:
        _claimed_states[path_template] = state  # this process's own report: the next write replaces it
    if written != path:
        try:
            sys.stderr.write(
                f"fastpatch: {shown(path)} was written by another process while this one ran; "
                f"report written to {shown(written)}\n"
            )
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - stderr closed or gone: the report is written all the same
            pass
    return written


def _may_replace(st: os.stat_result, directory: str) -> bool:
    """Whether this process may replace the directory entry ``st`` (lstat)
    of ``directory``: in a sticky directory (``/tmp``) only the entry's
    owner, the directory's owner or root may."""
    import stat

    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:
        return True
    try:
        parent = os.stat(directory)
    except OSError:
        return True  # the write itself will say what is wrong
    euid = geteuid()
    return not parent.st_mode & stat.S_ISVTX or euid in (0, st.st_uid, parent.st_uid)


def check_writable(path_template: str, fmt: Optional[str] = None) -> None:
    """Raise :class:`ReportError` unless this process could write the report
    file now, by the rules of :func:`write_atomic`: for an unknown format
    name, an empty path, a path that is a directory (or a link to one), a
    missing parent directory or one that is not a directory, a directory
    where no file can be created (it tries: it creates and removes a
    temporary file there, as :func:`write` will), a link there that cannot
    be followed, or a file or link there that this process may not replace
    (another user's, in a sticky directory); a device or a named pipe, or a
    link to one, must be
    writable. ``{pid}`` is substituted first; directories are never
    created. On success it claims the template for this process
    (:func:`claim`): call it at start, in the process whose report should
    carry the plain name, before the program runs or forks.
    """
    import stat

    if fmt is not None:
        from .formats import get

        get(fmt)
    if not isinstance(path_template, str) or not path_template.strip():
        raise ReportError("the report path is empty")
    path = resolve_path(path_template)
    try:
        entry: Optional[os.stat_result] = os.lstat(path)
    except OSError:
        entry = None
    target = entry
    if entry is not None and stat.S_ISLNK(entry.st_mode):
        try:
            target = os.stat(path)  # the kernel follows it, as write_atomic's open would
        except OSError as exc:
            raise _unfollowable(path, exc) from None
    if target is not None and stat.S_ISDIR(target.st_mode):
        raise ReportError(f"cannot write the report to {path}: it is a directory")
    if target is not None and not stat.S_ISREG(target.st_mode):
        # A device or a pipe: written in place, never opened here (a pipe would block).
        if not os.access(path, os.W_OK):
            raise ReportError(f"cannot write the report to {path}: permission denied")
        claim(path_template)
        return
    if target is not None and entry is not target and _own_stream(target) is not None:
        claim(path_template)  # a link to the file this process's stdout or stderr writes
        return
    directory = os.path.dirname(path) or "."
    if not os.path.exists(directory):
        raise ReportError(f"cannot write the report to {path}: directory {directory} does not exist")
    if not os.path.isdir(directory):
        raise ReportError(f"cannot write the report to {path}: {directory} is not a directory")
    if entry is not None and not _may_replace(entry, directory):
        if stat.S_ISLNK(entry.st_mode):
            raise _refused_link(path, f"another user's, in the sticky directory {directory}")
        raise ReportError(
            f"cannot write the report to {path}: it is another user's file, in the sticky directory "
            f"{directory}, where only its owner may replace it"
        )
    probe = _temp_path(path)
    try:
        os.close(_open_new(probe))
    except OSError as exc:
        raise ReportError(
            f"cannot write the report to {path}: cannot create a file in {directory}: {exc.strerror or exc}"
        ) from None
    try:
        os.unlink(probe)
    except OSError:
        pass
    claim(path_template)
