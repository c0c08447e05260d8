"""``python -m fastpatch run PROGRAM`` behaves as ``python PROGRAM`` does:
each test runs the same program both ways, with the same interpreter
flags, and compares what a user sees (output, exit status, sys.path, the
error message, death by SIGINT)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sample_pkgs import write_tree


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

