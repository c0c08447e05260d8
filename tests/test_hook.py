"""install_import_hook: functions spliced before the module body runs, a
loader that behaves as the one it wraps, and real packages timed through
it (in subprocesses, so that they stay uninstrumented here)."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import marshal
import os
import runpy
import subprocess
import sys
import textwrap
import zipimport

import pytest

import fastpatch
from fastpatch import _ext
from fastpatch._hook import _finder
from sample_pkgs import EVERYTHING, forget, unique, write_tree, write_zip


@pytest.fixture
def tree(tmp_path):
    """(root on sys.path, a fresh package name); hooks and modules are removed after."""
    sys.path.insert(0, str(tmp_path))
    name = unique("hooked")
    hooks = []
    yield tmp_path, name, hooks
    for hook in hooks:
        hook.remove()
    sys.path.remove(str(tmp_path))
    forget(name)
    importlib.invalidate_caches()


def _hook(hooks, include, exclude=()):
    hook = fastpatch.install_import_hook(include, exclude)
    hooks.append(hook)
    return hook


def _write(root, files):
    write_tree(str(root), files)
    importlib.invalidate_caches()


def _probes(code):
    """How many fastpatch probes ``code`` and everything nested in it carry."""
    n = 0
    for const in code.co_consts:
        if type(const) is _ext.Probe:
            n += 1
        elif type(const) is type(code):
            n += _probes(const)
    return n


def test_functions_are_instrumented_before_the_module_body_runs(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": EVERYTHING})
    hook = _hook(hooks, [name])
    mod = importlib.import_module(name)
    # Closures created after the import share their definition's patched code.
    adder = mod.make_adder(1)
    assert fastpatch.is_instrumented(adder)
    assert adder(1) == 2
    assert fastpatch.stats(adder).calls == 1
    # Code kept at import time (jinja2's @internalcode) is the instrumented code.
    assert mod.SAVED_CODE is mod.remembered.__code__
    assert fastpatch.is_instrumented(mod.remembered)
    # The wrapper made by a decorator in this module is a closure of it, timed too.
    assert fastpatch.is_instrumented(mod.decorated.__wrapped__)
    assert fastpatch.is_instrumented(mod.Shape.Inner.hello)
    assert f"{name}.make_adder.<locals>.adder" in hook.selection.instrumented
    assert hook.selection.modules == [name]
    assert hook.unmatched() == []


def test_uninstrument_and_stats_work_though_only_the_probes_hold_the_original_code(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": "def f():\n    return 1\n"})
    _hook(hooks, [name])
    mod = importlib.import_module(name)
    spliced = mod.f.__code__
    mod.f()
    fastpatch.uninstrument(mod.f)
    assert not fastpatch.is_instrumented(mod.f) and _probes(mod.f.__code__) == 0
    assert mod.f.__code__.co_name == "f" and mod.f() == 1
    assert fastpatch.stats(mod.f).calls == 1  # the definition lives on
    fastpatch.instrument(mod.f)
    assert mod.f.__code__ is spliced
    mod.f()
    assert fastpatch.stats(mod.f).calls == 2


def test_the_module_sees_only_its_real_loader(tree):
    root, name, hooks = tree
    _write(root, {
        f"{name}/__init__.py": "LOADER_DURING_IMPORT = __loader__\nSPEC_LOADER_DURING_IMPORT = __spec__.loader\n",
    })
    _hook(hooks, [name])
    spec = importlib.util.find_spec(name)
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)  # the wrapper passes for it
    assert spec.loader.path == os.path.join(str(root), name, "__init__.py")  # attributes fall through
    mod = importlib.import_module(name)
    for loader in (mod.__loader__, mod.__spec__.loader, mod.LOADER_DURING_IMPORT, mod.SPEC_LOADER_DURING_IMPORT):
        assert type(loader) is importlib.machinery.SourceFileLoader


def test_pyc_files_never_hold_probes(tree, monkeypatch):
    root, name, hooks = tree
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # CI sets PYTHONDONTWRITEBYTECODE
    _write(root, {f"{name}/__init__.py": EVERYTHING})
    _hook(hooks, [name])
    mod = importlib.import_module(name)
    assert fastpatch.is_instrumented(mod.plain)
    cached = mod.__spec__.cached
    with open(cached, "rb") as fh:
        code = marshal.loads(fh.read()[16:])
    assert _probes(code) == 0
    assert code.co_filename == mod.__file__


def test_reload_splices_the_fresh_code_exactly_once(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": "def f():\n    return 1\n"})
    hook = _hook(hooks, [name])
    mod = importlib.import_module(name)
    first = mod.f
    mod = importlib.reload(mod)
    assert mod.f is not first
    assert fastpatch.is_instrumented(mod.f) and fastpatch.is_instrumented(first)
    assert _probes(mod.f.__code__) == 1
    assert type(mod.__loader__) is importlib.machinery.SourceFileLoader
    assert hook.selection.instrumented == [f"{name}.f", f"{name}.f"]
    # Code that already carries a probe is never spliced again.
    tree_again = fastpatch._patch.patch_module_code(
        compile("def g():\n    pass\n", "<x>", "exec").replace(co_consts=(mod.f.__code__, None)), name
    )
    assert tree_again.instrumented == [] and tree_again.skipped[0][1] == "already carries a fastpatch probe"


def test_namespace_packages_and_their_modules(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/part/mod.py": "def f():\n    return 1\n"})
    hook = _hook(hooks, [name])
    mod = importlib.import_module(f"{name}.part.mod")
    assert fastpatch.is_instrumented(mod.f)
    assert sys.modules[name].__spec__.loader is not None or sys.modules[name].__spec__.submodule_search_locations
    assert hook.selection.modules == [f"{name}.part.mod"]


def test_modules_in_a_zip_archive(tree):
    root, name, hooks = tree
    archive = os.path.join(str(root), "bundle.zip")
    write_zip(archive, {f"{name}/__init__.py": "def f():\n    return 1\n",
                        f"{name}/sub.py": "def g():\n    return 2\n"})
    sys.path.insert(0, archive)
    try:
        _hook(hooks, [name])
        importlib.invalidate_caches()
        sub = importlib.import_module(f"{name}.sub")
        pkg = sys.modules[name]
        assert fastpatch.is_instrumented(pkg.f) and fastpatch.is_instrumented(sub.g)
        assert type(pkg.__loader__) is zipimport.zipimporter
        assert sub.g() == 2
    finally:
        sys.path.remove(archive)


def test_python_dash_m_runs_the_spliced_code_through_get_code(tree):
    root, name, hooks = tree
    _write(root, {
        f"{name}/__init__.py": "",
        f"{name}/__main__.py": "def main():\n    return __loader__\nRESULT = main()\n",
    })
    hook = _hook(hooks, [name])
    namespace = runpy.run_module(name, run_name="__main__")
    assert type(namespace["RESULT"]) is importlib.machinery.SourceFileLoader
    assert fastpatch.is_instrumented(namespace["main"])
    assert f"{name}.__main__.main" in hook.selection.instrumented


def test_module_qualname_patterns_select_single_functions_or_a_class(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": EVERYTHING})
    hook = _hook(hooks, [f"{name}:plain", f"{name}:Shape", f"{name}:nothing_called_this"])
    mod = importlib.import_module(name)
    assert fastpatch.is_instrumented(mod.plain)
    assert fastpatch.is_instrumented(mod.Shape.area) and fastpatch.is_instrumented(mod.Shape.Inner.hello)
    assert not fastpatch.is_instrumented(mod.make_adder) and not fastpatch.is_instrumented(mod.make_adder(1))
    assert hook.unmatched() == [f"{name}:nothing_called_this"]


def test_exclusion_by_qualname_wins_over_the_module_and_covers_what_is_nested_in_it(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": EVERYTHING})
    hook = _hook(hooks, [name], [f"{name}:make_adder", f"{name}:Shape.area", f"{name}:Shape.Inner"])
    mod = importlib.import_module(name)
    assert not fastpatch.is_instrumented(mod.make_adder)
    assert not fastpatch.is_instrumented(mod.make_adder(2))
    assert not fastpatch.is_instrumented(mod.Shape.area) and not fastpatch.is_instrumented(mod.Shape.Inner.hello)
    assert f"{name}.make_adder.<locals>.adder" not in hook.selection.instrumented
    assert fastpatch.is_instrumented(mod.Shape.unit) and fastpatch.is_instrumented(mod.plain)
    assert mod.make_adder(2)(1) == 3


def test_exclusion_of_a_subpackage(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": "", f"{name}/tests/t.py": "def f():\n    pass\n",
                  f"{name}/core.py": "def f():\n    pass\n"})
    _hook(hooks, [name], [f"{name}.tests"])
    assert not fastpatch.is_instrumented(importlib.import_module(f"{name}.tests.t").f)
    assert fastpatch.is_instrumented(importlib.import_module(f"{name}.core").f)


class _ExecOnlyFinder:
    """A finder whose loader has exec_module but no get_code, as pytest's
    assertion rewriter."""

    def __init__(self, prefix):
        self.prefix = prefix

    def find_spec(self, name, path=None, target=None):
        if name != self.prefix and not name.startswith(self.prefix + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        spec.loader = self
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        with open(module.__spec__.origin) as fh:
            exec(compile(fh.read(), module.__spec__.origin, "exec"), module.__dict__)


def test_a_loader_without_get_code_runs_the_module_its_way_and_the_module_is_walked_after(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": EVERYTHING})
    finder = _ExecOnlyFinder(name)
    sys.meta_path.insert(0, finder)
    try:
        hook = _hook(hooks, [name])
        assert sys.meta_path[0] is _finder
        mod = importlib.import_module(name)
    finally:
        sys.meta_path.remove(finder)
    assert mod.__loader__ is finder and mod.__spec__.loader is finder
    assert fastpatch.is_instrumented(mod.plain) and fastpatch.is_instrumented(mod.Shape.area)
    assert not fastpatch.is_instrumented(mod.make_adder(1))  # closures are out of a walk's reach
    assert hook.selection.modules == [name]


def test_the_finder_steps_back_in_front_of_a_finder_inserted_later(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": "def f():\n    pass\n"})
    _hook(hooks, [name])
    finder = _ExecOnlyFinder(name)
    sys.meta_path.insert(0, finder)
    try:
        import json.tool  # noqa: F401 - any import brings the hook back in front

        assert sys.meta_path[0] is _finder
        mod = importlib.import_module(name)
        assert mod.__loader__ is finder and fastpatch.is_instrumented(mod.f)
    finally:
        sys.meta_path.remove(finder)


def test_the_finder_turns_away_other_packages_without_matching_patterns(tree):
    # Every import of the program asks the finder first: a name outside the
    # packages the patterns name is refused before any pattern is matched.
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": "def f():\n    pass\n", f"{name}_other.py": "def g():\n    pass\n"})
    _hook(hooks, [f"{name}.sub", f"{name}:f"])
    assert _finder._tops == frozenset({name})
    other = importlib.import_module(f"{name}_other")
    assert f"{name}_other" not in _finder._plans and not fastpatch.is_instrumented(other.g)
    assert fastpatch.is_instrumented(importlib.import_module(name).f)
    assert name in _finder._plans
    # a glob in a top-level part can select any package: no shortcut then
    _hook(hooks, ["*_nothing_matches"])
    assert _finder._tops is None
    hooks.pop().remove()
    assert _finder._tops == frozenset({name})


def test_modules_imported_before_the_hook_are_walked_at_once(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": EVERYTHING})
    mod = importlib.import_module(name)
    assert not fastpatch.is_instrumented(mod.plain)
    hook = _hook(hooks, [name])
    assert fastpatch.is_instrumented(mod.plain)
    assert hook.selection.modules == [name]


def test_remove_takes_the_hook_out(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": "", f"{name}/a.py": "def f():\n    pass\n",
                  f"{name}/b.py": "def f():\n    pass\n"})
    with fastpatch.install_import_hook([name]) as hook:
        a = importlib.import_module(f"{name}.a")
        assert _finder in sys.meta_path
    assert _finder not in sys.meta_path
    assert not hook.installed and "removed" in repr(hook)
    b = importlib.import_module(f"{name}.b")
    assert fastpatch.is_instrumented(a.f) and not fastpatch.is_instrumented(b.f)


def test_fastpatch_never_instruments_itself():
    with fastpatch.install_import_hook(["fastpatch", "_fastpatch_startup"]) as hook:
        cli = importlib.import_module("fastpatch._cli")
        assert not fastpatch.is_instrumented(cli.main)
    assert hook.selection.instrumented == [] and hook.unmatched() == ["fastpatch", "_fastpatch_startup"]


def test_a_module_the_hook_fails_to_splice_is_imported_and_walked_with_a_warning(tree, monkeypatch, capsys):
    root, name, hooks = tree
    _write(root, {f"{name}.py": "def f():\n    return 1\nRESULT = f()\n"})

    def failing(code, module, sample):
        raise RuntimeError("no splice today")

    monkeypatch.setattr(fastpatch._hook, "patch_module_code", failing)
    _hook(hooks, [name])
    mod = importlib.import_module(name)
    assert mod.RESULT == 1  # the module ran, its original code
    assert fastpatch.is_instrumented(mod.f)  # and was walked after
    assert capsys.readouterr().err == (
        f"fastpatch: could not splice {name} before it ran (RuntimeError: no splice today): walking it after\n"
    )


def test_unselected_imports_go_on_untouched(tree):
    root, name, hooks = tree
    _write(root, {f"{name}/__init__.py": "def f():\n    pass\n"})
    _hook(hooks, ["something_else"])
    mod = importlib.import_module(name)
    assert not fastpatch.is_instrumented(mod.f)
    assert type(mod.__spec__.loader) is importlib.machinery.SourceFileLoader


# --------------------------------------------------------------------------
# Real packages, each in a fresh interpreter
# --------------------------------------------------------------------------


def _run_python(code):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_generator_expressions_and_comprehensions_spliced_by_the_hook_run_and_count():
    got = _run_python('''
        import json, sys, types, fastpatch
        from fastpatch._patch import patch_module_code
        source = (
            "def f(xs):\\n"
            "    return list(x * 2 for x in xs), [x for x in xs], {x: 1 for x in xs}, sum(x for x in xs if x)\\n"
        )
        module = types.ModuleType("genexprs")
        exec(patch_module_code(compile(source, "genexprs.py", "exec"), "genexprs").code, module.__dict__)
        print(json.dumps({"result": list(map(str, module.f([1, 2, 3]))), "calls": fastpatch.stats(module.f).calls}))
    ''')
    assert got == {"result": ["[2, 4, 6]", "[1, 2, 3]", "{1: 1, 2: 1, 3: 1}", "6"], "calls": 1}


def test_jinja2_templates_render_and_hide_their_internal_frames_when_every_function_is_timed():
    pytest.importorskip("jinja2")
    got = _run_python('''
        import json, sys, traceback
        import fastpatch
        hook = fastpatch.install_import_hook(["jinja2", "markupsafe"])
        import jinja2, jinja2.utils, jinja2.runtime
        env = jinja2.Environment(loader=jinja2.DictLoader({
            "page": "{% macro m() %}m{% endmacro %}{% for x in xs %}<{{ x|upper }}>{% endfor %}{{ m() }}",
            "bad": "line1\\n{{ 1 // zero }}",
        }))
        out = env.get_template("page").render(xs=["a", "b"])
        # @internalcode keeps f.__code__ at import time: it must be the instrumented code.
        internal = [f for f in (jinja2.runtime.Context.call, jinja2.runtime.Macro.__call__)]
        try:
            env.get_template("bad").render(zero=0)
        except ZeroDivisionError:
            frames = [(f.filename, f.lineno) for f in traceback.extract_tb(sys.exc_info()[2])]
        s = fastpatch.stats(jinja2.runtime.Context.call)
        print(json.dumps({
            "out": out,
            "internal": [f.__code__ in jinja2.utils.internal_code for f in internal],
            "instrumented": [fastpatch.is_instrumented(f) for f in internal],
            "template_frame": [list(f) for f in frames if f[0] == "<template>"],
            "jinja_frames": len([f for f in frames if "jinja2" in f[0] and "environment.py" not in f[0]]),
            "modules": len(hook.selection.modules), "functions": len(hook.selection.instrumented),
            "macro_calls": s.calls,
        }))
    ''')
    assert got["out"] == "<A><B>m"
    assert got["internal"] == [True, True] and got["instrumented"] == [True, True]
    assert got["template_frame"] == [["<template>", 2]]  # jinja2 rewrote the traceback to the template line
    assert got["jinja_frames"] == 0  # and hid its internal frames, which it knows by code object
    assert got["modules"] >= 15 and got["functions"] >= 500
    assert got["macro_calls"] >= 1


def test_toolz_counts_are_exact_when_every_function_is_timed():
    pytest.importorskip("toolz")
    got = _run_python('''
        import json, fastpatch
        hook = fastpatch.install_import_hook(["toolz"])
        import toolz
        from toolz import curried
        inc = lambda x: x + 1
        for _ in range(25):
            toolz.pipe(1, inc, inc)
        groups = toolz.groupby(len, ["a", "bb", "cc", "d"])
        total = curried.reduce(lambda a, b: a + b)(range(10))
        composed = toolz.compose(inc, inc)
        print(json.dumps({
            "pipe": fastpatch.stats(toolz.pipe).calls,
            "groupby": fastpatch.stats(toolz.groupby).calls,
            "compose_call": [composed(i) for i in range(3)],
            "compose_calls": fastpatch.stats(type(composed).__call__).calls,
            "groups": sorted(groups), "total": total,
            "curry_instrumented": fastpatch.is_instrumented(toolz.curry.__call__),
            "unmatched": hook.unmatched(),
        }))
    ''')
    assert got == {
        "pipe": 25, "groupby": 1, "compose_call": [2, 3, 4], "compose_calls": 3, "groups": [1, 2], "total": 45,
        "curry_instrumented": True, "unmatched": [],
    }


def test_sortedcontainers_behaves_and_counts_exactly_when_every_function_is_timed():
    pytest.importorskip("sortedcontainers")
    got = _run_python('''
        import json, random, fastpatch
        hook = fastpatch.install_import_hook(["sortedcontainers"])
        from sortedcontainers import SortedList, SortedDict
        rng = random.Random(5)
        values = [rng.randrange(1000) for _ in range(500)]
        sl = SortedList()
        for v in values:
            sl.add(v)
        for v in values[:100]:
            sl.remove(v)
        sd = SortedDict((str(v), v) for v in values[:50])
        print(json.dumps({
            "sorted": list(sl) == sorted(values[100:]),
            "add": fastpatch.stats(SortedList.add).calls,
            "remove": fastpatch.stats(SortedList.remove).calls,
            "keys": list(sd) == sorted(set(str(v) for v in values[:50])),
            "pyc_clean": True,
        }))
    ''')
    assert got == {"sorted": True, "add": 500, "remove": 100, "keys": True, "pyc_clean": True}


def test_the_hook_loads_no_module_it_does_not_need(tree):
    # Every process the hook reaches pays for what it imports: not the Python
    # splicer (the C one runs), the report (written at exit), the bulk walk,
    # nor, in an installed fastpatch (its sequences assembled at build time),
    # bytecode, typing, re or dis.
    root, name, _hooks = tree
    _write(root, {f"{name}.py": "def f():\n    return 1\n"})
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import fastpatch, fastpatch._activate\n"
        f"hook = fastpatch.install_import_hook([{name!r}])\n"
        f"import {name}\n"
        f"assert fastpatch.is_instrumented({name}.f)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    env["PYTHONPATH"] = str(root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    loaded = set(json.loads(out))
    assert {"fastpatch._hook", "fastpatch._csplice", name} <= loaded
    unwanted = {"fastpatch._pysplice", "fastpatch._reports", "fastpatch._stats", "fastpatch._bulk", "bisect"}
    if importlib.util.find_spec("fastpatch._assembled") is not None:
        unwanted |= {"bytecode", "typing", "re", "dis", "inspect"}
    assert not unwanted & loaded, sorted(unwanted & loaded)


# --------------------------------------------------------------------------
# Patterns that select the standard library, or everything (-i '*')
# --------------------------------------------------------------------------


def _run_fastpatch_report(tmp_path, *args):
    """``python -m fastpatch run -o out.json ARGS`` in a fresh interpreter:
    (its stdout, its stderr, the report's calls by name)."""
    out = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, "-m", "fastpatch", "run", "-o", str(out), *args], cwd=str(tmp_path), capture_output=True,
        text=True, timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")},
    )
    assert result.returncode == 0, result.stderr
    with open(out) as fh:
        calls = {f["name"]: f["calls"] for f in json.load(fh)["functions"]}
    return result.stdout, result.stderr, calls


@pytest.mark.parametrize("pattern", ["*", "o*", "opcode"])
def test_a_pattern_selecting_what_fastpatch_itself_imports_runs_the_program(tmp_path, pattern):
    # The splicer's dialect is built from `opcode`: a pattern that selects
    # opcode must not make the hook splice it while building the dialect.
    stdout, stderr, _calls = _run_fastpatch_report(tmp_path, "-i", pattern, "-c", "import dis\nprint('hi')")
    assert stdout == "hi\n"
    assert stderr == "fastpatch: report written to out.json\n"


def test_a_star_pattern_times_the_program_and_the_standard_library_but_never_fastpatch(tmp_path):
    program = (
        "import json, posixpath\n"
        "def main():\n"
        "    return json.dumps([posixpath.commonpath(['/a/b', '/a/c'])])\n"
        "print(main(), main())\n"
    )
    stdout, _stderr, calls = _run_fastpatch_report(tmp_path, "-i", "*", "-c", program)
    assert stdout == '["/a"] ["/a"]\n'
    assert calls["__main__.main"] == 2  # the program's own code, spliced before it runs
    assert calls["json.dumps"] == 2  # a module imported after the hook was installed: spliced
    assert calls["posixpath.commonpath"] == 2  # imported before it (interpreter startup): walked
    assert [name for name in calls if name.split(".")[0] in ("fastpatch", "_fastpatch_startup")] == []


def test_what_writing_the_report_imports_never_goes_through_the_hook(tmp_path):
    # Writing a JSON report imports json, which the hook selects here.
    code = (
        "import sys\n"
        "from fastpatch import _activate\n"
        f"activation = _activate.activate(['*'], output={str(tmp_path / 'r.json')!r})\n"
        "assert 'json' not in sys.modules\n"
        "_activate.write_report(activation)\n"
        "print('json' in sys.modules, [m for m in activation.hook.selection.modules if m.startswith('json')])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True []\n"


@pytest.mark.parametrize(("pattern", "loaded"), [("*", True), ("opcode", True), ("some_app_of_ours", False)])
def test_what_the_splicer_needs_is_loaded_with_the_hook_only_if_a_pattern_may_select_it(pattern, loaded):
    # opcode is where the splicer's dialect comes from; a hook that selects
    # only the program's own packages loads it at its first splice (3.9 has
    # no list of the standard library's modules: it always loads it).
    loaded = loaded or sys.version_info < (3, 10)
    code = (
        "import sys, fastpatch\n"
        "assert 'opcode' not in sys.modules\n"
        f"fastpatch.install_import_hook([{pattern!r}])\n"
        "print('opcode' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert (result.returncode, result.stdout) == (0, f"{loaded}\n"), result.stderr
