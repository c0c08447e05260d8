"""README.md's Performance tables, generated from benchmarks/results/results.json.

    python tools/readme_tables.py            rewrite the tables in README.md
    python tools/readme_tables.py --check    exit 1, with a diff, if README.md differs (the lint session)

Each table sits between ``<!-- results: NAME -->`` and ``<!-- end results: NAME -->``
comments: ``provenance`` (which commit, date, CPU, kernel and clock source
produced the numbers), ``per-call`` (the trivial workload's overhead per call)
and ``patching`` (the 200-line function's patching costs). results.json is
written by ``benchmarks/plot.py --results`` (``nox -s benchmarks``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results" / "results.json"

# (row label, variant, digits, bold) of the per-call table, trivial workload.
PER_CALL_ROWS: List[Tuple[str, str, int, bool]] = [
    ("bare call (absolute)", "bare", 1, False),
    ("`functools.wraps` + `perf_counter_ns` decorator", "functools-perf_counter_ns", 1, False),
    ("naive `time.time` decorator (the seed talk's)", "naive-time.time", 1, False),
    ("`wrapt` decorator", "wrapt", 1, False),
    ("`sys.monitoring`, Python callbacks", "sys.monitoring", 1, False),
    ("`sys.monitoring`, C callbacks that do nothing (`slice`)", "sys.monitoring-C-callback", 1, False),
    ("cProfile enabled", "cProfile", 1, False),
    ("two `perf_counter_ns()` calls from Python (the floor of any Python-level timer)",
     "floor-2x-perf_counter_ns", 1, False),
    ("two C slot calls that only hand a token back and forth (the floor under count-only and `sample=N`)",
     "floor-empty-slots", 1, False),
    ("**fastpatch, TSC** (the default clock on this host)", "fastpatch-tsc", 1, True),
    ("fastpatch, `CLOCK_MONOTONIC`", "fastpatch-monotonic", 1, False),
    ("**fastpatch, `sample=16`** (every call counted, one in 16 timed)", "fastpatch-sample16", 1, True),
    ("**fastpatch, count-only** (`sample=0`: every call counted, none timed)", "fastpatch-count-only", 1, True),
]
# (row label, numerator, denominator, digits)
PER_CALL_RATIOS: List[Tuple[str, str, str, int]] = [
    ("fastpatch (TSC) / decorator", "fastpatch-tsc", "functools-perf_counter_ns", 3),
    ("fastpatch (TSC) / `sys.monitoring` C callbacks", "fastpatch-tsc", "sys.monitoring-C-callback", 2),
    ("`sample=16` / exact (TSC) (target ≤ 0.5)", "fastpatch-sample16", "fastpatch-tsc", 2),
    ("count-only / exact (TSC) (target ≤ 0.33)", "fastpatch-count-only", "fastpatch-tsc", 2),
    ("the slot floor / exact (TSC) (count-only / exact cannot be lower)", "floor-empty-slots", "fastpatch-tsc", 2),
    ("`sample=16` / decorator (target ≤ 0.050 on 3.9–3.13, ≤ 0.067 on 3.14 and 3.15)",
     "fastpatch-sample16", "functools-perf_counter_ns", 3),
    ("count-only / decorator", "fastpatch-count-only", "functools-perf_counter_ns", 3),
    ("the slot floor / decorator (`sample=16` / decorator cannot be lower)", "floor-empty-slots",
     "functools-perf_counter_ns", 3),
    ("`sample=16` / two `perf_counter_ns()` calls", "fastpatch-sample16", "floor-2x-perf_counter_ns", 2),
]
PATCHING_GROUP = "patch-200-lines"
# (row label, variant, digits)
PATCHING_ROWS: List[Tuple[str, str, int]] = [
    ("`instrument()` of an already-seen definition (any size)", "instrument-seen", 2),
    ("`instrument()` of a fresh 200-line function", "instrument-fresh", 1),
    ("`compile()` of its source", "compile", 0),
    ("`bytecode` round trip of its code", "bytecode-roundtrip", 0),
]


def _cell(value: Optional[float], digits: int, bold: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    return f"**{text}**" if bold else text


def _versions(results: Dict[str, Any]) -> List[str]:
    return sorted(results["pythons"], key=lambda v: tuple(int(p) for p in v.split(".")))


def _table(header: str, versions: Sequence[str], rows: List[Tuple[str, List[str]]]) -> str:
    first = f"| {header} |" if header else "| |"
    lines = [f"{first} " + " | ".join(versions) + " |", "|---|" + "---:|" * len(versions)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def per_call(results: Dict[str, Any]) -> str:
    versions = _versions(results)
    trivial = [results["pythons"][v]["overhead_ns"].get("trivial", {}) for v in versions]
    rows = [(label, [_cell(t.get(variant), digits, bold) for t in trivial])
            for label, variant, digits, bold in PER_CALL_ROWS]
    for label, num, den, digits in PER_CALL_RATIOS:
        cells = []
        for t in trivial:
            a, b = t.get(num), t.get(den)
            cells.append(_cell(a / b if a is not None and b else None, digits))
        rows.append((label, cells))
    return _table("variant", versions, rows)


def patching(results: Dict[str, Any]) -> str:
    versions = _versions(results)
    groups = [results["pythons"][v]["patching_us"].get(PATCHING_GROUP, {}) for v in versions]
    rows = [(label, [_cell(g.get(variant), digits) for g in groups]) for label, variant, digits in PATCHING_ROWS]
    return _table("", versions, rows)


STATS = {"min": "minimum", "median": "median", "mean": "mean"}


def provenance(results: Dict[str, Any]) -> str:
    p = results["provenance"]
    text = (
        f"Measured on {p['date']} at commit `{p['commit']}`, on an {p['cpu']} ({p['cores']} cores, Linux "
        f"{p['kernel']}, clock source `{p['clocksource']}`); each cell is the {STATS[results['stat']]} round of "
        f"{results['calls_per_round']} calls."
    )
    if p.get("note"):
        text += f" {p['note']}"
    return text


TABLES: Dict[str, Callable[[Dict[str, Any]], str]] = {
    "provenance": provenance,
    "per-call": per_call,
    "patching": patching,
}


def _replace_block(readme: str, name: str, table: str) -> str:
    pattern = re.compile(
        rf"(<!-- results: {re.escape(name)} -->\n)(?:.*?\n)?(<!-- end results: {re.escape(name)} -->)", re.S
    )
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no <!-- results: {name} --> ... <!-- end results: {name} --> block")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), readme)


def render(readme: str, results: Dict[str, Any]) -> str:
    """``readme`` with every marked table generated again from ``results``."""
    for name, make in TABLES.items():
        readme = _replace_block(readme, name, make(results))
    return readme


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not what results.json gives")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (default: %(default)s)")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    current = README.read_text(encoding="utf-8")
    wanted = render(current, results)
    if args.check:
        if wanted != current:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(keepends=True), wanted.splitlines(keepends=True), "README.md", "generated"))
            print("README.md's Performance tables differ from benchmarks/results/results.json: "
                  "run python tools/readme_tables.py", file=sys.stderr)
            return 1
        print("README.md's Performance tables match benchmarks/results/results.json")
        return 0
    if wanted != current:
        README.write_text(wanted, encoding="utf-8")
        print("README.md's Performance tables written from benchmarks/results/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
