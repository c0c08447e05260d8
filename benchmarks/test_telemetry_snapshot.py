"""Live telemetry: what one snapshot of 2,000 called functions costs the
process (DESIGN.md: at most 200 µs of its time per interval).

A round is one snapshot, as the writer's thread makes it each interval
(``_ext.telemetry_snapshot`` is the same C routine, called in the
benchmark's thread). ``changed``: each of the 2,000 functions was called
since the previous snapshot, so each record is rewritten; ``unchanged``:
none was, so the snapshot only compares counters. extra_info has the
process CPU time per snapshot (``cpu_us_per_snapshot``), beside
pytest-benchmark's wall time.
"""

import os
import shutil
import tempfile
import time

import pytest

import fastpatch
import fastpatch.export
from fastpatch import _ext

FUNCTIONS = 2000


@pytest.fixture(scope="module")
def called_functions():
    namespace: dict = {}
    exec("\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(FUNCTIONS)), namespace)
    funcs = [namespace[f"f{i}"] for i in range(FUNCTIONS)]
    for func in funcs:
        fastpatch.instrument(func)
        func(1)
    directory = tempfile.mkdtemp(prefix="fastpatch-bench-")
    fastpatch.export.start(os.path.join(directory, "bench"), interval=3600)  # the thread sleeps: we snapshot
    assert _ext.telemetry_snapshot(), "no telemetry file"
    assert _ext.telemetry_status()["slots"] >= FUNCTIONS
    yield funcs
    fastpatch.export.stop()
    for func in funcs:
        fastpatch.uninstrument(func)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("changed", [True, False], ids=["changed", "unchanged"])
def test_snapshot_of_2000_called_functions(benchmark, called_functions, changed):
    benchmark.group = "telemetry-snapshot"
    cpu = []

    def setup():
        if changed:
            for func in called_functions:
                func(1)

    def snapshot():
        start = time.process_time_ns()
        _ext.telemetry_snapshot()
        cpu.append(time.process_time_ns() - start)

    benchmark.pedantic(snapshot, setup=setup, rounds=200 if changed else 2000, iterations=1)
    cpu.sort()
    benchmark.extra_info.update(functions=FUNCTIONS, changed=changed,
                                cpu_us_per_snapshot=cpu[len(cpu) // 2] / 1000)
