"""Patching and restoring ``__code__``, and the registry of what is instrumented.

Stats belong to a *definition*, that is the original code object, as in
cProfile: every function made from one definition shares one probe and one
patched code object. The registry lives here, in maps that never keep a
definition alive on their own:

* ``_by_original``: id(original code) -> _Definition, dropped by a weakref
  callback when the original code object dies;
* ``_by_patched``: id(patched code) -> the same _Definition (the definition
  holds the patched code, so the id stays valid while the entry exists);
* ``_by_probe``: id(probe) -> the same _Definition, so that code another
  tool rewrote after us is still recognised by the probe it carries;
* ``_keepalive``: function -> original code, weak on the function. While a
  function runs patched code, nothing else may hold its original, and
  uninstrument must be able to put it back.

Nothing is stored on the function's ``__dict__``.
"""

from __future__ import annotations

import threading
import weakref
from types import CodeType, FunctionType
from typing import Any, Dict, List, Optional

from . import _ext
from ._resolve import default_name, resolve_function
from ._splice import SpliceError, splice
from ._stats import Stats, snapshot


class _Definition:
    __slots__ = ("original_ref", "original_id", "patched", "probe", "name", "__weakref__")

    def __init__(self, original: CodeType, patched: CodeType, probe: Any, name: str) -> None:
        self.original_ref = weakref.ref(original, self._forget)
        self.original_id = id(original)
        self.patched = patched
        self.probe = probe
        self.name = name

    def _register(self) -> None:
        _by_original[self.original_id] = self
        _by_patched[id(self.patched)] = self
        _by_probe[id(self.probe)] = self

    def _forget(self, _ref: weakref.ref[CodeType]) -> None:
        with _lock:
            for table, key in (
                (_by_original, self.original_id),
                (_by_patched, id(self.patched)),
                (_by_probe, id(self.probe)),
            ):
                if table.get(key) is self:
                    del table[key]


_lock = threading.RLock()
_by_original: Dict[int, _Definition] = {}
_by_patched: Dict[int, _Definition] = {}
_by_probe: Dict[int, _Definition] = {}
_keepalive: weakref.WeakKeyDictionary[FunctionType, CodeType] = weakref.WeakKeyDictionary()


def _running_definition(code: CodeType) -> Optional[_Definition]:
    """The definition whose probe ``code`` runs: our patched code, or a
    rewrite of it by a tool layered after us that kept our constant."""
    d = _by_patched.get(id(code))
    if d is not None and d.patched is code:
        return d
    for const in reversed(code.co_consts):
        if type(const) is _ext.Probe:
            d = _by_probe.get(id(const))
            if d is not None and d.probe is const:
                return d
    return None


def _original_definition(code: CodeType) -> Optional[_Definition]:
    """The definition whose original code is ``code``, if any."""
    d = _by_original.get(id(code))
    return d if d is not None and d.original_ref() is code else None


def _definition_of(code: CodeType) -> Optional[_Definition]:
    """The definition ``code`` belongs to, original or running a probe."""
    return _original_definition(code) or _running_definition(code)


def instrument(target: Any, *, name: Optional[str] = None) -> Any:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"instrument() name must be a str or None, not {type(name).__name__}")
    func = resolve_function(target)
    with _lock:
        code = func.__code__
        d = _original_definition(code)
        if d is None:
            running = _running_definition(code)
            if running is not None:  # already instrumented
                if name is not None:
                    running.name = name
                return target
            probe = _ext.Probe()
            try:
                patched = splice(code, probe)
            except SpliceError as exc:
                raise ValueError(f"fastpatch cannot instrument {default_name(func)}: {exc}") from None
            d = _Definition(code, patched, probe, name or default_name(func))
            d._register()
        elif name is not None:
            d.name = name
        _ext.set_code(func, d.patched)
        _keepalive[func] = code
    return target


def uninstrument(target: Any) -> Any:
    func = resolve_function(target)
    with _lock:
        code = func.__code__
        d = _running_definition(code)
        if d is None:
            return target
        if d.patched is not code:
            raise RuntimeError(
                f"{default_name(func)}.__code__ was rewritten by another tool after fastpatch "
                "instrumented it; fastpatch cannot take its probes out of that code. "
                "Undo that tool's patch first."
            )
        original = d.original_ref()
        if original is None:  # only if patched code was copied onto a function we never saw
            raise RuntimeError(f"the original code of {default_name(func)} no longer exists")
        _ext.set_code(func, original)
        _keepalive.pop(func, None)
    return target


def is_instrumented(target: Any) -> bool:
    return _running_definition(resolve_function(target).__code__) is not None


def _require_definition(target: Any) -> _Definition:
    func = resolve_function(target)
    d = _definition_of(func.__code__)
    if d is None:
        raise ValueError(f"{default_name(func)} was never instrumented")
    return d


def stats(target: Any) -> Stats:
    d = _require_definition(target)
    return snapshot(d.name, d.probe)


def all_stats() -> List[Stats]:
    with _lock:
        defs = list(_by_original.values())
    return [snapshot(d.name, d.probe) for d in defs]


def reset(target: Any = None) -> None:
    if target is None:
        with _lock:
            defs = list(_by_original.values())
        for d in defs:
            d.probe.reset()
    else:
        _require_definition(target).probe.reset()
