"""What instrument() costs, beside compile() and a `bytecode` round trip.

One group per function size (3, 40 and 200 source lines), each with:

* ``instrument-fresh``: instrument() on a code object it has never seen. The
  setup compiles the source again before every round, outside the timing;
* ``instrument-seen``: instrument() on a new function object made with
  types.FunctionType from the original code of an instrumented definition,
  which must be a cache lookup plus the __code__ assignment;
* ``instrument-again``: instrument() after uninstrument() of the same function;
* ``compile``: compile() of the same source text;
* ``bytecode-roundtrip``: bytecode.Bytecode.from_code(code).to_code() of the
  same function's code object.

Every instrumented function is checked afterwards (outside the timing): it is
instrumented, it still returns the right value, and the already-seen cases
got the very patched code object of their definition.
"""

from types import CodeType, FunctionType

import pytest

import fastpatch
from _harness import QUICK, bytecode_round_trip, fresh_function, function_source, patch_rounds

SIZES = [3, 40, 200]


def _label(benchmark, n_lines, variant, **extra):
    benchmark.group = f"patch-{n_lines}-lines"
    benchmark.extra_info.update(variant=variant, lines=n_lines, quick=QUICK, **extra)


@pytest.mark.parametrize("n_lines", SIZES)
def test_instrument_fresh(benchmark, n_lines, request):
    _label(benchmark, n_lines, "instrument-fresh")
    source = function_source(n_lines)
    expected = fresh_function(source, n_lines)(1)
    state = {"last": None, "made": 0, "checked": 0}

    def check(func):
        assert fastpatch.is_instrumented(func), "a benchmarked instrument() did not instrument"
        assert func(1) == expected, "the instrumented function returns something else"
        state["checked"] += 1

    def setup():
        if state["last"] is not None:
            check(state["last"])
        state["last"] = None  # let the previous function go before compiling the next
        func = fresh_function(source, n_lines)
        assert not fastpatch.is_instrumented(func)
        state["last"] = func
        state["made"] += 1
        return (func,), {}

    rounds = patch_rounds(request.config, normal=200, quick=20)
    benchmark.pedantic(fastpatch.instrument, setup=setup, rounds=rounds, warmup_rounds=3 if not QUICK else 1)
    check(state["last"])
    assert state["checked"] == state["made"]
    benchmark.extra_info["functions_instrumented"] = state["made"]


@pytest.mark.parametrize("n_lines", SIZES)
def test_instrument_seen(benchmark, n_lines, request):
    _label(benchmark, n_lines, "instrument-seen")
    source = function_source(n_lines)
    base = fresh_function(source, n_lines)
    expected = base(1)
    original = base.__code__
    fastpatch.instrument(base)
    patched = base.__code__
    assert patched is not original
    globals_ = base.__globals__
    state = {"last": None, "made": 0, "checked": 0}

    def check(func):
        assert func.__code__ is patched, "instrument() of a seen definition did not reuse its patched code"
        assert fastpatch.is_instrumented(func)
        assert func(1) == expected
        state["checked"] += 1

    def setup():
        if state["last"] is not None:
            check(state["last"])
        func = FunctionType(original, globals_)
        state["last"] = func
        state["made"] += 1
        return (func,), {}

    rounds = patch_rounds(request.config, normal=1000, quick=50)
    benchmark.pedantic(fastpatch.instrument, setup=setup, rounds=rounds, warmup_rounds=20 if not QUICK else 2)
    check(state["last"])
    assert state["checked"] == state["made"]
    fastpatch.uninstrument(base)
    benchmark.extra_info["functions_instrumented"] = state["made"]


@pytest.mark.parametrize("n_lines", SIZES)
def test_instrument_again(benchmark, n_lines, request):
    _label(benchmark, n_lines, "instrument-again")
    source = function_source(n_lines)
    func = fresh_function(source, n_lines)
    expected = func(1)
    original = func.__code__
    fastpatch.instrument(func)
    patched = func.__code__
    state = {"rounds": 0, "checked": 0}

    def check():
        assert func.__code__ is patched, "instrument() after uninstrument() did not reuse the patched code"
        assert func(1) == expected
        state["checked"] += 1

    def setup():
        if state["rounds"]:
            check()
        fastpatch.uninstrument(func)
        assert func.__code__ is original
        state["rounds"] += 1
        return (func,), {}

    rounds = patch_rounds(request.config, normal=1000, quick=50)
    benchmark.pedantic(fastpatch.instrument, setup=setup, rounds=rounds, warmup_rounds=20 if not QUICK else 2)
    check()
    assert state["checked"] == state["rounds"]
    fastpatch.uninstrument(func)


@pytest.mark.parametrize("n_lines", SIZES)
def test_compile(benchmark, n_lines):
    _label(benchmark, n_lines, "compile")
    source = function_source(n_lines)
    code = benchmark(compile, source, f"<fastpatch-bench compile {n_lines}>", "exec")
    assert isinstance(code, CodeType)


@pytest.mark.parametrize("n_lines", SIZES)
def test_bytecode_round_trip(benchmark, n_lines):
    import bytecode

    _label(benchmark, n_lines, "bytecode-roundtrip", bytecode_version=bytecode.__version__)
    func = fresh_function(function_source(n_lines), n_lines)
    code = func.__code__
    out = benchmark(bytecode_round_trip, code)
    assert isinstance(out, CodeType) and out.co_name == code.co_name
