"""Resolving what the user passed to the Python function whose code gets patched."""

from __future__ import annotations

from types import FunctionType, MethodType
from typing import Any

ACCEPTED = "a Python function (def, lambda, generator, coroutine), a bound method, a staticmethod or a classmethod"


def resolve_function(target: Any) -> FunctionType:
    """The function object behind ``target``, or TypeError naming what was passed."""
    if isinstance(target, FunctionType):
        return target
    inner = None
    if isinstance(target, MethodType):
        inner = target.__func__
    elif isinstance(target, (staticmethod, classmethod)):
        inner = target.__func__
    if isinstance(inner, FunctionType):
        return inner
    kind = type(target)
    what = f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__
    if inner is not None:
        what = f"{what} wrapping {type(inner).__qualname__}"
    raise TypeError(f"fastpatch cannot instrument {what} objects ({target!r:.80}); expected {ACCEPTED}")


def default_name(func: FunctionType) -> str:
    module = func.__module__ or "?"
    return f"{module}.{func.__qualname__}"
