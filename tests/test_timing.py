"""DESIGN.md "Timing semantics": what an activation is, when it ends, what is an error,
and exact counts under threads, interleaved coroutines and greenlets."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time

import pytest

import fastpatch
from fastpatch import _ext
from fastpatch._stats import HISTOGRAM_RANGE_NS, RELATIVE_ERROR, bucket_bounds

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


# --------------------------------------------------------------------------
# Generators, coroutines, async generators: wall time including suspension
# --------------------------------------------------------------------------


def test_generator_latency_includes_time_suspended():
    def gen():
        yield 1
        yield 2

    fastpatch.instrument(gen)
    it = gen()
    time.sleep(PAUSE_S)  # before the first resume: not part of the activation
    next(it)
    time.sleep(PAUSE_S)
    assert list(it) == [2]
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.errors) == (1, 1, 0)
    assert PAUSE_NS <= s.total_ns < 2 * PAUSE_NS


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


# --------------------------------------------------------------------------
# Exact counts under concurrency
# --------------------------------------------------------------------------


def test_exact_counts_from_8_threads_times_20000_calls():
    def work(x):
        return x + 1

    fastpatch.instrument(work)
    start = threading.Barrier(8)

    def hammer():
        start.wait()
        for i in range(20_000):
            work(i)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # force as many GIL hand-offs as possible
    try:
        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    s = fastpatch.stats(work)
    assert (s.calls, s.completed, s.errors) == (160_000, 160_000, 0)
    assert sum(s.histogram) == 160_000


def test_200_interleaved_coroutines_each_time_their_own_activation():
    async def handler(i):
        # Even ones wait longer: ends interleave in a different order than starts.
        await asyncio.sleep(PAUSE_S if i % 2 == 0 else 0)
        await asyncio.sleep(0)
        return i

    fastpatch.instrument(handler)

    async def main():
        return await asyncio.gather(*(handler(i) for i in range(200)))

    assert asyncio.run(main()) == list(range(200))
    s = fastpatch.stats(handler)
    assert (s.calls, s.completed, s.errors) == (200, 200, 0)
    # Each activation carries its own start: the slow half sees the pause, the fast half not.
    assert s.max_ns >= PAUSE_NS
    assert s.min_ns < PAUSE_NS
    assert s.percentile(25) < PAUSE_NS <= s.percentile(75) * (1 + RELATIVE_ERROR)


def test_manually_interleaved_coroutines_keep_separate_start_times():
    async def step():
        await _suspend()
        await _suspend()

    fastpatch.instrument(step)
    a, b = step(), step()
    a.send(None)
    time.sleep(PAUSE_S)
    b.send(None)
    for c in (b, a):
        c.send(None)
        with pytest.raises(StopIteration):
            c.send(None)
    s = fastpatch.stats(step)
    assert (s.calls, s.completed) == (2, 2)
    assert s.max_ns >= PAUSE_NS > s.min_ns


class _Suspend:
    def __await__(self):
        yield


def _suspend():
    return _Suspend()


def test_greenlet_stack_switches_keep_counts_and_durations():
    greenlet = pytest.importorskip("greenlet")

    def leaf(g):
        g.parent.switch("paused")
        return "leaf"

    def branch(g):
        return leaf(g) + "!"

    fastpatch.instrument(leaf)
    fastpatch.instrument(branch)
    glets = []
    for _ in range(20):
        g = greenlet.greenlet(branch)
        glets.append(g)
        assert g.switch(g) == "paused"
    time.sleep(PAUSE_S)
    assert [g.switch() for g in reversed(glets)] == ["leaf!"] * 20
    for f in (leaf, branch):
        s = fastpatch.stats(f)
        assert (s.calls, s.completed, s.errors) == (20, 20, 0)
        assert s.min_ns >= PAUSE_NS


# --------------------------------------------------------------------------
# uninstrument while running or suspended
# --------------------------------------------------------------------------


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


def _token_of(generator):
    # The suspended frame's value stack is visited through the generator
    # (3.11+) or through its frame object (3.9, 3.10).
    holders = (generator, generator.gi_frame)
    tokens = [o for o in gc.get_referents(*holders) if type(o) is _ext.Token]
    assert len(tokens) == 1
    return tokens[0]


def test_a_token_kept_past_its_frame_and_its_function_is_safe():
    # Tokens borrow their probe: the code running the frame holds it. A tool
    # walking the heap can still take a token off a suspended frame and keep
    # it after the frame, the function and its code are gone; the probe must
    # then stay valid for the token's late end (ASan checks this in CI).
    ns = {}
    exec("def gen():\n    yield 1\n", ns)
    gen = ns.pop("gen")
    fastpatch.instrument(gen)
    it = gen()
    next(it)
    token = _token_of(it)
    it.close()
    del it
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed) == (1, 0)  # the end comes when the token dies
    fastpatch.uninstrument(gen)
    del gen
    gc.collect()
    del token  # records into the probe of a definition that no longer exists
    gc.collect()


def test_the_end_of_a_kept_token_is_recorded_when_it_is_dropped():
    def gen():
        yield 1

    fastpatch.instrument(gen)
    it = gen()
    next(it)
    token = _token_of(it)
    it.close()
    assert fastpatch.stats(gen).in_flight == 1
    del token
    s = fastpatch.stats(gen)
    assert (s.calls, s.completed, s.errors, s.in_flight) == (1, 1, 0, 0)


# --------------------------------------------------------------------------
# Histogram and percentiles
# --------------------------------------------------------------------------


def test_python_bucket_bounds_match_the_c_bucketing():
    for index in range(_ext.HIST_BUCKETS - 1):
        low, high = bucket_bounds(index)
        assert _ext.bucket_index(low) == index
        assert _ext.bucket_index(high - 1) == index
        assert _ext.bucket_index(high) == index + 1
    assert _ext.bucket_index(10**15) == _ext.HIST_BUCKETS - 1
    assert HISTOGRAM_RANGE_NS == bucket_bounds(_ext.HIST_BUCKETS - 1)[0]


def test_bucket_midpoints_are_within_the_documented_relative_error():
    assert RELATIVE_ERROR == 1 / 16
    for index in range(8, _ext.HIST_BUCKETS - 1):
        low, high = bucket_bounds(index)
        mid = (low + high) // 2
        assert (mid - low) / low <= RELATIVE_ERROR
        assert (high - 1 - mid) / (high - 1) <= RELATIVE_ERROR


def _stats_with(observations):
    hist = [0] * _ext.HIST_BUCKETS
    for ns in observations:
        hist[_ext.bucket_index(ns)] += 1
    return fastpatch.Stats(
        name="synthetic", calls=len(observations), errors=0, total_ns=sum(observations),
        min_ns=min(observations), max_ns=max(observations), completed=len(observations), histogram=tuple(hist),
    )


def test_percentiles_of_a_known_distribution_are_within_the_error_bound():
    observations = [1_000 * (i + 1) for i in range(1000)]  # 1 us .. 1 ms, uniform
    s = _stats_with(observations)
    assert s.percentile(0) == 1_000
    assert s.percentile(100) == 1_000_000
    for q in (1, 10, 25, 50, 75, 90, 99, 99.9):
        true = observations[max(0, int(q / 100 * 1000 + 0.999999) - 1)]
        assert abs(s.percentile(q) - true) <= RELATIVE_ERROR * true, q


def test_percentiles_are_clamped_to_min_and_max():
    s = _stats_with([1_000_003] * 5)
    assert [s.percentile(q) for q in (0, 1, 50, 99, 100)] == [1_000_003] * 5
    top = _stats_with([HISTOGRAM_RANGE_NS * 3, HISTOGRAM_RANGE_NS * 4])
    assert top.percentile(50) == top.max_ns


@pytest.mark.parametrize("q", [-1, 100.5, float("nan")])
def test_percentile_outside_0_100_is_a_value_error(q):
    with pytest.raises(ValueError, match="from 0 to 100"):
        _stats_with([5]).percentile(q)


def test_percentile_needs_a_number():
    with pytest.raises(TypeError, match="needs a number"):
        _stats_with([5]).percentile("50")


def _raw(f):
    """Counters and histogram in the probe's own ticks, with no float conversion."""
    s = fastpatch.stats(f)
    return s.calls, s.completed, s.errors, s.histogram


def test_the_latest_return_is_in_the_stats_at_once_and_counted_once():
    # The probe folds a return's duration into the counters one return late
    # (see token_exit); every read must still see exactly what has ended.
    def pause(seconds):
        time.sleep(seconds)
        return seconds

    fastpatch.instrument(pause)
    pause(0)
    first = _raw(pause)
    assert first[:3] == (1, 1, 0) and sum(first[3]) == 1
    assert _raw(pause) == first  # reading again adds nothing
    assert fastpatch.stats(pause).max_ns < PAUSE_NS

    pause(PAUSE_S)
    s = fastpatch.stats(pause)
    assert (s.calls, s.completed, sum(s.histogram)) == (2, 2, 2)
    assert s.max_ns >= PAUSE_NS  # the return just made, read straight after it
    assert s.min_ns < PAUSE_NS

    with pytest.raises(TypeError):
        pause("not a number")  # ends by an exception after a pending return
    pause(0)
    s = fastpatch.stats(pause)
    assert (s.calls, s.completed, s.errors, sum(s.histogram)) == (4, 4, 1, 4)
    assert _raw(pause) == (4, 4, 1, s.histogram)


def test_reset_drops_a_return_not_yet_folded_in():
    def f():
        return 1

    fastpatch.instrument(f)
    f(), f()
    fastpatch.reset(f)
    s = fastpatch.stats(f)
    assert (s.calls, s.completed, s.total_ns, s.max_ns, sum(s.histogram)) == (0, 0, 0, 0, 0)
    f()
    s = fastpatch.stats(f)
    assert (s.calls, s.completed, sum(s.histogram)) == (1, 1, 1)


def test_probe_state_fits_in_1_kib():
    assert _ext.probe_size() <= 1024


@pytest.mark.parametrize("ending", ["return", "raise"])
def test_a_full_histogram_bucket_halves_every_bucket_instead_of_wrapping(ending):
    def f(x):
        if ending == "raise":
            raise KeyError(x)
        return [x]

    def call(x):
        try:
            return f(x)
        except KeyError:
            return None

    fastpatch.instrument(f)
    (probe,) = [c for c in f.__code__.co_consts if type(c) is _ext.Probe]
    call(1)  # a return is still pending after this one
    probe._fill_histogram(2**32 - 1)
    result = call(2)  # folds a duration into a full bucket
    assert result == (None if ending == "raise" else [2])
    # Every bucket is halved to 2**31; reading folds in call(2) itself if it
    # returned (it is the pending one), not if it raised.
    halved = 2**31 * _ext.HIST_BUCKETS
    pending = 1 if ending == "return" else 0
    hist = fastpatch.stats(f).histogram
    assert min(hist) == 2**31 and sum(hist) == halved + pending
    call(3)
    s = fastpatch.stats(f)
    assert (s.calls, s.completed, sum(s.histogram)) == (3, 3, halved + pending + 1)
    with pytest.raises(OverflowError):
        probe._fill_histogram(2**32)


@pytest.mark.parametrize("ending", ["return", "raise", "close"])
def test_steady_state_reuses_tokens_from_the_free_list(ending):
    def returns():
        return 1

    def raises():
        raise KeyError

    def gen():
        yield 1

    def run():
        if ending == "return":
            returns()
        elif ending == "raise":
            try:
                raises()
            except KeyError:
                pass
        else:
            it = gen()
            next(it)
            it.close()

    for f in (returns, raises, gen):
        fastpatch.instrument(f)
    run()
    idle = _ext.idle_tokens()
    for _ in range(1000):
        run()
    assert _ext.idle_tokens() == idle
    target = {"return": returns, "raise": raises, "close": gen}[ending]
    assert fastpatch.stats(target).completed == 1001
