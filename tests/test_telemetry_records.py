"""Live telemetry: what a snapshot publishes in a record is exactly what the
process counted, bucket by bucket, while a function's latency range moves
(fast calls, then slow ones, then reset(), then fast again), under every
sampling rate and on both clocks. The writer copies only the part of a
histogram where the counts can be, so these tests hold it to the rest too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the writer runs on Linux here")

# The child process calls its functions in phases and takes a snapshot after
# each; it then reads its own file back (as any reader does) and prints, per
# phase and function, what the record holds and what fastpatch.stats() says
# it must hold: the stats plus what each reset() took away.
PROGRAM = """
import json, sys
import fastpatch, fastpatch.export
from fastpatch import _ext
from fastpatch.export import _files

def spin(n):
    for _ in range(n):
        pass

def plain(n):
    spin(n)
    return n

def gen(n):
    spin(n)
    yield n

def fails(n):
    spin(n)
    raise KeyError(n)

def sampled(n):
    spin(n)

def retimed(n):
    spin(n)

def counted(n):
    spin(n)

FUNCS = {"plain": plain, "gen": gen, "fails": fails, "sampled": sampled, "retimed": retimed, "counted": counted}
for name, func in FUNCS.items():
    fastpatch.instrument(func, sample={"sampled": 4, "counted": 0}.get(name, 1))

def call(name, n):
    if name == "gen":
        return list(gen(n))
    try:
        return FUNCS[name](n)
    except KeyError:
        return None

FIELDS = ("calls", "completed", "errors", "timed", "histogram") + (("total_ns", "min_ns", "max_ns")
                                                                   if sys.argv[2] == "monotonic" else ())
# What reset() took away from each function: added to its stats, as the record adds it.
taken = {name: {f: 0 for f in FIELDS} | {"histogram": [0] * _ext.HIST_BUCKETS} for name in FUNCS}

def merged(name, s):
    t = taken[name]
    out = {f: t[f] + getattr(s, f) for f in ("calls", "completed", "errors", "timed") if f in FIELDS}
    out["histogram"] = [a + b for a, b in zip(t["histogram"], s.histogram)]
    if "total_ns" in FIELDS:
        out["total_ns"] = t["total_ns"] + s.total_ns
        timed = [(t["min_ns"], t["max_ns"])] if t["timed"] else []
        timed += [(s.min_ns, s.max_ns)] if s.timed else []
        out["min_ns"] = min((lo for lo, _ in timed), default=0)
        out["max_ns"] = max((hi for _, hi in timed), default=0)
    return out

def reset_all():
    for name, func in FUNCS.items():
        taken[name] = merged(name, fastpatch.stats(func))
    fastpatch.reset()

FAST, SLOW = 0, 20000

def every(n, times):
    for name in FUNCS:
        for _ in range(times):
            call(name, n)

def retime(rate, n, times):
    fastpatch.instrument(retimed, sample=rate)
    for _ in range(times):
        call("retimed", n)

def slow_then_reset():
    every(SLOW, 5)  # calls no snapshot saw before the reset, in buckets the next epoch does not reach
    reset_all()

def untimed_then_sampled_slow():
    retime(0, SLOW, 6)
    retime(3, SLOW, 30)

def reset_twice_then_slow():
    reset_all()
    every(FAST, 1)
    reset_all()
    every(SLOW, 3)

PHASES = [
    ("fast", lambda: every(FAST, 40)),
    ("slow", lambda: every(SLOW, 8)),
    ("slow, then reset", slow_then_reset),
    ("fast after the reset", lambda: every(FAST, 40)),
    ("untimed, then sampled slow", untimed_then_sampled_slow),
    ("exact fast again", lambda: retime(1, FAST, 20)),
    ("reset twice, then slow", reset_twice_then_slow),
]

fastpatch.export.start(sys.argv[1], interval=3600)  # the thread sleeps: the phases take the snapshots
out = []
for phase, run in PHASES:
    run()
    assert _ext.telemetry_snapshot()
    (view,) = _files.read_directory(sys.argv[1]).processes
    published = {s.qualname: s for s in view.stats()}
    for name, func in FUNCS.items():
        p = published[name]
        record = {f: getattr(p, f) for f in FIELDS}
        record["histogram"] = list(record["histogram"])
        out.append([phase, name, record, merged(name, fastpatch.stats(func))])
print(json.dumps({"clock": fastpatch.clock(), "rows": out}))
"""


@pytest.mark.parametrize("clock", ["tsc", "monotonic"])
def test_every_snapshot_publishes_exactly_the_counted_histogram_while_the_latency_range_moves(tmp_path, clock):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PROGRAM), str(tmp_path / "svc"), clock],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "FASTPATCH_CLOCK": clock})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    if got["clock"] != clock:
        pytest.skip(f"this host has no invariant TSC: the probes read {got['clock']}")
    rows = got["rows"]
    assert len(rows) == 7 * 6
    for phase, name, record, expected in rows:
        assert record == expected, f"{phase}: {name}"
    final = {name: record for phase, name, record, _ in rows if phase == "reset twice, then slow"}
    # What each function counted over the run, whatever its rate: every call.
    assert {name: r["calls"] for name, r in final.items()} == {
        "plain": 97, "gen": 97, "fails": 97, "sampled": 97, "retimed": 153, "counted": 97}
    assert {name: r["errors"] for name, r in final.items()} == {
        "plain": 0, "gen": 0, "fails": 97, "sampled": 0, "retimed": 0, "counted": 0}
    # Exact timing puts every call in the histogram; count-only, none.
    assert [sum(final[name]["histogram"]) for name in ("plain", "gen", "fails", "counted")] == [97, 97, 97, 0]
    # The fast and the slow calls of an exact function lie far apart, so that
    # a histogram copied too narrowly (or only where the last epoch was) shows.
    buckets = [i for i, count in enumerate(final["plain"]["histogram"]) if count]
    assert buckets[-1] - buckets[0] > 10

