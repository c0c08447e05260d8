"""What fastpatch says when something is wrong: its own exceptions, and the
one-line message on stderr for what must not stop the program (an import
it could not instrument, a report it could not write, a setting it ignores).

Every other module may import this one; it imports only ``sys``.
"""

from __future__ import annotations

import sys


class UnsupportedPythonError(RuntimeError):
    """fastpatch has no validated recipe for this interpreter."""


class SpliceError(ValueError):
    """The code object has a shape the splicer does not recognise."""


def say(message: str) -> None:
    """Write ``fastpatch: message`` to stderr as one line, at once; nothing
    when there is no stderr to write to (pythonw, closed at exit)."""
    try:
        sys.stderr.write(f"fastpatch: {message}\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - stderr closed or gone: nothing to tell
        pass
