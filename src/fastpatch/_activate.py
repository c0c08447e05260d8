"""Whole-program activation: the import hook, the report at exit, and the
same for every child process.

Two ways in, one code path:

* ``python -m fastpatch run`` calls ``activate()`` with its options and
  passes them on to child processes through the environment;
* ``FASTPATCH_INCLUDE`` set at interpreter startup: ``fastpatch.pth`` (or,
  from 3.18, ``fastpatch.start``) imports the top-level ``_fastpatch_startup``
  module, which calls ``activate_from_environment()``.

Children:

* a subprocess, and a multiprocessing child started by spawn or
  forkserver, is a new interpreter: it inherits the environment and
  activates itself at startup;
* a forked child inherits the activation (the hook, the exit handler) and
  starts with zeroed counters (``_patch``'s fork handler);
* multiprocessing's children end with ``os._exit``, so ``atexit`` never runs
  there: ``BaseProcess._bootstrap``, which runs a child from start to end,
  is wrapped to write the report when it returns. A Pool worker also writes
  it on SIGTERM (``Pool.terminate()``, which ``with Pool()`` calls, ends its
  workers that way) unless the program handles SIGTERM itself.

Report files: ``{pid}`` in the template becomes the process id. Without
it, the process that activated from the template (the ``run`` process, or
the first process the environment activated) writes the exact path and
hands ``NAME.{pid}.EXT`` to its children (``_report.child_template``); a
forked child writes ``NAME.<pid>.EXT`` (``_report.resolve_path``).
Without any output, each process prints its text table to stderr at exit
(a child only if something it instrumented was called).
"""

from __future__ import annotations

import os
import sys

from ._hook import ImportHook, install_import_hook, own_work, splice_main_when_it_runs, when_imported
from ._select import split_patterns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional


class Activation:
    """The settings of an activated process and what it has done."""

    def __init__(
        self, hook: ImportHook, output: Optional[str], fmt: Optional[str], sort: str, root: bool, warn_unmatched: bool
    ) -> None:
        self.hook = hook
        self.output = output
        self.fmt = fmt
        self.sort = sort
        self.root = root  # the run process: it always reports, even with nothing instrumented
        self.warn_unmatched = warn_unmatched
        self.pid = os.getpid()
        self.written_in: Optional[int] = None  # the pid that wrote the report (a fork copies this)
        self.active = True
        import _thread

        self.lock = _thread.RLock()


_current: Optional[Activation] = None


def current() -> Optional[Activation]:
    """This process's activation, if it has one."""
    return _current


def activate(
    include: Iterable[str], exclude: Iterable[str] = (), *, output: Optional[str] = None, fmt: Optional[str] = None,
    sort: str = "total", root: bool = False, warn_unmatched: bool = False,
) -> Activation:
    """Install the import hook, write the report at exit (in this process
    and its children), and hand the settings to child processes through
    the environment. Replaces an earlier activation of this process."""
    global _current
    include, exclude = list(include), list(exclude)
    if _current is not None:
        deactivate()
    if output is not None:
        from . import _report

        # Absolute now: the program (or a child) may change directory before exit.
        output = os.path.abspath(output)
        _report.claim(output)
    hook = install_import_hook(include, exclude)
    activation = Activation(hook, output, fmt, sort, root, warn_unmatched)
    _current = activation
    _export(include, exclude, output, fmt, sort)
    import atexit

    atexit.register(_at_exit, activation)
    when_imported("multiprocessing.process", _patch_multiprocessing_bootstrap)
    when_imported("billiard.process", _patch_multiprocessing_bootstrap)  # celery's fork of multiprocessing
    when_imported("multiprocessing.spawn", _patch_multiprocessing_main_fixup)
    return activation


def deactivate() -> None:
    """Undo ``activate()`` for this process: no hook, no report at exit."""
    global _current
    if _current is None:
        return
    _current.active = False
    _current.hook.remove()
    _current = None


def _export(
    include: Iterable[str], exclude: Iterable[str], output: Optional[str], fmt: Optional[str], sort: str
) -> None:
    """The settings, for child processes (they activate at startup from these)."""
    env = os.environ
    env["FASTPATCH_INCLUDE"] = ",".join(include)
    if exclude:
        env["FASTPATCH_EXCLUDE"] = ",".join(exclude)
    else:
        env.pop("FASTPATCH_EXCLUDE", None)
    if output is not None:
        from . import _report

        env["FASTPATCH_OUTPUT"] = _report.child_template(output)
    else:
        env.pop("FASTPATCH_OUTPUT", None)
    if fmt is not None:
        env["FASTPATCH_FORMAT"] = fmt
    else:
        env.pop("FASTPATCH_FORMAT", None)
    if sort != "total":
        env["FASTPATCH_SORT"] = sort
    else:
        env.pop("FASTPATCH_SORT", None)


def activate_from_environment() -> Optional[Activation]:
    """Activate from ``FASTPATCH_*`` (interpreter startup): nothing unless
    ``FASTPATCH_INCLUDE`` is set, and nothing at all if
    ``FASTPATCH_ENABLED=0``. Called again, it does nothing."""
    env = os.environ
    if env.get("FASTPATCH_ENABLED", "").strip() == "0":
        return None
    include = split_patterns(env.get("FASTPATCH_INCLUDE", ""))
    if not include:
        return None
    if _current is not None:
        return _current
    exclude = split_patterns(env.get("FASTPATCH_EXCLUDE", ""))
    output = env.get("FASTPATCH_OUTPUT", "").strip() or None
    fmt = env.get("FASTPATCH_FORMAT", "").strip().lower() or None
    if fmt is not None and fmt not in ("text", "json", "pstats"):
        _say(f"FASTPATCH_FORMAT={fmt!r} is not text, json or pstats; using the output file's extension")
        fmt = None
    sort = env.get("FASTPATCH_SORT", "").strip().lower() or "total"
    if sort != "total":
        from ._stats import SORT_KEYS  # only then: the stats module is not needed before the exit

        if sort not in SORT_KEYS:
            _say(f"FASTPATCH_SORT={sort!r} is not one of {', '.join(sorted(SORT_KEYS))}; using total")
            sort = "total"
    activation = activate(include, exclude, output=output, fmt=fmt, sort=sort)
    splice_main_when_it_runs()  # `python SCRIPT` and `-c CODE` run their main code without importing it
    return activation


# --------------------------------------------------------------------------
# The report at exit
# --------------------------------------------------------------------------


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"fastpatch: {message}\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - stderr closed or gone: nothing to tell
        pass


def write_report(activation: Optional[Activation] = None) -> Optional[str]:
    """Write this process's report now, once per process; the path written,
    or None (stderr, or nothing to report)."""
    activation = activation or _current
    if activation is None or not activation.active:
        return None
    with activation.lock:  # a Pool worker's SIGTERM thread waits for the exit's write
        pid = os.getpid()
        if activation.written_in == pid:
            return None
        activation.written_in = pid
        with own_work:  # what writing imports (json...) never goes through the hook
            return _write(activation, pid)


def _write(activation: Activation, pid: int) -> Optional[str]:
    from ._patch import called_stats, has_definitions

    root = activation.root and pid == activation.pid
    stats = called_stats()  # what a report holds: the definitions called
    if not root and not (has_definitions() if activation.output else stats):
        return None  # a helper process (resource tracker, forkserver) that timed nothing
    if activation.output is None:
        from ._stats import write_table  # the table alone: no need for the report module

        if not root:
            from ._report import argv_strings  # sys.argv may hold a pathlib.Path, or bytes

            argv = " ".join(argv_strings())
            sys.stderr.write(f"fastpatch: process {pid} ({argv[:100]})\n")
        write_table(stats, activation.sort, sys.stderr)
        sys.stderr.flush()
        return None
    from . import _report

    return str(_report.write(activation.output, activation.fmt, stats, sort=activation.sort))


def _at_exit(activation: Activation) -> None:
    if activation is not _current:
        return
    try:
        path = write_report(activation)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback at exit
        _say(f"could not write the report: {exc}")
        return
    if activation.root and os.getpid() == activation.pid:
        if path is not None:
            try:
                shown = os.path.relpath(path)
            except ValueError:  # another drive (Windows)
                shown = path
            _say(f"report written to {path if shown.startswith('..') else shown}")
        if activation.warn_unmatched:
            for pattern in activation.hook.unmatched():
                _say(f"warning: pattern {pattern!r} matched nothing")


# --------------------------------------------------------------------------
# multiprocessing
# --------------------------------------------------------------------------


def _patch_multiprocessing_bootstrap(module: Any) -> None:
    base: Any = getattr(module, "BaseProcess", None)
    original = getattr(base, "_bootstrap", None)
    if original is None or getattr(original, "_fastpatch_wraps", None) is not None:
        return

    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Runs in the child only, from its start to its os._exit.
        _write_on_sigterm(self)
        try:
            return original(self, *args, **kwargs)
        finally:
            try:
                write_report()
            except Exception as exc:  # noqa: BLE001 - never break the child's exit
                _say(f"could not write the report: {exc}")

    _bootstrap._fastpatch_wraps = original  # type: ignore[attr-defined]
    _bootstrap.__wrapped__ = original  # type: ignore[attr-defined]
    base._bootstrap = _bootstrap


def _write_on_sigterm(process: Any) -> None:
    """In a Pool worker: write the report when SIGTERM comes, then die of it.

    ``Pool.terminate()`` (which ``with Pool(...)`` calls) ends idle workers
    with SIGTERM. A Python signal handler cannot be trusted there: a SIGTERM
    that lands just before the worker blocks on the task queue's lock is
    only handled once that lock is free, which it never is, and the pool
    hangs. So SIGTERM is blocked in the worker and a thread waits for it
    with sigwait(), which works whatever the main thread is blocked on.
    Other children (a Process with the program's own target) keep SIGTERM
    as it is: the program may handle it, and it ends them at once.
    """
    import signal

    target = getattr(process, "_target", None)
    if getattr(target, "__name__", None) != "worker" or getattr(target, "__module__", None) not in (
        "multiprocessing.pool", "billiard.pool",
    ):
        return
    if not (hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigwait")):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the program handles SIGTERM itself
    except (AttributeError, ValueError):
        return
    import threading

    def wait_for_sigterm() -> None:
        signal.sigwait({signal.SIGTERM})
        try:
            write_report()  # waits for a write the worker's own exit has begun
        except Exception as exc:  # noqa: BLE001 - dying anyway: say why there is no report
            _say(f"could not write the report: {exc}")
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            os.kill(os.getpid(), signal.SIGTERM)  # SIG_DFL, unblocked in this thread only: the process ends

    # Blocked before the thread starts, so that every thread has it blocked
    # and sigwait() is its only way in.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=wait_for_sigterm, name="fastpatch-sigterm", daemon=True).start()


def _patch_multiprocessing_main_fixup(module: Any) -> None:
    """Spawn and forkserver children run the parent's main script again, as
    ``__mp_main__``, with ``runpy.run_path`` (not an import): walk it."""
    original: Callable[..., Any] = module._fixup_main_from_path
    if getattr(original, "_fastpatch_wraps", None) is not None:
        return

    def _fixup_main_from_path(main_path: str) -> Any:
        result = original(main_path)
        activation = _current
        main = sys.modules.get("__mp_main__")
        if activation is not None and main is not None and activation.hook.patterns.selects_module("__main__"):
            from ._bulk import instrument_selected

            try:
                instrument_selected(main)
            except Exception as exc:  # noqa: BLE001 - never break the child
                _say(f"could not instrument __mp_main__: {exc}")
        return result

    _fixup_main_from_path._fastpatch_wraps = original  # type: ignore[attr-defined]
    module._fixup_main_from_path = _fixup_main_from_path
