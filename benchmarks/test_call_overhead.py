"""Per-call overhead of timing a function, one group per workload.

Every group runs the same variants side by side so that pytest-benchmark's
table shows their ratios to the bare call:

* ``bare``: no timing at all;
* ``floor-2x-perf_counter_ns`` (trivial group only): not a timer, the bare
  call between two time.perf_counter_ns() calls, i.e. two C calls and two
  clock reads per call: the floor DESIGN.md compares fastpatch with;
* ``floor-empty-slots`` (trivial group only): not a timer either, the
  function spliced as for count-only with fastpatch's probe swapped for one
  whose C slots only hand the token back and forth (and count both ends):
  the injected instructions' own cost, the floor under count-only and
  ``sample=N``;
* ``naive-time.time``: a plain decorator reading time.time() into a global;
* ``functools-perf_counter_ns``: functools.wraps, perf_counter_ns, try/finally;
* ``functools-activation`` (generators and coroutines only): the same, but the
  wrapper is itself a generator/coroutine, so it times the whole activation
  as fastpatch does (the plain decorators only time the creation of the
  generator or coroutine object);
* ``wrapt``: wrapt.decorator doing what the functools decorator does;
* ``sys.monitoring`` (3.12+): local PY_START/PY_RETURN events on the target's
  code object with the cheapest Python callbacks (PY_UNWIND, global and
  filtered by code object, for the raising function);
* ``cProfile``: a cProfile.Profile enabled before the benchmark and disabled
  after it;
* ``sys.monitoring-C-callback`` (3.12+): the same events with ``slice`` as
  the callback, a C callable that does no timing: a lower bound for any
  sys.monitoring-based timer;
* ``fastpatch``: fastpatch.instrument(f) with the default clock, whose
  counters must account for every single call the benchmark made;
* ``fastpatch-monotonic`` and ``fastpatch-tsc``: the same with the probe's
  clock forced to CLOCK_MONOTONIC or to the invariant TSC (skipped without one);
* ``fastpatch-sample16`` and ``fastpatch-count-only`` (trivial group only):
  ``instrument(f, sample=16)`` on the TSC, beside ``fastpatch-tsc`` (every
  call counted, one in 16 timed), and ``sample=0`` (counted, never timed,
  no clock), each checking the exact call count.

A round is ``CALLS_PER_ROUND`` calls (see extra_info["calls_per_round"]); the
per-call time is the round time divided by it.
"""

import pytest

from _harness import HAS_MONITORING, WORKLOADS, run_call_benchmark, variants_for, wrapt


def _cases():
    cases = []
    for workload in WORKLOADS:
        for name in variants_for(WORKLOADS[workload]):
            marks = []
            if name.startswith("sys.monitoring"):
                marks.append(pytest.mark.skipif(not HAS_MONITORING, reason="sys.monitoring is 3.12+"))
            if name == "wrapt":
                marks.append(pytest.mark.skipif(wrapt is None, reason="wrapt is not installed"))
            cases.append(pytest.param(workload, name, id=f"{WORKLOADS[workload].group}-{name}", marks=marks))
    return cases


@pytest.mark.parametrize("workload,variant", _cases())
def test_call_overhead(benchmark, workload, variant, monkeypatch):
    """One workload (see _harness.WORKLOADS) timed with one variant; groups gather each workload's variants."""
    run_call_benchmark(benchmark, workload, variant, monkeypatch)
