"""Proves that the fastpatch under test is the installed one.

As a pytest plugin (``-p fastpatch_origin`` with this directory on
PYTHONPATH) the check runs when the test session starts; as a script
(``python tools/fastpatch_origin.py``) it runs on its own. Either way it
fails unless fastpatch was imported from the interpreter's site-packages,
outside every directory named in FASTPATCH_FORBIDDEN_ROOTS (os.pathsep
separated: the source trees), and its distribution's version is
``fastpatch.__version__``. FASTPATCH_CI_EXPECT (``splicer=python``,
``clock=monotonic``, comma-separated) also holds the splicer and clock it
runs to what a CI leg sets out to test. It prints where fastpatch came from,
and its splicer and clock.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import Any


def installed_fastpatch() -> str:
    """``fastpatch <version> from <path>``, or SystemExit saying why not."""
    import importlib.metadata

    import fastpatch

    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    where = os.path.realpath(fastpatch.__file__)
    for forbidden in filter(None, os.environ.get("FASTPATCH_FORBIDDEN_ROOTS", "").split(os.pathsep)):
        if where.startswith(os.path.realpath(forbidden) + os.sep):
            raise SystemExit(f"fastpatch imported from a source tree: {where}")
    if not where.startswith(site + os.sep):
        raise SystemExit(f"fastpatch imported from {where}, not from site-packages {site}")
    dist = importlib.metadata.version("fastpatch")
    if dist != fastpatch.__version__:
        raise SystemExit(f"installed distribution {dist} != fastpatch.__version__ {fastpatch.__version__}")
    from fastpatch import _splice

    runs = {"splicer": "c" if _splice.c_splicer_in_use() is not None else "python", "clock": fastpatch.clock()}
    for expected in filter(None, os.environ.get("FASTPATCH_CI_EXPECT", "").split(",")):
        key, _, value = expected.partition("=")
        if runs.get(key) != value:
            raise SystemExit(f"fastpatch runs {key} {runs.get(key)!r}, not {value!r} (FASTPATCH_CI_EXPECT)")
    debug = " (Py_DEBUG)" if hasattr(sys, "gettotalrefcount") else ""
    return (
        f"fastpatch {fastpatch.__version__} from {where} on CPython {sys.version.split()[0]}{debug}, "
        f"{runs['splicer']} splicer, {runs['clock']} clock"
    )


def pytest_sessionstart(session: Any) -> None:
    print(installed_fastpatch(), file=sys.stderr)


if __name__ == "__main__":
    print(installed_fastpatch())
