"""instrument_module, instrument_class, instrument_package and the pattern
syntax they share with the import hook and the command line."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import fastpatch
from fastpatch._bulk import ALREADY, C_FUNCTION, IMPORTED, MAIN_MODULE, WRAPPER
from fastpatch._select import PatternError, Patterns
from sample_pkgs import EVERYTHING, EVERYTHING_FUNCTIONS, forget, unique, write_tree


@pytest.fixture
def on_path(tmp_path):
    sys.path.insert(0, str(tmp_path))
    names = []
    yield tmp_path, names
    sys.path.remove(str(tmp_path))
    for name in names:
        forget(name)
    importlib.invalidate_caches()


def _tree(on_path, prefix, files):
    """A fresh top-level name on the path, with ``files`` (their paths may
    use ``{name}``) written under it; forgotten after the test."""
    root, names = on_path
    name = unique(prefix)
    names.append(name)
    write_tree(str(root), {path.format(name=name): text for path, text in files.items()})
    importlib.invalidate_caches()
    return name


def _module(on_path, source=EVERYTHING):
    return importlib.import_module(_tree(on_path, "bulkmod", {"{name}.py": source}))


def test_instrument_module_reaches_every_kind_of_function_the_module_defines(on_path):
    mod = _module(on_path)
    selection = fastpatch.instrument_module(mod)
    name = mod.__name__
    assert selection.modules == [name]
    assert sorted(n[len(name) + 1:] for n in selection.instrumented) == EVERYTHING_FUNCTIONS
    for func in (mod.plain, mod.make_adder, mod.remembered, mod.coro, mod.gen, mod.Shape.area, mod.Shape.unit,
                 mod.Shape.make, mod.Shape.Inner.hello, mod.decorated.__wrapped__, mod.cached.__wrapped__,
                 mod.Shape.size.fget, mod.Shape.size.fset, mod.Shape.size.fdel,
                 mod.Shape.__dict__["expensive"].func):
        assert fastpatch.is_instrumented(func), func
    shape = mod.Shape()
    shape.size = 3
    assert (shape.size, shape.area(), mod.Shape.unit(), mod.decorated(2), mod.cached(2)) == (3, 0, 1, 4, 6)
    del shape.size
    assert fastpatch.stats(mod.Shape.size.fget).calls == 1
    assert fastpatch.stats(mod.Shape.size.fdel).calls == 1
    assert fastpatch.stats(mod.decorated.__wrapped__).calls == 1


def test_instrument_module_skips_what_it_cannot_or_should_not_time_and_says_why(on_path):
    mod = _module(on_path)
    selection = fastpatch.instrument_module(mod)
    name = mod.__name__
    skipped = dict(selection.skipped)
    assert skipped[f"{name}.dumps"] == IMPORTED
    assert skipped[f"{name}.OrderedDict"] == IMPORTED
    assert skipped[f"{name}.sqrt"] == C_FUNCTION
    assert skipped[f"{name}.decorated"] == WRAPPER
    assert skipped[f"{name}.Shape.builtin_alias"] == C_FUNCTION
    assert f"{name}.Shape.imported_alias" not in skipped  # met (and listed) once, as json's dumps
    assert not fastpatch.is_instrumented(mod.decorated)  # the wrapper's code is the decorator's
    assert selection.counts() == {IMPORTED: 2, C_FUNCTION: 2, WRAPPER: 1}
    assert repr(selection) == (
        f"<Selection: 1 module, {len(EVERYTHING_FUNCTIONS)} instrumented, 5 skipped "
        f"(2 {IMPORTED}, 2 {C_FUNCTION}, 1 {WRAPPER})>"
    )


def test_instrumenting_a_module_again_reports_everything_as_already_instrumented(on_path):
    mod = _module(on_path)
    fastpatch.instrument_module(mod)
    again = fastpatch.instrument_module(mod.__name__)  # by dotted name this time
    assert again.instrumented == []
    assert again.counts()[ALREADY] == len(EVERYTHING_FUNCTIONS)


def test_instrument_module_imports_a_dotted_name(on_path):
    name = _tree(on_path, "bulkbyname", {"{name}.py": "def f():\n    return 1\n"})
    selection = fastpatch.instrument_module(name)
    assert selection.instrumented == [f"{name}.f"]
    assert fastpatch.is_instrumented(sys.modules[name].f)


def test_instrument_class_reaches_the_class_body_and_its_nested_classes_not_inherited_methods(on_path):
    mod = _module(on_path, EVERYTHING + "\nclass Square(Shape):\n    def side(self):\n        return 2\n")
    selection = fastpatch.instrument_class(mod.Square)
    assert selection.instrumented == [f"{mod.__name__}.Square.side"]
    assert not fastpatch.is_instrumented(mod.Shape.area)
    inner = fastpatch.instrument_class(mod.Shape)
    assert f"{mod.__name__}.Shape.Inner.hello" in inner.instrumented
    assert f"{mod.__name__}.plain" not in inner.instrumented


def test_instrument_class_of_a_builtin_type_skips_its_c_methods():
    selection = fastpatch.instrument_class(dict)
    assert selection.instrumented == []
    assert selection.counts()[C_FUNCTION] > 10


@pytest.mark.parametrize(
    ("call", "arg", "error"),
    [
        ("instrument_module", 42, TypeError),
        ("instrument_module", "fastpatch._stats", ValueError),
        ("instrument_module", "no_such_module_here_xyz", ImportError),
        ("instrument_class", len, TypeError),
        ("instrument_class", fastpatch.Stats, ValueError),
        ("instrument_package", "fastpatch", ValueError),
    ],
)
def test_bulk_calls_refuse_what_they_cannot_walk(call, arg, error):
    with pytest.raises(error):
        getattr(fastpatch, call)(arg)


def test_instrument_package_walks_every_submodule_and_lists_those_it_could_not_import(on_path):
    root, names = on_path
    name = unique("bulkpkg")
    names.append(name)
    write_tree(str(root), {
        f"{name}/__init__.py": "def top():\n    return 0\n",
        f"{name}/a.py": "def fa():\n    return 1\n",
        f"{name}/sub/__init__.py": "",
        f"{name}/sub/b.py": "class B:\n    def m(self):\n        return 2\n",
        f"{name}/broken.py": "import no_such_dependency_xyz\n",
        f"{name}/__main__.py": "raise SystemExit('must not run')\n",
        f"{name}/nsdir/c.py": "def fc():\n    return 3\n",  # a namespace subpackage
    })
    importlib.invalidate_caches()
    selection = fastpatch.instrument_package(name)
    assert sorted(selection.modules) == sorted([name, f"{name}.a", f"{name}.sub", f"{name}.sub.b"])
    assert sorted(selection.instrumented) == sorted([f"{name}.top", f"{name}.a.fa", f"{name}.sub.b.B.m"])
    skipped = dict(selection.skipped)
    assert skipped[f"{name}.__main__"] == MAIN_MODULE
    assert skipped[f"{name}.broken"] == (
        "not imported: ModuleNotFoundError: No module named 'no_such_dependency_xyz'"
    )


def test_instrument_package_of_a_namespace_package(on_path):
    name = _tree(on_path, "bulkns", {"{name}/part.py": "def f():\n    return 1\n"})
    selection = fastpatch.instrument_package(name)
    assert selection.instrumented == [f"{name}.part.f"]


def test_selections_add_up():
    a, b = fastpatch.Selection(), fastpatch.Selection()
    a.modules.append("m")
    a.instrumented.append("m.f")
    b.skipped.append(("n.g", C_FUNCTION))
    both = a + b
    assert (both.modules, both.instrumented, both.skipped) == (["m"], ["m.f"], [("n.g", C_FUNCTION)])
    assert repr(fastpatch.Selection()) == "<Selection: 0 modules, 0 instrumented, 0 skipped>"


# --------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("include", "exclude", "selected", "not_selected"),
    [
        (["myapp"], [], ["myapp", "myapp.db", "myapp.db.models"], ["myappx", "other", "my"]),
        (["myapp.*.views"], [], ["myapp.api.views", "myapp.x.views.detail"], ["myapp.views", "myapp.a.b.views"]),
        (["app?"], [], ["app1", "appx.sub"], ["app", "app12"]),
        (["m[ab]"], [], ["ma", "mb.x"], ["mc"]),
        (["m[!a]"], [], ["mb"], ["ma"]),
        (["myapp"], ["myapp.tests"], ["myapp", "myapp.core"], ["myapp.tests", "myapp.tests.test_x"]),
        (["*"], ["fastpatch"], ["anything", "any.thing"], ["fastpatch", "fastpatch._hook", "_fastpatch_startup"]),
        (["fastpatch"], [], [], ["fastpatch", "fastpatch._cli"]),
    ],
)
def test_patterns_select_modules_as_documented(include, exclude, selected, not_selected):
    patterns = Patterns(include, exclude)
    assert [n for n in selected if patterns.selects_module(n)] == selected
    assert [n for n in not_selected if patterns.selects_module(n)] == []


def test_the_glob_matcher_agrees_with_fnmatch():
    import fnmatch
    import random

    from fastpatch._select import glob_match

    rng = random.Random(9)
    for _ in range(5000):
        pattern = "".join(rng.choice("ab*?[]!-^") for _ in range(rng.randrange(7)))
        text = "".join(rng.choice("ab[]-!^") for _ in range(rng.randrange(6)))
        try:
            expected = fnmatch.fnmatchcase(text, pattern)
        except Exception:  # noqa: BLE001 - before 3.10 fnmatch fails on some reversed ranges ("[b-a]")
            continue
        assert glob_match(pattern, text) == expected, (pattern, text)


def test_qualname_patterns_select_single_functions_and_exclusion_wins():
    patterns = Patterns(["app", "lib:Client.get"], ["app.views:secret"])
    assert patterns.qualnames_in("lib") == {"Client.get"}
    assert not patterns.selects_module("lib")
    assert patterns.excluded_qualnames("app.views") == {"secret"}
    assert patterns.selects_module("app.views") and patterns.qualnames_in("app.views") == frozenset()


def test_patterns_remember_which_include_matched_nothing():
    patterns = Patterns(["used", "unused", "lib:f"])
    patterns.selects_module("used.sub")
    assert patterns.unmatched() == ["unused", "lib:f"]
    patterns.note_function_found("lib", "f")
    assert patterns.unmatched() == ["unused"]


@pytest.mark.parametrize("bad", ["", "a..b", "mod:", ":f", "a b", "mod:f:g"])
def test_malformed_patterns_are_refused(bad):
    with pytest.raises(PatternError):
        Patterns([bad])


def test_a_single_string_is_not_taken_for_a_list_of_patterns():
    with pytest.raises(TypeError, match="lists of patterns"):
        Patterns("myapp")


# --------------------------------------------------------------------------
# The package's surface
# --------------------------------------------------------------------------


def test_import_fastpatch_loads_none_of_the_whole_program_machinery():
    code = (
        "import sys\n"
        "heavy = ['fastpatch._bulk', 'fastpatch._hook', 'fastpatch._cli', 'fastpatch._reports', 'fastpatch._select',\n"
        "         'fastpatch._activate', 'importlib.util', 'typing', 're', 'fnmatch', 'threading', 'argparse']\n"
        "before = set(sys.modules)  # 3.15's site module loads importlib.util and re itself (.start files)\n"
        "import fastpatch\n"
        "print([m for m in heavy if m in sys.modules and m not in before])\n"
        "fastpatch.instrument_module\n"
        "print(sorted(m for m in ('fastpatch._bulk', 'fastpatch._hook') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "FASTPATCH_INCLUDE": ""}).stdout
    assert out.splitlines() == ["[]", "['fastpatch._bulk']"]


def test_the_whole_program_api_is_exported_lazily_with_docstrings():
    from fastpatch import _bulk, _hook

    assert fastpatch.instrument_module is _bulk.instrument_module
    assert fastpatch.install_import_hook is _hook.install_import_hook
    assert fastpatch.Selection is _bulk.Selection
    for name in fastpatch.__all__:
        assert hasattr(fastpatch, name), name
    assert set(fastpatch._LAZY) <= set(dir(fastpatch))
    for name in ("instrument_module", "instrument_class", "instrument_package", "install_import_hook", "Selection",
                 "instrument", "uninstrument", "stats", "report"):
        doc = getattr(fastpatch, name).__doc__
        assert doc and len(doc) > 40, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastpatch.nope  # noqa: B018
