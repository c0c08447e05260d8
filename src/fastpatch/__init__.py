"""fastpatch: nearly free timing of chosen Python functions.

``instrument(func)`` rewrites ``func.__code__`` in place: no wrapper, no
extra frame, and every existing reference to the function is timed.
"""

from __future__ import annotations

from ._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, TextIO

    from ._bulk import instrument_class, instrument_module, instrument_package
    from ._hook import install_import_hook
    from ._select import Selection
    from ._stats import RELATIVE_ERROR, Stats

try:
    # Not `from . import _ext`: on failure Python would blame a circular import.
    import fastpatch._ext  # noqa: F401 - bound below, once it is known to load
except ImportError as exc:  # pragma: no cover - depends on the installation
    import platform as _platform
    import sys as _sys

    from ._recipes import supported_text as _supported_text

    if "subinterpreter" in str(exc):
        raise ImportError(
            "fastpatch cannot be loaded in a subinterpreter that has a GIL of its own: its probes "
            "count under the GIL they share with the main interpreter. Subinterpreters that share "
            f"the main GIL (legacy ones, as mod_wsgi uses) can load it. ({exc})"
        ) from exc
    raise ImportError(
        "fastpatch's C extension (fastpatch._ext) could not be loaded: "
        f"{exc}. fastpatch needs it to time anything; it supports CPython {_supported_text()} "
        f"and this is {_platform.python_implementation()} {_sys.version.split()[0]}. "
        "Reinstall fastpatch from a wheel for this interpreter, or from source with a C compiler."
    ) from exc

# After the extension is known to load (above).
import os as _os  # noqa: E402

from . import _ext as _ext  # noqa: E402
from ._patch import all_stats, instrument, is_instrumented, reset, stats, uninstrument  # noqa: E402
from ._recipes import SUPPORTED_VERSIONS, UnsupportedPythonError  # noqa: E402


def clock() -> str:
    """The clock of definitions instrumented from now on: ``"tsc"`` or ``"monotonic"``.

    Chosen at import from FASTPATCH_CLOCK (see the README); each definition
    keeps the clock it was first instrumented with (``Stats.clock``).
    """
    return str(_ext.clock_name())


def _kernel_times_with_tsc() -> bool:
    """Linux only: the kernel's own clocksource is the TSC, so CLOCK_MONOTONIC
    is derived from it and the TSC is as trustworthy as that clock."""
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as fh:
            return fh.read().strip() == "tsc"
    except OSError:
        return False


def _choose_clock(requested: str) -> None:
    """FASTPATCH_CLOCK: "auto" (default), "tsc" or "monotonic".

    "auto" reads the TSC where the CPU reports it invariant *and* the kernel
    itself keeps time with it; everywhere else it uses CLOCK_MONOTONIC.
    """
    if requested in ("", "auto"):
        if _kernel_times_with_tsc():
            _ext.set_default_clock(True)  # stays on CLOCK_MONOTONIC if the CPU says the TSC is not invariant
    elif requested == "tsc":
        if not _ext.set_default_clock(True):
            import warnings

            warnings.warn(
                "FASTPATCH_CLOCK=tsc: this CPU has no invariant TSC; using CLOCK_MONOTONIC",
                RuntimeWarning,
                stacklevel=3,
            )
    elif requested != "monotonic":
        import warnings

        warnings.warn(
            f"FASTPATCH_CLOCK={requested!r} is not a clock fastpatch knows ('auto', 'monotonic', 'tsc'); "
            "using monotonic",
            RuntimeWarning,
            stacklevel=3,
        )


_choose_clock(_os.environ.get("FASTPATCH_CLOCK", "").strip().lower())


def report(file: Optional[TextIO] = None, *, sort: str = "total", limit: Optional[int] = None) -> None:
    """Print a table of every instrumented definition's stats."""
    from ._reports.table import render

    render(all_stats(), file, sort, limit)


# The whole-program API and the stats type are imported on first use:
# `import fastpatch` stays cheap for the processes that only instrument a few
# functions, and for every child process the import hook reaches.
_LAZY = {
    "RELATIVE_ERROR": "_stats",
    "Selection": "_select",
    "Stats": "_stats",
    "instrument_class": "_bulk",
    "instrument_module": "_bulk",
    "instrument_package": "_bulk",
    "install_import_hook": "_hook",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastpatch' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"fastpatch.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "RELATIVE_ERROR",
    "SUPPORTED_VERSIONS",
    "Selection",
    "Stats",
    "UnsupportedPythonError",
    "__version__",
    "all_stats",
    "clock",
    "install_import_hook",
    "instrument",
    "instrument_class",
    "instrument_module",
    "instrument_package",
    "is_instrumented",
    "report",
    "reset",
    "stats",
    "uninstrument",
]

