"""Whole-program overhead: a package's own pytest suite as a whole process,
plain, under ``python -m fastpatch run`` (exact, sampled and count-only), and
under ``python -m cProfile``.

    python benchmarks/whole_program.py PACKAGE [--rounds N] [--modes M,M...] [--sample N] [-- PYTEST-ARGS...]

PACKAGE must be installed, and its tests reachable with PYTEST-ARGS (by
default ``--pyargs PACKAGE``, for packages that ship their tests). The
modes (``--modes``, comma-separated; all of them by default) run::

    plain       python -m pytest -q -p no:cacheprovider PYTEST-ARGS
    fastpatch   python -m fastpatch run -i PACKAGE -o OUT.json -m pytest ...
    sampled     python -m fastpatch run --sample N -i PACKAGE -o OUT.json -m pytest ...   (N: --sample, 16)
    count-only  python -m fastpatch run --sample 0 -i PACKAGE -o OUT.json -m pytest ...
    cprofile    python -m cProfile -o OUT.prof -m pytest ...

so the fastpatch modes splice every function of the package as its modules
are imported (the import hook), and each mode's time includes interpreter
startup, imports and writing its report. Each round runs every mode once,
in turn, so that a noisy machine hits all modes alike; the tables report
each mode's best and median wall time, and CPU time (user + system of the
process, which a busy machine inflates less than wall time), and their
ratios to plain and to exact ``run``. Every mode must end with the same
exit status, or the run fails. The calls fastpatch counted come from its
JSON report: counts are exact at every sampling rate, so every fastpatch
run must count the same calls and errors of every function (and report the
rate it was given), or the run fails and names the functions that differ.
PYTHONHASHSEED is fixed (to 0 unless set) so that runs iterate sets and
dicts of strings alike.
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

try:
    import resource
except ImportError:  # Windows: wall time only
    resource = None  # type: ignore[assignment]

MODES = ("plain", "fastpatch", "sampled", "count-only", "cprofile")
#: The rate each fastpatch mode passes to ``run --sample`` (None: no option, exact timing).
FASTPATCH_MODES = {"fastpatch": None, "sampled": 16, "count-only": 0}


def label(mode: str) -> str:
    """How the table names ``mode``: its command, in short."""
    if mode == "fastpatch":
        return "`fastpatch run` (exact)"
    if mode in FASTPATCH_MODES:
        return f"`fastpatch run --sample {FASTPATCH_MODES[mode]}`"
    return "cProfile" if mode == "cprofile" else mode


def command(mode: str, package: str, pytest_args: list[str], out_dir: str) -> list[str]:
    pytest_cmd = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
    if mode in FASTPATCH_MODES:
        sample = FASTPATCH_MODES[mode]
        rate = [] if sample is None else ["--sample", str(sample)]
        out = os.path.join(out_dir, "fastpatch.json")
        return [sys.executable, "-m", "fastpatch", "run", *rate, "-i", package, "-o", out, *pytest_cmd]
    if mode == "cprofile":
        return [sys.executable, "-m", "cProfile", "-o", os.path.join(out_dir, "cprofile.prof"), *pytest_cmd]
    return [sys.executable, *pytest_cmd]


def run(mode: str, package: str, pytest_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
        env.setdefault("PYTHONHASHSEED", "0")
        cpu = child_cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.run(
            command(mode, package, pytest_args, out_dir), capture_output=True, text=True, env=env, check=False
        )
        result: dict = {"mode": mode, "seconds": time.perf_counter() - start, "status": proc.returncode}
        if cpu is not None:
            result["cpu"] = child_cpu_seconds() - cpu
        if mode in FASTPATCH_MODES:
            try:
                with open(os.path.join(out_dir, "fastpatch.json")) as fh:
                    functions = json.load(fh)["functions"]
            except (OSError, ValueError, KeyError) as exc:
                raise SystemExit(f"fastpatch wrote no readable report ({exc}):\n{proc.stderr[-3000:]}") from None
            result["functions"] = sum(1 for f in functions if f["calls"])
            result["calls"] = sum(f["calls"] for f in functions)
            result["counts"] = counts_by_function(functions)
            result["rates"] = {f.get("sample", 1) for f in functions}
    return result


def child_cpu_seconds() -> float | None:
    """User + system CPU seconds of this process's waited-for children so far
    (None where the platform does not say)."""
    if resource is None:
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_table(runs: dict[str, list[dict]], key: str, unit: str) -> None:
    """The markdown table of ``key`` (``"seconds"`` or ``"cpu"``): each mode's
    best and median, their ratios to plain's and exact run's, and the median
    of the ratios round by round (each run against the one of its own round,
    which a machine whose load drifts hits alike)."""
    best = {m: min(r[key] for r in rs) for m, rs in runs.items()}
    median = {m: statistics.median(r[key] for r in rs) for m, rs in runs.items()}
    against = [m for m in ("plain", "fastpatch") if m in runs]
    print(f"| mode | best {unit} | median {unit} | " + " | ".join(
        f"best / {m} best | median / {m} median | median of round ratios to {m}" for m in against) + " |")
    print("|---|---:|---:|" + "---:|---:|---:|" * len(against))
    for mode in runs:
        ratios = "".join(
            f" {best[mode] / best[m]:.3f} | {median[mode] / median[m]:.3f} |"
            f" {statistics.median(a[key] / b[key] for a, b in zip(runs[mode], runs[m])):.3f} |"
            for m in against
        )
        print(f"| {label(mode)} | {best[mode]:.2f} | {median[mode]:.2f} |{ratios}")


def counts_by_function(functions: list[dict]) -> dict[tuple[str, str, int], tuple[int, int]]:
    """Each function's (calls, errors), keyed by where it is defined (two
    definitions may share a name)."""
    counts: dict[tuple[str, str, int], tuple[int, int]] = {}
    for f in functions:
        key = (f["name"], f["filename"], f["firstlineno"])
        calls, errors = counts.get(key, (0, 0))
        counts[key] = (calls + f["calls"], errors + f["errors"])
    return counts


def check_counts(reference: dict, r: dict) -> None:
    """Fail unless fastpatch run ``r`` reported its own rate and counted every
    function's calls and errors as the ``reference`` run did."""
    expected = FASTPATCH_MODES[r["mode"]]
    if r["rates"] != {1 if expected is None else expected}:
        raise SystemExit(f"{r['mode']}: the report's sampling rates are {sorted(r['rates'])}, not {expected}")
    if r["counts"] == reference["counts"]:
        return
    keys = sorted(set(r["counts"]) | set(reference["counts"]))
    differ = [k for k in keys if r["counts"].get(k, (0, 0)) != reference["counts"].get(k, (0, 0))]
    lines = [f"  {k[0]} ({k[1]}:{k[2]}): (calls, errors) {reference['counts'].get(k, (0, 0))} under "
             f"{reference['mode']}, {r['counts'].get(k, (0, 0))} under {r['mode']}" for k in differ[:20]]
    raise SystemExit(
        f"the fastpatch runs counted differently: {reference['calls']:,} calls under {reference['mode']}, "
        f"{r['calls']:,} under {r['mode']}; {len(differ)} functions differ (PYTHONHASHSEED="
        f"{os.environ.get('PYTHONHASHSEED', '0')}: a random seed changes what some suites call):\n" + "\n".join(lines)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--sample", type=int, default=16, help="the sampled mode's rate, N >= 2 (default 16)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    pytest_args = argv[cut + 1:] or ["--pyargs", args.package]
    modes = list(dict.fromkeys(m.strip() for m in args.modes.split(",") if m.strip()))
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"--modes takes modes from {', '.join(MODES)}, not {args.modes!r}")
    if args.sample < 2:
        parser.error(f"--sample must be 2 or more (the fastpatch mode is 1, count-only is 0), not {args.sample}")
    FASTPATCH_MODES["sampled"] = args.sample

    runs: dict[str, list[dict]] = {m: [] for m in modes}
    reference: dict | None = None  # the first fastpatch run, which every other one must count alike
    for rnd in range(args.rounds):
        for mode in modes:
            r = run(mode, args.package, pytest_args)
            runs[mode].append(r)
            cpu = f"  cpu {r['cpu']:8.2f} s" if "cpu" in r else ""
            print(f"round {rnd + 1}: {mode:10s} {r['seconds']:8.2f} s{cpu}  exit status {r['status']}", flush=True)
            if mode in FASTPATCH_MODES:
                reference = reference or r
                check_counts(reference, r)

    statuses = {r["status"] for rs in runs.values() for r in rs}
    if len(statuses) != 1:
        raise SystemExit(f"the modes ended differently: exit statuses {sorted(statuses)}")
    print(f"\n{args.package} on Python {sys.version.split()[0]}, {args.rounds} rounds, exit status {statuses.pop()}")
    print("\nwall time:")
    print_table(runs, "seconds", "s")
    if resource is not None:
        print("\nCPU time (user + system):")
        print_table(runs, "cpu", "s")
    if reference is not None:
        print(f"\nevery fastpatch run counted {reference['calls']:,} calls of {reference['functions']:,} functions.")


if __name__ == "__main__":
    main()
