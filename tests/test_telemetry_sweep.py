"""The sweep: dead processes' files folded into archive.fpt once, merged
counters that never go down, concurrent sweepers, a sweep that dies between
its rename and its unlinks; and the new-run rule."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fastpatch.export import _files
from telemetry_files import valid_file

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and /proc")


def _dead_files(d, count: int, calls: int = 7) -> None:
    """``count`` files of dead processes (nobody holds their lock), app.f called ``calls`` times in each."""
    d.mkdir(mode=0o700, exist_ok=True)
    for i in range(count):
        (d / f"fastpatch-{1000 + i}-{50 + i}.fpt").write_bytes(valid_file(calls, pid=1000 + i, ticks=50 + i))


def _total(d) -> tuple[int, list[str]]:
    found = _files.read_directory(str(d))
    assert found.bad_files == []
    (s,) = found.stats()
    return s.calls, sorted(p.state for p in found.processes)


def test_dead_processes_are_folded_into_the_archive_once_and_their_files_removed(tmp_path):
    d = tmp_path / "svc"
    _dead_files(d, 5)
    assert _total(d) == (35, ["live"] * 5)
    assert _files.sweep(str(d)) == 5
    assert sorted(os.listdir(d)) == ["archive.fpt", "archive.lock"]
    assert _total(d) == (35, ["archive"])
    assert _files.sweep(str(d)) == 0
    assert _total(d) == (35, ["archive"])
    (archive,) = _files.read_directory(str(d)).processes
    assert sorted((pid, ticks) for pid, ticks, _ in archive.absorbed) == [(1000 + i, 50 + i) for i in range(5)]


def test_damaged_files_are_never_folded_or_removed_by_a_sweep(tmp_path):
    d = tmp_path / "svc"
    _dead_files(d, 1)
    (d / "fastpatch-9-9.fpt").write_bytes(b"junk")
    assert _files.sweep(str(d)) == 1
    assert sorted(os.listdir(d)) == ["archive.fpt", "archive.lock", "fastpatch-9-9.fpt"]


SWEEPER = """
import sys
from fastpatch.export import _files
print(_files.sweep(sys.argv[1]))
"""


def test_two_processes_sweeping_at_once_fold_each_dead_process_exactly_once(tmp_path):
    d = tmp_path / "svc"
    _dead_files(d, 40)
    sweepers = [subprocess.Popen([sys.executable, "-c", SWEEPER, str(d)], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
    folded = sorted(int(p.communicate(timeout=120)[0]) for p in sweepers)
    assert sum(folded) == 40 and folded[0] in (0, 40)  # the lock makes one sweep take all, the other none
    assert _total(d) == (280, ["archive"])


def test_a_sweep_that_dies_between_its_rename_and_its_unlinks_never_counts_a_process_twice(tmp_path):
    d = tmp_path / "svc"
    _dead_files(d, 3)
    crash = SWEEPER.replace("_files.sweep(sys.argv[1])",
                            "_files.sweep(sys.argv[1], _after_rename=lambda: __import__('os')._exit(9))")
    died = subprocess.run([sys.executable, "-c", crash, str(d)], timeout=120)
    assert died.returncode == 9
    assert len([n for n in os.listdir(d) if n.startswith("fastpatch-")]) == 3  # still there, and absorbed
    assert _total(d) == (21, ["archive"])
    assert _files.sweep(str(d)) == 0  # removes them without folding them again
    assert sorted(os.listdir(d)) == ["archive.fpt", "archive.lock"]
    assert _total(d) == (21, ["archive"])


PROCESS = """
import fastpatch, fastpatch.export

def f(x):
    return x + 1

fastpatch.instrument(f)
fastpatch.export.start({d!r}, interval=60)
for i in range({calls}):
    f(i)
"""


def _process(d, calls: int) -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PROCESS.format(d=str(d), calls=calls))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_merged_counters_never_go_down_while_short_lived_processes_come_and_go_and_sweeps_run(tmp_path):
    d = tmp_path / "svc"
    d.mkdir(mode=0o700)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({str(d / 'run.lock')!r}, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        print("holding", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # one run: no process starts a new one
    try:
        assert holder.stdout.readline() == "holding\n"
        seen = []
        for n in range(1, 7):
            _process(d, n)
            seen.append(_total(d)[0])
            if n % 2:
                _files.sweep(str(d))
                seen.append(_total(d)[0])
    finally:
        holder.stdin.close()
        holder.wait(60)
    assert seen == sorted(seen)
    assert seen[-1] == 21


def test_a_new_run_starts_from_zero_and_keeps_the_old_archive_aside(tmp_path):
    d = tmp_path / "svc"
    _process(d, 5)
    _process(d, 6)  # a new run each time: nothing of the earlier one lives
    assert _total(d) == (6, ["exited"])
    previous = _files.read_file(str(d / "previous-archive.fpt"))
    assert [(s.qualname, s.calls) for s in previous.stats()] == [("f", 5)]
