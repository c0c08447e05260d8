"""Splicing a whole module at once: every function code object nested in a
module body, before the body runs (the import hook, ``run``'s main code).

The walk goes depth first through ``co_consts``. A function's own nested
functions are spliced first, and it is then spliced with them in its
constants; a class body is not timed, only what it defines. ``wanted``
decides, once per function code object, by qualified name: a function it
refuses gets no probe and no ``Origin`` and stays as it was, except that
the functions nested in it, which are decided on their own, replace its
constants when one of them was spliced. A function that already carries a
probe (a reload of code spliced here: ``.pyc`` files never hold one) and a
function the splicer cannot handle are left as they are and listed in
``skipped``.

Each spliced function becomes a definition named ``module.qualname``,
registered lazily: its ``Origin`` goes to the lazy table (see
``_registry``) and nothing else is done for it until something asks.

The C splicer does the same walk in C (``fastpatch._csplice.patch_tree``);
this one runs where the Python splicer does (FASTPATCH_SPLICER=python, or
no C splicer built), and is the reference the tests hold the C one to.
"""

from __future__ import annotations

from . import _registry
from ._errors import SpliceError
from ._native import ext, install_jump_guard
from ._splice import c_splicer_in_use, splice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Callable, List, Optional, Tuple

_CO_OPTIMIZED = 0x1  # functions, lambdas, comprehensions; not module or class bodies

#: Why a function that already runs a probe was left as it was.
ALREADY_SPLICED = "already carries a fastpatch probe"


class PatchedTree:
    """What ``patch_module_code`` did."""

    __slots__ = ("code", "instrumented", "skipped")

    def __init__(self, code: CodeType) -> None:
        self.code = code
        #: Qualified names of the functions now instrumented.
        self.instrumented: List[str] = []
        #: (qualified name, reason) of the functions ``wanted`` let through and that were left as they were.
        self.skipped: List[Tuple[str, str]] = []


def patch_module_code(
    code: CodeType, module: str, wanted: Optional[Callable[[str], bool]] = None, sample: int = 1
) -> PatchedTree:
    """``code`` (a module body) with the function code objects nested in it
    spliced, recursively, so that the functions and closures it creates run
    instrumented from their first call. The module body itself is not timed.

    ``wanted`` (None: every function) is asked once per function, with its
    qualified name, whether to splice it. Every function spliced is timed at
    rate ``sample`` (see ``instrument``).
    """
    tree = PatchedTree(code)
    with _registry.lock:
        install_jump_guard()
        c = c_splicer_in_use()
        # Every probe made here (by either walk) gets the rate; the lock keeps
        # any other probe from being made meanwhile.
        previous = ext.set_default_sample(sample)
        try:
            if c is not None:
                tree.code = c.patch_tree(
                    code, module, ext.Probe, ext.lazy_origin, tree.instrumented, tree.skipped, wanted
                )
            else:
                tree.code = _Walk(module, wanted, tree).consts_spliced(code, "")
        finally:
            ext.set_default_sample(previous)
    return tree


_CODE_HAS_QUALNAME = hasattr(patch_module_code.__code__, "co_qualname")  # 3.11+


def nested_qualname(parent: CodeType, parent_qualname: str, code: CodeType) -> str:
    """The qualified name of ``code``, a constant of ``parent`` (whose own is ``parent_qualname``)."""
    if _CODE_HAS_QUALNAME:
        return code.co_qualname  # type: ignore[attr-defined, no-any-return, unused-ignore]
    # 3.9/3.10 code objects do not carry it: build it as the compiler does.
    if parent.co_flags & _CO_OPTIMIZED:
        return f"{parent_qualname}.<locals>.{code.co_name}"
    return f"{parent_qualname}.{code.co_name}" if parent_qualname else code.co_name


class _Walk:
    """One module's walk: what it splices with, and the tree it fills."""

    __slots__ = ("module", "wanted", "tree")

    def __init__(self, module: str, wanted: Optional[Callable[[str], bool]], tree: PatchedTree) -> None:
        self.module = module
        self.wanted = wanted
        self.tree = tree

    def consts_spliced(self, code: CodeType, qualname: str) -> CodeType:
        """``code`` with the functions among its constants spliced (itself if none was)."""
        consts = code.co_consts
        new_consts = None
        for i, const in enumerate(consts):
            if type(const) is type(code):
                patched = self.spliced(const, nested_qualname(code, qualname, const))
                if patched is not const:
                    if new_consts is None:
                        new_consts = list(consts)
                    new_consts[i] = patched
        return code if new_consts is None else code.replace(co_consts=tuple(new_consts))

    def spliced(self, code: CodeType, qualname: str) -> CodeType:
        """A nested code object, its own nested functions first, spliced if it is a wanted function."""
        with_children = self.consts_spliced(code, qualname)
        if not code.co_flags & _CO_OPTIMIZED:  # a class body: only what it defines is timed
            return with_children
        if self.wanted is not None and not self.wanted(qualname):
            return with_children
        consts = code.co_consts
        if len(consts) >= 2 and type(consts[-2]) is ext.Probe:
            self.tree.skipped.append((qualname, ALREADY_SPLICED))
            return with_children
        # Registered lazily (the lazy table): the Origin constant holds all a definition needs.
        origin = ext.Origin(code, ext.Probe(), self.module, qualname)
        try:
            patched = splice(with_children, origin.probe, (origin,))
        except SpliceError as exc:
            self.tree.skipped.append((qualname, str(exc)))
            return with_children
        ext.lazy_add(origin)
        self.tree.instrumented.append(qualname)
        return patched
