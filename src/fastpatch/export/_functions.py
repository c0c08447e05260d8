"""What both exporters export: the counters of every definition merged by
function name (``module.qualname``, the ``code_function_name`` label and
the ``code.function.name`` attribute), and the histogram's counts summed
into the buckets a choice of bounds leaves.

Durations are whole nanoseconds and fastpatch's bucket *i* holds
``[low_i, high_i)``, so a bound of ``(high_i - 1)`` ns holds exactly the
durations of buckets 0 to *i*: every exported bound is an edge minus 1 ns.
"""

from __future__ import annotations

import math
from itertools import compress

from .. import _stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Sequence, Tuple, Union

    from .._stats import Stats
    from ._files import Folded

#: The named bucket choices of both exporters (``buckets=``).
BUCKET_CHOICES = ("quarter", "octave", "all")

#: Indexes of a merged row.
CALLS, ERRORS, TOTAL_NS, ACTIVE, COUNTS, MIN_NS, MAX_NS = range(7)


def all_edges() -> List[int]:
    """Every finite upper edge of fastpatch's histogram buckets, in ns (bucket i's at index i)."""
    return [_stats.bucket_bounds(i)[1] for i in range(_stats.HIST_BUCKETS - 1)]


def bucket_edges(buckets: Union[str, Sequence[float]] = "quarter") -> List[int]:
    """The bucket edges, in nanoseconds and increasing, that a choice of
    ``buckets`` exports (each bound is one of them minus 1 ns).

    ``"quarter"``: every 4th power of two from 256 ns to 2**40 ns (about
    18 minutes), 17 bounds; ``"octave"``: every power of two from 32 ns to
    2**41 ns, 37 bounds; ``"all"``: all 230 edges of fastpatch's histogram;
    or a sequence of seconds, each snapped to the nearest edge (within
    6.25%; bounds that snap to the same edge count once). ValueError names
    a bad choice.
    """
    edges = all_edges()
    if isinstance(buckets, str):
        if buckets == "quarter":
            return [1 << k for k in range(8, 41, 2)]
        if buckets == "octave":
            return [1 << k for k in range(5, 42)]
        if buckets == "all":
            return edges
        raise ValueError(f"buckets={buckets!r}: choose 'quarter', 'octave', 'all' or a list of seconds")
    try:
        values = list(buckets)
    except TypeError:
        raise ValueError(f"buckets={buckets!r}: choose 'quarter', 'octave', 'all' or a list of seconds") from None
    if not values:
        raise ValueError("buckets=[]: give at least one bound in seconds")
    top = edges[-1] / 1e9
    chosen = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"buckets: {value!r} is not a positive number of seconds")
        if value > top:
            raise ValueError(f"buckets: {value!r} s is beyond fastpatch's histogram, whose last edge is {top:g} s")
        ns = value * 1e9
        chosen.add(min(edges, key=lambda e: abs(math.log(e / ns))))
    return sorted(chosen)


def bounds_seconds(edges: Sequence[int]) -> Tuple[float, ...]:
    """The exported upper bounds, in seconds, of ``edges``: each an edge minus 1 ns."""
    return tuple((e - 1) / 1e9 for e in edges)


def spans(edges: Sequence[int]) -> List[Tuple[int, int]]:
    """[first, end) of the histogram buckets summed into each exported
    bucket: one per edge, then the open-ended last one."""
    index = {e: i for i, e in enumerate(all_edges())}
    cuts = [index[e] + 1 for e in edges] + [_stats.HIST_BUCKETS]
    return list(zip([0] + cuts[:-1], cuts))


def cuts(spans: List[Tuple[int, int]]) -> Tuple[int, ...]:
    """The end of each span: the ``cuts`` that fold a histogram into ``spans`` as the reader reads it."""
    return tuple(end for _, end in spans)


def merge_folded(sources: Iterable[Tuple[Iterable[Folded], bool]]) -> Dict[str, List[Any]]:
    """What ``merge_by_name`` returns, from records read with the spans' ``cuts``
    (``fastpatch.export._files.read_directory(path, cuts=...)``), each source
    (its folded records, whether its process is alive)."""
    # Group first, then sum each name's columns at once: a function has a
    # record in each of a few processes, and sum() over a column is far
    # cheaper than updating a row record by record.
    groups: Dict[str, List[Folded]] = {}
    active: Dict[str, int] = {}
    for records, alive in sources:
        for record in records:
            group = groups.get(record[0])
            if group is None:
                groups[record[0]] = [record]
            else:
                group.append(record)
        if alive:
            for record in records:
                active[record[0]] = active.get(record[0], 0) + max(record[4] - record[5], 0)
    merged: Dict[str, List[Any]] = {}
    for name, group in groups.items():
        if len(group) == 1:
            _, _, _, _, calls, _, errors, timed, total_ns, min_ns, max_ns, counts = group[0]
            merged[name] = [calls, errors, total_ns, active.get(name, 0), list(counts), min_ns if timed else 0,
                            max_ns if timed else 0]
            continue
        _, _, _, _, calls_, _, errors_, timed_, total_, mins, maxs, counts_ = zip(*group)
        timed_mins = [m for t, m in zip(timed_, mins) if t]
        merged[name] = [sum(calls_), sum(errors_), sum(total_), active.get(name, 0), list(map(sum, zip(*counts_))),
                        min(timed_mins) if timed_mins else 0, max([m for t, m in zip(timed_, maxs) if t], default=0)]
    return merged


def merge_by_name(sources: Iterable[Tuple[Iterable[Stats], bool]], spans: List[Tuple[int, int]]
                  ) -> Dict[str, List[Any]]:
    """Function name -> [calls, errors, total_ns, active, counts per span,
    min_ns, max_ns] summed over ``sources``, each (its Stats, whether its
    process is alive): ``active`` (calls started and not ended) counts the
    live ones only. min_ns and max_ns are over the timed calls (0 when none)."""
    merged: Dict[str, List[Any]] = {}
    span_of = [j for j, (a, b) in enumerate(spans) for _ in range(a, b)]
    indexes = range(_stats.HIST_BUCKETS)
    n_spans = len(spans)
    for stats, alive in sources:
        for s in stats:
            name = f"{s.module}.{s.qualname}" if s.module else s.name
            h = s.histogram
            counts = [0] * n_spans
            # A function's durations fill a few buckets: visit the nonzero ones only.
            for i in compress(indexes, h):
                counts[span_of[i]] += h[i]
            timed = s.timed > 0
            row = merged.get(name)
            if row is None:
                merged[name] = [s.calls, s.errors, s.total_ns, s.in_flight if alive else 0, counts,
                                s.min_ns if timed else None, s.max_ns if timed else 0]
                continue
            row[CALLS] += s.calls
            row[ERRORS] += s.errors
            row[TOTAL_NS] += s.total_ns
            if alive:
                row[ACTIVE] += s.in_flight
            row[COUNTS] = [x + y for x, y in zip(row[COUNTS], counts)]
            if timed:
                row[MIN_NS] = s.min_ns if row[MIN_NS] is None else min(row[MIN_NS], s.min_ns)
                row[MAX_NS] = max(row[MAX_NS], s.max_ns)
    for row in merged.values():
        if row[MIN_NS] is None:
            row[MIN_NS] = 0
    return merged
