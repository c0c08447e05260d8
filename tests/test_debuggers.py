"""Debuggers and tools that read the current instruction.

* A debugger jump (pdb's ``jump``: ``frame.f_lineno = N`` from a trace
  function) never crashes an instrumented function, works wherever it works
  without fastpatch, and leaves the counts right: one activation per call,
  none left open (fastpatch._jumps guards it).
* ``executing`` (behind IPython's and rich's tracebacks, snoop, stack_data,
  icecream) finds the same AST node at every line event and every original
  instruction on 3.11+: the entry has no location of its own.
* An asynchronous exception (a signal handler raising) that leaves an
  activation is counted as its error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import fastpatch

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.version_info[:2]


def _run(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout)


# --------------------------------------------------------------------------
# Debugger jumps
# --------------------------------------------------------------------------


FIRST_LINE_JUMP = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import fastpatch

    def make():
        def f(x):
            a = 1  # the first line event: jump from here...
            b = 2  # ...to here, or back
            return x
            c = None  # never runs; 3.9/3.10 read this unbound local when the token is missing
        return f

    def jump(func, offset):
        first = func.__code__.co_firstlineno + 1
        outcome = []

        def tracer(frame, event, arg):
            if frame.f_code is func.__code__ and event == "line" and frame.f_lineno == first and not outcome:
                try:
                    frame.f_lineno = first + offset
                    outcome.append("jumped")
                except ValueError as exc:
                    outcome.append("refused: %s" % exc)
            return tracer

        sys.settrace(tracer)
        try:
            result = func("value")
        finally:
            sys.settrace(None)
        return outcome, result

    offset = int(sys.argv[1])
    plain = jump(make(), offset)
    f = make()
    fastpatch.instrument(f)
    instrumented = jump(f, offset)
    s = fastpatch.stats(f)
    print(json.dumps([plain, instrumented, [s.calls, s.completed, s.errors]]))
    """
)


@pytest.mark.parametrize("target_offset", [1, 2, 0], ids=["next line", "the return", "the same line"])
def test_a_jump_from_the_first_line_event_works_as_without_fastpatch_and_counts_once(target_offset):
    # Used to segfault on 3.9/3.10 (the jump skipped the entry, and the exit
    # then read below the value stack) and to be refused on 3.11+.
    out = _run(FIRST_LINE_JUMP, str(target_offset))
    assert out.returncode == 0, f"rc {out.returncode}: {out.stderr[-2000:]}"
    plain, instrumented, counts = json.loads(out.stdout)
    assert instrumented == plain == [["jumped"], "value"]
    assert counts == [1, 1, 0]


PDB_SCRIPT = """\
import fastpatch

def f(x):
    a = 1
    b = 2
    return x

fastpatch.instrument(f)
print("returned", f("value"), fastpatch.stats(f).calls, fastpatch.stats(f).completed)
"""


def test_pdb_break_continue_jump_continue(tmp_path):
    script = tmp_path / "target.py"
    script.write_text(PDB_SCRIPT)
    out = subprocess.run(
        [sys.executable, "-m", "pdb", str(script)], input="break f\ncontinue\njump 5\ncontinue\n",
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "returned value 1 1" in out.stdout, out.stdout
    assert "***" not in out.stdout, out.stdout  # pdb reports a refused jump with ***


JUMP_MATRIX = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import jump_cases
    import fastpatch

    mode = sys.argv[1]
    EVENTS = 4
    results = []

    def run(func, drive, k, target):
        state = {"n": 0, "done": None, "events": 0}
        code = func.__code__

        def tracer(frame, event, arg):
            if frame.f_code is not code:
                return None
            if event == "line":
                state["events"] += 1
                if state["events"] > 500:
                    raise RuntimeError("loop")
                if state["done"] is None:
                    if state["n"] == k:
                        try:
                            frame.f_lineno = target
                            state["done"] = "jumped"
                        except ValueError:
                            state["done"] = "refused"
                    state["n"] += 1
            return tracer

        sys.settrace(tracer)
        try:
            out = drive(func)
        finally:
            sys.settrace(None)
        return state["done"], out

    for name, make, drive in jump_cases.CASES:
        probe = make()
        code = probe.__code__
        lines = sorted({l for l in jump_cases.lines(code)})
        for k in range(EVENTS):
            for target in lines:
                if mode == "plain" and jump_cases.plain_crashes(make, target):
                    continue
                func = make()
                if mode == "instrumented":
                    fastpatch.instrument(func)
                    fastpatch.reset(func)  # one definition for all the runs of a case
                jump, out = run(func, drive, k, target)
                rec = {"case": name, "k": k, "target": target, "jump": jump, "out": out}
                if mode == "instrumented":
                    s = fastpatch.stats(func)
                    rec["counts"] = [s.calls, s.completed, s.errors]
                results.append(rec)
    print(json.dumps(results))
    """
)


def test_every_jump_from_the_first_line_events_is_safe_and_behaves_as_without_fastpatch():
    # For each case, a jump from each of the first line events to every line
    # of the function: in a subprocess each way, so that a crash fails here.
    plain = _run(JUMP_MATRIX, "plain")
    assert plain.returncode == 0, plain.stderr
    inst = _run(JUMP_MATRIX, "instrumented")
    assert inst.returncode == 0, f"instrumented run died (rc {inst.returncode}): {inst.stderr[-2000:]}"
    expected = {(r["case"], r["k"], r["target"]): (r["jump"], r["out"]) for r in json.loads(plain.stdout)}
    import jump_cases

    different = []
    for r in json.loads(inst.stdout):
        key = (r["case"], r["k"], r["target"])
        calls, completed, errors = r["counts"]
        raised = r["out"][0] == "raise"
        # one activation per call, none left open, an error exactly when it raised
        assert (calls, completed, errors) == (1, 1, int(raised)), r
        if key not in expected:  # a jump that crashes CPython itself (see jump_cases.plain_crashes)
            assert r["jump"] in ("refused", None), r  # None: the function had fewer line events
            continue
        if (r["jump"], r["out"]) != expected[key] and not jump_cases.known_difference(r, expected[key]):
            different.append((key, expected[key], (r["jump"], r["out"])))
    assert different == []


def test_the_guard_is_installed_once_per_interpreter_and_only_in_instrumenting_processes():
    out = _run("import sys, fastpatch; print('fastpatch._jumps' in sys.modules)")
    assert out.stdout.strip() == "False"  # import fastpatch alone patches nothing
    from fastpatch import _jumps

    fastpatch.instrument(_target)
    try:
        from fastpatch._recipes import running_dialect

        assert _jumps.install(fastpatch._ext.Probe, running_dialect()) is False  # already guarded
    finally:
        fastpatch.uninstrument(_target)


# --------------------------------------------------------------------------
# executing: the node at every line event and every original instruction
# --------------------------------------------------------------------------


def _target(x):
    y = len([x])
    z = y + 1
    if z > 1:
        z = z * 2
    return z


def _nodes_at_events(func, opcodes: bool):
    executing = pytest.importorskip("executing")
    found = []

    def tracer(frame, event, arg):
        if frame.f_code is not func.__code__:
            return None
        frame.f_trace_opcodes = opcodes
        if event in ("line", "opcode"):
            node = executing.Source.executing(frame).node
            instr = frame.f_code.co_code[frame.f_lasti]
            where = None if node is None else (type(node).__name__, node.lineno, node.col_offset)
            found.append((event, frame.f_lineno, instr, where))
        return tracer

    sys.settrace(tracer)
    try:
        func(3)  # 3.12 only starts opcode events on the next call of a code object
        found.clear()
        func(3)
    finally:
        sys.settrace(None)
    return found


@pytest.mark.skipif(PY < (3, 11), reason="executing matches bytecode against a fresh compile on 3.9/3.10 (README)")
def test_executing_finds_the_same_node_at_every_line_event():
    plain = _nodes_at_events(_target, opcodes=False)
    fastpatch.instrument(_target)
    try:
        assert _nodes_at_events(_target, opcodes=False) == plain
    finally:
        fastpatch.uninstrument(_target)


@pytest.mark.skipif(PY < (3, 11), reason="executing matches bytecode against a fresh compile on 3.9/3.10 (README)")
def test_executing_finds_the_same_node_at_every_instruction_the_source_produced():
    import types

    # Fresh functions (and code objects) for each run, and one run first that
    # is thrown away: 3.12.1 starts opcode events late.
    def fresh():
        return types.FunctionType(_target.__code__.replace(), globals())

    _nodes_at_events(fresh(), opcodes=True)
    plain = [(line, node) for _event, line, _instr, node in _nodes_at_events(fresh(), opcodes=True)]
    assert sum(event == "opcode" for event, *_ in _nodes_at_events(fresh(), opcodes=True)) > 10
    target = fresh()
    fastpatch.instrument(target)
    events = _nodes_at_events(target, opcodes=True)
    # The injected exit instructions (before each return) fire opcode events
    # of their own, where executing finds nothing; every other event is one
    # the original code fires too, with the same node.
    import dis

    from fastpatch._recipes import RECIPES

    exit_ops = {dis.opmap[name] for name, _ in RECIPES[PY].exit_sequence}
    kept = [(line, node) for _event, line, instr, node in events if not (instr in exit_ops and node is None)]
    assert kept == plain


# --------------------------------------------------------------------------
# Asynchronous exceptions
# --------------------------------------------------------------------------

ASYNC_EXIT = textwrap.dedent(
    """
    import signal, sys, time
    import fastpatch

    class Boom(Exception):
        pass

    armed = False

    def handler(signum, frame):
        global armed
        if armed:
            armed = False
            raise Boom

    def f(x):
        a = [x, x]
        b = len(a) + x
        return b * 2

    fastpatch.instrument(f)
    # The entry ends with UNARY_INVERT: an exception raised after it ran
    # (tb_lasti is the last instruction run) leaves a started activation.
    import dis
    entry_end = next(i.offset for i in dis.get_instructions(f.__code__) if i.opname == "UNARY_INVERT")
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.00003, 0.00003)
    started = before = 0
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        try:
            armed = True
            f(1)
            armed = False
        except Boom as exc:
            armed = False
            tb = exc.__traceback__
            while tb is not None and tb.tb_frame.f_code is not f.__code__:
                tb = tb.tb_next
            if tb is not None:
                if tb.tb_lasti >= entry_end:
                    started += 1
                else:
                    before += 1
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    s = fastpatch.stats(f)
    print(s.calls, s.completed, s.errors, started, before)
    """
)


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="needs signal.setitimer")
def test_an_asynchronous_exception_that_leaves_an_activation_is_counted_as_its_error():
    # On 3.9 a signal used to be able to raise between the exit and
    # RETURN_VALUE, out of an activation already recorded as returned.
    out = _run(ASYNC_EXIT, "1.0")
    assert out.returncode == 0, out.stderr
    calls, completed, errors, started, before = map(int, out.stdout.split())
    assert calls == completed
    # Every exception raised out of a started activation is its error; one
    # raised before the entry ran (3.9/3.10 check for signals before the
    # first instruction) leaves no activation to count.
    assert errors == started > 0
    if PY >= (3, 11):
        assert before == 0  # the entry runs before RESUME, where 3.11+ checks
