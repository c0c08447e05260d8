"""Whole-program overhead: a package's own pytest suite as a whole process,
plain, under ``python -m fastpatch run``, and under ``python -m cProfile``.

    python benchmarks/whole_program.py PACKAGE [--rounds N] [-- PYTEST-ARGS...]

PACKAGE must be installed, and its tests reachable with PYTEST-ARGS (by
default ``--pyargs PACKAGE``, for packages that ship their tests). The three
commands are::

    python -m pytest -q -p no:cacheprovider PYTEST-ARGS
    python -m fastpatch run -i PACKAGE -o OUT.json -m pytest -q -p no:cacheprovider PYTEST-ARGS
    python -m cProfile -o OUT.prof -m pytest -q -p no:cacheprovider PYTEST-ARGS

so the fastpatch mode splices every function of the package as its modules
are imported (the import hook), and each mode's time includes interpreter
startup, imports and writing its report. Each round runs every mode once,
in turn, so that a noisy machine hits all modes alike; the table reports
each mode's best and median wall time and its ratio to plain. Every mode
must end with the same exit status, or the run fails. The calls fastpatch
counted come from its JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("plain", "fastpatch", "cprofile")


def command(mode: str, package: str, pytest_args: list[str], out_dir: str) -> list[str]:
    pytest_cmd = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
    if mode == "fastpatch":
        out = os.path.join(out_dir, "fastpatch.json")
        return [sys.executable, "-m", "fastpatch", "run", "-i", package, "-o", out, *pytest_cmd]
    if mode == "cprofile":
        return [sys.executable, "-m", "cProfile", "-o", os.path.join(out_dir, "cprofile.prof"), *pytest_cmd]
    return [sys.executable, *pytest_cmd]


def run(mode: str, package: str, pytest_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
        start = time.perf_counter()
        proc = subprocess.run(
            command(mode, package, pytest_args, out_dir), capture_output=True, text=True, env=env, check=False
        )
        result: dict = {"mode": mode, "seconds": time.perf_counter() - start, "status": proc.returncode}
        if mode == "fastpatch":
            try:
                with open(os.path.join(out_dir, "fastpatch.json")) as fh:
                    functions = json.load(fh)["functions"]
            except (OSError, ValueError, KeyError) as exc:
                raise SystemExit(f"fastpatch wrote no readable report ({exc}):\n{proc.stderr[-3000:]}") from None
            result["functions"] = sum(1 for f in functions if f["calls"])
            result["calls"] = sum(f["calls"] for f in functions)
    return result


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
            r = run(mode, args.package, pytest_args)
            runs[mode].append(r)
            print(f"round {rnd + 1}: {mode:9s} {r['seconds']:8.2f} s  exit status {r['status']}", flush=True)

    statuses = {r["status"] for rs in runs.values() for r in rs}
    if len(statuses) != 1:
        raise SystemExit(f"the modes ended differently: exit statuses {sorted(statuses)}")
    plain = min(r["seconds"] for r in runs["plain"])
    plain_median = statistics.median(r["seconds"] for r in runs["plain"])
    print(f"\n{args.package} on Python {sys.version.split()[0]}, {args.rounds} rounds, exit status {statuses.pop()}")
    print("| mode | best s | median s | best / plain best | median / plain median |")
    print("|---|---:|---:|---:|---:|")
    for mode in MODES:
        secs = [r["seconds"] for r in runs[mode]]
        med = statistics.median(secs)
        print(f"| {mode} | {min(secs):.2f} | {med:.2f} | {min(secs) / plain:.3f} | {med / plain_median:.3f} |")
    fp = runs["fastpatch"][-1]
    print(f"\nfastpatch timed {fp['calls']:,} calls of {fp['functions']:,} functions in one run.")


if __name__ == "__main__":
    main()
