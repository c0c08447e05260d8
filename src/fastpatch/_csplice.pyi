"""Type stub of fastpatch._csplice (src/fastpatch/_csplice.c): the splicer's loop in C."""

from types import CodeType
from typing import Callable, List, Tuple

def configure(dialect: object, splice_error: type, /) -> None:
    """Use the running CPython's _recipes.Dialect; splice errors raise ``splice_error``."""

def splice(code: CodeType, probe: object, trailer: Tuple[object, ...], /) -> CodeType:
    """As fastpatch._splice.splice_in_python, in C."""

def patch_tree(
    code: CodeType, module: str, probe_type: type, lazy_origin: Callable[[CodeType, object, str, str], object],
    instrumented: List[str], skipped: List[Tuple[str, str]], /,
) -> CodeType:
    """As fastpatch._patch.patch_module_code's walk, in C: every function nested in ``code`` spliced."""
