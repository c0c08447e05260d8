"""A long differential fuzzing campaign: tests/test_fuzz.py's checks, for a time budget.

    python tools/fuzz_campaign.py --minutes 30 [--seed N] [--log FILE] [--out FILE]

Runs on the interpreter that runs it (with fastpatch, hypothesis and hypothesmith
installed, as in the test venvs); for 3.14/3.15 run it through newer-pythons. It draws
programs in chunks, each chunk a hypothesis run with a new random seed, until the time
is up, then prints what it checked. Every difference is shrunk by hypothesis and printed
with the entry that makes it a regression test (tests/fuzz_regressions.py); --out also
appends those entries to a file. Exit status: 0 no difference, 1 differences, 2 cannot run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import List, Optional, Tuple

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="time budget (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the chunk seeds (default: random)")
    parser.add_argument("--chunk", type=int, default=300, help="programs per hypothesis run (default 300)")
    parser.add_argument("--log", help="append every skipped or failing program to this file (JSON lines)")
    parser.add_argument("--out", help="append a regression entry per difference to this file")
    args = parser.parse_args(argv)

    sys.path.insert(0, TESTS)
    import test_fuzz  # type: ignore[import-not-found]  # tests/, on sys.path from here on

    if test_fuzz.MISSING is not None:
        print(f"fuzz_campaign: cannot run: {test_fuzz.MISSING}", file=sys.stderr)
        return 2
    if args.log:
        os.environ["FASTPATCH_FUZZ_LOG"] = os.path.abspath(args.log)

    from fuzz_harness import Program, Totals, Verdict, Worker, format_failure  # type: ignore[import-not-found]

    master_seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(master_seed)
    totals = Totals()
    findings: List[Tuple[Program, Verdict]] = []
    started = time.monotonic()
    deadline = started + args.minutes * 60
    print(f"fuzz campaign: {args.minutes:g} minutes on Python {sys.version.split()[0]}, seed {master_seed}", flush=True)

    with Worker() as worker:
        try:
            while deadline - time.monotonic() > 5:
                before = totals.programs + totals.skipped
                chunk_started = time.monotonic()
                chunk_seed = rng.randrange(2**32)
                # Shrinking replays the failure last: the last difference seen is the shrunk one.
                last: List[Tuple[Program, Verdict]] = []
                test = test_fuzz.make_fuzz_test(
                    lambda: worker,
                    _chunk_size(args.chunk, deadline, totals, started),
                    chunk_seed,
                    totals,
                    on_difference=lambda p, v, last=last: last.append((p, v)),
                )
                try:
                    test()
                except Exception as exc:  # a difference (shrunk), or hypothesis giving up on a flaky one
                    if last:
                        findings.append(last[-1])
                        print(format_failure(*last[-1]), flush=True)
                        if args.out:
                            with open(args.out, "a") as fh:
                                fh.write(last[-1][0].as_regression(f"fuzz campaign, chunk seed {chunk_seed}"))
                    else:
                        print(f"chunk seed {chunk_seed}: {type(exc).__name__}: {exc}", flush=True)
                        findings.append((Program("", ()), Verdict("diff", f"{type(exc).__name__}: {exc}")))
                elapsed = time.monotonic() - started
                print(
                    f"[{elapsed / 60:5.1f} min] chunk seed {chunk_seed}: "
                    f"{totals.programs + totals.skipped - before} programs in {time.monotonic() - chunk_started:.0f}s; "
                    f"{totals.summary()}",
                    flush=True,
                )
        except KeyboardInterrupt:
            print("interrupted", flush=True)

    print()
    print(f"fuzz campaign done after {(time.monotonic() - started) / 60:.1f} minutes (seed {master_seed}):")
    print(f"  {totals.summary()}")
    print(f"  differences found: {len(findings)} after shrinking, each printed above (the count of programs")
    print("  with differences includes every program hypothesis tried while shrinking)")
    return 1 if findings else 0


def _chunk_size(wanted: int, deadline: float, totals: object, started: float) -> int:
    """Fewer programs when little time is left, judged by the pace so far."""
    done = getattr(totals, "programs", 0) + getattr(totals, "skipped", 0)
    if not done:
        return min(wanted, 50)
    per_program = (time.monotonic() - started) / done
    remaining = deadline - time.monotonic()
    return max(10, min(wanted, int(remaining / max(per_program, 1e-3))))


if __name__ == "__main__":
    sys.exit(main())
