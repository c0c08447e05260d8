"""Type stub of fastpatch._ext, the C extension (src/fastpatch/_ext.c).

Keep in step with the module's method table and its exec slot.
"""

from types import CodeType, FunctionType
from typing import TypeVar, final

_T = TypeVar("_T")

#: Number of histogram buckets per probe; the last one is open-ended.
HIST_BUCKETS: int
#: Durations are shifted right by this many bits before bucketing.
HIST_SHIFT: int
#: Each power of two is split into 2**HIST_SUB_BITS sub-buckets.
HIST_SUB_BITS: int

@final
class Probe:
    """Counters and latency histogram of one instrumented definition."""

    def __init__(self) -> None: ...
    def __invert__(self) -> Token:
        """The entry probe: starts an activation and returns its token."""
    @property
    def clock(self) -> str:
        """This probe's clock, fixed when it was created: "tsc" or "monotonic"."""
    def snapshot(self) -> tuple[int, int, int, int, int, int, bytes, float]:
        """(calls, completed, errors, total, min, max, histogram, ns_per_tick).

        ``histogram`` holds HIST_BUCKETS native-endian uint32 counts;
        ``min`` is 0 while nothing has completed. Durations are in this
        probe's clock ticks; ``ns_per_tick`` converts them (1.0 for the
        monotonic clock).
        """
    def reset(self) -> None:
        """Zero every counter."""
    def _fill_histogram(self, count: int) -> None:
        """For tests: set every histogram bucket to ``count``."""

@final
class Token:
    """Start time of one activation; lives on the frame's value stack.

    Created only by ``~probe``; cannot be instantiated from Python.
    """

    def __getitem__(self, retval: _T, /) -> _T:
        """The return probe: records a normal end and returns ``retval``."""

def set_code(func: FunctionType, code: CodeType, /) -> None:
    """Assign ``func.__code__ = code``, keeping calls to ``func`` specialisable."""

def now_ns() -> int:
    """The probes' clock (CLOCK_MONOTONIC or QueryPerformanceCounter), in nanoseconds."""

def set_default_clock(tsc: object, /) -> bool:
    """The clock of probes created from now on: the TSC if ``tsc`` is true and
    the TSC is invariant. Returns whether the TSC is used."""

def ns_per_tick() -> float:
    """Nanoseconds per TSC tick, measured since load; 1.0 without an invariant TSC."""

def clock_name() -> str:
    """``"tsc"`` or ``"monotonic"``."""

def bucket_index(ns: int, /) -> int:
    """Histogram bucket of a duration in nanoseconds."""

def probe_size() -> int:
    """Bytes of C state per Probe."""

def idle_tokens() -> int:
    """Tokens waiting on the free list."""
