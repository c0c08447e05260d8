"""Zero-code activation (FASTPATCH_INCLUDE and the .pth / .start files) and
child processes: every process writes its own report, and merging them
counts every call exactly once.

What a new interpreter does at startup needs the installed wheel's
fastpatch.pth (fastpatch.start from 3.18), which an editable install does
not have: those tests skip there, and run in CI, which installs the wheel.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import sysconfig

import pytest

from sample_pkgs import write_tree

HAS_PTH = any(
    os.path.exists(os.path.join(d, "fastpatch.pth"))
    for d in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)
needs_pth = pytest.mark.skipif(
    not HAS_PTH, reason="fastpatch.pth is not installed here (an editable install): install the wheel (`pip install .`)"
)
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

MAIN = '''
import multiprocessing as mp
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

from worker import work


def local(x):
    return x + 1


if __name__ == "__main__":
    how = sys.argv[1]
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:
            [work(i) for i in range(10)]
            sys.exit(0)
        os.waitpid(pid, 0)
    elif how == "subprocess":
        subprocess.run([sys.executable, "-c", "import worker\\nfor i in range(10): worker.work(i)"], check=True)
    elif how.startswith("executor-"):
        with ProcessPoolExecutor(2, mp_context=mp.get_context(how[9:])) as executor:
            assert sum(executor.map(work, range(10))) == 285
    elif how.startswith("with-pool-"):  # Pool.__exit__ calls terminate(): SIGTERM to the workers
        with mp.get_context(how[10:]).Pool(2) as pool:
            assert sum(pool.map(work, range(10))) == 285
    elif how.startswith("main-"):  # a function of the main script: __mp_main__ in spawned children
        pool = mp.get_context(how[5:]).Pool(2)
        assert sum(pool.map(local, range(10))) == 55
        pool.close()
        pool.join()
        local(0)
    else:
        pool = mp.get_context(how).Pool(2)
        assert sum(pool.map(work, range(10))) == 285
        pool.close()
        pool.join()
    work(0)
'''


@pytest.fixture
def program(tmp_path):
    write_tree(str(tmp_path), {"main.py": MAIN, "worker.py": "def work(x):\n    return x * x\n"})
    (tmp_path / "out").mkdir()
    return tmp_path


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    env.update(extra)
    return env


def _merged_calls(directory):
    """name -> calls over every report in ``directory``, merged by ``report``."""
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".json"))
    result = subprocess.run([sys.executable, "-m", "fastpatch", "report", "-f", "json", *files], capture_output=True,
                            text=True, timeout=60, env=_env())
    assert result.returncode == 0, result.stderr
    return {f["name"]: f["calls"] for f in json.loads(result.stdout)["functions"]}, files


def _run(program, how, output="out/r.json", patterns=()):
    result = subprocess.run([sys.executable, "-m", "fastpatch", "run", "-o", output, *patterns, "main.py", how],
                            cwd=str(program), capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode == 0, result.stderr
    return result


START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
_CASES = (
    [pytest.param("os.fork", marks=needs_fork)]
    + [pytest.param(m, marks=[needs_pth] if m != "fork" else [needs_fork]) for m in START_METHODS]
    + [pytest.param(f"executor-{m}", marks=[needs_pth] if m != "fork" else [needs_fork]) for m in START_METHODS]
    + [pytest.param("subprocess", marks=needs_pth)]
)


@pytest.mark.parametrize("how", _CASES)
def test_every_child_writes_its_own_report_and_merging_counts_each_call_once(program, how):
    _run(program, how)
    calls, files = _merged_calls(str(program / "out"))
    assert calls["worker.work"] == 11
    names = sorted(os.path.basename(f) for f in files)
    assert "r.json" in names  # the run process keeps the plain name
    children = [n for n in names if n != "r.json"]
    assert children and all(n.startswith("r.") and n[2:-5].isdigit() for n in children), names


@pytest.mark.parametrize("method", [pytest.param(m, marks=[needs_pth] if m != "fork" else [needs_fork])
                                    for m in START_METHODS])
def test_a_pool_ended_by_with_terminate_still_reports_every_call(program, method):
    _run(program, f"with-pool-{method}")
    calls, _files = _merged_calls(str(program / "out"))
    assert calls["worker.work"] == 11


@pytest.mark.parametrize("method", [pytest.param(m, marks=[needs_pth] if m != "fork" else [needs_fork])
                                    for m in START_METHODS])
def test_functions_of_the_main_script_are_timed_in_every_child(program, method):
    _run(program, f"main-{method}")
    calls, _files = _merged_calls(str(program / "out"))
    assert calls["__main__.local"] == 11  # __mp_main__ in spawned children counts as __main__


@pytest.mark.parametrize("patterns, expected", [
    (["-x", "__main__:local"], {"worker.work": 1}),  # the default include, less one function of the script
    (["-i", "__main__:local"], {"__main__.local": 11}),  # one function of the script
    (["-i", "main"], {"__main__.local": 11}),  # the script by its file name
])
@pytest.mark.parametrize("method", [pytest.param(m, marks=[needs_pth] if m != "fork" else [needs_fork])
                                    for m in START_METHODS])
def test_the_patterns_choose_the_main_scripts_functions_in_every_child_as_in_the_parent(
    program, method, patterns, expected
):
    _run(program, f"main-{method}", patterns=patterns)
    calls, _files = _merged_calls(str(program / "out"))
    assert calls == expected


@needs_fork
def test_pid_in_the_output_names_every_file_by_its_process(program):
    _run(program, "fork", output="out/r-{pid}.json")
    calls, files = _merged_calls(str(program / "out"))
    assert calls["worker.work"] == 11
    assert len(files) == 3 and all(os.path.basename(f)[2:-5].isdigit() for f in files)


def test_an_installed_wheel_ships_the_activation_files():
    import fastpatch

    site_packages = os.path.dirname(os.path.dirname(os.path.abspath(fastpatch.__file__)))
    if os.path.basename(site_packages) == "src":
        pytest.skip("fastpatch is imported from the source tree (an editable install)")
    for name in ("fastpatch.pth", "_fastpatch_startup.py"):
        assert os.path.exists(os.path.join(site_packages, name)), name
    # A .start file would cost every startup an import of pkgutil and re
    # (PEP 829's site module); the .pth line serves until 3.18 ignores it.
    assert os.path.exists(os.path.join(site_packages, "fastpatch.start")) == (sys.version_info >= (3, 18))
    with open(os.path.join(site_packages, "fastpatch.pth")) as fh:
        assert fh.read().startswith('import os; os.environ.get("FASTPATCH_INCLUDE") and ')



def test_an_installed_wheel_ships_every_package_of_the_source_tree():
    import fastpatch

    installed = os.path.dirname(os.path.abspath(fastpatch.__file__))
    if os.path.basename(os.path.dirname(installed)) == "src":
        pytest.skip("fastpatch is imported from the source tree (an editable install)")
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "fastpatch")
    packages = sorted(os.path.relpath(root, source) for root, _dirs, names in os.walk(source)
                      if "__init__.py" in names and "__pycache__" not in root)
    assert packages == [".", "_reports", "export"]
    missing = [p for p in packages if not os.path.exists(os.path.join(installed, p, "__init__.py"))]
    assert missing == []

# --------------------------------------------------------------------------
# Activation from the environment, at interpreter startup
# --------------------------------------------------------------------------


def _python(code, cwd, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=str(cwd), capture_output=True, text=True, timeout=60,
                          env=_env(**env))


@needs_pth
def test_fastpatch_include_times_python_dash_m_with_no_change_to_the_program(program):
    write_tree(str(program), {
        "app/__init__.py": "def helper():\n    return 1\n",
        "app/__main__.py": "from app import helper\ndef main():\n    return helper() + helper()\nmain()\n",
    })
    result = subprocess.run([sys.executable, "-m", "app"], cwd=str(program), capture_output=True, text=True,
                            timeout=60, env=_env(FASTPATCH_INCLUDE="app", FASTPATCH_OUTPUT="out/app.json"))
    assert result.returncode == 0, result.stderr
    with open(program / "out" / "app.json") as fh:
        report = json.load(fh)
    assert {f["name"]: f["calls"] for f in report["functions"]} == {"app.helper": 2, "app.__main__.main": 1}


@needs_pth
def test_fastpatch_include_times_a_program_with_no_change_to_it(program):
    result = _python("import worker\nfor i in range(7): worker.work(i)", program,
                     FASTPATCH_INCLUDE="worker", FASTPATCH_OUTPUT="out/env.json", FASTPATCH_FORMAT="json")
    assert result.returncode == 0, result.stderr
    with open(program / "out" / "env.json") as fh:
        report = json.load(fh)
    assert {f["name"]: f["calls"] for f in report["functions"]} == {"worker.work": 7}


@needs_pth
def test_without_an_output_the_table_goes_to_stderr(program):
    result = _python("import worker\nworker.work(1)", program, FASTPATCH_INCLUDE="worker")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("fastpatch: process ") and lines[1].split()[0] == "calls"
    assert lines[2].split()[0] == "1" and lines[2].endswith(" worker.work")


@pytest.mark.parametrize("env", [{}, {"FASTPATCH_INCLUDE": "worker", "FASTPATCH_ENABLED": "0",
                                      "FASTPATCH_OUTPUT": "out/off.json"}])
def test_nothing_is_loaded_unless_fastpatch_include_is_set(program, env):
    result = _python("import sys, worker\nworker.work(1)\nprint(sorted(m for m in sys.modules if 'fastpatch' in m))",
                     program, **env)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.replace("'", '"'))
    # fastpatch.pth (from 3.18 fastpatch.start) imports the tiny startup
    # module whenever FASTPATCH_INCLUDE is set; FASTPATCH_ENABLED=0 stops it there.
    assert loaded in ([], ["_fastpatch_startup"])
    assert not os.path.exists(program / "out" / "off.json")


@needs_pth
def test_a_users_sitecustomize_still_runs(program, tmp_path):
    site_dir = tmp_path / "site"
    write_tree(str(site_dir), {"sitecustomize.py": "import os\nos.environ['SITECUSTOMIZE_RAN'] = 'yes'\n"})
    result = _python("import os, sys, worker\nworker.work(1)\n"
                     "print(os.environ.get('SITECUSTOMIZE_RAN'), 'fastpatch._activate' in sys.modules)",
                     program, FASTPATCH_INCLUDE="worker", FASTPATCH_OUTPUT="out/s.json",
                     PYTHONPATH=str(site_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["yes", "True"]
    assert os.path.exists(program / "out" / "s.json")


@needs_pth
def test_a_bad_setting_never_stops_the_program(program):
    result = _python("print('ran')", program, FASTPATCH_INCLUDE="a..b")
    assert result.stdout == "ran\n"
    assert result.stderr.startswith("fastpatch: not activated: PatternError: bad pattern 'a..b'")


@needs_pth
def test_fastpatch_include_star_runs_the_program_and_times_the_standard_library(program):
    result = _python("import json\nprint(json.dumps([1]))", program, FASTPATCH_INCLUDE="*",
                     FASTPATCH_OUTPUT="out/star.json")
    assert (result.returncode, result.stdout, result.stderr) == (0, "[1]\n", "")
    with open(program / "out" / "star.json") as fh:
        calls = {f["name"]: f["calls"] for f in json.load(fh)["functions"]}
    assert calls["json.dumps"] == 1
    assert [name for name in calls if name.split(".")[0] in ("fastpatch", "_fastpatch_startup")] == []


# --------------------------------------------------------------------------
# -E and -I: the interpreter ignores its environment, and so does fastpatch
# --------------------------------------------------------------------------

# -I leaves the current directory off sys.path: the code puts it back to find worker.
WORK_ONCE = "import sys\nsys.path.insert(0, '')\nimport worker\nworker.work(1)\n"
LOADED = "print(sorted(m for m in sys.modules if 'fastpatch' in m))\n"


@pytest.mark.parametrize("flags", [["-E"], ["-I"], ["-S"]])
def test_python_dash_e_dash_i_and_dash_s_ignore_fastpatch_include(program, flags):
    result = subprocess.run([sys.executable, *flags, "-c", WORK_ONCE + LOADED], cwd=str(program), capture_output=True,
                            text=True, timeout=60,
                            env=_env(FASTPATCH_INCLUDE="worker", FASTPATCH_OUTPUT="out/iso.json"))
    assert (result.returncode, result.stderr) == (0, "")
    # No more than the not-activated path: at most the startup module, which returns at once.
    assert json.loads(result.stdout.replace("'", '"')) in ([], ["_fastpatch_startup"])
    assert os.listdir(program / "out") == []


_NOT_DASH_E = [
    pytest.param(["-P"], {}, id="-P", marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="-P is 3.11+")),
    pytest.param(["-s"], {}, id="-s"),
    pytest.param([], {"PYTHONNOUSERSITE": "1"}, id="PYTHONNOUSERSITE"),
]


@needs_pth
@pytest.mark.parametrize(("flags", "extra"), _NOT_DASH_E)
def test_fastpatch_include_still_activates_under_safe_path_and_without_the_user_site(program, flags, extra):
    result = subprocess.run([sys.executable, *flags, "-c", WORK_ONCE], cwd=str(program), capture_output=True,
                            text=True, timeout=60,
                            env=_env(FASTPATCH_INCLUDE="worker", FASTPATCH_OUTPUT="out/p.json", **extra))
    assert (result.returncode, result.stderr) == (0, "")
    with open(program / "out" / "p.json") as fh:
        assert {f["name"]: f["calls"] for f in json.load(fh)["functions"]} == {"worker.work": 1}


@pytest.mark.parametrize("flag", ["-E", "-I"])
def test_the_explicit_api_works_under_dash_e_and_dash_i(program, flag):
    code = ("import sys\nsys.path.insert(0, '')\nimport fastpatch\n"
            "def local():\n    return 0\n"
            "fastpatch.instrument(local)\nlocal()\n"
            "with fastpatch.install_import_hook(['worker']):\n    import worker\n"
            "worker.work(2)\nworker.work(3)\n"
            "print(fastpatch.stats(local).calls, fastpatch.stats(worker.work).calls)\n")
    result = subprocess.run([sys.executable, flag, "-c", code], cwd=str(program), capture_output=True, text=True,
                            timeout=60, env=_env(FASTPATCH_INCLUDE="nothing", FASTPATCH_OUTPUT="out/no.json"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "1 2\n", "")
    assert os.listdir(program / "out") == []


ISOLATED_CHILD = '''
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # -I puts no directory of the script's on sys.path

from worker import work

CHILD = "import sys\\nsys.path.insert(0, {!r})\\nimport worker\\nfor i in range({}): worker.work(i)"

work(0)
subprocess.run([sys.executable, "-c", CHILD.format(HERE, 3)], check=True)
subprocess.run([sys.executable, "-I", "-c", CHILD.format(HERE, 5)], check=True)
'''


@needs_pth
@pytest.mark.parametrize("flags", [[], ["-E"], ["-I"]])
def test_run_times_its_program_and_its_children_but_not_a_child_started_with_dash_i(program, flags):
    write_tree(str(program), {"iso.py": ISOLATED_CHILD})
    result = subprocess.run([sys.executable, *flags, "-m", "fastpatch", "run", "-o", "out/r.json", "iso.py"],
                            cwd=str(program), capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode == 0, result.stderr
    calls, files = _merged_calls(str(program / "out"))
    assert calls["worker.work"] == 1 + 3  # the run process and the child started without -I
    assert len(files) == 2


# --------------------------------------------------------------------------
# The main code of `python SCRIPT` and `python -c CODE` (no import brings it in)
# --------------------------------------------------------------------------

APP = '''
import sys

import helper


class Shape:
    def area(self):
        return helper.twice(3)


def main(n):
    total = 0
    for _ in range(n):
        total += Shape().area()
    return total


print(main(2), main(3))
'''


def _script(program, script, *args, **env):
    return subprocess.run([sys.executable, script, *args], cwd=str(program), capture_output=True, text=True,
                          timeout=60, env=_env(**env))


def _report_calls(path):
    with open(path) as fh:
        return {f["name"]: f["calls"] for f in json.load(fh)["functions"]}


@needs_pth
@pytest.mark.parametrize(("include", "expected"), [
    ("__main__", {"__main__.main": 2, "__main__.Shape.area": 5}),
    ("__main__,helper", {"__main__.main": 2, "__main__.Shape.area": 5, "helper.twice": 5}),
    ("app", {"__main__.main": 2, "__main__.Shape.area": 5}),  # the script by its file name, as run -i takes it
])
def test_fastpatch_include_times_the_functions_of_the_script_itself(program, include, expected):
    write_tree(str(program), {"app.py": APP, "helper.py": "def twice(x):\n    return 2 * x\n"})
    result = _script(program, "app.py", FASTPATCH_INCLUDE=include, FASTPATCH_OUTPUT="out/app.json")
    assert (result.returncode, result.stdout, result.stderr) == (0, "12 18\n", "")
    assert _report_calls(program / "out" / "app.json") == expected


@needs_pth
def test_fastpatch_include_times_the_functions_of_dash_c_code(program):
    result = _python("def g(x):\n    return x + 1\nprint(g(1) + g(2))", program, FASTPATCH_INCLUDE="__main__",
                     FASTPATCH_OUTPUT="out/c.json")
    assert (result.returncode, result.stdout, result.stderr) == (0, "5\n", "")
    assert _report_calls(program / "out" / "c.json") == {"__main__.g": 2}


@needs_pth
def test_the_main_code_is_left_as_it_is_when_the_patterns_do_not_select_it(program):
    write_tree(str(program), {"app.py": APP + "print([type(c).__name__ for c in main.__code__.co_consts])\n",
                              "helper.py": "def twice(x):\n    return 2 * x\n"})
    plain = _script(program, "app.py")
    result = _script(program, "app.py", FASTPATCH_INCLUDE="helper", FASTPATCH_OUTPUT="out/h.json")
    assert (result.returncode, result.stdout, result.stderr) == (0, plain.stdout, "")
    assert _report_calls(program / "out" / "h.json") == {"helper.twice": 5}


@needs_pth
def test_python_dash_m_is_spliced_once_through_the_import_hook_even_with_main_selected(program):
    write_tree(str(program), {
        "app/__init__.py": "def helper():\n    return 1\n",
        "app/__main__.py": "from app import helper\ndef main():\n    return helper() + helper()\nmain()\n",
    })
    result = subprocess.run([sys.executable, "-m", "app"], cwd=str(program), capture_output=True, text=True,
                            timeout=60, env=_env(FASTPATCH_INCLUDE="__main__,app", FASTPATCH_OUTPUT="out/m.json"))
    assert (result.returncode, result.stderr) == (0, "")
    assert _report_calls(program / "out" / "m.json") == {"app.helper": 2, "app.__main__.main": 1}


@needs_pth
def test_a_script_run_as_a_subprocess_of_run_is_counted_in_the_merged_report(program):
    write_tree(str(program), {
        "parent.py": (
            "import subprocess, sys\n"
            "def parent_work():\n    return 1\n"
            "parent_work()\n"
            "subprocess.run([sys.executable, 'child.py'], check=True)\n"
        ),
        "child.py": "def child_work(x):\n    return x + 1\nfor i in range(4):\n    child_work(i)\n",
    })
    result = subprocess.run([sys.executable, "-m", "fastpatch", "run", "-o", "out/r.json", "parent.py"],
                            cwd=str(program), capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode == 0, result.stderr
    calls, files = _merged_calls(str(program / "out"))
    assert calls == {"__main__.parent_work": 1, "__main__.child_work": 4}
    assert len(files) == 2


_BREAK_THE_SPLICE = '''
import fastpatch._hook

def refuse(code, also=None):
    {body}

fastpatch._hook.splice_main = refuse
'''


@needs_pth
@pytest.mark.parametrize(("body", "warning"), [
    # the callback fails
    ("raise RuntimeError('no splice today')", "RuntimeError: no splice today"),
    # the callback returns code whose constants are not the main code's
    ("return code.replace(co_consts=code.co_consts + (None,))", "ValueError: the spliced main code has "),
])
def test_a_failure_to_splice_the_main_code_leaves_it_untouched_and_the_program_running(program, tmp_path, body,
                                                                                        warning):
    site_dir = tmp_path / "site"
    write_tree(str(site_dir), {"sitecustomize.py": _BREAK_THE_SPLICE.format(body=body)})
    write_tree(str(program), {"app.py": APP + "print([type(c).__name__ for c in main.__code__.co_consts])\n",
                              "helper.py": "def twice(x):\n    return 2 * x\n"})
    plain = _script(program, "app.py")
    result = _script(program, "app.py", FASTPATCH_INCLUDE="__main__", FASTPATCH_OUTPUT="out/f.json",
                     PYTHONPATH=str(site_dir))
    assert (result.returncode, result.stdout) == (0, plain.stdout)
    assert result.stderr.startswith(f"fastpatch: could not instrument __main__: {warning}")
    assert len(result.stderr.splitlines()) == 1
    assert not os.path.exists(program / "out" / "f.json")  # nothing was timed: no report
