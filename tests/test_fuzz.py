"""Differential fuzzing: programs generated from hypothesmith's Python grammar run plain
and instrumented must behave the same, and fastpatch must count exactly what ran.

The machinery (running, observing, comparing, the worker process) is in fuzz_harness.py;
this module generates programs with hypothesis and hypothesmith, and keeps every program
a run ever shrank to (tests/fuzz_regressions.py) as a plain parametrized test.

Environment:
  FASTPATCH_FUZZ_EXAMPLES  generated programs per run (default DEFAULT_EXAMPLES, fewer on slow builds)
  FASTPATCH_FUZZ_SEED      an integer: explore with that seed instead of the fixed CI sequence
  FASTPATCH_FUZZ_LOG       a file: every skipped or failing program is appended to it (JSON lines)
A longer search for a time budget: ``python tools/fuzz_campaign.py --minutes 30``.
"""

from __future__ import annotations

import json
import keyword
import os
import sys
import tempfile
from textwrap import dedent
from typing import Any, List, Optional

import pytest

import fuzz_harness as harness
from fuzz_harness import FunctionSpec, Program, Totals, Verdict, Worker
from fuzz_regressions import REGRESSIONS

try:
    from hypothesis.configuration import set_hypothesis_home_dir

    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        # With database=None hypothesis still caches (unicode tables, constants) in
        # ./.hypothesis, from the first import of a strategy: keep that out of the checkout.
        set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "fastpatch-fuzz-hypothesis"))
    import hypothesmith.syntactic as hypothesmith_syntactic
    from hypothesis import HealthCheck, assume, given, seed, settings, target
    from hypothesis import strategies as st
    from hypothesis.extra.lark import LarkStrategy
    from lark import Lark
    from lark.grammar import Terminal
    from lark.lexer import PatternStr
except ImportError as exc:  # hypothesmith pulls in hypothesis, lark and libcst
    MISSING: Optional[str] = f"{exc.name or exc} is not installed (pip install hypothesmith)"
else:
    MISSING = None

needs_hypothesmith = pytest.mark.skipif(MISSING is not None, reason=f"fuzzing with hypothesmith: {MISSING}")
# The worker's limits are POSIX: an interval timer, select() on pipes, rlimits.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fuzz harness needs POSIX signals and pipes")

DEFAULT_EXAMPLES = 200
# CI also runs the suite on Py_DEBUG builds and under ASan, several times slower.
DEFAULT_EXAMPLES_SLOW_BUILD = 60


def examples_from_env() -> int:
    value = os.environ.get("FASTPATCH_FUZZ_EXAMPLES", "").strip()
    if value:
        return int(value)
    slow = hasattr(sys, "gettotalrefcount") or "asan" in os.environ.get("LD_PRELOAD", "")
    return DEFAULT_EXAMPLES_SLOW_BUILD if slow else DEFAULT_EXAMPLES


def seed_from_env() -> Optional[int]:
    value = os.environ.get("FASTPATCH_FUZZ_SEED", "").strip()
    return int(value) if value else None


# ---------------------------------------------------------------------------
# Generating programs
# ---------------------------------------------------------------------------

# Alternatives of hypothesmith's grammar rules drawn uniformly make expressions grow
# without bound (most draws overrun hypothesis' buffer) and statements rare. These
# weights make the first, simplest alternative of each expression rule likelier, so
# that programs are many short statements.
_PASS_THROUGH_WEIGHT = {
    # binary operator chains, when an expression takes the long way (see _SHORTCUT_WEIGHT)
    "or_test": 12, "and_test": 12, "comparison": 4, "or_expr": 12, "xor_expr": 12, "and_expr": 12,
    "shift_expr": 12, "arith_expr": 3, "term": 6, "not_test_": 8, "factor": 8, "power": 6,
    "test": 6, "test_nocond": 6, "await_expr": 20,
    "testlist": 6, "testlist_star_expr": 8, "test_or_star_expr": 20, "exprlist": 6, "_testlist_comp": 3,
    "subscriptlist": 6, "subscript": 6, "with_item": 3, "typedparam": 6, "arguments": 4, "argvalue": 6,
    "simple_stmt": 10, "paramvalue": 4, "lambda_params": 4, "parameters": 4, "dotted_name": 6,
}  # fmt: skip
_ATOM_WEIGHTS = {"name": 16, "number": 4, "string_concat": 2}
# Against the whole weighted `test` rule (or_test 6, lambda, walrus, ternary 1 each).
_SHORTCUT_WEIGHT = 18
# Trailers: calls most often (of f, g, h and builtins), attributes and subscripts.
_ATOM_EXPR_WEIGHTS = (12, 1, 1, 3, 1)  # atom, x(), x.name, x(arguments), x[subscripts]
# Statements: mostly assignments, expressions (calls) and control flow; global and
# nonlocal are repaired away more often than not.
_STATEMENT_WEIGHTS = {
    "small_stmt": {"expr_stmt": 4, "assign_stmt": 5, "flow_stmt": 3, "del_stmt": 1, "pass_stmt": 1,
                   "global_stmt": 1, "nonlocal_stmt": 1, "assert_stmt": 1},
    "flow_stmt": {"return_stmt": 3, "raise_stmt": 2, "yield_stmt": 2, "break_stmt": 1, "continue_stmt": 1},
}  # fmt: skip
# Left-recursive repetitions (`stmt+`): more statements per block than one in two.
_REPEAT_WEIGHT = {"__file_input_star": 3, "__suite_plus": 2}

# Expressions nest at most this deep (brackets, calls, lambdas, comprehensions, each a
# `test` inside a `test`) and blocks this deep; past that every rule takes its simplest
# alternative.
MAX_EXPRESSION_NESTING = 2
MAX_BLOCK_NESTING = 3
_NESTING_RULES = frozenset({"test", "test_nocond"})

# Each passes a smaller or zero first argument, and the recursive ones test it first,
# so that a function calling itself (or its caller) through them comes back.
_CALL_TEMPLATES = (
    "if a > 0:\n    b = {}(a - 1, b)", "x = {}(0, a)", "print({}())", "for b in {}(0, b):\n    print(b)",
    "return {}(0)", "await {}(0, b)", "if a:\n    a = next({}(a - 1))", "y = {}(b=a)",
)  # fmt: skip

_STRINGS = ("''", "'a'", "'ab'", "'%s'", "'{}'", "b'ab'", "f'{a}'", "'x\\n'")


def _identifier_strategy() -> Any:
    return st.one_of(st.sampled_from(harness.VARIABLE_NAMES), st.sampled_from(harness.BUILTIN_NAMES))


if MISSING is None:

    class StatementBlocks(hypothesmith_syntactic.GrammarStrategy):  # type: ignore[misc,name-defined]
        """Blocks of statements from hypothesmith's grammar, laid out so that they can be
        the body of a function.

        hypothesmith filters each statement through compile() on its own, which would
        reject every `return`, `yield`, `await` and `break`, and it spaces tokens only
        by chance and leaves indentation to chance, so nested blocks rarely survive.
        Here tokens are spaced and indented as they are drawn, identifiers come from
        small pools of names that exist, literals are small, and whatever does not
        compile in its function is repaired afterwards (fuzz_harness.repair).
        """

        def __init__(self) -> None:
            grammar = Lark(
                hypothesmith_syntactic.LARK_GRAMMAR,
                parser="lalr",
                postlex=hypothesmith_syntactic.PythonIndenter(),
                start="file_input",
            )
            super().__init__(grammar, "file_input", auto_target=False)
            self.literal = {t.name: t.pattern.value for t in grammar.terminals if isinstance(t.pattern, PatternStr)}
            terminals = self.terminal_strategies
            for name, text in self.literal.items():
                terminals[name] = st.just(text)  # a keyword or operator: no choice to draw
            terminals["NAME"] = _identifier_strategy()
            terminals["DEC_NUMBER"] = st.sampled_from(["0", "1", "2", "3", "10", "255"])
            terminals["HEX_NUMBER"] = st.just("0xff")
            terminals["OCT_NUMBER"] = st.just("0o17")
            terminals["BIN_NUMBER"] = st.just("0b101")
            terminals["FLOAT_NUMBER"] = st.sampled_from(["0.5", "2.0", "1e3"])
            terminals["IMAG_NUMBER"] = st.just("1j")
            terminals["STRING"] = st.sampled_from(_STRINGS)
            terminals["LONG_STRING"] = st.just("'''doc'''")
            self._attribute = st.sampled_from(harness.ATTRIBUTE_NAMES)

            # Operators that can make one C-level operation run for minutes (`x ** y`,
            # `x * x` squared in a loop, `1 << y`) and `<>`, which is not Python 3.
            self._keep("power", lambda e: not self._has(e, "**"))
            self._keep("_mul_op", lambda e: not self._has(e, "*"))
            self._keep("_shift_op", lambda e: not self._has(e, "<<"))
            self._keep("augassign_op", lambda e: not self._has(e, "**=", "*=", "<<="))
            self._keep("comp_op", lambda e: not self._has(e, "<>"))
            # Soft keywords as identifiers, and imports, only ever raise.
            self._keep("name", lambda e: [s.name for s in e] == ["NAME"])
            self._keep("small_stmt", lambda e: "import_stmt" not in self._names(e))
            # Indented blocks only: the layout (and repair) relies on one statement per line.
            self._keep("suite", lambda e: "_INDENT" in self._names(e))
            # A bare `except:` would catch the harness' Budget and loop forever.
            self._keep("except_clause", lambda e: len(e) > 3)
            if sys.version_info < (3, 10):
                self._keep("compound_stmt", lambda e: "match_stmt" not in self._names(e))
            self._keep("file_input", lambda e: len(e) > 0)
            for rule in list(self.nonterminal_strategies):
                if rule.startswith("__file_input_star"):
                    self._keep(rule, lambda e: "stmt" in self._names(e))
            for rule, weight in _PASS_THROUGH_WEIGHT.items():
                self._weigh(rule, lambda i, e, w=weight: w if i == 0 else 1)
            # Most expressions are one operand. Down the rule chain test -> or_test ->
            # ... -> atom_expr that costs a draw per level; this shortcut costs one.
            shortcut = (self.names_to_symbols["atom_expr"],)
            for rule in ("test", "test_nocond"):
                self.nonterminal_strategies[rule] = st.sampled_from(
                    [shortcut] * _SHORTCUT_WEIGHT + self._expansions(rule)
                )
            self._weigh("atom", lambda i, e: _ATOM_WEIGHTS.get(e[0].name, 1) if len(e) == 1 else 1)
            self._weigh("atom_expr", lambda i, e: _ATOM_EXPR_WEIGHTS[i] if i < len(_ATOM_EXPR_WEIGHTS) else 1)
            # Shortest first, as LarkStrategy sorts them: a name, a bare statement.
            self._simplest = {rule: self._expansions(rule)[0] for rule in self.nonterminal_strategies}
            for rule, weights in _STATEMENT_WEIGHTS.items():
                self._weigh(rule, lambda i, e, w=weights: w.get(e[0].name, 1) if len(e) == 1 else 1)
            for rule in list(self.nonterminal_strategies):
                for prefix, weight in _REPEAT_WEIGHT.items():
                    if rule.startswith(prefix):
                        self._weigh(rule, lambda i, e, w=weight, r=rule: w if e[0].name == r else 1)

        def _names(self, expansion: Any) -> List[str]:
            return [s.name for s in expansion]

        def _has(self, expansion: Any, *literals: str) -> bool:
            return any(isinstance(s, Terminal) and self.literal.get(s.name) in literals for s in expansion)

        def _expansions(self, rule: str) -> List[Any]:
            # LarkStrategy keeps st.sampled_from(expansions, shortest first) per rule.
            return list(self.nonterminal_strategies[rule].elements)

        def _keep(self, rule: str, predicate: Any) -> None:
            if rule not in self.nonterminal_strategies:
                return
            kept = [e for e in self._expansions(rule) if predicate(e)]
            assert kept, f"no alternative of grammar rule {rule} left"
            self.nonterminal_strategies[rule] = st.sampled_from(kept)

        def _weigh(self, rule: str, weight: Any) -> None:
            if rule not in self.nonterminal_strategies:
                return
            unique: List[Any] = []
            for e in self._expansions(rule):
                if e not in unique:
                    unique.append(e)
            # sampled_from has no weights: repeat an alternative to make it likelier. It
            # still shrinks towards the first, simplest one.
            self.nonterminal_strategies[rule] = st.sampled_from(
                [e for i, e in enumerate(unique) for _ in range(weight(i, e))]
            )

        def do_draw(self, data: Any) -> str:
            self._depth, self._line_start, self._previous = 0, True, ""
            self._nesting = 0
            # LarkStrategy's, not hypothesmith's: that one compiles the whole draw.
            return str(LarkStrategy.do_draw(self, data))

        def gen_ignore(self, data: Any, draw_state: Any) -> None:
            pass  # comments and line continuations only make repair harder

        def draw_symbol(self, data: Any, symbol: Any, draw_state: List[str]) -> None:
            if not isinstance(symbol, Terminal):
                name = symbol.name
                if self._nesting > MAX_EXPRESSION_NESTING or (name == "stmt" and self._depth >= MAX_BLOCK_NESTING):
                    # Deep enough: the simplest alternative, without drawing, so that
                    # a draw ends long before hypothesis' buffer does.
                    for child in self._simplest[name]:
                        self.draw_symbol(data, child, draw_state)
                    return
                nests = name in _NESTING_RULES
                self._nesting += nests
                try:
                    # No per-statement compile() filter: see the class docstring.
                    LarkStrategy.draw_symbol(self, data, symbol, draw_state)
                finally:
                    self._nesting -= nests
                return
            if symbol.name == "_INDENT":
                self._depth += 1
            elif symbol.name == "_DEDENT":
                self._depth -= 1
            elif symbol.name == "_NEWLINE":
                draw_state.append("\n")
                self._line_start, self._previous = True, ""
            else:
                if symbol.name == "NAME" and self._previous == ".":
                    token = data.draw(self._attribute)
                else:
                    token = data.draw(self.terminal_strategies[symbol.name])
                if self._line_start:
                    draw_state.append("    " * self._depth)
                    self._line_start = False
                elif _spaced(self._previous, token):
                    draw_state.append(" ")
                draw_state.append(token)
                self._previous = token

    _BLOCKS: Optional[StatementBlocks] = None

    def statement_blocks() -> StatementBlocks:
        global _BLOCKS
        if _BLOCKS is None:
            _BLOCKS = StatementBlocks()  # building the grammar takes a second or two: once
        return _BLOCKS

    @st.composite
    def programs(draw: Any) -> Program:
        """One to three top-level functions, each a plain function, a generator, a
        coroutine or an async generator, and one or two calls of each."""
        specs = []
        names = harness.FUNC_NAMES[: draw(st.integers(1, len(harness.FUNC_NAMES)))]
        for name in names:
            # Decisions before the block: hypothesis draws the choices after a long
            # draw as their simplest far more often.
            kind = draw(st.sampled_from(["def", "generator", "async def", "generator", "async generator"]))
            guarded = draw(st.booleans())
            # Calls of the program's own functions, which random expressions rarely
            # manage: activations that start inside others, recursion, generators
            # left suspended for the finaliser.
            calls = draw(st.lists(st.tuples(st.sampled_from(_CALL_TEMPLATES), st.sampled_from(names)), max_size=2))
            block = draw(statement_blocks())
            point = st.integers(0, len(harness.yield_points(block)) - 1)
            inserts = [(draw(point), "yield a")] if kind.endswith("generator") else []
            for template, callee in calls:
                if template.startswith("await") and not kind.startswith("async"):
                    template = template[len("await ") :]
                inserts.append((draw(point), template.format(callee)))
            specs.append(FunctionSpec(name, kind.startswith("async"), block, tuple(inserts), guarded))
        source = harness.assemble(specs)
        assume(source is not None)
        argument = st.sampled_from(harness.ARGUMENT_LITERALS)
        calls = []
        for spec in specs:
            for a, b in draw(st.lists(st.tuples(argument, argument), min_size=1, max_size=2)):
                calls.append((spec.name, f"({a}, {b})"))
        return Program(str(source), tuple(calls))


def _spaced(previous: str, token: str) -> bool:
    """Whether a space goes between two tokens: only where Python or a reader needs one."""
    if token in (")", "]", "}", ",", ":", ";") or previous in ("(", "[", "{", ".", "~"):
        return False
    if token == ".":
        return previous[:1].isdigit() or previous == "."
    if token in ("(", "["):
        word = previous[:1].isalnum() or previous[:1] in "_'\"" or previous in (")", "]")
        return keyword.iskeyword(previous) or not word
    return True


# ---------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------

TOTALS = Totals()


class FuzzDifference(AssertionError):
    def __init__(self, program: Program, verdict: Verdict) -> None:
        super().__init__(harness.format_failure(program, verdict))
        self.program = program
        self.verdict = verdict


def check(worker: Worker, program: Program, totals: Totals = TOTALS) -> Verdict:
    """Check one program; raise FuzzDifference if fastpatch changed anything."""
    verdict = worker.check(program)
    totals.add(verdict)
    log = os.environ.get("FASTPATCH_FUZZ_LOG")
    if log and verdict.status != "ok":
        with open(log, "a") as fh:  # skipped and failing programs, one JSON object a line
            fh.write(json.dumps({"verdict": verdict.to_json(), "program": program.to_json()}) + "\n")
    if verdict.status == "diff":
        raise FuzzDifference(program, verdict)
    return verdict


class _SummaryPlugin:
    """Prints what the fuzz tests checked at the end of the pytest session."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if TOTALS.programs or TOTALS.skipped:
            terminalreporter.write_sep("-", "fastpatch fuzz")
            terminalreporter.write_line(TOTALS.summary())


@pytest.fixture(scope="module")
def fuzz_worker(request: Any) -> Any:
    manager = request.config.pluginmanager
    if not manager.has_plugin("fastpatch-fuzz-summary"):
        manager.register(_SummaryPlugin(), "fastpatch-fuzz-summary")
    with Worker() as worker:
        yield worker


def fuzz_settings(examples: int, chosen_seed: Optional[int]) -> Any:
    return settings(
        max_examples=examples,
        derandomize=chosen_seed is None,  # CI runs the same programs every time
        database=None,  # nothing written into the checkout
        deadline=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )


def make_fuzz_test(
    worker_of: Any, examples: int, chosen_seed: Optional[int], totals: Totals = TOTALS, on_difference: Any = None
) -> Any:
    """The hypothesis test that checks generated programs, for pytest and the campaign.

    worker_of() gives the Worker to use; on_difference(program, verdict) sees each
    difference found (the last one seen is the shrunk program that hypothesis reports).
    """

    def body(program: Program) -> None:
        try:
            verdict = check(worker_of(), program, totals)
        except FuzzDifference as failure:
            if on_difference is not None:
                on_difference(failure.program, failure.verdict)
            raise
        if verdict.status == "ok":
            # Steer the search towards programs that run further before raising.
            target(float(verdict.lines), label="lines the plain run executed")

    test = given(program=programs())(body)
    test = fuzz_settings(examples, chosen_seed)(test)
    if chosen_seed is not None:
        test = seed(chosen_seed)(test)
    return test


@needs_hypothesmith
def test_generated_programs_behave_the_same_instrumented(fuzz_worker: Worker) -> None:
    make_fuzz_test(lambda: fuzz_worker, examples_from_env(), seed_from_env())()


# Sampled timing: fewer programs, every function at one rate. Counts, behaviour and the
# weights must be what they are with exact timing; which activations are timed is random.
SAMPLED_EXAMPLES = 25


@needs_hypothesmith
@pytest.mark.parametrize("sample", [16, 0])
def test_generated_programs_behave_the_same_and_count_exactly_when_sampled(sample: int) -> None:
    with Worker(sample=sample) as worker:
        make_fuzz_test(lambda: worker, min(examples_from_env(), SAMPLED_EXAMPLES), seed_from_env())()


def _regression_params() -> List[Any]:
    params = []
    for r in REGRESSIONS:
        bug = sys.version_info[:2] in r.open_bug_on
        params.append(pytest.param(r, id=r.id, marks=pytest.mark.xfail(bug, reason="open fastpatch bug", strict=True)))
    return params


@pytest.mark.parametrize("regression", _regression_params())
def test_regression_program(regression: Any, fuzz_worker: Worker) -> None:
    program = Program(regression.source, tuple(regression.calls))
    verdict = check(fuzz_worker, program)
    assert verdict.status == "ok", f"{regression.id} was skipped: {verdict.reason}"


def test_harness_counts_what_ran(fuzz_worker: Worker) -> None:
    """The ground truth the fuzz tests compare fastpatch against, on a known program."""
    source = dedent(
        """\
        def f(a, b):
            if a:
                return f(a - 1, b)
            raise ValueError(b)
        def g(a, b):
            try:
                yield a
            finally:
                print(b)
        """
    )
    program = Program(harness.PRELUDE + source, (("f", "(2, 'x')"), ("g", "(1, 2)")))
    verdict = check(fuzz_worker, program)
    # f(2) -> f(1) -> f(0) raises through all three; g yields once, then returns.
    assert verdict.status == "ok", verdict.reason
    assert verdict.expected == {"f": {"calls": 3, "errors": 3, "ambiguous": False},
                                "g": {"calls": 1, "errors": 0, "ambiguous": False}}  # fmt: skip
    assert (verdict.functions, verdict.calls, verdict.activations) == (2, 2, 4)


@pytest.mark.parametrize("sample", [16, 0])
def test_harness_counts_what_ran_when_sampled(sample: int) -> None:
    """The regressions' programs, every function sampled: counts, behaviour and weights checked."""
    with Worker(sample=sample) as worker:
        verdicts = [check(worker, Program(r.source, tuple(r.calls))) for r in REGRESSIONS
                    if sys.version_info[:2] not in r.open_bug_on]
    assert [v.status for v in verdicts] == ["ok"] * len(verdicts), [v.reason for v in verdicts if v.status != "ok"]


def test_harness_counts_the_end_of_an_iteration_as_no_error(fuzz_worker: Worker) -> None:
    """StopIteration leaving a plain function (here: next()'s) ends it normally."""
    source = "def f(a, b):\n    return next(iter(y[:a]))\n"
    program = Program(harness.PRELUDE + source, (("f", "(0, 1)"), ("f", "(1, 2)")))
    verdict = check(fuzz_worker, program)
    assert verdict.status == "ok", verdict.reason
    assert verdict.expected == {"f": {"calls": 2, "errors": 0, "ambiguous": False}}
