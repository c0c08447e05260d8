"""Reading the probes: immutable Stats snapshots, percentiles and the report table."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, TextIO, Tuple

from . import _ext

HIST_BUCKETS: int = _ext.HIST_BUCKETS
HIST_SHIFT: int = _ext.HIST_SHIFT
HIST_SUB_BITS: int = _ext.HIST_SUB_BITS
_SUB = 1 << HIST_SUB_BITS

#: Largest relative error of a percentile inside the histogram's range:
#: a bucket is at most 1/8 of its lower bound wide and we report its midpoint.
RELATIVE_ERROR = 1 / (2 * _SUB)


def bucket_bounds(index: int) -> Tuple[int, int]:
    """[low, high) in nanoseconds of histogram bucket ``index``."""
    if index < _SUB:
        return index << HIST_SHIFT, (index + 1) << HIST_SHIFT
    e = index // _SUB + HIST_SUB_BITS - 1
    m = index % _SUB
    low = (_SUB + m) << (e - HIST_SUB_BITS)
    width = 1 << (e - HIST_SUB_BITS)
    return low << HIST_SHIFT, (low + width) << HIST_SHIFT


#: Durations from here up share one open-ended top bucket (about 7.5 s).
HISTOGRAM_RANGE_NS = bucket_bounds(HIST_BUCKETS - 1)[0]


@dataclass(frozen=True)
class Stats:
    """An immutable snapshot of one instrumented definition's counters.

    Durations are nanoseconds on a monotonic clock. ``calls`` counts the
    activations started; the duration fields cover those that have ended.
    """

    name: str
    calls: int
    errors: int
    total_ns: int
    min_ns: int
    max_ns: int
    completed: int
    histogram: Tuple[int, ...] = field(repr=False, compare=False)
    #: Nanoseconds per histogram tick: 1.0 for the monotonic clock, the
    #: calibrated TSC period for the TSC clock.
    tick_ns: float = field(default=1.0, repr=False, compare=False)
    #: The clock this definition's probe reads: "monotonic" or "tsc".
    clock: str = field(default="monotonic", compare=False)

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.completed if self.completed else 0.0

    @property
    def in_flight(self) -> int:
        """Activations started and not ended (running or suspended)."""
        return max(self.calls - self.completed, 0)

    def percentile(self, q: float) -> int:
        """Latency at percentile ``q`` (0 to 100), within RELATIVE_ERROR, clamped to [min_ns, max_ns]."""
        if isinstance(q, bool) or not isinstance(q, (int, float)):
            raise TypeError(f"percentile() needs a number from 0 to 100, not {type(q).__name__}")
        if not 0 <= q <= 100 or math.isnan(q):
            raise ValueError(f"percentile() needs q from 0 to 100, got {q!r}")
        if not self.completed:
            return 0
        if q == 0:
            return self.min_ns
        if q == 100:
            return self.max_ns
        hist = self.histogram
        n = sum(hist)
        rank = max(1, math.ceil(q / 100 * n))
        seen = 0
        for index, count in enumerate(hist):  # noqa: B007 - index is read after the loop
            seen += count
            if seen >= rank:
                break
        if index == len(hist) - 1:  # open-ended top bucket
            return self.max_ns
        low, high = bucket_bounds(index)
        mid = (low + high) // 2 if self.tick_ns == 1.0 else round((low + high) / 2 * self.tick_ns)
        return min(max(mid, self.min_ns), self.max_ns)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "calls": self.calls,
            "errors": self.errors,
            "completed": self.completed,
            "total_ns": self.total_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "mean_ns": self.mean_ns,
            "p50_ns": self.percentile(50),
            "p90_ns": self.percentile(90),
            "p99_ns": self.percentile(99),
            "clock": self.clock,
        }


def snapshot(name: str, probe: Any) -> Stats:
    calls, completed, errors, total, lo, hi, hist, tick_ns = probe.snapshot()
    if tick_ns != 1.0:
        total, lo, hi = round(total * tick_ns), round(lo * tick_ns), round(hi * tick_ns)
    return Stats(
        name=name,
        calls=calls,
        errors=errors,
        total_ns=total,
        min_ns=lo,
        max_ns=hi,
        completed=completed,
        histogram=tuple(memoryview(hist).cast("I")),
        tick_ns=tick_ns,
        clock=probe.clock,
    )


_SORT_KEYS = {
    "total": lambda s: -s.total_ns,
    "calls": lambda s: -s.calls,
    "mean": lambda s: -s.mean_ns,
    "max": lambda s: -s.max_ns,
    "errors": lambda s: -s.errors,
    "name": lambda s: s.name,
}


def _fmt_ns(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f}ms"
    return f"{ns / 1_000_000_000:.2f}s"


def render(stats: Iterable[Stats], file: Optional[TextIO], sort: str, limit: Optional[int]) -> None:
    if sort not in _SORT_KEYS:
        raise ValueError(f"report() sort must be one of {', '.join(sorted(_SORT_KEYS))}; got {sort!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"report() limit must be a non-negative int or None; got {limit!r}")
    rows: List[Stats] = sorted(stats, key=_SORT_KEYS[sort])
    if limit is not None:
        rows = rows[:limit]
    out = file if file is not None else sys.stdout
    header = ("calls", "errors", "total", "mean", "min", "p50", "p99", "max", "name")
    table = [header]
    for s in rows:
        table.append((
            str(s.calls), str(s.errors), _fmt_ns(s.total_ns), _fmt_ns(s.mean_ns), _fmt_ns(s.min_ns),
            _fmt_ns(s.percentile(50)), _fmt_ns(s.percentile(99)), _fmt_ns(s.max_ns), s.name,
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        cells = [c.rjust(w) for c, w in zip(r[:-1], widths)]
        out.write("  ".join(cells + [r[-1]]) + "\n")
    if not rows:
        out.write("(no instrumented functions)\n")
