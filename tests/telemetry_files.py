"""Synthetic telemetry files for the reader's tests: a valid file built with
struct from fastpatch.export._files' formats, which each test then damages."""

from __future__ import annotations

import struct

from fastpatch import _stats
from fastpatch.export import _files

SLOT = 1984


def layout_crc() -> int:
    return int(_stats.histogram_layout().rsplit("-", 1)[1], 16)


def header(*, n_slots: int, pid: int = 4242, ticks: int = 777, state: int = 1, magic: bytes = _files.MAGIC,
           major: int = 1, endian: int = _files.ENDIAN, header_size: int = 4096, slot_size: int = SLOT,
           buckets: int = _stats.HIST_BUCKETS, crc: int | None = None) -> bytes:
    fields = _files.HEADER.pack(
        magic, major, 0, header_size, slot_size, buckets, layout_crc() if crc is None else crc, endian, pid, ticks,
        1_700_000_000_000_000_000, 1_700_000_001_000_000_000, 5, state, n_slots, 1000, 0, b"svc", b"3.12.1", b"0.2.0",
    )
    return fields.ljust(header_size, b"\0")


def strings_slot(names: bytes) -> bytes:
    return (_files.STRINGS.pack(0, _files.KIND_STRINGS, 0, len(names)) + names).ljust(SLOT, b"\0")


def record_slot(*, calls: int, name_slot: int = 0, name_off: int = 0, firstlineno: int = 10, seq: int = 2) -> bytes:
    hist = [0] * _stats.HIST_BUCKETS
    hist[40] = calls
    fields = _files.RECORD.pack(seq, _files.KIND_RECORD, 0, firstlineno, name_slot, name_off, 1, 0, calls, calls, 0,
                                calls, calls * 300, 250, 350)
    return (fields + _files.HISTOGRAM.pack(*hist)).ljust(SLOT, b"\0")


def valid_file(calls: int = 7, **header_args: int) -> bytes:
    """A file of one process with one record, app.f (app.py:10) called ``calls`` times."""
    return header(n_slots=2, **header_args) + strings_slot(b"app\0f\0app.py\0") + record_slot(calls=calls)


def patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    raw = bytearray(data)
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


def not_ram_backed_warning(directory) -> str:
    """The line the writer prints for a telemetry ``directory`` that is not
    on tmpfs or ramfs, or "" when it is; asked of coreutils' ``stat -f``
    (about the directory, or its parent while it does not exist yet).
    /dev/shm is a tmpfs almost everywhere, but not in every root filesystem
    (the newer-pythons one, where 3.14 and 3.15 run, has none)."""
    import os
    import subprocess

    path = str(directory)
    where = path if os.path.isdir(path) else os.path.dirname(path)
    kind = subprocess.run(["stat", "-f", "-c", "%T", where], capture_output=True, text=True,
                          check=True).stdout.strip()
    if kind in ("tmpfs", "ramfs"):
        return ""
    return (f"fastpatch: telemetry directory {path} is not on a RAM-backed filesystem (tmpfs or ramfs): every "
            "snapshot is written back to disk; choose one in /dev/shm or $XDG_RUNTIME_DIR\n")
