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

from .. import _stats
from .._native import ext as _ext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Tuple

    from .._stats import Stats

    #: A record read with cuts: (function name, flags, firstlineno, sample, calls, completed, errors, timed,
    #: total_ns, min_ns, max_ns, its histogram summed over each [cut j-1, cut j) of buckets).
    Folded = Tuple[str, int, int, int, int, int, int, int, int, int, int, Tuple[int, ...]]

MAGIC = b"FPTELEM\0"
MAJOR = 1
ENDIAN = 0x01020304
HEADER_PAGE = 4096
STATES = {1: "live", 2: "exited", 3: "archive"}
KIND_RECORD = 1
KIND_STRINGS = 2
KIND_ABSORBED = 3
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
#: struct fpt_absorbed up to its entries: (pid, start_ticks, absorbed_unix_ns) triples follow.
ABSORBED = struct.Struct("<QHHI")
ABSORBED_PER_SLOT = 82
#: A sweep forgets an absorbed process this long after it folded it, once its file is gone.
ABSORBED_KEEP_NS = 600 * 10**9
#: The slot size this fastpatch writes (sizeof(struct fpt_record)).
SLOT_SIZE = 1984
#: The smallest slot that holds a record of this major version.
RECORD_SIZE = RECORD.size + HISTOGRAM.size


#: decode_records' cuts that keep every bucket of the histogram.
_EVERY_BUCKET = tuple(range(1, _stats.HIST_BUCKETS + 1))

#: How a record stores Stats.sample == MIXED_SAMPLE (an archive's merge of several rates).
MIXED_SAMPLE_U32 = 0xFFFFFFFF


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
                 "absorbed", "packed", "_folded", "_stats")

    def __init__(self, name: str, header: Tuple[Any, ...], alive: bool, stats: Optional[List[Stats]],
                 unstable: int, absorbed: List[Tuple[int, int, int]],
                 folded: Optional[List[Folded]] = None, packed: Optional[Tuple[List[bytes], bytes]] = None) -> None:
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
        #: An archive's (pid, start_ticks, absorbed_unix_ns) of each process folded into it.
        self.absorbed = absorbed
        #: Read with cuts, unless a count needs more than 64 bits: ``_ext.fold_records``'
        #: (keys, packed) of the records, what ``_ext.merge_records`` merges (else None).
        self.packed = packed
        self._folded = folded
        self._stats = stats

    @property
    def folded(self) -> Optional[List[Folded]]:
        """Read with cuts: a Folded tuple per record, in the file's order (else None)."""
        if self._folded is None and self.packed is not None:
            # Built at first use only: the exporters merge ``packed`` in C, without these tuples.
            keys, packed = self.packed
            width = len(packed) // 8 // len(keys) if keys else 0
            self._folded = [
                (_key_name(key), *fields[:10], fields[10:])
                for key, fields in zip(keys, struct.iter_unpack(f"={width}Q", packed) if width else ())
            ]
        return self._folded

    def stats(self) -> List[Stats]:
        """A Stats per record of the file (not merged), in the file's order.
        ValueError for a view read with cuts, which holds ``folded`` instead."""
        if self._stats is None:
            raise ValueError(f"{self.name} was read with its histograms folded: read it without cuts for Stats")
        return list(self._stats)

    def __repr__(self) -> str:
        records = len(self._stats if self._stats is not None else self.folded or [])
        return (f"ProcessView({self.name!r}, pid={self.pid}, state={self.state!r}, alive={self.alive}, "
                f"generation={self.generation}, records={records})")


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


def _decode(name: str, buf: Any, size: int, alive: bool, cuts: Optional[Sequence[int]] = None) -> ProcessView:
    """The ProcessView of a mapped file of ``size`` bytes (its histograms
    folded into ``cuts``, if given; see ``read_file``); BadFile if any size
    or offset is wrong."""
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
    # The records' fields, names and histograms are decoded (and folded into
    # cuts) in C: 24,000 records x 231 buckets would be 5.5 million Python ints.
    try:
        if cuts is None:
            rows, others, unstable = _ext.decode_records(data, slot_size, _EVERY_BUCKET, True)
        else:
            # Compact, for the exporters to merge in C; decoded records only
            # when a count needs Python's ints.
            keys, packed, others, unstable = _ext.fold_records(data, slot_size, cuts)
            if packed is None:
                rows = _ext.decode_records(data, slot_size, cuts, False)[0]
    except ValueError as exc:  # a record's names: the message says what is wrong
        raise BadFile(str(exc)) from None
    absorbed: List[Tuple[int, int, int]] = []
    for i in others:
        at = i * slot_size
        if struct.unpack_from("<H", data, at + 8)[0] == KIND_STRINGS:
            used = STRINGS.unpack_from(data, at)[3]
            if used > slot_size - STRINGS.size:
                raise BadFile(f"slot {i} says {used} bytes of names, more than the slot holds")
        else:
            count = ABSORBED.unpack_from(data, at)[3]
            if count > min(ABSORBED_PER_SLOT, (slot_size - ABSORBED.size) // 24):
                raise BadFile(f"slot {i} says {count} absorbed processes, more than the slot holds")
            entries = struct.unpack_from(f"<{3 * count}Q", data, at + ABSORBED.size)
            absorbed += zip(entries[0::3], entries[1::3], entries[2::3])
    if cuts is not None:
        if packed is None:
            return ProcessView(name, header, alive, None, unstable, absorbed, folded=rows)
        return ProcessView(name, header, alive, None, unstable, absorbed, packed=(keys, packed))
    stats = [
        _stats.Stats(
            name=full_name, calls=calls, errors=errors, total_ns=total_ns, min_ns=min_ns, max_ns=max_ns,
            completed=completed, histogram=counts, clock="tsc" if flags & RECORD_TSC else "monotonic", module=module,
            qualname=qualname, filename=filename, firstlineno=firstlineno,
            sample=_stats.MIXED_SAMPLE if sample == MIXED_SAMPLE_U32 else sample, timed=timed,
        )
        for ((full_name, module, qualname, filename), flags, firstlineno, sample, calls, completed, errors, timed,
             total_ns, min_ns, max_ns, counts) in rows
    ]
    return ProcessView(name, header, alive, stats, unstable, absorbed)


def _key_name(key: bytes) -> str:
    """"module.qualname" of fold_records' key ``module\0qualname``, as decode_records names a record."""
    module, _, qualname = key.partition(b"\0")
    return f"{module.decode('utf-8', 'replace')}.{qualname.decode('utf-8', 'replace')}"


class BeingCreated(BadFile):
    """A file its process is still creating: empty, or locked by its writer
    with its header not yet written. Readers pass over it without a word:
    it is whole at the next read."""


def _header_unwritten(buf: Any) -> bool:
    """Whether a mapped file's header is still zeros, or says INIT."""
    magic = bytes(buf[:8])
    return magic == bytes(8) or (magic == MAGIC and HEADER.unpack_from(buf, 0)[13] == 0)


def read_file(path: str, *, dir_fd: Optional[int] = None, cuts: Optional[Sequence[int]] = None) -> ProcessView:
    """The ProcessView of one counters file; BadFile if this reader refuses
    it (OSError if it cannot be opened at all). With ``cuts`` (increasing
    bucket indexes ending at HIST_BUCKETS), the view holds ``folded``
    records instead of Stats: each histogram summed over [0, cuts[0]),
    [cuts[0], cuts[1]), ... (what the exporters need, at a fraction of the cost)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        # A live writer grows its file (reserving the space first) and then announces the new slots in
        # its header, so a header read after that through a mapping of the size seen before announces
        # more slots than the mapping holds. The file only grows: a larger size now means exactly that,
        # and the file is mapped again (three tries; a file that keeps failing is refused). The writer
        # may have exited since (a worker recycled right after it grew), so whether the file is still
        # locked does not matter: a file no process writes any more does not grow.
        for attempt in range(3):
            st = os.fstat(fd)
            try:
                return _read_open_file(path, fd, st, cuts)
            except BeingCreated:
                raise
            except BadFile:
                if attempt == 2 or os.fstat(fd).st_size <= st.st_size:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")
    finally:
        os.close(fd)


def _read_open_file(path: str, fd: int, st: os.stat_result, cuts: Optional[Sequence[int]]) -> ProcessView:
    """read_file's one attempt at the file open at ``fd``, whose fstat is ``st``."""
    import mmap
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise BadFile("not a regular file")
    if st.st_uid not in (os.geteuid(), 0):
        raise BadFile(f"owned by uid {st.st_uid}, not by this user")
    if st.st_nlink != 1:
        # Writers and sweeps only make files of one link. Another name for
        # it would count its process twice, here or in a sweep's archive.
        raise BadFile(f"{st.st_nlink} hard links to it; a counters file has one")
    if st.st_size < HEADER_PAGE:
        if st.st_size == 0 or _is_locked(fd):
            raise BeingCreated("being created by its process")
        raise BadFile(f"truncated: {st.st_size} bytes, less than the {HEADER_PAGE}-byte header")
    alive = _is_locked(fd)
    with mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
        try:
            return _decode(os.path.basename(path), mm, st.st_size, alive, cuts)
        except BadFile:
            if alive and _header_unwritten(mm):
                raise BeingCreated("being created by its process") from None
            raise


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
            definitions.add(s)
        return definitions.stats()

    def report(self) -> Dict[str, Any]:
        """A JSON report (version 1) merging every process of the directory;
        ``"processes"`` lists them (``report_id`` ``telemetry-<pid>-<starttime>``,
        or ``telemetry-archive-<created ns>`` for the archive of dead ones)."""
        from .._reports import build, schema
        from .._reports.schema import Report

        functions = self.stats()
        processes = [
            {"pid": p.pid, "argv": [], "python": p.python, "created": p.created_unix_ns / 1e9,
             "report_id": f"telemetry-archive-{p.created_unix_ns}" if p.state == "archive"
             else f"telemetry-{p.pid}-{p.start_ticks}"}
            for p in self.processes
        ]
        clocks = sorted({s.clock for s in functions})

        def header() -> Dict[str, Any]:
            first = processes[0] if processes else {"pid": os.getpid(), "python": build.python_version(),
                                                    "created": 0.0}
            return {
                **schema.new_identity(), "pid": first["pid"], "argv": [], "python": first["python"],
                "clock": clocks[0] if len(clocks) == 1 else "mixed" if clocks else "monotonic",
                "created": first["created"], "processes": processes,
            }

        return Report(functions=functions, header=header).document


def read_directory(path: str, *, cuts: Optional[Sequence[int]] = None) -> Directory:
    """Read every process file of the telemetry directory ``path`` (with
    ``cuts``, as ``read_file`` reads them), then
    its archive: a process the archive absorbed (a sweep folded it in, its
    file perhaps not yet unlinked) is counted once, in the archive.

    FileNotFoundError if it does not exist, NotADirectoryError or
    PermissionError as ``os.listdir`` raises them; a file that cannot be
    read or that this reader refuses is in ``bad_files``, never raised.
    """
    # Process files first, the archive last: a sweep between the two moves
    # a process into the archive and lists it there, never out of both.
    names = sorted(name for name in os.listdir(path) if parse_file_name(name) is not None) + [ARCHIVE_NAME]
    processes: List[ProcessView] = []
    bad: List[Tuple[str, str]] = []
    for name in names:
        try:
            view = read_file(os.path.join(path, name), cuts=cuts)
        except BeingCreated:
            continue  # a process that is creating its file: whole at the next read
        except BadFile as exc:
            bad.append((name, str(exc)))
            continue
        except FileNotFoundError:
            continue  # swept or removed since the listing; no archive yet
        except OSError as exc:
            bad.append((name, exc.strerror or str(exc)))
            continue
        processes.append(view)
    archive = processes[-1] if processes and processes[-1].state == "archive" else None
    if archive is not None and archive.absorbed:
        folded = {(pid, ticks): when for pid, ticks, when in archive.absorbed}
        processes = [p for p in processes if p is archive or not _absorbed(p, folded)]
    return Directory(path, processes, bad)


def _absorbed(view: ProcessView, folded: Dict[Tuple[int, int], int]) -> bool:
    """Whether an archive that ``folded`` processes holds ``view``'s counts
    (not a later file of the same process, made after a stop and a start)."""
    when = folded.get((view.pid, view.start_ticks))
    return when is not None and view.created_unix_ns <= when


# --------------------------------------------------------------------------
# Writing archives, and the sweep
# --------------------------------------------------------------------------


def encode_file(stats: List[Stats], *, state: int, pid: int = 0, start_ticks: int = 0, created_unix_ns: int = 0,
                heartbeat_unix_ns: int = 0, generation: int = 0, service: str = "", python: str = "",
                absorbed: Optional[List[Tuple[int, int, int]]] = None) -> bytes:
    """A whole counters file (this layout) holding ``stats``: what a sweep
    writes as the archive (``state`` 3), and what tests build."""
    from .._reports.schema import fastpatch_version

    slots: List[bytes] = []
    names = bytearray()
    names_slot = -1
    records = []
    room = SLOT_SIZE - STRINGS.size

    def close_names() -> None:
        if names_slot >= 0:
            slots[names_slot] = (STRINGS.pack(0, KIND_STRINGS, 0, len(names)) + bytes(names)).ljust(SLOT_SIZE, b"\0")

    for s in stats:
        text = b"".join(part.encode("utf-8", "replace").replace(b"\0", b"_")[:room // 3] + b"\0"
                        for part in (s.module, s.qualname, s.filename))
        if names_slot < 0 or len(names) + len(text) > room:
            close_names()
            names = bytearray()
            names_slot = len(slots)
            slots.append(b"")
        offset = len(names)
        names += text
        sample = MIXED_SAMPLE_U32 if s.sample == _stats.MIXED_SAMPLE else s.sample
        fields = RECORD.pack(0, KIND_RECORD, RECORD_TSC if s.clock == "tsc" else 0, max(s.firstlineno, 0),
                             names_slot, offset, sample, 0, s.calls, s.completed, s.errors, s.timed, s.total_ns,
                             s.min_ns, s.max_ns)
        records.append(len(slots))
        slots.append((fields + HISTOGRAM.pack(*s.histogram)).ljust(SLOT_SIZE, b"\0"))
    close_names()
    entries = list(absorbed or ())
    for at in range(0, len(entries), ABSORBED_PER_SLOT):
        chunk = entries[at:at + ABSORBED_PER_SLOT]
        flat = [v for entry in chunk for v in entry]
        slots.append((ABSORBED.pack(0, KIND_ABSORBED, 0, len(chunk)) + struct.pack(f"<{len(flat)}Q", *flat))
                     .ljust(SLOT_SIZE, b"\0"))
    header = HEADER.pack(
        MAGIC, MAJOR, 0, HEADER_PAGE, SLOT_SIZE, _stats.HIST_BUCKETS, _layout_crc(), ENDIAN, pid, start_ticks,
        created_unix_ns, heartbeat_unix_ns, generation, state, len(slots), 0, 0,
        service.encode()[:63], python.encode()[:15], fastpatch_version().encode()[:15],
    )
    return header.ljust(HEADER_PAGE, b"\0") + b"".join(slots)


def sweep(path: str, *, _after_rename: Optional[Any] = None) -> int:
    """Fold the files of dead processes (no writer holds their lock) into
    ``archive.fpt`` and remove them; returns how many were folded.

    Sweepers take ``archive.lock`` in turn. The new archive is written aside
    and renamed over the old one, listing every process it absorbed, and
    only then are their files unlinked: a sweep that stops between the two
    leaves files that readers skip and the next sweep removes, so no process
    is ever counted twice or lost. Damaged and foreign files are never
    folded or removed. A damaged archive stops the sweep (0).
    """
    import fcntl
    import time

    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        lock = os.open("archive.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _sweep_locked(path, dir_fd, time.time_ns(), _after_rename)
        finally:
            os.close(lock)
    finally:
        os.close(dir_fd)


def _sweep_locked(path: str, dir_fd: int, now: int, after_rename: Optional[Any]) -> int:
    try:
        archive: Optional[ProcessView] = read_file(ARCHIVE_NAME, dir_fd=dir_fd)
    except FileNotFoundError:
        archive = None
    except (BadFile, OSError):
        return 0
    folded = {(pid, ticks): when for pid, ticks, when in (archive.absorbed if archive is not None else [])}
    dead: List[Tuple[str, ProcessView]] = []
    stale: List[str] = []
    for name in sorted(os.listdir(dir_fd)):
        if parse_file_name(name) is None:
            continue
        try:
            view = read_file(name, dir_fd=dir_fd)
        except (BadFile, OSError):
            continue
        if _absorbed(view, folded):
            stale.append(name)  # folded by a sweep that stopped before removing it
        elif not view.alive:
            dead.append((name, view))
    if dead:
        from .._reports.definitions import Definitions

        definitions = Definitions()
        sources = ([archive] if archive is not None else []) + [view for _, view in dead]
        for s in (s for view in sources for s in view.stats()):
            definitions.add(s)
        present = {parse_file_name(n) for n in os.listdir(dir_fd)}
        absorbed = [(pid, ticks, when) for (pid, ticks), when in folded.items()
                    if now - when < ABSORBED_KEEP_NS or (pid, ticks) in present]
        absorbed += [(view.pid, view.start_ticks, now) for _, view in dead]
        data = encode_file(definitions.stats(), state=3, created_unix_ns=archive.created_unix_ns if archive else now,
                           heartbeat_unix_ns=now, generation=(archive.generation if archive else 0) + 1,
                           service=dead[0][1].service, python=dead[0][1].python, absorbed=absorbed)
        temp = f"archive.fpt.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
        try:
            os.fchmod(fd, os.stat(dead[0][0], dir_fd=dir_fd).st_mode & 0o644)
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(temp, ARCHIVE_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if after_rename is not None:
            after_rename()
    for name in [name for name, _ in dead] + stale:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
    return len(dead)
