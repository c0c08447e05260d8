"""The telemetry file's layout: _telemetry.h is the one source of truth, and
cffi's reading of it, the compiled extension's and the Python reader's
struct formats agree on every offset and size; the reader refuses every
damaged file with a reason and reads the others; the seqlock copy is never
torn."""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import pathlib
import socket
import struct
import subprocess
import sys
import threading

import pytest

import fastpatch.export
from fastpatch import _ext, _stats
from fastpatch.export import _files
from telemetry_files import SLOT, header, layout_crc, patch, record_slot, strings_slot, valid_file

# The header is a source file: a wheel does not carry it (tools/release_checks.py), so an installed fastpatch
# is tested against the header of the tree its tests come from (a checkout or the sdist), else the package's own.
HEADER_H = next(p for p in (pathlib.Path(__file__).resolve().parent.parent / "src" / "fastpatch" / "_telemetry.h",
                            pathlib.Path(_files.__file__).resolve().parent.parent / "_telemetry.h") if p.is_file())

# The Python reader's idea of each field: (struct, field) -> offset, from its struct formats.
HEADER_FIELDS = ("magic major minor header_size slot_size hist_buckets hist_layout_crc endian pid start_ticks "
                 "created_unix_ns heartbeat_unix_ns generation state n_slots interval_ms flags service python "
                 "fastpatch_version").split()
RECORD_FIELDS = ("seq kind flags firstlineno name_slot name_off sample reserved calls completed errors timed "
                 "total_ns min_ns max_ns").split()
STRINGS_FIELDS = "seq kind reserved used".split()


def _offsets(fmt: struct.Struct, names: list[str]) -> dict[str, int]:
    out, at = {}, 0
    codes = [c for c in fmt.format.lstrip("<").replace(" ", "")]
    items, digits = [], ""
    for c in codes:
        if c.isdigit():
            digits += c
            continue
        items.append((int(digits or 1), c))
        digits = ""
    expanded = []
    for n, c in items:
        expanded += [(n, c)] if c == "s" else [(1, c)] * n
    for name, (n, c) in zip(names, expanded):
        out[name] = at
        at += struct.calcsize("<" + (f"{n}s" if c == "s" else c))
    return out


def _layout_source() -> str:
    text = HEADER_H.read_text()
    return text.split("/* LAYOUT BEGIN */", 1)[1].split("/* LAYOUT END */", 1)[0]


def test_cffi_reads_the_header_with_every_offset_and_size_the_extension_and_the_python_reader_use():
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef(_layout_source())
    compiled = _ext.telemetry_layout()
    python = {"fpt_header": _offsets(_files.HEADER, HEADER_FIELDS),
              "fpt_record": _offsets(_files.RECORD, RECORD_FIELDS),
              "fpt_strings": _offsets(_files.STRINGS, STRINGS_FIELDS),
              "fpt_absorbed": _offsets(_files.ABSORBED, ["seq", "kind", "reserved", "count"])}
    checked = 0
    for key, offset in compiled.items():
        kind, name = key.split(".")
        if kind == "sizeof":
            assert ffi.sizeof(f"struct {name}") == offset, key
        else:
            assert ffi.offsetof(f"struct {kind}", name) == offset, key
            if name in python[kind]:
                assert python[kind][name] == offset, key
                checked += 1
    assert checked == 20 + 14 + 3 + 2  # every field the reader unpacks but seq of absorbed and the reserved ones
    assert ffi.offsetof("struct fpt_record", "hist") == _files.RECORD.size
    assert ffi.offsetof("struct fpt_absorbed", "entries") == _files.ABSORBED.size
    assert ffi.sizeof(dict(ffi.typeof("struct fpt_absorbed").fields)["entries"].type) // 24 == _files.ABSORBED_PER_SLOT
    assert ffi.sizeof("struct fpt_record") == _files.SLOT_SIZE
    assert ffi.sizeof("struct fpt_record") == SLOT
    assert ffi.sizeof("struct fpt_strings") - ffi.offsetof("struct fpt_strings", "data") == SLOT - _files.STRINGS.size
    assert ffi.sizeof(dict(ffi.typeof("struct fpt_record").fields)["hist"].type) == _files.HISTOGRAM.size
    assert _files.HEADER.size <= ffi.sizeof("struct fpt_header") <= _files.HEADER_PAGE


def _read(tmp_path: pathlib.Path, files: dict[str, bytes]) -> _files.Directory:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return _files.read_directory(str(tmp_path))


GOOD = "fastpatch-4242-777.fpt"
BAD = "fastpatch-5000-1.fpt"


def _good_only(found: _files.Directory) -> None:
    assert [(p.pid, p.start_ticks, p.state) for p in found.processes] == [(4242, 777, "exited")]
    (s,) = found.stats()
    assert (s.name, s.calls, s.completed, s.total_ns, s.filename, s.firstlineno) == ("app.f", 7, 7, 2100, "app.py", 10)


def test_a_valid_file_is_read_with_its_exact_counters_and_an_unlocked_live_file_is_not_alive(tmp_path):
    found = _read(tmp_path, {GOOD: valid_file(state=2)})
    _good_only(found)
    assert found.bad_files == []
    assert found.processes[0].alive is False


def _damaged() -> dict[str, tuple[bytes, str]]:
    good = valid_file()
    cases = {
        "wrong magic": (b"NOTMAGIC" + good[8:], "wrong magic"),
        "newer major": (patch(good, 8, "<H", 2), "layout major version 2"),
        "other endian": (patch(good, 28, "<I", 0x04030201), "another byte order"),
        "small slots": (patch(good, 16, "<I", 64), "slot size 64"),
        "header beyond the file": (patch(good, 12, "<I", 1 << 30), "header size 1073741824"),
        "other buckets": (patch(good, 20, "<I", 99), "another histogram layout"),
        "other bucket edges": (patch(good, 24, "<I", layout_crc() ^ 1), "another histogram layout"),
        "being created": (patch(good, 72, "<I", 0), "state INIT"),
        "unknown state": (patch(good, 72, "<I", 9), "unknown state 9"),
        "n_slots past the end": (patch(good, 76, "<I", 3), "3 slots announced, the file holds 2"),
        "name slot out of range": (header(n_slots=2) + strings_slot(b"app\0f\0app.py\0")
                                   + record_slot(calls=1, name_slot=7), "names slot 7"),
        "name offset out of range": (header(n_slots=2) + strings_slot(b"app\0f\0app.py\0")
                                     + record_slot(calls=1, name_off=500), "offset 500"),
        "names without their NULs": (header(n_slots=2) + strings_slot(b"app\0f")
                                     + record_slot(calls=1), "not three NUL-terminated"),
        "strings used past the slot": (patch(good, 4096 + 12, "<I", 5000), "5000 bytes of names"),
    }
    for cut in (100, 4095, 4096 + 10, 4096 + SLOT + 500):
        cases[f"truncated at {cut}"] = (good[:cut], "truncated" if cut < 4096 else "slots announced")
    return cases


@pytest.mark.parametrize("case", sorted(_damaged()))
def test_a_damaged_file_is_skipped_with_its_reason_and_the_others_are_still_read(tmp_path, case):
    data, reason = _damaged()[case]
    found = _read(tmp_path, {GOOD: valid_file(state=2), BAD: data})
    _good_only(found)
    assert len(found.bad_files) == 1
    name, why = found.bad_files[0]
    assert name == BAD and reason in why


@pytest.mark.parametrize("data", [b"", b"\0" * 100, b"\0" * 8192, patch(valid_file(), 72, "<I", 0)],
                         ids=["empty", "short", "zeros after its space is reserved", "state INIT"])
def test_a_file_its_process_is_still_creating_is_passed_over_without_a_word(tmp_path, data):
    # A writer creates its file empty, locks it, reserves its space (zeros) and then writes the header, INIT
    # first: a reader in between reads it whole the next time. Empty, or locked by its writer, it is no damage.
    (tmp_path / BAD).write_bytes(data)
    with open(tmp_path / BAD, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        found = _read(tmp_path, {GOOD: valid_file(state=2)})
    _good_only(found)
    assert found.bad_files == []
    if data:  # the same bytes with no writer holding them: damage, counted
        found = _read(tmp_path, {GOOD: valid_file(state=2)})
        assert [name for name, _ in found.bad_files] == [BAD]


@pytest.mark.parametrize("case", ["grows while read, locked", "announces more, never grows",
                                  "grows, then its writer exits"])
def test_a_live_file_that_grows_between_the_size_and_the_header_is_read_again_whole(tmp_path, monkeypatch, case):
    # The writer reserves room (the file grows) and then announces the new slots in its header; a
    # reader that took the size before and reads the header after sees more slots announced than it
    # mapped. Here the header already announces a third slot that the file does not hold yet, and the
    # file grows by that slot right after the reader's first attempt, as the writer would. A writer
    # that exits right after growing (a gunicorn worker recycled by max_requests) leaves the same
    # grown file, unlocked by then: it is read again whole too.
    path = tmp_path / GOOD
    path.write_bytes(patch(valid_file(state=1), 76, "<I", 3))
    attempts = []
    read_once = _files._read_open_file

    def writer_grows_after_the_first_attempt(*args):
        attempts.append(len(attempts))
        try:
            return read_once(*args)
        finally:
            if len(attempts) == 1 and case != "announces more, never grows":
                with open(path, "ab") as fh:
                    fh.write(bytes(SLOT))

    monkeypatch.setattr(_files, "_read_open_file", writer_grows_after_the_first_attempt)
    with open(path, "rb") as writer:
        if case == "grows while read, locked":
            fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        if case != "announces more, never grows":
            view = _files.read_file(str(path))
            assert [(s.name, s.calls) for s in view.stats()] == [("app.f", 7)]
            assert attempts == [0, 1]
        else:
            with pytest.raises(_files.BadFile, match="3 slots announced, the file holds 2"):
                _files.read_file(str(path))
            assert attempts == [0]


def test_a_directory_of_garbage_and_foreign_names_costs_one_bad_entry_per_process_file(tmp_path):
    files = {GOOD: valid_file(state=2), "notes.txt": b"hello", "fastpatch-x-1.fpt": b"junk",
             "fastpatch-1-2.fpt": os.urandom(8192), "fastpatch-3-4.fpt": b"\0" * 10000}
    (tmp_path / "fastpatch-9-9.fpt").mkdir()
    os.symlink(str(tmp_path / GOOD), str(tmp_path / "fastpatch-8-8.fpt"))
    found = _read(tmp_path, files)
    _good_only(found)
    assert sorted(name for name, _ in found.bad_files) == [
        "fastpatch-1-2.fpt", "fastpatch-3-4.fpt", "fastpatch-8-8.fpt", "fastpatch-9-9.fpt"]


def test_read_slots_refuses_slots_beyond_its_buffer():
    data = valid_file()
    with pytest.raises(ValueError, match="beyond the buffer"):
        _ext.read_slots(data, 1, 2)
    with pytest.raises(ValueError, match="holds no header"):
        _ext.read_slots(b"FPTELEM", 0, 0)
    assert len(_ext.read_slots(data, 0, 2)) == 2 * SLOT


def test_records_copied_while_a_c_writer_rewrites_them_are_never_torn(tmp_path):
    records = 200
    data = header(n_slots=records) + b"".join(record_slot(calls=0, seq=0) for _ in range(records))
    path = tmp_path / GOOD
    path.write_bytes(data)
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), len(data)) as mm:
        writer = threading.Thread(target=_ext._testing_hammer_slots, args=(mm, records, 20000))
        writer.start()
        copies = inconsistent = unstable = 0
        while writer.is_alive() or copies == 0:
            raw = _ext.read_slots(mm, 0, records)
            for i in range(records):
                seq, = struct.unpack_from("<Q", raw, i * SLOT)
                if seq & 1:
                    unstable += 1
                    continue
                fields = _files.RECORD.unpack_from(raw, i * SLOT)
                hist = _files.HISTOGRAM.unpack_from(raw, i * SLOT + _files.RECORD.size)
                calls, completed, timed = fields[8], fields[9], fields[11]
                copies += 1
                inconsistent += not (calls == completed == timed == sum(hist))
        writer.join()
    assert inconsistent == 0
    assert copies > records


def test_hard_linked_files_fifos_and_sockets_are_skipped_by_readers_and_left_alone_by_a_sweep(tmp_path):
    d = tmp_path / "svc"
    d.mkdir(mode=0o700)
    (d / GOOD).write_bytes(valid_file(state=2))
    (d / "fastpatch-10-1.fpt").write_bytes(valid_file(calls=9, pid=10, ticks=1))  # dead: nobody holds its lock
    os.link(d / "fastpatch-10-1.fpt", d / "fastpatch-11-1.fpt")  # the same process under a second name
    (tmp_path / "elsewhere").write_bytes(valid_file(calls=5, pid=20, ticks=1))
    os.link(tmp_path / "elsewhere", d / "fastpatch-20-1.fpt")  # a file that lives on outside the directory
    os.mkfifo(d / "fastpatch-30-1.fpt")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(d / "fastpatch-31-1.fpt"))
        found = _files.read_directory(str(d))
        _good_only(found)
        linked = "2 hard links to it; a counters file has one"
        assert found.bad_files == [("fastpatch-10-1.fpt", linked), ("fastpatch-11-1.fpt", linked),
                                   ("fastpatch-20-1.fpt", linked), ("fastpatch-30-1.fpt", "not a regular file"),
                                   ("fastpatch-31-1.fpt", "No such device or address")]
        assert _files.sweep(str(d)) == 1  # the good file only
        assert sorted(os.listdir(d)) == ["archive.fpt", "archive.lock", "fastpatch-10-1.fpt", "fastpatch-11-1.fpt",
                                         "fastpatch-20-1.fpt", "fastpatch-30-1.fpt", "fastpatch-31-1.fpt"]
        assert os.stat(tmp_path / "elsewhere").st_nlink == 2
        report = subprocess.run([sys.executable, "-m", "fastpatch", "report", "-f", "json", str(d)],
                                capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    assert report.returncode == 0, report.stderr
    assert [(f["name"], f["calls"]) for f in json.loads(report.stdout)["functions"]] == [("app.f", 7)]
    assert report.stderr.splitlines() == [f"fastpatch: skipped telemetry file {d / name}: {why}"
                                          for name, why in found.bad_files]


@pytest.mark.parametrize("what", ["bucket count", "bucket edges"])
def test_a_file_of_another_histogram_layout_is_skipped_with_a_warning_naming_it_and_never_merged(tmp_path, what):
    # The header holds the layout's bucket count and a CRC of its edges, not the edges: where a foreign
    # file's buckets lie is unknown, so no reader can add its counts to ours exactly.
    forged = patch(valid_file(calls=5, pid=10, ticks=1), *((20, "<I", 99) if what == "bucket count"
                                                           else (24, "<I", layout_crc() ^ 1)))
    _read(tmp_path, {GOOD: valid_file(state=2), "fastpatch-10-1.fpt": forged})
    with pytest.warns(RuntimeWarning) as caught:
        report = fastpatch.export.read(str(tmp_path))
    crc = layout_crc() if what == "bucket count" else layout_crc() ^ 1
    buckets = 99 if what == "bucket count" else _stats.HIST_BUCKETS
    assert [str(w.message) for w in caught] == [
        f"fastpatch: skipped telemetry file fastpatch-10-1.fpt: another histogram layout ({buckets} buckets, "
        f"CRC {crc:08x})"]
    assert [(f["name"], f["calls"], f["histogram"]) for f in report["functions"]] == [
        ("app.f", 7, {"layout": _stats.histogram_layout(), "counts": {"40": 7}})]
    assert _files.sweep(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == ["archive.fpt", "archive.lock", "fastpatch-10-1.fpt"]
