"""Reading a live telemetry directory: the one reader every front end uses
(``fastpatch.export.read``, ``python -m fastpatch report DIR``, and the
``top`` and exporter front ends).

The layout is ``_telemetry.h``'s (major version 1); the ``struct`` formats
below mirror it and a test holds them to the header through cffi. Every
size and offset of a file is checked before it is used: a damaged,
truncated, foreign or newer-major file is skipped and listed in
``Directory.bad_files`` with the reason, never raised, and never deleted.
Each slot is copied under its seqlock by ``_ext.read_slots``.

Files are ``fastpatch-<pid>-<starttime>.fpt``, one per process; a file's
writer holds ``flock(LOCK_EX)`` on it for life, which is how a reader
tells a live process from a dead one (not by pid, which the system reuses).
"""

from __future__ import annotations

import os
import struct

from .. import _ext, _stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

    from .._stats import Stats

MAGIC = b"FPTELEM\0"
MAJOR = 1
ENDIAN = 0x01020304
HEADER_PAGE = 4096
STATES = {1: "live", 2: "exited", 3: "archive"}
KIND_RECORD = 1
KIND_STRINGS = 2
RECORD_TSC = 1
FILE_PREFIX = "fastpatch-"
FILE_SUFFIX = ".fpt"
ARCHIVE_NAME = "archive.fpt"

#: struct fpt_header up to its reserved bytes.
HEADER = struct.Struct("<8sHHIIIII QQQQQ IIII 64s16s16s")
#: struct fpt_record from seq to max_ns; the histogram follows at RECORD.size.
RECORD = struct.Struct("<QHHIIIII 7Q")
HISTOGRAM = struct.Struct(f"<{_stats.HIST_BUCKETS}Q")
#: struct fpt_strings up to its data.
STRINGS = struct.Struct("<QHHI")
#: The smallest slot that holds a record of this major version.
RECORD_SIZE = RECORD.size + HISTOGRAM.size


class BadFile(Exception):
    """A file this reader refuses; the message says why."""


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _layout_crc() -> int:
    return int(_stats.histogram_layout().rsplit("-", 1)[1], 16)


def parse_file_name(name: str) -> Optional[Tuple[int, int]]:
    """(pid, start_ticks) of a process file's name, or None for any other name."""
    if not (name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX)):
        return None
    parts = name[len(FILE_PREFIX):-len(FILE_SUFFIX)].split("-")
    if len(parts) != 2 or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


class ProcessView:
    """One process's file as read: its header and its definitions' Stats.

    ``state`` is "live", "exited" or "archive"; ``alive`` is whether a
    process holds the file's lock now (its writer is running).
    """

    __slots__ = ("name", "pid", "start_ticks", "state", "alive", "created_unix_ns", "heartbeat_unix_ns",
                 "generation", "interval_ms", "service", "python", "fastpatch_version", "unstable_records",
                 "_stats")

    def __init__(self, name: str, header: Tuple[Any, ...], alive: bool, stats: List[Stats],
                 unstable: int) -> None:
        (_magic, _major, _minor, _hsize, _ssize, _buckets, _crc, _endian, pid, start_ticks, created, heartbeat,
         generation, state, _n_slots, interval_ms, _flags, service, python, version) = header
        self.name = name
        self.pid: int = pid
        self.start_ticks: int = start_ticks
        self.state: str = STATES[state]
        self.alive = alive
        self.created_unix_ns: int = created
        self.heartbeat_unix_ns: int = heartbeat
        self.generation: int = generation
        self.interval_ms: int = interval_ms
        self.service = _text(service)
        self.python = _text(python)
        self.fastpatch_version = _text(version)
        self.unstable_records = unstable
        self._stats = stats

    def stats(self) -> List[Stats]:
        """A Stats per record of the file (not merged), in the file's order."""
        return list(self._stats)

    def __repr__(self) -> str:
        return (f"ProcessView({self.name!r}, pid={self.pid}, state={self.state!r}, alive={self.alive}, "
                f"generation={self.generation}, records={len(self._stats)})")


def _is_locked(fd: int) -> bool:
    """Whether another open file description holds an exclusive flock on the file."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _decode(name: str, buf: Any, size: int, alive: bool) -> ProcessView:
    """The ProcessView of a mapped file of ``size`` bytes; BadFile if any
    size or offset is wrong."""
    if size < HEADER_PAGE:
        raise BadFile(f"truncated: {size} bytes, less than the {HEADER_PAGE}-byte header")
    header = HEADER.unpack_from(buf, 0)
    magic, major, _minor, header_size, slot_size, buckets, crc, endian = header[:8]
    state, n_slots = header[13], header[14]
    if magic != MAGIC:
        raise BadFile("not a fastpatch telemetry file (wrong magic)")
    if endian != ENDIAN:
        raise BadFile(f"written with another byte order (endian mark {endian:#010x})")
    if major != MAJOR:
        raise BadFile(f"layout major version {major}; this fastpatch reads version {MAJOR}")
    if header_size < HEADER.size or header_size % 8 or header_size > size:
        raise BadFile(f"header size {header_size} does not fit a {size}-byte file")
    if slot_size < RECORD_SIZE or slot_size % 8:
        raise BadFile(f"slot size {slot_size} is smaller than a record ({RECORD_SIZE}) or unaligned")
    if buckets != _stats.HIST_BUCKETS or crc != _layout_crc():
        raise BadFile(f"another histogram layout ({buckets} buckets, CRC {crc:08x})")
    if state not in STATES:
        raise BadFile(f"unknown state {state}" if state else "still being created (state INIT)")
    room = (size - header_size) // slot_size
    if n_slots > room:
        raise BadFile(f"{n_slots} slots announced, the file holds {room}")
    data = _ext.read_slots(buf, 0, n_slots)
    strings: Dict[int, bytes] = {}
    records = []
    unstable = 0
    for i in range(n_slots):
        at = i * slot_size
        seq, kind = struct.unpack_from("<QH", data, at)
        if seq & 1:
            unstable += 1
            continue
        if kind == KIND_STRINGS:
            used = STRINGS.unpack_from(data, at)[3]
            if used > slot_size - STRINGS.size:
                raise BadFile(f"slot {i} says {used} bytes of names, more than the slot holds")
            strings[i] = data[at + STRINGS.size:at + STRINGS.size + used]
        elif kind == KIND_RECORD:
            records.append((RECORD.unpack_from(data, at), HISTOGRAM.unpack_from(data, at + RECORD.size)))
    stats = []
    for fields, hist in records:
        (_seq, _kind, flags, firstlineno, name_slot, name_off, sample, _reserved, calls, completed, errors,
         timed, total_ns, min_ns, max_ns) = fields
        names = strings.get(name_slot)
        if names is None or name_off >= len(names):
            raise BadFile(f"a record names slot {name_slot} offset {name_off}, which holds no names")
        parts = names[name_off:].split(b"\0", 3)
        if len(parts) < 4:
            raise BadFile(f"the names at slot {name_slot} offset {name_off} are not three NUL-terminated strings")
        module, qualname, filename = (p.decode("utf-8", "replace") for p in parts[:3])
        stats.append(_stats.Stats(
            name=f"{module}.{qualname}", calls=calls, errors=errors, total_ns=total_ns, min_ns=min_ns,
            max_ns=max_ns, completed=completed, histogram=hist, clock="tsc" if flags & RECORD_TSC else "monotonic",
            module=module, qualname=qualname, filename=filename, firstlineno=firstlineno, sample=sample,
            timed=timed,
        ))
    return ProcessView(name, header, alive, stats, unstable)


def read_file(path: str, *, dir_fd: Optional[int] = None) -> ProcessView:
    """The ProcessView of one counters file; BadFile if this reader refuses
    it (OSError if it cannot be opened at all)."""
    import mmap
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadFile("not a regular file")
        if st.st_uid not in (os.geteuid(), 0):
            raise BadFile(f"owned by uid {st.st_uid}, not by this user")
        if st.st_size < HEADER_PAGE:
            raise BadFile(f"truncated: {st.st_size} bytes, less than the {HEADER_PAGE}-byte header")
        alive = _is_locked(fd)
        with mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            return _decode(os.path.basename(path), mm, st.st_size, alive)
    finally:
        os.close(fd)


class Directory:
    """A telemetry directory as read: ``processes`` (live, exited and
    archived, each counted once) and ``bad_files``, (file name, why) of each
    file skipped."""

    def __init__(self, path: str, processes: List[ProcessView], bad_files: List[Tuple[str, str]]) -> None:
        self.path = path
        self.processes = processes
        self.bad_files = bad_files

    def stats(self, merged: bool = True) -> List[Stats]:
        """Every process's Stats; merged by (module, qualname, firstlineno)
        across processes (and within one), sorted, unless ``merged`` is false."""
        if not merged:
            return [s for p in self.processes for s in p.stats()]
        from .._reports.definitions import Definitions

        definitions = Definitions()
        for s in self.stats(merged=False):
            definitions.entry(s.name, s.module, s.qualname, s.filename, s.firstlineno).add(
                s.calls, s.errors, s.completed, s.total_ns, s.min_ns, s.max_ns, enumerate(s.histogram), s.clock,
                s.timed, s.sample,
            )
        return definitions.stats()

    def report(self) -> Dict[str, Any]:
        """A JSON report (version 1) merging every process of the directory;
        ``"processes"`` lists them (``report_id`` ``telemetry-<pid>-<starttime>``)."""
        from .._reports import build, schema
        from .._reports.schema import Report

        functions = self.stats()
        processes = [
            {"pid": p.pid, "argv": [], "python": p.python, "created": p.created_unix_ns / 1e9,
             "report_id": f"telemetry-{p.pid}-{p.start_ticks}"}
            for p in self.processes
        ]
        clocks = sorted({s.clock for s in functions})

        def header() -> Dict[str, Any]:
            first = processes[0] if processes else {"pid": os.getpid(), "python": build.python_version(),
                                                    "created": 0.0}
            return {
                "format": "fastpatch", "version": schema.VERSION, "fastpatch_version": schema.fastpatch_version(),
                "report_id": schema.new_report_id(), "pid": first["pid"], "argv": [], "python": first["python"],
                "clock": clocks[0] if len(clocks) == 1 else "mixed" if clocks else "monotonic",
                "created": first["created"], "processes": processes,
            }

        return Report(functions=functions, header=header).document


def read_directory(path: str) -> Directory:
    """Read every process file of the telemetry directory ``path``.

    FileNotFoundError if it does not exist, NotADirectoryError or
    PermissionError as ``os.listdir`` raises them; a file that cannot be
    read or that this reader refuses is in ``bad_files``, never raised.
    """
    names = sorted(os.listdir(path))
    processes: List[ProcessView] = []
    bad: List[Tuple[str, str]] = []
    for name in names:
        if parse_file_name(name) is None and name != ARCHIVE_NAME:
            continue
        try:
            view = read_file(os.path.join(path, name))
        except BadFile as exc:
            bad.append((name, str(exc)))
            continue
        except FileNotFoundError:
            continue  # swept or removed since the listing
        except OSError as exc:
            bad.append((name, exc.strerror or str(exc)))
            continue
        processes.append(view)
    return Directory(path, processes, bad)
