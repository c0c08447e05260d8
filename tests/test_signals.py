"""SIGTERM, which ``kill``, ``docker stop``, systemd and Kubernetes stop
programs with: a program that leaves it to its default action still writes
its report and still dies of SIGTERM; a program's own handler keeps working;
Pool workers run their tasks with the program's own signal mask, and still
report when ``Pool.terminate()`` ends them.

Every program runs in its own session, and whatever is left of it (Pool
workers, forked children) is killed on the way out of each test, so that a
failure leaves no process behind.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import pytest

from sample_pkgs import write_tree

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

HAS_PTH = any(
    os.path.exists(os.path.join(d, "fastpatch.pth"))
    for d in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)
needs_pth = pytest.mark.skipif(
    not HAS_PTH, reason="fastpatch.pth is not installed here (an editable install): install the wheel (`pip install .`)"
)
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
START_METHODS = [
    pytest.param(m, marks=[needs_pth] if m != "fork" else [needs_fork])
    for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()
]
WAIT = 120  # seconds: only a hang waits this long

WORKER = '''
import sys


def work(x):
    return x * x


def block():
    print("ready", flush=True)
    sys.stdin.readline()  # until the test closes stdin


def spin():
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
'''

MAIN = '''
import sys

from worker import block, spin, work

for i in range(10):
    work(i)
{"block": block, "spin": spin}[sys.argv[1]]()
print("finished")
'''


@pytest.fixture
def program(tmp_path):
    write_tree(str(tmp_path), {"worker.py": WORKER, "main.py": MAIN})
    (tmp_path / "out").mkdir()
    return tmp_path


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def _started(args, cwd, **env):
    """``args`` running in a session of its own; on the way out, everything
    in that session is killed."""
    proc = subprocess.Popen(args, cwd=str(cwd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(**env), start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.communicate()


def _expect_line(proc, expected="ready\n"):
    """Wait (bounded) for the line ``expected`` from ``proc``."""
    if select.select([proc.stdout], [], [], WAIT)[0]:
        line = proc.stdout.readline()
        if line == expected:
            return
    else:
        line = "nothing"
    os.killpg(proc.pid, signal.SIGKILL)
    _out, err = proc.communicate()
    pytest.fail(f"the program printed {line!r} instead of {expected!r}; stderr:\n{err}")


def _wait_until_blocked(pid):
    """Wait (bounded) until the process sleeps in a system call (Linux; no
    wait elsewhere). A Python-level SIGTERM handler, fastpatch's or the
    program's, runs when the main thread next runs bytecode: a SIGTERM that
    lands after the last check for signals and before the blocking call
    starts waits for that call to return, which here is never. The kernel
    has no event for "entered a system call", so this polls its state."""
    path = f"/proc/{pid}/stat"
    if not os.path.exists(path):
        return
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with open(path) as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "S":
                return
        time.sleep(0.001)
    pytest.fail(f"process {pid} never blocked")


def _run_args(script, *args, output="out/r.json"):
    return [sys.executable, "-m", "fastpatch", "run", "-o", output, script, *args]


def _how(how, script, *args):
    """The command and environment of ``how``: ``run`` or ``env`` (FASTPATCH_INCLUDE)."""
    if how == "run":
        return _run_args(script, *args), {}
    return [sys.executable, script, *args], {"FASTPATCH_INCLUDE": "worker", "FASTPATCH_OUTPUT": "out/r.json"}


def _stopped_by_sigterm(args, cwd, blocks=True, **env):
    """Start ``args``, send SIGTERM once it has printed ``ready`` and (if
    ``blocks``) blocked: (returncode, stdout, stderr)."""
    with _started(args, cwd, **env) as proc:
        _expect_line(proc)
        if blocks:
            _wait_until_blocked(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
        return proc.returncode, "ready\n" + out, err


def _functions(path):
    """name -> (calls, errors, completed) in the JSON report at ``path``."""
    with open(path) as fh:
        return {f["name"]: (f["calls"], f["errors"], f["completed"]) for f in json.load(fh)["functions"]}


def _merged_calls(directory):
    """name -> calls over every report in ``directory``, merged by ``report``."""
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".json"))
    result = subprocess.run([sys.executable, "-m", "fastpatch", "report", "-f", "json", *files], capture_output=True,
                            text=True, timeout=WAIT, env=_env())
    assert result.returncode == 0, result.stderr
    return {f["name"]: f["calls"] for f in json.loads(result.stdout)["functions"]}


# --------------------------------------------------------------------------
# A program stopped with SIGTERM
# --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["run", pytest.param("env", marks=needs_pth)])
@pytest.mark.parametrize("where", ["block", "spin"])
def test_a_program_stopped_with_sigterm_writes_its_report_and_dies_of_sigterm(program, how, where):
    # block: SIGTERM interrupts a blocking call; spin: it lands between two bytecodes.
    args, env = _how(how, "main.py", where)
    returncode, out, err = _stopped_by_sigterm(args, program, blocks=where == "block", **env)
    assert returncode == -signal.SIGTERM
    assert out == "ready\n"
    assert err == ("fastpatch: report written to out/r.json\n" if how == "run" else "")
    assert _functions(program / "out" / "r.json") == {"worker.work": (10, 0, 10), f"worker.{where}": (1, 0, 0)}


def test_a_programs_own_sigterm_handler_runs_and_its_exit_writes_the_report(program):
    write_tree(str(program), {"own.py": '''
        import signal
        import sys

        from worker import block, work


        def stop(signum, frame):
            print("handled", flush=True)
            sys.exit(0)


        signal.signal(signal.SIGTERM, stop)
        for i in range(10):
            work(i)
        block()
    '''})
    returncode, out, err = _stopped_by_sigterm(_run_args("own.py"), program)
    assert (returncode, out) == (0, "ready\nhandled\n"), err
    # block() ended by the handler's SystemExit: an error.
    assert _functions(program / "out" / "r.json") == {
        "worker.work": (10, 0, 10), "worker.block": (1, 1, 1), "__main__.stop": (1, 1, 1),
    }


def test_a_handler_put_back_and_sigterm_raised_again_writes_the_report_and_dies_of_sigterm(program):
    # uvicorn's graceful shutdown: save the handler there is, install its
    # own, and at the end put the saved one back and raise SIGTERM again.
    write_tree(str(program), {"serve.py": '''
        import signal
        import threading

        from worker import work


        def serve():
            stopping = threading.Event()
            previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
            print("ready", flush=True)
            stopping.wait()
            print("shutting down", flush=True)
            for i in range(5):
                work(i)
            signal.signal(signal.SIGTERM, previous)
            signal.raise_signal(signal.SIGTERM)
            print("not reached")


        serve()
    '''})
    returncode, out, err = _stopped_by_sigterm(_run_args("serve.py"), program)
    assert (returncode, out) == (-signal.SIGTERM, "ready\nshutting down\n"), err
    functions = _functions(program / "out" / "r.json")
    assert functions["worker.work"] == (5, 0, 5)
    assert functions["__main__.serve"] == (1, 0, 0)


@needs_fork
def test_a_forked_child_stopped_with_sigterm_writes_its_own_report_and_dies_of_sigterm(program):
    write_tree(str(program), {"forks.py": '''
        import os
        import signal

        from worker import work


        def wait_in_child(ready):
            os.write(ready, b"r")
            while True:  # bytecode, where a SIGTERM is handled at once (a blocking call could race with it)
                pass


        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for i in range(3):
                work(i)
            wait_in_child(ready_w)
            os._exit(0)
        os.read(ready_r, 1)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        print(pid, os.WIFSIGNALED(status) and os.WTERMSIG(status))
        work(0)
    '''})
    with _started(_run_args("forks.py"), program) as proc:
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    pid, how = out.split()
    assert int(how) == signal.SIGTERM
    assert sorted(os.listdir(program / "out")) == sorted(["r.json", f"r.{pid}.json"])
    assert _functions(program / "out" / f"r.{pid}.json") == {
        "worker.work": (3, 0, 3), "__main__.wait_in_child": (1, 0, 0),
    }
    assert _functions(program / "out" / "r.json")["worker.work"] == (1, 0, 1)


@needs_fork
def test_a_child_sent_sigterm_as_soon_as_it_is_forked_dies_of_it(program):
    # CPython drops the signals a forked child catches before it is set up;
    # with a Python-level handler inherited, such a SIGTERM would be lost.
    rounds = 200
    write_tree(str(program), {"early.py": f'''
        import os
        import select
        import signal

        for i in range({rounds}):
            alive_r, alive_w = os.pipe()  # end of file once the child is gone
            pid = os.fork()
            if pid == 0:
                os.close(alive_r)
                while True:  # bytecode: the handler runs as soon as SIGTERM is let in
                    pass
            os.close(alive_w)
            os.kill(pid, signal.SIGTERM)
            if not select.select([alive_r], [], [], 30)[0]:
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            os.close(alive_r)
            if not os.WIFSIGNALED(status) or os.WTERMSIG(status) != signal.SIGTERM:
                print("round", i, "status", status)
                break
        else:
            print("all died of SIGTERM")
    '''})
    with _started(_run_args("early.py"), program) as proc:
        out, err = proc.communicate(timeout=WAIT)
    assert (proc.returncode, out) == (0, "all died of SIGTERM\n"), err


def test_fastpatch_sigterm_0_leaves_sigterm_alone(program):
    returncode, out, err = _stopped_by_sigterm(_run_args("main.py", "block"), program, FASTPATCH_SIGTERM="0")
    assert (returncode, out, err) == (-signal.SIGTERM, "ready\n", "")
    assert os.listdir(program / "out") == []


def test_a_bad_fastpatch_sigterm_is_named_and_the_report_still_written(program):
    returncode, out, err = _stopped_by_sigterm(_run_args("main.py", "block"), program, FASTPATCH_SIGTERM="off")
    assert (returncode, out) == (-signal.SIGTERM, "ready\n")
    assert err.splitlines() == [
        "fastpatch: FASTPATCH_SIGTERM='off' is not 0 or 1; writing the report on SIGTERM",
        "fastpatch: report written to out/r.json",
    ]
    assert _functions(program / "out" / "r.json")["worker.block"] == (1, 0, 0)


def test_sigterm_ignored_by_the_programs_parent_stays_ignored(program):
    # A disposition other than the default at activation is the program's: fastpatch keeps it.
    ignore_then_exec = ("import os, signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                        "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
    with _started([sys.executable, "-c", ignore_then_exec, *_run_args("main.py", "block")[1:]], program) as proc:
        _expect_line(proc)
        proc.send_signal(signal.SIGTERM)  # an ignored signal is discarded when sent
        out, err = proc.communicate("\n", timeout=WAIT)
    assert (proc.returncode, out) == (0, "finished\n"), err
    assert _functions(program / "out" / "r.json")["worker.block"] == (1, 0, 1)


def test_a_sigterm_during_the_report_at_exit_lets_it_finish_and_then_ends_the_process(program):
    write_tree(str(program), {"late.py": '''
        import os
        import signal

        import fastpatch._reports.output

        from worker import work

        write = fastpatch._reports.output.write


        def write_after_sigterm(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode: in the middle of the write
            return write(*args, **kwargs)


        fastpatch._reports.output.write = write_after_sigterm
        for i in range(10):
            work(i)
    '''})
    with _started(_run_args("late.py"), program) as proc:
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == -signal.SIGTERM, err
    assert _functions(program / "out" / "r.json")["worker.work"] == (10, 0, 10)


def test_a_second_sigterm_while_the_report_is_written_ends_the_process_at_once(program):
    write_tree(str(program), {"slow.py": '''
        import os

        import fastpatch._reports.output

        from worker import block, work


        def slow_write(*args, **kwargs):
            never_r, never_w = os.pipe()
            print("writing", flush=True)
            os.read(never_r, 1)  # a report that takes for ever to write


        fastpatch._reports.output.write = slow_write
        for i in range(10):
            work(i)
        block()
    '''})
    with _started(_run_args("slow.py"), program) as proc:
        _expect_line(proc)
        _wait_until_blocked(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _expect_line(proc, "writing\n")
        proc.send_signal(signal.SIGTERM)  # the default action again: no need to wait until it blocks
        out, err = proc.communicate(timeout=WAIT)
    assert (proc.returncode, out, err) == (-signal.SIGTERM, "", "")
    assert os.listdir(program / "out") == []


@needs_fork
def test_a_childs_own_handler_raising_in_the_middle_of_its_report_still_leaves_the_report(program):
    # As a Pool worker's does when terminate() comes while it writes its
    # report on the way out and its initializer's handler calls sys.exit().
    write_tree(str(program), {"child.py": '''
        import multiprocessing as mp
        import os
        import signal
        import sys

        import fastpatch._reports.output

        from worker import work

        write = fastpatch._reports.output.write
        signalled = []


        def write_after_sigterm(*args, **kwargs):
            if not signalled:
                signalled.append(True)
                os.kill(os.getpid(), signal.SIGTERM)  # stop() raises at the next bytecode, before the write
            return write(*args, **kwargs)


        def stop(signum, frame):
            sys.exit(0)


        def child():
            signal.signal(signal.SIGTERM, stop)
            fastpatch._reports.output.write = write_after_sigterm
            for i in range(4):
                work(i)


        if __name__ == "__main__":
            process = mp.get_context("fork").Process(target=child)
            process.start()
            process.join()
            print(process.pid)
    '''})
    with _started(_run_args("child.py"), program) as proc:
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert _functions(program / "out" / f"r.{int(out)}.json")["worker.work"] == (4, 0, 4)


# --------------------------------------------------------------------------
# Pool workers
# --------------------------------------------------------------------------

POOL = '''
import json
import multiprocessing as mp
import os
import select
import signal
import subprocess
import sys

from worker import work


def blocked_signals():
    return sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))


def terminate_a_subprocess():
    child = subprocess.Popen(["sleep", "120"])
    try:
        child.terminate()
        return child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        return "still running"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def sigterm_a_forked_child():
    alive_r, alive_w = os.pipe()  # end of file once the child is gone
    pid = os.fork()
    if pid == 0:
        os.close(alive_r)
        os.write(alive_w, b"r")
        while True:  # bytecode: SIGTERM is handled at once
            pass
    os.close(alive_w)
    gone = []
    try:
        os.read(alive_r, 1)
        os.kill(pid, signal.SIGTERM)
        gone = select.select([alive_r], [], [], 60)[0]
    finally:
        if not gone:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(alive_r)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else "exited"


TASKS = {"mask": blocked_signals, "popen": terminate_a_subprocess, "fork": sigterm_a_forked_child}


def task(name):
    work(1)
    return TASKS[name]()


if __name__ == "__main__":
    with mp.get_context(sys.argv[1]).Pool(1) as pool:  # terminate() at the end of the with
        results = dict(zip(TASKS, pool.map(task, TASKS)))
    results["program's mask"] = blocked_signals()
    print(json.dumps(results))
'''


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_tasks_see_the_programs_signal_mask_and_what_they_start_obeys_sigterm(program, method):
    write_tree(str(program), {"pool.py": POOL})
    with _started(_run_args("pool.py", method), program) as proc:
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    results = json.loads(out)
    assert signal.SIGTERM not in results["mask"]
    assert results["mask"] == results["program's mask"]
    assert results["popen"] == -signal.SIGTERM
    assert results["fork"] == signal.SIGTERM
    # The worker, ended by terminate(), reported its three calls; the forked
    # child, whose counters started at zero, called nothing.
    assert _merged_calls(str(program / "out"))["worker.work"] == 3


@pytest.mark.parametrize("method", START_METHODS)
def test_a_pool_whose_initializer_handles_sigterm_terminates_and_reports(program, method):
    write_tree(str(program), {"init.py": '''
        import multiprocessing as mp
        import signal
        import sys

        from worker import work


        def stop(signum, frame):
            sys.exit(0)


        def initializer():
            signal.signal(signal.SIGTERM, stop)


        if __name__ == "__main__":
            with mp.get_context(sys.argv[1]).Pool(2, initializer=initializer) as pool:
                print(sum(pool.map(work, range(10))))
    '''})
    # This program can hang under plain CPython too, without fastpatch (3 runs
    # in 150 on 3.12): Pool.terminate() sends SIGTERM while it holds the lock
    # that idle workers wait on, and a worker whose handler raises there never
    # leaves. A run that hangs proves nothing either way: it is killed and the
    # program run again, up to three times; the runs that end are checked.
    hung = 0
    for _attempt in range(3):
        shutil.rmtree(program / "out")
        (program / "out").mkdir()
        with _started(_run_args("init.py", method), program) as proc:
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                hung += 1
                continue
        break
    assert hung < 3, "the program hung three times"
    assert (proc.returncode, out) == (0, "285\n"), err
    # The initializer's handler ended each worker with SystemExit: its report was written on the way out.
    assert _merged_calls(str(program / "out"))["worker.work"] == 10


LEAVING = '''
import dis
import json
import linecache
import multiprocessing
import sys

from fastpatch import _activate

_activate.activate(["worker"], output="out/r.json")
import multiprocessing.process  # noqa: E402 - after the activation, which wraps BaseProcess._bootstrap

from worker import work  # noqa: E402

WRITE = _activate.write_report.__code__
# Where a handler can run: before any line but a `try:` (3.9 and 3.10 run
# none just before the try's SETUP_FINALLY; 3.11+ run them only at calls).
LINES = sorted({
    line for _offset, line in dis.findlinestarts(WRITE)
    if line and linecache.getline(WRITE.co_filename, line).strip() != "try:"
})


def interrupted_at(where):
    """A child that works once and then, as it leaves, has the program's
    SIGTERM handler raise SystemExit in write_report: at its entry
    ("call"), or at line ``where``; None: nowhere (the lines that a write
    runs go to out/ran.json)."""
    work(2)
    ran = []

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno in LINES:
            ran.append(frame.f_lineno)
            if frame.f_lineno == where:
                raise SystemExit(0)
        elif event == "return" and where is None:
            with open("out/ran.json", "w") as fh:
                json.dump(ran, fh)
        return local

    def trace(frame, event, arg):
        if frame.f_code is not WRITE:
            return None
        if where == "call":
            raise SystemExit(0)
        return local

    sys.settrace(trace)


results = {}
for where in [None, "call", *LINES]:
    child = multiprocessing.get_context("fork").Process(target=interrupted_at, args=(where,))
    child.start()
    child.join()
    results[str(where)] = [child.pid, child.exitcode]
print(json.dumps(results))
'''


@needs_fork
def test_a_worker_writes_its_report_wherever_the_programs_handler_interrupts_the_write(program):
    # Pool.terminate() sends SIGTERM to workers that may be on their way
    # out already, writing their report: a handler of the program's that
    # raises SystemExit may interrupt the write at any point.
    write_tree(str(program), {"leaving.py": LEAVING})
    proc = subprocess.run([sys.executable, "leaving.py"], cwd=str(program), capture_output=True, text=True,
                          timeout=WAIT, env=_env())
    assert proc.returncode == 0, proc.stderr
    with open(program / "out" / "ran.json") as fh:
        interrupted = {"call"} | {str(line) for line in json.load(fh)}
    got, expected = {}, {}
    for where, (pid, exitcode) in json.loads(proc.stdout).items():
        path = program / "out" / f"r.{pid}.json"
        calls = None
        if path.exists():
            with open(path) as fh:
                calls = {f["name"]: f["calls"] for f in json.load(fh)["functions"]}
        got[where] = (exitcode, calls)
        # The report written; then the handler's SystemExit goes on, out of the child's bootstrap (exit status 1).
        expected[where] = (1 if where in interrupted else 0, {"worker.work": 1})
    assert len(interrupted) > 10
    assert got == expected


@needs_fork
def test_many_pools_ended_by_terminate_all_end_and_every_worker_reports(program):
    # Pool.terminate() sends SIGTERM to workers blocked on a lock it holds: a
    # worker whose SIGTERM came just before it blocked must still end.
    rounds = 100
    write_tree(str(program), {"rounds.py": f'''
        import multiprocessing as mp

        from worker import work

        if __name__ == "__main__":
            for _ in range({rounds}):
                with mp.get_context("fork").Pool(2) as pool:
                    assert pool.map(work, range(4)) == [0, 1, 4, 9]
            print("done")
    '''})
    with _started(_run_args("rounds.py"), program) as proc:
        out, err = proc.communicate(timeout=2 * WAIT)
    assert (proc.returncode, out) == (0, "done\n"), err
    assert len(os.listdir(program / "out")) == 1 + 2 * rounds
    assert _merged_calls(str(program / "out"))["worker.work"] == 4 * rounds
