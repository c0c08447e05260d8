"""Reference and memory-block leaks, on Py_DEBUG builds (python3.14d, python3.15d).

A debug build counts every reference (``sys.gettotalrefcount``) and every
allocated memory block (``sys.getallocatedblocks``). One cycle here takes
fastpatch through everything that owns references: instrument, the return,
raise, generator close and coroutine paths of the probes, uninstrument and
reset, on definitions that stay alive and on fresh ones that die (their
probes are freed). A leak of one reference on any of those paths grows the
totals by at least one per cycle; the test runs rounds of cycles and
requires the last rounds to grow them by (almost) nothing.
"""

from __future__ import annotations

import gc
import sys

import pytest

import fastpatch
from kinds import run_coroutine

pytestmark = pytest.mark.skipif(
    not hasattr(sys, "gettotalrefcount"), reason="needs a Py_DEBUG build of CPython (sys.gettotalrefcount)"
)

ROUNDS = 5
CYCLES = 300
#: What one round may grow by without a leak: interpreter caches that fill
#: lazily (type caches, interned strings, free lists) are far below one per cycle.
SLACK = CYCLES // 10

_SOURCE = """
def plain(x):
    return x + 1

def raising(x):
    raise KeyError(x)

def gen(n):
    for i in range(n):
        yield i

async def coro(x):
    return x * 2
"""


def _fresh_definitions():
    namespace: dict = {}
    exec(compile(_SOURCE, "<leak-test>", "exec"), namespace)
    return namespace["plain"], namespace["raising"], namespace["gen"], namespace["coro"]


_kept = _fresh_definitions()


def _cycle(functions, sample=None) -> None:
    plain, raising, gen, coro = functions
    for f in functions:
        fastpatch.instrument(f, sample=sample)
    assert plain(1) == 2
    try:
        raising(3)
    except KeyError:
        pass
    g = gen(5)
    assert next(g) == 0
    g.close()
    assert list(gen(3)) == [0, 1, 2]
    assert run_coroutine(coro(21)) == 42
    assert fastpatch.stats(raising).errors >= 1
    for f in functions:
        fastpatch.uninstrument(f)
    fastpatch.reset()


def _totals():
    gc.collect()
    return sys.gettotalrefcount(), sys.getallocatedblocks()


def _growth_per_round(make_functions, sample=None):
    for _ in range(CYCLES):  # warm up caches and free lists
        _cycle(make_functions(), sample)
    growth = []
    refs, blocks = _totals()
    for _ in range(ROUNDS):
        for _ in range(CYCLES):
            _cycle(make_functions(), sample)
        now_refs, now_blocks = _totals()
        growth.append((now_refs - refs, now_blocks - blocks))
        refs, blocks = now_refs, now_blocks
    return growth


# sample=2 takes both the timed and the untimed halves of the probes; 0 only the untimed ones.
@pytest.mark.parametrize("sample", [None, 2, 0], ids=["exact", "sampled", "count-only"])
@pytest.mark.parametrize(
    "definitions", ["kept", "fresh"], ids=["same definitions each cycle", "fresh definitions each cycle"]
)
def test_instrument_call_uninstrument_reset_leaks_no_reference_and_no_block(definitions, sample):
    make = (lambda: _kept) if definitions == "kept" else _fresh_definitions
    growth = _growth_per_round(make, sample)
    # Each round is CYCLES cycles; a leak on any path adds >= CYCLES a round.
    last = growth[-2:]
    assert all(refs <= SLACK for refs, _ in last), f"references grew per round of {CYCLES} cycles: {growth}"
    assert all(blocks <= SLACK for _, blocks in last), f"memory blocks grew per round of {CYCLES} cycles: {growth}"
