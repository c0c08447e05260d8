"""Patching and restoring ``__code__``, and the registry of what is instrumented.

Stats belong to a *definition*, that is the original code object, as in
cProfile: every function made from one definition shares one probe and one
patched code object.

Lifetimes, without reference cycles and without anything on the function's
``__dict__``:

* patched code carries, after its probe, an ``Origin`` constant that holds
  the original code. So the original lives at least as long as any code
  that runs the probe: a function instrumented and then dropped, a copy made
  with ``types.FunctionType(f.__code__, ...)``, closures an import-hooked
  module creates later, code unpickled from another process.
* a ``_Definition`` holds the probe (the counters) strongly and both code
  objects weakly. The registry maps drop it when the original dies, which
  is when no function, no enclosing code and no patched code holds it.
  Stats therefore survive ``uninstrument``/``instrument``.
* ``_keepalive`` (weak on the function) keeps the patched code of a function
  that was uninstrumented, so instrumenting it again is a dictionary lookup.

Maps, all under ``_lock`` (which ``os.register_at_fork`` keeps usable in a
forked child):

* ``_by_original``: id(original code) -> _Definition;
* ``_by_patched``: id(patched code) -> _Definition, checked against the
  definition's weak reference, since ids of dead code objects are reused;
* ``_by_probe``: id(probe) -> _Definition, so that code another tool
  rewrote after us, or a copy of our code unpickled here, is recognised by
  the probe it carries;
* ``_by_fingerprint``: hash of the original code -> definitions, so that a
  function unpickled again and again in one process (a worker of joblib,
  Dask or multiprocessing) keeps one definition: the same name and an equal
  original code.
"""

from __future__ import annotations

import _thread
import _weakref
import os

from . import _ext
from ._resolve import CodeType, resolve_function
from ._splice import SpliceError, c_splicer_in_use, splice

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing, threading or weakref at run time: `import fastpatch` must stay cheap
    import weakref
    from types import FunctionType
    from typing import Any, Dict, List, Optional, Tuple

    from ._stats import Stats

# The constant that spliced code carries after its probe (see _ext.c): the
# original code, the probe, the module and the qualified name. A C type,
# immutable and outside the garbage collector's generations: the import hook
# makes one per function of every module it splices.
Origin = _ext.Origin


_lock = _thread.RLock()
_by_original: Dict[int, _Definition] = {}
_by_patched: Dict[int, _Definition] = {}
_by_probe: Dict[int, _Definition] = {}
_by_fingerprint: Dict[int, List[weakref.ref[_Definition]]] = {}
# Definitions the import hook spliced and nothing has asked about yet are
# in _ext's lazy table: their Origins by original code, held weakly
# (_ext.lazy_add, lazy_get, lazy_origins, called_origins; see _ext.c).
# id(function) -> (weak reference to it, the patched code it ran before uninstrument)
_keepalive: Dict[int, Tuple[weakref.ref[FunctionType], CodeType]] = {}


class _Definition:
    __slots__ = (
        "original_ref", "original_id", "patched_ref", "patched_id", "probe", "name", "module", "qualname",
        "__weakref__",
    )

    def __init__(self, origin: Origin, name: Optional[str] = None) -> None:
        self.original_ref = _weakref.ref(origin.code, self._forget)
        self.original_id = id(origin.code)
        self.patched_ref: Optional[weakref.ref[CodeType]] = None
        self.patched_id = 0
        self.probe = origin.probe
        self.module = origin.module
        self.qualname = origin.qualname
        self.name = name or f"{origin.module}.{origin.qualname}"

    def original(self) -> Optional[CodeType]:
        return self.original_ref()

    def patched(self) -> Optional[CodeType]:
        return None if self.patched_ref is None else self.patched_ref()

    def set_patched(self, code: CodeType) -> None:
        self.patched_ref = _weakref.ref(code, self._patched_died)
        self.patched_id = id(code)
        _by_patched[id(code)] = self

    def register(self) -> None:
        _by_original[self.original_id] = self
        _by_probe[id(self.probe)] = self

    def fingerprint(self) -> None:
        """Let a copy of this definition unpickled here find it (_revive_probe)."""
        original = self.original()
        if original is not None:
            refs = _by_fingerprint.setdefault(hash(original), [])
            if not any(r() is self for r in refs):
                refs[:] = [r for r in refs if r() is not None]
                refs.append(_weakref.ref(self))

    # Weak reference callbacks run inside a deallocation (before the dead
    # object's id can be reused), with the GIL, possibly while the module is
    # torn down at exit: no lock, and the maps bound at definition time.
    def _patched_died(self, ref: weakref.ref[CodeType], by_patched: Dict[int, _Definition] = _by_patched) -> None:
        if self.patched_ref is ref and by_patched.get(self.patched_id) is self:
            del by_patched[self.patched_id]

    def _forget(
        self,
        _ref: weakref.ref[CodeType],
        maps: Tuple[Dict[int, _Definition], ...] = (_by_original, _by_probe, _by_patched),
    ) -> None:
        for table, key in zip(maps, (self.original_id, id(self.probe), self.patched_id)):
            if table.get(key) is self:
                del table[key]

    def stats(self) -> Stats:
        from ._stats import snapshot

        original = self.original()
        return snapshot(
            self.name, self.probe, module=self.module, qualname=self.qualname,
            filename=original.co_filename if original is not None else "",
            firstlineno=original.co_firstlineno if original is not None else 0,
        )


def _register_origin(origin: Origin, patched: Optional[CodeType], name: Optional[str] = None) -> _Definition:
    """The definition of ``origin``, registered now."""
    d = _Definition(origin, name)
    d.register()
    if patched is not None:
        d.set_patched(patched)
    _ext.lazy_discard(origin)
    return d


def _register_lazy() -> None:
    """Register every definition the import hook spliced, that still lives."""
    for origin in _ext.lazy_origins():
        if _by_probe.get(id(origin.probe)) is None:
            _register_origin(origin, None)
    _ext.lazy_clear()


def _keep(func: FunctionType, patched: CodeType) -> None:
    key = id(func)

    def forget(_ref: object, key: int = key, kept: Dict[int, Any] = _keepalive) -> None:
        kept.pop(key, None)

    _keepalive[key] = (_weakref.ref(func, forget), patched)


def _kept(func: FunctionType) -> Optional[CodeType]:
    entry = _keepalive.get(id(func))
    return entry[1] if entry is not None and entry[0]() is func else None


def _our_constants(code: CodeType) -> Tuple[Any, Optional[Origin]]:
    """The probe and origin constants ``code`` carries, if any (they are
    appended last by the splicer, but another tool may have moved them)."""
    consts = code.co_consts
    if len(consts) >= 2 and type(consts[-2]) is _ext.Probe and type(consts[-1]) is Origin:
        return consts[-2], consts[-1]
    probe = origin = None
    for const in consts:
        if type(const) is _ext.Probe:
            probe = const
        elif type(const) is Origin:
            origin = const
    return probe, origin


def _running_definition(code: CodeType) -> Optional[_Definition]:
    """The definition whose probe ``code`` runs: our patched code, a copy of
    it unpickled here, or a rewrite of it by a tool layered after us."""
    d = _by_patched.get(id(code))
    if d is not None and d.patched() is code:
        return d
    probe, origin = _our_constants(code)
    if probe is None:
        return None
    d = _by_probe.get(id(probe))
    if d is None or d.probe is not probe:
        if origin is None or origin.probe is not probe:
            return None
        with _lock:  # spliced by the import hook, and asked about for the first time
            d = _by_probe.get(id(probe))
            if d is None:
                return _register_origin(origin, code)
    if d.patched_ref is None:  # a definition unpickled or spliced in bulk here: its first code is it
        d.set_patched(code)
    return d


def _original_definition(code: CodeType) -> Optional[_Definition]:
    """The definition whose original code is ``code``, if any."""
    d = _by_original.get(id(code))
    if d is not None and d.original() is code:
        return d
    origin = _ext.lazy_get(code)
    if origin is not None and origin.code is code:
        with _lock:
            d = _by_probe.get(id(origin.probe))
            return d if d is not None else _register_origin(origin, None)
    return None


def _definition_of(code: CodeType) -> Optional[_Definition]:
    """The definition ``code`` belongs to, original or running a probe."""
    return _original_definition(code) or _running_definition(code)


def _same_splice(a: CodeType, b: CodeType) -> bool:
    """Whether ``a`` and ``b`` are the same splice of equal originals, one a
    copy of the other. (Code equality compares constants of other types by
    identity, and each copy carries its own Origin.)"""
    probe_a, origin_a = _our_constants(a)
    probe_b, origin_b = _our_constants(b)
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


def check_sample(sample: object, what: str = "sample") -> Optional[int]:
    """``sample`` if it is None or a sampling rate (1 exact, N >= 2 one call
    in N timed, 0 count-only); else TypeError or ValueError, one line that
    names ``what`` (``"sample"``, ``"--sample"``, ``"FASTPATCH_SAMPLE"``)."""
    if sample is None:
        return None
    if isinstance(sample, bool) or not isinstance(sample, int):
        raise TypeError(f"{what} must be an int (1 exact, N >= 2 one call in N, 0 count only), "
                        f"not {type(sample).__name__}")
    if not 0 <= sample <= _ext.MAX_SAMPLE:
        raise ValueError(f"{what} must be 1 (exact timing), N from 2 to {_ext.MAX_SAMPLE} (time one call in N) "
                         f"or 0 (count only), not {sample!r}")
    return sample


def set_sample(d: _Definition, sample: Optional[int]) -> None:
    """Time definition ``d`` at rate ``sample`` (checked by ``check_sample``)
    from its next activation on; None leaves its rate as it is. Activations
    already running or suspended keep the rate they started with, and its
    counters carry on: sampled estimates add up with exact sums."""
    if sample is not None:
        d.probe.set_sample(sample)


def _patched_code(d: _Definition, original: CodeType) -> CodeType:
    """The definition's patched code, spliced again if nothing kept it."""
    patched = d.patched()
    if patched is None:
        patched = splice(original, d.probe, (Origin(original, d.probe, d.module, d.qualname),))
        d.set_patched(patched)
    return patched


def _new_definition(code: CodeType, module: str, qualname: str, name: Optional[str]) -> Tuple[_Definition, CodeType]:
    """Register a definition for ``code`` and splice it; nothing is registered if splicing fails."""
    origin = Origin(code, _ext.Probe(), module, qualname)
    try:
        patched = splice(code, origin.probe, (origin,))
    except SpliceError as exc:
        raise ValueError(f"fastpatch cannot instrument {module}.{qualname}: {exc}") from None
    return _register_origin(origin, patched, name), patched


def _refuse_foreign_probe(code: CodeType, what: str) -> None:
    probe, _origin = _our_constants(code)
    if probe is not None:
        raise ValueError(
            f"{what} runs code that carries a fastpatch probe this registry does not know; "
            "fastpatch never splices such code a second time"
        )


_jump_guard_installed = False


def _install_jump_guard() -> None:
    """Guard debugger jumps in this interpreter (_jumps.c), once, when the
    first code is instrumented: in code that carries our probes, whose entry
    the running dialect describes."""
    global _jump_guard_installed
    if not _jump_guard_installed:
        from . import _jumps
        from ._recipes import running_dialect

        _jumps.install(_ext.Probe, running_dialect())
        _jump_guard_installed = True


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
    with _lock:
        _install_jump_guard()
        code = func.__code__
        d = _original_definition(code)
        if d is None:
            running = _running_definition(code)
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
            current = d.patched() or _kept(func)
            if current is None:
                patched = _patched_code(d, code)
            else:
                patched = current
                if d.patched() is None:
                    d.set_patched(patched)
        set_sample(d, sample)
        _ext.set_code(func, patched)
        _keepalive.pop(id(func), None)
    return target


def uninstrument(target: Any) -> Any:
    """Put back the exact original code object of ``target``.

    Activations running or suspended at that moment finish normally and are
    recorded. Stats are kept: instrumenting again carries on counting.
    Does nothing if ``target`` is not instrumented.
    """
    func = resolve_function(target)
    with _lock:
        code = func.__code__
        d = _running_definition(code)
        if d is None:
            return target
        _probe, origin = _our_constants(code)
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
        _ext.set_code(func, origin.code)
        _keep(func, code)
    return target


def is_instrumented(target: Any) -> bool:
    """Whether calls of ``target`` are being timed (its code runs a fastpatch probe)."""
    return _running_definition(resolve_function(target).__code__) is not None


def _require_definition(target: Any) -> _Definition:
    func = resolve_function(target)
    d = _definition_of(func.__code__)
    if d is None:
        raise ValueError(f"{func.__module__}.{func.__qualname__} was never instrumented")
    return d


def stats(target: Any) -> Stats:
    """An immutable snapshot of the counters of ``target``'s definition.

    ValueError if it was never instrumented.
    """
    return _require_definition(target).stats()


# Anything that reads the registry maps while Python code or allocation can
# run copies them first (list(...values())): a snapshot allocates, so the
# garbage collector can run and free a definition, whose weak reference
# callback (_forget) then deletes its entries from the maps.


def _definitions() -> List[_Definition]:
    with _lock:
        _register_lazy()
        return list(_by_original.values())


def _alive(definitions: List[_Definition]) -> List[Tuple[_Definition, CodeType]]:
    """The definitions whose original code still lives, each with it: held,
    it keeps them alive, and their stats whole, while they are read."""
    pairs = [(d, d.original()) for d in definitions]
    return [(d, original) for d, original in pairs if original is not None]


def all_stats() -> List[Stats]:
    """Snapshots of every instrumented definition still alive."""
    return [d.stats() for d, _original in _alive(_definitions())]


def called_stats() -> List[Stats]:
    """Snapshots of the definitions called at least once: what a report
    holds. Unlike ``all_stats()`` it registers none of the import hook's
    definitions (a whole program has thousands; it reads the called ones
    from their Origins), so writing a report at exit costs little."""
    from ._stats import snapshot

    with _lock:
        registered = _alive([d for d in list(_by_original.values()) if d.probe.calls])
        origins = _ext.called_origins()  # a new list, holding each Origin (and so its code)
        called = [d.stats() for d, _original in registered]
        for origin in origins:
            if _by_probe.get(id(origin.probe)) is None:  # read as its definition would be, left unregistered
                code = origin.code
                called.append(snapshot(
                    f"{origin.module}.{origin.qualname}", origin.probe, module=origin.module,
                    qualname=origin.qualname, filename=code.co_filename, firstlineno=code.co_firstlineno,
                ))
    return called


def has_definitions() -> bool:
    """Whether anything instrumented in this process is still alive."""
    with _lock:
        return bool(_by_original) or _ext.lazy_count() > 0


def reset(target: Any = None) -> None:
    """Zero the counters of ``target``'s definition, or of every definition.

    Activations running or suspended at that moment stay counted as started
    and are recorded when they end, so ``completed`` never exceeds ``calls``.
    """
    if target is None:
        for d in _definitions():
            d.probe.reset()
    else:
        _require_definition(target).probe.reset()


# --------------------------------------------------------------------------
# Whole modules: splice every function of a code object tree at once
# --------------------------------------------------------------------------

_CO_OPTIMIZED = 0x1  # functions, lambdas, comprehensions; not module or class bodies


class PatchedTree:
    """What ``patch_module_code`` did."""

    __slots__ = ("code", "instrumented", "skipped")

    def __init__(self, code: CodeType) -> None:
        self.code = code
        #: Qualified names of the functions now instrumented.
        self.instrumented: List[str] = []
        #: (qualified name, reason) of the functions left as they were.
        self.skipped: List[Tuple[str, str]] = []


def patch_module_code(code: CodeType, module: str, sample: int = 1) -> PatchedTree:
    """``code`` (a module body) with every function code object nested in it
    spliced, recursively, so that the functions and closures it creates run
    instrumented from their first call. The module body itself is not timed.

    Each function becomes a definition named ``module.qualname``, timed at
    rate ``sample`` (see ``instrument``); one the splicer cannot handle is
    left as it is and listed in ``skipped``.
    """
    tree = PatchedTree(code)
    with _lock:
        _install_jump_guard()
        c = c_splicer_in_use()
        # Every probe made here (by either splicer) gets the rate; the lock
        # keeps any other probe from being made meanwhile.
        previous = _ext.set_default_sample(sample)
        try:
            if c is not None:
                tree.code = c.patch_tree(code, module, _ext.Probe, _ext.lazy_origin, tree.instrumented, tree.skipped)
            else:
                tree.code = _patch_tree(code, module, "", tree)
        finally:
            _ext.set_default_sample(previous)
    return tree


_CODE_HAS_QUALNAME = hasattr(_install_jump_guard.__code__, "co_qualname")  # 3.11+


def _nested_qualname(parent: CodeType, parent_qualname: str, code: CodeType) -> str:
    if _CODE_HAS_QUALNAME:
        return code.co_qualname  # type: ignore[attr-defined, no-any-return, unused-ignore]
    # 3.9/3.10 code objects do not carry it: build it as the compiler does.
    if parent.co_flags & _CO_OPTIMIZED:
        return f"{parent_qualname}.<locals>.{code.co_name}"
    return f"{parent_qualname}.{code.co_name}" if parent_qualname else code.co_name


def _patch_tree(code: CodeType, module: str, qualname: str, tree: PatchedTree) -> CodeType:
    consts = code.co_consts
    new_consts = None
    for i, const in enumerate(consts):
        if type(const) is CodeType:
            patched = _patch_function_tree(const, module, _nested_qualname(code, qualname, const), tree)
            if patched is not const:
                if new_consts is None:
                    new_consts = list(consts)
                new_consts[i] = patched
    return code if new_consts is None else code.replace(co_consts=tuple(new_consts))


def _patch_function_tree(code: CodeType, module: str, qualname: str, tree: PatchedTree) -> CodeType:
    """A nested code object, its own nested functions first, spliced if it is a function."""
    with_children = _patch_tree(code, module, qualname, tree)
    if not code.co_flags & _CO_OPTIMIZED:  # a class body: only what it defines is timed
        return with_children
    consts = code.co_consts
    if len(consts) >= 2 and type(consts[-2]) is _ext.Probe:  # .pyc files never hold probes: a reload of ours
        tree.skipped.append((qualname, "already carries a fastpatch probe"))
        return with_children
    # Registered lazily (the lazy table): the Origin constant holds all a definition needs.
    origin = Origin(code, _ext.Probe(), module, qualname)
    try:
        patched = splice(with_children, origin.probe, (origin,))
    except SpliceError as exc:
        tree.skipped.append((qualname, str(exc)))
        return with_children
    _ext.lazy_add(origin)
    tree.instrumented.append(qualname)
    return patched


# --------------------------------------------------------------------------
# Pickling by value (cloudpickle, dill): the probe travels as its name and
# original code, and arrives as this process's probe of that definition.
# --------------------------------------------------------------------------


def _reduce_probe(probe: Any) -> Tuple[Any, Tuple[str, str, str, CodeType]]:
    d = _by_probe.get(id(probe))
    if d is None:
        with _lock:
            _register_lazy()
        d = _by_probe.get(id(probe))
    original = d.original() if d is not None and d.probe is probe else None
    if d is None or original is None:
        import pickle

        raise pickle.PicklingError("this fastpatch probe belongs to no instrumented definition")
    d.fingerprint()
    return (_revive_probe, (d.name, d.module, d.qualname, original))


def _revive_probe(name: str, module: str, qualname: str, original: CodeType) -> Any:
    """The probe of the definition ``original`` in this process, new or existing."""
    with _lock:
        for ref in _by_fingerprint.get(hash(original), ()):
            d = ref()
            if d is not None and d.name == name and d.original() == original:
                return d.probe
        d = _register_origin(Origin(original, _ext.Probe(), module, qualname), None, name)
        d.fingerprint()
        return d.probe


def _register_pickling() -> None:
    import copyreg

    copyreg.pickle(_ext.Probe, _reduce_probe)


_register_pickling()


# --------------------------------------------------------------------------
# fork
# --------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    """A forked child keeps the instrumentation and starts from zero."""
    global _lock
    _lock = _thread.RLock()  # the parent's may have been held by a thread the child does not have
    _ext.forked_child()
    # The definitions nobody asked about stay unregistered: a pool worker
    # forked from a hooked program would otherwise register thousands.
    for origin in _ext.lazy_origins():
        origin.probe.clear()
    for d in list(_by_original.values()):
        d.probe.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: _lock.acquire(),
        after_in_parent=lambda: _lock.release(),
        after_in_child=_after_fork_in_child,
    )
