"""Patching and restoring ``__code__``: ``instrument``, ``uninstrument``,
``is_instrumented``, and reading or zeroing a definition's counters.

A function is patched by setting its ``__code__`` to its definition's
spliced code (``_splice``), which the registry (``_registry``) keeps, and
restored by setting it back to the exact original code object.
"""

from __future__ import annotations

from . import _registry
from ._errors import SpliceError
from ._native import ext, install_jump_guard
from ._registry import (
    Definition,
    Origin,
    alive,
    definition_of,
    definitions,
    kept,
    original_definition,
    our_constants,
    register_origin,
    running_definition,
)
from ._resolve import resolve_function
from ._sampling import check_sample
from ._splice import splice

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time: `import fastpatch` must stay cheap
    from types import CodeType
    from typing import Any, List, Optional, Tuple

    from ._stats import Stats


def _same_splice(a: CodeType, b: CodeType) -> bool:
    """Whether ``a`` and ``b`` are the same splice of equal originals, one a
    copy of the other. (Code equality compares constants of other types by
    identity, and each copy carries its own Origin.)"""
    probe_a, origin_a = our_constants(a)
    probe_b, origin_b = our_constants(b)
    if probe_a is not probe_b or origin_a is None or origin_b is None or origin_a.code != origin_b.code:
        return False

    def without_origin(code: CodeType) -> CodeType:
        return code.replace(co_consts=tuple(c for c in code.co_consts if type(c) is not Origin))

    return bool(without_origin(a) == without_origin(b))


def _check_name(name: Optional[str]) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"instrument() name must be a str or None, not {type(name).__name__}")
    if not name.strip():
        raise ValueError("instrument() name must be a non-empty string, or None for module.qualname")


def set_sample(d: Definition, sample: Optional[int]) -> None:
    """Time definition ``d`` at rate ``sample`` (checked by ``check_sample``)
    from its next activation on; None leaves its rate as it is. Activations
    already running or suspended keep the rate they started with, and its
    counters carry on: sampled estimates add up with exact sums."""
    if sample is not None:
        d.probe.set_sample(sample)


def _patched_code(d: Definition, original: CodeType) -> CodeType:
    """The definition's patched code, spliced again if nothing kept it."""
    patched = d.patched()
    if patched is None:
        patched = splice(original, d.probe, (Origin(original, d.probe, d.module, d.qualname),))
        d.set_patched(patched)
    return patched


def _new_definition(code: CodeType, module: str, qualname: str, name: Optional[str]) -> Tuple[Definition, CodeType]:
    """Register a definition for ``code`` and splice it; nothing is registered if splicing fails."""
    origin = Origin(code, ext.Probe(), module, qualname)
    try:
        patched = splice(code, origin.probe, (origin,))
    except SpliceError as exc:
        raise ValueError(f"fastpatch cannot instrument {module}.{qualname}: {exc}") from None
    return register_origin(origin, patched, name), patched


def _refuse_foreign_probe(code: CodeType, what: str) -> None:
    probe, _origin = our_constants(code)
    if probe is not None:
        raise ValueError(
            f"{what} runs code that carries a fastpatch probe this registry does not know; "
            "fastpatch never splices such code a second time"
        )


def instrument(target: Any, *, name: Optional[str] = None, sample: Optional[int] = None) -> Any:
    """Time every call of ``target`` by patching its code object in place.

    ``target`` is a Python function (def, lambda, nested, generator,
    coroutine, async generator), a bound method (its ``__func__``) or a
    staticmethod/classmethod; anything else raises TypeError and nothing
    changes. Returns ``target``, so it works as a decorator. Instrumenting
    again does nothing but rename (``name``) and set the rate (``sample``);
    every function made from the same definition shares one entry, named
    ``module.qualname`` by default.

    ``sample`` is the sampling rate: 1 times every call (exact timing, what
    a new definition gets when it is None); N >= 2 counts every call and
    times one in N, chosen at random, so that totals, means and percentiles
    are estimates (``Stats.sampled``); 0 counts calls and times none. None
    leaves an instrumented definition's rate as it is. A new rate applies
    from the next call, with no new patching.
    """
    _check_name(name)
    check_sample(sample)
    func = resolve_function(target)
    with _registry.lock:
        install_jump_guard()
        code = func.__code__
        d = original_definition(code)
        if d is None:
            running = running_definition(code)
            if running is not None:  # already instrumented
                if name is not None:
                    running.name = name
                set_sample(running, sample)
                return target
            _refuse_foreign_probe(code, f"{func.__module__}.{func.__qualname__}")
            d, patched = _new_definition(code, func.__module__ or "?", func.__qualname__, name)
        else:
            if name is not None:
                d.name = name
            current = d.patched() or kept(func)
            if current is None:
                patched = _patched_code(d, code)
            else:
                patched = current
                if d.patched() is None:
                    d.set_patched(patched)
        set_sample(d, sample)
        ext.set_code(func, patched)
        _registry.release(func)
    return target


def uninstrument(target: Any) -> Any:
    """Put back the exact original code object of ``target``.

    Activations running or suspended at that moment finish normally and are
    recorded. Stats are kept: instrumenting again carries on counting.
    Does nothing if ``target`` is not instrumented.
    """
    func = resolve_function(target)
    with _registry.lock:
        code = func.__code__
        d = running_definition(code)
        if d is None:
            return target
        _probe, origin = our_constants(code)
        original = d.original()
        # Our own patched code, or a copy of it (unpickled here); not another
        # tool's rewrite of it, whose changes restoring would drop.
        patched = d.patched() or (_patched_code(d, original) if original is not None else None)
        if origin is None or patched is None or not (patched is code or _same_splice(patched, code)):
            raise RuntimeError(
                f"{func.__module__}.{func.__qualname__}.__code__ was rewritten by another tool after fastpatch "
                "instrumented it; fastpatch cannot take its probes out of that code. "
                "Undo that tool's patch first."
            )
        ext.set_code(func, origin.code)
        _registry.keep(func, code)
    return target


def is_instrumented(target: Any) -> bool:
    """Whether calls of ``target`` are being timed (its code runs a fastpatch probe)."""
    return running_definition(resolve_function(target).__code__) is not None


def _require_definition(target: Any) -> Definition:
    func = resolve_function(target)
    d = definition_of(func.__code__)
    if d is None:
        raise ValueError(f"{func.__module__}.{func.__qualname__} was never instrumented")
    return d


def stats(target: Any) -> Stats:
    """An immutable snapshot of the counters of ``target``'s definition.

    ValueError if it was never instrumented.
    """
    return _require_definition(target).stats()


def all_stats() -> List[Stats]:
    """Snapshots of every instrumented definition still alive."""
    return [d.stats() for d, _original in alive(definitions())]


def reset(target: Any = None) -> None:
    """Zero the counters of ``target``'s definition, or of every definition.

    Activations running or suspended at that moment stay counted as started
    and are recorded when they end, so ``completed`` never exceeds ``calls``.
    """
    if target is None:
        for d in definitions():
            d.probe.reset()
    else:
        _require_definition(target).probe.reset()
