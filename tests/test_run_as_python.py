"""``python -m fastpatch run PROGRAM`` behaves as ``python PROGRAM`` does:
each test runs the same program both ways, with the same interpreter
flags, and compares what a user sees (output, exit status, sys.path, the
error message, death by SIGINT)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig

import pytest

from fastpatch._select import PatternError, Patterns
from sample_pkgs import write_tree
from test_children import needs_pth


def _env(**extra):
    dropped = ("PYTHONPATH", "PYTHONSAFEPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_") and k not in dropped}
    env.update(extra)
    return env


def _python(args, cwd, flags=(), **env):
    """``python FLAGS ARGS``."""
    return subprocess.run([sys.executable, *flags, *args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=120, env=_env(**env))


def _under_run(args, cwd, flags=(), **env):
    """``python FLAGS -m fastpatch run ARGS``."""
    return _python(["-m", "fastpatch", "run", *args], cwd, flags, **env)


# --------------------------------------------------------------------------
# sys.path[0], with and without -P / PYTHONSAFEPATH / -I
# --------------------------------------------------------------------------

SHOW_PATH = """
import sys
print(sys.path)
for name in ("extra", "sibling"):
    try:
        __import__(name)
        print(name, "imported")
    except ImportError:
        print(name, "not found")
"""

needs_safe_path = pytest.mark.skipif(sys.version_info < (3, 11), reason="-P and PYTHONSAFEPATH are new in 3.11")
SAFE_PATH_SETTINGS = [
    pytest.param((), {}, id="default"),
    pytest.param(("-P",), {}, id="-P", marks=needs_safe_path),
    pytest.param((), {"PYTHONSAFEPATH": "1"}, id="PYTHONSAFEPATH", marks=needs_safe_path),
    pytest.param(("-I",), {}, id="-I"),  # no sys.path[0] on every version (and PYTHONPATH ignored)
]


@pytest.mark.parametrize(("flags", "env"), SAFE_PATH_SETTINGS)
@pytest.mark.parametrize("target", [["app.py"], ["-m", "main"], ["-c", SHOW_PATH], ["bundle"]],
                         ids=["script", "module", "code", "directory"])
def test_sys_path_is_what_python_gives_the_program(tmp_path, flags, env, target):
    project = tmp_path / "project"
    write_tree(str(project), {"app.py": SHOW_PATH, "main.py": SHOW_PATH, "bundle/__main__.py": SHOW_PATH,
                              "sibling.py": ""})
    write_tree(str(tmp_path / "extra_dir"), {"extra.py": ""})
    env = dict(env, PYTHONPATH=str(tmp_path / "extra_dir"))
    plain = _python(target, project, flags, **env)
    under_run = _under_run(target, project, flags, **env)
    assert (under_run.returncode, under_run.stdout) == (plain.returncode, plain.stdout), under_run.stderr


# --------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------

INTERRUPTED = """
import os
import signal
import sys


def wait_for_ctrl_c():
    if sys.argv[1] == "raise":
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the test runner ignores SIGINT
    # From here on a SIGINT ends the wait whenever it comes (pause() would
    # wait on for one that came just before it).
    woken, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    print("ready", flush=True)
    while True:
        os.read(woken, 1)


wait_for_ctrl_c()
"""


def _launchers():
    script = shutil.which("fastpatch", path=sysconfig.get_path("scripts"))
    no_script = pytest.mark.skip(reason="the fastpatch console script is not installed in this environment")
    return [
        pytest.param([sys.executable, "-m", "fastpatch"], id="python -m fastpatch"),
        pytest.param([script], id="console script", marks=[no_script] if script is None else []),
    ]


def _interrupted(command, cwd, how):
    """Run ``command``; with ``how == "signal"`` send it SIGINT once it is waiting for one."""
    proc = subprocess.Popen(command, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        if how == "signal":
            assert proc.stdout.readline() == "ready\n"
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _frames(stderr):
    """(file name, function) of each frame of the one traceback in ``stderr``.

    Not the lines: the SIGINT lands where the program is when the test
    sends it, just after its "ready" or in its wait."""
    assert stderr.count("Traceback (most recent call last):") == 1, stderr
    return [(os.path.basename(line.split('"')[1]), line.rsplit(", in ", 1)[1])
            for line in stderr.splitlines() if line.startswith("  File ")]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("launcher", _launchers())
@pytest.mark.parametrize("how", ["raise", "signal"])
def test_an_unhandled_keyboard_interrupt_ends_run_by_sigint_after_the_report(tmp_path, launcher, how):
    write_tree(str(tmp_path), {"prog.py": INTERRUPTED})
    plain = _interrupted([sys.executable, "prog.py", how], tmp_path, how)
    status, out, err = _interrupted([*launcher, "run", "-o", "out.json", "prog.py", how], tmp_path, how)
    assert plain[0] == -signal.SIGINT
    assert (status, out) == plain[:2]
    # The program's own traceback, once, and then the report at exit.
    assert err.endswith("\nKeyboardInterrupt\nfastpatch: report written to out.json\n"), err
    assert _frames(err) == _frames(plain[2]) == [("prog.py", "<module>"), ("prog.py", "wait_for_ctrl_c")]
    with open(tmp_path / "out.json") as fh:
        report = json.load(fh)
    assert {f["name"]: (f["calls"], f["errors"]) for f in report["functions"]} == {"__main__.wait_for_ctrl_c": (1, 1)}


# --------------------------------------------------------------------------
# Errors: the program's as Python shows them
# --------------------------------------------------------------------------


@pytest.mark.parametrize("target", [["bad.py"], ["-c", "x = 1\ndef broken(:\n    pass\n"]], ids=["script", "code"])
def test_a_syntax_error_in_the_program_is_shown_as_python_shows_it(tmp_path, target):
    write_tree(str(tmp_path), {"bad.py": "x = 1\ndef broken(:\n    pass\n"})
    plain = _python(target, tmp_path)
    under_run = _under_run(target, tmp_path)
    assert plain.returncode == 1 and plain.stderr.endswith("SyntaxError: invalid syntax\n"), plain.stderr
    # Nothing else: the program never started, so there is no report either.
    assert (under_run.returncode, under_run.stdout, under_run.stderr) == (1, "", plain.stderr)


LAST_EXCEPTION = """
import atexit
import sys
import traceback


def frames(tb):
    return [frame.name for frame in traceback.extract_tb(tb)]


def at_exit():
    value = sys.last_value
    print("atexit", sys.last_type.__name__, repr(value), frames(sys.last_traceback),
          value.__traceback__ is sys.last_traceback, getattr(sys, "last_exc", value) is value)


def hook(exc_type, value, tb):
    print("hook", exc_type.__name__, repr(value), frames(tb), getattr(sys, "last_value", None) is value)


def fail():
    raise {exception}("the program failed")


try:  # what traceback imports lazily, imported now: CPython forgets an unhandled KeyboardInterrupt
    raise ValueError  # (and exits 1, not by SIGINT) when the excepthook imports a module
except ValueError as exc:
    frames(exc.__traceback__)
atexit.register(at_exit)
if sys.argv[1] == "own-hook":
    sys.excepthook = hook
fail()
"""


@pytest.mark.parametrize("exception", ["ValueError", "KeyboardInterrupt"])
@pytest.mark.parametrize("hook", ["default-hook", "own-hook"])
def test_an_unhandled_exception_is_in_sys_last_value_for_atexit_and_the_excepthook(tmp_path, exception, hook):
    write_tree(str(tmp_path), {"prog.py": LAST_EXCEPTION.replace("{exception}", exception)})
    plain = _python(["prog.py", hook], tmp_path)
    under_run = _under_run(["-o", "out.json", "prog.py", hook], tmp_path)
    assert plain.stdout.splitlines()[-1] == (
        f"atexit {exception} {exception}('the program failed') ['<module>', 'fail'] True True"
    )
    assert (under_run.returncode, under_run.stdout, under_run.stderr) == (
        plain.returncode, plain.stdout, plain.stderr + "fastpatch: report written to out.json\n"
    )


# --------------------------------------------------------------------------
# A large program directory
# --------------------------------------------------------------------------

# 4,000 modules of 40-character names: their names alone, comma-separated,
# are more than the 128 KiB the kernel allows one environment string.
MANY_MODULES = [f"generated_module_with_a_long_name_{i:06d}" for i in range(4000)]
CHILD = f"import os, {MANY_MODULES[7]} as m; m.work(1); print(os.environ['FASTPATCH_INCLUDE'])"


@pytest.fixture
def large_directory(tmp_path):
    write_tree(str(tmp_path), {
        **{f"{name}.py": "def work(x):\n    return x + 1\n" for name in MANY_MODULES},
        "prog.py": f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {CHILD!r}], check=True)\n",
    })
    (tmp_path / "out").mkdir()
    return tmp_path


def test_child_processes_start_whatever_the_size_of_the_program_directory(large_directory):
    result = _under_run(["prog.py"], large_directory)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == f"__main__,{os.path.realpath(large_directory)}\n"


@needs_pth
def test_a_child_times_the_modules_of_a_large_program_directory(large_directory):
    result = _under_run(["-o", "out/r.json", "prog.py"], large_directory)
    assert result.returncode == 0, result.stderr[-2000:]
    [child] = [f for f in os.listdir(large_directory / "out") if f != "r.json"]
    with open(large_directory / "out" / child) as fh:
        report = json.load(fh)
    assert {f["name"]: f["calls"] for f in report["functions"]} == {f"{MANY_MODULES[7]}.work": 1}


def test_a_program_directory_with_a_comma_in_its_path_is_passed_as_its_module_names(tmp_path):
    write_tree(str(tmp_path / "a,b"), {
        "helper.py": "def work():\n    return 1\n",
        "prog.py": "import os, helper\nhelper.work()\nprint(os.environ['FASTPATCH_INCLUDE'])\n",
    })
    result = _under_run(["prog.py"], tmp_path / "a,b")
    assert (result.returncode, result.stdout) == (0, "__main__,helper,prog\n"), result.stderr
    assert "helper.work" in result.stderr.splitlines()[-1]


def test_a_directory_pattern_selects_the_modules_and_packages_found_in_it(tmp_path):
    write_tree(str(tmp_path), {
        "single.py": "", "pkg/__init__.py": "", "portion/mod.py": "", "__main__.py": "", ".hidden.py": "",
        "not-a-name.py": "", "notes.txt": "", "venv/pyvenv.cfg": "", "venv/tool.py": "", "empty/data.txt": "",
    })
    patterns = Patterns(["other", str(tmp_path)], ["pkg.tests"])
    names = ["single", "pkg", "pkg.sub", "pkg.tests", "portion", "portion.mod", "__main__", "venv", "empty", "json",
             "other", "singled"]
    assert [n for n in names if patterns.selects_module(n)] == ["single", "pkg", "pkg.sub", "portion", "portion.mod",
                                                               "other"]
    assert patterns.top_level_names() == frozenset({"single", "pkg", "portion", "other"})
    assert patterns.unmatched() == []
    excluded = Patterns(["single", "pkg.sub", "json"], [str(tmp_path)])
    assert [n for n in names if excluded.selects_module(n)] == ["json"]


def test_a_directory_pattern_must_be_absolute():
    with pytest.raises(PatternError) as exc:
        Patterns([os.path.join("src", "app")])
    assert str(exc.value) == f"bad pattern {os.path.join('src', 'app')!r}: a directory must be an absolute path"
