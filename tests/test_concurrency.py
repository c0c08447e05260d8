"""Exact counts and separate start times under threads, interleaved coroutines and greenlets."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

import fastpatch
from fastpatch import RELATIVE_ERROR

PAUSE_S = 0.05
PAUSE_NS = int(PAUSE_S * 1e9)


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
