"""Resolving what the user passed to the Python function whose code gets patched."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FunctionType as FunctionType
    from types import MethodType as MethodType
    from typing import Any
else:
    # The types module would be one more import at startup; these are the same objects.
    def _function():
        pass

    class _Method:
        def method(self):
            pass

    FunctionType = type(_function)
    MethodType = type(_Method().method)

ACCEPTED = "a Python function (def, lambda, generator, coroutine), a bound method, a staticmethod or a classmethod"


def resolve_function(target: Any) -> FunctionType:
    """The function object behind ``target``, or TypeError naming what was passed.

    Types are checked exactly, not with isinstance(): object proxies such as
    wrapt's report the wrapped object's ``__class__`` but are not functions.
    """
    kind = type(target)
    if kind is FunctionType:
        return target  # type: ignore[no-any-return, unused-ignore]
    inner = None
    if kind is MethodType or issubclass(kind, (staticmethod, classmethod)):
        inner = target.__func__
    if type(inner) is FunctionType:
        return inner  # type: ignore[return-value, unused-ignore]
    what = f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__
    if inner is not None:
        what = f"{what} wrapping {type(inner).__qualname__}"
    raise TypeError(f"fastpatch cannot instrument {what} objects ({target!r:.80}); expected {ACCEPTED}")
