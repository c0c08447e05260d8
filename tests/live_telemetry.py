"""What the tests of live telemetry share: the child processes' instrumented
functions, calling them, and polling for what another process publishes."""

from __future__ import annotations

#: The start of a child process's program: ``f`` returns, ``g`` raises unless given 0.
CHILD_PROLOGUE = '''
import os, sys
import fastpatch, fastpatch.export
from fastpatch import _ext

def f(x):
    return x + 1

def g(x):
    if x:
        raise ValueError(x)
'''
