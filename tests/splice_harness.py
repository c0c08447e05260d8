"""What the splicer tests share: the corpus, a ``dis`` reading of code
objects, where each original instruction must land, and the checks.

The ``test_splice_*`` modules hold ``_splice.splice(code, probe)`` to three
oracles:

* the original code object itself, read with ``dis``: every original
  instruction keeps its opcode, argument, line/position, jump target and
  exception-table coverage, shifted by exactly the injected instructions
  (``test_splice_preservation.py``, with the instrumented corpus running
  next to the original);
* the ``bytecode`` package, doing the same transformation with its
  high-level API (``test_splice_bytecode_oracle.py``);
* the C splicer against the Python one, byte for byte
  (``test_splice_c_vs_python.py``, ``test_splice_hot_code.py``).

``_splice.splice`` is whichever splicer runs (FASTPATCH_SPLICER); the
comparisons of the two call each one by name.

The corpus is source files in ``splice_corpus/`` (one case a file, its
function named ``target``), compiled at run time so that syntax newer than
the running interpreter (``match``, ``except*``) only costs a skipped case;
three cases too big to keep as files are generated here.
"""

from __future__ import annotations

import dis
import os
import sys
import types
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from fastpatch import _splice
from fastpatch._recipes import RECIPES

PY = sys.version_info[:2]
JUMP_OPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
RECIPE = RECIPES[PY]
PROLOGUE = RECIPE.prologue
CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splice_corpus")


def takes_arg(name: str) -> bool:
    return dis.opmap[name] >= dis.HAVE_ARGUMENT


def sig_of(name: str, arg: int) -> Tuple[str, Any]:
    """What View.sig reads back for an injected instruction."""
    return (name, ("int", arg) if takes_arg(name) else ("NoneType", None))


# The injected sequences, from the recipe: the entry after its LOAD_CONST, and the exit.
ENTRY_SIGS = [sig_of(name, arg) for name, arg in RECIPE.entry]
EXIT_SIGS = [sig_of(name, arg) for name, arg in RECIPE.exit_sequence]


def count_sequence(sigs: List[Tuple[str, Any]], sequence: List[Tuple[str, Any]]) -> int:
    """Occurrences of ``sequence`` in ``sigs``, not overlapping."""
    n, i, k = 0, 0, len(sequence)
    while i + k <= len(sigs):
        if sigs[i : i + k] == sequence:
            n += 1
            i += k
        else:
            i += 1
    return n


def no_location() -> Any:
    """What View.location reads back for an instruction with no line or location."""
    return (None, None, None, None) if PY >= (3, 11) else None


# ==========================================================================
# Corpus
# ==========================================================================


def _long_if_chain(n: int) -> str:
    # Each branch is a few instructions; n branches inside a loop make both
    # forward jumps (to the end of the chain) and the backward loop jump far
    # longer than 255 code units, so they need EXTENDED_ARG.
    lines = ["def target(x):", "    r = 0", "    while x > 0:", "        if x == -1:", "            r += -1"]
    for i in range(n):
        lines.append(f"        elif x == {i}:")
        lines.append(f"            r += {i} * x + len(str({i}))")
    lines.append("        x -= 1")
    lines.append("    return r")
    return "\n".join(lines) + "\n"


def _many_consts(n: int) -> str:
    # > 256 distinct constants: the probe, appended to co_consts, needs an
    # EXTENDED_ARG prefix on its LOAD_CONST, and so do late RETURN_CONSTs.
    lines = ["def target(i):"]
    for k in range(n):
        lines.append(f"    if i == {k}:")
        lines.append(f"        return 'r{k}'")
    lines.append("    return 'none'")
    return "\n".join(lines) + "\n"


def _big_line_gaps() -> str:
    # Line deltas beyond one table entry, forwards and (in loops) backwards.
    gap = "\n" * 300
    return (
        "def target(n):\n"
        "    total = 0\n"
        "    for i in range(n):\n"
        f"{gap}"
        "        total += i\n"
        f"{gap}"
        "    return total\n"
    )


GENERATED: Dict[str, Callable[[], str]] = {
    "extended_arg_jumps": lambda: _long_if_chain(300),
    "many_constants": lambda: _many_consts(300),
    "big_line_gaps": _big_line_gaps,
}


class Case(NamedTuple):
    name: str  # splice_corpus/<name>.py, or a GENERATED source
    #: drive(func) -> observation; run on the original and the instrumented function.
    drive: Callable[[Callable[..., Any]], Any]
    calls: int  # activations one drive() starts
    errors: int  # of which end by an exception
    target: str = "target"
    min_version: Tuple[int, int] = (3, 9)

    @property
    def filename(self) -> str:
        if self.name in GENERATED:
            return f"<splice corpus {self.name}>"
        return os.path.join(CORPUS_DIR, f"{self.name}.py")

    @property
    def source(self) -> str:
        make = GENERATED.get(self.name)
        if make is not None:
            return make()
        with open(self.filename, encoding="utf-8") as f:
            return f.read()


def outcome(thunk: Callable[[], Any]) -> Tuple[Any, ...]:
    try:
        return ("ok", thunk())
    except BaseException as exc:  # noqa: BLE001 - we compare what escapes
        return ("raised", type(exc).__name__, str(exc))


def script(it: Any, steps: List[Tuple[str, Any]]) -> List[Any]:
    """Drive a generator or coroutine: each step is ('send', v), ('throw', exc) or ('close', None)."""
    out: List[Any] = []
    for how, value in steps:
        try:
            if how == "send":
                out.append(("yield", it.send(value)))
            elif how == "throw":
                out.append(("yield", it.throw(value)))
            else:
                it.close()
                out.append(("closed",))
        except StopIteration as stop:
            out.append(("return", stop.value))
            break
        except BaseException as exc:  # noqa: BLE001
            out.append(("raised", type(exc).__name__, str(exc)))
            break
    return out


def drive_calls(*calls: Tuple[tuple, dict]) -> Callable[[Callable[..., Any]], Any]:
    def drive(f: Callable[..., Any]) -> Any:
        return [outcome(lambda a=a, k=k: f(*a, **k)) for a, k in calls]

    return drive


def _drive_async_gen(f: Callable[..., Any]) -> Any:
    out = []
    ag = f(3)
    # first item: the loop awaits Suspend(0); we answer 'a0'; it yields 'a0'
    for answers in (["a0"], ["a1"]):
        aw = ag.asend(None)
        out.append(script(aw, [("send", None)] + [("send", a) for a in answers]))
    aw = ag.athrow(KeyError("k"))
    out.append(script(aw, [("send", None)]))
    aw = ag.aclose()
    out.append(script(aw, [("send", None)]))
    return out


CASES: List[Case] = [
    Case("plain", drive_calls(((1,), {}), ((1, 2, 3, 4), {"z": 5, "q": 6}), (("a",), {})), calls=3, errors=1),
    Case("lambda", drive_calls(((2,), {}), ((None, None), {})), calls=2, errors=1),
    Case("closure_with_nonlocal_outer", drive_calls(((4,), {}), ((0,), {})), calls=2, errors=0),
    Case("closure_with_nonlocal_inner", drive_calls(((1,), {}), ((2,), {}), ((None,), {})), calls=3, errors=1),
    Case(
        "generator_yield_from_send_throw",
        lambda f: [
            script(
                f("t"),
                [("send", None), ("send", "a"), ("throw", KeyError("k")), ("send", 5), ("send", 6), ("send", None)],
            ),
            script(f("u"), [("send", None), ("send", "b"), ("send", "c"), ("throw", ValueError())]),
            script(f("v"), [("send", None), ("send", "b"), ("send", "c"), ("throw", TypeError("boom"))]),
            script(f("w"), [("send", None), ("close", None)]),
        ],
        calls=4,
        errors=1,  # the TypeError thrown in escapes; close() is not an error
    ),
    Case(
        "coroutine_await",
        lambda f: [
            script(f(1), [("send", None), ("send", 10), ("send", 5)]),
            script(f(2), [("send", None), ("send", 20), ("throw", ZeroDivisionError())]),
            script(f(3), [("send", None), ("send", 30), ("send", "bad")]),
        ],
        calls=3,
        errors=1,
    ),
    Case("async_generator", _drive_async_gen, calls=1, errors=0),  # ended by aclose(): GeneratorExit is no error
    Case("try_except_else_finally", drive_calls(((2,), {}), ((0,), {}), ((-1,), {})), calls=3, errors=1),
    Case(
        "with_statement",
        drive_calls(((0,), {}), ((1,), {}), ((-1,), {}), ((-1,), {"swallow": True})),
        calls=4,
        errors=1,
    ),
    Case("break_continue_in_finally", drive_calls(((3,), {}), ((4,), {}), ((9,), {})), calls=3, errors=0),
    Case(
        "match_statement",
        lambda f: [
            outcome(lambda v=v: f(v))
            for v in (0, [1, 2, 3, 4], {"k": 1, "j": 2}, "abcd", "ab", f.__globals__["Point"](0, 5), 7.5)
        ],
        calls=7,
        errors=0,
        min_version=(3, 10),
    ),
    Case("except_star", drive_calls(((1,), {}), ((2,), {}), ((3,), {})), calls=3, errors=1, min_version=(3, 11)),
    Case("extended_arg_jumps", drive_calls(((5,), {}), ((299,), {}), ((0,), {})), calls=3, errors=0),
    Case("many_constants", drive_calls(((0,), {}), ((255,), {}), ((299,), {}), ((1000,), {})), calls=4, errors=0),
    Case("big_line_gaps", drive_calls(((5,), {})), calls=1, errors=0),
    Case(
        "while_true_loop",
        lambda f: [outcome(lambda: f(iter([1, 2]))), outcome(lambda: f(iter([1, -2, 3])))],
        calls=2,
        errors=0,
    ),
    Case("while_condition_loop", drive_calls(((3,), {}), ((0,), {})), calls=2, errors=0),
    Case(
        "loop_head_is_first_instruction",
        lambda f: [outcome(lambda: f(iter([1, 2])))],
        calls=1,
        errors=0,  # the StopIteration of next() escapes: the end of an iteration, not an error
    ),
    Case(
        "generator_loop_head_is_first_instruction",
        lambda f: [
            script(f(), [("send", None), ("send", "a"), ("send", None)]),
            script(f(), [("send", None), ("send", "b"), ("close", None)]),
        ],
        calls=2,
        errors=1,  # AttributeError on None.upper(); close() is not an error
    ),
    Case("comprehensions_and_genexpr", drive_calls(((range(4),), {}), (([1, None],), {})), calls=2, errors=1),
    Case("empty_body", drive_calls(((), {})), calls=1, errors=0),
    Case("docstring_and_return_in_loop", drive_calls(((range(5),), {}), (([],), {})), calls=2, errors=0),
]

ACTIVE_CASES = [c for c in CASES if PY >= c.min_version]


def case_namespace(case: Case) -> Dict[str, Any]:
    ns: Dict[str, Any] = {"__name__": f"splice_corpus_{case.name}"}
    exec(compiled(case), ns)
    return ns


_compile_cache: Dict[str, types.CodeType] = {}


def compiled(case: Case) -> types.CodeType:
    code = _compile_cache.get(case.name)
    if code is None:
        with warnings.catch_warnings():
            # 3.14 warns about break/continue in finally (PEP 765): the corpus has them on purpose.
            warnings.simplefilter("ignore", SyntaxWarning)
            code = _compile_cache[case.name] = compile(case.source, case.filename, "exec")
    return code


def nested_codes(code: types.CodeType) -> List[types.CodeType]:
    out = []
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out.append(c)
            out.extend(nested_codes(c))
    return out


def _corpus_codes() -> List[Tuple[str, types.CodeType]]:
    out = []
    for case in ACTIVE_CASES:
        for c in nested_codes(compiled(case)):
            out.append((f"{case.name}:{c.co_name}", c))
    return out


#: (case:function, code) of every function code object in the active corpus.
CORPUS_CODES = _corpus_codes()
CORPUS_IDS = [n for n, _ in CORPUS_CODES]

#: Big standard-library modules, every code object of which is spliced.
STDLIB_MODULES = ["inspect", "argparse", "typing", "asyncio/tasks", "dataclasses", "email/_header_value_parser"]


def stdlib_codes(module: str) -> List[types.CodeType]:
    import sysconfig

    path = os.path.join(sysconfig.get_paths()["stdlib"], module + ".py")
    with open(path, encoding="utf-8") as f:
        top = compile(f.read(), path, "exec")
    return [top] + nested_codes(top)


# ==========================================================================
# Reading code objects with dis
# ==========================================================================


class View:
    """Real instructions of a code object (no EXTENDED_ARG, no CACHE), with
    jump targets, lines/positions and exception entries as instruction indices."""

    def __init__(self, code: types.CodeType) -> None:
        self.code = code
        all_instrs = list(dis.get_instructions(code))
        self.instrs = [i for i in all_instrs if i.opname not in ("EXTENDED_ARG", "CACHE")]
        # An offset maps to the next real instruction at or after it: a jump or
        # range boundary may point at an EXTENDED_ARG prefix.
        index_at: Dict[int, int] = {}
        k = 0
        for i in all_instrs:
            index_at[i.offset] = k
            if i.opname not in ("EXTENDED_ARG", "CACHE"):
                k += 1
        index_at[len(code.co_code)] = len(self.instrs)
        self.index_at = index_at
        self._lines = _line_of_offsets(code)

    def is_jump(self, i: int) -> bool:
        return self.instrs[i].opcode in JUMP_OPS

    def jump_target(self, i: int) -> int:
        off = self.instrs[i].argval
        assert off in self.index_at, f"jump at {self.instrs[i].offset} lands inside an instruction ({off})"
        return self.index_at[off]

    def arg_key(self, i: int) -> Any:
        ins = self.instrs[i]
        if self.is_jump(i):
            return ("->", self.jump_target(i))
        # The type matters: 1, 1.0 and True are equal but different constants.
        return (type(ins.argval).__name__, ins.argval)

    def sig(self, i: int) -> Tuple[str, Any]:
        return (self.instrs[i].opname, self.arg_key(i))

    def sigs(self) -> List[Tuple[str, Any]]:
        return [self.sig(i) for i in range(len(self.instrs))]

    def location(self, i: int) -> Any:
        ins = self.instrs[i]
        if PY >= (3, 11):
            p = ins.positions
            return (p.lineno, p.end_lineno, p.col_offset, p.end_col_offset)
        return self._lines[ins.offset]

    def locations(self) -> List[Any]:
        return [self.location(i) for i in range(len(self.instrs))]

    def exception_entries(self) -> List[Tuple[int, int, int, int, bool]]:
        """(start, end, target, depth, lasti) with instruction indices, as dis parses them."""
        if PY < (3, 11):
            return []
        return [
            (self.index_at[e.start], self.index_at[e.end], self.index_at[e.target], e.depth, e.lasti)
            for e in dis._parse_exception_table(self.code)
        ]

    def cover(self) -> List[Optional[Tuple[int, int, bool]]]:
        """Per instruction, the (handler index, depth, lasti) an exception
        raised there goes to, or None. This is all the interpreter reads from
        the table, independent of how ranges are split or merged into entries."""
        out: List[Optional[Tuple[int, int, bool]]] = [None] * len(self.instrs)
        for start, end, target, depth, lasti in self.exception_entries():
            assert start < end, (start, end)
            for i in range(start, end):
                assert out[i] is None, f"instruction {i} is covered twice"
                out[i] = (target, depth, lasti)
        return out


def _line_of_offsets(code: types.CodeType) -> Dict[int, Optional[int]]:
    """Line number of every code-unit offset (None where the table says none)."""
    out: Dict[int, Optional[int]] = {}
    if PY >= (3, 10):
        for start, end, line in code.co_lines():
            for off in range(start, end, 2):
                out[off] = line
    else:
        starts = dict(dis.findlinestarts(code))
        line: Optional[int] = code.co_firstlineno
        for off in range(0, len(code.co_code), 2):
            line = starts.get(off, line)
            out[off] = line
    return out


def entry_index(instrs: List[Tuple[str, Any]]) -> int:
    """Index, among ``(name, arg)`` instructions, of the one the entry goes
    before, as the recipe's prologue says: the first ``entry_before`` whose
    argument has no "where" bits (3.11+: the function's own RESUME), else
    the first instruction."""
    if PROLOGUE.entry_before is None:
        return 0
    return next(
        k for k, (name, arg) in enumerate(instrs) if name == PROLOGUE.entry_before and arg & PROLOGUE.where_mask == 0
    )


def stacked(instrs: List[Tuple[str, Any]]) -> bool:
    """Whether the prologue has left values on the stack where the entry goes,
    as the recipe's prologue says: the first of its marker, up to the
    instruction the entry goes before, has the marked "where" (a 3.10
    generator's first send under GEN_START, a 3.15 generator expression's
    iterator after RESUME 4)."""
    if PROLOGUE.stacked_marker is None:
        return False
    for name, arg in instrs[: entry_index(instrs) + 1]:
        if name == PROLOGUE.stacked_marker:
            return bool(arg & PROLOGUE.where_mask == PROLOGUE.stacked_where)
    return False


def _instrs(view: View) -> List[Tuple[str, Any]]:
    return [(i.opname, i.arg) for i in view.instrs]


def first_body_index(view: View) -> int:
    """Index of the first instruction of the body, after the prologue: after
    the instruction the entry goes before where the prologue names one, after
    a marker the entry goes before (3.10's GEN_START) where it does not."""
    instrs = _instrs(view)
    if PROLOGUE.entry_before is not None:
        return entry_index(instrs) + 1
    return 1 if stacked(instrs) else 0


def _entry_tail_sigs(view: View) -> List[Tuple[str, Any]]:
    """The entry after its LOAD_CONST: the recipe's, and its stacked tail where the prologue leaves values."""
    if stacked(_instrs(view)):
        return ENTRY_SIGS + [sig_of(name, arg) for name, arg in PROLOGUE.stacked_entry]
    return ENTRY_SIGS


class Layout:
    """Where each original instruction must land in the spliced code.

    ``kinds[j]`` says what new instruction ``j`` is: ``("entry_load", e)``
    and ``("entry_tail", i)`` for the entry instructions, ``("exit", k)`` for the exit
    before return ``k``, ``("const", k)``/``("ret", k)`` for the LOAD_CONST
    and RETURN_VALUE a RETURN_CONST becomes, and ``("own", k)`` for original
    instruction ``k``. ``first[k]`` is where a jump to ``k`` must land: the
    return prefix for returns, and *after* the entry for the first body
    instruction.
    """

    def __init__(self, orig: View) -> None:
        self.orig = orig
        self.entry = e = entry_index(_instrs(orig))
        self.entry_tail = _entry_tail_sigs(orig)
        entry = [("entry_load", e)] + [(f"entry_tail:{i}", e) for i in range(len(self.entry_tail))]
        kinds: List[Tuple[str, int]] = []
        first: List[int] = []
        for k, ins in enumerate(orig.instrs):
            if k == e:
                kinds += entry
            first.append(len(kinds))
            exit_ = [(f"exit:{i}", k) for i in range(len(EXIT_SIGS))]
            if ins.opname == "RETURN_VALUE":
                kinds += exit_ + [("own", k)]
            elif ins.opname == "RETURN_CONST":
                kinds += [("const", k)] + exit_ + [("ret", k)]
            else:
                kinds.append(("own", k))
        first.append(len(kinds))
        self.kinds = kinds
        self.first = first
        self.hole_end = first[e]

    def sigs(self, probe: object) -> List[Tuple[str, Any]]:
        orig = self.orig
        none = ("NoneType", None)
        out = []
        for kind, k in self.kinds:
            if kind == "entry_load":
                out.append(("LOAD_CONST", ("object", probe)))
            elif kind.startswith("entry_tail:"):
                out.append(self.entry_tail[int(kind.split(":")[1])])
            elif kind.startswith("exit:"):
                out.append(EXIT_SIGS[int(kind.split(":")[1])])
            elif kind == "const":
                out.append(("LOAD_CONST", orig.arg_key(k)))
            elif kind == "ret":
                out.append(("RETURN_VALUE", none))
            elif orig.is_jump(k):
                out.append((orig.instrs[k].opname, ("->", self.first[orig.jump_target(k)])))
            else:
                out.append(orig.sig(k))
        return out

    def locations(self) -> List[Any]:
        # The entry has no location of its own (3.10+), or the line of the
        # instruction it precedes (3.9); everything else is its instruction's.
        return [
            no_location() if kind.startswith("entry") and not RECIPE.entry_has_line else self.orig.location(k)
            for kind, k in self.kinds
        ]

    def cover(self, orig_cover: List[Optional[Tuple[int, int, bool]]]) -> List[Optional[Tuple[int, int, bool]]]:
        out: List[Optional[Tuple[int, int, bool]]] = []
        for j, (kind, k) in enumerate(self.kinds):
            c = orig_cover[k]
            if kind.startswith("entry") or c is None:
                out.append(None)  # the entry runs before the token exists
            else:
                target, depth, lasti = c
                # the token sits under everything after the entry
                out.append((self.first[target], depth + (1 if j >= self.hole_end else 0), lasti))
        return out


# ==========================================================================
# Checks against the original code object
# ==========================================================================


def check_against_original(code: types.CodeType, new: types.CodeType, probe: object) -> None:
    """``new`` is ``code`` spliced with ``probe``: every original instruction
    with its argument, line or location, jump target and exception handler,
    each moved by exactly the injected instructions, and every attribute."""
    o, n = View(code), View(new)
    layout = Layout(o)
    assert n.sigs() == layout.sigs(probe)
    assert n.locations() == layout.locations()
    for j, (kind, k) in enumerate(layout.kinds):
        if kind == "own" and o.is_jump(k):
            assert n.is_jump(j)
            assert n.jump_target(j) == layout.first[o.jump_target(k)]
    assert n.cover() == layout.cover(o.cover())
    check_attributes(code, new, probe)


def check_attributes(code: types.CodeType, new: types.CodeType, probe: object) -> None:
    same = [
        "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_nlocals", "co_flags",
        "co_firstlineno", "co_varnames", "co_freevars", "co_cellvars", "co_name", "co_names",
        "co_filename",
    ]
    if PY >= (3, 11):
        same.append("co_qualname")
    for attr in same:
        assert getattr(new, attr) == getattr(code, attr), attr
    assert new.co_consts == code.co_consts + (probe,)
    assert new.co_stacksize == max(code.co_stacksize + 1, 2)


# ==========================================================================
# The two splicers, each by name
# ==========================================================================


def c_splicer() -> Any:
    """The C splicer module, whatever FASTPATCH_SPLICER says: every build of
    fastpatch has it, and a comparison with the Python splicer that quietly
    ran the Python one twice would prove nothing."""
    c = _splice.c_splicer()
    assert c is not None, "the C splicer (fastpatch._csplice) is not built"
    assert c.__name__ == "fastpatch._csplice", c
    return c


def python_splice(code: types.CodeType, probe: object, trailer: Tuple[object, ...] = ()) -> types.CodeType:
    """The Python splicer (``fastpatch._pysplice``), whatever FASTPATCH_SPLICER says."""
    from fastpatch._pysplice import splice_in_python

    return splice_in_python(code, probe, trailer)


def same_code(a: types.CodeType, b: types.CodeType) -> None:
    # The C splicer builds code objects with CPython's constructor, the Python one with code.replace().
    attrs = (
        "co_code", "co_consts", "co_stacksize", "co_flags", "co_names", "co_varnames", "co_cellvars", "co_freevars",
        "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_nlocals", "co_filename", "co_name",
        "co_firstlineno",
    ) + (("co_qualname",) if PY >= (3, 11) else ())
    for attr in attrs:
        assert getattr(a, attr) == getattr(b, attr), attr
    assert a == b
    if PY >= (3, 10):
        assert a.co_linetable == b.co_linetable
    else:
        assert a.co_lnotab == b.co_lnotab
    if PY >= (3, 11):
        assert a.co_exceptiontable == b.co_exceptiontable
