"""Functions for the debugger-jump matrix of test_debuggers.py: each case is
(name, make, drive), ``make()`` a fresh function and ``drive(f)`` what a caller
observes, as a JSON-able ("return", value) or ("raise", exception name)."""

from __future__ import annotations

import sys

PY = sys.version_info[:2]


def _straight():
    def f(x):
        a = x + 1
        b = a * 2
        c = b - 3
        return c

    return f


def _multiline_return():
    def f(x):
        y = x
        return (
            y
        )

    return f


def _subscript_return():
    def f(x):
        a = [x, 2]
        return a[0]

    return f


def _implicit_none():
    def f(x):
        a = x
        b = a  # noqa: F841

    return f


def _loop():
    def f(n):
        total = 0
        for i in range(n):
            total += i
            if i > 5:
                break
        while total > 100:
            total -= 1
        return total

    return f


def _first_is_try():
    def f(x):
        try:
            y = 1 / x
        except ZeroDivisionError:
            y = 0
        return y

    return f


def _with_block():
    import contextlib

    def f(x):
        with contextlib.suppress(KeyError):
            y = x + 1
        return y

    return f


def _closure():
    k = 10

    def f(x):
        a = x + k
        b = a * 2
        return b

    return f


def _generator():
    def f(n):
        a = n
        yield a
        b = a + 1
        yield b

    return f


def _coroutine():
    async def f(n):
        a = n
        b = a + 1
        return b

    return f


def _call(f):
    try:
        return ["return", f(3)]
    except Exception as exc:  # noqa: BLE001 - what a caller observes
        return ["raise", type(exc).__name__]


def _drain(f):
    try:
        return ["return", list(f(3))]
    except Exception as exc:  # noqa: BLE001
        return ["raise", type(exc).__name__]


def _await(f):
    coro = f(3)
    try:
        coro.send(None)
    except StopIteration as stop:
        return ["return", stop.value]
    except Exception as exc:  # noqa: BLE001
        return ["raise", type(exc).__name__]
    coro.close()
    return ["return", "suspended"]


CASES = [
    ("straight", _straight, _call),
    ("multiline_return", _multiline_return, _call),
    ("subscript_return", _subscript_return, _call),
    ("implicit_none", _implicit_none, _call),
    ("loop", _loop, _call),
    ("first_is_try", _first_is_try, _call),
    ("with_block", _with_block, _call),
    ("closure", _closure, _call),
    ("generator", _generator, _drain),
    ("coroutine", _coroutine, _await),
]


def lines(code):
    """Every line of the function, from its def line to its last."""
    if PY < (3, 10):
        return range(code.co_firstlineno, code.co_firstlineno + 13)
    last = max(line for _s, _e, line in code.co_lines() if line is not None)
    return range(code.co_firstlineno, last + 1)


def plain_crashes(make, target):
    """A jump CPython 3.13+ itself crashes on: to the def line of a generator
    or coroutine, which lands on RETURN_GENERATOR (CPython issue gh-140802)."""
    code = make().__code__
    return PY >= (3, 13) and bool(code.co_flags & 0x2A0) and target == code.co_firstlineno


def known_difference(instrumented, plain):
    """Differences fastpatch makes on purpose, where plain CPython misbehaves:

    * 3.9/3.10 accept a jump into the middle of a multi-line expression and
      then run with a value missing from the stack (a SystemError, or a
      wrong result); fastpatch's guard refuses it;
    A jump to a generator's def line, which 3.11/3.12 refuse ("incompatible
    stacks"), is refused by the guard too with the same outcome, so it needs
    no entry here; 3.13+ crash on it without fastpatch (``plain_crashes``).
    """
    if instrumented["jump"] == "refused" and plain[0] == "jumped" and PY < (3, 11):
        return plain[1][0] == "raise" and plain[1][1] == "SystemError" or instrumented["case"] == "multiline_return"
    return False
