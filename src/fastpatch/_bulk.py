"""Instrumenting whole modules, classes and packages by walking them.

The walk reaches what a module *defines*: functions, methods, static and
class methods, property accessors and nested classes whose ``__module__``
is that module. Everything it meets that it cannot or should not time is
listed in the ``Selection`` with a reason: C functions, objects imported
from other modules, decorator wrappers (their code belongs to the
decorator, so the function they wrap is timed instead), functions already
instrumented.

The import hook (``_hook.py``) splices a module's code before it runs,
which also reaches closures; this walk is what it falls back on when a
loader gives no code to splice, and what it uses for modules imported
before it was installed.
"""

from __future__ import annotations

import sys

from ._patch import check_sample, instrument, is_instrumented
from ._resolve import FunctionType
from ._select import Selection, is_own_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable, Dict, List, Optional, Set, Union

#: Reasons a walk gives for what it skipped (``Selection.skipped``).
C_FUNCTION = "C function"
IMPORTED = "imported from another module"
WRAPPER = "decorator wrapper (the function it wraps is timed instead)"
ALREADY = "already instrumented"
NOT_IMPORTED = "not imported"
MAIN_MODULE = "not imported: a __main__ module runs a program"

_C_CALLABLES = (
    type(len),  # builtin functions and methods
    type(str.join),  # method descriptors
    type(str.__add__),  # slot wrappers
    type(dict.__dict__["fromkeys"]),  # class method descriptors
    type("".__add__),  # method-wrappers
)


class _Walk:
    """One walk: the selection it fills and what it has already met."""

    def __init__(
        self, selection: Selection, wanted: Optional[Callable[[str], bool]] = None, sample: Optional[int] = None
    ) -> None:
        self.selection = selection
        self.sample = sample  # the rate of every function met (instrument's sample=), None to leave it
        # Only definitions whose qualname passes ``wanted`` (module:Qual.name patterns).
        self.wanted = wanted
        self.seen: Set[int] = set()
        self.keep: List[Any] = []  # the objects whose ids are in ``seen`` stay alive while we walk

    def _first_time(self, obj: Any) -> bool:
        if id(obj) in self.seen:
            return False
        self.seen.add(id(obj))
        self.keep.append(obj)
        return True

    def skip(self, where: str, reason: str) -> None:
        self.selection.skipped.append((where, reason))

    def function(self, func: Any, home: str, where: str) -> None:
        """``func`` met at ``where`` while walking module ``home``."""
        if not self._first_time(func):
            return
        inner = getattr(func, "__wrapped__", None)
        if inner is not None:
            # A decorator's wrapper runs the decorator's code (shared by every
            # function it decorates, so not this function's definition): time
            # the function it wraps, if that one lives here.
            if type(func) is FunctionType:
                self.skip(where, WRAPPER)
            for _ in range(100):  # a __wrapped__ chain, as inspect.unwrap follows it
                if type(inner) is FunctionType or getattr(inner, "__wrapped__", None) is None:
                    break
                inner = inner.__wrapped__
            if type(inner) is FunctionType:
                self.function(inner, home, where)
            return
        if type(func) is not FunctionType:
            if isinstance(func, _C_CALLABLES):
                self.skip(where, C_FUNCTION)
            elif isinstance(func, (staticmethod, classmethod)):
                self.function(func.__func__, home, where)
            return
        if func.__module__ != home:
            self.skip(where, IMPORTED)
            return
        name = f"{func.__module__}.{func.__qualname__}"
        if self.wanted is not None and not self.wanted(func.__qualname__):
            return
        if is_instrumented(func):
            if self.sample is not None:
                instrument(func, sample=self.sample)  # a new rate, as instrument() again sets it
            self.skip(name, ALREADY)
            return
        try:
            instrument(func, sample=self.sample)
        except (TypeError, ValueError) as exc:
            self.skip(name, f"refused: {exc}")
            return
        self.selection.instrumented.append(name)

    def cls(self, cls: type, home: str, where: str) -> None:
        """The attributes class ``cls`` defines, its nested classes included."""
        if not self._first_time(cls):
            return
        for attr, value in list(vars(cls).items()):
            place = f"{where}.{attr}"
            if isinstance(value, property):
                for accessor in (value.fget, value.fset, value.fdel):
                    if accessor is not None:
                        self.function(accessor, home, place)
            elif isinstance(value, type):
                # A class nested in this one's body; an alias of another class is not.
                if value.__module__ == home and value.__qualname__.startswith(cls.__qualname__ + "."):
                    self.cls(value, home, place)
            elif type(value) is FunctionType or isinstance(value, (staticmethod, classmethod) + _C_CALLABLES):
                self.function(value, home, place)
            elif type(getattr(value, "func", None)) is FunctionType and hasattr(value, "attrname"):
                self.function(value.func, home, place)  # functools.cached_property
            elif getattr(value, "__wrapped__", None) is not None:
                self.function(value, home, place)

    def module(self, module: ModuleType) -> None:
        home = module.__name__
        self.selection.modules.append(home)
        for attr, value in list(vars(module).items()):
            where = f"{home}.{attr}"
            if isinstance(value, type):
                if value.__module__ == home:
                    self.cls(value, home, where)
                elif self._first_time(value):
                    self.skip(where, IMPORTED)
            elif (
                type(value) is FunctionType
                or isinstance(value, (staticmethod, classmethod) + _C_CALLABLES)
                or getattr(value, "__wrapped__", None) is not None
            ):
                self.function(value, home, where)


def _module(module: Union[ModuleType, str]) -> ModuleType:
    if isinstance(module, str):
        import importlib

        module = importlib.import_module(module)
    if not isinstance(module, type(sys)):
        raise TypeError(f"expected a module or a dotted module name, not {type(module).__name__}")
    if is_own_module(module.__name__):
        raise ValueError(f"fastpatch never instruments its own modules ({module.__name__})")
    return module


def instrument_module(module: Union[ModuleType, str], *, sample: Optional[int] = None) -> Selection:
    """Time every function and method that ``module`` defines.

    ``module`` is a module object or a dotted name (imported if it is not
    yet). The walk covers the module's functions, its classes' methods,
    static and class methods, property accessors and nested classes: what
    has ``__module__`` equal to the module's name. A decorated function is
    timed itself, not its decorator's wrapper. Closures the module creates
    later are not reached (the import hook reaches them: see
    ``install_import_hook``).

    Returns a ``Selection`` listing what was instrumented and what was
    skipped, with reasons (C functions, objects imported from other
    modules, functions already instrumented...). Instrumenting again is
    harmless: everything is then "already instrumented".

    ``sample`` is the sampling rate of every function it instruments (see
    ``instrument``): given, it also sets the rate of those already
    instrumented.
    """
    check_sample(sample)
    module = _module(module)
    selection = Selection()
    _Walk(selection, sample=sample).module(module)
    return selection


def instrument_class(cls: type, *, sample: Optional[int] = None) -> Selection:
    """Time every method that class ``cls`` defines in its body.

    Plain, static and class methods, property accessors
    (``fget``/``fset``/``fdel``), ``functools.cached_property`` functions,
    and the methods of classes nested in it; not inherited methods. Returns
    a ``Selection`` and takes ``sample`` (see ``instrument_module``).
    """
    check_sample(sample)
    if not isinstance(cls, type):
        raise TypeError(f"instrument_class() needs a class, not {type(cls).__name__}")
    if is_own_module(cls.__module__):
        raise ValueError(f"fastpatch never instruments its own classes ({cls.__module__}.{cls.__qualname__})")
    selection = Selection()
    _Walk(selection, sample=sample).cls(cls, cls.__module__, f"{cls.__module__}.{cls.__qualname__}")
    return selection


def instrument_package(package: Union[ModuleType, str], *, sample: Optional[int] = None) -> Selection:
    """Time every function of ``package`` and of every submodule in it.

    Each submodule is imported (a ``__main__`` submodule is not: it runs a
    program) and walked as by ``instrument_module``. A submodule that fails
    to import (a missing optional dependency, say) is listed in
    ``Selection.skipped`` with the error; the rest go on. A plain module
    (not a package) is walked alone. ``sample``: see ``instrument_module``.
    """
    import importlib

    check_sample(sample)
    root = _module(package)
    selection = Selection()
    walk = _Walk(selection, sample=sample)
    walk.module(root)
    path = getattr(root, "__path__", None)
    if path is None:
        return selection
    import pkgutil

    failed: Dict[str, str] = {}

    def note_failure(name: str) -> None:
        exc = sys.exc_info()[1]
        failed[name] = f"{NOT_IMPORTED}: {type(exc).__name__}: {exc}"

    names = []
    for info in pkgutil.walk_packages(path, root.__name__ + ".", onerror=note_failure):
        names.append(info.name)
    for name in names:
        if name.rpartition(".")[2] == "__main__":
            selection.skipped.append((name, MAIN_MODULE))
            continue
        if name in failed:
            selection.skipped.append((name, failed.pop(name)))
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - listed, and the walk goes on
            selection.skipped.append((name, f"{NOT_IMPORTED}: {type(exc).__name__}: {exc}"))
            continue
        walk.module(module)
    selection.skipped.extend(failed.items())
    return selection


def instrument_selected(
    module: ModuleType, wanted: Optional[Callable[[str], bool]] = None, sample: Optional[int] = None
) -> Selection:
    """The hook's walk of a module it could not splice: every function it
    defines, or those whose qualname passes ``wanted``, at rate ``sample``."""
    selection = Selection()
    _Walk(selection, wanted, sample).module(module)
    return selection
