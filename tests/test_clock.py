"""The probes' clocks: FASTPATCH_CLOCK=auto (the default) reads the TSC where the CPU
says it is invariant and the kernel keeps time with it, CLOCK_MONOTONIC elsewhere;
"tsc" and "monotonic" force one. Every duration comes out in nanoseconds."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time

import pytest

import fastpatch
from fastpatch import _ext

CHILD = textwrap.dedent(
    """
    import json, time, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastpatch

    def sleeper(s):
        time.sleep(s)

    fastpatch.instrument(sleeper)
    # A first call outside the measurement: the interpreter's own first-call
    # work (quickening, a debug build's checks) is not what this compares.
    sleeper(0)
    fastpatch.reset()
    pairs = []
    # Long enough that the caller's own scheduling delays around the call
    # (tens of microseconds on a busy machine) stay far below 0.5%.
    for s in (0.05, 0.1, 0.2):
        t0 = time.monotonic_ns()
        sleeper(s)
        pairs.append(time.monotonic_ns() - t0)
    st = fastpatch.stats(sleeper)
    print(json.dumps({
        "clock": fastpatch.clock(),
        "warnings": [str(w.message) for w in caught],
        "outer_ns": pairs,
        "total_ns": st.total_ns, "min_ns": st.min_ns, "max_ns": st.max_ns,
        "p50": st.percentile(50), "calls": st.calls,
    }))
    """
)


def _child(clock):
    import json

    env = {**os.environ, "FASTPATCH_CLOCK": clock}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _kernel_clocksource():
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as fh:
            return fh.read().strip()
    except OSError:
        return None


def test_auto_clock_is_the_tsc_only_where_the_kernel_keeps_time_with_an_invariant_tsc():
    invariant = _child("tsc")["clock"] == "tsc"
    expected = "tsc" if invariant and _kernel_clocksource() == "tsc" else "monotonic"
    for setting in ("", "auto"):
        r = _child(setting)
        assert (r["clock"], r["warnings"], r["calls"]) == (expected, [], 3)
    if "FASTPATCH_CLOCK" not in os.environ:
        assert fastpatch.clock() == expected


def test_monotonic_clock_can_be_forced():
    gaps = []
    for _attempt in range(3):  # a fresh attempt when the scheduler held the caller (see _tsc_agrees)
        r = _child("monotonic")
        assert (r["clock"], r["warnings"], r["calls"]) == ("monotonic", [], 3)
        outer = r["outer_ns"]
        assert r["min_ns"] <= outer[0] and r["max_ns"] <= outer[2]
        gaps.append(1 - r["min_ns"] / outer[0])
        if gaps[-1] <= 0.01:
            break
    assert min(gaps) <= 0.01, gaps


def _tsc_agrees(r):
    """The probe's durations (TSC, converted) against the caller's
    (CLOCK_MONOTONIC) around the same calls, within 0.5%. The caller's
    measurement encloses the probe's, so only a conversion error can make
    the probe's longer; the caller's can be longer by whatever the scheduler
    did around the call, which on a busy machine now and then exceeds 0.5%
    of 50 ms: the test allows a fresh attempt for that."""
    outer = r["outer_ns"]
    assert r["min_ns"] <= 1.005 * outer[0] and r["max_ns"] <= 1.005 * outer[2]
    assert r["total_ns"] <= 1.005 * sum(outer)
    return (
        abs(r["min_ns"] - outer[0]) <= 0.005 * outer[0]
        and abs(r["max_ns"] - outer[2]) <= 0.005 * outer[2]
        and abs(r["total_ns"] - sum(outer)) <= 0.005 * sum(outer)
        and abs(r["p50"] - outer[1]) <= fastpatch.RELATIVE_ERROR * outer[1]
    )


def test_tsc_clock_agrees_with_clock_monotonic_within_half_a_percent():
    results = []
    for _attempt in range(3):
        r = _child("tsc")
        if r["clock"] != "tsc":
            assert r["warnings"] == ["FASTPATCH_CLOCK=tsc: this CPU has no invariant TSC; using CLOCK_MONOTONIC"]
            pytest.skip("no invariant TSC on this machine")
        assert (r["warnings"], r["calls"]) == ([], 3)
        results.append(r)
        if _tsc_agrees(r):
            return
    pytest.fail(f"the TSC durations disagree with CLOCK_MONOTONIC by more than 0.5% in 3 attempts: {results}")


def test_unknown_clock_name_warns_and_keeps_monotonic():
    r = _child("sundial")
    assert r["clock"] == "monotonic"
    assert r["warnings"] == [
        "FASTPATCH_CLOCK='sundial' is not a clock fastpatch knows ('auto', 'monotonic', 'tsc'); using monotonic"
    ]
    assert r["calls"] == 3


def _time_the_call(f):
    """The duration of ``f()`` on CLOCK_MONOTONIC, in this process, with
    neither a garbage collection nor a forced switch to a thread an earlier
    test left behind landing outside the probe's window: the switch interval
    is long and the collector paused during the call."""
    interval, collecting = sys.getswitchinterval(), gc.isenabled()
    sys.setswitchinterval(1.0)
    gc.disable()
    try:
        t0 = time.monotonic_ns()
        f()
        return time.monotonic_ns() - t0
    finally:
        sys.setswitchinterval(interval)
        if collecting:
            gc.enable()


def test_each_definition_keeps_the_clock_it_was_instrumented_with():
    if not _ext.set_default_clock(True):
        pytest.skip("no invariant TSC on this machine")
    before = fastpatch.clock()
    try:

        def on_tsc():
            time.sleep(0.1)

        fastpatch.instrument(on_tsc)
        _ext.set_default_clock(False)

        def on_monotonic():
            time.sleep(0.1)

        fastpatch.instrument(on_monotonic)
        assert fastpatch.clock() == "monotonic"
        for f in (on_tsc, on_monotonic):
            f()  # its first call (the histogram's allocation, a debug build's checks) is not what this compares
            # As above: the caller's time encloses the probe's, and may exceed
            # it by more than 0.5% when the scheduler intervenes; try again then.
            gaps = []
            for _attempt in range(3):
                fastpatch.reset(f)
                outer = _time_the_call(f)
                inner = fastpatch.stats(f).total_ns
                assert inner <= 1.005 * outer
                gaps.append((outer - inner) / outer)
                if gaps[-1] <= 0.005:
                    break
            assert min(gaps) <= 0.005, (f.__name__, gaps)
        assert (fastpatch.stats(on_tsc).clock, fastpatch.stats(on_monotonic).clock) == ("tsc", "monotonic")
        assert fastpatch.stats(on_tsc).to_dict()["clock"] == "tsc"
    finally:
        _ext.set_default_clock(before == "tsc")


LONG_CALLS = textwrap.dedent(
    """
    import json, time
    import fastpatch

    def batch(seconds):
        time.sleep(seconds)

    fastpatch.instrument(batch)
    outer = []
    for seconds in (3.6, 3.7):
        t0 = time.monotonic_ns()
        batch(seconds)
        outer.append(time.monotonic_ns() - t0)
    s = fastpatch.stats(batch)
    print(json.dumps({"clock": s.clock, "outer": outer, "max": s.max_ns,
                      "p50": s.percentile(50), "p100": s.percentile(100)}))
    """
)


def test_calls_of_several_seconds_on_the_tsc_report_percentiles_within_the_bound():
    # The histogram used to count TSC ticks, so its open-ended top bucket
    # started at 2**33 ticks (3.5 s at 2.45 GHz, less on faster TSCs), and the
    # p50 of two calls of 3.6 and 3.7 s reported max_ns, the 3.7 s one.
    # Buckets now count nanoseconds on every clock, up to HISTOGRAM_RANGE_NS
    # (about 36 minutes).
    import json

    env = {**os.environ, "FASTPATCH_CLOCK": "tsc"}
    out = subprocess.run([sys.executable, "-c", LONG_CALLS], env=env, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    if r["clock"] != "tsc":
        pytest.skip("no invariant TSC on this machine")
    short, long = r["outer"]
    assert abs(r["p50"] - short) <= fastpatch.RELATIVE_ERROR * short
    assert r["p50"] < r["max"]
    assert r["p100"] == r["max"]


SUBINTERPRETER = textwrap.dedent(
    '''
    import json, os, _testcapi
    import fastpatch

    sub = """
    import os
    os.environ["FASTPATCH_CLOCK"] = "tsc"
    import fastpatch

    def g():
        return 1

    fastpatch.instrument(g)
    assert g() == 1
    assert fastpatch.stats(g).calls == 1
    """
    before = fastpatch.clock()
    rc = _testcapi.run_in_subinterp(sub)

    def f():
        return 2

    fastpatch.instrument(f)
    f()
    print(json.dumps({"rc": rc, "before": before, "after": fastpatch.clock(), "f": fastpatch.stats(f).clock,
                      "calls": fastpatch.stats(f).calls}))
    '''
)


def test_a_legacy_subinterpreter_loading_fastpatch_leaves_the_main_interpreters_clock_alone():
    # mod_wsgi runs each application in a legacy subinterpreter (sharing the
    # main GIL). fastpatch works there, and the clock a subinterpreter picks is
    # its own: it used to be process-wide, so the main interpreter switched.
    pytest.importorskip("_testcapi", reason="needs CPython's _testcapi (run_in_subinterp)")
    import json

    env = {**os.environ, "FASTPATCH_CLOCK": "monotonic"}
    out = subprocess.run([sys.executable, "-c", SUBINTERPRETER], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r == {"rc": 0, "before": "monotonic", "after": "monotonic", "f": "monotonic", "calls": 1}


@pytest.mark.skipif(sys.version_info < (3, 14), reason="concurrent.interpreters is 3.14+")
def test_a_subinterpreter_with_its_own_gil_refuses_fastpatch_with_a_clear_import_error():
    from concurrent import interpreters

    interp = interpreters.create()
    try:
        with pytest.raises(interpreters.ExecutionFailed) as info:
            interp.exec("import fastpatch")
    finally:
        interp.close()
    assert info.value.excinfo.type.__name__ == "ImportError"
    assert "subinterpreter that has a GIL of its own" in info.value.excinfo.msg
