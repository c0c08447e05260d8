"""Shared machinery of the fastpatch benchmarks: workloads, variants and drivers.

Every benchmark compiles its own copy of the workload and of the driver loop
from source text. Variants therefore never share a code object: fastpatch
patches ``__code__`` per definition, ``sys.monitoring`` sets local events per
code object, and on 3.11+ the specialising interpreter keeps inline caches per
code object, so sharing one definition between variants would let one variant
leak into another's numbers.

A driver runs ``LOOPS`` iterations of ``UNROLL`` copies of the call, so one
benchmark round is ``CALLS_PER_ROUND`` calls. Rounds are counted by the driver
itself, which is how the fastpatch variant checks that its counters saw every
call the benchmark made (calibration and warmup rounds included).
"""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
import time
from types import CodeType, FunctionType
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import fastpatch

QUICK = os.environ.get("FASTPATCH_BENCH_QUICK", "").strip().lower() not in ("", "0", "false", "no")

UNROLL = 10
LOOPS = 20 if QUICK else 100
CALLS_PER_ROUND = UNROLL * LOOPS

HAS_MONITORING = sys.version_info >= (3, 12)

try:
    import wrapt
except ImportError:  # pragma: no cover - wrapt is in the [bench] extra
    wrapt = None

_serial = itertools.count()


def compile_namespace(source: str, label: str, **names: Any) -> Dict[str, Any]:
    """Run ``source`` in a fresh namespace; every call makes new code objects."""
    ns: Dict[str, Any] = {"__name__": f"fastpatch_bench.{label}", "__builtins__": __builtins__}
    ns.update(names)
    filename = f"<fastpatch-bench {label} #{next(_serial)}>"
    exec(compile(textwrap.dedent(source), filename, "exec"), ns)
    return ns


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------


class Workload:
    """One benchmark group: the function under test and the call the driver repeats.

    ``source`` defines the target; ``call`` is the statement(s) the driver
    repeats, using ``f`` (the callable to call, possibly a wrapper) and ``o``
    (an instance, for methods). ``profile_calls`` is how many calls cProfile
    records per activation (each resume of a generator or coroutine is one).
    """

    def __init__(self, name: str, group: str, source: str, call: str, *,
                 method: bool = False, raises: bool = False, kind: str = "function",
                 profile_calls: int = 1) -> None:
        self.name = name
        self.group = group
        self.source = textwrap.dedent(source)
        self.call = textwrap.dedent(call).strip("\n")
        self.method = method
        self.raises = raises
        self.kind = kind  # "function", "generator" or "coroutine"
        self.profile_calls = profile_calls

    def define(self, label: str) -> Dict[str, Any]:
        return compile_namespace(self.source, f"{self.name}.{label}")

    def target(self, ns: Dict[str, Any]) -> FunctionType:
        return ns["C"].__dict__["m"] if self.method else ns["f"]

    def install(self, ns: Dict[str, Any], replacement: Any) -> None:
        if self.method:
            ns["C"].m = replacement
        else:
            ns["f"] = replacement

    def driver(self, ns: Dict[str, Any], label: str,
               call_template: str = "{call}") -> Tuple[Callable[[], None], List[int]]:
        """A fresh ``run()`` doing CALLS_PER_ROUND calls, and its round counter."""
        call = call_template.format(call=self.call)
        body = textwrap.indent("\n".join([call] * UNROLL), " " * 8)
        source = (
            "def run(f=f, o=o, n=n, repeat=repeat, box=box, clock=clock):\n"
            "    box[0] += 1\n"
            "    for _ in repeat(None, n):\n"
            f"{body}\n"
        )
        box = [0]
        instance = ns["C"]() if self.method else None
        dns = compile_namespace(source, f"driver.{self.name}.{label}", f=ns.get("f"), o=instance,
                                n=LOOPS, repeat=itertools.repeat, box=box, clock=time.perf_counter_ns)
        return dns["run"], box


WORKLOADS: Dict[str, Workload] = {w.name: w for w in [
    Workload(
        "trivial", "trivial",
        """
        def f(x):
            return x + 1
        """,
        "f(1)",
    ),
    Workload(
        "arguments", "arguments",
        """
        def f(a, b, c=3, *, d=4, e=5):
            return a + b + c + d + e
        """,
        "f(1, 2, d=10)",
    ),
    Workload(
        "method", "method",
        """
        class C:
            def m(self, x):
                return x + 1
        """,
        "o.m(1)",
        method=True,
    ),
    Workload(
        "generator", "generator",
        """
        def f(n):
            for i in range(n):
                yield i
        """,
        """
        for _ in f(10):
            pass
        """,
        kind="generator",
        profile_calls=11,  # first start plus 10 resumes
    ),
    Workload(
        "coroutine", "coroutine",
        """
        class _Suspend:
            __slots__ = ()

            def __await__(self):
                yield

        _suspend = _Suspend()

        async def f(x):
            await _suspend
            return x + 1
        """,
        # No event loop: the first send runs to the suspension, the second to the end.
        """
        c = f(1)
        c.send(None)
        try:
            c.send(None)
        except StopIteration:
            pass
        """,
        kind="coroutine",
        profile_calls=2,
    ),
    Workload(
        "raise", "raise-caught",
        """
        def f(x):
            raise ValueError(x)
        """,
        """
        try:
            f(1)
        except ValueError:
            pass
        """,
        raises=True,
    ),
]}


# ---------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------

# Decorators, compiled afresh for every benchmark so each one accumulates into
# its own module-level global and owns its wrapper's code object.

NAIVE_DECORATOR = """
import time

_total = 0.0

def timed(func):
    def wrapper(*args, **kwargs):
        global _total
        start = time.time()
        result = func(*args, **kwargs)
        _total += time.time() - start
        return result
    return wrapper
"""

# The functools decorator, and the same decorator written so that it times
# what fastpatch times for generators and coroutines: from the first resume
# to the end of the frame, suspensions included.
_FUNCTOOLS_TEMPLATE = """
import functools
from time import perf_counter_ns

_total = 0

def timed(func):
    @functools.wraps(func)
    {def_} wrapper(*args, **kwargs):
        global _total
        start = perf_counter_ns()
        try:
            return {call}
        finally:
            _total += perf_counter_ns() - start
    return wrapper
"""

FUNCTOOLS_DECORATOR = _FUNCTOOLS_TEMPLATE.format(def_="def", call="func(*args, **kwargs)")

WRAPT_DECORATOR = """
import wrapt
from time import perf_counter_ns

_total = 0

@wrapt.decorator
def timed(wrapped, instance, args, kwargs):
    global _total
    start = perf_counter_ns()
    try:
        return wrapped(*args, **kwargs)
    finally:
        _total += perf_counter_ns() - start
"""

ACTIVATION_DECORATORS = {
    "generator": _FUNCTOOLS_TEMPLATE.format(def_="def", call="(yield from func(*args, **kwargs))"),
    "coroutine": _FUNCTOOLS_TEMPLATE.format(def_="async def", call="await func(*args, **kwargs)"),
}

# The cheapest Python callbacks for sys.monitoring: one clock read each and a
# global. Not reentrant, which none of the workloads needs.
MONITORING_CALLBACKS = """
from time import perf_counter_ns

_t0 = 0
_total = 0
_code = None

def on_start(code, offset):
    global _t0
    _t0 = perf_counter_ns()

def on_return(code, offset, retval):
    global _total
    _total += perf_counter_ns() - _t0

def on_unwind(code, offset, exc):
    # PY_UNWIND cannot be a local event: it fires for every frame, so filter.
    global _total
    if code is _code:
        _total += perf_counter_ns() - _t0
"""


class Variant:
    """How one variant is applied to a workload, and how it proves it ran."""

    name = "?"
    #: How the driver's repeated statement is built from the workload's call.
    call_template = "{call}"

    def __init__(self, workload: Workload, label: str) -> None:
        self.workload = workload
        self.label = label

    def install(self, func: FunctionType) -> Any:
        """What the driver should call instead of ``func``."""
        return func

    def before(self) -> None:
        """Right before ``benchmark(run)``."""

    def after(self) -> None:
        """Right after ``benchmark(run)``, even if it failed."""

    def verify(self, calls: int) -> Dict[str, Any]:
        """Check the variant saw the run; return what goes into extra_info."""
        return {}

    def close(self) -> None:
        """Undo everything ``install`` did."""


class Bare(Variant):
    name = "bare"


class Floor(Variant):
    """Not a timer: the bare call between two time.perf_counter_ns() calls.

    That is two C calls and two clock reads (plus two int objects) per call,
    a slight overestimate of the floor any C-level timer has to pay.
    """

    name = "floor-2x-perf_counter_ns"
    call_template = "clock()\n{call}\nclock()"


class _Decorated(Variant):
    source = ""
    #: perf_counter_ns sums of hundreds of calls are never 0; time.time sums may be.
    total_must_grow = True

    def install(self, func: FunctionType) -> Any:
        self.ns = compile_namespace(self.source, f"decorator.{self.name}.{self.label}")
        self.func = func
        wrapper = self.ns["timed"](func)
        cells = [c.cell_contents for c in getattr(wrapper, "__closure__", None) or ()]
        if wrapper is func or not (getattr(wrapper, "__wrapped__", None) is func or func in cells):
            raise AssertionError(f"{self.name}: the decorator did not wrap {func!r}")
        return wrapper

    def verify(self, calls: int) -> Dict[str, Any]:
        total = self.ns["_total"]
        if self.total_must_grow:
            assert total > 0, f"{self.name}: the wrapper never ran"
        return {"decorator_total": total}


class Naive(_Decorated):
    name = "naive-time.time"
    source = NAIVE_DECORATOR
    total_must_grow = False


class Functools(_Decorated):
    name = "functools-perf_counter_ns"
    source = FUNCTOOLS_DECORATOR


class FunctoolsActivation(_Decorated):
    """functools.wraps decorator that times the whole activation (generators, coroutines)."""

    name = "functools-activation"

    @property
    def source(self) -> str:  # type: ignore[override]
        return ACTIVATION_DECORATORS[self.workload.kind]


class Wrapt(_Decorated):
    name = "wrapt"
    source = WRAPT_DECORATOR


class Monitoring(Variant):
    """sys.monitoring with local PY_START/PY_RETURN events on the target's code only."""

    name = "sys.monitoring"

    def callbacks(self) -> Tuple[Any, Any, Any]:
        """The PY_START, PY_RETURN and PY_UNWIND callbacks."""
        self.ns = compile_namespace(MONITORING_CALLBACKS, f"monitoring.{self.label}")
        self.ns["_code"] = self.code
        return self.ns["on_start"], self.ns["on_return"], self.ns["on_unwind"]

    def install(self, func: FunctionType) -> Any:
        mon = sys.monitoring  # type: ignore[attr-defined]
        ev = mon.events
        self.tool = next((t for t in (3, 4, 0, 1) if mon.get_tool(t) is None), None)
        if self.tool is None:
            raise RuntimeError("no free sys.monitoring tool id (tried 3, 4, 0, 1)")
        mon.use_tool_id(self.tool, "fastpatch-bench")
        self.code = func.__code__
        on_start, on_return, on_unwind = self.callbacks()
        mon.register_callback(self.tool, ev.PY_START, on_start)
        mon.register_callback(self.tool, ev.PY_RETURN, on_return)
        self.local_events = ev.PY_START | ev.PY_RETURN
        mon.set_local_events(self.tool, self.code, self.local_events)
        self.global_events = 0
        if self.workload.raises:
            mon.register_callback(self.tool, ev.PY_UNWIND, on_unwind)
            self.global_events = ev.PY_UNWIND
            mon.set_events(self.tool, self.global_events)
        return func

    def verify(self, calls: int) -> Dict[str, Any]:
        mon = sys.monitoring  # type: ignore[attr-defined]
        assert mon.get_local_events(self.tool, self.code) == self.local_events, \
            "sys.monitoring local events were not set on the benchmarked code"
        assert self.ns["_t0"] != 0, "sys.monitoring PY_START never fired"
        assert self.ns["_total"] > 0, "sys.monitoring PY_RETURN/PY_UNWIND never fired"
        return {"monitoring_total_ns": self.ns["_total"], "monitoring_tool_id": self.tool}

    def close(self) -> None:
        mon = sys.monitoring  # type: ignore[attr-defined]
        tool = getattr(self, "tool", None)
        if tool is None or mon.get_tool(tool) != "fastpatch-bench":
            return
        mon.set_events(tool, 0)
        mon.set_local_events(tool, self.code, 0)
        for event in (mon.events.PY_START, mon.events.PY_RETURN, mon.events.PY_UNWIND):
            mon.register_callback(tool, event, None)
        mon.free_tool_id(tool)


class MonitoringC(Monitoring):
    """sys.monitoring with C callbacks that do nothing useful: ``slice``
    accepts PY_START's (code, offset) and PY_RETURN's/PY_UNWIND's three
    arguments and only builds a small object. No timer on sys.monitoring can
    be cheaper than this, so it is a lower bound for that approach."""

    name = "sys.monitoring-C-callback"

    def callbacks(self) -> Tuple[Any, Any, Any]:
        return slice, slice, slice

    def verify(self, calls: int) -> Dict[str, Any]:
        mon = sys.monitoring  # type: ignore[attr-defined]
        ev = mon.events
        assert mon.get_local_events(self.tool, self.code) == self.local_events, \
            "sys.monitoring local events were not set on the benchmarked code"
        for event in (ev.PY_START, ev.PY_RETURN):
            # register_callback returns the callback it replaces: ours must still be there.
            assert mon.register_callback(self.tool, event, slice) is slice, "the C callback was replaced"
        return {"monitoring_tool_id": self.tool, "monitoring_callback": "slice"}


class Profiled(Variant):
    """cProfile enabled before the benchmark and disabled after it.

    pytest-benchmark wraps its rounds in ``PauseInstrumentation``, which calls
    ``sys.setprofile(None)`` when ``sys.getprofile()`` is set. Up to 3.11 that
    is the case with cProfile enabled: it would switch the profiler off (and
    then fail to restore it). The test neutralises it for this variant only,
    and ``verify`` checks that cProfile recorded every call.
    """

    name = "cProfile"

    def install(self, func: FunctionType) -> Any:
        import cProfile

        self.code = func.__code__
        self.profile = cProfile.Profile()
        return func

    def before(self) -> None:
        self.profile.enable()

    def after(self) -> None:
        self.profile.disable()

    def verify(self, calls: int) -> Dict[str, Any]:
        import pstats

        key = (self.code.co_filename, self.code.co_firstlineno, self.code.co_name)
        entry = pstats.Stats(self.profile).stats.get(key)
        assert entry is not None, "cProfile did not record the benchmarked function"
        recorded = entry[1]
        expected = calls * self.workload.profile_calls
        assert recorded == expected, f"cProfile recorded {recorded} calls, the benchmark made {expected}"
        return {"cprofile_calls": recorded}


class Fastpatch(Variant):
    name = "fastpatch"
    #: instrument()'s sample=: None for the default (exact timing)
    sample: Optional[int] = None

    def install(self, func: FunctionType) -> Any:
        self.func = func
        self.original = func.__code__
        fastpatch.instrument(func, sample=self.sample)
        assert fastpatch.is_instrumented(func), "instrument() did not instrument the function"
        assert func.__code__ is not self.original, "instrument() left __code__ unchanged"
        return func

    def before(self) -> None:
        fastpatch.reset(self.func)
        s = fastpatch.stats(self.func)
        assert s.calls == s.completed == s.errors == 0, f"reset() left counters behind: {s}"

    def verify(self, calls: int) -> Dict[str, Any]:
        func = self.func
        assert fastpatch.is_instrumented(func), "the benchmarked function is no longer instrumented"
        s = fastpatch.stats(func)
        errors = calls if self.workload.raises else 0
        assert s.calls == calls, f"fastpatch counted {s.calls} calls, the benchmark made {calls}"
        assert s.completed == calls, f"fastpatch completed {s.completed} activations of {calls}"
        assert s.errors == errors, f"fastpatch counted {s.errors} errors, expected {errors}"
        if self.sample == 0:
            assert (s.timed, s.total_ns, sum(s.histogram)) == (0, 0, 0), f"count-only timed something: {s}"
        elif self.sample is not None and self.sample > 1:
            # one in N timed: far below every call, and each timed one weighted N
            assert 0 < s.timed < calls and sum(s.histogram) == self.sample * s.timed, f"sampling looks wrong: {s}"
            assert s.total_ns > 0 and s.min_ns <= s.max_ns, f"fastpatch durations look wrong: {s}"
        else:
            assert s.timed == calls and sum(s.histogram) == calls, f"exact timing missed calls: {s}"
            assert s.total_ns > 0 and s.min_ns <= s.max_ns, f"fastpatch durations look wrong: {s}"
        info = {f"fastpatch_{k}": v for k, v in s.to_dict().items() if k != "name"}
        info["fastpatch_clock"] = s.clock
        return info

    def close(self) -> None:
        func = getattr(self, "func", None)
        if func is not None:
            fastpatch.uninstrument(func)
            assert func.__code__ is self.original, "uninstrument() did not restore the original code"


class FastpatchCountOnly(Fastpatch):
    """Count-only: every call counted, none timed, no clock read."""

    name = "fastpatch-count-only"
    sample = 0


class _FastpatchOnClock(Fastpatch):
    """fastpatch with one clock forced for this definition, whatever the
    process default (FASTPATCH_CLOCK) is; each definition keeps the clock it
    was instrumented with, so the variants run side by side."""

    tsc = False

    def install(self, func: FunctionType) -> Any:
        from fastpatch import _ext

        default_is_tsc = fastpatch.clock() == "tsc"
        if not _ext.set_default_clock(self.tsc) and self.tsc:
            _ext.set_default_clock(default_is_tsc)
            pytest.skip("this CPU has no invariant TSC")
        try:
            return super().install(func)
        finally:
            _ext.set_default_clock(default_is_tsc)

    def verify(self, calls: int) -> Dict[str, Any]:
        info = super().verify(calls)
        expected = "tsc" if self.tsc else "monotonic"
        assert info["fastpatch_clock"] == expected, f"the probe reads {info['fastpatch_clock']}, not {expected}"
        return info


class FastpatchMonotonic(_FastpatchOnClock):
    name = "fastpatch-monotonic"
    tsc = False


class FastpatchTsc(_FastpatchOnClock):
    name = "fastpatch-tsc"
    tsc = True


class FastpatchSample16(_FastpatchOnClock):
    """Sampled timing: every call counted, one in 16 timed, on the TSC, so
    that it compares with ``fastpatch-tsc`` whatever the default clock is
    (the timed calls of a probe on CLOCK_MONOTONIC take the general path)."""

    name = "fastpatch-sample16"
    sample = 16
    tsc = True


class SlotFloor(Fastpatch):
    """Not a timer: the function spliced for count-only, with fastpatch's
    probe swapped for ``_ext._testing_slot_floor()``, whose C slots only
    hand a token back and forth and count both ends. It runs the injected
    instructions exactly as fastpatch does (the entry's ``UNARY_INVERT``,
    the exit's subscript, 3.9's deallocator), so it is the floor under every
    probe on them: what count-only and ``sample=N`` pay above it is their
    own work (counts, countdown, fork and error checks)."""

    name = "floor-empty-slots"
    sample = 0

    def install(self, func: FunctionType) -> Any:
        from fastpatch import _ext

        super().install(func)
        self.spliced = func.__code__
        probes = [c for c in self.spliced.co_consts if isinstance(c, _ext.Probe)]
        assert len(probes) == 1, f"expected one probe among the spliced constants, found {len(probes)}"
        self.probe, self.floor = probes[0], _ext._testing_slot_floor()
        consts = tuple(self.floor if c is self.probe else c for c in self.spliced.co_consts)
        # as instrument() assigns it: a plain __code__ assignment would keep 3.11+ from specialising
        # the calls to func, which would cost more than the probes
        _ext.set_code(func, self.spliced.replace(co_consts=consts))
        return func

    def before(self) -> None:
        self.baseline = (self.floor.entries, self.floor.exits)

    def verify(self, calls: int) -> Dict[str, Any]:
        entries, exits = self.floor.entries - self.baseline[0], self.floor.exits - self.baseline[1]
        assert entries == exits == calls, f"the slot floor saw {entries} entries and {exits} ends of {calls} calls"
        assert self.probe.calls == 0, "fastpatch's own probe ran in the floor's place"
        return {"floor_entries": entries}

    def close(self) -> None:
        if getattr(self, "spliced", None) is not None:
            from fastpatch import _ext

            _ext.set_code(self.func, self.spliced)  # fastpatch's own splice back, for uninstrument()
        super().close()


class FastpatchTelemetry(Fastpatch):
    """fastpatch with live telemetry on (fastpatch.export.start, the default
    1 s interval, in a directory of its own): its writer's thread runs
    beside the calls and snapshots this probe every interval. The per-call
    number must equal ``fastpatch``'s within noise."""

    name = "fastpatch-telemetry"

    def install(self, func: FunctionType) -> Any:
        import tempfile

        import fastpatch.export

        self.directory = tempfile.mkdtemp(prefix="fastpatch-bench-")
        fastpatch.export.start(os.path.join(self.directory, "bench"))
        return super().install(func)

    def verify(self, calls: int) -> Dict[str, Any]:
        from fastpatch import _ext

        info = super().verify(calls)
        status = _ext.telemetry_status()
        if status["running"] and not status["file_open"]:
            # The thread started at the first call and has not reached its first snapshot yet (a short
            # quick-mode run on a busy machine): take that snapshot here, as the thread would.
            _ext.telemetry_snapshot()
            status = _ext.telemetry_status()
        assert status["running"] and status["file_open"], f"the telemetry writer is not running: {status}"
        info["telemetry_snapshots"] = status["generation"]
        return info

    def close(self) -> None:
        import shutil

        import fastpatch.export

        fastpatch.export.stop()
        super().close()
        shutil.rmtree(getattr(self, "directory", ""), ignore_errors=True)


VARIANT_CLASSES = {cls.name: cls for cls in (
    Bare, Floor, SlotFloor, Naive, Functools, FunctoolsActivation, Wrapt, Monitoring, MonitoringC, Profiled,
    Fastpatch, FastpatchMonotonic, FastpatchTsc, FastpatchSample16, FastpatchCountOnly, FastpatchTelemetry,
)}

#: Order of the variants in reports.
VARIANT_ORDER = [
    "bare", "floor-2x-perf_counter_ns", "floor-empty-slots", "naive-time.time", "functools-perf_counter_ns",
    "functools-activation", "wrapt", "sys.monitoring", "sys.monitoring-C-callback", "cProfile", "fastpatch",
    "fastpatch-monotonic", "fastpatch-tsc", "fastpatch-sample16", "fastpatch-count-only", "fastpatch-telemetry",
]


def variants_for(workload: Workload) -> List[str]:
    names = list(VARIANT_ORDER)
    if workload.kind == "function":
        names.remove("functools-activation")
    if workload.name != "trivial":
        names.remove("floor-2x-perf_counter_ns")
        names.remove("floor-empty-slots")
        names.remove("fastpatch-telemetry")
        # sampled timing is measured where it is meant to matter: the cheapest call
        names.remove("fastpatch-sample16")
        names.remove("fastpatch-count-only")
    return names


def run_call_benchmark(benchmark: Any, workload_name: str, variant_name: str, monkeypatch: Any) -> None:
    """The body of every call-overhead benchmark."""
    workload = WORKLOADS[workload_name]
    benchmark.group = workload.group
    label = variant_name
    variant = VARIANT_CLASSES[variant_name](workload, label)
    if isinstance(variant, Profiled):
        _keep_profiler_on_during_rounds(monkeypatch)
    ns = workload.define(label)
    target = workload.target(ns)
    try:
        workload.install(ns, variant.install(target))
        run, box = workload.driver(ns, label, variant.call_template)
        variant.before()
        try:
            benchmark(run)
        finally:
            variant.after()
        calls = box[0] * CALLS_PER_ROUND
        info = variant.verify(calls)
    finally:
        variant.close()
    extra = benchmark.extra_info
    extra.update(
        workload=workload.name,
        variant=variant_name,
        calls_per_round=CALLS_PER_ROUND,
        rounds_run=box[0],
        calls_made=calls,
        quick=QUICK,
    )
    extra.update(info)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None:
        extra["ns_per_call_min"] = stats.min * 1e9 / CALLS_PER_ROUND
        extra["ns_per_call_median"] = stats.median * 1e9 / CALLS_PER_ROUND


class _NoPause:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _NoPause:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _keep_profiler_on_during_rounds(monkeypatch: Any) -> None:
    try:
        import pytest_benchmark.fixture as bf
    except ImportError:  # pragma: no cover
        return
    if hasattr(bf, "PauseInstrumentation"):
        monkeypatch.setattr(bf, "PauseInstrumentation", _NoPause)


# ---------------------------------------------------------------------------
# Patching cost
# ---------------------------------------------------------------------------

# Statement blocks cycled through to make an n-line function: branches,
# loops, a try block (exception table on 3.11+), early returns (more exit
# probes), calls and an f-string. Each block only uses names set before it.
_BLOCKS = [
    ["a = x + {i}"],
    ["if a > {i}:", "    b = a * 2", "else:", "    b = a - {i}"],
    ["for j in range(3):", "    b += j"],
    ["c = [a, b, {i}]", "d = len(c) + c[0]"],
    ["try:", "    x = x + d // (b or 1)", "except ZeroDivisionError:", "    x = 0"],
    ["while b > 1000:", "    b //= 2"],
    ["if d < -{i}:", "    return d"],
    ["s = f'{a}-{b}'", "x = x + len(s) % 7"],
]


def function_source(n_lines: int, name: str = "target") -> str:
    """Source of a function exactly ``n_lines`` lines long (def and return included)."""
    if n_lines < 3:
        raise ValueError("n_lines must be at least 3")
    budget = n_lines - 2
    body: List[str] = []
    i = 0
    while True:
        block = _BLOCKS[i % len(_BLOCKS)]
        if len(body) + len(block) > budget:
            break
        body.extend(line.replace("{i}", str(i)) for line in block)
        i += 1
    while len(body) < budget:
        body.append(f"x = x + {len(body)}")
    lines = [f"def {name}(x):"] + ["    " + line for line in body] + ["    return x"]
    assert len(lines) == n_lines
    return "\n".join(lines) + "\n"


def fresh_function(source: str, n_lines: int, name: str = "target") -> FunctionType:
    """Compile ``source`` again: a never-seen code object. The function is
    taken out of its namespace so that no reference cycle outlives it."""
    ns = compile_namespace(source, f"patch-{n_lines}")
    return ns.pop(name)


def bytecode_round_trip(code: CodeType) -> CodeType:
    import bytecode

    return bytecode.Bytecode.from_code(code).to_code()


def patch_rounds(config: Any, normal: int, quick: int) -> int:
    """Rounds of a pedantic benchmark, never fewer than --benchmark-min-rounds."""
    rounds = quick if QUICK else normal
    try:
        min_rounds = int(config.getoption("benchmark_min_rounds"))
    except (ValueError, TypeError):
        min_rounds = 0
    return max(rounds, min_rounds)


def fastpatch_clock() -> str:
    """The probes' clock (FASTPATCH_CLOCK), where this fastpatch can choose one."""
    clock = getattr(fastpatch, "clock", None)
    return clock() if callable(clock) else "monotonic"


def describe() -> str:
    where = os.path.dirname(fastpatch.__file__)
    return (f"fastpatch {fastpatch.__version__} from {where}, clock {fastpatch_clock()}; "
            f"{CALLS_PER_ROUND} calls per round ({LOOPS} x {UNROLL}){'; QUICK mode' if QUICK else ''}")


__all__ = [
    "CALLS_PER_ROUND", "HAS_MONITORING", "QUICK", "VARIANT_ORDER", "WORKLOADS",
    "bytecode_round_trip", "describe", "fresh_function", "function_source",
    "patch_rounds", "run_call_benchmark", "variants_for", "wrapt",
]
