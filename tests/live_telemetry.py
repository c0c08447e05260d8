"""What the tests of live telemetry share: the child processes' instrumented
functions, calling them, and polling for what another process publishes."""

from __future__ import annotations

import inspect


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
