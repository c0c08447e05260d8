"""DESIGN.md "What must not change for the user": each kind is run uninstrumented
and instrumented under the same observer, and what the observer saw must be equal."""

from __future__ import annotations

import cProfile
import gc
import inspect
import os
import pickle
import pstats
import sys
import traceback

import pytest

import fastpatch
import kinds
from kinds import KINDS, run_coroutine

KINDS_FILE = kinds.__file__
THIS_FILE = __file__
WATCHED = {os.path.basename(KINDS_FILE), os.path.basename(THIS_FILE)}


def _watched(code):
    return os.path.basename(code.co_filename) in WATCHED


def _compare(kind, observe):
    """observe(drive) -> events. Returns (events before, events after instrument)."""
    target, call = kind.make()

    def run():
        return kind.drive(call)

    # A collection during one run and not the other would show up as weakref
    # callbacks (asyncio's WeakSets) in only one list of events.
    gc.collect()
    gc.disable()
    try:
        before = observe(run)
        fastpatch.instrument(target)
        after = observe(run)
    finally:
        gc.enable()
    assert fastpatch.stats(target).calls == kind.activations
    return before, after


def _settrace_events(run):
    events = []

    def tracer(frame, event, arg):
        if _watched(frame.f_code):
            detail = repr(arg) if event == "return" else (arg[0].__name__ if event == "exception" else None)
            events.append((event, frame.f_code.co_name, frame.f_lineno, detail))
        return tracer

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
    return events


def _setprofile_events(run):
    events = []

    def profiler(frame, event, arg):
        name = getattr(arg, "__qualname__", repr(arg)) if event.startswith("c_") else frame.f_code.co_name
        events.append((event, name, frame.f_lineno if _watched(frame.f_code) else None))

    sys.setprofile(profiler)
    try:
        run()
    finally:
        sys.setprofile(None)
    return events


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_settrace_sees_identical_call_line_return_events(kind):
    before, after = _compare(kind, _settrace_events)
    assert any(e[0] == "line" for e in before)
    assert after == before


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_setprofile_sees_no_extra_call_or_c_call_events(kind):
    before, after = _compare(kind, _setprofile_events)
    assert any(e[0] == "call" for e in before)
    assert after == before


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_sys_monitoring_sees_identical_events(kind):
    mon = sys.monitoring
    E = mon.events
    tool = next(t for t in range(6) if mon.get_tool(t) is None)
    wanted = {
        "PY_START": E.PY_START, "PY_RESUME": E.PY_RESUME, "PY_RETURN": E.PY_RETURN, "PY_YIELD": E.PY_YIELD,
        "PY_UNWIND": E.PY_UNWIND, "PY_THROW": E.PY_THROW, "CALL": E.CALL, "C_RETURN": E.C_RETURN,
        "C_RAISE": E.C_RAISE, "LINE": E.LINE, "RAISE": E.RAISE, "RERAISE": E.RERAISE,
        "EXCEPTION_HANDLED": E.EXCEPTION_HANDLED,
    }

    def observe(run):
        events = []

        def make(name):
            def cb(code, *args):
                if name == "LINE":
                    events.append((name, code.co_name, args[0]))
                elif name == "CALL" or name.startswith("C_"):
                    events.append((name, code.co_name, getattr(args[1], "__qualname__", repr(args[1]))))
                elif name in ("PY_RETURN", "PY_YIELD"):
                    events.append((name, code.co_name, repr(args[1])))
                else:
                    events.append((name, code.co_name))

            return cb

        mon.use_tool_id(tool, "fastpatch-test")
        try:
            mask = 0
            for name, ev in wanted.items():
                mon.register_callback(tool, ev, make(name))
                mask |= ev
            mon.set_events(tool, mask)
            run()
            mon.set_events(tool, 0)
        finally:
            for ev in wanted.values():
                mon.register_callback(tool, ev, None)
            mon.free_tool_id(tool)
        return [e for e in events if e[1] != "observe"]

    before, after = _compare(kind, observe)
    assert any(e[0] == "LINE" for e in before)
    assert after == before


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_cprofile_lists_the_same_functions_and_no_probe(kind):
    def observe(run):
        prof = cProfile.Profile()
        prof.enable()
        try:
            run()
        finally:
            prof.disable()
        st = pstats.Stats(prof)
        return {(os.path.basename(f), line, name): (calls[0], calls[1]) for (f, line, name), calls in st.stats.items()}

    before, after = _compare(kind, observe)
    assert after == before
    assert not [k for k in after if "Probe" in k[2] or "Token" in k[2] or "_ext" in k[0]]


# --------------------------------------------------------------------------
# Exceptions and tracebacks
# --------------------------------------------------------------------------


def _raising_kinds():
    def plain(x):
        y = x + 1
        raise KeyError(y)

    def nested(x):
        return plain(x) + 1

    def gen(x):
        yield 1
        raise ValueError(x)

    async def coro(x):
        await _sleep0()
        {}[x]

    async def agen(x):
        yield 1
        raise IndexError(x)

    def drive_gen(f):
        return list(f(3))

    def drive_coro(f):
        return run_coroutine(f(3))

    def drive_agen(f):
        return run_coroutine(kinds._collect(f(3)))

    return [
        ("plain", [plain], lambda: plain(1)),
        ("nested", [plain, nested], lambda: nested(1)),
        ("generator", [gen], lambda: drive_gen(gen)),
        ("coroutine", [coro], lambda: drive_coro(coro)),
        ("async_generator", [agen], lambda: drive_agen(agen)),
    ]


async def _sleep0():
    pass


def _tb_signature(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    sig = []
    for fr in frames:
        pos = (getattr(fr, "end_lineno", None), getattr(fr, "colno", None), getattr(fr, "end_colno", None))
        sig.append((os.path.basename(fr.filename), fr.name, fr.lineno, fr.line, pos))
    tb = exc.__traceback__
    lasti_lines = []
    while tb is not None:
        lasti_lines.append((tb.tb_frame.f_code.co_name, tb.tb_lineno))
        tb = tb.tb_next
    return type(exc), exc.args, sig, lasti_lines


@pytest.mark.parametrize("name", [k[0] for k in _raising_kinds()])
def test_tracebacks_keep_the_same_frames_lines_and_columns(name):
    _, funcs, run = next(k for k in _raising_kinds() if k[0] == name)

    def catch():
        try:
            run()
        except Exception as exc:
            return exc
        raise AssertionError("did not raise")

    before = catch()
    for f in funcs:
        fastpatch.instrument(f)
    after = catch()
    assert _tb_signature(after) == _tb_signature(before)
    assert fastpatch.stats(funcs[0]).errors == 1


def test_exception_chaining_and_exc_info_are_unchanged():
    def chained():
        try:
            {}["k"]
        except KeyError as e:
            raise ValueError("v") from e

    def implicit():
        try:
            1 / 0
        except ZeroDivisionError:
            raise RuntimeError("r")

    def seen_exc_info():
        return sys.exc_info()[0]

    def bare_raise():
        raise

    def observe():
        out = []
        for f in (chained, implicit):
            try:
                f()
            except Exception as e:
                out.append((type(e), type(e.__cause__), type(e.__context__), e.__suppress_context__))
        try:
            raise LookupError("outer")
        except LookupError as outer:
            out.append(seen_exc_info())
            try:
                bare_raise()
            except LookupError as again:
                out.append(again is outer)
            out.append(sys.exc_info()[1] is outer)
        out.append(sys.exc_info())
        return out

    before = observe()
    for f in (chained, implicit, seen_exc_info, bare_raise):
        fastpatch.instrument(f)
    after = observe()
    assert after == before
    assert before[2] is LookupError and before[3] is True
    assert fastpatch.stats(bare_raise).errors == 1
    assert fastpatch.stats(seen_exc_info).errors == 0


# --------------------------------------------------------------------------
# Introspection
# --------------------------------------------------------------------------


def module_level(a, b=2, *args, c, **kw):
    """Docstring stays."""
    local_one = a + b
    return locals()


def module_level_gen(n):
    yield from range(n)


async def module_level_coro():
    return 1


async def module_level_agen():
    yield 1


def test_introspection_is_unchanged():
    targets = [module_level, module_level_gen, module_level_coro, module_level_agen]
    probes = [
        inspect.signature, inspect.getsource, inspect.isfunction, inspect.isgeneratorfunction,
        inspect.iscoroutinefunction, inspect.isasyncgenfunction, lambda f: f.__name__, lambda f: f.__qualname__,
        lambda f: f.__doc__, lambda f: f.__code__.co_firstlineno, lambda f: f.__code__.co_varnames,
        lambda f: f.__code__.co_flags, lambda f: f.__code__.co_name, lambda f: f.__code__.co_argcount,
        lambda f: f.__code__.co_freevars, lambda f: f.__code__.co_cellvars, lambda f: f.__code__.co_filename,
        lambda f: f.__code__.co_nlocals, lambda f: pickle.loads(pickle.dumps(f)) is f,
        lambda f: f.__code__.co_consts[0] if f.__doc__ else None,
    ]
    before = [[p(f) for p in probes] for f in targets]
    try:
        for f in targets:
            fastpatch.instrument(f)
        after = [[p(f) for p in probes] for f in targets]
        assert after == before
        assert module_level(1, c=3) == {"a": 1, "b": 2, "args": (), "c": 3, "kw": {}, "local_one": 3}
    finally:
        for f in targets:
            fastpatch.uninstrument(f)


def test_frame_locals_show_no_hidden_variable():
    seen = {}

    def gen(x):
        y = x * 2
        yield y

    fastpatch.instrument(gen)
    it = gen(4)
    next(it)
    seen.update(it.gi_frame.f_locals)
    assert seen == {"x": 4, "y": 8}
    assert gen.__code__.co_varnames == ("x", "y")
    assert gen.__code__.co_nlocals == 2


def _specialised_call(kind, instrumented: bool) -> str:
    """The instruction a fresh call site of ``kind`` specialises to after many calls."""
    import dis

    namespace: dict = {}
    exec(
        "def caller(fn, arg, n, close):\n"
        "    for _ in range(n):\n"
        "        result = fn(arg)\n"
        "        if close:\n"
        "            result.close()\n",
        namespace,
    )
    caller = namespace["caller"]
    target, fn = kind.make()
    if instrumented:
        fastpatch.instrument(target)
    arg = {"method": "bob", "recursive": 5, "coroutine": 41}.get(kind.name, 3)
    caller(fn, arg, 2000, kind.name == "coroutine")
    if instrumented:
        s = fastpatch.stats(target)
        assert s.calls == (0 if kind.generator_like else 2000 * kind.activations)
    line = caller.__code__.co_firstlineno + 2  # result = fn(arg)
    (call,) = [
        i.opname for i in dis.get_instructions(caller, adaptive=True)
        if i.opname.startswith("CALL") and i.positions.lineno == line
    ]
    return call


@pytest.mark.skipif(sys.version_info < (3, 12), reason="dis shows specialised instructions the same way from 3.12")
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_calls_to_an_instrumented_function_still_specialise(kind):
    # On 3.13+ a plain __code__ assignment leaves the function without a
    # version, and every call site then stays on the generic CALL.
    plain = _specialised_call(kind, instrumented=False)
    if plain == "CALL":  # not specialised at all: only 3.12, for a signature with *args and **kwargs
        assert sys.version_info[:2] == (3, 12) and kind.name == "plain", plain
    else:
        assert plain.startswith("CALL_") and plain != "CALL_NON_PY_GENERAL", plain
    assert _specialised_call(kind, instrumented=True) == plain
