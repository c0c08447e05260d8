"""Reading the probes: immutable Stats snapshots, the histogram's buckets and percentiles."""

from __future__ import annotations

import math
from itertools import compress

from . import _ext

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing or dataclasses at run time: `import fastpatch` must stay cheap
    from typing import Any, Dict, List, Optional, Tuple

HIST_BUCKETS: int = _ext.HIST_BUCKETS
HIST_SHIFT: int = _ext.HIST_SHIFT

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


#: ``Stats.sample`` of a merged Stats whose sources were sampled at different rates.
MIXED_SAMPLE = -1
#: The largest sampling rate (one activation timed in MAX_SAMPLE).
MAX_SAMPLE: int = _ext.MAX_SAMPLE


class Stats:
    """An immutable snapshot of one instrumented definition's counters.

    Durations are nanoseconds on a monotonic clock, whichever clock the
    probe reads. ``calls`` counts the activations started; ``completed``,
    ``errors`` and ``calls`` are exact under any sampling rate.

    ``sample`` is the sampling rate: 1 times every activation (exact
    timing), N >= 2 times each one with probability 1/N, 0 times none
    (count-only), ``MIXED_SAMPLE`` (-1) for a merge of sources at different
    rates. ``timed`` counts the timed activations that ended. When
    ``sampled`` is true, the durations are estimates from the timed
    activations (Horvitz-Thompson: each stands for N activations):
    ``total_ns`` estimates the total of every completed activation,
    ``histogram`` holds estimated counts (its sum estimates ``completed``),
    ``mean_ns`` is ``total_ns / sum(histogram)``, and percentiles come from
    the histogram;
    ``min_ns`` and ``max_ns`` are the least and greatest timed durations.
    Count-only stats have no durations (all 0). Under exact timing every
    field is exact and ``histogram`` sums to ``completed``.

    ``clock`` is the clock the definition's probe reads ("tsc" or
    "monotonic"); ``module``, ``qualname``, ``filename`` and
    ``firstlineno`` say where the definition comes from.
    """

    __slots__ = (
        "name", "calls", "errors", "total_ns", "min_ns", "max_ns", "completed", "histogram", "clock", "module",
        "qualname", "filename", "firstlineno", "sample", "timed",
    )
    #: Compared by ==; the rest describes them.
    _COMPARED = ("name", "calls", "errors", "total_ns", "min_ns", "max_ns", "completed", "sample", "timed")

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
    sample: int
    timed: int

    def __init__(
        self, name: str, calls: int, errors: int, total_ns: int, min_ns: int, max_ns: int, completed: int,
        histogram: Tuple[int, ...], clock: str = "monotonic", module: str = "", qualname: str = "",
        filename: str = "", firstlineno: int = 0, sample: int = 1, timed: Optional[int] = None,
    ) -> None:
        """``timed`` defaults to ``completed`` under exact timing (``sample``
        1), to 0 otherwise."""
        if timed is None:
            timed = completed if sample == 1 else 0
        values = (name, calls, errors, total_ns, min_ns, max_ns, completed, histogram, clock, module, qualname,
                  filename, firstlineno, sample, timed)
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
        """The mean duration: ``total_ns / completed`` under exact timing;
        when ``sampled``, ``total_ns / sum(histogram)``, the estimated total
        over the estimated number of activations it covers, which is the
        mean of the timed durations at one rate (a ratio estimator: its
        error does not grow with the spread of how many calls were timed,
        and calls made while count-only do not pull it down). 0.0 when
        nothing timed has ended."""
        if not self.timed:
            return 0.0
        if not self.sampled:
            return self.total_ns / self.completed
        weight = sum(self.histogram)
        return self.total_ns / weight if weight else 0.0

    @property
    def sampled(self) -> bool:
        """Whether the durations are estimates: the rate is not 1, or some
        activations that ended were not timed (the rate changed)."""
        return self.sample != 1 or self.timed != self.completed

    @property
    def in_flight(self) -> int:
        """Activations started and not ended (running or suspended)."""
        return max(self.calls - self.completed, 0)

    def percentile(self, q: float) -> int:
        """Latency at percentile ``q`` (0 to 100), within RELATIVE_ERROR, clamped to [min_ns, max_ns];
        from the timed activations' weighted histogram when ``sampled`` (an estimate), 0 when none was timed."""
        if isinstance(q, bool) or not isinstance(q, (int, float)):
            raise TypeError(f"percentile() needs a number from 0 to 100, not {type(q).__name__}")
        if not 0 <= q <= 100 or math.isnan(q):
            raise ValueError(f"percentile() needs q from 0 to 100, got {q!r}")
        return self._percentiles((q,))[0]

    def _percentiles(self, qs: Tuple[float, ...]) -> List[int]:
        """``percentile(q)`` for each of ``qs`` (checked numbers), summing the histogram once."""
        if not self.completed or not self.timed:
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
            "sample": self.sample,
            "timed": self.timed,
        }


def snapshot(name: str, probe: Any, *, module: str = "", qualname: str = "", filename: str = "",
             firstlineno: int = 0) -> Stats:
    calls, completed, errors, total, lo, hi, hist, ns_per_tick, timed, sample, _epoch = probe.snapshot()
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
        histogram=tuple(memoryview(hist).cast("Q")),
        clock=probe.clock,
        module=module,
        qualname=qualname,
        filename=filename,
        firstlineno=firstlineno,
        sample=sample,
        timed=timed,
    )
