"""One definition is one module, qualname and first line, as DESIGN.md
says: adding up the Stats of every source that has it, exactly.

``__mp_main__``, multiprocessing's name for the parent's main script in a
spawned child, counts as ``__main__``. Calls, errors, completed, timed and
total_ns are summed, min_ns is the least min_ns of the entries that
timed anything, max_ns the greatest, and histograms are added bucket by
bucket, so every percentile is the one a single process making all the
calls would report. Sampled totals and histograms are Horvitz-Thompson
estimates, and sums of such estimates at any rates are estimates of the
sum, so they add up the same way. The merged ``sample`` is the rate all the
entries share, or ``_stats.MIXED_SAMPLE`` (-1) when they differ.

The report at exit on stderr needs this and the table alone: it imports
nothing but the stats module.
"""

from __future__ import annotations

from itertools import compress

from .. import _stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Set, Tuple

    from .._stats import Stats


class _Merged:
    """One definition's counters, added up from any number of sources."""

    __slots__ = ("name", "module", "qualname", "filename", "firstlineno", "calls", "errors", "completed",
                 "total_ns", "min_ns", "max_ns", "histogram", "clocks", "timed", "samples")

    def __init__(self, name: str, module: str, qualname: str, filename: str, firstlineno: int) -> None:
        self.name = name
        self.module = module
        self.qualname = qualname
        self.filename = filename
        self.firstlineno = firstlineno
        self.calls = self.errors = self.completed = self.total_ns = self.min_ns = self.max_ns = 0
        self.histogram = [0] * _stats.HIST_BUCKETS
        self.clocks: Set[str] = set()
        self.timed = 0
        self.samples: Set[int] = set()

    def add(self, calls: int, errors: int, completed: int, total_ns: int, min_ns: int, max_ns: int,
            counts: Iterable[Tuple[int, int]], clock: str, timed: int, sample: int) -> None:
        if timed:
            self.min_ns = min_ns if not self.timed else min(self.min_ns, min_ns)
            self.max_ns = max(self.max_ns, max_ns)
        self.timed += timed
        self.samples.add(sample)
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
        sample = next(iter(self.samples)) if len(self.samples) == 1 else _stats.MIXED_SAMPLE if self.samples else 1
        return _stats.Stats(
            name=self.name, calls=self.calls, errors=self.errors, total_ns=self.total_ns, min_ns=self.min_ns,
            max_ns=self.max_ns, completed=self.completed, histogram=tuple(self.histogram), clock=clock,
            module=self.module, qualname=self.qualname, filename=self.filename, firstlineno=self.firstlineno,
            sample=sample, timed=self.timed,
        )


class Definitions:
    """Definitions keyed as DESIGN.md says: module, qualname and first line.
    Name and filename come from the first source that has the definition."""

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

    def add(self, s: Stats) -> None:
        """Add ``s`` to the counters of its definition."""
        self.entry(s.name, s.module, s.qualname, s.filename, s.firstlineno).add(
            s.calls, s.errors, s.completed, s.total_ns, s.min_ns, s.max_ns,
            compress(enumerate(s.histogram), s.histogram), s.clock, s.timed, s.sample,
        )

    def stats(self) -> List[Stats]:
        """One Stats per definition, sorted by module, qualname and first line."""
        return [self.by_key[key].stats() for key in sorted(self.by_key)]


def reported(stats: Iterable[Stats]) -> List[Stats]:
    """What a report holds of ``stats``.

    Definitions never called (``calls == 0``) are left out, as cProfile
    leaves out functions that never ran: a whole-program run instruments
    thousands of definitions and most processes call few of them, and a
    merge counts a missing function as zero calls anyway, so nothing is
    lost. Activations still running (``calls > completed``) are kept.
    Definitions that share module, qualname and first line (two lambdas on
    one line, a module loaded twice) are one entry, added up as a merge
    would (:class:`Definitions`); so are ``__mp_main__`` and ``__main__``.
    Sorted by module, qualname and first line.
    """
    called = [s for s in stats if s.calls]
    keys = [(s.module, s.qualname, s.firstlineno) for s in called]
    if len(set(keys)) == len(keys) and all(_as_merged(s) for s in called):
        # nothing to add up (the common case): each is what merging it alone makes
        return [called[i] for i in sorted(range(len(keys)), key=keys.__getitem__)]
    definitions = Definitions()
    for s in called:
        definitions.add(s)
    return definitions.stats()


def _as_merged(s: Stats) -> bool:
    """Whether ``s`` is what Definitions makes of it alone."""
    return (
        s.module != "__mp_main__" and s.clock in ("tsc", "monotonic") and type(s.histogram) is tuple
        and len(s.histogram) == _stats.HIST_BUCKETS and (s.timed > 0 or s.min_ns == s.max_ns == 0)
    )
