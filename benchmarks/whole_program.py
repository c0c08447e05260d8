"""Whole-program overhead: a package's own pytest suite, plain, with every
function of the package instrumented by fastpatch, and under cProfile.

    python benchmarks/whole_program.py PACKAGE [--rounds N] [-- PYTEST-ARGS...]

PACKAGE must be importable, and its tests reachable with PYTEST-ARGS (by
default ``--pyargs PACKAGE``, for packages that ship their tests). Each round
runs every mode once, in a fresh process each, in turn, so that a noisy
machine hits all modes alike; the table reports each mode's best and median
wall time of ``pytest.main()``, and its ratio to plain. In the fastpatch mode
every Python function defined in the package's modules is instrumented once
the tests are collected (so the time to instrument is included), and the
calls fastpatch counted are reported. Every mode must end with the same
pytest exit status, or the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MODES = ("plain", "fastpatch", "cprofile")

# Runs in the child process: argv = [mode, package, *pytest_args].
CHILD = r"""
import json, os, sys, time
mode, package, pytest_args = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, os.environ["FASTPATCH_TESTS_DIR"])
import pytest

result = {"mode": mode}

class Instrument:
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session):
        import fastpatch
        from stdlib_runner import instrument_module
        names = [n for n in list(sys.modules) if n == package or n.startswith(package + ".")]
        t0 = time.perf_counter()
        result["instrumented"] = sum(instrument_module(sys.modules[n]) for n in names if sys.modules[n])
        result["instrument_seconds"] = time.perf_counter() - t0

plugins = [Instrument()] if mode == "fastpatch" else []
profiler = None
if mode == "cprofile":
    import cProfile
    profiler = cProfile.Profile()
start = time.perf_counter()
if profiler:
    profiler.enable()
status = pytest.main(["-q", "-p", "no:cacheprovider", *pytest_args], plugins=plugins)
if profiler:
    profiler.disable()
result["seconds"] = time.perf_counter() - start
result["status"] = int(status)
if mode == "fastpatch":
    import fastpatch
    result["calls"] = sum(s.calls for s in fastpatch.all_stats())
print("FASTPATCH-WHOLE-PROGRAM " + json.dumps(result))
"""


def run_child(mode: str, package: str, pytest_args: list[str]) -> dict:
    env = dict(os.environ, FASTPATCH_TESTS_DIR=os.path.join(os.path.dirname(__file__), "..", "tests"))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, package, *pytest_args],
        capture_output=True, text=True, env=env, check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("FASTPATCH-WHOLE-PROGRAM "):
            return json.loads(line.split(" ", 1)[1])
    raise SystemExit(f"{mode} run printed no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    pytest_args = argv[cut + 1:] or ["--pyargs", args.package]

    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for rnd in range(args.rounds):
        for mode in MODES:
            r = run_child(mode, args.package, pytest_args)
            runs[mode].append(r)
            print(f"round {rnd + 1}: {mode:9s} {r['seconds']:8.2f} s  pytest status {r['status']}", flush=True)

    statuses = {r["status"] for rs in runs.values() for r in rs}
    if len(statuses) != 1:
        raise SystemExit(f"the modes ended differently: pytest statuses {sorted(statuses)}")
    plain = min(r["seconds"] for r in runs["plain"])
    print(f"\n{args.package} on Python {sys.version.split()[0]}, {args.rounds} rounds, pytest status {statuses.pop()}")
    print("| mode | best s | median s | best / plain |")
    print("|---|---:|---:|---:|")
    for mode in MODES:
        secs = [r["seconds"] for r in runs[mode]]
        print(f"| {mode} | {min(secs):.2f} | {statistics.median(secs):.2f} | {min(secs) / plain:.2f} |")
    fp = runs["fastpatch"][-1]
    print(f"\nfastpatch instrumented {fp['instrumented']} definitions in {fp['instrument_seconds']:.2f} s"
          f" (included above) and counted {fp['calls']:,} calls in one run.")


if __name__ == "__main__":
    main()
