"""Programs kept as regular tests by tests/test_fuzz.py: every program a fuzz run shrank
to a difference, and a few written by hand for shapes that matter to the splice (their
notes say so). Each runs plain and instrumented, exactly as a generated program does.

A failing fuzz test (or tools/fuzz_campaign.py) prints the entry to add here.
"""

from __future__ import annotations

import re
from textwrap import dedent
from typing import NamedTuple, Tuple


class Regression(NamedTuple):
    note: str
    source: str
    calls: Tuple[Tuple[str, str], ...]  # (top-level function, argument tuple as a literal)
    # CPython versions where the difference is a known, open fastpatch bug: the test is a
    # strict xfail there, so it fails again (and the mark must go) once the bug is fixed.
    open_bug_on: Tuple[Tuple[int, int], ...] = ()

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.note.lower()).strip("-")[:60]


_PRELUDE = "x = 1\ny = [1, 2]\n"  # fuzz_harness.PRELUDE, which generated programs start with

REGRESSIONS = [
    Regression(
        note="hand-written: generator closed in a finally that catches an exception of its own",
        source=_PRELUDE
        + dedent(
            """\
            def f(a=0, b=1):
                try:
                    for c in range(a):
                        yield c
                finally:
                    try:
                        raise KeyError(a)
                    except KeyError:
                        print('caught')
            """
        ),
        calls=(("f", "(30, 2)"), ("f", "(1, 2)")),
    ),
    Regression(
        note="hand-written: closures, recursion and an exception raised from another",
        source=_PRELUDE
        + dedent(
            """\
            def f(a=0, b=1):
                def inner(c):
                    return a + c
                if a:
                    return f(a - 1, inner(b))
                try:
                    b / a
                except ZeroDivisionError as e:
                    raise ValueError(b) from e
            """
        ),
        calls=(("f", "(2, 1)"), ("f", "(0, 0)")),
    ),
    Regression(
        note="hand-written: a coroutine awaiting another, and an async generator",
        source=_PRELUDE
        + dedent(
            """\
            async def f(a=0, b=1):
                async def inner(c):
                    return [c, a]
                return await inner(b)
            async def g(a=0, b=1):
                for c in range(a):
                    yield c
                print(await f(a, b))
            """
        ),
        calls=(("f", "(1, 2)"), ("g", "(3, 'ab')")),
    ),
    Regression(
        note="hand-written: yield from a generator that returns inside try/finally in a loop",
        source=_PRELUDE
        + dedent(
            """\
            def g(a=0, b=1):
                for c in range(a):
                    try:
                        if c == b:
                            return c
                        yield c
                    finally:
                        print(c)
                return locals()
            def f(a=0, b=1):
                r = yield from g(a, b)
                yield r
            """
        ),
        calls=(("f", "(3, 1)"), ("f", "(30, -1)"), ("g", "(2, 5)")),
    ),
    Regression(
        note="hand-written: StopIteration ends a function normally, and a generator by an error",
        # README, Timing semantics: the end of an iteration, unless CPython turns it
        # into RuntimeError as it leaves a generator (PEP 479).
        source=_PRELUDE
        + dedent(
            """\
            def f(a=0, b=1):
                if a:
                    raise StopIteration(a)
                return next(iter(y[:b]))
            def g(a=0, b=1):
                yield a
                f(b, a)
            """
        ),
        calls=(("f", "(0, 0)"), ("f", "(0, 1)"), ("f", "(1, 1)"), ("g", "(0, 1)"), ("g", "(1, 0)")),
    ),
    Regression(
        note="fuzz 3.10: settrace sees line 1 twice in an async def whose body is a docstring",
        source=_PRELUDE + "async def f(a=0, b=1):\n    ''\n",
        calls=(("f", "(0, 0)"),),
    ),
    Regression(
        note="fuzz 3.15: a generator expression over a failing iterable, caught, in a generator",
        # 3.15 sends settrace a 'return' for f when the genexpr's iter() fails, then goes
        # on in f: the harness' ground truth must not count that as f ending by an error.
        source=_PRELUDE
        + dedent(
            """\
            def f(a=0, b=1):
                try:
                    (a for a in (yield))
                except Exception:
                    pass
            """
        ),
        calls=(("f", "(0, 0)"),),
    ),
]
