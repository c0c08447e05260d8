"""How a process's last snapshot survives the ways a process ends: SIGTERM
(left to its default action, or a handler of the program's own that calls
sys.exit) and multiprocessing's children: forked ones end with
``os._exit``, which skips atexit, spawned ones with spawn_main's sys.exit.

Every program runs under ``python -m fastpatch run`` with
``FASTPATCH_TELEMETRY=1`` and an interval of an hour: a call made after
the writer's first snapshot reaches the file only through the last one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import sysconfig
import time

import pytest

from fastpatch.export import _files
from telemetry_files import not_ram_backed_warning

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the writer's tests read /proc")

HAS_PTH = any(
    os.path.exists(os.path.join(d, "fastpatch.pth"))
    for d in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)

WORKER = "def work(x):\n    return x * 2\n\n\ndef work_many(n):\n    for i in range(n):\n        work(i)\n"

SIGTERM_MAIN = """
import signal
import sys

from worker import work


def on_sigterm(signum, frame):
    sys.exit(3)


if sys.argv[1] == "own handler":
    signal.signal(signal.SIGTERM, on_sigterm)
work(0)
print("first", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[2])):
    work(i)
print("done", flush=True)
sys.stdin.readline()
"""

POOL_MAIN = """
import multiprocessing as mp
import sys

from worker import work, work_many

if __name__ == "__main__":
    how, method = sys.argv[1], sys.argv[2]
    context = mp.get_context(method)
    if how == "pool":
        pool = context.Pool(2)
        assert pool.map(work, range(10), chunksize=1) == list(range(0, 20, 2))
        pool.close()
        pool.join()
    else:
        child = context.Process(target=work_many, args=(7,))
        child.start()
        child.join()
        assert child.exitcode == 0
        print(child.pid)
"""


def _env(directory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    env.update(FASTPATCH_TELEMETRY="1", FASTPATCH_TELEMETRY_DIR=str(directory), FASTPATCH_TELEMETRY_INTERVAL="3600")
    return env


def _program(tmp_path, main: str):
    (tmp_path / "main.py").write_text(main)
    (tmp_path / "worker.py").write_text(WORKER)
    return ["-m", "fastpatch", "run", "-o", str(tmp_path / "r.json"), "main.py"]


def _per_process(directory) -> dict[int, tuple[str, dict[str, int]]]:
    """pid -> (state, {qualname: calls}) of every process file in ``directory``."""
    found = _files.read_directory(str(directory))
    assert found.bad_files == []
    return {p.pid: (p.state, {s.qualname: s.calls for s in p.stats()}) for p in found.processes}


def _report_calls(directory) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-m", "fastpatch", "report", "-f", "json", str(directory)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {f["name"]: f["calls"] for f in json.loads(done.stdout)["functions"]}


def _wait_for_calls(directory, pid: int, calls: int) -> None:
    deadline = time.monotonic() + 60
    while _per_process(directory).get(pid, ("", {}))[1].get("work") != calls:
        if time.monotonic() > deadline:
            raise AssertionError(f"the writer's first snapshot never showed {calls} call(s)")
        time.sleep(0.01)  # polling a file another process writes: there is nothing to wait on


@pytest.mark.parametrize("handler", ["default action", "own handler"])
def test_sigterm_leaves_every_call_since_the_last_interval_snapshot_in_the_file_and_in_report_dir(
        tmp_path, ram_path, handler):
    d = ram_path / "svc"
    child = subprocess.Popen([sys.executable, *_program(tmp_path, SIGTERM_MAIN), handler, "250"], cwd=str(tmp_path),
                             env=_env(d), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "first\n"
        _wait_for_calls(d, child.pid, 1)  # the first snapshot; the next one is an hour away
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        assert _per_process(d) == {child.pid: ("live", {"work": 1})}
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    own = handler == "own handler"
    assert child.returncode == (3 if own else -signal.SIGTERM), err
    assert _per_process(d) == {child.pid: ("exited", {"work": 251, **({"on_sigterm": 1} if own else {})})}
    assert _report_calls(d) == {"worker.work": 251, **({"__main__.on_sigterm": 1} if own else {})}


def _methods() -> list:
    params = []
    for method in ("fork", "spawn"):
        marks = []
        if method not in multiprocessing.get_all_start_methods():
            marks.append(pytest.mark.skip(reason=f"no {method} start method here"))
        if method == "spawn" and not HAS_PTH:
            # A spawned child is a new interpreter: it activates through the installed wheel's fastpatch.pth.
            marks.append(pytest.mark.skip(reason="fastpatch.pth is not installed here (an editable install)"))
        params.append(pytest.param(method, marks=marks))
    return params


def _assert_warnings_then_report(stderr: str, d, at_least: int) -> None:
    """stderr is the directory's not-RAM-backed warning, once per process that armed the writer, then
    the report line.

    The parent and each spawned child arm the writer (a forked child inherits it), and so may
    multiprocessing's own helper processes (its resource tracker is a spawned interpreter that
    fastpatch activates too; whether it starts depends on the version): hence at least, not exactly.
    """
    warning = not_ram_backed_warning(d)
    *warnings, last = stderr.splitlines(keepends=True)
    assert last == "fastpatch: report written to r.json\n"
    if not warning:  # the directory is on tmpfs here: no warning at all
        assert warnings == []
        return
    assert warnings == [warning] * len(warnings) and len(warnings) >= at_least, stderr


@pytest.mark.parametrize("method", _methods())
def test_a_pool_workers_last_snapshot_is_in_the_directory_when_it_ends(tmp_path, ram_path, method):
    d = ram_path / "svc"
    done = subprocess.run([sys.executable, *_program(tmp_path, POOL_MAIN), "pool", method], cwd=str(tmp_path),
                          env=_env(d), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    processes = _per_process(d)
    _assert_warnings_then_report(done.stderr, d, at_least=1 + 2 * (method == "spawn"))
    assert {state for state, _ in processes.values()} == {"exited"}
    assert sum(calls["work"] for _, calls in processes.values()) == 10
    assert _report_calls(d) == {"worker.work": 10}


@pytest.mark.parametrize("method", _methods())
def test_a_process_childs_last_snapshot_is_in_the_directory_when_it_ends(tmp_path, ram_path, method):
    d = ram_path / "svc"
    done = subprocess.run([sys.executable, *_program(tmp_path, POOL_MAIN), "process", method], cwd=str(tmp_path),
                          env=_env(d), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _assert_warnings_then_report(done.stderr, d, at_least=1 + (method == "spawn"))
    assert _per_process(d) == {int(done.stdout): ("exited", {"work": 7, "work_many": 1})}
    assert _report_calls(d) == {"worker.work": 7, "worker.work_many": 1}
