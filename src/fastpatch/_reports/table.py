"""The table of ``fastpatch.report()``: one renderer for the table a
program prints, the text report file, the table ``report`` prints and the
one on stderr at exit.

It imports only ``sys`` at module level: the report at exit on stderr
needs no more than this and the definitions it renders.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, List, Optional, TextIO, Tuple

    from .._stats import Stats

#: The sort keys of the table (``report(sort=...)``, ``-s``, ``FASTPATCH_SORT``), each the order of its rows.
SORT_KEYS = {
    "total": lambda s: -s.total_ns,
    "calls": lambda s: -s.calls,
    "mean": lambda s: -s.mean_ns,
    "max": lambda s: -s.max_ns,
    "errors": lambda s: -s.errors,
    "name": lambda s: s.name,
}

#: What the table of a report says when no definition was called (a
#: report leaves those out: there may well be definitions).
NO_CALLS_TEXT = "(no instrumented function was called)"


def _fmt_ns(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f}ms"
    return f"{ns / 1_000_000_000:.2f}s"


#: The line under a table that has sampled rows.
SAMPLED_LEGEND = (
    "~ estimated from the timed calls of a sampled function (min and max are over the timed calls); "
    "- not timed (count-only)"
)


def _duration_cells(s: Stats) -> List[str]:
    """total, mean, min, p50, p99 and max: ``~`` marks an estimate, ``-`` a count-only row's durations."""
    if s.sampled and not s.timed:
        return ["-"] * 6
    p50, p99 = s._percentiles((50, 99))
    mark = "~" if s.sampled else ""
    return [mark + _fmt_ns(s.total_ns), mark + _fmt_ns(s.mean_ns), _fmt_ns(s.min_ns), mark + _fmt_ns(p50),
            mark + _fmt_ns(p99), _fmt_ns(s.max_ns)]


def render(
    stats: Iterable[Stats], file: Optional[TextIO], sort: str, limit: Optional[int],
    empty: str = "(no instrumented functions)",
) -> None:
    """Write the table to ``file`` (default: stdout): a header and one row
    per Stats, sorted by ``sort`` and cut at ``limit``; ``empty`` under the
    header when there is nothing at all to show, ``SAMPLED_LEGEND`` under
    the rows when a row is sampled."""
    if sort not in SORT_KEYS:
        raise ValueError(f"report() sort must be one of {', '.join(sorted(SORT_KEYS))}; got {sort!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"report() limit must be a non-negative int or None; got {limit!r}")
    every = list(stats)
    rows: List[Stats] = sorted(every, key=SORT_KEYS[sort])
    if limit is not None:
        rows = rows[:limit]
    out = file if file is not None else sys.stdout
    header = ("calls", "errors", "total", "mean", "min", "p50", "p99", "max", "name")
    table: List[Tuple[str, ...]] = [header]
    for s in rows:
        table.append((str(s.calls), str(s.errors), *_duration_cells(s), s.name))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        cells = [c.rjust(w) for c, w in zip(r[:-1], widths)]
        out.write("  ".join(cells + [r[-1]]) + "\n")
    if not every:
        out.write(empty + "\n")
    elif any(s.sampled for s in rows):
        out.write(SAMPLED_LEGEND + "\n")
