"""Recipes: what fastpatch injects on each CPython minor version.

Everything fastpatch needs to know about a CPython minor version's bytecode
lives in the ``RECIPES`` table below, one entry per supported version: the
injected instruction sequences, how jumps count, the shape of the prologue
(where an activation starts, and what the prologue has left on the value
stack there), which opcodes return, and which line-table encoding code
objects use. ``running_dialect()`` encodes the running version's recipe as a
``Dialect`` (opcode numbers, code units), and everything that reads code
works from it: both splicers (``_pysplice.py`` and ``_csplice*.c``), the
debugger-jump guard (``_jumps.c``, given the dialect at install) and its
rules in ``_debugger.py``. None of them knows a CPython version, and every
opcode they act on comes from the dialect. What they do know is the
encodings the dialect only names: the three line-table formats
(``lnotab``, 3.10's ``linetable``, 3.11+ ``locations``) and the exception
table's, which both splicers read and write themselves; and the C splicer
and the jump guard reach into code objects and frames through the shims in
``_compat.h``.

The injected sequences are data, instruction names with their arguments:

* ``entry``, inserted where an activation starts: ``LOAD_CONST <probe>``
  followed by the recipe's ``entry`` (``UNARY_INVERT`` everywhere), which
  pushes the activation's token through the probe's ``nb_invert`` slot.
  Where it goes is the ``Prologue``'s to say: on 3.11+ right before the
  ``RESUME`` where the function itself starts (after a generator's
  ``RETURN_GENERATOR; POP_TOP``, so it runs at the first resume); else at
  offset 0. Where the prologue has left values on the stack at that point
  (a 3.10 generator's first send, under ``GEN_START``; a 3.15 generator
  expression's iterator), the entry ends with the prologue's
  ``stacked_entry``, which moves the token under them. From 3.10 it has no
  line or location of its own, so that the first line event comes from the
  first instruction the source produced, with the token already pushed;
* ``exit_sequence``, inserted right before each return: a subscript of the
  token by the return value (``BINARY_SUBSCR``, from 3.14 ``BINARY_OP``
  with the ``NB_SUBSCR`` argument), which records the end through the
  token's ``mp_subscript`` slot and leaves the return value. On 3.9 it is
  ``ROT_TWO; POP_TOP`` instead, and the token's deallocator records the end:
  3.9 checks for asynchronous exceptions (signals) after every instruction
  that can call out, so one could land between a subscript and the
  ``RETURN_VALUE``, in an activation already recorded as returned; neither
  ``ROT_TWO`` nor ``POP_TOP`` is followed by that check.

None of these is a call, so profilers and ``sys.monitoring`` see no C call.

The running version's sequences are assembled into code units with the
``bytecode`` package when a wheel is built (setup.py writes them to
``_assembled.py``), so that an installed fastpatch never imports
``bytecode``; an editable install assembles them on first use instead.

Adding a CPython version touches three files: its recipe here (a new
``Prologue`` too, if its prologue changed shape), the shims in
``_compat.h`` where its C API or code objects changed, and its trove
classifier in ``pyproject.toml``. A version that changes a line-table or
exception-table encoding changes both splicers as well. CI, the release
check and the benchmarks (``noxfile.py``) read ``SUPPORTED_VERSIONS``
here, and ``python src/fastpatch/_recipes.py`` prints them.
"""

from __future__ import annotations

import sys

# `import fastpatch` must stay cheap (it runs in every process the import hook
# reaches): no typing, collections or bytecode at import. mypy reads the
# annotations behind TYPE_CHECKING, which it treats as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

    #: An instruction of an injected sequence: (opcode name, argument).
    Instruction = Tuple[str, int]


class Prologue:
    """The shape of what a CPython version runs of a code object before its
    body: where an activation starts (where the entry goes), and what the
    prologue has left on the value stack there."""

    __slots__ = ("entry_before", "where_mask", "stacked_marker", "stacked_where", "stacked_values", "stacked_entry")

    def __init__(
        self,
        *,
        entry_before: Optional[str] = None,
        where_mask: int = 0,
        stacked_marker: Optional[str] = None,
        stacked_where: int = 0,
        stacked_values: int = 0,
        stacked_entry: Tuple[Instruction, ...] = (),
    ) -> None:
        #: The entry goes right before the first instruction of this name
        #: whose argument, masked with ``where_mask``, is 0 (3.11+: the
        #: RESUME where the function itself starts, RESUME_AT_FUNC_START);
        #: None: at code unit 0.
        self.entry_before = entry_before
        #: The bits of a marker's argument that say where it is (RESUME's
        #: "where": 2 bits on 3.11-3.14, 3 on 3.15).
        self.where_mask = where_mask
        #: The prologue has left ``stacked_values`` values on the stack at
        #: the entry when the first instruction of this name, at or before
        #: the entry, has ``argument & where_mask == stacked_where``: 3.10's
        #: GEN_START (a generator's first send, which it pops; the entry goes
        #: before it), 3.15's RESUME 4 (RESUME_AT_GEN_EXPR_START: a generator
        #: expression evaluates iter() of its argument before
        #: RETURN_GENERATOR and keeps the iterator and an index on the stack).
        self.stacked_marker = stacked_marker
        self.stacked_where = stacked_where
        self.stacked_values = stacked_values
        #: The end of the entry there, after ``Recipe.entry``: it puts the
        #: token under those values.
        self.stacked_entry = stacked_entry

    def __repr__(self) -> str:
        return "Prologue(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


class Recipe:
    """How one CPython minor version lays out code, and what fastpatch injects there."""

    __slots__ = (
        "line_table", "jump_unit", "backward_jumps", "prologue", "entry_has_line", "return_value", "return_const",
        "entry", "exit_sequence", "exit_records",
    )

    def __init__(
        self,
        *,
        line_table: str,
        jump_unit: int,
        backward_jumps: Tuple[str, ...],
        prologue: Prologue,
        entry_has_line: bool,
        return_value: str,
        return_const: Optional[str],
        entry: Tuple[Instruction, ...],
        exit_sequence: Tuple[Instruction, ...],
        exit_records: bool,
    ) -> None:
        #: "lnotab" (3.9), "linetable" (3.10) or "locations" (3.11+): the
        #: encoding, which the splicers know.
        self.line_table = line_table
        #: Jump arguments count bytes (2) on 3.9, code units (1) afterwards.
        self.jump_unit = jump_unit
        #: Relative jumps whose argument counts backwards.
        self.backward_jumps = backward_jumps
        #: Where the entry goes, and what is on the stack there.
        self.prologue = prologue
        #: False: the entry has no line (3.10) or location (3.11+) of its own.
        #: 3.9's line table cannot say that: the entry takes the first line.
        self.entry_has_line = entry_has_line
        #: Returns: RETURN_VALUE, and RETURN_CONST where it exists (3.12, 3.13).
        self.return_value = return_value
        self.return_const = return_const
        #: After ``LOAD_CONST <probe>``: pushes the token.
        self.entry = entry
        #: Right before a return: ``[token, retval]`` -> ``retval``.
        self.exit_sequence = exit_sequence
        #: True: the exit's subscript records a return (token_exit, which
        #: folds it in one return late); False: it drops the token, whose
        #: deallocator records it (3.9).
        self.exit_records = exit_records

    def replace(self, **changes: Any) -> Recipe:
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Recipe(**fields)

    def __repr__(self) -> str:
        return "Recipe(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


#: The argument of BINARY_OP that means ``a[b]`` (``dis._nb_ops``), 3.14+.
NB_SUBSCR = 26

_39 = Recipe(
    line_table="lnotab",
    jump_unit=2,
    backward_jumps=(),
    prologue=Prologue(),  # the entry at offset 0; 3.9 generators have no prologue
    entry_has_line=True,
    return_value="RETURN_VALUE",
    return_const=None,
    entry=(("UNARY_INVERT", 0),),
    exit_sequence=(("ROT_TWO", 0), ("POP_TOP", 0)),
    exit_records=False,
)
# 3.10: ROT_TWO turns a starting generator's [sent, token] into [token, sent].
_310 = _39.replace(
    line_table="linetable",
    jump_unit=1,
    prologue=Prologue(stacked_marker="GEN_START", stacked_values=1, stacked_entry=(("ROT_TWO", 0),)),
    entry_has_line=False,
    exit_sequence=(("BINARY_SUBSCR", 0),),
    exit_records=True,
)
_311 = _310.replace(
    line_table="locations",
    prologue=Prologue(entry_before="RESUME", where_mask=3),
    backward_jumps=(
        "JUMP_BACKWARD",
        "JUMP_BACKWARD_NO_INTERRUPT",
        "POP_JUMP_BACKWARD_IF_FALSE",
        "POP_JUMP_BACKWARD_IF_TRUE",
        "POP_JUMP_BACKWARD_IF_NONE",
        "POP_JUMP_BACKWARD_IF_NOT_NONE",
    ),
)
_312 = _311.replace(backward_jumps=("JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT"), return_const="RETURN_CONST")
# 3.14: BINARY_SUBSCR and RETURN_CONST are gone; END_ASYNC_FOR carries a
# backward offset (to its SEND, for sys.monitoring's branch events).
_314 = _312.replace(
    return_const=None,
    backward_jumps=("JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "END_ASYNC_FOR"),
    exit_sequence=(("BINARY_OP", NB_SUBSCR),),
)

# 3.15: RESUME's argument says where in 3 bits (4 is new: the start of a
# generator expression), and a generator expression's prologue keeps its
# iterator on the stack, as GET_ITER leaves it: two values (the iterator and
# an index or NULL). SWAP 3; SWAP 2 turns [iter, index, token] into
# [token, iter, index].
_315 = _314.replace(
    prologue=Prologue(
        entry_before="RESUME", where_mask=7, stacked_marker="RESUME", stacked_where=4, stacked_values=2,
        stacked_entry=(("SWAP", 3), ("SWAP", 2)),
    ),
)

RECIPES: Dict[Tuple[int, int], Recipe] = {
    (3, 9): _39,
    (3, 10): _310,
    (3, 11): _311,
    (3, 12): _312,
    (3, 13): _312,
    (3, 14): _314,
    (3, 15): _315,
}

#: The CPython minor versions fastpatch has a validated recipe for.
SUPPORTED_VERSIONS: Tuple[Tuple[int, int], ...] = tuple(RECIPES)


# Jump kinds, per opcode.
NOT_A_JUMP = 0
ABSOLUTE = 1
FORWARD = 2
BACKWARD = 3


class Dialect:
    """The running version's recipe, encoded: what the splicers, the jump
    guard and its rules work from."""

    __slots__ = (
        "version", "line_table", "has_exception_table", "jump_unit", "extended_arg", "caches", "jumps",
        "deopt", "return_value", "return_const", "load_const", "entry_before", "where_mask", "stacked_marker",
        "stacked_where", "stacked_values", "entry_has_line", "entry_tail", "stacked_entry_tail", "exit_code",
        "return_value_code",
    )
    version: Tuple[int, int]
    line_table: str
    has_exception_table: bool
    jump_unit: int
    extended_arg: int
    #: Inline cache units after each opcode (256 entries).
    caches: bytes
    #: Jump kind of each opcode (256 entries).
    jumps: bytes
    #: The opcode as compiled of each opcode that running code may hold (256
    #: entries): itself for a base opcode, its base for a specialised one
    #: (3.11+ specialise code in place, 3.12 already when it is created), 0
    #: where the code object alone cannot tell (instrumented code, 3.12+).
    deopt: bytes
    return_value: int
    return_const: Optional[int]
    load_const: int
    #: The prologue (see Prologue), with opcodes for names.
    entry_before: Optional[int]
    where_mask: int
    stacked_marker: Optional[int]
    stacked_where: int
    stacked_values: int
    entry_has_line: bool
    #: Code units of the injected sequences, inline caches included.
    #: ``entry_tail`` follows the LOAD_CONST of the probe, whose argument is
    #: only known per function.
    entry_tail: bytes
    #: ``entry_tail`` where the prologue has left values on the stack (see Prologue.stacked_entry).
    stacked_entry_tail: bytes
    #: The exit sequence, right before each return.
    exit_code: bytes
    return_value_code: bytes

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.pop(name))
        if fields:
            raise TypeError(f"unknown Dialect fields: {sorted(fields)}")


def supported_text() -> str:
    """The supported versions as a range, for messages: "3.9 to 3.15"."""
    first, last = SUPPORTED_VERSIONS[0], SUPPORTED_VERSIONS[-1]
    return f"{first[0]}.{first[1]} to {last[0]}.{last[1]}"


def _unsupported(message: str) -> Exception:
    """``UnsupportedPythonError(message)``. Imported here, not at the top:
    setup.py and the noxfile load this file on its own, without its package."""
    from ._errors import UnsupportedPythonError

    return UnsupportedPythonError(message)


def recipe_for(version: Tuple[int, int]) -> Recipe:
    """The recipe of a CPython minor version, or UnsupportedPythonError naming it."""
    recipe = RECIPES.get(version)
    if recipe is None:
        raise _unsupported(
            f"fastpatch has no validated bytecode recipe for CPython "
            f"{version[0]}.{version[1]}; supported: CPython {supported_text()}"
        )
    return recipe


def _cache_counts(opcode_module: object) -> List[int]:
    """Inline cache units per opcode, from the ``opcode`` module of any version."""
    entries: Any = getattr(opcode_module, "_inline_cache_entries", None)
    opmap: Dict[str, int] = getattr(opcode_module, "opmap")  # noqa: B009 - typed access
    counts = [0] * 256
    if hasattr(entries, "items"):  # 3.13+: keyed by name (a frozendict on 3.15)
        for name, n in entries.items():
            op = opmap.get(name)
            if op is not None and op < 256:
                counts[op] = n
    elif entries is not None:  # 3.11, 3.12: indexed by opcode
        for op, n in enumerate(entries[:256]):
            counts[op] = n
    return counts


def _deopt_table(opcode_module: object) -> List[int]:
    """``Dialect.deopt``, from the ``opcode`` module of any version, as
    ``dis`` builds its own tables (``dis`` itself is not imported: it costs
    more than the rest of what an activated process imports)."""
    opmap: Dict[str, int] = getattr(opcode_module, "opmap")  # noqa: B009 - typed access
    table = [0] * 256
    for name, op in opmap.items():
        if op < 256 and not name.startswith("INSTRUMENTED_") and name != "ENTER_EXECUTOR":
            table[op] = op
    numbers: Dict[str, int] = dict(getattr(opcode_module, "_specialized_opmap", {}))  # 3.13+
    if not numbers:  # 3.11, 3.12: the specialised opcodes fill the unnamed slots in order
        opname: List[str] = getattr(opcode_module, "opname")  # noqa: B009
        empty = [op for op, name in enumerate(opname) if name.startswith("<")]
        numbers = dict(zip(getattr(opcode_module, "_specialized_instructions", ()), empty))
    for base, family in getattr(opcode_module, "_specializations", {}).items():
        for name in family:
            specialised = numbers.get(name)
            if specialised is not None and specialised < 256 and base in opmap:
                table[specialised] = opmap[base]
    return table


def _jump_kinds(recipe: Recipe, opcode_module: object) -> List[int]:
    opname: List[str] = getattr(opcode_module, "opname")  # noqa: B009
    kinds = [NOT_A_JUMP] * 256
    for op in getattr(opcode_module, "hasjabs"):  # noqa: B009
        if op < 256:
            kinds[op] = ABSOLUTE
    for op in getattr(opcode_module, "hasjrel"):  # noqa: B009
        if op < 256:
            kinds[op] = BACKWARD if opname[op] in recipe.backward_jumps else FORWARD
    return kinds


def assemble_with_bytecode(sequence: Tuple[Instruction, ...]) -> bytes:
    """Code units of an instruction sequence, inline caches included, assembled by ``bytecode``."""
    import opcode

    from bytecode import ConcreteInstr

    out = bytearray()
    for name, arg in sequence:
        takes_arg = opcode.opmap[name] >= opcode.HAVE_ARGUMENT
        instr = ConcreteInstr(name, arg) if takes_arg else ConcreteInstr(name)
        n_caches = instr.use_cache_opcodes() if hasattr(instr, "use_cache_opcodes") else 0
        out += bytes(instr.assemble()) + b"\x00\x00" * n_caches
    return bytes(out)


def assemble_sequences(recipe: Recipe) -> Dict[str, bytes]:
    """The running version's injected sequences as code units, keyed by role."""
    return {
        "entry_tail": assemble_with_bytecode(recipe.entry),
        "stacked_entry_tail": assemble_with_bytecode(recipe.entry + recipe.prologue.stacked_entry),
        "exit": assemble_with_bytecode(recipe.exit_sequence),
        "return_value": assemble_with_bytecode(((recipe.return_value, 0),)),
    }


def _cache_key(recipe: Recipe) -> str:
    """What the assembled bytes depend on: the bytecode format (the import
    system's magic number) and the recipe's sequences."""
    magic = getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", b"")
    sequences = (recipe.entry, recipe.prologue.stacked_entry, recipe.exit_sequence)
    return f"{magic.hex()}:" + ":".join(repr(sequence) for sequence in sequences) + f":{recipe.return_value}"


def assembled_source(version: Tuple[int, int]) -> str:
    """The text of ``_assembled.py`` for the running interpreter, written by
    setup.py at build time so that no run of an installed fastpatch imports
    ``bytecode``."""
    recipe = recipe_for(version)
    lines = [
        '"""Generated when this wheel was built (setup.py): the injected sequences of',
        f"CPython {version[0]}.{version[1]}, assembled by the bytecode package from _recipes.RECIPES.",
        '_recipes.encoded_sequences() uses them when KEY matches the running interpreter."""',
        "",
        f"KEY = {_cache_key(recipe)!r}",
        f"SEQUENCES = {assemble_sequences(recipe)!r}",
        "",
    ]
    return "\n".join(lines)


def encoded_sequences(recipe: Recipe) -> Dict[str, bytes]:
    """The injected sequences of the running version: from the build-time
    cache when it is for this interpreter and recipe, else assembled now with
    ``bytecode`` (ImportError saying so where it is not installed)."""
    import importlib

    try:
        assembled: Any = importlib.import_module(f"{__package__}._assembled")
    except ImportError:  # an editable install, or a build without bytecode
        pass
    else:
        if assembled.KEY == _cache_key(recipe):
            return dict(assembled.SEQUENCES)
    try:
        return assemble_sequences(recipe)
    except ImportError as exc:
        if exc.name != "bytecode":
            raise
        raise ImportError(
            "fastpatch has no injected sequences assembled for this interpreter (an editable install, or "
            "a wheel built for another build of this CPython) and cannot assemble them: the bytecode "
            "package is not installed. Install it (pip install -e '.[dev]' in a checkout), or "
            "reinstall fastpatch from a wheel built for this interpreter."
        ) from exc


def build_dialect(version: Tuple[int, int]) -> Dialect:
    """Encode the recipe of ``version``, which must be the running one."""
    import opcode

    recipe = recipe_for(version)
    prologue = recipe.prologue
    op = opcode.opmap
    caches = _cache_counts(opcode)
    seq = encoded_sequences(recipe)
    return Dialect(
        version=version,
        line_table=recipe.line_table,
        has_exception_table=recipe.line_table == "locations",
        jump_unit=recipe.jump_unit,
        extended_arg=op["EXTENDED_ARG"],
        caches=bytes(caches),
        jumps=bytes(_jump_kinds(recipe, opcode)),
        deopt=bytes(_deopt_table(opcode)),
        return_value=op[recipe.return_value],
        return_const=op[recipe.return_const] if recipe.return_const else None,
        load_const=op["LOAD_CONST"],
        entry_before=op[prologue.entry_before] if prologue.entry_before else None,
        where_mask=prologue.where_mask,
        stacked_marker=op[prologue.stacked_marker] if prologue.stacked_marker else None,
        stacked_where=prologue.stacked_where,
        stacked_values=prologue.stacked_values,
        entry_has_line=recipe.entry_has_line,
        entry_tail=seq["entry_tail"],
        stacked_entry_tail=seq["stacked_entry_tail"],
        exit_code=seq["exit"],
        return_value_code=seq["return_value"],
    )


_dialect: Optional[Dialect] = None


def running_dialect() -> Dialect:
    """The running interpreter's dialect, built on first use and cached.

    Raises UnsupportedPythonError, naming the interpreter, where no recipe
    has been validated.
    """
    global _dialect
    if _dialect is None:
        impl = sys.implementation.name
        if impl != "cpython":
            raise _unsupported(
                f"fastpatch patches CPython bytecode and cannot run on {impl}; "
                f"supported: CPython {supported_text()}"
            )
        _dialect = build_dialect(sys.version_info[:2])
    return _dialect


__all__ = [
    "ABSOLUTE",
    "BACKWARD",
    "Dialect",
    "FORWARD",
    "NOT_A_JUMP",
    "Prologue",
    "RECIPES",
    "Recipe",
    "SUPPORTED_VERSIONS",
    "recipe_for",
    "running_dialect",
    "supported_text",
]


if __name__ == "__main__":  # `python src/fastpatch/_recipes.py`: the supported versions, for scripts
    print(" ".join(f"{major}.{minor}" for major, minor in SUPPORTED_VERSIONS))
