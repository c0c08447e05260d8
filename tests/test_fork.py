"""fork: a child keeps the instrumentation, starts from zeroed counters, and
never inherits a registry lock held by a thread it does not have."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

import fastpatch
from fastpatch import _registry, _tree

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _in_child(work):
    """Run ``work()`` in a forked child; its JSON-able result, or the child's
    failure. The child gives up after 10 s (a deadlock fails, not hangs)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        signal.alarm(10)
        try:
            out = json.dumps({"result": work()})
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = json.dumps({"error": repr(exc)})
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"child killed by signal {os.WTERMSIG(status)} (a deadlock ends by SIGALRM)"
    return json.loads(data)


def test_a_forked_child_keeps_the_instrumentation_and_starts_from_zero():
    def f():
        return 1

    def spawn():  # running when the fork happens, and returning in both processes
        return _in_child(child)

    def child():
        before = fastpatch.stats(f)
        f()
        after = fastpatch.stats(f)
        return [fastpatch.is_instrumented(f), before.calls, before.completed, after.calls, after.completed]

    fastpatch.instrument(f)
    fastpatch.instrument(spawn)
    f(), f()
    got = spawn()
    assert got == {"result": [True, 0, 0, 1, 1]}
    s = fastpatch.stats(f)
    assert (s.calls, s.completed) == (2, 2)
    s = fastpatch.stats(spawn)
    assert (s.calls, s.completed) == (1, 1)


def test_a_forked_child_zeroes_what_the_import_hook_spliced_without_registering_it():
    from fastpatch import _ext

    source = "def called():\n    return 1\n\ndef never():\n    return 2\n"
    namespace = {"__name__": "forkmod"}
    exec(_tree.patch_module_code(compile(source, "<forkmod>", "exec"), "forkmod").code, namespace)
    namespace["called"](), namespace["called"]()

    def child():
        waiting = {o.qualname for o in _ext.lazy_origins() if o.module == "forkmod"}
        called = [s.name for s in _registry.called_stats() if s.module == "forkmod"]
        namespace["called"]()
        return [sorted(waiting), called, fastpatch.stats(namespace["called"]).calls]

    got = _in_child(child)
    # both still wait in the lazy table, zeroed: nothing reads as called until called again
    assert got == {"result": [["called", "never"], [], 1]}
    assert fastpatch.stats(namespace["called"]).calls == 2


def test_the_activation_that_forks_is_counted_once_over_parent_and_child():
    def forker():
        pid = os.fork()
        if pid == 0:
            s = fastpatch.stats(forker)
            os._exit(10 + s.calls + s.completed)  # the child's view, right after the fork
        return pid

    def ends_in_child():
        pid = os.fork()
        if pid == 0:
            return "child"
        _, status = os.waitpid(pid, 0)
        return os.WEXITSTATUS(status)

    fastpatch.instrument(forker)
    pid = forker()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 10  # nothing started or ended in the child
    assert (fastpatch.stats(forker).calls, fastpatch.stats(forker).completed) == (1, 1)

    fastpatch.instrument(ends_in_child)
    result = ends_in_child()
    if result == "child":  # the child's copy of the activation returns here: the parent counts it
        s = fastpatch.stats(ends_in_child)
        os._exit(20 + s.calls + s.completed)
    assert result == 20
    s = fastpatch.stats(ends_in_child)
    assert (s.calls, s.completed) == (1, 1)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("operation", ["instrument", "uninstrument", "all_stats", "reset"])
def test_fork_while_another_thread_holds_the_registry_lock_does_not_deadlock_the_child(operation):
    # gunicorn --preload, Celery prefork and multiprocessing's fork method fork
    # whenever they like; another thread may be inside instrument() then.
    def g():
        return 2

    held = threading.Event()

    def busy():
        with _registry.lock:  # what a thread inside instrument() holds
            held.set()
            time.sleep(0.3)

    thread = threading.Thread(target=busy)
    thread.start()
    held.wait()

    def child():
        if operation == "instrument":
            fastpatch.instrument(g)
            return [g(), fastpatch.stats(g).calls]
        if operation == "uninstrument":
            fastpatch.uninstrument(g)
            return [g(), fastpatch.is_instrumented(g)]
        if operation == "all_stats":
            return [len(fastpatch.all_stats()) >= 0, True]
        fastpatch.reset()
        return [True, True]

    if operation == "uninstrument":
        thread.join()
        fastpatch.instrument(g)
        thread = threading.Thread(target=busy)
        held.clear()
        thread.start()
        held.wait()
    expected = {"instrument": [2, 1], "uninstrument": [2, False]}.get(operation, [True, True])
    assert _in_child(child) == {"result": expected}
    thread.join()
