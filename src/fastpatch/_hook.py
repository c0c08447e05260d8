"""The import hook: the functions of a selected module are instrumented
before the module's body runs.

One finder sits at the front of ``sys.meta_path``. For a module no pattern
selects it returns None at once, and the import goes on as if it were not
there. For a selected module it asks the other finders, in their order,
for the spec they would give, and hands that spec back with its loader
wrapped:

* the wrapper answers every attribute (and ``isinstance``) as the loader it
  wraps, and puts the real loader back into ``__spec__.loader`` and
  ``__loader__`` before the module's body runs, so the module, ``reload``,
  ``pkgutil``, ``importlib.resources`` and ``inspect`` only ever see the
  real loader;
* for the loaders whose ``exec_module`` is "``get_code``, then ``exec``"
  (source and bytecode files, zip archives) it does that itself, splicing
  the code in between with ``_patch.patch_module_code``. The ``.pyc`` that
  the real ``get_code`` wrote holds the original code: probes are never
  marshalled;
* ``get_code`` is spliced too, for ``runpy`` (``python -m pkg``), which
  runs the module's code itself;
* any other loader (pytest's assertion rewriter, for one) runs the module
  its own way, and the module is then instrumented by walking it
  (``_bulk``): closures it creates later are not reached there;
* namespace packages (no loader), C extensions, builtin and frozen modules
  are left alone.

Modules imported before the hook was installed are walked at once.

fastpatch's own work never goes through its own hook: while a thread finds,
splices or walks a module for the hook (or installs it, or writes a
report), ``own_work`` marks it, and ``find_spec`` turns every import that
thread makes away first thing. What the splicer itself needs (the dialect,
built from ``opcode``; ``importlib.machinery``) is loaded as a hook whose
patterns may select the standard library is installed, before any of them
can select it: a pattern that selects everything (``*``) would otherwise
splice ``opcode`` while building the dialect that splicing it needs.
"""

from __future__ import annotations

import _thread
import os
import sys

from . import _ext
from ._patch import _nested_qualname, _our_constants, check_sample, patch_module_code
from ._recipes import running_dialect
from ._select import Patterns, Selection, is_own_module
from ._splice import c_splicer_in_use

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType, ModuleType
    from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple


class ImportHook:
    """An installed import hook: ``remove()`` takes it out again.

    ``selection`` (a ``fastpatch.Selection``) lists the modules it has
    instrumented so far, their functions, and what was skipped and why;
    ``unmatched()`` the include patterns that have selected nothing yet.
    Usable as a context manager, which removes it on exit. Removing it
    stops the instrumentation of modules imported from then on; what it
    instrumented stays instrumented (``fastpatch.uninstrument`` undoes that).
    """

    def __init__(self, patterns: Patterns, sample: Optional[int] = None) -> None:
        self.patterns = patterns
        # The rate of the functions it instruments, as instrument()'s sample= (None: exact timing for new ones).
        self.sample = sample
        self.selection: Selection = Selection()
        self.installed = False

    @property
    def include(self) -> Tuple[str, ...]:
        return self.patterns.include

    @property
    def exclude(self) -> Tuple[str, ...]:
        return self.patterns.exclude

    def unmatched(self) -> List[str]:
        """The include patterns that have selected nothing so far."""
        return self.patterns.unmatched()

    def remove(self) -> None:
        """Stop instrumenting modules imported from now on (idempotent)."""
        _finder.remove_hook(self)

    def __enter__(self) -> ImportHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "installed" if self.installed else "removed"
        return (
            f"<fastpatch import hook ({state}) include={list(self.include)!r} exclude={list(self.exclude)!r}: "
            f"{len(self.selection.modules)} modules, {len(self.selection.instrumented)} functions>"
        )


class _OwnWork:
    """``with own_work:`` marks this thread as doing fastpatch's own work
    (finding, splicing, walking, activating, reporting): every import it
    makes meanwhile bypasses the hook. Re-entrant."""

    __slots__ = ()

    def __enter__(self) -> None:
        ident = _get_ident()
        _working[ident] = _working.get(ident, 0) + 1

    def __exit__(self, *exc: object) -> None:
        ident = _get_ident()
        depth = _working[ident] - 1
        if depth:
            _working[ident] = depth
        else:
            del _working[ident]


_get_ident = _thread.get_ident
# thread ident -> depth of own_work sections; find_spec reads it first.
_working: Dict[int, int] = {}
own_work = _OwnWork()


def _forget_other_threads_work() -> None:
    """In a forked child, only the thread that forked still runs: another
    thread's own_work section never ends there, and its ident may be reused."""
    ident = _get_ident()
    depth = _working.get(ident)
    _working.clear()
    if depth:
        _working[ident] = depth


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_other_threads_work)


def _under(qualname: str, names: Iterable[str]) -> bool:
    """Whether ``qualname`` is one of ``names`` or nested in one of them."""
    for name in names:
        if qualname == name or qualname.startswith(name + "."):
            return True
    return False


class _Plan:
    """What to do with one selected module."""

    __slots__ = ("hook", "whole", "only", "excluded")

    def __init__(self, hook: ImportHook, whole: bool, only: FrozenSet[str], excluded: FrozenSet[str]) -> None:
        self.hook = hook  # the hook whose selection records it
        self.whole = whole  # every function of the module
        self.only = only  # else: these qualnames (module:Qual.name patterns)
        self.excluded = excluded  # qualnames left alone

    @property
    def everything(self) -> bool:
        return self.whole and not self.excluded

    def wanted(self, qualname: str) -> bool:
        """Whether function ``qualname`` is to be timed (``module:Qual``
        covers what is nested in ``Qual`` too: a class's methods)."""
        if _under(qualname, self.excluded):
            return False
        return self.whole or _under(qualname, self.only)


def _splices_through_get_code(loader: Any) -> bool:
    """Whether the loader's exec_module is "get_code, then exec the code in
    the module's namespace", so that doing it ourselves changes nothing."""
    if not hasattr(loader, "get_code"):
        return False
    exec_module = getattr(type(loader), "exec_module", None)
    if exec_module is None:  # 3.9's zipimporter: its load_module does the same
        return not hasattr(loader, "create_module")
    return exec_module is _basic_exec_module()


_machinery: List[Tuple[Any, Tuple[Any, ...]]] = []


def _loader_kinds() -> Tuple[Any, Tuple[Any, ...]]:
    """(the exec_module of importlib's base class of the source, bytecode
    and (3.10+) zip loaders, the loaders of modules that are not Python
    code), from ``importlib.machinery``, imported once."""
    if not _machinery:
        with own_work:
            from importlib.machinery import BuiltinImporter, ExtensionFileLoader, FrozenImporter, SourceFileLoader

        for base in SourceFileLoader.__mro__:
            if base.__name__ == "_LoaderBasics":
                basic = base.__dict__.get("exec_module")
                break
        else:  # pragma: no cover - every supported CPython has it
            basic = object()
        _machinery.append((basic, (ExtensionFileLoader, BuiltinImporter, FrozenImporter)))
    return _machinery[0]


def _basic_exec_module() -> Any:
    return _loader_kinds()[0]


def _not_python_code(loader: Any) -> bool:
    """C extensions, builtin and frozen modules: nothing to splice or walk."""
    kinds = _loader_kinds()[1]
    return loader in kinds[1:] or isinstance(loader, kinds)


class _Loader:
    """Stands in for a selected module's loader between find_spec and the
    module's body; answers everything else as that loader does."""

    def __init__(self, loader: Any, spec: Any, finder: _Finder, plan: Optional[_Plan]) -> None:
        d = self.__dict__
        d["_fastpatch_loader"] = loader
        d["_fastpatch_spec"] = spec
        d["_fastpatch_finder"] = finder
        d["_fastpatch_plan"] = plan
        d["_fastpatch_splice"] = _splices_through_get_code(loader)
        # Only the optional methods the real loader has: importlib and runpy
        # decide what to call with hasattr().
        if hasattr(loader, "get_code"):
            d["get_code"] = self._get_code

    # isinstance() sees the real loader's class, as tools that check it
    # (slotscheck, pkg_resources' provider lookup) expect.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self.__dict__["_fastpatch_loader"])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_fastpatch_loader"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_fastpatch_loader"], name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.__dict__["_fastpatch_loader"], name)

    def __repr__(self) -> str:
        return repr(self.__dict__["_fastpatch_loader"])

    def _restore(self, module: Optional[ModuleType]) -> None:
        """The real loader back where importlib put ours."""
        real = self.__dict__["_fastpatch_loader"]
        spec = self.__dict__["_fastpatch_spec"]
        if spec.loader is self:
            spec.loader = real
        if module is None:
            return
        if getattr(module, "__loader__", None) is self:
            try:
                module.__loader__ = real
            except AttributeError:
                pass
        module_spec = getattr(module, "__spec__", None)
        if module_spec is not None and module_spec.loader is self:
            module_spec.loader = real

    def create_module(self, spec: Any) -> Optional[ModuleType]:
        create = getattr(self.__dict__["_fastpatch_loader"], "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: ModuleType) -> None:
        d = self.__dict__
        real, plan, finder = d["_fastpatch_loader"], d["_fastpatch_plan"], d["_fastpatch_finder"]
        self._restore(module)
        name = module.__name__
        spliced = False
        if d["_fastpatch_splice"]:
            code = real.get_code(name)
            if code is None:
                raise ImportError(f"cannot load module {name!r} when get_code() returns None", name=name)
            if plan is not None:
                code, spliced = finder.splice_or_warn(code, name, plan)
            exec(code, module.__dict__)
        else:
            real.exec_module(module)
        finder.after_exec(sys.modules.get(name, module), plan, spliced)

    def _get_code(self, fullname: str) -> Optional[CodeType]:
        """The module's code, spliced (``runpy`` runs it itself: ``python -m``)."""
        d = self.__dict__
        spec, plan = d["_fastpatch_spec"], d["_fastpatch_plan"]
        # runpy hands spec.loader on as __main__.__loader__: the real one.
        self._restore(None)
        code = d["_fastpatch_loader"].get_code(fullname)
        if code is None or plan is None or fullname != spec.name:
            return code  # type: ignore[no-any-return]
        return d["_fastpatch_finder"].splice_or_warn(code, fullname, plan)[0]  # type: ignore[no-any-return]


class _Finder:
    """The one finder fastpatch puts at the front of ``sys.meta_path``."""

    def __init__(self) -> None:
        self.hooks: List[ImportHook] = []
        # module name -> callbacks run once it has been imported (after its body ran)
        self.on_import: Dict[str, List[Callable[[ModuleType], None]]] = {}
        self._plans: Dict[str, Optional[_Plan]] = {}
        # The top-level packages the hooks can select (None: a glob can
        # select any): find_spec turns every other name away at once, since
        # every import of the program asks it first.
        self._tops: Optional[FrozenSet[str]] = frozenset()

    def __repr__(self) -> str:
        return f"<fastpatch import hook finder: {len(self.hooks)} hooks>"

    # -- which modules -------------------------------------------------------

    def plan(self, name: str) -> Optional[_Plan]:
        try:
            return self._plans[name]
        except KeyError:
            pass
        plan = None
        if not is_own_module(name):
            whole_hooks = [h for h in self.hooks if h.patterns.selects_module(name)]
            only: Set[str] = set()
            for h in self.hooks:
                only |= h.patterns.qualnames_in(name)
            if whole_hooks or only:
                excluded: Set[str] = set()
                for h in whole_hooks or self.hooks:
                    excluded |= h.patterns.excluded_qualnames(name)
                owner = whole_hooks[0] if whole_hooks else next(h for h in self.hooks if h.patterns.qualnames_in(name))
                plan = _Plan(owner, bool(whole_hooks), frozenset(only), frozenset(excluded))
        self._plans[name] = plan
        return plan

    # -- finding -------------------------------------------------------------

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if _get_ident() in _working:
            # fastpatch's own import, or one a finder we asked makes: never
            # through our own hook (it would recurse, or splice a module
            # fastpatch is itself in the middle of using).
            return None
        meta_path = sys.meta_path
        if meta_path and meta_path[0] is not self and self in meta_path:
            # Another finder (pytest's assertion rewriter, say) was put in
            # front of us: step back in front, or its modules escape the hook.
            meta_path.remove(self)
            meta_path.insert(0, self)
        tops = self._tops
        if tops is not None and name.partition(".")[0] not in tops and name not in self.on_import:
            return None
        plan = self.plan(name)
        if plan is None and name not in self.on_import:
            return None
        with own_work:
            spec = self._spec_from_other_finders(name, path, target)
            if spec is None:
                return None
            loader = spec.loader
            if loader is None or type(loader) is _Loader or _not_python_code(loader):
                return spec  # a namespace package, a C extension, or already ours
            if not (hasattr(loader, "exec_module") or _splices_through_get_code(loader)):
                return spec  # a legacy loader (load_module only): left as it is
            spec.loader = _Loader(loader, spec, self, plan)
        return spec

    def _spec_from_other_finders(self, name: str, path: Any, target: Any) -> Any:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                # A legacy finder (find_module only, before 3.12): let the
                # import system ask it; the module is not instrumented.
                return None
            spec = find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self) -> None:
        self._plans.clear()

    def _hooks_changed(self) -> None:
        self._plans.clear()
        tops: Optional[Set[str]] = set()
        for h in self.hooks:
            more = h.patterns.top_level_names()
            if more is None or tops is None:
                tops = None
            else:
                tops |= more
        self._tops = None if tops is None else frozenset(tops)

    # -- splicing and walking --------------------------------------------------

    def splice_or_warn(self, code: CodeType, name: str, plan: _Plan) -> Tuple[CodeType, bool]:
        """(``code`` spliced, True), or (``code``, False) with a warning if
        splicing failed: timing must never break the import. (The module is
        then walked once it has run, as when its loader gives no code.)"""
        try:
            return self.splice(code, name, plan), True
        except Exception as exc:  # noqa: BLE001 - the module runs as it is
            _warn(f"could not splice {name} before it ran ({type(exc).__name__}: {exc}): walking it after")
            return code, False

    def splice(self, code: CodeType, name: str, plan: _Plan) -> CodeType:
        """``code`` of module ``name`` with the functions ``plan`` wants spliced."""
        with own_work:
            return self._splice(code, name, plan)

    def _splice(self, code: CodeType, name: str, plan: _Plan) -> CodeType:
        sample = plan.hook.sample
        tree = patch_module_code(code, name, 1 if sample is None else sample)
        spliced = tree.code
        instrumented = tree.instrumented
        if not plan.everything:
            spliced = _only_wanted(spliced, "", plan.wanted)
            instrumented = [q for q in instrumented if plan.wanted(q)]
        selection = plan.hook.selection
        if plan.whole:
            selection.modules.append(name)
        selection.add_spliced(name, instrumented)
        if tree.skipped:
            selection.skipped += [(f"{name}.{q}", reason) for q, reason in tree.skipped if plan.wanted(q)]
        self.note_found(name, instrumented)
        return spliced

    def note_found(self, name: str, qualnames: List[str]) -> None:
        """Mark the ``module:Qual.name`` patterns that found a function."""
        for h in self.hooks:
            if not h.patterns.has_function_patterns:
                continue
            for wanted in h.patterns.qualnames_in(name):
                if any(_under(q, (wanted,)) for q in qualnames):
                    h.patterns.note_function_found(name, wanted)

    def after_exec(self, module: ModuleType, plan: Optional[_Plan], spliced: bool) -> None:
        with own_work:
            if plan is not None and not spliced:
                try:
                    self.walk(module, plan)
                except Exception as exc:  # noqa: BLE001 - timing must never break the import
                    _warn(f"could not instrument {module.__name__}: {type(exc).__name__}: {exc}")
            for callback in self.on_import.pop(module.__name__, ()):
                callback(module)

    def walk(self, module: ModuleType, plan: _Plan) -> None:
        """Instrument a module that gave no code to splice (or that ran
        before the hook was installed) by walking it."""
        from ._bulk import instrument_selected

        found = instrument_selected(module, None if plan.everything else plan.wanted, plan.hook.sample)
        selection = plan.hook.selection
        if plan.whole:
            selection.modules.append(module.__name__)
        selection.instrumented.extend(found.instrumented)
        selection.skipped.extend(found.skipped)
        prefix = module.__name__ + "."
        self.note_found(module.__name__, [n[len(prefix):] for n in found.instrumented if n.startswith(prefix)])

    # -- installing ----------------------------------------------------------

    def add_hook(self, hook: ImportHook) -> None:
        if _may_select_the_standard_library(hook.patterns):
            _load_what_splicing_needs()
        self.hooks.append(hook)
        hook.installed = True
        self._hooks_changed()
        self._front()

    def remove_hook(self, hook: ImportHook) -> None:
        if hook in self.hooks:
            self.hooks.remove(hook)
        hook.installed = False
        self._hooks_changed()
        if not self.hooks and not self.on_import and self in sys.meta_path:
            sys.meta_path.remove(self)

    def when_imported(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        module = sys.modules.get(name)
        if module is not None:
            callback(module)
        else:
            self.on_import.setdefault(name, []).append(callback)
            self._front()

    def _front(self) -> None:
        if self in sys.meta_path:
            if sys.meta_path[0] is self:
                return
            sys.meta_path.remove(self)
        sys.meta_path.insert(0, self)


def _only_wanted(code: CodeType, qualname: str, wanted: Callable[[str], bool]) -> CodeType:
    """A spliced module tree with the functions ``wanted`` refuses put back
    to their original bytecode (each function nested in them is decided on
    its own). Their definitions stay registered, uncalled, and reports leave
    uncalled definitions out.

    The splicer appends the probe and the Origin (which holds the original
    code) after the original constants, so the first constants of a spliced
    function are its nested code objects (spliced), in the original order.
    """
    consts = code.co_consts
    new_consts = list(consts)
    changed = False
    for i, const in enumerate(consts):
        if type(const) is not type(code):
            continue
        nested_name = _nested_qualname(code, qualname, const)
        kept = _only_wanted(const, nested_name, wanted)
        probe, origin = _our_constants(const)
        if probe is not None and origin is not None and not wanted(nested_name):
            original: CodeType = origin.code
            n = len(original.co_consts)
            if any(a is not b for a, b in zip(kept.co_consts[:n], original.co_consts)):
                original = original.replace(co_consts=tuple(kept.co_consts[:n]))
            kept = original
        if kept is not const:
            new_consts[i] = kept
            changed = True
    return code.replace(co_consts=tuple(new_consts)) if changed else code


def _may_select_the_standard_library(patterns: Patterns) -> bool:
    """Whether ``patterns`` may select a module of the standard library,
    where everything the splicer itself needs lives. (3.9 has no list of
    them: yes.)"""
    stdlib: Optional[FrozenSet[str]] = getattr(sys, "stdlib_module_names", None)
    tops = patterns.top_level_names()
    return tops is None or stdlib is None or not tops.isdisjoint(stdlib)


def _load_what_splicing_needs() -> None:
    """Import and build, before a hook whose patterns may select the
    standard library is installed, what the hook's own work imports: the
    dialect (``opcode``), the splicer in use and ``importlib.machinery`` (about a
    millisecond, which a hook that selects only the program's packages pays
    at its first splice instead). Then a pattern that selects them (``*``)
    finds them imported and walks them, and never splices ``opcode`` while
    building the dialect from it. Raises UnsupportedPythonError where no
    recipe has been validated."""
    with own_work:
        running_dialect()
        if c_splicer_in_use() is None:  # FASTPATCH_SPLICER=python
            from . import _pysplice  # noqa: F401 - and what it imports
        _loader_kinds()


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"fastpatch: {message}\n")
    except Exception:  # noqa: BLE001 - no stderr (pythonw): nothing to tell
        pass


_finder = _Finder()


def install_import_hook(
    include: Iterable[str], exclude: Iterable[str] = (), *, sample: Optional[int] = None
) -> ImportHook:
    """Instrument every function of the modules ``include`` selects as they
    are imported, before their bodies run.

    ``include`` and ``exclude`` are lists of patterns: ``"myapp"`` selects
    ``myapp`` and every submodule; glob characters match within a dotted
    name (``"myapp.*.views"``); ``"module:Qual.name"`` selects one function
    or method (for a class, its methods). Exclusion wins; fastpatch's own
    modules are never selected.

    Functions are spliced before the module body runs, so closures created
    later are timed too, and code that keeps ``f.__code__`` at import time
    keeps the instrumented code. ``.pyc`` files never hold instrumented
    code. Modules already imported are instrumented at once by walking them
    (as ``instrument_module`` does), and so are modules whose loader gives
    no code to splice (pytest's assertion rewriter), right after they run.

    Returns the hook: ``hook.remove()`` takes it out (``with
    install_import_hook(...):`` does so on exit), ``hook.selection`` says
    what was instrumented and skipped, and ``hook.unmatched()`` lists the
    include patterns that have selected nothing so far.

    ``sample`` is the sampling rate of the functions it instruments, as
    ``instrument`` takes it: N >= 2 times one call in N, 0 counts calls and
    times none, 1 times every call, which None (the default) does too
    without changing the rate of functions instrumented already.
    """
    check_sample(sample)
    hook = ImportHook(Patterns(include, exclude), sample)
    with own_work:
        _finder.add_hook(hook)
        _walk_imported(hook)
    return hook


def _walk_imported(hook: ImportHook) -> None:
    """Instrument the modules imported before ``hook`` was installed."""
    for name, module in list(sys.modules.items()):
        if module is None or getattr(module, "__name__", None) != name or not hook.patterns.wants(name):
            continue
        plan = _finder.plan(name)
        if plan is None or plan.hook is not hook:
            continue
        try:
            _finder.walk(module, plan)
        except Exception as exc:  # noqa: BLE001 - one odd module must not stop the rest
            _warn(f"could not instrument {name}: {type(exc).__name__}: {exc}")


def _main_plan(also: Optional[str]) -> Optional[_Plan]:
    plan = _finder.plan("__main__")
    if plan is None and also:
        plan = _finder.plan(also)
    return plan


def splice_main(code: CodeType, also: Optional[str] = None) -> CodeType:
    """The code of a program's main module (``run``'s script or ``-c``)
    spliced as the hook splices a module it imports, if ``__main__`` is
    selected, or the name ``also`` (a script's file name without ``.py``).
    If splicing fails, ``code`` itself, and one warning line."""
    plan = _main_plan(also)
    if plan is None:
        return code
    try:
        return _finder.splice(code, "__main__", plan)
    except Exception as exc:  # noqa: BLE001 - the program runs as it is
        _warn(f"could not instrument __main__: {type(exc).__name__}: {exc}")
        return code


def _script_stem(path: str) -> Optional[str]:
    """``app`` for ``dir/app.py``: the name ``-i`` may select a script by; None for ``-c``, ``-m``..."""
    if not path or path in ("-c", "-m", "-") or path.startswith("<"):
        return None
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if stem.isidentifier() else None


def _main_code_compiled(code: CodeType) -> CodeType:
    """The audit hook's callback (``_ext.splice_main_code``): the main code
    of ``python SCRIPT`` or ``python -c CODE``, spliced."""
    return splice_main(code, _script_stem(code.co_filename))


def splice_main_when_it_runs() -> bool:
    """At interpreter startup (the environment's activation): if the
    patterns select ``__main__`` (or the script by its file name), splice
    the main code of ``python SCRIPT`` or ``python -c CODE`` once the
    interpreter has compiled it, before it runs (``_ext.splice_main_code``).
    ``-m`` goes through the hook as an import, and the interactive prompt is
    left alone. Whether it will; a failure is one warning line."""
    argv = getattr(sys, "argv", None) or [""]
    if _main_plan(_script_stem(argv[0])) is None:
        return False
    try:
        _ext.splice_main_code(_main_code_compiled)
    except Exception as exc:  # noqa: BLE001 - the rest of the activation stands
        _warn(f"could not instrument __main__: {type(exc).__name__}: {exc}")
        return False
    return True


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Run ``callback(module)`` once module ``name`` has been imported (at
    once if it already is): how the activation hooks multiprocessing."""
    _finder.when_imported(name, callback)
