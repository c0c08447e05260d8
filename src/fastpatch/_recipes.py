"""Per-dialect recipes: what fastpatch injects on each CPython minor version.

A *dialect* is everything that differs between CPython versions and matters
to the splicer: how instructions and jumps are encoded, how many inline cache
units follow an opcode, where the prologue ends, which opcodes return, and
which line-table format the code object uses. All of it lives here, in one
table per version, so that the splicer (``_splice``) stays version-agnostic.

The injected sequences themselves are assembled with the ``bytecode``
package once per process and kept as raw code units:

* ``entry``: ``LOAD_CONST <probe>; UNARY_INVERT`` pushes the activation's
  token (the probe's ``nb_invert`` slot).
* ``exit``: ``BINARY_SUBSCR`` turns ``[token, retval]`` into ``retval``
  (the token's ``mp_subscript`` slot) right before ``RETURN_VALUE``.

Neither is a call, so profilers and ``sys.monitoring`` see no C call.
"""

from __future__ import annotations

import opcode
import platform
import sys
from typing import List, NamedTuple, Optional, Tuple

#: Minor versions whose recipe has been validated against CPython's own
#: test-suite behaviours (tracing, tracebacks, generators) in tests/.
SUPPORTED_VERSIONS: Tuple[Tuple[int, int], ...] = ((3, 9), (3, 10), (3, 11), (3, 12), (3, 13))


class UnsupportedPythonError(RuntimeError):
    """fastpatch has no validated recipe for this interpreter."""


# Jump kinds, per opcode.
NOT_A_JUMP = 0
ABSOLUTE = 1
FORWARD = 2
BACKWARD = 3


class Dialect(NamedTuple):
    version: Tuple[int, int]
    #: "lnotab" (3.9), "linetable" (3.10) or "locations" (3.11+).
    line_format: str
    has_exception_table: bool
    #: 2 on 3.9, where jump arguments count bytes; 1 where they count code units.
    jump_unit: int
    extended_arg: int
    #: Inline cache units after each opcode (256 entries).
    caches: bytes
    #: Jump kind of each opcode (256 entries).
    jumps: bytes
    return_value: int
    return_const: Optional[int]
    load_const: int
    #: The entry goes after the first instruction with this opcode, or at the
    #: very start when None (3.9, and 3.10 plain functions).
    prologue_end: Optional[int]
    #: 3.10 only: generators start with GEN_START, which pops the first send.
    gen_start: Optional[int]
    #: Code units of the injected sequences, assembled with ``bytecode``.
    #: ``entry_tail`` follows the LOAD_CONST of the probe, whose argument is
    #: only known per function.
    entry_tail: bytes
    exit: bytes
    return_value_code: bytes


def _cache_counts() -> List[int]:
    entries = getattr(opcode, "_inline_cache_entries", None)
    counts = [0] * 256
    if isinstance(entries, dict):  # 3.13: keyed by name
        for name, n in entries.items():
            op = opcode.opmap.get(name)
            if op is not None and op < 256:
                counts[op] = n
    elif entries is not None:  # 3.11, 3.12: indexed by opcode
        for op, n in enumerate(entries[:256]):
            counts[op] = n
    return counts


def _jump_kinds(version: Tuple[int, int]) -> List[int]:
    kinds = [NOT_A_JUMP] * 256
    for op in opcode.hasjabs:
        if op < 256:
            kinds[op] = ABSOLUTE
    for op in opcode.hasjrel:
        if op < 256:
            backward = version >= (3, 11) and "BACKWARD" in opcode.opname[op]
            kinds[op] = BACKWARD if backward else FORWARD
    return kinds


def _assemble(name: str, arg: Optional[int] = None) -> bytes:
    """Code units of one instruction, inline caches included, via ``bytecode``."""
    from bytecode import ConcreteInstr

    instr = ConcreteInstr(name) if arg is None else ConcreteInstr(name, arg)
    n_caches = instr.use_cache_opcodes() if hasattr(instr, "use_cache_opcodes") else 0
    return bytes(instr.assemble()) + b"\x00\x00" * n_caches


def _build(version: Tuple[int, int]) -> Dialect:
    op = opcode.opmap
    caches = _cache_counts()
    if version == (3, 9):
        line_format = "lnotab"
    elif version == (3, 10):
        line_format = "linetable"
    else:
        line_format = "locations"
    exit_code = _assemble("BINARY_SUBSCR")
    # Invariant the splicer relies on: the exit is one instruction plus caches.
    assert len(exit_code) == 2 * (1 + caches[op["BINARY_SUBSCR"]])
    return Dialect(
        version=version,
        line_format=line_format,
        has_exception_table=version >= (3, 11),
        jump_unit=2 if version == (3, 9) else 1,
        extended_arg=op["EXTENDED_ARG"],
        caches=bytes(caches),
        jumps=bytes(_jump_kinds(version)),
        return_value=op["RETURN_VALUE"],
        return_const=op.get("RETURN_CONST"),
        load_const=op["LOAD_CONST"],
        prologue_end=op.get("RESUME"),
        gen_start=op.get("GEN_START"),
        entry_tail=_assemble("UNARY_INVERT"),
        exit=exit_code,
        return_value_code=_assemble("RETURN_VALUE"),
    )


_dialect: Optional[Dialect] = None


def current() -> Dialect:
    """The running interpreter's dialect, built on first use and cached.

    Raises UnsupportedPythonError, naming the interpreter, where no recipe
    has been validated.
    """
    global _dialect
    if _dialect is None:
        impl = platform.python_implementation()
        version = sys.version_info[:2]
        if impl != "CPython":
            raise UnsupportedPythonError(
                f"fastpatch patches CPython bytecode and cannot run on {impl}; "
                f"supported: CPython {_supported_text()}"
            )
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedPythonError(
                f"fastpatch has no validated bytecode recipe for CPython "
                f"{version[0]}.{version[1]}; supported: CPython {_supported_text()}"
            )
        _dialect = _build(version)
    return _dialect


def _supported_text() -> str:
    first, last = SUPPORTED_VERSIONS[0], SUPPORTED_VERSIONS[-1]
    return f"{first[0]}.{first[1]} to {last[0]}.{last[1]}"


__all__ = [
    "ABSOLUTE",
    "BACKWARD",
    "Dialect",
    "FORWARD",
    "NOT_A_JUMP",
    "SUPPORTED_VERSIONS",
    "UnsupportedPythonError",
    "current",
]
