"""DESIGN.md "Timing semantics": what an activation is, when it ends, and what is an error.

Concurrency (threads, coroutines, greenlets) is in test_concurrency.py, the
probes' own bookkeeping in test_probe_internals.py, the histogram and
percentiles in test_histogram.py.
"""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

import fastpatch

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
