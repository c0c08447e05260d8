"""Reading the probes: immutable Stats snapshots, percentiles and the report table."""

from __future__ import annotations

import math
import sys
from itertools import compress

from ._native import ext

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing or dataclasses at run time: `import fastpatch` must stay cheap
    from typing import Any, Dict, Iterable, List, Optional, Set, TextIO, Tuple

HIST_BUCKETS: int = ext.HIST_BUCKETS
HIST_SHIFT: int = ext.HIST_SHIFT

# The bucket layout of _ext.c (fp_bucket_of), over u = ns >> HIST_SHIFT:
# 8 buckets of one unit, then 8 per power of two for u in [8, 64), then 6 per
# power of two cut at these cells of the 6 bits below u's leading one
# (fp_sixths), then one open-ended bucket. tests/test_histogram.py checks
# that every bound here matches the C bucketing.
_LINEAR = 8
_LOG_START = 32
_SIXTH_CELLS = (0, 8, 17, 27, 38, 51, 64)
_TOP_EXP = 5 + (HIST_BUCKETS - 1 - _LOG_START) // 6

#: Largest relative error of a percentile from 32 ns up to HISTOGRAM_RANGE_NS:
#: every bucket there is reported by the point closest, relatively, to both
#: of its ends (tests/test_histogram.py checks each bucket against it).
RELATIVE_ERROR = 1 / 16

#: Durations from here up (2**41 ns, about 36.6 minutes) share one open-ended
#: top bucket; a percentile that falls there reports max_ns.
HISTOGRAM_RANGE_NS = 1 << (_TOP_EXP + 1 + HIST_SHIFT)


def bucket_bounds(index: int) -> Tuple[int, int]:
    """[low, high) in nanoseconds of histogram bucket ``index`` (the top
    bucket's high is 2**64)."""
    if index < _LINEAR:
        low, high = index, index + 1
    elif index < _LOG_START:
        e, sub = divmod(index - _LINEAR, 8)
        low = (8 + sub) << e
        high = low + (1 << e)
    elif index < HIST_BUCKETS - 1:
        e, j = divmod(index - _LOG_START, 6)
        low = (64 + _SIXTH_CELLS[j]) << e
        high = (64 + _SIXTH_CELLS[j + 1]) << e
    else:
        return HISTOGRAM_RANGE_NS, 1 << 64
    return low << HIST_SHIFT, high << HIST_SHIFT


_layout: Optional[str] = None


def histogram_layout() -> str:
    """The name of this histogram layout, such as ``"log6-4ns-231-89abcdef"``:
    buckets per power of two in the logarithmic range, the linear unit, the
    number of buckets, and a CRC-32 of every bucket's bounds. Histograms of
    the same layout merge exactly, by adding counts bucket by bucket (JSON
    reports carry it, and readers refuse any other)."""
    global _layout
    if _layout is None:
        import binascii

        bounds = ",".join("{}-{}".format(*bucket_bounds(i)) for i in range(HIST_BUCKETS))
        per_octave = len(_SIXTH_CELLS) - 1
        _layout = f"log{per_octave}-{1 << HIST_SHIFT}ns-{HIST_BUCKETS}-{binascii.crc32(bounds.encode()):08x}"
    return _layout


def bucket_value(index: int) -> int:
    """The duration a percentile in bucket ``index`` reports, in nanoseconds.

    The linear buckets (below 32 ns) report their midpoint, within 2 ns of
    any duration in them. The others report 2*low*high/(low + high), whose
    relative distance to both ends is the same, (high - low)/(high + low),
    at most 0.06 with this layout.
    """
    low, high = bucket_bounds(index)
    if index < _LINEAR:
        return (low + high) // 2
    return round(2 * low * high / (low + high))


class Stats:
    """An immutable snapshot of one instrumented definition's counters.

    Durations are nanoseconds on a monotonic clock, whichever clock the
    probe reads. ``calls`` counts the activations started; the duration
    fields cover those that have ended. ``histogram`` holds the count of
    each bucket (see ``bucket_bounds``).

    ``clock`` is the clock the definition's probe reads ("tsc" or
    "monotonic"); ``module``, ``qualname``, ``filename`` and
    ``firstlineno`` say where the definition comes from.
    """

    __slots__ = (
        "name", "calls", "errors", "total_ns", "min_ns", "max_ns", "completed", "histogram", "clock", "module",
        "qualname", "filename", "firstlineno",
    )
    #: Compared by ==; the rest describes them.
    _COMPARED = ("name", "calls", "errors", "total_ns", "min_ns", "max_ns", "completed")

    name: str
    calls: int
    errors: int
    total_ns: int
    min_ns: int
    max_ns: int
    completed: int
    histogram: Tuple[int, ...]
    clock: str
    module: str
    qualname: str
    filename: str
    firstlineno: int

    def __init__(
        self, name: str, calls: int, errors: int, total_ns: int, min_ns: int, max_ns: int, completed: int,
        histogram: Tuple[int, ...], clock: str = "monotonic", module: str = "", qualname: str = "",
        filename: str = "", firstlineno: int = 0,
    ) -> None:
        values = (name, calls, errors, total_ns, min_ns, max_ns, completed, histogram, clock, module, qualname,
                  filename, firstlineno)
        for slot, value in zip(self.__slots__, values):
            object.__setattr__(self, slot, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Stats is an immutable snapshot; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Stats is an immutable snapshot; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Stats:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._COMPARED)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f) for f in self._COMPARED))

    def __repr__(self) -> str:
        shown = self._COMPARED + ("clock", "module", "qualname", "filename", "firstlineno")
        return "Stats(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in shown) + ")"

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (Stats, tuple(getattr(self, f) for f in self.__slots__))

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
        return self._percentiles((q,))[0]

    def _percentiles(self, qs: Tuple[float, ...]) -> List[int]:
        """``percentile(q)`` for each of ``qs`` (checked numbers), summing the histogram once."""
        if not self.completed:
            return [0] * len(qs)
        hist = self.histogram
        total = sum(hist)
        out = []
        for q in qs:
            if q == 0:
                out.append(self.min_ns)
                continue
            rank = max(1, math.ceil(q / 100 * total))
            index, seen = len(hist), 0
            for index, count in compress(enumerate(hist), hist):  # noqa: B007 - the nonzero buckets, in order
                seen += count
                if seen >= rank:
                    break
            if q == 100 or seen < rank or index >= len(hist) - 1:  # the open-ended top bucket
                out.append(self.max_ns)
            else:
                out.append(min(max(bucket_value(index), self.min_ns), self.max_ns))
        return out

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
            **dict(zip(("p50_ns", "p90_ns", "p99_ns"), self._percentiles((50, 90, 99)))),
            "clock": self.clock,
        }


def snapshot(name: str, probe: Any, *, module: str = "", qualname: str = "", filename: str = "",
             firstlineno: int = 0) -> Stats:
    calls, completed, errors, total, lo, hi, hist, ns_per_tick = probe.snapshot()
    if ns_per_tick != 1.0:  # TSC ticks
        total, lo, hi = round(total * ns_per_tick), round(lo * ns_per_tick), round(hi * ns_per_tick)
    return Stats(
        name=name,
        calls=calls,
        errors=errors,
        total_ns=total,
        min_ns=lo,
        max_ns=hi,
        completed=completed,
        histogram=tuple(memoryview(hist).cast("I")),
        clock=probe.clock,
        module=module,
        qualname=qualname,
        filename=filename,
        firstlineno=firstlineno,
    )


#: The sort keys of ``report()``, each the order of the table's rows.
SORT_KEYS = {
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


def render(
    stats: Iterable[Stats], file: Optional[TextIO], sort: str, limit: Optional[int],
    empty: str = "(no instrumented functions)",
) -> None:
    """The report table: a header and one row per definition, sorted by
    ``sort`` and cut at ``limit``; ``empty`` under the header when there is
    nothing at all to show."""
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
    table = [header]
    for s in rows:
        p50, p99 = s._percentiles((50, 99))
        table.append((
            str(s.calls), str(s.errors), _fmt_ns(s.total_ns), _fmt_ns(s.mean_ns), _fmt_ns(s.min_ns),
            _fmt_ns(p50), _fmt_ns(p99), _fmt_ns(s.max_ns), s.name,
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        cells = [c.rjust(w) for c, w in zip(r[:-1], widths)]
        out.write("  ".join(cells + [r[-1]]) + "\n")
    if not every:
        out.write(empty + "\n")


# --------------------------------------------------------------------------
# Definitions merged for a report (module, qualname and first line)
# --------------------------------------------------------------------------

#: What the table says when a report has no calls.
NO_CALLS_TEXT = "(no instrumented function was called)"


class _Merged:
    """One definition's counters, added up from any number of sources."""

    __slots__ = ("name", "module", "qualname", "filename", "firstlineno", "calls", "errors", "completed",
                 "total_ns", "min_ns", "max_ns", "histogram", "clocks")

    def __init__(self, name: str, module: str, qualname: str, filename: str, firstlineno: int) -> None:
        self.name = name
        self.module = module
        self.qualname = qualname
        self.filename = filename
        self.firstlineno = firstlineno
        self.calls = self.errors = self.completed = self.total_ns = self.min_ns = self.max_ns = 0
        self.histogram = [0] * HIST_BUCKETS
        self.clocks: Set[str] = set()

    def add(self, calls: int, errors: int, completed: int, total_ns: int, min_ns: int, max_ns: int,
            counts: Iterable[Tuple[int, int]], clock: str) -> None:
        if completed:
            self.min_ns = min_ns if not self.completed else min(self.min_ns, min_ns)
            self.max_ns = max(self.max_ns, max_ns)
        self.calls += calls
        self.errors += errors
        self.completed += completed
        self.total_ns += total_ns
        hist = self.histogram
        for index, count in counts:
            hist[index] += count
        self.clocks.add(clock)

    def stats(self) -> Stats:
        clock = next(iter(self.clocks)) if len(self.clocks) == 1 else "mixed" if self.clocks else "monotonic"
        return Stats(
            name=self.name, calls=self.calls, errors=self.errors, total_ns=self.total_ns, min_ns=self.min_ns,
            max_ns=self.max_ns, completed=self.completed, histogram=tuple(self.histogram), clock=clock,
            module=self.module, qualname=self.qualname, filename=self.filename, firstlineno=self.firstlineno,
        )


class Definitions:
    """Definitions keyed as DESIGN.md says: module, qualname and first line."""

    def __init__(self) -> None:
        self.by_key: Dict[Tuple[str, str, int], _Merged] = {}

    def entry(self, name: str, module: str, qualname: str, filename: str, firstlineno: int) -> _Merged:
        if module == "__mp_main__":
            if name == f"{module}.{qualname}":
                name = f"__main__.{qualname}"
            module = "__main__"
        key = (module, qualname, firstlineno)
        merged = self.by_key.get(key)
        if merged is None:
            merged = self.by_key[key] = _Merged(name, module, qualname, filename, firstlineno)
        return merged

    def stats(self) -> List[Stats]:
        return [self.by_key[key].stats() for key in sorted(self.by_key)]


def reported(stats: Iterable[Stats]) -> List[Stats]:
    """What a report holds of ``stats`` (see ``_report.build``): the
    definitions called, one per module, qualname and first line, in that
    order (``__mp_main__`` counts as ``__main__``)."""
    called = [s for s in stats if s.calls]
    keys = [(s.module, s.qualname, s.firstlineno) for s in called]
    if len(set(keys)) == len(keys) and all(_as_merged(s) for s in called):
        # nothing to add up (the common case): each is what merging it alone makes
        return [called[i] for i in sorted(range(len(keys)), key=keys.__getitem__)]
    definitions = Definitions()
    for s in called:
        if s.calls:
            definitions.entry(s.name, s.module, s.qualname, s.filename, s.firstlineno).add(
                s.calls, s.errors, s.completed, s.total_ns, s.min_ns, s.max_ns,
                compress(enumerate(s.histogram), s.histogram), s.clock,
            )
    return definitions.stats()


def _as_merged(s: Stats) -> bool:
    """Whether ``s`` is what Definitions makes of it alone."""
    return (
        s.module != "__mp_main__" and s.clock in ("tsc", "monotonic") and type(s.histogram) is tuple
        and len(s.histogram) == HIST_BUCKETS and (s.completed > 0 or s.min_ns == s.max_ns == 0)
    )


def write_table(stats: Iterable[Stats], sort: str, file: TextIO) -> None:
    """The table ``_report.text_table`` makes of ``_report.build(stats)``,
    written to ``file`` without building the report: the report at exit on
    stderr, which then needs no more than this module."""
    if sort not in SORT_KEYS:
        raise ValueError(f"report() sort must be one of {', '.join(sorted(SORT_KEYS))}; got {sort!r}")
    render(reported(stats), file, sort, None, empty=NO_CALLS_TEXT)
