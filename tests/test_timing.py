"""DESIGN.md "Timing semantics": what an activation is, when it ends, and what is an error.

Concurrency (threads, coroutines, greenlets) is in test_concurrency.py, the
probes' own bookkeeping in test_probe_internals.py, the histogram and
percentiles in test_histogram.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pstats
import subprocess
import sys
import time

import pytest

import fastpatch
from kinds import run_coroutine

PAUSE_S = 0.05
PAUSE_NS = int(PAUSE_S * 1e9)


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_recursive_fib_10_counts_177_activations():
    fastpatch.instrument(fib)
    try:
        assert fib(10) == 55
        s = fastpatch.stats(fib)
        assert (s.calls, s.completed, s.errors) == (177, 177, 0)
    finally:
        fastpatch.uninstrument(fib)


def test_plain_function_error_is_counted_and_reraised_unchanged():
    def boom(x):
        raise KeyError(x)

    fastpatch.instrument(boom)
    for i in range(3):
        with pytest.raises(KeyError) as info:
            boom(i)
        assert info.value.args == (i,)
    s = fastpatch.stats(boom)
    assert (s.calls, s.completed, s.errors) == (3, 3, 3)


def test_exception_caught_inside_the_function_is_not_an_error():
    def tolerant():
        try:
            raise ValueError
        except ValueError:
            return "handled"

    fastpatch.instrument(tolerant)
    assert tolerant() == "handled"
    assert fastpatch.stats(tolerant).errors == 0


def test_generator_latency_includes_time_suspended():
    def gen():
        yield 1
        yield 2

    fastpatch.instrument(gen)
    it = gen()
    time.sleep(2 * PAUSE_S)  # before the first resume: not part of the activation
    start = time.monotonic_ns()
    next(it)
    time.sleep(PAUSE_S)
    assert list(it) == [2]
    around = time.monotonic_ns() - start  # encloses the whole activation, and not the first pause
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.errors) == (1, 1, 0)
    # Not a speed claim: the activation lies inside `around` (1% for the
    # TSC's conversion), and the pause before the first resume alone would
    # have made it twice as long.
    assert PAUSE_NS <= s.total_ns <= 1.01 * around


def test_generator_created_but_never_started_is_not_an_activation():
    def gen():
        yield 1

    fastpatch.instrument(gen)
    it = gen()
    del it
    gc.collect()
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed) == (0, 0)


def test_coroutine_latency_includes_awaits():
    async def slow():
        await asyncio.sleep(PAUSE_S)
        return 5

    fastpatch.instrument(slow)
    assert asyncio.run(slow()) == 5
    s = fastpatch.stats(slow)
    assert (s.calls, s.completed, s.errors) == (1, 1, 0)
    assert s.total_ns >= PAUSE_NS


def test_async_generator_latency_includes_suspension_and_aclose_is_not_an_error():
    async def agen():
        yield 1
        await asyncio.sleep(PAUSE_S)
        yield 2

    fastpatch.instrument(agen)

    async def main():
        a = agen()
        assert await a.__anext__() == 1
        assert await a.__anext__() == 2
        await a.aclose()

    asyncio.run(main())
    s = fastpatch.stats(agen)
    assert (s.calls, s.completed, s.errors) == (1, 1, 0)
    assert s.total_ns >= PAUSE_NS


def _gen_yield_outside_try():
    yield 1
    yield 2


def _gen_yield_inside_try():
    try:
        yield 1
    finally:
        pass


@pytest.mark.parametrize("gen", [_gen_yield_outside_try, _gen_yield_inside_try], ids=["outside_try", "inside_try"])
@pytest.mark.parametrize("how", ["close", "collect"])
def test_generator_closed_or_collected_at_a_yield_records_its_end_without_error(gen, how):
    # 3.13 closes a generator suspended outside any try without running its frame.
    fastpatch.instrument(gen)
    try:
        it = gen()
        next(it)
        time.sleep(PAUSE_S)
        if how == "close":
            it.close()
        else:
            del it
            gc.collect()
        s = fastpatch.stats(gen)
        assert (s.calls, s.completed, s.errors) == (1, 1, 0)
        assert s.total_ns >= PAUSE_NS
    finally:
        fastpatch.uninstrument(gen)


def test_exception_thrown_in_that_escapes_is_an_error_and_one_caught_is_not():
    def gen():
        try:
            yield 1
        except KeyError:
            yield "caught"
        yield 2

    fastpatch.instrument(gen)
    it = gen()
    next(it)
    assert it.throw(KeyError) == "caught"
    assert next(it) == 2
    with pytest.raises(ValueError):
        it.throw(ValueError)
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.errors) == (1, 1, 1)


def test_generator_return_value_reaches_yield_from():
    def inner():
        yield 1
        return "done"

    def outer():
        result = yield from inner()
        yield result

    fastpatch.instrument(inner)
    fastpatch.instrument(outer)
    assert list(outer()) == [1, "done"]
    assert fastpatch.stats(inner).calls == 1 and fastpatch.stats(outer).calls == 1


def test_cancelled_task_counts_as_an_error():
    async def forever():
        await asyncio.sleep(10)

    fastpatch.instrument(forever)

    async def main():
        t = asyncio.ensure_future(forever())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(main())
    s = fastpatch.stats(forever)
    assert (s.calls, s.completed, s.errors) == (1, 1, 1)


def test_uninstrument_while_suspended_lets_the_activation_finish_and_record():
    def gen():
        yield 1
        yield 2

    fastpatch.instrument(gen)
    it = gen()
    next(it)
    fastpatch.uninstrument(gen)
    assert list(it) == [2]
    assert list(gen()) == [1, 2]  # new activations are not timed
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.errors) == (1, 1, 0)


def test_uninstrument_from_inside_the_running_function():
    def selfish(depth):
        if depth:
            return selfish(depth - 1)
        fastpatch.uninstrument(selfish)
        return "ok"

    fastpatch.instrument(selfish)
    assert selfish(3) == "ok"
    assert selfish(3) == "ok"
    s = fastpatch.stats(selfish)
    assert (s.calls, s.completed, s.errors) == (4, 4, 0)


def test_reset_keeps_suspended_activations_counted_as_started():
    def gen():
        yield 1

    fastpatch.instrument(gen)
    list(gen())
    waiting = [gen(), gen()]
    for it in waiting:
        next(it)
    fastpatch.reset(gen)
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.in_flight, sum(s.histogram)) == (2, 0, 2, 0)
    for it in waiting:
        assert list(it) == []
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.in_flight, sum(s.histogram)) == (2, 2, 0, 2)


# --------------------------------------------------------------------------
# The iteration protocol's end signals: StopIteration, StopAsyncIteration
# --------------------------------------------------------------------------


class _Countdown:
    """A class-based iterator: ``__next__`` ends the iteration with StopIteration."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return self

    def __next__(self):
        if not self.n:
            raise StopIteration
        self.n -= 1
        return self.n


async def _value(x):
    return x


class _AsyncCountdown:
    """``__anext__`` a plain method: it returns an awaitable, or raises StopAsyncIteration at the end."""

    def __init__(self, n):
        self.n = n

    def __aiter__(self):
        return self

    def __anext__(self):
        if not self.n:
            raise StopAsyncIteration
        self.n -= 1
        return _value(self.n)


class _AsyncDefCountdown(_AsyncCountdown):
    """``__anext__`` a coroutine, which raises StopAsyncIteration when awaited at the end."""

    async def __anext__(self):
        if not self.n:
            raise StopAsyncIteration
        self.n -= 1
        return self.n


def test_next_ending_the_iteration_with_stop_iteration_is_not_an_error():
    fastpatch.instrument(_Countdown.__next__)
    assert list(_Countdown(3)) == [2, 1, 0]
    s = fastpatch.stats(_Countdown.__next__)
    assert (s.calls, s.completed, s.errors) == (4, 4, 0)


@pytest.mark.parametrize("cls", [_AsyncCountdown, _AsyncDefCountdown], ids=["def", "async_def"])
def test_anext_ending_the_iteration_with_stop_async_iteration_is_not_an_error(cls):
    async def collect():
        return [x async for x in cls(2)]

    fastpatch.instrument(cls.__anext__)
    assert run_coroutine(collect()) == [1, 0]
    s = fastpatch.stats(cls.__anext__)
    assert (s.calls, s.completed, s.errors) == (3, 3, 0)


def test_a_function_letting_the_stop_iteration_of_next_escape_ends_normally():
    def first(iterator):
        return next(iterator)

    fastpatch.instrument(first)
    assert first(iter([5])) == 5
    with pytest.raises(StopIteration):
        first(iter([]))
    s = fastpatch.stats(first)
    assert (s.calls, s.completed, s.errors) == (2, 2, 0)


def test_stop_iteration_raised_in_a_generator_is_an_error_the_caller_gets_as_runtime_error():
    def gen():
        yield 1
        raise StopIteration

    fastpatch.instrument(gen)
    it = gen()
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="generator raised StopIteration"):
        next(it)
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.errors) == (1, 1, 1)


def _raise(exc):
    raise exc


def _kind_raising(kind):
    """(target to instrument, drive(exc)) for a function of ``kind`` whose
    activation ends with ``exc``, raised by a helper on its behalf."""
    if kind == "plain":
        def f(exc):
            _raise(exc)

        return f, f
    if kind == "lambda":
        f = lambda exc: _raise(exc)  # noqa: E731
        return f, f
    if kind == "closure":
        def outer():
            def inner(exc):
                _raise(exc)

            return inner

        inner = outer()
        return inner, inner
    if kind in ("method", "staticmethod", "classmethod"):
        class Holder:
            def method(self, exc):
                _raise(exc)

            @staticmethod
            def static(exc):
                _raise(exc)

            @classmethod
            def klass(cls, exc):
                _raise(exc)

        attr = {"method": "method", "staticmethod": "static", "classmethod": "klass"}[kind]
        return Holder.__dict__[attr], getattr(Holder(), attr)
    if kind == "generator":
        def gen(exc):
            _raise(exc)
            yield

        return gen, lambda exc: next(gen(exc))
    if kind == "coroutine":
        async def coro(exc):
            _raise(exc)

        return coro, lambda exc: coro(exc).send(None)
    assert kind == "async_generator"

    async def agen(exc):
        _raise(exc)
        yield

    return agen, lambda exc: agen(exc).__anext__().send(None)


_SIMPLE_KINDS = ["plain", "lambda", "closure", "method", "staticmethod", "classmethod"]


@pytest.mark.parametrize(
    ("kind", "signal", "caller_gets", "errors"),
    # PEP 479: StopIteration leaving a generator, coroutine or async generator
    # becomes RuntimeError; PEP 525: StopAsyncIteration leaving an async generator.
    [(k, StopIteration, StopIteration, 0) for k in _SIMPLE_KINDS]
    + [(k, StopIteration, RuntimeError, 1) for k in ("generator", "coroutine", "async_generator")]
    + [(k, StopAsyncIteration, StopAsyncIteration, 0) for k in _SIMPLE_KINDS + ["generator", "coroutine"]]
    + [("async_generator", StopAsyncIteration, RuntimeError, 1)],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_an_iteration_end_signal_is_an_error_only_where_the_caller_gets_runtime_error(kind, signal, caller_gets,
                                                                                        errors):
    target, drive = _kind_raising(kind)
    fastpatch.instrument(target)
    with pytest.raises(caller_gets):
        drive(signal)
    s = fastpatch.stats(target)
    assert (s.calls, s.completed, s.errors) == (1, 1, errors)


_ITERATING_PROGRAM = """
import asyncio


class Countdown:
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return self

    def __next__(self):
        if not self.n:
            raise StopIteration
        self.n -= 1
        return self.n


class AsyncCountdown:
    def __init__(self, n):
        self.n = n

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self.n:
            raise StopAsyncIteration
        self.n -= 1
        return self.n


def first(iterator):
    return next(iterator)


def gen():
    yield 1
    raise StopIteration


def failing():
    raise ValueError


async def main():
    got = []
    async for x in AsyncCountdown(2):
        got.append(x)
    return got


print(list(Countdown(3)), asyncio.run(main()))
for iterator in (iter([1]), iter([])):
    try:
        first(iterator)
    except StopIteration:
        pass
try:
    list(gen())
except RuntimeError:
    pass
try:
    failing()
except ValueError:
    pass
"""


def test_every_report_format_counts_iteration_ends_the_same_way(tmp_path):
    (tmp_path / "iterating.py").write_text(_ITERATING_PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}

    def fastpatch_cli(*args):
        result = subprocess.run([sys.executable, "-m", "fastpatch", *args], cwd=str(tmp_path), capture_output=True,
                                text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert fastpatch_cli("run", "-o", "r.json", "iterating.py") == "[2, 1, 0] [1, 0]\n"
    expected = {  # name: (calls, errors)
        "Countdown.__init__": (1, 0), "Countdown.__iter__": (1, 0), "Countdown.__next__": (4, 0),
        "AsyncCountdown.__init__": (1, 0), "AsyncCountdown.__aiter__": (1, 0), "AsyncCountdown.__anext__": (3, 0),
        "main": (1, 0), "first": (2, 0), "gen": (1, 1), "failing": (1, 1),
    }
    expected = {f"__main__.{name}": counts for name, counts in expected.items()}
    with open(tmp_path / "r.json") as fh:
        functions = json.load(fh)["functions"]
    assert {f["name"]: (f["calls"], f["errors"]) for f in functions} == expected
    table = fastpatch_cli("report", "r.json").splitlines()
    assert table[0].split()[:2] == ["calls", "errors"]
    assert {row.split()[-1]: (int(row.split()[0]), int(row.split()[1])) for row in table[1:]} == expected
    # pstats has no error column: its calls are the activations that ended, however they ended.
    fastpatch_cli("report", "-o", "r.pstats", "r.json")
    ended = {(f["firstlineno"], f["qualname"].rpartition(".")[2]): f["calls"] for f in functions}
    assert {key[1:]: value[1] for key, value in pstats.Stats(str(tmp_path / "r.pstats")).stats.items()} == ended
