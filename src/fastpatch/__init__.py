"""fastpatch: nearly free timing of chosen Python functions.

``instrument(func)`` rewrites ``func.__code__`` in place: no wrapper, no
extra frame, and every existing reference to the function is timed.
"""

from __future__ import annotations

from ._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._bulk import instrument_class, instrument_module, instrument_package
    from ._clock import clock
    from ._errors import UnsupportedPythonError
    from ._hook import install_import_hook
    from ._patch import all_stats, instrument, is_instrumented, reset, stats, uninstrument
    from ._recipes import SUPPORTED_VERSIONS
    from ._reports.table import report
    from ._select import Selection
    from ._stats import RELATIVE_ERROR, Stats

# At import, as the README says: the C extension is loaded (an installation
# without it fails here, with a message that says so) and the probes' clock
# is chosen from FASTPATCH_CLOCK.
from . import _clock  # noqa: E402, F401

# Everything else is imported on first use: `import fastpatch` stays cheap
# for the processes that never instrument anything, and for every child
# process the import hook reaches.
_LAZY = {
    "RELATIVE_ERROR": "_stats",
    "SUPPORTED_VERSIONS": "_recipes",
    "Selection": "_select",
    "Stats": "_stats",
    "UnsupportedPythonError": "_errors",
    "all_stats": "_patch",
    "clock": "_clock",
    "install_import_hook": "_hook",
    "instrument": "_patch",
    "instrument_class": "_bulk",
    "instrument_module": "_bulk",
    "instrument_package": "_bulk",
    "is_instrumented": "_patch",
    "report": "_reports.table",
    "reset": "_patch",
    "stats": "_patch",
    "uninstrument": "_patch",
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
