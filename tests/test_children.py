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


def _run(program, how, output="out/r.json"):
    result = subprocess.run([sys.executable, "-m", "fastpatch", "run", "-o", output, "main.py", how],
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
