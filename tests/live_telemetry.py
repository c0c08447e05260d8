"""What the tests of live telemetry share: the child processes' instrumented
functions, calling them, and polling for what another process publishes."""

from __future__ import annotations

import inspect
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def call_range(func, n: int) -> None:
    """``func(0)`` ... ``func(n - 1)``, each ValueError they raise caught: with
    the children's ``g``, ``n`` calls of which ``n - 1`` fail."""
    for i in range(n):
        try:
            func(i)
        except ValueError:
            pass


#: The start of a child process's program: ``f`` returns, ``g`` raises unless
#: given 0, and ``call_range`` is the one above (its source, so that it is
#: written once; a child evaluates its annotations, hence builtins only).
CHILD_PROLOGUE = '''
import os, sys
import fastpatch, fastpatch.export
from fastpatch import _ext

def f(x):
    return x + 1

def g(x):
    if x:
        raise ValueError(x)

''' + inspect.getsource(call_range)


def wait_until(condition: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """The first true value of ``condition()``, polled until ``timeout``
    seconds have passed; then an AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a file another process writes: there is nothing to wait on
