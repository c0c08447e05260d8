"""Differential fuzzing of fastpatch: the machinery that needs neither hypothesis nor pytest.

A *program* is a module source whose top-level functions (``f``, ``g``, ``h``) take
``(a=0, b=1)``, plus a plan of calls with literal arguments. ``check_program`` runs the
plan four ways, each time from a fresh ``exec`` of the same compiled module:

1. plain, under ``sys.settrace`` + ``sys.setprofile`` (+ a ``sys.monitoring`` tool on
   3.12+): the reference events, and the ground truth for fastpatch's counters
   (activations started, activations ended by an exception other than close()'s or
   the end of an iteration);
2. plain, untraced: must match (1), or the program is nondeterministic and skipped;
3. instrumented, untraced: must match (2), counters must match (1);
4. instrumented, traced: must match (1) event for event, counters too;

and after each instrumented run ``uninstrument`` must give back the original code
object. What a run observes: each call's return value (or yielded values and how the
generator ended) or exception (type, args, traceback lines, cause/context chain),
printed output, warnings and unraisable exceptions.

Generated code is hostile by accident: it can loop forever, recurse, grow strings
without bound or print megabytes. Runs happen in a worker subprocess
(``python fuzz_harness.py --worker``, driven by :class:`Worker`), under a trace step
budget, an interval timer, an address-space limit and a hard timeout from the parent,
so a hang, a crash or an out-of-memory kill costs one program, not the test session.
A plain run that hits any limit skips the program; an instrumented run that hits one
after the plain run did not is a difference, and so is a crash during it.

Generated code only sees a small builtins dict: no ``open``, ``__import__``, ``exec``,
``getattr``, ``id`` or ``hash`` (addresses make runs differ), ``range`` and ``iter``
wrapped so that no C loop can run unbounded. The generator (test_fuzz.py) never
produces ``**``, ``*``, ``<<``, dunder names or a bare ``except:``, and :func:`repair`
drops ``break``/``continue``/``return`` inside ``finally``, so nothing in generated code
can swallow the :class:`Budget` exception that stops a run.
"""

from __future__ import annotations

import ast
import builtins
import dis
import gc
import inspect
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

FILENAME = "<fastpatch-fuzz>"
FUNC_NAMES = ("f", "g", "h")
PARAMS = "a=0, b=1"  # defaults: generated code calls f(), g(x) and h(b=y) too
# Module globals that generated code can read: names from the pool that are bound.
PRELUDE = "x = 1\ny = [1, 2]\n"

# The generator draws identifiers from these pools, so that generated code names
# things that exist far more often than random identifiers would.
VARIABLE_NAMES = ("a", "b", "x", "y", "f", "g", "h")
BUILTIN_NAMES = (
    "print", "len", "range", "list", "str", "int", "bool", "tuple", "dict", "sorted", "isinstance",
    "type", "locals", "next", "iter", "min", "max", "sum", "abs",
    "Exception", "ValueError", "TypeError", "KeyError", "RuntimeError", "StopIteration", "ZeroDivisionError",
)  # fmt: skip
ATTRIBUTE_NAMES = ("append", "pop", "real", "count", "upper", "get", "keys", "send", "close")
ARGUMENT_LITERALS = ("0", "1", "-1", "2", "'ab'", "''", "[1, 2]", "()", "None", "True", "0.5", "{1: 'a'}")

# How far one run may go before it is stopped (and, for a plain run, the program skipped).
STEP_BUDGET = 5_000  # settrace/setprofile events in generated frames
RUN_SECONDS = 3.0  # wall time of one run; then Budget is raised every RETRY_SECONDS
RETRY_SECONDS = 0.05
OUTPUT_LIMIT = 20_000  # characters printed by one run
RANGE_LIMIT = 10_000  # elements in a range() generated code may make
GENERATED_DEPTH = 50  # frames of generated code on the stack at once (traced runs stop there)
RECURSION_HEADROOM = 150  # the interpreter's limit, this far below the harness: a backstop
MAX_RESUMES = 20  # next()/send() calls the driver makes on one generator or coroutine
MEMORY_HEADROOM = 2 << 30  # bytes of address space the worker may add to what it had at start
PROGRAM_TIMEOUT = 30.0  # seconds the parent waits for one program before killing the worker

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_PY = sys.version_info[:2]


class Budget(BaseException):
    """Stops a run. A BaseException that generated code cannot name or catch."""


# ---------------------------------------------------------------------------
# Programs: assembling and repairing generated source
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    source: str
    calls: Tuple[Tuple[str, str], ...]  # (function name, argument tuple as a literal)

    def to_json(self) -> Dict[str, Any]:
        return {"source": self.source, "calls": [list(c) for c in self.calls]}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Program:
        return cls(data["source"], tuple((str(n), str(a)) for n, a in data["calls"]))

    def as_regression(self, note: str) -> str:
        """The entry to paste into tests/fuzz_regressions.py."""
        calls = ",\n".join(f"            ({n!r}, {a!r})" for n, a in self.calls)
        return (
            "    Regression(\n"
            f"        note={note!r},\n"
            f"        source={self.source!r},\n"
            f"        calls=(\n{calls},\n        ),\n"
            "    ),\n"
        )


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    is_async: bool
    block: str  # statements at indentation 0, four spaces per level
    # Statements to add at top level: (index into yield_points(block), statement lines).
    inserts: Tuple[Tuple[int, str], ...] = ()
    guarded: bool = False  # each top-level statement in `try: ... except Exception: pass`


_CONTINUATIONS = ("else", "elif", "except", "finally")


def _first_word(line: str) -> str:
    m = re.match(r"\s*([A-Za-z_]+)", line)
    return m.group(1) if m else ""


def yield_points(block: str) -> List[int]:
    """Line indices of the block where a top-level statement may be inserted."""
    lines = [ln for ln in block.split("\n") if ln.strip()]
    points = []
    for i in range(len(lines) + 1):
        if i < len(lines) and (lines[i].startswith(" ") or _first_word(lines[i]) in _CONTINUATIONS):
            continue
        if i > 0 and lines[i - 1].lstrip().startswith("@"):
            continue  # between a decorator and its def
        points.append(i)
    return points


def assemble(functions: Sequence[FunctionSpec]) -> Optional[str]:
    """Module source for these functions, repaired until it compiles, or None."""
    lines = PRELUDE.rstrip("\n").split("\n")
    protected = set(range(1, len(lines) + 1))
    for spec in functions:
        body = [ln for ln in spec.block.split("\n") if ln.strip()]
        points = yield_points(spec.block)
        # Last point first, so that earlier indices stay valid.
        for point, statement in sorted(spec.inserts, key=lambda p: -(p[0] % len(points))):
            body[points[point % len(points)] : points[point % len(points)]] = statement.split("\n")
        lines.append(f"{'async ' if spec.is_async else ''}def {spec.name}({PARAMS}):")
        protected.add(len(lines))
        if spec.guarded:
            # Most generated statements raise: guarded, a function runs on past them.
            starts = [i for i in yield_points("\n".join(body)) if i < len(body)] + [len(body)]
            for start, end in zip(starts, starts[1:]):
                lines.append("    try:")
                protected.add(len(lines))
                lines.extend("        " + ln for ln in body[start:end])
                lines.extend(["    except Exception:", "        pass"])
                protected.update((len(lines) - 1, len(lines)))
        lines.extend("    " + ln for ln in (body or ["pass"]) if not spec.guarded)
        if spec.guarded and not body:
            lines.append("    pass")
    return repair("\n".join(lines) + "\n", protected)


def _compiles(source: str) -> Optional[SyntaxError]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings ("is" with a literal, ...) are fine
        try:
            compile(source, FILENAME, "exec", dont_inherit=True)
        except SyntaxError as exc:
            return exc
    return None


_HEADER_FIXES = {
    "if": "if True:",
    "elif": "elif True:",
    "while": "if True:",
    "for": "if True:",
    "with": "if True:",
    "async": "if True:",
    "except": "except Exception:",
    "case": "case _ if True:",
    "match": "match 0:",
}


def _fix_line(lines: List[str], i: int) -> bool:
    """Make line i harmless: a header keeps its block, any other statement becomes pass."""
    line = lines[i]
    indent = line[: len(line) - len(line.lstrip())]
    following = next((ln for ln in lines[i + 1 :] if ln.strip()), "")
    is_header = len(following) - len(following.lstrip()) > len(indent)
    if is_header:
        word = _first_word(line)
        if word in ("def", "async") and re.match(r"\s*(async\s+)?def\s", line):
            name = re.match(r"\s*(?:async\s+)?def\s+(\w+)", line)
            fixed = f"def {name.group(1) if name else 'x'}():"
        elif word == "class":
            name = re.match(r"\s*class\s+(\w+)", line)
            fixed = f"class {name.group(1) if name else 'x'}:"
        elif word in _HEADER_FIXES:
            fixed = _HEADER_FIXES[word]
        else:
            return False
    else:
        fixed = "pass"
    if line.strip() == fixed:
        return False
    lines[i] = indent + fixed
    return True


def _finally_escapes(tree: ast.AST) -> List[int]:
    """Lines of break/continue/return that leave a finally block: they would swallow Budget."""
    found: List[int] = []

    def visit(node: ast.AST, in_finally: bool, loop_in_finally: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            in_finally = loop_in_finally = False
        if in_finally:
            if isinstance(node, ast.Return) or (isinstance(node, (ast.Break, ast.Continue)) and not loop_in_finally):
                found.append(node.lineno)
        if isinstance(node, ast.Try):
            for child in node.body + node.handlers + node.orelse:  # type: ignore[operator]
                visit(child, in_finally, loop_in_finally)
            for child in node.finalbody:
                visit(child, True, False)
            return
        if in_finally and isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            for child in node.body:
                visit(child, True, True)
            for child in node.orelse:
                visit(child, True, loop_in_finally)
            visit(node.target if isinstance(node, (ast.For, ast.AsyncFor)) else node.test, True, loop_in_finally)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, in_finally, loop_in_finally)

    visit(tree, False, False)
    return found


def repair(source: str, protected: Optional[set] = None, attempts: int = 40) -> Optional[str]:
    """Replace the statements that stop `source` from compiling (or that could swallow
    Budget) until it compiles; None if that fails or would touch a protected line."""
    protected = protected or set()
    lines = source.split("\n")
    for _ in range(attempts):
        text = "\n".join(lines)
        try:
            error = _compiles(text)
        except (ValueError, RecursionError, MemoryError, OverflowError):
            return None  # null bytes, nesting too deep for the parser
        if error is None:
            escapes = [n for n in _finally_escapes(ast.parse(text)) if n not in protected]
            if not escapes:
                return text
            for n in escapes:
                if not _fix_line(lines, n - 1):
                    return None
            continue
        n = error.lineno
        if not n or n > len(lines) or n in protected or not _fix_line(lines, n - 1):
            return None
    return None


def function_names(source: str) -> List[str]:
    tree = ast.parse(source)
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


# ---------------------------------------------------------------------------
# Observing a run
# ---------------------------------------------------------------------------


def describe(value: Any) -> str:
    """A bounded, address-free description of a value: safe on cycles and huge objects,
    and it never runs generated code (instances are described by their type)."""
    return _ADDRESS.sub("0x?", _describe(value, [200], 0))


def _describe(v: Any, budget: List[int], depth: int) -> str:
    budget[0] -= 1
    if budget[0] < 0 or depth > 6:
        return "..."
    t = type(v)
    if v is None or t in (bool, float, complex):
        return repr(v)
    if t is int:
        return repr(v) if v.bit_length() <= 4000 else f"<int of {v.bit_length()} bits, {v % 1_000_003} mod p>"
    if t in (str, bytes, bytearray):
        r = repr(v)
        return r if len(r) <= 200 else f"{r[:200]}...<{len(v)}>"
    if t in (list, tuple):
        items = [_describe(x, budget, depth + 1) for x in v[:20]]
        return f"{t.__name__}[{', '.join(items)}{', ...' if len(v) > 20 else ''}]"
    if t in (set, frozenset):
        if len(v) > 50:
            return f"{t.__name__}<{len(v)}>"
        return f"{t.__name__}{{{', '.join(sorted(_describe(x, budget, depth + 1) for x in v))}}}"
    if t is dict:
        items = [
            f"{_describe(k, budget, depth + 1)}: {_describe(x, budget, depth + 1)}" for k, x in list(v.items())[:20]
        ]
        return f"dict{{{', '.join(items)}{', ...' if len(v) > 20 else ''}}}"
    if t is range:
        return repr(v)
    if isinstance(v, BaseException):
        return f"{t.__qualname__}({_describe(v.args, budget, depth + 1)})"
    if isinstance(v, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"<{t.__name__} {getattr(v, '__qualname__', '?')}>"
    if isinstance(v, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
        return f"<{t.__name__} {v.__qualname__}>"
    if isinstance(v, type):
        return f"<class {v.__qualname__}>"
    return f"<{t.__qualname__} object>"


def describe_exception(exc: BaseException) -> Dict[str, Any]:
    """Type, args, the generated frames of its traceback, and the cause/context chain."""
    chain = []
    seen = {id(exc)}
    link: Optional[BaseException] = exc
    while link is not None and len(chain) < 5:
        chain.append(
            {
                "type": type(link).__qualname__,
                "args": describe(link.args),
                "traceback": _generated_traceback(link.__traceback__),
                "suppress_context": link.__suppress_context__,
            }
        )
        nxt = link.__cause__ if link.__cause__ is not None else link.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        chain[-1]["next"] = "cause" if link.__cause__ is not None else "context"
        link = nxt
    return {"raised": chain}


def _generated_traceback(tb: Optional[types.TracebackType]) -> List[Tuple[str, int]]:
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == FILENAME:
            frames.append((code.co_name, tb.tb_lineno))
        tb = tb.tb_next
    return frames


class _Output(io.StringIO):
    def write(self, s: str) -> int:
        if self.tell() + len(s) > OUTPUT_LIMIT:
            raise Budget("output limit")
        return super().write(s)


def _safe_range(*args: Any) -> range:
    r = range(*args)
    if len(r) > RANGE_LIMIT:
        raise ValueError(f"fuzz harness: range of {len(r)} elements")
    return r


def _safe_iter(obj: Any) -> Any:
    # iter(callable, sentinel) can make an endless C-level iterator.
    return iter(obj)


def make_builtins() -> Dict[str, Any]:
    """A fresh builtins dict per run: generated code may set attributes on what it finds."""
    names = {n for n in BUILTIN_NAMES if hasattr(builtins, n)}
    table = {n: getattr(builtins, n) for n in names}
    table["range"] = _safe_range
    table["iter"] = _safe_iter
    table["__build_class__"] = builtins.__build_class__  # type: ignore[attr-defined]
    table["super"] = super
    table["object"] = object
    return table


# Opcodes of a frame's last instruction at a 'return' trace event, to tell a
# suspension (yield, await) and a return from an exit by exception.
_RETURN_OPS = {dis.opmap[n] for n in ("RETURN_VALUE", "RETURN_CONST") if n in dis.opmap}
_YIELD_OPS = {dis.opmap[n] for n in ("YIELD_VALUE", "YIELD_FROM") if n in dis.opmap}
_YIELD_FROM = dis.opmap.get("YIELD_FROM")
_RESUME = dis.opmap.get("RESUME")


# The end of an iteration (README, Timing semantics): StopIteration or
# StopAsyncIteration leaving a frame as it is ends the activation normally;
# where CPython turns it into RuntimeError as it leaves, it is an error.
_END_SIGNALS = ("StopIteration", "StopAsyncIteration")


def _end_signal_is_error(code: types.CodeType, signal: str) -> bool:
    if signal == "StopIteration":
        return bool(code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR))
    return bool(code.co_flags & inspect.CO_ASYNC_GENERATOR)


def _exit_kind(frame: types.FrameType, last_event: str) -> str:
    code = frame.f_code.co_code
    i = frame.f_lasti
    if i < 0 or i >= len(code):
        return "raise"
    op = code[i]
    if op in _RETURN_OPS:
        return "return"
    suspended = op in _YIELD_OPS
    if _YIELD_FROM is not None and i + 2 < len(code) and code[i + 2] == _YIELD_FROM:
        suspended = True  # 3.9/3.10: a suspended `yield from`/await leaves f_lasti one instruction early
    if op == _RESUME and code[i + 1] & 3:
        suspended = True  # 3.13 reports a yield at the RESUME that follows it
    if suspended and last_event == "exception":
        return "raise"  # thrown in at the yield (close(), throw()) with no handler: it ends there
    return "yield" if suspended else "raise"


@dataclass
class _Activation:
    code: types.CodeType
    started: bool = False
    exceptions: List[str] = field(default_factory=list)  # exception types seen since the last resume
    last_event: str = "call"


@dataclass
class Expected:
    """What fastpatch must count for one top-level function, from the plain traced run."""

    calls: int = 0
    errors: int = 0
    ambiguous: bool = False  # an exit whose exception (GeneratorExit or not) the trace cannot tell

    def to_json(self) -> Dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors, "ambiguous": self.ambiguous}


class _Recorder:
    """settrace + setprofile callbacks (and _Monitor's): events of generated frames, the step budget, and
    (for the plain run) activations of the top-level functions, from first resume to end.

    An activation starts at a frame's first 'line' event (close() of a generator that
    never ran fires 'call' on 3.9/3.10 but runs no line). It ends at a 'return' event
    that is not a suspension, by an exception if the frame's last instruction is not a
    return; that exception is an error unless it is the GeneratorExit of close() or
    the end of an iteration (StopIteration, StopAsyncIteration, as _END_SIGNALS). A
    suspended generator closed with no handler around its yield ends without any event
    on 3.13+: activations left open when everything is closed ended that way.
    """

    def __init__(self, tracked: Dict[types.CodeType, str]) -> None:
        self.events: List[Tuple[Any, ...]] = []
        self.steps = 0
        self.lines = 0
        self.tracked = tracked
        self.expected: Dict[str, Expected] = {name: Expected() for name in tracked.values()}
        self.active: Dict[int, _Activation] = {}
        # Activations taken for ended, and whether that counted an error: CPython 3.15
        # reports a 'return' for the frame that creates a generator expression whose
        # iterable fails, and the frame then goes on. Its next event undoes the end.
        self.ended: Dict[int, Tuple[_Activation, bool]] = {}
        self.stopped: Optional[str] = None

    def _step(self, may_raise: bool = True) -> bool:
        """Count an event; False (or Budget, where raising is safe) once the run is over its limits."""
        self.steps += 1
        if self.steps <= STEP_BUDGET and not _time_is_up:
            return True
        if may_raise:
            # Raising from a trace function also removes it: remember why.
            self.stopped = "step budget" if self.steps > STEP_BUDGET else "time limit"
            raise Budget(self.stopped)
        return False

    def trace(self, frame: types.FrameType, event: str, arg: Any) -> Optional[Callable[..., Any]]:
        code = frame.f_code
        if code.co_filename != FILENAME:
            return None
        self._step()
        if event == "call" and _generated_depth(frame) > GENERATED_DEPTH:
            # A RecursionError must never hit a trace or monitoring callback: CPython
            # drops the trace function, and can call a monitoring callback forever.
            self.stopped = "recursion depth"
            raise Budget(self.stopped)
        fresh = event == "call" and frame.f_trace is None
        if event == "line":
            self.lines += 1
            detail: Any = None
        elif event == "return":
            detail = describe(arg)
        elif event == "exception":
            detail = arg[0].__qualname__
        else:
            detail = "fresh" if fresh else "resume"
        self.events.append((event, code.co_name, code.co_firstlineno, frame.f_lineno, detail))
        if code in self.tracked:
            self._account(frame, event, arg, fresh)
        return self.trace

    def _account(self, frame: types.FrameType, event: str, arg: Any, fresh: bool) -> None:
        key = id(frame)
        if fresh:
            self.active[key] = _Activation(frame.f_code)
            self.ended.pop(key, None)
            return
        if key in self.ended:
            act, counted = self.ended.pop(key)
            if counted:
                self.expected[self.tracked[act.code]].errors -= 1
            self.active[key] = act
        act = self.active.get(key)
        if act is None:
            return
        if event == "call":
            act.exceptions = []
        elif event == "line" and not act.started:
            act.started = True
            self.expected[self.tracked[act.code]].calls += 1
        elif event == "exception":
            act.exceptions.append(arg[0].__name__)
        elif event == "return":
            kind = _exit_kind(frame, act.last_event)
            if kind != "yield":
                del self.active[key]
                counted = False
                if act.started and kind == "raise":
                    exp = self.expected[self.tracked[act.code]]
                    closing = "GeneratorExit" in act.exceptions
                    signals = [e for e in act.exceptions if e in _END_SIGNALS]
                    if signals and not closing and len(set(act.exceptions)) > 1:
                        # which one left the frame? (one raised and caught in a finally,
                        # or 3.12+'s RuntimeError made of a generator's StopIteration)
                        exp.ambiguous = True
                    elif signals and not closing:
                        if _end_signal_is_error(act.code, signals[-1]):
                            exp.errors += 1
                            counted = True
                    elif not closing:
                        exp.errors += 1
                        counted = True
                    elif any(e != "GeneratorExit" for e in act.exceptions):
                        exp.ambiguous = True
                act.last_event = event
                self.ended[key] = (act, counted)
                return
        act.last_event = event

    def profile(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event.startswith("c_") and frame.f_code.co_filename == FILENAME:
            if not self._step(may_raise=False):
                return
            name = getattr(arg, "__qualname__", None) or type(arg).__name__
            self.events.append(("p:" + event, frame.f_code.co_name, frame.f_code.co_firstlineno, frame.f_lineno, name))


_MONITORING = getattr(sys, "monitoring", None)
# Events a sys.monitoring tool (3.12+) sees: the same ones, plain or instrumented.
_MONITORED = (
    "PY_START", "PY_RESUME", "PY_RETURN", "PY_YIELD", "PY_UNWIND", "PY_THROW", "RAISE", "RERAISE",
    "EXCEPTION_HANDLED", "LINE", "CALL", "C_RETURN", "C_RAISE", "STOP_ITERATION",
)  # fmt: skip
# Local events can be switched off per code location, which spares the harness' own code.
_LOCAL = {"PY_START", "PY_RESUME", "PY_RETURN", "PY_YIELD", "CALL", "LINE", "STOP_ITERATION"}


class _Monitor:
    """A sys.monitoring tool recording the events of generated code into a _Recorder."""

    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder
        self.tool: Optional[int] = None

    def start(self) -> None:
        mon = _MONITORING
        if mon is None:
            return
        tool = next((t for t in range(6) if mon.get_tool(t) is None), None)
        if tool is None:
            return
        mon.use_tool_id(tool, "fastpatch-fuzz")
        self.tool = tool
        mon.restart_events()  # what an earlier run DISABLEd must be seen again
        mask = 0
        for name in _MONITORED:
            event = getattr(mon.events, name)
            mon.register_callback(tool, event, self._callback(name))
            mask |= event
        mon.set_events(tool, mask)

    def stop(self) -> None:
        mon = _MONITORING
        if mon is None or self.tool is None:
            return
        mon.set_events(self.tool, 0)
        for name in _MONITORED:
            mon.register_callback(self.tool, getattr(mon.events, name), None)
        mon.free_tool_id(self.tool)
        self.tool = None

    def _callback(self, name: str) -> Callable[..., Any]:
        recorder = self.recorder
        disable = _MONITORING.DISABLE if name in _LOCAL else None  # type: ignore[union-attr]

        def callback(code: types.CodeType, *args: Any) -> Any:
            if code.co_filename != FILENAME:
                return disable
            # Only the settrace function stops a run: CPython 3.12/3.13 can loop, eat
            # memory or crash when a monitoring callback raises in some events. Past
            # the limits, callbacks switch themselves off so the timer meets generated code.
            if not recorder._step(may_raise=False):
                return disable
            if name == "LINE":
                line, detail = args[0], None
            else:
                line = sys._getframe(1).f_lineno
                if name in ("PY_RETURN", "PY_YIELD"):
                    detail = describe(args[1])
                elif name in ("CALL", "C_RETURN", "C_RAISE"):
                    detail = getattr(args[1], "__qualname__", None) or type(args[1]).__name__
                elif len(args) > 1:
                    detail = type(args[1]).__qualname__
                else:
                    detail = None
            recorder.events.append(("m:" + name, code.co_name, code.co_firstlineno, line, detail))
            return None

        return callback


_timer_armed = False
_time_is_up = False


def _on_timer(signum: int, frame: Any) -> None:
    # Raised in generated code only, never in a trace or monitoring callback (see
    # _Monitor): those see _time_is_up and stand aside, and the interval timer fires
    # again soon.
    global _time_is_up
    if _timer_armed:
        _time_is_up = True
        if frame is not None and frame.f_code.co_filename == FILENAME:
            raise Budget("time limit")


def _arm_timer(seconds: float) -> None:
    global _timer_armed, _time_is_up
    signal.signal(signal.SIGALRM, _on_timer)
    _timer_armed, _time_is_up = True, False
    signal.setitimer(signal.ITIMER_REAL, seconds, RETRY_SECONDS)


def _disarm_timer() -> None:
    global _timer_armed, _time_is_up
    _timer_armed, _time_is_up = False, False
    signal.setitimer(signal.ITIMER_REAL, 0)


def _drive(func: Callable[..., Any], name: str, args_src: str) -> Dict[str, Any]:
    """Call func and, for a generator or coroutine, resume it to the end (or close it)."""
    out: Dict[str, Any] = {"call": f"{name}{args_src}"}
    try:
        result = func(*ast.literal_eval(args_src))
        if isinstance(result, types.GeneratorType):
            out.update(_drive_iterator(result.send, result.close))
        elif isinstance(result, types.CoroutineType):
            out.update(_drive_iterator(result.send, result.close))
        elif isinstance(result, types.AsyncGeneratorType):
            out.update(_drive_async_generator(result))
        else:
            out["return"] = describe(result)
    except Exception as exc:
        out.update(describe_exception(exc))
    return out


def _drive_iterator(send: Callable[[Any], Any], close: Callable[[], Any]) -> Dict[str, Any]:
    values = []
    for _ in range(MAX_RESUMES):
        try:
            values.append(describe(send(None)))
        except StopIteration as stop:
            return {"yielded": values, "return": describe(stop.value)}
        except Exception as exc:
            return {"yielded": values, **describe_exception(exc)}
    try:
        close()
    except Exception as exc:
        return {"yielded": values, "closed": True, **describe_exception(exc)}
    return {"yielded": values, "closed": True}


def _await(awaitable: Any) -> Tuple[str, Any]:
    """Run an awaitable without an event loop: ('value', v), ('stop', None) or ('raise', exc)."""
    for _ in range(MAX_RESUMES):
        try:
            awaitable.send(None)
        except StopIteration as stop:
            return "value", stop.value
        except StopAsyncIteration:
            return "stop", None
        except Exception as exc:
            return "raise", exc
    awaitable.close()
    return "raise", RuntimeError("fuzz harness: awaitable kept suspending")


def _drive_async_generator(agen: Any) -> Dict[str, Any]:
    values = []
    for _ in range(MAX_RESUMES):
        how, value = _await(agen.asend(None))
        if how == "value":
            values.append(describe(value))
        elif how == "stop":
            return {"yielded": values, "return": "None"}
        else:
            return {"yielded": values, **describe_exception(value)}
    how, value = _await(agen.aclose())
    if how == "raise":
        return {"yielded": values, "closed": True, **describe_exception(value)}
    return {"yielded": values, "closed": True}


def _close_leftovers() -> None:
    """End every suspended generator/coroutine of generated code, so every activation
    has ended when the counters are read, wherever generated code hid the object."""
    gc.collect()
    profiler = sys.getprofile()
    sys.setprofile(None)  # the scan makes a C call per object on the heap
    try:
        leftovers = [
            o
            for o in gc.get_objects()
            if isinstance(o, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType))
            and _code_of(o).co_filename == FILENAME
        ]
    finally:
        sys.setprofile(profiler)
    for o in leftovers:
        if isinstance(o, types.AsyncGeneratorType):
            if o.ag_frame is not None and not o.ag_running:
                how, value = _await(o.aclose())
        elif isinstance(o, types.GeneratorType):
            if inspect.getgeneratorstate(o) == inspect.GEN_SUSPENDED:
                o.close()
        elif inspect.getcoroutinestate(o) == inspect.CORO_SUSPENDED:
            o.close()
    del leftovers
    gc.collect()


def _code_of(o: Any) -> types.CodeType:
    return getattr(o, "gi_code", None) or getattr(o, "cr_code", None) or o.ag_code


def _generated_depth(frame: Optional[types.FrameType]) -> int:
    depth = 0
    while frame is not None and depth <= GENERATED_DEPTH:
        depth += frame.f_code.co_filename == FILENAME
        frame = frame.f_back
    return depth


def _stack_depth() -> int:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


@dataclass
class RunResult:
    observed: Dict[str, Any]  # calls, stdout, warnings, unraisable (+ events when traced)
    stopped: Optional[str] = None  # why the run was stopped: budget, time, output, memory
    expected: Dict[str, Expected] = field(default_factory=dict)
    lines: int = 0
    stats: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def run_once(
    program: Program,
    code: types.CodeType,
    names: List[str],
    *,
    instrumented: bool,
    traced: bool,
    sample: Optional[int] = None,
) -> RunResult:
    """Run the plan once from a fresh exec of `code`. Instrumented runs instrument every
    top-level function (at rate `sample`, when given), and check stats and uninstrument
    themselves."""
    import fastpatch

    ns: Dict[str, Any] = {"__builtins__": make_builtins(), "__name__": "fuzzprog"}
    exec(code, ns)
    funcs = {n: ns[n] for n in names}
    originals = {n: f.__code__ for n, f in funcs.items()}
    problems: List[str] = []
    if instrumented:
        for f in funcs.values():
            if sample is None:
                fastpatch.instrument(f)
            else:
                fastpatch.instrument(f, sample=sample)
            fastpatch.reset(f)
    recorder = _Recorder({} if instrumented else {c: n for n, c in originals.items()})
    calls: List[Dict[str, Any]] = []
    unraisable: List[str] = []
    stopped: Optional[str] = None
    output = _Output()

    def on_unraisable(u: Any) -> None:
        nonlocal stopped
        if isinstance(u.exc_value, Budget):
            stopped = stopped or str(u.exc_value)
        unraisable.append(_ADDRESS.sub("0x?", f"{u.exc_type.__name__}: {u.err_msg}: {type(u.object).__name__}"))

    saved = (sys.stdout, sys.unraisablehook, sys.getrecursionlimit(), gc.isenabled())
    gc.disable()
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.stdout = output
        sys.unraisablehook = on_unraisable
        sys.setrecursionlimit(_stack_depth() + RECURSION_HEADROOM)
        try:
            _arm_timer(RUN_SECONDS)
            monitor = _Monitor(recorder)
            if traced:
                sys.settrace(recorder.trace)
                sys.setprofile(recorder.profile)
                monitor.start()
            try:
                for name, args_src in program.calls:
                    calls.append(_drive(funcs[name], name, args_src))
                # Generated code may have stored generators anywhere it can reach.
                for key in [k for k in ns if not k.startswith("__")]:
                    del ns[key]
                for f in funcs.values():
                    f.__dict__.clear()
                _close_leftovers()
            finally:
                if traced:
                    monitor.stop()
                    if sys.gettrace() != recorder.trace:
                        stopped = stopped or recorder.stopped or "trace function lost"
                    sys.settrace(None)
                    sys.setprofile(None)
        except Budget as exc:
            stopped = stopped or str(exc)
        except MemoryError:
            stopped = "memory"
        except RecursionError:
            stopped = "recursion in the harness"
        finally:
            _disarm_timer()
            sys.stdout, sys.unraisablehook = saved[0], saved[1]
            sys.setrecursionlimit(saved[2])
    seconds = time.perf_counter() - started
    if stopped is not None:
        # What is left must not run later, outside any limit.
        ns.clear()
        _arm_timer(RUN_SECONDS)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sys.stdout = io.StringIO()
                _close_leftovers()
        except BaseException:  # best effort: the program is discarded anyway
            pass
        finally:
            _disarm_timer()
            sys.stdout = saved[0]
    if saved[3]:
        gc.enable()
    result = RunResult(
        observed={
            "calls": calls,
            "stdout": _ADDRESS.sub("0x?", output.getvalue()),
            "warnings": [_ADDRESS.sub("0x?", f"{w.category.__name__}: {w.message}") for w in caught],
            "unraisable": unraisable,
        },
        stopped=stopped,
        expected=recorder.expected,
        lines=recorder.lines,
        seconds=seconds,
    )
    if traced:
        result.observed["events"] = recorder.events
    if instrumented:
        for n, f in funcs.items():
            s = fastpatch.stats(f)
            result.stats[n] = {
                "calls": s.calls,
                "completed": s.completed,
                "errors": s.errors,
                "timed": s.timed,
                "sample": s.sample,
                "histogram": sum(s.histogram),
                "total_ns": s.total_ns,
                "min_ns": s.min_ns,
                "max_ns": s.max_ns,
                "p0": s.percentile(0),
                "p100": s.percentile(100),
            }
            if not fastpatch.is_instrumented(f):
                problems.append(f"{n}: is_instrumented() is False before uninstrument()")
            fastpatch.uninstrument(f)
            if f.__code__ is not originals[n]:
                problems.append(f"{n}: uninstrument() did not restore the original code object")
            if fastpatch.is_instrumented(f):
                problems.append(f"{n}: is_instrumented() is True after uninstrument()")
        result.observed["harness problems"] = problems
    return result


# ---------------------------------------------------------------------------
# Comparing runs
# ---------------------------------------------------------------------------


def _first_difference(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"at [{i}]:\n      plain:        {x!r}\n      instrumented: {y!r}"
        if len(a) != len(b):
            i = min(len(a), len(b))
            extra = ("plain", a[i]) if len(a) > len(b) else ("instrumented", b[i])
            return f"lengths {len(a)} (plain) and {len(b)} (instrumented); first extra, {extra[0]}: {extra[1]!r}"
    return f"\n      plain:        {a!r}\n      instrumented: {b!r}"


def compare(reference: RunResult, got: RunResult, label: str) -> List[str]:
    """Differences between what two runs observed (events only when both were traced)."""
    diffs = []
    for key in ("calls", "stdout", "warnings", "unraisable", "events"):
        if key not in reference.observed or key not in got.observed:
            continue
        if reference.observed[key] != got.observed[key]:
            diffs.append(f"{label}: {key} differ {_first_difference(reference.observed[key], got.observed[key])}")
    return diffs


def check_stats(expected: Dict[str, Expected], got: RunResult, label: str) -> List[str]:
    diffs = [f"{label}: {p}" for p in got.observed.get("harness problems", [])]
    for name, exp in expected.items():
        s = got.stats[name]
        wanted = {"calls": exp.calls, "completed": exp.calls}
        if not exp.ambiguous:
            wanted["errors"] = exp.errors
        wrong = {k: (s[k], v) for k, v in wanted.items() if s[k] != v}
        if wrong:
            detail = ", ".join(f"{k}={have} (expected {want})" for k, (have, want) in wrong.items())
            diffs.append(f"{label}: fastpatch.stats({name}): {detail}")
        sample = s["sample"]
        if not s["timed"] <= s["completed"]:
            diffs.append(f"{label}: stats({name}) timed {s['timed']} > completed {s['completed']}")
        if sample == 1 and s["timed"] != s["completed"]:
            diffs.append(f"{label}: stats({name}) exact timing but timed {s['timed']}, completed {s['completed']}")
        if sample == 0 and (s["timed"], s["histogram"], s["total_ns"], s["max_ns"]) != (0, 0, 0, 0):
            diffs.append(f"{label}: stats({name}) count-only but timed {s['timed']}, total_ns {s['total_ns']}, "
                         f"histogram {s['histogram']}, max_ns {s['max_ns']}")
        # A timed activation at rate N >= 2 stands for N: in the histogram and in total_ns.
        weight = sample if sample >= 2 else 1
        if s["histogram"] != weight * s["timed"]:
            diffs.append(f"{label}: stats({name}) histogram holds {s['histogram']}, not {weight} x timed {s['timed']}")
        if s["timed"]:
            lo, hi, total, n = s["min_ns"], s["max_ns"], s["total_ns"], s["timed"] * weight
            slack = n + total // 100  # unit conversion may round each field on its own
            if not (lo <= hi and lo * n - slack <= total <= hi * n + slack):
                diffs.append(
                    f"{label}: stats({name}) inconsistent: min {lo}, max {hi}, total {total}, weighted timed {n}"
                )
            if (s["p0"], s["p100"]) != (lo, hi):
                diffs.append(f"{label}: stats({name}) percentile(0/100) = {s['p0']}/{s['p100']}, min/max = {lo}/{hi}")
    return diffs


@dataclass
class Verdict:
    status: str  # "ok", "skip" or "diff"
    reason: str = ""
    details: List[str] = field(default_factory=list)
    functions: int = 0
    calls: int = 0
    activations: int = 0
    lines: int = 0
    ambiguous: int = 0
    expected: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # per function, from the plain run

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Verdict:
        return cls(**data)


def check_program(
    program: Program, phase: Callable[[str], None] = lambda p: None, sample: Optional[int] = None
) -> Verdict:
    """Run `program` plain and instrumented (see the module docstring), every function
    at rate `sample` when given, and compare."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = compile(program.source, FILENAME, "exec", dont_inherit=True)
        names = function_names(program.source)
    except (SyntaxError, ValueError) as exc:
        return Verdict("skip", f"does not compile ({exc})")
    phase("plain")
    plain_traced = run_once(program, code, names, instrumented=False, traced=True)
    if plain_traced.stopped:
        return Verdict("skip", f"plain run stopped ({plain_traced.stopped})")
    plain = run_once(program, code, names, instrumented=False, traced=False)
    if plain.stopped:
        return Verdict("skip", f"plain untraced run stopped ({plain.stopped})")
    if compare(plain_traced, plain, "plain"):
        return Verdict("skip", "nondeterministic: plain runs with and without tracing differ")
    expected = plain_traced.expected
    verdict = Verdict(
        "ok",
        functions=len(names),
        calls=len(program.calls),
        activations=sum(e.calls for e in expected.values()),
        lines=plain_traced.lines,
        ambiguous=sum(e.ambiguous for e in expected.values()),
        expected={n: e.to_json() for n, e in expected.items()},
    )

    phase("instrumented")
    details: List[str] = []
    for traced, reference in ((False, plain), (True, plain_traced)):
        label = "instrumented, traced" if traced else "instrumented, untraced"
        got = run_once(program, code, names, instrumented=True, traced=traced, sample=sample)
        if got.stopped:
            again = run_once(program, code, names, instrumented=True, traced=traced, sample=sample)
            if again.stopped:
                if "time" in again.stopped:
                    # A slow instrumented run on a busy machine is not a difference unless
                    # the plain run, measured again now, is still far from the limit.
                    plain_again = run_once(program, code, names, instrumented=False, traced=traced)
                    if plain_again.stopped or plain_again.seconds * 10 > RUN_SECONDS:
                        return Verdict("skip", "too slow here: the instrumented run hit the time limit")
                details.append(
                    f"{label}: stopped ({got.stopped}; again: {again.stopped}) where the plain run took "
                    f"{reference.seconds:.3f}s and finished"
                )
                continue
            got = again
        run_diffs = compare(reference, got, label) + check_stats(expected, got, label)
        if run_diffs and compare(reference, run_once(program, code, names, instrumented=False, traced=traced), "plain"):
            return Verdict("skip", "nondeterministic: two plain runs differ")
        details.extend(run_diffs)
    if details:
        verdict.status, verdict.details = "diff", details
    return verdict


# ---------------------------------------------------------------------------
# The worker process and its parent-side handle
# ---------------------------------------------------------------------------


def _limit_memory() -> None:
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        return  # ASan reserves terabytes of address space; ASAN_OPTIONS caps allocations instead
    try:
        import resource

        with open("/proc/self/statm") as fh:
            size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = size + MEMORY_HEADROOM
        if hard == resource.RLIM_INFINITY or limit < hard:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass


def worker_main(sample: Optional[int] = None) -> None:
    """Read programs (JSON lines) on stdin; answer on the original stdout. Anything
    else that writes to fd 1 ends up on stderr, so it cannot corrupt the protocol.
    With `sample`, instrumented runs time one activation in `sample` (0: none)."""
    import faulthandler

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    faulthandler.enable()
    if hasattr(faulthandler, "register"):
        faulthandler.register(signal.SIGUSR1)  # the parent asks where a hung worker is stuck
    _limit_memory()
    import fastpatch  # noqa: F401 - fail here, at start, if it cannot load

    def send(message: Dict[str, Any]) -> None:
        proto.write(json.dumps(message) + "\n")
        proto.flush()

    send({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        program = Program.from_json(json.loads(line))
        try:
            verdict = check_program(program, phase=lambda p: send({"phase": p}), sample=sample)
        except Exception:  # fastpatch raising from instrument/stats/uninstrument, or a harness bug
            import traceback

            verdict = Verdict("diff", "an exception escaped the harness", [traceback.format_exc()])
        send({"verdict": verdict.to_json()})


class Worker:
    """Parent-side handle on a worker process: restarted after a crash or a timeout."""

    def __init__(
        self, python: str = sys.executable, timeout: float = PROGRAM_TIMEOUT, sample: Optional[int] = None
    ) -> None:
        self.python = python
        self.timeout = timeout
        self.sample = sample
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.stderr: Optional[Any] = None
        self.restarts = 0
        self._pending = b""  # read from the worker, not yet a whole line

    def _start(self) -> None:
        env = dict(os.environ)
        if "asan" in env.get("LD_PRELOAD", ""):
            # A huge allocation must be a MemoryError, as without ASan, not an abort.
            env["ASAN_OPTIONS"] = (
                env.get("ASAN_OPTIONS", "") + ":allocator_may_return_null=1:max_allocation_size_mb=2048"
            )
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [self.python, os.path.abspath(__file__), "--worker"]
            + ([] if self.sample is None else ["--sample", str(self.sample)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self._pending = b""
        message = self._read(time.monotonic() + 120)
        if not (message and message.get("ready")):
            raise RuntimeError(f"fuzz worker did not start:\n{self._stderr_tail()}")

    def _read(self, deadline: float) -> Optional[Dict[str, Any]]:
        """The worker's next message, or None at the deadline or its end. Reads the pipe
        itself: a buffered readline() could hold a message that select() never reports."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]

    def _stderr_tail(self, chars: int = 4000) -> str:
        if self.stderr is None:
            return ""
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()[-chars:]

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
        if self.stderr is not None:
            self.stderr.close()
        self.proc = self.stderr = None

    def check(self, program: Program) -> Verdict:
        verdict = self._check_once(program)
        if verdict.status == "diff" and verdict.reason.startswith("worker"):
            # A crash or hang is a difference only if it happens again in a new worker.
            again = self._check_once(program)
            if again.status != "diff":
                return Verdict("skip", f"flaky: {verdict.reason}, then not")
            verdict.details.append(f"and again in a new worker: {again.reason}")
        return verdict

    def _check_once(self, program: Program) -> Verdict:
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(program.to_json()).encode() + b"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + self.timeout
        phase = "start"
        while True:
            message = self._read(deadline)
            if message is None:
                break
            if "phase" in message:
                phase = message["phase"]
            elif "verdict" in message:
                return Verdict.from_json(message["verdict"])
        timed_out = self.proc.poll() is None
        if timed_out and hasattr(signal, "SIGUSR1"):
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        tail = self._stderr_tail()
        code = None if timed_out else self.proc.poll()
        self._kill()
        self.restarts += 1
        what = f"hung for {self.timeout:.0f}s" if timed_out else f"died (exit status {code})"
        if phase != "instrumented":
            return Verdict("skip", f"worker {what} during the {phase} runs", [f"worker stderr:\n{tail}"])
        return Verdict("diff", f"worker {what} during the instrumented runs", [f"worker stderr:\n{tail}"])

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Totals:
    """What a session or campaign checked."""

    programs: int = 0
    skipped: int = 0
    functions: int = 0
    calls: int = 0
    activations: int = 0
    lines: int = 0
    ambiguous: int = 0
    differences: int = 0
    skip_reasons: Dict[str, int] = field(default_factory=dict)

    def add(self, verdict: Verdict) -> None:
        if verdict.status == "skip":
            self.skipped += 1
            reason = re.sub(r"[:(].*", "", verdict.reason).strip() if "compile" in verdict.reason else verdict.reason
            self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1
            return
        self.programs += 1
        self.functions += verdict.functions
        self.calls += verdict.calls
        self.activations += verdict.activations
        self.lines += verdict.lines
        self.ambiguous += verdict.ambiguous
        self.differences += verdict.status == "diff"

    def summary(self) -> str:
        text = (
            f"{self.programs} programs checked ({self.functions} functions, {self.calls} calls, "
            f"{self.activations} activations, {self.lines} lines run), {self.differences} with differences; "
            f"{self.skipped} skipped"
        )
        if self.skip_reasons:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.skip_reasons.items())) + ")"
        if self.ambiguous:
            text += f"; error count unverifiable in {self.ambiguous} functions"
        return text


def format_failure(program: Program, verdict: Verdict) -> str:
    body = "\n".join("  - " + d.replace("\n", "\n    ") for d in verdict.details)
    return (
        f"fastpatch changed what this program does ({verdict.reason or 'differences below'}):\n{body}\n\n"
        f"--- program ---\n{program.source}--- calls: {', '.join(n + a for n, a in program.calls)}\n\n"
        "To keep it as a regression test, add to tests/fuzz_regressions.py:\n"
        + program.as_regression("describe the fastpatch bug here")
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(int(sys.argv[3]) if sys.argv[2:3] == ["--sample"] else None)
