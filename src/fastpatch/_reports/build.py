"""This process's report: what it holds of the Stats
(``definitions.reported``) and the process it describes (:func:`header`)."""

from __future__ import annotations

import os
import sys

from . import schema
from .definitions import reported
from .schema import Report

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, List, Optional

    from .._stats import Stats
    from .schema import Document


def python_version() -> str:
    """As platform.python_version(), without importing platform: "3.13.0", "3.15.0a1"."""
    v = sys.version_info
    text = f"{v.major}.{v.minor}.{v.micro}"
    if v.releaselevel != "final":
        text += {"alpha": "a", "beta": "b", "candidate": "rc"}.get(v.releaselevel, v.releaselevel) + str(v.serial)
    return text


def argv_strings() -> List[str]:
    """``sys.argv`` as reports keep it, a list of strings: a path-like entry
    (a ``pathlib.Path``, which some programs leave there) as ``os.fspath``
    gives it, bytes decoded as file names are (``os.fsdecode``), anything
    else as ``str()`` gives it; no list at all (``sys.argv`` deleted or
    replaced) gives ``[]``."""
    argv = getattr(sys, "argv", None)
    return [_arg_text(arg) for arg in argv] if isinstance(argv, (list, tuple)) else []


def _arg_text(arg: object) -> str:
    if isinstance(arg, str):
        return arg
    try:
        if isinstance(arg, os.PathLike):
            arg = os.fspath(arg)
        return os.fsdecode(arg) if isinstance(arg, bytes) else str(arg)
    except Exception:  # noqa: BLE001 - a broken __fspath__ or __str__ must not cost the whole report
        return object.__repr__(arg)


def header() -> Document:
    """The top level of this process's report, made now: everything but ``"functions"``."""
    import time

    from .._clock import clock

    return {
        **schema.new_identity(),
        "pid": os.getpid(),
        "argv": argv_strings(),
        "python": python_version(),
        "clock": clock(),
        "created": time.time(),
    }


def this_process(stats: Optional[Iterable[Stats]] = None) -> Report:
    """The Report of ``stats``, by default every instrumented definition of
    this process (``fastpatch.all_stats()``): ``definitions.reported`` of them,
    under this process's :func:`header`."""
    if stats is None:
        from .._patch import all_stats

        stats = all_stats()
    return Report(functions=reported(stats), header=header)


def build(stats: Optional[Iterable[Stats]] = None) -> Document:
    """The JSON report (version 1, a dict) of ``stats``, by default every
    instrumented definition of this process: the document of :func:`this_process`."""
    return this_process(stats).document
