"""The C side of fastpatch: the one module that imports its C extensions.

* ``ext`` (``_ext.c``): the probes, their clocks, the ``Origin`` constant
  and the lazy table. Imported here, at ``import fastpatch``: fastpatch can
  time nothing without it, so an installation that lacks it fails at once,
  with a message that says what is missing and what is supported;
* ``c_splicer_module()`` (``_csplice.c``): optional, since the Python
  splicer does the same work; None where it was not built;
* ``install_jump_guard()`` (``_jumps.c``): the debugger-jump guard, loaded
  when the first code object is instrumented;
* ``signals()`` (``_signals.c``): a signal's default action from any
  thread, loaded when the activation takes SIGTERM over.

Every other module reaches the C extensions through this one.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Optional

try:
    # Not `from . import _ext`: while the package is being imported, Python
    # would blame its failure on a circular import.
    import fastpatch._ext as ext
except ImportError as exc:  # pragma: no cover - depends on the installation
    import platform
    import sys

    from ._recipes import supported_text

    if "subinterpreter" in str(exc):
        raise ImportError(
            "fastpatch cannot be loaded in a subinterpreter that has a GIL of its own: its probes "
            "count under the GIL they share with the main interpreter. Subinterpreters that share "
            f"the main GIL (legacy ones, as mod_wsgi uses) can load it. ({exc})"
        ) from exc
    raise ImportError(
        "fastpatch's C extension (fastpatch._ext) could not be loaded: "
        f"{exc}. fastpatch needs it to time anything; it supports CPython {supported_text()} "
        f"and this is {platform.python_implementation()} {sys.version.split()[0]}. "
        "Reinstall fastpatch from a wheel for this interpreter, or from source with a C compiler."
    ) from exc


def c_splicer_module() -> Optional[ModuleType]:
    """The C splicer's extension module (``_csplice.c``), not yet configured
    (``_splice.c_splicer`` does that); None where it was not built."""
    try:
        import fastpatch._csplice as module
    except ImportError:
        return None
    return module


_jump_guard_installed = False


def install_jump_guard() -> None:
    """Guard debugger jumps in this interpreter (``_jumps.c``), once: called
    before the first code object is instrumented. The guard acts in code
    that carries our probes, whose entry the running dialect describes."""
    global _jump_guard_installed
    if not _jump_guard_installed:
        import fastpatch._jumps as jumps

        from ._recipes import running_dialect

        jumps.install(ext.Probe, running_dialect())
        _jump_guard_installed = True


def signals() -> ModuleType:
    """The extension that gives a signal its default action from any thread (``_signals.c``)."""
    import fastpatch._signals as module

    return module


__all__ = ["c_splicer_module", "ext", "install_jump_guard", "signals"]
