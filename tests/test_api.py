"""The public API as DESIGN.md states it: targets, idempotence, stats, reset, report."""

from __future__ import annotations

import functools
import gc
import io
import os
import sys
import types

import pytest

import fastpatch
from kinds import KINDS


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_instrument_returns_target_and_counts_each_kind(kind):
    target, call = kind.make()
    expected = kind.drive(call)
    assert fastpatch.instrument(target) is target
    assert fastpatch.is_instrumented(target)
    assert kind.drive(call) == expected
    s = fastpatch.stats(target)
    assert s.calls == kind.activations
    assert s.completed == kind.activations
    assert s.errors == 0
    assert s.min_ns <= s.mean_ns <= s.max_ns
    assert s.total_ns >= s.max_ns > 0


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_uninstrument_restores_the_exact_original_code(kind):
    target, call = kind.make()
    func = fastpatch._resolve.resolve_function(target)
    original = func.__code__
    fastpatch.instrument(target)
    assert func.__code__ is not original
    assert fastpatch.uninstrument(target) is target
    assert func.__code__ is original
    assert not fastpatch.is_instrumented(target)


def test_bound_method_resolves_to_its_function():
    class A:
        def m(self):
            return 7

    a = A()
    fastpatch.instrument(a.m)
    assert fastpatch.is_instrumented(A.m)
    assert A().m() == 7
    assert fastpatch.stats(A.m).calls == 1


def test_usable_as_a_decorator_on_functions_and_descriptors():
    class C:
        @fastpatch.instrument
        @staticmethod
        def s(x):
            return x

        @fastpatch.instrument
        @classmethod
        def c(cls):
            return cls

    @fastpatch.instrument
    def f():
        return 1

    assert isinstance(C.__dict__["s"], staticmethod)
    assert isinstance(C.__dict__["c"], classmethod)
    assert (f(), C.s(2), C.c()) == (1, 2, C)
    assert fastpatch.stats(f).calls == 1
    assert fastpatch.stats(C.__dict__["s"]).calls == 1
    assert fastpatch.stats(C.c).calls == 1


def test_instrument_is_idempotent():
    def f():
        return 1

    fastpatch.instrument(f)
    patched = f.__code__
    fastpatch.instrument(f)
    assert f.__code__ is patched
    f()
    assert fastpatch.stats(f).calls == 1


def test_functions_of_one_definition_share_one_entry_and_one_patched_code():
    def outer(k):
        def inner():
            return k

        return inner

    a, b = outer(1), outer(2)
    fastpatch.instrument(a)
    fastpatch.instrument(b)
    assert a.__code__ is b.__code__
    assert (a(), b(), b()) == (1, 2, 2)
    assert fastpatch.stats(a).calls == 3
    assert fastpatch.stats(a) == fastpatch.stats(b)


def test_stats_carry_on_after_uninstrument_and_reinstrument():
    def f():
        return 1

    fastpatch.instrument(f)
    f()
    fastpatch.uninstrument(f)
    f()
    assert fastpatch.stats(f).calls == 1
    fastpatch.instrument(f)
    f()
    assert fastpatch.stats(f).calls == 2


def test_name_defaults_to_module_and_qualname_and_can_be_set():
    def f():
        pass

    fastpatch.instrument(f)
    assert fastpatch.stats(f).name == f"{__name__}.test_name_defaults_to_module_and_qualname_and_can_be_set.<locals>.f"

    def g():
        pass

    fastpatch.instrument(g, name="db.query")
    assert fastpatch.stats(g).name == "db.query"


def test_stats_of_a_function_never_instrumented_is_a_value_error():
    def never():
        pass

    with pytest.raises(ValueError, match="never instrumented"):
        fastpatch.stats(never)
    with pytest.raises(ValueError, match="never instrumented"):
        fastpatch.reset(never)


class _Callable:
    def __call__(self):
        pass


def _code_object():
    return (lambda: 0).__code__


BAD_TARGETS = [
    ("builtin", len, "builtin_function_or_method"),
    ("C method", "abc".upper, "builtin_function_or_method"),
    ("class", dict, "type"),
    ("partial", functools.partial(print, 1), "functools.partial"),
    ("callable instance", _Callable(), "_Callable"),
    ("code object", _code_object(), "code"),
    ("number", 42, "int"),
    ("None", None, "NoneType"),
    ("staticmethod of builtin", staticmethod(len), "staticmethod wrapping builtin_function_or_method"),
    ("method of builtin", types.MethodType(len, object()), "method wrapping builtin_function_or_method"),
]


BAD_CASES = [
    pytest.param(api, target, type_name, id=f"{api}-{ident}")
    for api in ("instrument", "uninstrument", "is_instrumented", "stats", "reset")
    for ident, target, type_name in BAD_TARGETS
    if not (api == "reset" and target is None)  # reset(None) means reset everything
]


@pytest.mark.parametrize("api,target,type_name", BAD_CASES)
def test_non_functions_are_a_type_error_naming_the_type(api, target, type_name):
    before = fastpatch.all_stats()
    with pytest.raises(TypeError) as info:
        getattr(fastpatch, api)(target)
    message = str(info.value)
    assert type_name in message
    assert "expected a Python function" in message
    assert fastpatch.all_stats() == before


def test_name_must_be_a_string():
    def f():
        pass

    with pytest.raises(TypeError, match="name must be a str"):
        fastpatch.instrument(f, name=3)
    assert not fastpatch.is_instrumented(f)


def test_reset_zeroes_one_function_or_all():
    def f():
        pass

    def g():
        pass

    fastpatch.instrument(f)
    fastpatch.instrument(g)
    f(), g(), g()
    fastpatch.reset(f)
    assert fastpatch.stats(f).calls == 0
    assert fastpatch.stats(g).calls == 2
    fastpatch.reset()
    assert fastpatch.stats(g).calls == 0
    assert fastpatch.stats(g).min_ns == 0
    g()
    assert fastpatch.stats(g).calls == 1


def test_all_stats_lists_every_live_definition():
    def f():
        pass

    fastpatch.instrument(f, name="listed.f")
    names = [s.name for s in fastpatch.all_stats()]
    assert "listed.f" in names


def test_registry_does_not_keep_dead_definitions_alive():
    def make():
        src = "def temp():\n    return 5\n"
        ns = {}
        exec(compile(src, "<temp>", "exec"), ns)
        return ns["temp"]

    f = make()
    fastpatch.instrument(f, name="temp.dies")
    assert f() == 5
    assert "temp.dies" in [s.name for s in fastpatch.all_stats()]
    del f
    gc.collect()
    assert "temp.dies" not in [s.name for s in fastpatch.all_stats()]


def test_stats_is_immutable_and_to_dict_has_every_field():
    def f():
        return 1

    fastpatch.instrument(f)
    f()
    s = fastpatch.stats(f)
    with pytest.raises(AttributeError):
        s.calls = 5
    d = s.to_dict()
    assert d["calls"] == 1 and d["errors"] == 0 and d["name"] == s.name
    assert d["total_ns"] == s.total_ns and d["min_ns"] == s.min_ns and d["max_ns"] == s.max_ns
    assert d["mean_ns"] == s.mean_ns
    assert d["p50_ns"] == s.percentile(50)


def test_report_prints_one_row_per_definition_sorted_and_limited():
    def fast():
        pass

    def slow():
        sum(range(20000))

    fastpatch.reset()
    fastpatch.instrument(fast, name="rpt.fast")
    fastpatch.instrument(slow, name="rpt.slow")
    for _ in range(3):
        fast()
    slow()
    out = io.StringIO()
    fastpatch.report(out, sort="calls")
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["calls", "errors", "total", "mean", "min", "p50", "p99", "max", "name"]
    rows = [ln for ln in lines[1:] if ln.split()[-1].startswith("rpt.")]
    assert [r.split()[-1] for r in rows] == ["rpt.fast", "rpt.slow"]
    assert rows[0].split()[0] == "3"
    out = io.StringIO()
    fastpatch.report(out, sort="total", limit=1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    with pytest.raises(ValueError, match="sort must be one of"):
        fastpatch.report(out, sort="bogus")
    with pytest.raises(ValueError, match="limit"):
        fastpatch.report(out, limit=-1)


def test_unvalidated_python_version_is_refused_by_name_and_nothing_changes(monkeypatch):
    from fastpatch import _recipes

    def f():
        return 1

    original = f.__code__
    monkeypatch.setattr(_recipes, "_dialect", None)
    monkeypatch.setattr(_recipes, "RECIPES", {(2, 7): _recipes.RECIPES[sys.version_info[:2]]})
    monkeypatch.setattr(_recipes, "SUPPORTED_VERSIONS", ((2, 7),))
    v = sys.version_info
    expected = rf"no validated bytecode recipe for CPython {v[0]}\.{v[1]}; supported: CPython 2\.7"
    with pytest.raises(fastpatch.UnsupportedPythonError, match=expected):
        fastpatch.instrument(f)
    assert f.__code__ is original
    assert not fastpatch.is_instrumented(f)
    with pytest.raises(ValueError, match="never instrumented"):
        fastpatch.stats(f)


def test_missing_extension_says_what_is_missing_and_what_is_supported(tmp_path):
    import shutil
    import subprocess

    package = os.path.dirname(fastpatch.__file__)
    copy = tmp_path / "fastpatch"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("_ext*.so", "_ext*.pyd", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-c", "import fastpatch"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastpatch's C extension (fastpatch._ext) could not be loaded: ")
    assert "No module named 'fastpatch._ext'" in last
    from fastpatch._recipes import supported_text

    assert f"supports CPython {supported_text()} " in last
    assert "circular import" not in proc.stderr


def test_ten_thousand_instrumented_definitions_are_ordinary():
    source = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(10_000))
    namespace = {"__name__": "tenk"}
    exec(compile(source, "<tenk>", "exec"), namespace)
    funcs = [namespace[f"f{i}"] for i in range(10_000)]
    for f in funcs:
        fastpatch.instrument(f)
    assert [f(1) for f in funcs[:5]] == [1, 2, 3, 4, 5]
    for f in funcs:
        f(0)
    mine = [s for s in fastpatch.all_stats() if s.name.startswith("tenk.")]
    assert len(mine) == 10_000
    assert sorted(s.calls for s in mine) == [1] * 9_995 + [2] * 5
    for f in funcs:
        fastpatch.uninstrument(f)
    assert not any(fastpatch.is_instrumented(f) for f in funcs)


def test_the_trove_classifiers_list_exactly_the_supported_versions():
    import importlib.metadata

    from fastpatch._recipes import SUPPORTED_VERSIONS

    classifiers = importlib.metadata.metadata("fastpatch").get_all("Classifier") or []
    prefix = "Programming Language :: Python :: 3."
    minors = [c[len(prefix):] for c in classifiers if c.startswith(prefix)]
    listed = sorted((3, int(m)) for m in minors if m.isdigit())
    assert listed == sorted(SUPPORTED_VERSIONS)


def test_an_empty_name_is_refused_for_new_and_registered_definitions_alike():
    def f():
        return 1

    for _ in range(2):  # new, then registered
        with pytest.raises(ValueError, match="non-empty"):
            fastpatch.instrument(f, name="")
        with pytest.raises(ValueError, match="non-empty"):
            fastpatch.instrument(f, name="   ")
        fastpatch.instrument(f)
    assert fastpatch.stats(f).name.endswith(".f")


def test_report_with_limit_0_prints_the_header_and_not_that_nothing_is_instrumented():
    import io

    def f():
        return 1

    fastpatch.instrument(f)
    f()
    out = io.StringIO()
    fastpatch.report(out, limit=0)
    assert out.getvalue().splitlines() == ["calls  errors  total  mean  min  p50  p99  max  name"]


def test_the_injected_sequences_built_into_the_wheel_are_what_bytecode_assembles():
    from fastpatch import _recipes

    try:
        from fastpatch import _assembled
    except ImportError:
        pytest.skip("no build-time _assembled.py: an editable install assembles on first use")
    recipe = _recipes.recipe_for(sys.version_info[:2])
    assert _assembled.KEY == _recipes._cache_key(recipe)
    assert _assembled.SEQUENCES == _recipes.assemble_sequences(recipe)
    assert _recipes.encoded_sequences(recipe) == _assembled.SEQUENCES


def test_an_installed_fastpatch_instruments_without_importing_bytecode_or_typing():
    import subprocess

    try:
        from fastpatch import _assembled  # noqa: F401
    except ImportError:
        pytest.skip("no build-time _assembled.py: an editable install imports bytecode on first use")
    # What fastpatch itself imports: modules the interpreter's startup loaded
    # (another package's .pth or .start file may load re) do not count.
    code = (
        "import sys\nbefore = set(sys.modules)\nimport fastpatch\n"
        "def f(x):\n    return x + 1\n"
        "fastpatch.instrument(f)\nf(1)\nassert fastpatch.stats(f).calls == 1\n"
        "heavy = ('bytecode', 'typing', 'dataclasses', 're', 'threading', 'weakref')\n"
        "print(sorted(m for m in heavy if m in sys.modules and m not in before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
