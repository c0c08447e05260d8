"""The JSON report, version 1: its fields, checking a document, and the
``Report`` that carries a report to a format. (Reading one from a file,
which names the other formats in its errors, is ``merge.load``.)

JSON report, version 1 (keys marked * go beyond DESIGN.md; readers ignore
keys they do not know)::

    {"format": "fastpatch", "version": 1,
     "fastpatch_version"*: "0.2.0", "report_id"*: "5f0c...",  (16 hex digits, new for each report)
     "pid": 4242, "argv": ["app.py", "--fast"], "python": "3.13.0",
     "clock": "tsc", "created": 1767139200.123,
     "processes"*: [...],                                      (merged reports only, see merge.merge())
     "functions": [
       {"name": "app.handler", "module": "app", "qualname": "handler",
        "filename": "/srv/app.py", "firstlineno": 12,
        "calls": 3, "errors": 1, "completed": 3,
        "total_ns": 5300, "min_ns": 1200, "max_ns": 2500,
        "histogram": {"layout": "log6-4ns-231-9f07a62d", "counts": {"45": 1, "47": 1, "51": 1}},
        "clock"*: "tsc", "mean_ns"*: 1766.67, "p50_ns"*: 1539, "p90_ns"*: 2440, "p99_ns"*: 2440,
        "sample"*: 1, "timed"*: 3}]}

``histogram.counts`` maps a bucket index (a decimal string: JSON keys are
strings) to its count, leaving out empty buckets; ``histogram.layout``
names the bucket layout (``fastpatch._stats.histogram_layout``), and
``fastpatch._stats.bucket_bounds(index)`` gives a bucket's bounds in
nanoseconds. ``mean_ns`` and the ``p*_ns`` percentiles are derived from the
rest, for readers that do not want to decode the histogram: ``merge.load``
ignores them and a merge computes them again.

``sample`` and ``timed`` (fastpatch 0.3+; a report without them was timed
exactly: ``sample`` 1, ``timed`` equal to ``completed``) say how the
durations were measured: ``sample`` is the rate, 1 for exact timing, N for
one activation in N timed at random, 0 for count-only, -1 in a merge of
different rates; ``timed`` counts the timed activations that ended. Under
sampling ``total_ns`` and the histogram's counts are estimates, each timed
activation standing for N (Horvitz-Thompson), so a reader that ignores the
two keys still reads estimates of the same quantities: the histogram sums
to about ``completed``.

Every integer (``pid``, ``firstlineno``, the counts, the durations and each
histogram count) is from 0 to ``MAX_INTEGER``, 2**96 - 1, and ``created``
is a number in that range too (not NaN, not infinite). A process's counters
are unsigned 64-bit, so the bound leaves room for the sums of 2**32 such
processes in a merged report, and it keeps every number a reader derives
(means, percentiles, pstats seconds, all floats) far from overflowing.
:func:`validate` refuses a file that breaks it, and a merge refuses sums
that would.
"""

from __future__ import annotations

import os
from itertools import compress

from .. import _stats

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time: the exit handler imports this module
    from typing import Any, Callable, Dict, List, Optional, Tuple, Union

    from .._stats import Stats

    Document = Dict[str, Any]

#: The report version this fastpatch writes and the highest it reads.
VERSION = 1
#: The largest integer a report may hold (see the format above), and how messages name the bound.
MAX_INTEGER = 2**96 - 1
MAX_TEXT = "2**96"


class ReportError(Exception):
    """A report that cannot be written or read; the message names the file
    and the problem, in one line, ready for ``fastpatch: error: ...``."""


def fastpatch_version() -> str:
    from .._version import __version__

    return __version__


def new_report_id() -> str:
    """The ``report_id`` of a report made now: 16 hex digits, never reused."""
    return os.urandom(8).hex()


def new_identity() -> Document:
    """The first keys of a report made now: its format and version, this
    fastpatch's version and a new ``report_id``."""
    return {"format": "fastpatch", "version": VERSION, "fastpatch_version": fastpatch_version(),
            "report_id": new_report_id()}


# --------------------------------------------------------------------------
# A report on its way to a format
# --------------------------------------------------------------------------


class Report:
    """A report as the formats read it: its JSON ``document`` and its
    ``functions``, one ``Stats`` per definition in report order.

    A report made from Stats (this process's, or a merge's) has its
    functions from the start, and makes its document only when a format
    asks for it; a report read from a file has its document, and makes the
    functions from it once. Either way the text table, the pstats dict and
    the JSON document describe the same definitions with the same numbers.
    """

    __slots__ = ("_document", "_functions", "_header")

    def __init__(self, document: Optional[Document] = None, *, functions: Optional[List[Stats]] = None,
                 header: Optional[Callable[[], Document]] = None) -> None:
        if (document is None) == (functions is None or header is None):
            raise TypeError("Report() takes a document, or functions with a header")
        self._document = document
        self._functions = functions
        self._header = header

    @classmethod
    def of(cls, report: Union[Report, Document]) -> Report:
        """``report`` itself, or the Report of a (validated) document."""
        return report if isinstance(report, Report) else cls(report)

    @property
    def document(self) -> Document:
        """The JSON document (version 1): the header's fields, then ``"functions"``."""
        if self._document is None:
            assert self._header is not None and self._functions is not None
            self._document = {**self._header(), "functions": [function_document(s) for s in self._functions]}
        return self._document

    @property
    def functions(self) -> List[Stats]:
        if self._functions is None:
            assert self._document is not None
            self._functions = to_stats(self._document)
        return self._functions


def function_document(s: Stats) -> Dict[str, Any]:
    """One entry of ``"functions"``: the definition ``s`` describes."""
    return {
        "name": s.name,
        "module": s.module,
        "qualname": s.qualname,
        "filename": s.filename,
        "firstlineno": s.firstlineno,
        "calls": s.calls,
        "errors": s.errors,
        "completed": s.completed,
        "total_ns": s.total_ns,
        "min_ns": s.min_ns,
        "max_ns": s.max_ns,
        "histogram": {
            "layout": _stats.histogram_layout(),
            "counts": {str(i): n for i, n in compress(enumerate(s.histogram), s.histogram)},
        },
        "clock": s.clock,
        "mean_ns": round(s.mean_ns, 2),
        **dict(zip(("p50_ns", "p90_ns", "p99_ns"), s._percentiles((50, 90, 99)))),
        "sample": s.sample,
        "timed": s.timed,
    }


def function_clock(fn: Dict[str, Any], document: Document) -> str:
    """A function's clock: its own ``"clock"``, else the report's."""
    clock = fn.get("clock")
    return clock if isinstance(clock, str) else str(document["clock"])


def function_sampling(fn: Dict[str, Any]) -> Tuple[int, int]:
    """A (validated) function's ``(timed, sample)``: exact timing's for a report written without them."""
    return fn.get("timed", fn["completed"]), fn.get("sample", 1)


def to_stats(document: Document) -> List[Stats]:
    """The functions of a (validated) document as ``fastpatch.Stats``, in
    report order: ``percentile()``, ``mean_ns`` and the text table work
    on them as on live stats."""
    out = []
    for fn in document["functions"]:
        hist = [0] * _stats.HIST_BUCKETS
        for index, count in fn["histogram"]["counts"].items():
            hist[int(index)] += count
        out.append(_stats.Stats(
            name=fn["name"], calls=fn["calls"], errors=fn["errors"], total_ns=fn["total_ns"],
            min_ns=fn["min_ns"], max_ns=fn["max_ns"], completed=fn["completed"], histogram=tuple(hist),
            clock=function_clock(fn, document), module=fn["module"], qualname=fn["qualname"],
            filename=fn["filename"], firstlineno=fn["firstlineno"], sample=function_sampling(fn)[1],
            timed=function_sampling(fn)[0],
        ))
    return out


# --------------------------------------------------------------------------
# Checking a document
# --------------------------------------------------------------------------


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INTEGER


_COUNT = f"a non-negative integer below {MAX_TEXT}"
_FUNCTION_STRINGS = ("name", "module", "qualname", "filename")
_FUNCTION_COUNTS = ("firstlineno", "calls", "errors", "completed", "total_ns", "min_ns", "max_ns")
#: The keys of histogram.counts: each bucket index as str() writes it (no sign, no leading zero).
_BUCKET_KEYS = frozenset(str(i) for i in range(_stats.HIST_BUCKETS))


def _check_function(fn: object, where: str) -> None:
    if not isinstance(fn, dict):
        raise ReportError(f"{where} is not an object but a JSON {type(fn).__name__} (a corrupt report)")
    if isinstance(fn.get("name"), str):
        where = f"{where} ({fn['name']})"
    for key in _FUNCTION_STRINGS:
        if not isinstance(fn.get(key), str):
            raise ReportError(f"{where}: {key!r} must be a string (a corrupt report)")
    for key in _FUNCTION_COUNTS:
        if not _is_count(fn.get(key)):
            raise ReportError(f"{where}: {key!r} must be {_COUNT} (a corrupt report)")
    if "timed" in fn and not (_is_count(fn["timed"]) and fn["timed"] <= fn["completed"]):
        raise ReportError(f"{where}: 'timed' must be {_COUNT}, at most 'completed' (a corrupt report)")
    if "sample" in fn and not (isinstance(fn["sample"], int) and not isinstance(fn["sample"], bool)
                               and _stats.MIXED_SAMPLE <= fn["sample"] <= _stats.MAX_SAMPLE):
        raise ReportError(
            f"{where}: 'sample' must be an integer from -1 (mixed rates) to {_stats.MAX_SAMPLE} (a corrupt report)"
        )
    hist = fn.get("histogram")
    if not isinstance(hist, dict) or not isinstance(hist.get("layout"), str) or not isinstance(
            hist.get("counts"), dict):
        raise ReportError(f"{where}: 'histogram' must be an object with 'layout' and 'counts' (a corrupt report)")
    layout = _stats.histogram_layout()
    if hist["layout"] != layout:
        raise ReportError(
            f"{where}: its histogram has bucket layout {hist['layout']!r} and this fastpatch's is "
            f"{layout!r}; read the report with the fastpatch version that wrote it"
        )
    for index, count in hist["counts"].items():
        if not (index in _BUCKET_KEYS and _is_count(count)):
            raise ReportError(
                f"{where}: histogram count {_shorten(index)}: {_shorten(count)} is not a bucket index below "
                f"{_stats.HIST_BUCKETS} with {_COUNT} as its count (a corrupt report)"
            )


def _shorten(value: object) -> str:
    """repr(value), cut to stay on one readable line of an error message
    (and never a conversion of a huge int to decimal)."""
    if isinstance(value, int) and not -MAX_INTEGER <= value <= MAX_INTEGER:
        return "an integer out of range"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_process(entry: object, where: str) -> None:
    if not isinstance(entry, dict):
        raise ReportError(f"{where} is not an object but a JSON {type(entry).__name__} (a corrupt report)")
    if not _is_count(entry.get("pid")):
        raise ReportError(f"{where}: 'pid' must be {_COUNT} (a corrupt report)")
    if not isinstance(entry.get("argv"), list) or not all(isinstance(a, str) for a in entry["argv"]):
        raise ReportError(f"{where}: 'argv' must be a list of strings (a corrupt report)")
    if not isinstance(entry.get("python"), str):
        raise ReportError(f"{where}: 'python' must be a string (a corrupt report)")
    created = entry.get("created")
    # The comparisons are false for NaN, and exact for an int of any size.
    if not isinstance(created, (int, float)) or isinstance(created, bool) or not 0 <= created <= MAX_INTEGER:
        raise ReportError(
            f"{where}: 'created' must be a number of seconds, from 0 and below {MAX_TEXT} (a corrupt report)"
        )
    if "report_id" in entry and not isinstance(entry["report_id"], str):
        raise ReportError(f"{where}: 'report_id' must be a string (a corrupt report)")


def validate(report: object, source: str = "report") -> Document:
    """Check that ``report`` (parsed JSON) is a fastpatch report this
    version reads, and return it; otherwise raise :class:`ReportError`
    naming ``source``: a foreign file (no ``"format": "fastpatch"``), a
    higher ``"version"``, another histogram layout, or a missing or
    mistyped field. Keys it does not know are ignored, at every level.
    """
    if not isinstance(report, dict) or report.get("format") != "fastpatch":
        what = "a JSON object" if isinstance(report, dict) else f"a JSON {type(report).__name__}"
        raise ReportError(
            f"{source}: not a fastpatch report (a foreign file: {what} without \"format\": \"fastpatch\")"
        )
    version = report.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReportError(f"{source}: a fastpatch report without a valid \"version\" (a corrupt report)")
    if version > VERSION:
        raise ReportError(
            f"{source}: written by a newer fastpatch (report version {_shorten(version)}); "
            f"this one (fastpatch {fastpatch_version()}) reads version {VERSION}"
        )
    if version < 1:
        raise ReportError(f"{source}: unknown report version {version}; this fastpatch reads version {VERSION}")
    _check_process(report, source)
    if not isinstance(report.get("clock"), str):
        raise ReportError(f"{source}: 'clock' must be a string (a corrupt report)")
    if "processes" in report:
        processes = report["processes"]
        if not isinstance(processes, list) or not processes:
            raise ReportError(f"{source}: 'processes' must be a non-empty list (a corrupt report)")
        for i, entry in enumerate(processes):
            _check_process(entry, f"{source}: process #{i}")
    functions = report.get("functions")
    if not isinstance(functions, list):
        raise ReportError(f"{source}: 'functions' must be a list (a corrupt report)")
    for i, fn in enumerate(functions):
        _check_function(fn, f"{source}: function #{i}")
    return report

