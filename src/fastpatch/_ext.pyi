"""Type stub of fastpatch._ext, the C extension (src/fastpatch/_ext.c and the
_ext_*.c files it lists).

Keep in step with the module's method tables (_ext.c's, and the test hooks'
in _ext_testing.c) and its exec slot.
"""

from types import CodeType, FunctionType
from typing import Any, Callable, Sequence, TypeVar, final

_T = TypeVar("_T")

#: Number of histogram buckets per probe; the last one is open-ended.
HIST_BUCKETS: int
#: Durations in ns are shifted right by this many bits before bucketing
#: (the layout is in _ext_histogram.h, fp_bucket_of, and mirrored in _stats.py).
HIST_SHIFT: int
#: The largest sampling rate a probe takes (one activation timed in MAX_SAMPLE).
MAX_SAMPLE: int

@final
class Probe:
    """Counters and latency histogram of one instrumented definition."""

    def __init__(self) -> None: ...
    def __invert__(self) -> Token:
        """The entry probe: starts an activation and returns its token."""
    @property
    def clock(self) -> str:
        """This probe's clock, fixed when it was created: "tsc" or "monotonic"."""
    @property
    def calls(self) -> int:
        """Activations started (cheaper than ``snapshot()[0]``)."""
    @property
    def sample(self) -> int:
        """The sampling rate of the next activation: 1 exact, N one in N, 0 count only."""
    @property
    def epoch(self) -> int:
        """How many times the counters were zeroed (``reset()``, a forked child's ``clear()``)."""
    def snapshot(self) -> tuple[int, int, int, int, int, int, bytes, float, int, int, int]:
        """(calls, completed, errors, total, min, max, histogram, ns_per_tick, timed, sample, epoch).

        ``total``, ``min`` and ``max`` are in this probe's clock ticks and
        ``ns_per_tick`` converts them (1.0 for CLOCK_MONOTONIC); ``min`` is
        0 while nothing timed has completed. ``histogram`` holds
        HIST_BUCKETS native-endian uint64 counts of durations in
        nanoseconds, on either clock, each timed activation weighted by its
        rate (Horvitz-Thompson), as ``total`` is; ``min`` and ``max`` are
        over the timed activations. ``timed`` counts the timed activations
        that ended, ``sample`` is the current rate, ``epoch`` counts resets.
        """
    def set_sample(self, n: int, /) -> None:
        """Time every activation (1), each with probability 1/n (n >= 2,
        at most MAX_SAMPLE) or none (0: no clock read), from the next
        activation on; each activation keeps the weight it started with."""
    def reset(self) -> None:
        """Zero every counter and start a new epoch; activations running now stay counted as started."""
    def clear(self) -> None:
        """Zero every counter and start a new epoch, in a forked child (after ``forked_child()``)."""
    def _testing_fill_histogram(self, count: int) -> None:
        """A test hook: set every histogram bucket to ``count``."""

@final
class Origin:
    """The constant spliced code carries after its probe: where it comes from.

    Immutable; not tracked by the garbage collector (it can be in no cycle).
    """

    def __init__(self, code: CodeType, probe: Probe, module: str, qualname: str) -> None:
        """Also sets ``probe``'s error rule from ``code``'s kind: an activation
        ending with StopIteration or StopAsyncIteration ended normally, unless
        CPython turns that exception into RuntimeError as it leaves this kind
        of frame (a generator, coroutine or async generator; PEP 479, 525)."""
    @property
    def code(self) -> CodeType:
        """The original code object."""
    @property
    def probe(self) -> Probe:
        """The probe the spliced code runs."""
    @property
    def module(self) -> str:
        """The name of the module it was defined in."""
    @property
    def qualname(self) -> str:
        """Its qualified name."""

@final
class Token:
    """Start time of one activation; lives on the frame's value stack.

    Created only by ``~probe``; cannot be instantiated from Python.
    """

    def __getitem__(self, retval: _T, /) -> _T:
        """The return probe: records a normal end and returns ``retval``."""

def lazy_add(origin: Origin, /) -> None:
    """List an Origin in the lazy table (held weakly: it leaves the table as it dies)."""

def lazy_origin(code: CodeType, probe: Probe, module: str, qualname: str, /) -> Origin:
    """A new Origin, listed in the lazy table: what the C splicer makes for each function."""

def lazy_get(code: CodeType, /) -> Origin | None:
    """The Origin listed under this original code, or None."""

def lazy_discard(origin: Origin, /) -> None:
    """Take an Origin out of the lazy table."""

def lazy_origins() -> list[Origin]:
    """Every Origin in the lazy table."""

def called_origins() -> list[Origin]:
    """The Origins in the lazy table whose probe has been called."""

def lazy_clear() -> None:
    """Empty the lazy table."""

def lazy_count() -> int:
    """The number of Origins in the lazy table."""

def splice_main_code(callback: Callable[[CodeType], CodeType], /) -> None:
    """At interpreter startup: the main code of ``python SCRIPT`` or ``python
    -c CODE``, once compiled and before it runs, gets the nested code objects
    of ``callback(code)`` (the same code with its functions spliced), in
    place, through an audit hook. A failure is one line on stderr."""

def set_code(func: FunctionType, code: CodeType, /) -> None:
    """Assign ``func.__code__ = code``, keeping calls to ``func`` specialisable."""

def set_default_clock(tsc: object, /) -> bool:
    """The clock of probes this interpreter creates from now on: the TSC if
    ``tsc`` is true and the TSC is invariant. Returns whether the TSC is used."""

def set_default_sample(n: int, /) -> int:
    """The sampling rate of probes this interpreter creates from now on; returns the previous one."""

def forked_child() -> None:
    """In a child just forked: activations started before the fork are no longer counted, the
    sampler is seeded again, and the called list starts empty."""

def called_probes() -> list[Probe]:
    """Every live probe activated in this process (since the fork, in a forked child), in no
    particular order: what a snapshot writer walks."""

def clock_name() -> str:
    """``"tsc"`` or ``"monotonic"``."""

# Test hooks (_ext_testing.c): for the tests alone, never called by fastpatch.

def _testing_bucket_index(ns: int, /) -> int:
    """Histogram bucket of a duration in nanoseconds."""

def _testing_probe_size() -> int:
    """Bytes of C state per Probe once called (its histogram included)."""

def _testing_idle_tokens() -> int:
    """Tokens waiting on the free list."""

def _testing_seed_sampler(seed: int, /) -> None:
    """Seed the sampler's generator (process-wide), so that the timed activations repeat."""

def _testing_sampler_gap(sample: int, word: int, /) -> tuple[int, int]:
    """The gap to the next timed activation that a nonzero 64-bit word draws at a rate, and log()'s gap for it."""

class SlotFloor:
    """A probe that only hands a token back and forth (benchmarks: the floor under every probe)."""

    @property
    def entries(self) -> int: ...
    @property
    def exits(self) -> int: ...
    def __invert__(self) -> object: ...

def _testing_slot_floor() -> SlotFloor:
    """A new slot floor, to put in a Probe's place among a spliced code object's constants."""

# Live telemetry (_ext_telemetry.c; the layout is _telemetry.h).
def read_slots(buffer: object, first: int, count: int, /) -> bytes:
    """``count`` slots of a mapped counters file from slot ``first``, each copied under its seqlock."""
def decode_records(
    data: bytes, slot_size: int, cuts: Sequence[int], full_names: bool, /
) -> tuple[list[tuple[Any, ...]], list[int], int]:
    """The records of a copy from read_slots, their names resolved and their histograms summed between cuts;
    the strings and absorbed slots' indexes; how many slots were unstable."""
def fold_records(
    data: bytes, slot_size: int, cuts: Sequence[int], /
) -> tuple[list[bytes], bytes | None, list[int], int]:
    """decode_records' records with cuts, compact: each one's key (module\\0qualname) and its fields and
    counts packed as uint64_t (None when a count needs more than 64 bits); the others; the unstable."""
def merge_records(sources: Sequence[tuple[list[bytes], bytes, bool]], n_cuts: int, /) -> dict[str, list[Any]] | None:
    """fold_records' records of each (keys, packed, alive) merged by name, as merge_folded merges them;
    None when a sum needs more than 64 bits."""
def telemetry_layout() -> dict[str, int]:
    """Sizes and offsets of _telemetry.h's structs, as compiled."""
def filesystem_type(fd: int, /) -> int:
    """statfs's f_type of the filesystem holding ``fd`` (Linux), else -1."""
def telemetry_arm(
    opener: Callable[[int], tuple[int, int] | None],
    namer: Callable[[list[Probe]], list[tuple[str, str, str, int]]],
    interval_ms: int, layout_crc: int, service: str, python: str, version: str, /,
) -> None:
    """Arm the writer: its thread starts at the first activation of a probe."""
def telemetry_stop(final: bool, /) -> None:
    """Join the writer's thread; if final, a last snapshot and the file marked exited; disarm."""
def telemetry_snapshot() -> bool:
    """Write a snapshot now; False when there is no file."""
def telemetry_pause() -> None: ...
def telemetry_resume() -> None: ...
def telemetry_forked_child() -> None: ...
def telemetry_status() -> dict[str, object]:
    """armed, running, file_open, slots, generation."""
def _testing_hammer_slots(buffer: object, count: int, rounds: int, /) -> None:
    """Rewrite the first ``count`` records of a mapped counters file ``rounds`` times, under their seqlocks."""
