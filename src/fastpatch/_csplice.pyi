"""Type stub of fastpatch._csplice (src/fastpatch/_csplice.c, and the files it
lists): the splicer, and the walk over a module's code objects, in C."""

from types import CodeType
from typing import Callable, List, Tuple

def configure(dialect: object, splice_error: type, /) -> None:
    """Use the running CPython's _recipes.Dialect; splice errors raise ``splice_error``."""

def splice(code: CodeType, probe: object, trailer: Tuple[object, ...], /) -> CodeType:
    """As fastpatch._pysplice.splice_in_python, in C."""

def patch_tree(
    code: CodeType, module: str, probe_type: type, lazy_origin: Callable[[CodeType, object, str, str], object],
    instrumented: List[str], skipped: List[Tuple[str, str]], wanted: Callable[[str], object] | None = None, /,
) -> CodeType:
    """``code`` (a module body) with every function nested in it spliced, each
    with ``probe_type()`` and ``lazy_origin(code, probe, module, qualname)``,
    its qualified name appended to ``instrumented``; one the splicer does not
    recognise is left as it is, ``(qualname, reason)`` appended to ``skipped``.

    ``wanted(qualname)`` (None: every function) is asked once about each
    function: one it refuses gets no probe and no Origin and keeps its code,
    but the functions nested in it are decided on their own.
    """
