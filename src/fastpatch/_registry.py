"""The registry of what is instrumented: definitions, the maps that find
them, the import hook's lazy table, and what keeps them right across
pickling and ``fork``.

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
* a ``Definition`` holds the probe (the counters) strongly and both code
  objects weakly. The registry maps drop it when the original dies, which
  is when no function, no enclosing code and no patched code holds it.
  Stats therefore survive ``uninstrument``/``instrument``.
* ``_keepalive`` (weak on the function) keeps the patched code of a function
  that was uninstrumented, so instrumenting it again is a dictionary lookup.

Maps, all under ``lock`` (which ``os.register_at_fork`` keeps usable in a
forked child; read it as ``_registry.lock``, since a forked child replaces it):

* ``_by_original``: id(original code) -> Definition;
* ``_by_patched``: id(patched code) -> Definition, checked against the
  definition's weak reference, since ids of dead code objects are reused;
* ``_by_probe``: id(probe) -> Definition, so that code another tool
  rewrote after us, or a copy of our code unpickled here, is recognised by
  the probe it carries;
* ``_by_fingerprint``: hash of the original code -> definitions, so that a
  function unpickled again and again in one process (a worker of joblib,
  Dask or multiprocessing) keeps one definition: the same name and an equal
  original code.

Definitions the import hook spliced and nothing has asked about yet are not
in these maps but in ``_ext``'s lazy table: their Origins by original code,
held weakly (``ext.lazy_add``, ``lazy_get``, ``lazy_origins``,
``called_origins``; see ``_ext.c``). A definition is registered from there
the first time something asks about it.
"""

from __future__ import annotations

import _thread
import _weakref
import os

from ._native import ext

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing, threading or weakref at run time: `import fastpatch` must stay cheap
    import weakref
    from types import CodeType, FunctionType
    from typing import Any, Dict, List, Optional, Tuple

    from ._stats import Stats

# The constant that spliced code carries after its probe (see _ext.c): the
# original code, the probe, the module and the qualified name. A C type,
# immutable and outside the garbage collector's generations: the import hook
# makes one per function of every module it splices.
Origin = ext.Origin


lock = _thread.RLock()
_by_original: Dict[int, Definition] = {}
_by_patched: Dict[int, Definition] = {}
_by_probe: Dict[int, Definition] = {}
_by_fingerprint: Dict[int, List[weakref.ref[Definition]]] = {}
# id(function) -> (weak reference to it, the patched code it ran before uninstrument)
_keepalive: Dict[int, Tuple[weakref.ref[FunctionType], CodeType]] = {}


class Definition:
    """One instrumented definition: its probe, its name, and weak references
    to its original and patched code."""

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
    def _patched_died(self, ref: weakref.ref[CodeType], by_patched: Dict[int, Definition] = _by_patched) -> None:
        if self.patched_ref is ref and by_patched.get(self.patched_id) is self:
            del by_patched[self.patched_id]

    def _forget(
        self,
        _ref: weakref.ref[CodeType],
        maps: Tuple[Dict[int, Definition], ...] = (_by_original, _by_probe, _by_patched),
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


def register_origin(origin: Origin, patched: Optional[CodeType], name: Optional[str] = None) -> Definition:
    """The definition of ``origin``, registered now (and out of the lazy table)."""
    d = Definition(origin, name)
    d.register()
    if patched is not None:
        d.set_patched(patched)
    ext.lazy_discard(origin)
    return d


def _register_lazy() -> None:
    """Register every definition the import hook spliced, that still lives."""
    # Each Origin listed leaves the table by itself: another thread's import hook may add new ones
    # meanwhile (registering runs Python code, which lets other threads run), and they must stay.
    for origin in ext.lazy_origins():
        if _by_probe.get(id(origin.probe)) is None:
            register_origin(origin, None)
        else:
            ext.lazy_discard(origin)


def registered_definition(probe: Any) -> Optional[Definition]:
    """The registered definition whose probe is ``probe``, or None (a lazy
    one, or none at all). Takes no lock and registers nothing: safe from the
    telemetry writer's thread whatever the other threads hold."""
    d = _by_probe.get(id(probe))
    return d if d is not None and d.probe is probe else None


def definition_of_probe(probe: Any) -> Optional[Definition]:
    """The definition whose probe is ``probe`` (registering the lazy table
    if it is there), or None: a probe of no instrumented definition."""
    d = _by_probe.get(id(probe))
    if d is None:
        with lock:
            _register_lazy()
        d = _by_probe.get(id(probe))
    return d if d is not None and d.probe is probe else None


def keep(func: FunctionType, patched: CodeType) -> None:
    """Hold ``patched``, the code ``func`` ran before ``uninstrument``, for as long as ``func`` lives."""
    key = id(func)

    def forget(_ref: object, key: int = key, kept: Dict[int, Any] = _keepalive) -> None:
        kept.pop(key, None)

    _keepalive[key] = (_weakref.ref(func, forget), patched)


def kept(func: FunctionType) -> Optional[CodeType]:
    """The code ``keep`` holds for ``func``, if any."""
    entry = _keepalive.get(id(func))
    return entry[1] if entry is not None and entry[0]() is func else None


def release(func: FunctionType) -> None:
    """Drop what ``keep`` holds for ``func``: it runs its patched code again."""
    _keepalive.pop(id(func), None)


def our_constants(code: CodeType) -> Tuple[Any, Optional[Origin]]:
    """The probe and origin constants ``code`` carries, if any (they are
    appended last by the splicer, but another tool may have moved them)."""
    consts = code.co_consts
    if len(consts) >= 2 and type(consts[-2]) is ext.Probe and type(consts[-1]) is Origin:
        return consts[-2], consts[-1]
    probe = origin = None
    for const in consts:
        if type(const) is ext.Probe:
            probe = const
        elif type(const) is Origin:
            origin = const
    return probe, origin


def running_definition(code: CodeType) -> Optional[Definition]:
    """The definition whose probe ``code`` runs: our patched code, a copy of
    it unpickled here, or a rewrite of it by a tool layered after us."""
    d = _by_patched.get(id(code))
    if d is not None and d.patched() is code:
        return d
    probe, origin = our_constants(code)
    if probe is None:
        return None
    d = _by_probe.get(id(probe))
    if d is None or d.probe is not probe:
        if origin is None or origin.probe is not probe:
            return None
        with lock:  # spliced by the import hook, and asked about for the first time
            d = _by_probe.get(id(probe))
            if d is None:
                return register_origin(origin, code)
    if d.patched_ref is None:  # a definition unpickled or spliced in bulk here: its first code is it
        d.set_patched(code)
    return d


def original_definition(code: CodeType) -> Optional[Definition]:
    """The definition whose original code is ``code``, if any."""
    d = _by_original.get(id(code))
    if d is not None and d.original() is code:
        return d
    origin = ext.lazy_get(code)
    if origin is not None and origin.code is code:
        with lock:
            d = _by_probe.get(id(origin.probe))
            return d if d is not None else register_origin(origin, None)
    return None


def definition_of(code: CodeType) -> Optional[Definition]:
    """The definition ``code`` belongs to, original or running a probe."""
    return original_definition(code) or running_definition(code)


# Anything that reads the registry maps while Python code or allocation can
# run copies them first (list(...values())): a snapshot allocates, so the
# garbage collector can run and free a definition, whose weak reference
# callback (_forget) then deletes its entries from the maps.


def definitions() -> List[Definition]:
    """Every definition, the lazy table's registered first."""
    with lock:
        _register_lazy()
        return list(_by_original.values())


def alive(definitions: List[Definition]) -> List[Tuple[Definition, CodeType]]:
    """The definitions whose original code still lives, each with it: held,
    it keeps them alive, and their stats whole, while they are read."""
    pairs = [(d, d.original()) for d in definitions]
    return [(d, original) for d, original in pairs if original is not None]


def called_stats() -> List[Stats]:
    """Snapshots of the definitions called at least once: what a report
    holds. Unlike ``all_stats()`` it registers none of the import hook's
    definitions (a whole program has thousands; it reads the called ones
    from their Origins), so writing a report at exit costs little."""
    from ._stats import snapshot

    with lock:
        registered = alive([d for d in list(_by_original.values()) if d.probe.calls])
        origins = ext.called_origins()  # a new list, holding each Origin (and so its code)
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
    with lock:
        return bool(_by_original) or ext.lazy_count() > 0


# --------------------------------------------------------------------------
# Pickling by value (cloudpickle, dill): the probe travels as its name and
# original code, and arrives as this process's probe of that definition.
# --------------------------------------------------------------------------


def _reduce_probe(probe: Any) -> Tuple[Any, Tuple[str, str, str, CodeType]]:
    d = definition_of_probe(probe)
    original = d.original() if d is not None else None
    if d is None or original is None:
        import pickle

        raise pickle.PicklingError("this fastpatch probe belongs to no instrumented definition")
    d.fingerprint()
    return (_revive_probe, (d.name, d.module, d.qualname, original))


def _revive_probe(name: str, module: str, qualname: str, original: CodeType) -> Any:
    """The probe of the definition ``original`` in this process, new or existing."""
    with lock:
        for ref in _by_fingerprint.get(hash(original), ()):
            d = ref()
            if d is not None and d.name == name and d.original() == original:
                return d.probe
        d = register_origin(Origin(original, ext.Probe(), module, qualname), None, name)
        d.fingerprint()
        return d.probe


def _register_pickling() -> None:
    import copyreg

    copyreg.pickle(ext.Probe, _reduce_probe)


_register_pickling()


# --------------------------------------------------------------------------
# fork
# --------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    """A forked child keeps the instrumentation and starts from zero."""
    global lock
    # The child's copy of the lock is held: by the thread that forked (the
    # `before` hook below), or by a thread the child does not have where a C
    # library forked without running the fork hooks.
    lock = _thread.RLock()
    ext.forked_child()
    # The definitions nobody asked about stay unregistered: a pool worker
    # forked from a hooked program would otherwise register thousands.
    for origin in ext.lazy_origins():
        origin.probe.clear()
    for d in list(_by_original.values()):
        d.probe.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: lock.acquire(),
        after_in_parent=lambda: lock.release(),
        after_in_child=_after_fork_in_child,
    )
