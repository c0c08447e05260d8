"""A package's import with every function spliced by the import hook, against
its plain import, as whole processes side by side.

    python benchmarks/hooked_import.py PACKAGE [--rounds N] [--sample N]

The two commands, run in turn N times after one warm-up each (so both
import from warm ``.pyc`` files)::

    python -c "import PACKAGE"                                     # plain
    FASTPATCH_INCLUDE=PACKAGE python -c "import PACKAGE"           # hooked

The hooked process activates fastpatch at startup (the ``.pth`` file),
splices every function of the package before its modules run, and prints
its report table to stderr at exit: each time is the whole process,
interpreter startup and teardown included. Each process also times its own
``import PACKAGE`` (the import alone, without startup, activation, the
report or teardown), reported on a second line. Ratios are taken pair by
pair (each hooked run against the plain run beside it), so that a machine
whose speed drifts hits both alike; the table gives their median, for wall
time and for CPU time (user + system), which a busy machine inflates less.
``--sample N`` runs the hooked process with ``FASTPATCH_SAMPLE=N``: the
splice is the same at every rate (the rate is a field of each function's
probe), so only the calls the import itself makes are timed differently.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

try:
    import resource
except ImportError:  # Windows: no CPU time of the whole process
    resource = None  # type: ignore[assignment]

CODE = ("import time\nt, c = time.perf_counter(), time.process_time()\nimport {0}\n"
        "print(time.perf_counter() - t, time.process_time() - c)\n")


def children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children so far (0 where unknown)."""
    if resource is None:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(package: str, hooked: bool, sample: int | None = None) -> tuple[float, float, float, float]:
    """One process's (wall time, import's wall time, CPU time, import's CPU time), seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    if hooked:
        env["FASTPATCH_INCLUDE"] = package
        if sample is not None:
            env["FASTPATCH_SAMPLE"] = str(sample)
    cpu = children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CODE.format(package)], capture_output=True, text=True, env=env, check=False
    )
    wall = time.perf_counter() - start
    cpu = children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{'hooked' if hooked else 'plain'} import of {package} failed:\n{proc.stderr[-3000:]}")
    if hooked and "fastpatch" not in proc.stderr:
        raise SystemExit(f"the hooked process printed no fastpatch report; is fastpatch installed here?\n{proc.stderr}")
    import_wall, import_cpu = proc.stdout.split()[-2:]
    return wall, float(import_wall), cpu, float(import_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sample", type=int, default=None, help="the hooked process's FASTPATCH_SAMPLE")
    args = parser.parse_args()

    run(args.package, False), run(args.package, True, args.sample)  # warm-up: .pyc files written, caches warm
    plain: list[tuple[float, float, float, float]] = []
    hooked: list[tuple[float, float, float, float]] = []
    for _ in range(args.rounds):
        plain.append(run(args.package, False))
        hooked.append(run(args.package, True, args.sample))

    rate = "" if args.sample is None else f", FASTPATCH_SAMPLE={args.sample}"
    print(f"{args.package} on Python {sys.version.split()[0]}, {args.rounds} pairs{rate}")
    print("| | plain median ms | hooked median ms | median of pair ratios |")
    print("|---|---:|---:|---:|")
    rows = [(0, "whole process"), (1, "`import` alone"), (3, "`import` alone, CPU time")]
    if resource is not None:
        rows.insert(2, (2, "whole process, CPU time (user + system)"))
    for index, what in rows:
        p = [r[index] for r in plain]
        h = [r[index] for r in hooked]
        ratio = statistics.median(b / a for a, b in zip(p, h))
        print(f"| {what} | {1000 * statistics.median(p):.1f} | {1000 * statistics.median(h):.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
