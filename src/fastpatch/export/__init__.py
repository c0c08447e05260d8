"""Live telemetry: this process's counters published in a file that other
processes read while it runs (DESIGN.md, "Live telemetry").

``start()`` arms a writer (a C thread that starts at the first call of an
instrumented function and writes a snapshot every ``interval`` seconds);
``stop()`` writes the last one; ``read()`` merges every process of a
telemetry directory into a JSON report. ``import fastpatch`` never imports
this package.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

__all__ = ["start", "stop", "read", "start_from_environment"]


def start(directory: Optional[str] = None, *, service: Optional[str] = None, interval: float = 1.0) -> str:
    """Publish this process's counters live in ``directory`` (by default
    ``$XDG_RUNTIME_DIR/fastpatch/<service>``, else
    ``/dev/shm/fastpatch-<uid>/<service>``) every ``interval`` seconds,
    from the first call of an instrumented function on, and at exit.

    Returns the directory used, which child processes inherit through
    ``FASTPATCH_TELEMETRY_DIR``. Raises ValueError naming the problem for a
    directory that is a symlink, belongs to someone else or is writable by
    group or others, or for an interval out of range; RuntimeError if
    telemetry is already on in this process.
    """
    from . import _writer

    path = _writer.arm(directory, service, interval, _writer.file_mode())
    _on_exit()
    return path


def start_from_environment() -> Optional[str]:
    """Start as FASTPATCH_TELEMETRY_DIR, _INTERVAL, _MODE and FASTPATCH_SERVICE
    say (activation with FASTPATCH_TELEMETRY=1). A setting that cannot be
    used costs one line on stderr; an unsafe or unusable directory leaves
    telemetry off, and the program runs on. Returns the directory, or None."""
    import os

    from . import _writer

    env = os.environ
    interval = 1.0
    text = env.get("FASTPATCH_TELEMETRY_INTERVAL", "").strip()
    if text:
        try:
            interval = float(text)
            if not _writer.MIN_INTERVAL <= interval <= _writer.MAX_INTERVAL:
                raise ValueError
        except ValueError:
            _writer._warn(f"FASTPATCH_TELEMETRY_INTERVAL={text!r} is not a number of seconds from "
                          f"{_writer.MIN_INTERVAL} to {_writer.MAX_INTERVAL:g}; using 1")
            interval = 1.0
    try:
        mode = _writer.file_mode()
    except ValueError as exc:
        _writer._warn(f"{exc}; using 0600")
        mode = _writer.DEFAULT_MODE
    directory = env.get("FASTPATCH_TELEMETRY_DIR", "").strip() or None
    try:
        path = _writer.arm(directory, None, interval, mode)
    except (ValueError, OSError, RuntimeError) as exc:
        _writer._warn(f"live telemetry off: {exc}")
        return None
    _on_exit()
    return path


def _on_exit() -> None:
    """The last snapshot when the process ends: through an activation's
    exit handler where there is one (atexit, SIGTERM, multiprocessing's
    children: ``_reports.exporter.process_exporters``), and at exit in any
    case (a second ``stop()`` does nothing)."""
    import atexit

    from .._reports.exporter import process_exporters

    if not any(getattr(e, "what", None) == _EXPORTER_WHAT for e in process_exporters):
        process_exporters.append(_exit_exporter())
    atexit.register(stop)


_EXPORTER_WHAT = "the live telemetry file"


def _exit_exporter() -> Any:
    """The exporter that writes the last snapshot when the activated process ends."""
    from .._reports.exporter import Exporter

    class TelemetryExporter(Exporter):
        what = _EXPORTER_WHAT

        def export(self, stats: Any, final: bool) -> None:
            if final:
                stop()

        def close(self) -> None:
            stop()

    return TelemetryExporter()


def stop() -> None:
    """Write a last snapshot, mark this process's file exited and stop the
    writer. Nothing if telemetry is off."""
    from . import _writer

    _writer.disarm(final=True)


def read(directory: Optional[str] = None) -> Dict[str, Any]:
    """A JSON report (version 1) merging every process in ``directory``
    (live, exited and archived; by default the default directory of
    FASTPATCH_SERVICE). A damaged or foreign file is skipped with a warning
    (RuntimeWarning, naming it); FileNotFoundError if the directory is missing."""
    from . import _files, _writer

    path = directory if directory is not None else _writer.default_directory()
    found = _files.read_directory(path)
    if found.bad_files:
        import warnings

        for name, why in found.bad_files:
            warnings.warn(f"fastpatch: skipped telemetry file {name}: {why}", RuntimeWarning, stacklevel=2)
    return found.report()
