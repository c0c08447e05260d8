#!/usr/bin/env python
"""Per-call overhead charts and tables from pytest-benchmark JSON files.

Usage::

    python benchmarks/plot.py RUN.json [RUN.json ...] [--png overhead.png]
        [--markdown overhead.md] [--results results.json] [--group trivial]
        [--stat min] [--all-groups] [--log]

Give one JSON file per Python version (``pytest benchmarks/
--benchmark-json=FILE``); the version is read from each file's machine_info.
For the chosen call group (default: ``trivial``) it computes, per variant
and version, the time per call minus the bare call's, in nanoseconds, and

* writes a grouped bar chart (PNG, matplotlib's Agg backend), and
* prints a markdown table of the same numbers (and writes it with --markdown),
  followed by the patching-cost table when the files contain it;
* with --results, writes every group's numbers per version, with where they
  come from (commit, date, CPU, kernel, clock source), as the JSON file that
  README.md's Performance tables are generated from (tools/readme_tables.py).

Per-call times come from each benchmark's round statistic (``--stat``, min by
default: on a noisy machine the minimum is the least disturbed round) divided
by extra_info["calls_per_round"].
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# Same order as benchmarks/_harness.py, which this script does not import so
# that it runs without fastpatch installed.
VARIANT_ORDER = [
    "bare", "floor-2x-perf_counter_ns", "floor-empty-slots", "naive-time.time", "functools-perf_counter_ns",
    "functools-activation", "wrapt", "sys.monitoring", "sys.monitoring-C-callback", "cProfile", "fastpatch",
    "fastpatch-monotonic", "fastpatch-tsc", "fastpatch-sample16", "fastpatch-count-only", "fastpatch-telemetry",
]
CALL_GROUPS = ["trivial", "arguments", "method", "generator", "coroutine", "raise-caught"]
PATCH_VARIANTS = ["instrument-fresh", "instrument-seen", "instrument-again", "compile", "bytecode-roundtrip"]
REFERENCE = "functools-perf_counter_ns"
FLOOR = "floor-2x-perf_counter_ns"

# version label -> group -> variant -> value
Table = Dict[str, Dict[str, Dict[str, float]]]


def _version_key(label: str) -> Tuple[int, ...]:
    parts = []
    for p in label.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def load(paths: List[Path], stat: str) -> Tuple[Table, Table, Dict[str, str]]:
    """(ns per call of call groups, µs per operation of patch groups, version -> file)."""
    calls: Table = {}
    patching: Table = {}
    sources: Dict[str, str] = {}
    for path in paths:
        data = json.loads(path.read_text())
        mi = data.get("machine_info", {})
        full = mi.get("python_version", "?")
        impl = mi.get("python_implementation", "CPython")
        label = ".".join(full.split(".")[:2])
        if impl != "CPython":
            label = f"{impl} {label}"
        if label in sources:
            print(f"warning: {path} and {sources[label]} are both Python {label}; using {path}", file=sys.stderr)
        sources[label] = str(path)
        calls[label] = {}
        patching[label] = {}
        for bench in data.get("benchmarks", []):
            extra = bench.get("extra_info", {})
            group = bench.get("group") or ""
            variant = extra.get("variant")
            value = bench.get("stats", {}).get(stat)
            if variant is None or value is None:
                continue
            if "calls_per_round" in extra:
                calls[label].setdefault(group, {})[variant] = value * 1e9 / extra["calls_per_round"]
            elif group.startswith("patch-"):
                patching[label].setdefault(group, {})[variant] = value * 1e6
    return calls, patching, sources


def overheads(calls: Table, group: str) -> Dict[str, Dict[str, float]]:
    """version -> variant -> ns per call over the bare call ('bare' keeps its absolute time)."""
    out: Dict[str, Dict[str, float]] = {}
    for version, groups in calls.items():
        g = groups.get(group, {})
        if "bare" not in g:
            continue
        bare = g["bare"]
        out[version] = {v: (t - bare if v != "bare" else t) for v, t in g.items()}
    return out


def _fmt(x: Optional[float], digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def overhead_markdown(calls: Table, group: str, stat: str) -> str:
    table = overheads(calls, group)
    versions = sorted(table, key=_version_key)
    if not versions:
        return f"(no data for group {group!r})\n"
    variants = [v for v in VARIANT_ORDER if any(v in table[ver] for ver in versions)]
    variants += sorted({v for ver in versions for v in table[ver]} - set(variants))
    lines = [
        f"**{group}**: ns per call over the bare call ({stat} round; the bare row is the absolute time per call)",
        "",
        "| variant | " + " | ".join(versions) + " |",
        "|---|" + "---:|" * len(versions),
    ]
    for v in variants:
        name = "bare call (absolute)" if v == "bare" else v
        lines.append(f"| {name} | " + " | ".join(_fmt(table[ver].get(v)) for ver in versions) + " |")
    for num, den, digits in (("fastpatch", REFERENCE, 3), ("fastpatch-monotonic", REFERENCE, 3),
                             ("fastpatch-tsc", REFERENCE, 3), ("fastpatch", FLOOR, 2), ("fastpatch", "cProfile", 2),
                             ("fastpatch", "sys.monitoring", 2), ("fastpatch", "sys.monitoring-C-callback", 2),
                             ("fastpatch-sample16", "fastpatch", 2), ("fastpatch-count-only", "fastpatch", 2),
                             ("fastpatch-sample16", REFERENCE, 3), ("fastpatch-count-only", REFERENCE, 3),
                             ("fastpatch-sample16", FLOOR, 2), ("floor-empty-slots", "fastpatch-tsc", 2),
                             ("fastpatch-count-only", "floor-empty-slots", 2),
                             ("fastpatch-sample16", "floor-empty-slots", 2)):
        vals = [_ratio(table[ver].get(num), table[ver].get(den)) for ver in versions]
        if any(x is not None for x in vals):
            lines.append(f"| *ratio {num} / {den}* | " + " | ".join(_fmt(x, digits) for x in vals) + " |")
    return "\n".join(lines) + "\n"


def patching_markdown(patching: Table, stat: str) -> str:
    versions = sorted((v for v in patching if patching[v]), key=_version_key)
    if not versions:
        return ""
    sizes = sorted({int(g.split("-")[1]) for v in versions for g in patching[v]})
    lines = [
        f"**patching**: µs per operation ({stat} round)",
        "",
        "| lines | operation | " + " | ".join(versions) + " |",
        "|---:|---|" + "---:|" * len(versions),
    ]
    for n in sizes:
        group = f"patch-{n}-lines"
        for op in PATCH_VARIANTS:
            vals = [patching[ver].get(group, {}).get(op) for ver in versions]
            if any(x is not None for x in vals):
                digits = 2 if all(x is None or x < 100 for x in vals) else 0
                lines.append(f"| {n} | {op} | " + " | ".join(_fmt(x, digits) for x in vals) + " |")
        for num, den in (("instrument-fresh", "compile"), ("bytecode-roundtrip", "compile"),
                         ("bytecode-roundtrip", "instrument-fresh")):
            vals = [_ratio(patching[ver].get(group, {}).get(num), patching[ver].get(group, {}).get(den))
                    for ver in versions]
            if any(x is not None for x in vals):
                lines.append(f"| {n} | *ratio {num} / {den}* | " + " | ".join(_fmt(x, 2) for x in vals) + " |")
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _clocksource() -> str:
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _commit() -> str:
    """The checkout's commit, ``-dirty`` if tracked files differ from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def results_document(paths: List[Path], stat: str) -> Dict[str, object]:
    """Every group's numbers per version (ns per call over the bare call; µs
    per patching operation) and where they come from: the results.json that
    tools/readme_tables.py makes README.md's tables from."""
    calls, patching, sources = load(paths, stat)
    pythons: Dict[str, object] = {}
    calls_per_round = set()
    for version in sorted(calls, key=_version_key):
        data = json.loads(Path(sources[version]).read_text())
        for bench in data.get("benchmarks", []):
            if "calls_per_round" in bench.get("extra_info", {}):
                calls_per_round.add(bench["extra_info"]["calls_per_round"])
        overhead = {g: {v: round(x, 2) for v, x in overheads(calls, g)[version].items()}
                    for g in calls[version] if "bare" in calls[version][g]}
        pythons[version] = {
            "python": data.get("machine_info", {}).get("python_version"),
            "overhead_ns": overhead,
            "patching_us": {g: {v: round(x, 3) for v, x in ops.items()} for g, ops in patching[version].items()},
        }
    return {
        "format": "fastpatch-benchmark-results",
        "version": 1,
        "provenance": {
            "commit": _commit(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "clocksource": _clocksource(),
            "source": "pytest-benchmark JSON: " + ", ".join(sorted(p.name for p in paths)),
        },
        "stat": stat,
        "calls_per_round": max(calls_per_round) if calls_per_round else None,
        "pythons": pythons,
    }


def bar_chart(calls: Table, group: str, stat: str, png: Path, log: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = overheads(calls, group)
    versions = sorted(table, key=_version_key)
    variants = [v for v in VARIANT_ORDER if v != "bare" and any(v in table[ver] for ver in versions)]
    if not versions or not variants:
        raise SystemExit(f"no data for group {group!r} in the given files")
    width = 0.8 / len(versions)
    fig, ax = plt.subplots(figsize=(min(14.0, max(8.0, 0.35 * len(variants) * max(1, len(versions)))), 5.5))
    for i, ver in enumerate(versions):
        xs, ys = [], []
        for j, v in enumerate(variants):
            if v in table[ver]:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(table[ver][v])
        bars = ax.bar(xs, ys, width, label=f"Python {ver} (bare {table[ver]['bare']:.0f} ns)")
        for bar, y in zip(bars, ys):
            ax.annotate(f"{y:.0f}", (bar.get_x() + bar.get_width() / 2, max(y, 0)),
                        ha="center", va="bottom", fontsize=6, rotation=90, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants, rotation=20, ha="right")
    ax.set_ylabel(f"ns per call over the bare call ({stat} round)")
    ax.set_title(f"Timing overhead per call, '{group}' workload")
    ax.axhline(0, color="black", linewidth=0.6)
    if log:
        ax.set_yscale("symlog", linthresh=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON files, one per Python version")
    parser.add_argument("--png", type=Path, default=Path("fastpatch-overhead.png"),
                        help="bar chart to write (default: %(default)s)")
    parser.add_argument("--no-png", action="store_true", help="do not draw the chart")
    parser.add_argument("--markdown", type=Path, help="also write the markdown tables to this file")
    parser.add_argument("--results", type=Path,
                        help="also write every number, with its provenance, to this JSON file (results.json)")
    parser.add_argument("--group", default="trivial", help="call group to chart (default: %(default)s)")
    parser.add_argument("--stat", default="min", choices=["min", "median", "mean"],
                        help="round statistic to use (default: %(default)s)")
    parser.add_argument("--all-groups", action="store_true", help="print a table for every call group")
    parser.add_argument("--log", action="store_true", help="symmetric log scale for the chart")
    args = parser.parse_args(argv)

    calls, patching, _ = load(args.json, args.stat)
    groups = [args.group]
    if args.all_groups:
        groups += [g for g in CALL_GROUPS if g != args.group]
    parts = [overhead_markdown(calls, g, args.stat) for g in groups]
    patch_md = patching_markdown(patching, args.stat)
    if patch_md:
        parts.append(patch_md)
    text = "\n".join(parts)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.results:
        document = results_document(args.json, args.stat)
        args.results.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"results written to {args.results}", file=sys.stderr)
    if not args.no_png:
        bar_chart(calls, args.group, args.stat, args.png, args.log)
        print(f"chart written to {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
