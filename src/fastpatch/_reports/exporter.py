"""Exporters: where an activated process's numbers go when it ends.

The exit handler (``fastpatch._activate``) feeds the report writer
(:class:`ReportWriter`, made when the process ends) and then the exporters
appended to the activation's ``exporters`` list. When the process ends
(``atexit``, SIGTERM, the end of a multiprocessing child) it reads the
stats of the definitions called once, hands them to every exporter in
turn, and then closes them; an exporter that raises gets one line on
stderr (``could not write WHAT: ...``; the report writer's failure is
said as it always was, ``could not write the report: ...``) and the
others still run.

A new sink is a subclass of :class:`Exporter` in a module of its own, and
one line that appends an instance to ``activation.exporters`` where it is
switched on. This module imports nothing at module level that is not
loaded already: an exporter loads what it needs when it exports.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

    from .._stats import Stats


class Exporter:
    """What the exit handler calls. Subclass it and override what you need.

    ``export(stats, final)`` receives Stats snapshots of every definition
    called in this process (``calls > 0``; not merged: several may share a
    module, qualname and first line). ``final`` is True for the last
    export of the process, when it ends; an exporter that also exports
    while the process runs passes False to its own exports. ``close()``
    is called once, after the final export, or instead of it when the
    activation is undone; it releases what the exporter holds. In a forked
    child, the inherited exporters are the child's: each process exports
    and closes its own.
    """

    #: How the line for a failure names what was not written: "could not write {what}: ...".
    what = "the exporter's output"

    def export(self, stats: List[Stats], final: bool) -> None:
        pass

    def close(self) -> None:
        pass


#: Exporters a sink started for this process (live telemetry's last
#: snapshot, ``fastpatch.export``): the activation in effect, if any, runs
#: them at exit after its own, on every path its own take (atexit, SIGTERM,
#: multiprocessing's children); without one, the sink sees to its own exit.
process_exporters: List[Exporter] = []


class ReportWriter(Exporter):
    """The report at exit: a file (``output``, with ``{pid}`` as
    ``output.resolve_path`` reads it) in format ``fmt`` (or the one its
    extension names), or without ``output`` the text table on stderr.

    ``root_pid`` is the process that always reports (``run``'s own), even
    with nothing called, and only in it the line ``report written to
    PATH``; any other process (a child) writes no file if nothing it
    instrumented is alive any more, and prints no table if nothing was
    called. ``written`` is the path this process wrote, if it wrote one.
    """

    what = "the report"

    def __init__(self, output: Optional[str], fmt: Optional[str], sort: str, root_pid: Optional[int]) -> None:
        self.output = output
        self.fmt = fmt
        self.sort = sort
        self.root_pid = root_pid
        self.written: Optional[str] = None

    def export(self, stats: List[Stats], final: bool) -> None:
        if not final:
            return
        self.written = None  # a forked child's copy may hold the parent's
        pid = os.getpid()
        root = pid == self.root_pid
        if self.output is None:
            if root or stats:
                self._table(stats, root, pid)
            return
        if not root:
            from .._registry import has_definitions

            if not has_definitions():
                return  # a helper process (resource tracker, forkserver) that timed nothing
        from .output import write

        self.written = write(self.output, self.fmt, stats, sort=self.sort)

    def _table(self, stats: List[Stats], root: bool, pid: int) -> None:
        """The table on stderr; in a child, under a line naming the process."""
        from .definitions import reported
        from .table import NO_CALLS_TEXT, render

        if not root:
            from .build import argv_strings

            argv = " ".join(argv_strings())  # sys.argv may hold a pathlib.Path, or bytes
            sys.stderr.write(f"fastpatch: process {pid} ({argv[:100]})\n")
        render(reported(stats), sys.stderr, self.sort, None, empty=NO_CALLS_TEXT)
        sys.stderr.flush()
