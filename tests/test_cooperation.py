"""fastpatch next to the tools users already run: coverage.py, pdb, wrappers,
lru_cache, and other bytecode patchers layered before or after it."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import io
import pdb
import re
import sys
import textwrap
import warnings

import pytest

import fastpatch

MODULE_SOURCE = textwrap.dedent(
    """
    def classify(n):
        if n < 0:
            return "negative"
        elif n == 0:
            return "zero"
        for i in range(2):
            if i == n:
                break
        else:
            return "big"
        return "small"


    def numbers(n):
        for i in range(n):
            if i % 2:
                yield i
        return n


    def never_called(x):
        return x * 2
    """
)


def _load(tmp_path, name):
    path = tmp_path / f"{name}.py"
    path.write_text(MODULE_SOURCE)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, str(path)


def _exercise(module):
    return [module.classify(n) for n in (-1, 0, 1, 5)] + [list(module.numbers(5))]


COVERAGE_CORES = ["ctrace", "pytrace"] + (["sysmon"] if sys.version_info >= (3, 12) else [])


@pytest.mark.parametrize("core", COVERAGE_CORES)
def test_coverage_reports_the_same_lines_and_branches(tmp_path, monkeypatch, core):
    coverage = pytest.importorskip("coverage")
    monkeypatch.setenv("COVERAGE_CORE", core)

    modules = []  # alive until the stats are read: a loaded module and its functions form a cycle

    def measure(name, instrument):
        module, path = _load(tmp_path, name)
        modules.append(module)
        if instrument:
            for f in (module.classify, module.numbers, module.never_called):
                fastpatch.instrument(f)
        # sys.monitoring measures branches only from 3.14; asking for them would fall back to ctrace.
        cov = coverage.Coverage(data_file=None, branch=core != "sysmon", include=[path])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a silent fallback to another core would test the wrong thing
            cov.start()
        try:
            result = _exercise(module)
        finally:
            cov.stop()
        _, statements, excluded, missing, _ = cov.analysis2(path)
        data = cov.get_data()
        arcs = sorted(data.arcs(path) or []) if data.has_arcs() else sorted(data.lines(path) or [])
        return result, statements, missing, arcs

    plain = measure("cov_plain", instrument=False)
    patched = measure("cov_patched", instrument=True)
    assert patched == plain
    # The def lines ran at import, before measuring; never_called's body never ran.
    assert plain[2] == [2, 15, 22, 23]
    module_stats = [s for s in fastpatch.all_stats() if s.name.startswith("cov_patched.")]
    assert {s.name: s.calls for s in module_stats} == {
        "cov_patched.classify": 4,
        "cov_patched.numbers": 1,
        "cov_patched.never_called": 0,
    }


def test_pdb_stepping_shows_the_same_session(tmp_path):
    module, path = _load(tmp_path, "pdb_target")
    commands = "\n".join(["step", "next", "next", "where", "p n", "next", "next", "next", "continue"]) + "\n"

    def session():
        out = io.StringIO()
        debugger = pdb.Pdb(stdin=io.StringIO(commands), stdout=out, nosigint=True)
        debugger.use_rawinput = False
        result = debugger.runcall(module.classify, 1)
        sys.settrace(None)
        text = re.sub(r"0x[0-9a-f]+", "0x?", out.getvalue())
        return result, text

    before = session()
    fastpatch.instrument(module.classify)
    after = session()
    assert after == before
    assert "return \"small\"" in before[1] or "small" in before[0]
    assert fastpatch.stats(module.classify).calls == 1


def test_functools_wraps_wrapper_and_wrapped_can_both_be_instrumented():
    def base(a, b=1):
        return a + b

    @functools.wraps(base)
    def wrapper(*args, **kwargs):
        return base(*args, **kwargs) * 10

    sig = inspect.signature(wrapper)
    fastpatch.instrument(wrapper)
    fastpatch.instrument(base)
    assert wrapper(1, b=2) == 30
    assert inspect.signature(wrapper) == sig
    assert wrapper.__wrapped__ is base
    assert (fastpatch.stats(wrapper).calls, fastpatch.stats(base).calls) == (1, 1)


def test_wrapt_wrapper_calls_reach_the_instrumented_function():
    wrapt = pytest.importorskip("wrapt")

    seen = []

    @wrapt.decorator
    def logged(wrapped, instance, args, kwargs):
        seen.append(args)
        return wrapped(*args, **kwargs)

    def add(x, y):
        return x + y

    decorated = logged(add)  # holds its own reference to `add`
    fastpatch.instrument(add)
    assert decorated(2, 3) == 5
    assert seen == [(2, 3)]
    assert fastpatch.stats(add).calls == 1
    with pytest.raises(TypeError, match="FunctionWrapper"):
        fastpatch.instrument(decorated)  # a proxy, not a function: refused, nothing patched
    assert decorated.__wrapped__ is add


def test_lru_cache_only_lets_misses_through():
    def square(x):
        return x * x

    cached = functools.lru_cache(maxsize=None)(square)
    fastpatch.instrument(square)
    assert [cached(i % 3) for i in range(9)] == [0, 1, 4] * 3
    assert fastpatch.stats(square).calls == 3
    with pytest.raises(TypeError, match="lru_cache_wrapper"):
        fastpatch.instrument(cached)


def test_a_patcher_before_fastpatch_gets_its_code_back_on_uninstrument():
    def answer():
        return "one"  # a real constant on every version (3.14 loads small ints without one)

    consts = answer.__code__.co_consts
    assert "one" in consts
    answer.__code__ = answer.__code__.replace(co_consts=tuple("two" if c == "one" else c for c in consts))
    theirs = answer.__code__
    fastpatch.instrument(answer)
    assert answer() == "two"
    fastpatch.uninstrument(answer)
    assert answer.__code__ is theirs
    assert fastpatch.stats(answer).calls == 1


def test_a_bytecode_patcher_after_fastpatch_keeps_the_probes_running():
    bytecode = pytest.importorskip("bytecode")

    def gen(n):
        try:
            yield from range(n)
        finally:
            pass

    fastpatch.instrument(gen)
    gen.__code__ = bytecode.Bytecode.from_code(gen.__code__).to_code()
    assert list(gen(3)) == [0, 1, 2]
    s = fastpatch.stats(gen)  # found through the probe constant the rewrite kept
    assert (s.calls, s.completed, s.errors) == (1, 1, 0)
    assert fastpatch.is_instrumented(gen)
    fastpatch.instrument(gen)  # already running our probe: nothing to do
    theirs = gen.__code__
    assert fastpatch._registry.running_definition(theirs).patched() is not theirs
    # Documented limitation: fastpatch cannot take its probes out of another tool's code.
    with pytest.raises(RuntimeError, match="rewritten by another tool"):
        fastpatch.uninstrument(gen)
    assert gen.__code__ is theirs
    assert list(gen(2)) == [0, 1]
    assert fastpatch.stats(gen).calls == 2


def test_module_reference_taken_before_instrument_is_timed(tmp_path):
    module, _ = _load(tmp_path, "early_ref")
    early = module.classify  # like `from mod import classify` elsewhere
    callbacks = {"cb": module.classify}
    fastpatch.instrument(module.classify)
    early(1)
    callbacks["cb"](-1)
    functools.partial(module.classify, 0)()
    assert fastpatch.stats(module.classify).calls == 3


def test_sys_monitoring_user_and_fastpatch_count_the_same_calls():
    if sys.version_info < (3, 12):
        pytest.skip("sys.monitoring is 3.12+")
    mon = sys.monitoring
    tool = next(t for t in range(6) if mon.get_tool(t) is None)
    starts = []

    def target(x):
        return x

    fastpatch.instrument(target)
    mon.use_tool_id(tool, "fastpatch-coop")
    try:
        mon.register_callback(tool, mon.events.PY_START, lambda code, off: starts.append(code.co_name))
        mon.set_local_events(tool, target.__code__, mon.events.PY_START)
        for i in range(5):
            target(i)
    finally:
        mon.set_local_events(tool, target.__code__, 0)
        mon.register_callback(tool, mon.events.PY_START, None)
        mon.free_tool_id(tool)
    assert starts == ["target"] * 5
    assert fastpatch.stats(target).calls == 5
