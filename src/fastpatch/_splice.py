"""Splice the dialect's entry and exit sequences into a code object.

Disassembling every function with ``bytecode`` costs many times a
``compile()`` of its source, and even re-assembling every instruction in
Python costs several. So the splicer treats the patch as a short list of
*insertions* into the raw code units and touches only what they move:

* the entry (``LOAD_CONST probe``, then the recipe's entry) is inserted
  where an activation starts: right before the first RESUME on 3.11+,
  at offset 0 otherwise (before a 3.10 generator's GEN_START, ending with
  the recipe's stacked entry);
* every ``RETURN_VALUE`` gets the recipe's exit inserted before it; every
  ``RETURN_CONST k`` becomes ``LOAD_CONST k`` followed by an inserted
  ``exit; RETURN_VALUE``;
* a jump whose new argument no longer fits gets EXTENDED_ARG units
  inserted before it, which moves everything again (repeated to a fixpoint).

Only jump arguments are re-encoded; the location table and linetable have
their entries lengthened in place (the entry gets one of its own, without
a location, from 3.10); the exception table (a handful of entries) and
3.9's lnotab are re-encoded through the offset map.

Each insertion sits at a boundary between two original code units and
belongs to one side of it, which decides how old offsets map:

* jump and handler targets land *after* the entry (it runs once, at the
  start) but *on* a return's prefix (it is part of the return);
* exception ranges never cover the entry: it runs before the token exists;
* every other inserted unit takes the source location of the instruction
  it belongs to, so tracers see the same lines and tracebacks keep theirs.
  The entry has no line or location (3.10+): the first line event then
  comes from the first instruction the source produced, after the token
  exists, which is what debuggers jump from and what tools that decode the
  current instruction (``executing``) read. 3.9's lnotab cannot say "no
  line"; there the entry takes the first line.

The token sits under the function's own stack, so exception-table depths
after the entry grow by one and ``co_stacksize`` by one.

Both splicers run it in the same six named phases (``_pysplice.py`` lists
them; ``_csplice_phases.c`` has the same names), and take everything about
the running version from its ``Dialect`` (``_recipes.py``) but the
line-table and exception-table encodings, which the dialect names and they
know. ``tests/test_splice_*.py`` check the result against the original code
instruction by instruction, against the same transformation done with the
``bytecode`` package, and the C splicer against the Python one.
"""

from __future__ import annotations

from ._errors import SpliceError
from ._native import c_splicer_module
from ._recipes import running_dialect

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time: `import fastpatch` must stay cheap
    from types import CodeType
    from typing import Any, Tuple


_c_module: Any = None  # _csplice once configured; False where it was not built
_in_use: Any = None  # what splice() runs: the configured _csplice, or False for the Python splicer

#: FASTPATCH_SPLICER's values. "c" (the default) is the C splicer where it was
#: built; "python" runs the Python one for everything, as the C one's
#: reference: CI runs the whole suite that way once.
SPLICERS = ("c", "python")


def c_splicer() -> Any:
    """The C splicer (``_csplice*.c``), configured for the running version,
    or None where it was not built. FASTPATCH_SPLICER does not change it."""
    global _c_module
    if _c_module is None:
        csplice = c_splicer_module()
        if csplice is None:
            _c_module = False
        else:
            csplice.configure(running_dialect(), SpliceError)
            _c_module = csplice
    return _c_module or None


def c_splicer_in_use() -> Any:
    """The C splicer if ``splice`` runs it, else None: FASTPATCH_SPLICER=python
    asks for the Python splicer, or the C one was not built.

    FASTPATCH_SPLICER is read at the first call that accepts it: ``c`` (or
    unset) or ``python``; any other value raises ValueError naming it, and
    ``c`` where the C splicer was not built raises ImportError.
    """
    global _in_use
    if _in_use is None:
        import os

        requested = os.environ.get("FASTPATCH_SPLICER", "").strip().lower()
        if requested and requested not in SPLICERS:
            raise ValueError(
                f"FASTPATCH_SPLICER={requested!r} is not a splicer fastpatch knows: "
                f"{' or '.join(repr(s) for s in SPLICERS)}"
            )
        c = None if requested == "python" else c_splicer()
        if c is None and requested == "c":
            raise ImportError("FASTPATCH_SPLICER=c: the C splicer (fastpatch._csplice) is not built here")
        _in_use = c or False
    return _in_use or None


def splice(code: CodeType, probe: object, trailer: Tuple[object, ...] = ()) -> CodeType:
    """Return a copy of ``code`` that times each activation with ``probe``.

    The probe is appended to ``co_consts``, followed by ``trailer``. This is
    the C splicer (``_csplice*.c``), which does what ``splice_in_python``
    does, byte for byte, many times faster; the Python one is the reference
    the tests hold it to, and what runs where the C one was not built or
    FASTPATCH_SPLICER=python asks for it.
    """
    running_dialect()  # raises UnsupportedPythonError on a version without a recipe
    c = c_splicer_in_use()
    if c is None:
        return splice_in_python(code, probe, trailer)
    result: CodeType = c.splice(code, probe, trailer)
    return result


def splice_in_python(code: CodeType, probe: object, trailer: Tuple[object, ...] = ()) -> CodeType:
    """``splice``, in Python (``_pysplice.py``, imported on first use): the
    reference for the C splicer."""
    from ._pysplice import splice_in_python as python_splicer

    return python_splicer(code, probe, trailer)


__all__ = ["SPLICERS", "SpliceError", "c_splicer", "c_splicer_in_use", "splice", "splice_in_python"]
