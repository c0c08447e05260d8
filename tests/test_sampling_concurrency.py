"""Sampled timing under threads, interleaved coroutines and greenlets: every
activation counted exactly at every rate, each timed one weighed by the rate
it started at, and an activation's decision kept across its suspensions."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

import fastpatch
from fastpatch import _ext
from kinds import KINDS, run_coroutine

RATES = [1, 2, 16, 0]
SEED = 20261207
# Kinds that start one activation per drive, several per drive, and suspend.
THREADED_KINDS = [k for k in KINDS if k.name in ("plain", "recursive", "bound_method", "generator", "coroutine",
                                                 "async_generator")]


def _reseed(sample, *targets):
    """Seed the sampler, then set each target's rate, which draws its first gap
    (once it has been called), and zero its counters: the same decisions as the
    last time this ran, for the same sequence of starts."""
    _ext._testing_seed_sampler(SEED)
    for target in targets:
        fastpatch.instrument(target, sample=sample)
        fastpatch.reset(target)


def _assert_sampled_consistently(s, sample, completed):
    """What holds of a Stats at any rate once ``completed`` activations ended."""
    assert s.timed <= s.completed == completed
    if sample == 1:
        assert (s.timed, sum(s.histogram)) == (completed, completed)
    elif sample == 0:
        assert (s.timed, sum(s.histogram), s.total_ns, s.min_ns, s.max_ns) == (0, 0, 0, 0, 0)
    else:
        # Each timed activation stands for `sample` of them.
        assert sum(s.histogram) == sample * s.timed


def _timed_after_exact_counts(leaf, caller, sample, n, *, leaf_errors):
    """(leaf's timed, caller's timed, and the sums of their histograms), once
    each is checked to have ``n`` activations, all ended, at ``sample``: the
    leaf's ``leaf_errors`` of them raised, and the caller caught every one."""
    s_leaf, s_caller = fastpatch.stats(leaf), fastpatch.stats(caller)
    assert (s_leaf.calls, s_leaf.completed, s_leaf.errors) == (n, n, leaf_errors)
    assert (s_caller.calls, s_caller.completed, s_caller.errors) == (n, n, 0)
    _assert_sampled_consistently(s_leaf, sample, n)
    _assert_sampled_consistently(s_caller, sample, n)
    return (s_leaf.timed, s_caller.timed, sum(s_leaf.histogram), sum(s_caller.histogram))


@pytest.mark.parametrize("sample", RATES)
def test_threads_calling_sampled_functions_of_several_kinds_are_counted_exactly(sample):
    _ext._testing_seed_sampler(SEED)
    made = [(kind, *kind.make()) for kind in THREADED_KINDS]

    def failing(i):
        if i % 4 == 0:
            raise KeyError(i)
        return i

    expected = [kind.drive(call) for kind, _, call in made]
    for _, target, _ in made:
        fastpatch.instrument(target, sample=sample)
    fastpatch.instrument(failing, sample=sample)
    threads_n, drives = 4, 1500
    start = threading.Barrier(threads_n)
    results = [None] * threads_n

    def hammer(slot):
        start.wait()
        seen, raised = [], 0
        for i in range(drives):
            seen.append([kind.drive(call) for kind, _, call in made])
            try:
                failing(i)
            except KeyError:
                raised += 1
        results[slot] = (seen, raised)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # as many GIL hand-offs as possible, mid-activation included
    try:
        threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert results == [([expected] * drives, drives // 4)] * threads_n
    for kind, target, _ in made:
        s = fastpatch.stats(target)
        n = threads_n * drives * kind.activations
        assert (s.calls, s.completed, s.errors, s.sample) == (n, n, 0, sample), kind
        _assert_sampled_consistently(s, sample, n)
    s = fastpatch.stats(failing)
    n = threads_n * drives
    assert (s.calls, s.completed, s.errors) == (n, n, n // 4)
    _assert_sampled_consistently(s, sample, n)


def _gathered_program(sample):
    """200 tasks that await each other's results and sleep(0) between; one in
    five raises. Returns (run, leaf, handler): run() drives a fresh interleaving."""

    async def leaf(i):
        await asyncio.sleep(0)
        if i % 5 == 0:
            raise ValueError(i)
        return i

    async def handler(i, done):
        await asyncio.sleep(0)
        if i % 2:
            await done[i - 1].wait()  # ends after its neighbour: ends interleave unlike starts
        try:
            got = await leaf(i)
        except ValueError:
            got = -i
        await asyncio.sleep(0)
        done[i].set()
        return got

    fastpatch.instrument(leaf, sample=sample)
    fastpatch.instrument(handler, sample=sample)

    async def main():
        done = [asyncio.Event() for _ in range(200)]
        return await asyncio.gather(*(handler(i, done) for i in range(200)))

    def run():
        return asyncio.run(main())

    return run, leaf, handler


EXPECTED_GATHERED = [-i if i % 5 == 0 else i for i in range(200)]


@pytest.mark.parametrize("sample", RATES)
def test_interleaved_coroutines_are_counted_exactly_and_the_same_seed_times_the_same_activations(sample):
    run, leaf, handler = _gathered_program(sample)
    timed = []
    # Three runs: the first draws each probe's first gap at its first activation,
    # the others when _reseed sets the rate, so the last two start alike.
    for _ in range(3):
        _reseed(sample, leaf, handler)
        assert run() == EXPECTED_GATHERED
        timed.append(_timed_after_exact_counts(leaf, handler, sample, 200, leaf_errors=40))
    # The same starts in the same order draw the same decisions: each activation's
    # decision is its own, whatever ran between its start and its end.
    assert timed[1] == timed[2]


@pytest.mark.parametrize("sample", [1, 2, 16])
def test_a_suspended_coroutine_is_timed_only_when_it_completes_with_its_starts_decision(sample):
    class Suspend:
        def __await__(self):
            yield

    async def step(i):
        await Suspend()
        return i

    fastpatch.instrument(step, sample=sample)

    def started(first, last):
        coros = [step(i) for i in range(first, last)]
        for c in coros:
            c.send(None)  # started: its decision drawn, suspended at its await
        return coros

    assert run_coroutine(step(-1)) == -1  # called: _reseed draws its first gap from now on
    # Reference: 400 started, then all finished in start order.
    _reseed(sample, step)
    coros = started(0, 400)
    assert [run_coroutine(c) for c in coros] == list(range(400))
    reference = fastpatch.stats(step)
    assert (reference.calls, reference.completed) == (400, 400)

    # The same starts with ends between them: 200 started, the odd ones of those
    # finished, 200 more started, the rest finished. Ends draw nothing, so the
    # same activations are timed as in the reference.
    _reseed(sample, step)
    coros = started(0, 200)
    assert [run_coroutine(c) for c in coros[1::2]] == list(range(1, 200, 2))
    half = fastpatch.stats(step)
    assert (half.calls, half.completed, half.in_flight) == (200, 100, 100)
    _assert_sampled_consistently(half, sample, 100)
    coros = coros[0::2] + started(200, 400)
    assert [run_coroutine(c) for c in coros] == list(range(0, 200, 2)) + list(range(200, 400))
    whole = fastpatch.stats(step)
    assert (whole.calls, whole.completed, whole.in_flight) == (400, 400, 0)
    _assert_sampled_consistently(whole, sample, 400)
    assert (whole.timed, sum(whole.histogram)) == (reference.timed, sum(reference.histogram))


@pytest.mark.parametrize("sample", RATES)
def test_greenlets_switching_mid_activation_are_counted_exactly_and_seeded_alike(sample):
    greenlet = pytest.importorskip("greenlet")

    def leaf(g, i):
        g.parent.switch("paused")
        if i % 3 == 0:
            raise KeyError(i)
        return i

    def branch(g, i):
        try:
            return leaf(g, i)
        except KeyError:
            return -i

    fastpatch.instrument(leaf, sample=sample)
    fastpatch.instrument(branch, sample=sample)
    timed = []
    for _ in range(3):  # the last two start alike (see the coroutines' test)
        _reseed(sample, leaf, branch)
        glets = []
        for i in range(300):
            g = greenlet.greenlet(branch)
            glets.append(g)
            assert g.switch(g, i) == "paused"
        paused = fastpatch.stats(leaf)
        assert (paused.calls, paused.completed, paused.timed) == (300, 0, 0)
        # Resumed in reverse: activations end in the opposite order of their starts.
        assert [g.switch() for g in reversed(glets)] == [-i if i % 3 == 0 else i for i in reversed(range(300))]
        timed.append(_timed_after_exact_counts(leaf, branch, sample, 300, leaf_errors=100))
    assert timed[1] == timed[2]
