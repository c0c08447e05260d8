"""Whole-program activation: the import hook, the report at exit, and the
same for every child process.

Two ways in, one code path:

* ``python -m fastpatch run`` calls ``activate()`` with its options and
  passes them on to child processes through the environment;
* ``FASTPATCH_INCLUDE`` set at interpreter startup: ``fastpatch.pth`` (or,
  from 3.18, ``fastpatch.start``) imports the top-level ``_fastpatch_startup``
  module, which calls ``activate_from_environment()``; not in an
  interpreter that ignores its environment (``-E``, ``-I``): the startup
  module's ``start()`` is the gate.

Children:

* a subprocess, and a multiprocessing child started by spawn or
  forkserver, is a new interpreter: it inherits the environment and
  activates itself at startup, unless it is started with ``-E`` or ``-I``
  (which multiprocessing passes on from its parent); the parent's main
  script, which such a child runs again as ``__mp_main__``, is walked there
  for the functions the patterns chose in the parent's main code;
* a forked child inherits the activation (the hook, the exit handler) and
  starts with zeroed counters (``_registry``'s fork handler);
* multiprocessing's children end with ``os._exit``, so ``atexit`` never runs
  there: ``BaseProcess._bootstrap``, which runs a child from start to end,
  is wrapped to write the report when it returns.

SIGTERM: where the program leaves it to its default action, a handler
writes the report and then lets SIGTERM end the process as it would have
(every process activated, and the children that inherit it). A Pool worker
adds a watcher thread, because ``Pool.terminate()`` sends SIGTERM to workers
that may be blocked for good on a lock it holds (``_write_report_on_sigterm``,
``_watch_sigterm_in_pool_worker``).

At exit, the report writer and then the activation's other exporters get
the stats of what was called (``_reports.exporter``). Report files: ``{pid}``
in the template becomes the process id. Without it, the process that
activated from the template (the ``run`` process, or the first process the
environment activated) writes the exact path and hands ``NAME.{pid}.EXT``
to its children (``_reports.output.child_template``); a forked child
writes ``NAME.<pid>.EXT`` (``_reports.output.resolve_path``). Without any
output, each process prints its text table to stderr at exit (a child
only if something it instrumented was called).
"""

from __future__ import annotations

import os
import sys

from ._errors import say
from ._hook import (
    ImportHook,
    install_import_hook,
    instrument_main_run_again,
    own_work,
    splice_main_when_it_runs,
    when_imported,
)
from ._native import signals
from ._sampling import check_sample, sample_from_text
from ._select import split_patterns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, List, Optional, Set

    from ._reports.exporter import Exporter, ReportWriter


class Activation:
    """The settings of an activated process and what it has done.

    At exit, the report writer (:meth:`report_writer`) and then
    ``exporters``, in order, get the stats of what was called
    (``_reports.exporter``): another sink appends its own exporter there.
    """

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
        self.exporters: List[Exporter] = []
        self._report_writer: Optional[ReportWriter] = None
        self.written_in: Optional[int] = None  # the pid that wrote the report (a fork copies this)
        self.writer: Optional[int] = None  # the thread writing the report now
        self.sigterm_pending = False  # SIGTERM came while ``writer`` was writing: end the process after the write
        self.active = True
        import _thread

        self.lock = _thread.RLock()

    def report_writer(self) -> ReportWriter:
        """The report at exit, made when first needed: activating imports none of the report code."""
        if self._report_writer is None:
            from ._reports.exporter import ReportWriter

            self._report_writer = ReportWriter(self.output, self.fmt, self.sort, self.pid if self.root else None)
        return self._report_writer


_current: Optional[Activation] = None


def current() -> Optional[Activation]:
    """This process's activation, if it has one."""
    return _current


def activate(
    include: Iterable[str], exclude: Iterable[str] = (), *, output: Optional[str] = None, fmt: Optional[str] = None,
    sort: str = "total", root: bool = False, warn_unmatched: bool = False, sample: Optional[int] = None,
) -> Activation:
    """Install the import hook, write the report at exit (in this process
    and its children), and hand the settings to child processes through
    the environment. Replaces an earlier activation of this process.
    ``sample``: the hook's sampling rate (``install_import_hook``)."""
    global _current
    include, exclude = list(include), list(exclude)
    check_sample(sample)
    if _current is not None:
        deactivate()
    if output is not None:
        from ._reports.output import claim

        # Absolute now: the program (or a child) may change directory before exit.
        output = os.path.abspath(output)
        claim(output)
    hook = install_import_hook(include, exclude, sample=sample)
    activation = Activation(hook, output, fmt, sort, root, warn_unmatched)
    _current = activation
    _export(include, exclude, output, fmt, sort, sample)
    import atexit

    atexit.register(_at_exit, activation)
    _write_report_on_sigterm()
    if os.environ.get("FASTPATCH_TELEMETRY", "").strip() == "1":
        from .export import start_from_environment

        start_from_environment()
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
    if _current.written_in != os.getpid():  # closed already by the final export
        _close_exporters(_current)
    _current.hook.remove()
    _current = None
    _remove_sigterm_handler()


def _export(
    include: Iterable[str], exclude: Iterable[str], output: Optional[str], fmt: Optional[str], sort: str,
    sample: Optional[int] = None,
) -> None:
    """The settings, for child processes (they activate at startup from these)."""
    env = os.environ
    env["FASTPATCH_INCLUDE"] = ",".join(include)
    if exclude:
        env["FASTPATCH_EXCLUDE"] = ",".join(exclude)
    else:
        env.pop("FASTPATCH_EXCLUDE", None)
    if output is not None:
        from ._reports.output import child_template

        env["FASTPATCH_OUTPUT"] = child_template(output)
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
    if sample is not None:
        env["FASTPATCH_SAMPLE"] = str(sample)
    else:
        env.pop("FASTPATCH_SAMPLE", None)


def activate_from_environment() -> Optional[Activation]:
    """Activate from ``FASTPATCH_*`` (interpreter startup): nothing unless
    ``FASTPATCH_INCLUDE`` is set, and nothing at all if
    ``FASTPATCH_ENABLED=0``. Called again, it does nothing. Only
    ``_fastpatch_startup.start()`` calls it, and not under ``-E``/``-I``."""
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
    if fmt is not None:
        from ._reports import formats  # only then: the formats are not needed before the exit

        if fmt not in formats.names():
            say(f"FASTPATCH_FORMAT={fmt!r} is not {formats.names_text('or')}; using the output file's extension")
            fmt = None
    sort = env.get("FASTPATCH_SORT", "").strip().lower() or "total"
    if sort != "total":
        from ._reports.table import SORT_KEYS  # only then: the table is not needed before the exit

        if sort not in SORT_KEYS:
            say(f"FASTPATCH_SORT={sort!r} is not one of {', '.join(sorted(SORT_KEYS))}; using total")
            sort = "total"
    activation = activate(include, exclude, output=output, fmt=fmt, sort=sort, sample=_sample_from(env))
    splice_main_when_it_runs()  # `python SCRIPT` and `-c CODE` run their main code without importing it
    return activation


def _sample_from(env: Any) -> Optional[int]:
    """``FASTPATCH_SAMPLE``: the sampling rate, or None (exact timing) when
    unset; a bad value is one line on stderr, and exact timing."""
    text = env.get("FASTPATCH_SAMPLE", "").strip()
    if not text:
        return None
    try:
        return sample_from_text(text, "FASTPATCH_SAMPLE")
    except ValueError as exc:
        say(f"{exc}; timing every call")
        return None


# --------------------------------------------------------------------------
# The report at exit
# --------------------------------------------------------------------------


def write_report(activation: Optional[Activation] = None) -> Optional[str]:
    """Feed this process's exporters the stats of what was called, once
    per process, and close them; the path of the report file written, or
    None (stderr, or nothing to report)."""
    activation = activation or _current
    if activation is None or not activation.active:
        return None
    import _thread

    # The lock: a Pool worker's SIGTERM watcher waits for the exit's write.
    # own_work: what writing imports (json...) never goes through the hook.
    with activation.lock, own_work:
        pid = os.getpid()
        if activation.written_in == pid:
            return None
        # ``writer`` before ``written_in``: a SIGTERM handler that runs in
        # this thread from here on sees the write under way and lets it end.
        # Nothing is called between ``written_in`` and ``try``, so a handler
        # of the program's cannot raise there (Python runs handlers at calls
        # from 3.11, and never just before a ``try`` in 3.9 and 3.10): where
        # it raises before, no write has begun, and a caller can write again.
        activation.writer = _thread.get_ident()
        activation.written_in = pid
        try:
            try:
                return _write(activation, pid)
            except (SystemExit, KeyboardInterrupt):
                # A handler of the program's raised in the middle of the write
                # (a Pool initializer's SIGTERM handler calling sys.exit()
                # while the worker writes on its way out, Ctrl-C at exit):
                # the process is leaving anyway. Write again, and then let
                # the exception go on.
                try:
                    _write(activation, pid)
                except Exception as exc:  # noqa: BLE001 - the handler's exception is the one to raise
                    say(f"could not write the report: {exc}")
                except BaseException:  # noqa: BLE001 - interrupted again: the first one goes on
                    pass
                raise
        finally:
            activation.writer = None
            _close_exporters(activation)
            if activation.sigterm_pending:
                _die_of_sigterm()


def _write(activation: Activation, pid: int) -> Optional[str]:
    from ._registry import called_stats

    stats = called_stats()  # what a report holds: the definitions called
    writer = activation.report_writer()
    try:
        writer.export(stats, True)  # a failure is the caller's to say, in its one line
    finally:
        for exporter in _exporters(activation):
            try:
                exporter.export(stats, True)
            except Exception as exc:  # noqa: BLE001 - one line, never a traceback at exit; the others still run
                say(f"could not write {exporter.what}: {exc}")
    return writer.written


def _exporters(activation: Activation) -> List[Exporter]:
    """The activation's exporters after the report writer, then those a
    sink started for the process (``_reports.exporter.process_exporters``)."""
    from ._reports.exporter import process_exporters

    return activation.exporters + process_exporters


def _close_exporters(activation: Activation) -> None:
    """Close the exporters, after the final export or instead of it: once
    per process (a forked child closes the copies it inherited). A report
    writer never made has nothing to close, and is not made for it."""
    writer = activation._report_writer
    for exporter in ([writer] if writer is not None else []) + _exporters(activation):
        try:
            exporter.close()
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback at exit
            say(f"could not finish writing {exporter.what}: {exc}")


def _at_exit(activation: Activation) -> None:
    if activation is not _current:
        return
    try:
        path = write_report(activation)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback at exit
        say(f"could not write the report: {exc}")
        return
    if activation.root and os.getpid() == activation.pid:
        if path is not None:
            from ._reports.output import shown

            say(f"report written to {shown(path)}")
        if activation.warn_unmatched:
            for pattern in activation.hook.unmatched():
                say(f"warning: pattern {pattern!r} matched nothing")


# --------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------
#
# ``kill``, ``docker stop``, systemd and Kubernetes stop a program with
# SIGTERM, whose default action ends the process before ``atexit`` runs. So
# where the program leaves SIGTERM to its default action, fastpatch's handler
# writes the report first and then ends the process by that default action:
# the parent still sees a death by SIGTERM. The handler is a plain Python-level
# handler: a program that installs its own replaces it (its exit then runs
# ``atexit``), and one that saves it, installs its own and later puts it back
# and raises SIGTERM again (uvicorn's graceful shutdown) lands in it. A forked
# child inherits it and writes its own report.


def _c_signal() -> Any:
    """CPython's C signal module, ``_signal``: what ``signal`` offers without
    its enums, whose import would cost every activated startup about 8 ms.
    (Typeshed has no stub for it.)"""
    import _signal  # type: ignore[import-not-found,unused-ignore]

    return _signal


def _write_report_on_sigterm() -> None:
    """In the main thread, if SIGTERM has its default action: install
    fastpatch's handler, and the fork hooks that keep a SIGTERM sent to a
    child just forked (``FASTPATCH_SIGTERM=0``: leave SIGTERM alone)."""
    if sys.platform == "win32":
        return  # no SIGTERM to catch: os.kill(pid, SIGTERM) is TerminateProcess there
    setting = os.environ.get("FASTPATCH_SIGTERM", "").strip()
    if setting == "0":
        return
    if setting not in ("", "1"):
        say(f"FASTPATCH_SIGTERM={setting!r} is not 0 or 1; writing the report on SIGTERM")
    signal = _c_signal()
    try:
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, _on_sigterm):
            return  # the program's (ignored, or a handler): keep it
        signals()  # loaded now (0.1 ms) rather than in the middle of a signal
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread of the main interpreter: signals are not ours to set
        return
    except ImportError as exc:  # a broken install: say so, and leave SIGTERM alone
        say(f"no report on SIGTERM: {exc}")
        return
    global _fork_hooks_registered
    if not _fork_hooks_registered:  # once per process; a forked child inherits them
        _fork_hooks_registered = True
        os.register_at_fork(
            before=_hold_sigterm_for_fork, after_in_parent=_release_sigterm, after_in_child=_after_fork_in_child,
        )


def _remove_sigterm_handler() -> None:
    """SIGTERM's default action back, if fastpatch's handler is still there."""
    if sys.platform == "win32":
        return
    signal = _c_signal()
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: the handler stays, and only ends the process
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    """fastpatch's SIGTERM handler: the report, then the death SIGTERM brings."""
    _report_then_die_of_sigterm()


def _report_then_die_of_sigterm() -> None:
    """Write the report (once per process), then end the process by
    SIGTERM's default action. From any thread."""
    import _thread

    # From here on a second SIGTERM ends the process at once, as without fastpatch.
    signals().restore_default(_c_signal().SIGTERM)
    activation = _current
    if activation is not None and activation.writer == _thread.get_ident():
        # The signal interrupted this thread's own write of the report (at
        # exit): ending the process now would lose it. write_report ends the
        # process when the write is done.
        activation.sigterm_pending = True
        return
    try:
        if activation is not None:
            _at_exit(activation)  # waits for a write another thread has begun
    finally:
        _die_of_sigterm()


def _die_of_sigterm() -> None:
    """End the process by SIGTERM (already given back its default action)."""
    os.kill(os.getpid(), _c_signal().SIGTERM)


# A forked child discards the signals that reach it before CPython has set
# it up (PyOS_AfterFork_Child clears what its C handler caught), so with
# fastpatch's handler inherited, a SIGTERM sent to a child just forked would
# be lost and the child would live on, where without fastpatch it dies. The
# thread that forks holds SIGTERM back (blocked) across the fork; the child
# lets it in once set up, and its handler then writes its report and ends it.
_fork_hooks_registered = False
_held_for_fork: Set[int] = set()  # the threads that blocked SIGTERM for a fork, and must unblock it
_watcher_wakeup_fd: Optional[int] = None  # a Pool worker's: the write end its SIGTERM watcher reads from


def _hold_sigterm_for_fork() -> None:
    signal = _c_signal()
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        return
    import _thread

    if signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM]):
        _held_for_fork.add(_thread.get_ident())


def _release_sigterm() -> None:
    import _thread

    ident = _thread.get_ident()
    if ident in _held_for_fork:
        _held_for_fork.discard(ident)
        signal = _c_signal()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])


def _after_fork_in_child() -> None:
    global _watcher_wakeup_fd
    if _watcher_wakeup_fd is not None:
        # A child forked by a Pool task: its signals must not wake the
        # worker's watcher (which would end the worker). Forgotten before
        # SIGTERM is let in below. The child keeps the handler.
        signal = _c_signal()
        try:
            fd = signal.set_wakeup_fd(-1)
            if fd != _watcher_wakeup_fd:
                signal.set_wakeup_fd(fd)  # not fastpatch's: the program's own
        except ValueError:  # not the main thread (a fork from a subinterpreter)
            pass
        _watcher_wakeup_fd = None
    _release_sigterm()
    _held_for_fork.clear()  # the other threads of the parent are not here


def _watch_sigterm_in_pool_worker(process: Any) -> None:
    """In a Pool worker whose SIGTERM handler is fastpatch's: a thread that
    writes the report and ends the worker when SIGTERM comes, whatever the
    main thread is blocked on.

    ``Pool.terminate()`` (which ``with Pool(...)`` calls) sends SIGTERM to
    its workers while it holds the task queue's lock, which idle workers are
    waiting for. A Python-level handler runs when the main thread next runs
    bytecode, and a SIGTERM that lands after the main thread last checked for
    signals and before it blocked on that lock would wait for it for ever:
    the pool would hang. CPython's C-level handler also writes the signal's
    number to the wakeup fd there and then, and that wakes this thread, which
    takes the GIL the blocked main thread released. Tasks, and what they
    start, see the program's own signal mask: nothing is blocked but in this
    thread. Other processes keep only the handler: a SIGTERM that lands just
    before their main thread blocks waits until that call returns, as in
    every program with a Python-level SIGTERM handler; only in a Pool worker
    does multiprocessing itself make it a call that never returns.
    """
    import signal  # multiprocessing has imported signal and threading

    target = getattr(process, "_target", None)
    if getattr(target, "__name__", None) != "worker" or getattr(target, "__module__", None) not in (
        "multiprocessing.pool", "billiard.pool",
    ):
        return
    if not hasattr(signal, "pthread_sigmask") or signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        return  # the program handles SIGTERM itself, or FASTPATCH_SIGTERM=0
    signals()  # imported now, not by the watcher while the main thread may hold import locks

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # set_wakeup_fd's condition
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    if previous != -1:
        # A wakeup fd inherited from the parent (its event loop's): keep it,
        # and with it only the handler.
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        return
    global _watcher_wakeup_fd
    _watcher_wakeup_fd = write_end
    import threading

    def watch() -> None:
        # Every signal blocked in this thread alone, so that the kernel hands
        # them to the program's threads: a SIGTERM taken here would not wake
        # a main thread blocked in a system call.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            data = os.read(read_end, 512)  # never empty: this process holds the write end
            if signal.SIGTERM in data and signal.getsignal(signal.SIGTERM) is _on_sigterm:
                _report_then_die_of_sigterm()

    threading.Thread(target=watch, name="fastpatch-sigterm", daemon=True).start()


# --------------------------------------------------------------------------
# multiprocessing
# --------------------------------------------------------------------------


def _write_report_or_say() -> None:
    """``write_report()``, its failure one line on stderr."""
    try:
        write_report()
    except Exception as exc:  # noqa: BLE001 - never break the child's exit
        say(f"could not write the report: {exc}")


def _patch_multiprocessing_bootstrap(module: Any) -> None:
    base: Any = getattr(module, "BaseProcess", None)
    original = getattr(base, "_bootstrap", None)
    if original is None or getattr(original, "_fastpatch_wraps", None) is not None:
        return

    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Runs in the child only, from its start to its os._exit.
        _watch_sigterm_in_pool_worker(self)
        try:
            return original(self, *args, **kwargs)
        finally:
            try:
                _write_report_or_say()
            except (SystemExit, KeyboardInterrupt):
                # A handler of the program's raised before the write began
                # (Pool.terminate() sends SIGTERM to workers already on their
                # way out): write now, then let the exception go on.
                _write_report_or_say()
                raise

    _bootstrap._fastpatch_wraps = original  # type: ignore[attr-defined]
    _bootstrap.__wrapped__ = original  # type: ignore[attr-defined]
    base._bootstrap = _bootstrap


def _patch_multiprocessing_main_fixup(module: Any) -> None:
    """Spawn and forkserver children run the parent's main script again, as
    ``__mp_main__``, with ``runpy.run_path`` (not an import): walk it, for
    the functions the patterns chose in the parent's main code."""
    original: Callable[..., Any] = module._fixup_main_from_path
    if getattr(original, "_fastpatch_wraps", None) is not None:
        return

    def _fixup_main_from_path(main_path: str) -> Any:
        result = original(main_path)
        main_module = sys.modules.get("__mp_main__")
        if _current is not None and main_module is not None:
            try:
                instrument_main_run_again(main_module, main_path)
            except Exception as exc:  # noqa: BLE001 - never break the child
                say(f"could not instrument __mp_main__: {exc}")
        return result

    _fixup_main_from_path._fastpatch_wraps = original  # type: ignore[attr-defined]
    module._fixup_main_from_path = _fixup_main_from_path
