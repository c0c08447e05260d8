"""The probes' own bookkeeping: tokens and their free list, the return folded
in one behind, the size of a probe."""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

import pytest

import fastpatch
from fastpatch import _ext

PAUSE_S = 0.05
PAUSE_NS = int(PAUSE_S * 1e9)


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


def _raw(f):
    """Counters and histogram bucket counts: exact integers, whatever the clock."""
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


def test_a_called_probe_fits_in_2_kib_and_an_uncalled_one_in_128_bytes():
    assert _ext._testing_probe_size() <= 2048
    assert _ext._testing_probe_size() - 8 * _ext.HIST_BUCKETS <= 128


def test_a_probe_allocates_its_histogram_at_its_first_call():
    # The import hook makes a probe for every function of every module it
    # splices, and most are never called: those must not carry a histogram.
    n = 500
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        probes = [_ext.Probe() for _ in range(n)]
        made = tracemalloc.get_traced_memory()[0] - base
        for probe in probes:
            assert probe.snapshot()[6] == bytes(8 * _ext.HIST_BUCKETS)  # read as empty, still unallocated
        assert tracemalloc.get_traced_memory()[0] - base - made < n * 16
        for probe in probes:
            token = ~probe
            token[None]
        called = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    hist = 8 * _ext.HIST_BUCKETS
    # about 120 bytes a probe (and the list): no histogram, which alone is 1848
    assert made < n * 200 + sys.getsizeof(probes)
    # each probe now holds its histogram, and its spare token
    assert n * hist <= called - made <= n * (hist + 128)
    assert all(sum(p.snapshot()[6]) > 0 for p in probes)


@pytest.mark.parametrize("ending", ["return", "raise", "close"])
def test_steady_state_allocates_no_tokens_spare_slot_or_free_list(ending):
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
    idle = _ext._testing_idle_tokens()
    for _ in range(1000):
        run()
    assert _ext._testing_idle_tokens() == idle
    target = {"return": returns, "raise": raises, "close": gen}[ending]
    assert fastpatch.stats(target).completed == 1001


def _on_slot_floor(func):
    """``func`` spliced for count-only, with its probe swapped for a slot
    floor (the benchmarks' ``floor-empty-slots``); returns the floor."""
    fastpatch.instrument(func, sample=0)
    code = func.__code__
    (probe,) = [c for c in code.co_consts if isinstance(c, _ext.Probe)]
    floor = _ext._testing_slot_floor()
    _ext.set_code(func, code.replace(co_consts=tuple(floor if c is probe else c for c in code.co_consts)))
    return floor


def test_the_slot_floor_sees_both_ends_of_every_activation_and_changes_no_result():
    # The benchmarks measure count-only and sampled timing against this floor, so it must run the
    # injected instructions as a probe does: every activation begun once and ended once, through
    # the subscript or the deallocator, recursion (a second token) and exceptions included.
    def add(x):
        return x + 1

    def fails(x):
        raise KeyError(x)

    def depth(n):
        return n if n == 0 else depth(n - 1) + 1

    def gen(n):
        yield from range(n)

    floors = {f.__name__: _on_slot_floor(f) for f in (add, fails, depth, gen)}
    assert [add(i) for i in range(100)] == list(range(1, 101))
    for i in range(50):
        with pytest.raises(KeyError) as caught:
            fails(i)
        assert caught.value.args == (i,)
    assert depth(20) == 20
    assert list(gen(5)) == [0, 1, 2, 3, 4]
    it = gen(5)
    next(it)
    it.close()
    expected = {"add": 100, "fails": 50, "depth": 21, "gen": 2}
    assert {name: (f.entries, f.exits) for name, f in floors.items()} == {n: (c, c) for n, c in expected.items()}
