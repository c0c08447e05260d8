"""Per-call overhead of timing a function, one group per workload.

Every group runs the same variants side by side so that pytest-benchmark's
table shows their ratios to the bare call:

* ``bare``: no timing at all;
* ``floor-2x-perf_counter_ns`` (trivial group only): not a timer, the bare
  call between two time.perf_counter_ns() calls, i.e. two C calls and two
  clock reads per call: the floor DESIGN.md compares fastpatch with;
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
  clock forced to CLOCK_MONOTONIC or to the invariant TSC (skipped without one).

A round is ``CALLS_PER_ROUND`` calls (see extra_info["calls_per_round"]); the
per-call time is the round time divided by it.
"""

import pytest

from _harness import HAS_MONITORING, WORKLOADS, run_call_benchmark, variants_for, wrapt


def _params(workload_name):
    params = []
    for name in variants_for(WORKLOADS[workload_name]):
        marks = []
        if name.startswith("sys.monitoring"):
            marks.append(pytest.mark.skipif(not HAS_MONITORING, reason="sys.monitoring is 3.12+"))
        if name == "wrapt":
            marks.append(pytest.mark.skipif(wrapt is None, reason="wrapt is not installed"))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("variant", _params("trivial"))
def test_trivial(benchmark, variant, monkeypatch):
    """def f(x): return x + 1"""
    run_call_benchmark(benchmark, "trivial", variant, monkeypatch)


@pytest.mark.parametrize("variant", _params("arguments"))
def test_arguments(benchmark, variant, monkeypatch):
    """Positional, keyword and default arguments: f(1, 2, d=10) of f(a, b, c=3, *, d=4, e=5)."""
    run_call_benchmark(benchmark, "arguments", variant, monkeypatch)


@pytest.mark.parametrize("variant", _params("method"))
def test_method(benchmark, variant, monkeypatch):
    """o.m(1) on an instance of a plain class."""
    run_call_benchmark(benchmark, "method", variant, monkeypatch)


@pytest.mark.parametrize("variant", _params("generator"))
def test_generator(benchmark, variant, monkeypatch):
    """A generator of 10 items, consumed to the end by a for loop."""
    run_call_benchmark(benchmark, "generator", variant, monkeypatch)


@pytest.mark.parametrize("variant", _params("coroutine"))
def test_coroutine(benchmark, variant, monkeypatch):
    """A coroutine that suspends once, driven to completion with send(None), no event loop."""
    run_call_benchmark(benchmark, "coroutine", variant, monkeypatch)


@pytest.mark.parametrize("variant", _params("raise"))
def test_raise_caught(benchmark, variant, monkeypatch):
    """A function that raises ValueError, caught by the caller."""
    run_call_benchmark(benchmark, "raise", variant, monkeypatch)
