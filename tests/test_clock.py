"""The probes' clocks: CLOCK_MONOTONIC by default, an invariant TSC on request."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
    pairs = []
    for s in (0.01, 0.05, 0.1):
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

    env = {"FASTPATCH_CLOCK": clock, "PATH": ""}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_default_clock_is_monotonic():
    assert fastpatch.clock() == "monotonic"
    assert _ext.ns_per_tick() == 1.0


def test_tsc_clock_agrees_with_clock_monotonic_within_half_a_percent():
    r = _child("tsc")
    if r["clock"] != "tsc":
        assert r["warnings"] == ["FASTPATCH_CLOCK=tsc: this CPU has no invariant TSC; using CLOCK_MONOTONIC"]
        pytest.skip("no invariant TSC on this machine")
    assert r["warnings"] == []
    assert r["calls"] == 3
    outer = r["outer_ns"]
    # The caller's measurement adds the call itself (about a microsecond) to what the probe saw.
    assert abs(r["min_ns"] - outer[0]) <= 0.005 * outer[0]
    assert abs(r["max_ns"] - outer[2]) <= 0.005 * outer[2]
    assert abs(r["total_ns"] - sum(outer)) <= 0.005 * sum(outer)
    assert abs(r["p50"] - outer[1]) <= fastpatch.RELATIVE_ERROR * outer[1]


def test_unknown_clock_name_warns_and_keeps_monotonic():
    r = _child("sundial")
    assert r["clock"] == "monotonic"
    assert r["warnings"] == [
        "FASTPATCH_CLOCK='sundial' is not a clock fastpatch knows ('monotonic', 'tsc'); using monotonic"
    ]
    assert r["calls"] == 3


def test_clock_cannot_change_once_probes_exist():
    def f():
        pass

    fastpatch.instrument(f)
    if fastpatch.clock() == "monotonic":
        with pytest.raises(RuntimeError, match="before anything is instrumented"):
            _ext.use_tsc()
    assert fastpatch.clock() == "monotonic"
