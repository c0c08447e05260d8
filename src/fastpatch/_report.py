"""Reports that leave the process: JSON (version 1), pstats and the text table;
writing them atomically, reading them back, and merging them across processes.

Nothing here is imported by ``import fastpatch``: the command line and the
exit handlers import this module when they need it. It imports only ``os``,
``sys`` and ``fastpatch._stats`` at module level (all loaded already), so
importing it early, to :func:`claim` an output path before the program
forks, costs almost nothing; ``json``, ``marshal``, ``io`` and ``time``
are imported by the functions that use them.

The pipeline: :func:`build` turns this process's ``Stats`` into a report (a
dict, the JSON format of DESIGN.md), :func:`load` reads and checks one from
a file, :func:`merge` adds reports up exactly, :func:`serialize` turns a
report into the bytes of a text, JSON or pstats file, :func:`write` puts
them on disk atomically, and :func:`report_main` is the core of
``python -m fastpatch report``.

JSON report, version 1 (keys marked * go beyond DESIGN.md; readers ignore
keys they do not know)::

    {"format": "fastpatch", "version": 1,
     "fastpatch_version"*: "0.2.0", "report_id"*: "5f0c...",  (16 hex digits, new for each report)
     "pid": 4242, "argv": ["app.py", "--fast"], "python": "3.13.0",
     "clock": "tsc", "created": 1767139200.123,
     "processes"*: [...],                                      (merged reports only, see merge())
     "functions": [
       {"name": "app.handler", "module": "app", "qualname": "handler",
        "filename": "/srv/app.py", "firstlineno": 12,
        "calls": 3, "errors": 1, "completed": 3,
        "total_ns": 5300, "min_ns": 1200, "max_ns": 2500,
        "histogram": {"layout": "log6-4ns-231-9f07a62d", "counts": {"45": 1, "47": 1, "51": 1}},
        "clock"*: "tsc", "mean_ns"*: 1766.67, "p50_ns"*: 1539, "p90_ns"*: 2440, "p99_ns"*: 2440}]}

``histogram.counts`` maps a bucket index (a decimal string: JSON keys are
strings) to its count, leaving out empty buckets; ``histogram.layout``
names the bucket layout (:func:`histogram_layout`), and
``fastpatch._stats.bucket_bounds(index)`` gives a bucket's bounds in
nanoseconds. ``mean_ns`` and the ``p*_ns`` percentiles are derived from the
rest, for readers that do not want to decode the histogram: :func:`load`
ignores them and :func:`merge` computes them again.

Every integer (``pid``, ``firstlineno``, the counts, the durations and each
histogram count) is from 0 to ``MAX_INTEGER``, 2**96 - 1, and ``created``
is a number in that range too (not NaN, not infinite). A process's counters
are unsigned 64-bit, so the bound leaves room for the sums of 2**32 such
processes in a merged report, and it keeps every number a reader derives
(means, percentiles, pstats seconds, all floats) far from overflowing.
:func:`validate` refuses a file that breaks it, and :func:`merge` a merge
whose sums would.
"""

from __future__ import annotations

import os
import sys
from itertools import compress

from . import _stats

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time: importing this module must stay cheap
    from typing import Any, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

    from ._stats import Stats

    Report = Dict[str, Any]

#: The report version this fastpatch writes and the highest it reads.
VERSION = 1
#: The largest integer a report may hold (see the format above).
MAX_INTEGER = 2**96 - 1
_MAX_TEXT = "2**96"
#: Output formats, as ``-f`` and ``FASTPATCH_FORMAT`` name them.
FORMATS = ("text", "json", "pstats")
#: Sort keys of the text table (``-s``), as ``fastpatch.report()`` takes them.
SORT_KEYS = tuple(sorted(_stats.SORT_KEYS))

_PSTATS_EXTENSIONS = (".pstats", ".prof")
_NO_CALLS_TEXT = _stats.NO_CALLS_TEXT
#: The one pstats entry of a report without timed calls: pstats.Stats refuses an empty dict.
_PSTATS_PLACEHOLDER = ("~", 0, "<fastpatch: no instrumented function was called>")


class ReportError(Exception):
    """A report that cannot be written or read; the message names the file
    and the problem, in one line, ready for ``fastpatch: error: ...``."""


# --------------------------------------------------------------------------
# The histogram layout
# --------------------------------------------------------------------------

#: The bucket layout's name (defined with the buckets, in _stats).
histogram_layout = _stats.histogram_layout


# --------------------------------------------------------------------------
# Building a report
# --------------------------------------------------------------------------


def _python_version() -> str:
    """As platform.python_version(), without importing platform: "3.13.0", "3.15.0a1"."""
    v = sys.version_info
    text = f"{v.major}.{v.minor}.{v.micro}"
    if v.releaselevel != "final":
        text += {"alpha": "a", "beta": "b", "candidate": "rc"}.get(v.releaselevel, v.releaselevel) + str(v.serial)
    return text


def _report_id() -> str:
    return os.urandom(8).hex()


def _main_module(module: str) -> str:
    # multiprocessing's spawn and forkserver children import the parent's
    # main script as __mp_main__: the same definitions as the parent's __main__.
    return "__main__" if module == "__mp_main__" else module


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


reported = _stats.reported
write_table = _stats.write_table


def _function_dict(s: Stats) -> Dict[str, Any]:
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
            "layout": histogram_layout(),
            "counts": {str(i): n for i, n in compress(enumerate(s.histogram), s.histogram)},
        },
        "clock": s.clock,
        "mean_ns": round(s.mean_ns, 2),
        **dict(zip(("p50_ns", "p90_ns", "p99_ns"), s._percentiles((50, 90, 99)))),
    }


def build(stats: Optional[Iterable[Stats]] = None) -> Report:
    """The JSON report (version 1, a dict) of ``stats``, by default every
    instrumented definition of this process (``fastpatch.all_stats()``).

    Definitions never called (``calls == 0``) are left out, as cProfile
    leaves out functions that never ran: a whole-program run instruments
    thousands of definitions and most processes call few of them, and
    :func:`merge` counts a missing function as zero calls anyway, so
    nothing is lost. Activations still running (``calls > completed``) are
    kept. Definitions that share module, qualname and first line (two
    lambdas on one line, a module loaded twice) are one entry, added up as
    :func:`merge` would; so are ``__mp_main__`` (multiprocessing's name for
    the parent's main script in a spawned child) and ``__main__``.
    Functions are sorted by module, qualname and first line.
    """
    import time

    from ._clock import clock
    from ._patch import all_stats
    from ._version import __version__

    if stats is None:
        stats = all_stats()
    functions = [_function_dict(s) for s in _stats.reported(stats)]
    return {
        "format": "fastpatch",
        "version": VERSION,
        "fastpatch_version": __version__,
        "report_id": _report_id(),
        "pid": os.getpid(),
        "argv": argv_strings(),
        "python": _python_version(),
        "clock": clock(),
        "created": time.time(),
        "functions": functions,
    }


# --------------------------------------------------------------------------
# Reading and checking a report
# --------------------------------------------------------------------------


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INTEGER


_COUNT = f"a non-negative integer below {_MAX_TEXT}"
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
    hist = fn.get("histogram")
    if not isinstance(hist, dict) or not isinstance(hist.get("layout"), str) or not isinstance(
            hist.get("counts"), dict):
        raise ReportError(f"{where}: 'histogram' must be an object with 'layout' and 'counts' (a corrupt report)")
    if hist["layout"] != histogram_layout():
        raise ReportError(
            f"{where}: its histogram has bucket layout {hist['layout']!r} and this fastpatch's is "
            f"{histogram_layout()!r}; read the report with the fastpatch version that wrote it"
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
            f"{where}: 'created' must be a number of seconds, from 0 and below {_MAX_TEXT} (a corrupt report)"
        )
    if "report_id" in entry and not isinstance(entry["report_id"], str):
        raise ReportError(f"{where}: 'report_id' must be a string (a corrupt report)")


def validate(report: object, source: str = "report") -> Report:
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
            f"this one (fastpatch {_fastpatch_version()}) reads version {VERSION}"
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


def _fastpatch_version() -> str:
    from ._version import __version__

    return __version__


def load(path: str) -> Report:
    """Read and check the JSON report in the file ``path``.

    Raises :class:`ReportError`, naming ``path``, for a file that cannot be
    read, that is not JSON (empty, truncated, binary: a pstats file gets a
    hint), or that :func:`validate` refuses (foreign, newer version, other
    histogram layout, corrupt fields). Unknown keys are kept in the dict
    returned but never used.
    """
    import json

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, not a report file") from None
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not data.strip():
        raise ReportError(f"{path}: empty file, not a fastpatch report")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        hint = ""
        if os.path.splitext(path)[1].lower() in _PSTATS_EXTENSIONS:
            hint = " (a pstats file? `report` reads fastpatch JSON reports; pstats files are its output)"
        raise ReportError(f"{path}: not a fastpatch report: a binary file, not JSON{hint}") from None
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise ReportError(f"{path}: not a complete JSON document: it ends early (truncated?)") from None
        raise ReportError(
            f"{path}: not a fastpatch report: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # a number too long to convert, nesting too deep
        raise ReportError(f"{path}: not a fastpatch report: not valid JSON ({type(exc).__name__}: {exc})") from None
    return validate(report, path)


# --------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------


def _processes(report: Report) -> List[Dict[str, Any]]:
    """The processes a (validated) report covers: its own list if it is
    merged, else one entry made from its top level."""
    if "processes" in report:
        return [dict(p) for p in report["processes"]]
    entry = {key: report[key] for key in ("pid", "argv", "python", "created")}
    if isinstance(report.get("report_id"), str):
        entry["report_id"] = report["report_id"]
    return [entry]


def _identity(process: Dict[str, Any]) -> Tuple[Any, ...]:
    rid = process.get("report_id")
    return ("id", rid) if rid else ("pid", process["pid"], process["created"])


def merge(reports: Sequence[Report]) -> Report:
    """Add up ``reports`` exactly into one valid version-1 report.

    One definition is one module, qualname and first line (``__mp_main__``
    counts as ``__main__``): calls, errors, completed and total_ns are
    summed, min_ns is the least min_ns of the entries that completed
    anything, max_ns the greatest, and histograms are added bucket by
    bucket, so every percentile is the one a single process making all the
    calls would report. Name and filename come from the first report that
    has the definition; its clock is the common one, or ``"mixed"``.

    The top level describes the first report: its ``pid``, ``argv``,
    ``python`` and ``created``. ``"processes"`` lists every process merged
    (``pid``, ``argv``, ``python``, ``created``, ``report_id``), in order,
    merged reports flattened, and ``"clock"`` is their common clock or
    ``"mixed"``. The result has a new ``report_id``; keys the inputs have
    and this fastpatch does not know are dropped.

    Raises :class:`ReportError` for an empty sequence, a report that
    :func:`validate` refuses, the same process twice (the same
    ``report_id``: its calls would be counted twice), or sums beyond
    ``MAX_INTEGER``, which a merged report may not hold either.
    """
    if not reports:
        raise ReportError("no reports to merge")
    definitions = _stats.Definitions()
    processes: List[Dict[str, Any]] = []
    seen: Dict[Tuple[Any, ...], int] = {}
    clocks: List[str] = []
    for i, report in enumerate(reports):
        validate(report, f"report #{i + 1}")
        for process in _processes(report):
            identity = _identity(process)
            if identity in seen:
                raise ReportError(
                    f"report #{i + 1} repeats the report of process {process['pid']} already in report "
                    f"#{seen[identity] + 1}; merging it again would count its calls twice"
                )
            seen[identity] = i
            processes.append(process)
        if report["clock"] not in clocks:
            clocks.append(report["clock"])
        for fn in report["functions"]:
            definitions.entry(fn["name"], fn["module"], fn["qualname"], fn["filename"], fn["firstlineno"]).add(
                fn["calls"], fn["errors"], fn["completed"], fn["total_ns"], fn["min_ns"], fn["max_ns"],
                ((int(k), n) for k, n in fn["histogram"]["counts"].items()),
                fn["clock"] if isinstance(fn.get("clock"), str) else report["clock"],
            )
    merged = definitions.stats()
    for s in merged:
        for key in ("calls", "errors", "completed", "total_ns"):
            if getattr(s, key) > MAX_INTEGER:
                raise ReportError(
                    f"merging these reports gives {s.name} more than {_MAX_TEXT} {key}, more than any real "
                    "processes could count (a corrupt report)"
                )
        if max(s.histogram) > MAX_INTEGER:
            raise ReportError(
                f"merging these reports gives {s.name} more than {_MAX_TEXT} calls in one histogram bucket, more "
                "than any real processes could count (a corrupt report)"
            )
    first = reports[0]
    return {
        "format": "fastpatch",
        "version": VERSION,
        "fastpatch_version": _fastpatch_version(),
        "report_id": _report_id(),
        "pid": first["pid"],
        "argv": list(first["argv"]),
        "python": first["python"],
        "clock": clocks[0] if len(clocks) == 1 else "mixed",
        "created": first["created"],
        "processes": processes,
        "functions": [_function_dict(s) for s in merged],
    }


# --------------------------------------------------------------------------
# Rendering: text, JSON, pstats
# --------------------------------------------------------------------------


def to_stats(report: Report) -> List[Stats]:
    """The functions of a (validated) report as ``fastpatch.Stats``, in
    report order: ``percentile()``, ``mean_ns`` and the text table work
    on them as on live stats."""
    out = []
    for fn in report["functions"]:
        hist = [0] * _stats.HIST_BUCKETS
        for index, count in fn["histogram"]["counts"].items():
            hist[int(index)] += count
        out.append(_stats.Stats(
            name=fn["name"], calls=fn["calls"], errors=fn["errors"], total_ns=fn["total_ns"],
            min_ns=fn["min_ns"], max_ns=fn["max_ns"], completed=fn["completed"], histogram=tuple(hist),
            clock=fn["clock"] if isinstance(fn.get("clock"), str) else report["clock"], module=fn["module"],
            qualname=fn["qualname"], filename=fn["filename"], firstlineno=fn["firstlineno"],
        ))
    return out


def to_pstats(report: Report) -> Dict[Tuple[str, int, str], Tuple[int, int, float, float, Dict[Any, Any]]]:
    """The stats dict of cProfile (``pstats.Stats(...).stats``) for a report.

    Keys are cProfile's: ``(filename, firstlineno, co_name)``, where
    co_name is the last part of the qualname, so a function has the same
    key as in a cProfile run. Values are ``(primitive calls, calls,
    tottime, cumtime, callers)``: both call counts are ``completed`` (the
    activations timed; fastpatch does not tell recursive calls apart), and
    **tottime and cumtime are both the inclusive time** in seconds (time
    inside the function, including the functions it calls), because that is
    all fastpatch measures: sorting by either gives the same order, the
    per-call columns show the mean latency, and the total in the header
    counts nested time once per enclosing function. ``callers`` is empty:
    fastpatch records no call graph, so snakeviz shows the table but no
    call tree. Functions that completed nothing are left out; definitions
    that share a key are added up. A report without any timed call gives
    one placeholder entry, because ``pstats.Stats`` refuses an empty file.
    """
    out: Dict[Tuple[str, int, str], Tuple[int, int, float, float, Dict[Any, Any]]] = {}
    totals: Dict[Tuple[str, int, str], Tuple[int, int]] = {}
    for fn in report["functions"]:
        if not fn["completed"]:
            continue
        key = (fn["filename"], fn["firstlineno"], fn["qualname"].rpartition(".")[2])
        completed, total_ns = totals.get(key, (0, 0))
        totals[key] = (completed + fn["completed"], total_ns + fn["total_ns"])
    for key, (completed, total_ns) in totals.items():
        seconds = total_ns / 1e9
        out[key] = (completed, completed, seconds, seconds, {})
    if not out:
        out[_PSTATS_PLACEHOLDER] = (0, 0, 0.0, 0.0, {})
    return out


def check_sort(sort: str) -> None:
    """Raise :class:`ReportError` unless ``sort`` is a sort key of the text table."""
    if sort not in SORT_KEYS:
        raise ReportError(f"unknown sort key {sort!r}; use one of {', '.join(SORT_KEYS)}")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ReportError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


def format_for(path: str, fmt: Optional[str] = None) -> str:
    """The format of a report file: ``fmt`` if given (checked), else from
    the extension of ``path``: ``.json`` gives json, ``.pstats`` and
    ``.prof`` pstats, anything else text (case does not matter)."""
    if fmt is not None:
        _check_format(fmt)
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        return "json"
    return "pstats" if ext in _PSTATS_EXTENSIONS else "text"


def _json_text(report: Report) -> str:
    """JSON with one function per line: readable, diffable, and compact."""
    import json

    lines = ["{"]
    for key, value in report.items():
        if key != "functions":
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
    lines.append('  "functions": [')
    functions = report.get("functions", [])
    lines.extend(f"    {json.dumps(fn)}{',' if i < len(functions) - 1 else ''}" for i, fn in enumerate(functions))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def text_table(report: Report, sort: str = "total", file: Optional[TextIO] = None) -> str:
    """The table of ``fastpatch.report()`` for a report's functions, sorted
    by ``sort``; returned, and also written to ``file`` if given."""
    import io

    check_sort(sort)
    buf = io.StringIO()
    stats = to_stats(report)
    # A report leaves out definitions that never ran: say so, not that none exist.
    _stats.render(stats, buf, sort, None, empty=_NO_CALLS_TEXT)
    text = buf.getvalue()
    if file is not None:
        file.write(text)
    return text


def serialize(report: Report, fmt: str, sort: str = "total") -> bytes:
    """The bytes of a report file in format ``fmt``: ``"text"`` (the table
    of ``fastpatch.report()``, UTF-8, sorted by ``sort``), ``"json"`` or
    ``"pstats"`` (a marshalled cProfile stats dict, see :func:`to_pstats`)."""
    _check_format(fmt)
    if fmt == "text":
        # A name may hold a lone surrogate (JSON allows "\ud800"), which UTF-8 cannot encode.
        return text_table(report, sort).encode("utf-8", "backslashreplace")
    if fmt == "json":
        return _json_text(report).encode("utf-8")
    import marshal

    return marshal.dumps(to_pstats(report))


# --------------------------------------------------------------------------
# Output paths: {pid}, and who owns a path without it
# --------------------------------------------------------------------------

#: template -> pid of the process that owns its exact path (see claim()).
_claims: Dict[str, int] = {}
#: template -> what its exact path held when this process claimed it, or
#: last wrote it (_file_state): anything else there at exit was written by
#: another process meanwhile (see write()).
_claimed_states: Dict[str, Tuple[int, ...]] = {}


def _with_pid(path: str, pid: str) -> str:
    head, tail = os.path.split(path)
    stem, ext = os.path.splitext(tail)
    return os.path.join(head, f"{stem}.{pid}{ext}")


def _file_state(path: str) -> Tuple[int, ...]:
    """What is at ``path`` itself (a link is not followed): ``()`` for
    nothing, else its device, inode, size and modification and change
    times. Every report is a new file renamed into place, so a report
    written there since changes it."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def claim(path_template: str) -> None:
    """Make this process the owner of ``path_template``'s exact path, unless
    a process already claimed it (this one, or the parent this process was
    forked from). A no-op for a template with ``{pid}``.

    Call it in the process whose report should carry the plain name (the
    ``run`` process, or the one the environment activated) *before* it
    forks: a forked child inherits the claim, sees another pid in it, and
    writes ``NAME.{pid}.EXT`` instead (see :func:`write`). The claim also
    notes what the path holds now (a report left by an earlier run, or
    nothing), so that :func:`write` can tell a report that another
    process wrote there meanwhile. :func:`check_writable` and :func:`write`
    claim too.
    """
    if "{pid}" not in path_template and path_template not in _claims:
        _claims[path_template] = os.getpid()
        _claimed_states[path_template] = _file_state(path_template)


def child_template(path_template: str) -> str:
    """The template to hand child processes through ``FASTPATCH_OUTPUT``:
    ``path_template`` itself if it has ``{pid}``, else the name a child
    writes, with ``.{pid}`` before the extension (``out.json`` gives
    ``out.{pid}.json``). A process started afresh (spawn, forkserver,
    subprocess) cannot inherit a claim, so the process that owns the plain
    name passes this to its children."""
    return path_template if "{pid}" in path_template else _with_pid(path_template, "{pid}")


def resolve_path(path_template: str) -> str:
    """The path this process writes for ``path_template``.

    ``{pid}`` (every occurrence) becomes ``os.getpid()``; nothing else in
    the template is special. Without ``{pid}``, the process that claimed
    the template (:func:`claim`), or any process if none did, writes the
    exact path, and every other process (a forked child of the claimant)
    writes the path with ``.<pid>`` before the extension: ``out.json`` in
    the parent, ``out.4243.json`` in its child. No process overwrites
    another's file, and ``python -m fastpatch report out.json out.*.json``
    merges them.
    """
    pid = os.getpid()
    if "{pid}" in path_template:
        return path_template.replace("{pid}", str(pid))
    owner = _claims.get(path_template, pid)
    return path_template if owner == pid else _with_pid(path_template, str(pid))


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------
#
# A report path may be in a directory that other users write (/tmp), under a
# name they can predict (FASTPATCH_OUTPUT=/tmp/app.{pid}.json). So a link
# there is never resolved here (no realpath) nor opened for writing when it
# leads to a regular file: the report goes to a new file, created with
# O_EXCL|O_NOFOLLOW beside it, and rename() replaces the link itself. Only a
# device, pipe or terminal is written through a link, and then the kernel
# follows it, so that fs.protected_symlinks still applies.

#: Seconds to wait for another process's lock on the report's directory
#: (see _lock_directory).
_LOCK_WAIT = 5.0


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; nothing to do there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path(target: str) -> str:
    directory, name = os.path.split(target)
    return os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def _open_new(path: str) -> int:
    """A new file at ``path``: never one that is there already, nor the target of a link there."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_CLOEXEC", 0))
    return os.open(path, flags, 0o666)  # the umask applies, as for any file the program writes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _own_stream(st: os.stat_result) -> Optional[int]:
    """This process's stdout or stderr descriptor (2 first) if it writes the file ``st`` describes."""
    for fd in (2, 1):
        try:
            own = os.fstat(fd)
        except OSError:
            continue
        if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
            return fd
    return None


def _in_place(path: str) -> Optional[Tuple[int, bool]]:
    """Where a report for ``path`` is written in place, not replaced: a
    descriptor to write to and whether this call opened it (and so the
    caller closes it); None when ``path`` is to be replaced (nothing there,
    a regular file, a link to one that is not this process's stdout or
    stderr).

    A device, named pipe or socket at ``path`` itself is opened without
    following a link. A link to one (``/dev/stderr`` is a link to
    ``/proc/self/fd/2``: a pipe or a terminal) is opened by the kernel,
    so that its protected-symlinks rule applies, and used only if what it
    opened is not a regular file. A link to the regular file that this
    process's stderr or stdout writes (``-o /dev/stderr 2>log``) gives
    that descriptor: the report follows what the program wrote there.
    Opening a named pipe waits for a reader, as any writer to it does.
    Raises IsADirectoryError for a directory, or a link to one, and
    :class:`ReportError` for a link that cannot be followed (:func:`_unfollowable`).
    """
    import errno
    import stat

    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return None
    flags = os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _unfollowable(path, exc) from None
        if stat.S_ISREG(st.st_mode):
            fd = _own_stream(st)
            return None if fd is None else (fd, False)
    else:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if stat.S_ISREG(st.st_mode):
        return None
    fd = os.open(path, flags)
    try:
        opened = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISREG(opened):  # replaced by a file since the look: replace it in turn
        os.close(fd)
        return None
    return fd, True


def _unfollowable(path: str, exc: OSError) -> ReportError:
    """The error for a link at ``path`` that cannot be followed: dangling, a
    loop, refused by the kernel's protected-symlinks rule, or ``/dev/stderr``
    of a process whose stderr is closed. Such a link is not replaced either:
    what it stands for may not be a file at all (replacing ``/dev/stderr``
    would put a file where every process finds its stderr)."""
    return ReportError(
        f"cannot write the report to {path}: it is a symbolic link that cannot be followed "
        f"({exc.strerror or exc}); a report is never written through a link, nor replaces one it cannot follow"
    )


def _lock_directory(directory: str) -> Optional[int]:
    """A descriptor of ``directory`` that holds an exclusive lock on it
    (``flock``; closing the descriptor, or the process dying, releases it),
    or None where none can be had: no ``fcntl`` (Windows), a directory that
    cannot be opened, a file system without ``flock``.

    Locking the directory itself, rather than a lock file, leaves nothing
    behind and gives no name that another user could plant first. A writer
    holds the lock for a look and a rename; one held for more than
    ``_LOCK_WAIT`` seconds is a process stuck or hostile, and the caller
    goes on without it rather than hang at exit.
    """
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    import time

    deadline = time.monotonic() + _LOCK_WAIT
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        except OSError:
            break
    os.close(fd)
    return None


def _refused_link(path: str, reason: str) -> ReportError:
    return ReportError(
        f"cannot write the report to {path}: it is a symbolic link, which this process may not replace "
        f"({reason}), and a report is never written through a link"
    )


def _is_link(path: str) -> bool:
    try:
        return os.path.islink(path)
    except ValueError:
        return False


def _replace(source: str, target: str) -> None:
    """os.replace, with a one-line ReportError when ``target`` is a link
    this process may not replace (another user's, in a sticky directory)."""
    try:
        os.replace(source, target)
    except PermissionError as exc:
        if _is_link(target):
            raise _refused_link(target, exc.strerror or str(exc)) from None
        raise


def write_atomic(path: str, data: bytes, replaceable: Optional[Tuple[int, ...]] = None) -> Tuple[str, Tuple[int, ...]]:
    """Replace the file ``path`` with ``data`` so that no reader ever sees
    a partial file, and return the path written and what is there now
    (``_file_state``, ``()`` for a device or a pipe).

    The bytes go to a new temporary file in the same directory, which is
    fsynced and then renamed over ``path``. A symbolic link at ``path`` is
    replaced, never written through: the file it points to is left as it
    is; where the link may not be replaced (another user's, in a sticky
    directory such as ``/tmp``) or cannot be followed (dangling, or
    ``/dev/stderr`` with stderr closed), :class:`ReportError` says so and
    nothing is written. A device or a named pipe (``-o /dev/null``, ``-o
    /dev/stderr``, directly or through a link) is written in place:
    replacing it would put a regular file where the device was. On any
    failure the temporary file is removed and ``path`` is left as it was.

    With ``replaceable`` (what ``path`` held when this process claimed it,
    see :func:`claim`), ``path`` is replaced only if it still holds that:
    otherwise another process wrote a report there meanwhile, and
    ``data`` goes to ``NAME.<pid>.EXT`` beside it. The look and the rename
    hold a lock on the directory (:func:`_lock_directory`), so that of two
    processes finishing together, the second sees the first one's report.
    OSError propagates.
    """
    in_place = _in_place(path)
    if in_place is not None:
        fd, opened = in_place
        try:
            if not opened:  # our own stdout or stderr: after what Python buffered for it
                for stream in (sys.stdout, sys.stderr):
                    if stream is not None:
                        stream.flush()
            _write_all(fd, data)
        finally:
            if opened:
                os.close(fd)
        return path, ()
    directory = os.path.dirname(path) or "."
    tmp = _temp_path(path)
    fd = _open_new(tmp)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        lock = _lock_directory(directory) if replaceable is not None else None
        try:
            target = path
            if replaceable is not None and _file_state(path) != replaceable:
                target = _with_pid(path, str(os.getpid()))
            _replace(tmp, target)
            state = _file_state(target)
        finally:
            if lock is not None:
                os.close(lock)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    return target, state


def _shown(path: str) -> str:
    """``path`` as messages show it: relative to the working directory when it is below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


def write(path_template: str, fmt: Optional[str] = None, stats: Optional[Iterable[Stats]] = None, *,
          report: Optional[Report] = None, sort: str = "total", keep_others: bool = True) -> str:
    """Write a report file and return the path written.

    The content is ``report`` if given, else :func:`build` of ``stats``
    (default: this process's). The path is :func:`resolve_path` of
    ``path_template``: ``{pid}`` becomes this process's id, and without
    ``{pid}`` a process other than the one that claimed the template (its
    forked child) writes ``NAME.<pid>.EXT``, so no process overwrites
    another's file; this call claims the template if no process did. The
    format is ``fmt`` (``"text"``, ``"json"``, ``"pstats"``) or comes from the
    extension (:func:`format_for`); ``sort`` orders the text table. The
    write is atomic (:func:`write_atomic`).

    When the exact path holds a report that another process wrote after
    this one claimed it (two processes that are not parent and child,
    given one ``FASTPATCH_OUTPUT``: a pipeline, ``make -j``), that report is
    kept: this one goes to ``NAME.<pid>.EXT``, and one line on stderr says
    so. A report left by an earlier run, from before the claim, is
    replaced. ``keep_others=False`` replaces whatever is there (the output
    of ``python -m fastpatch report``).

    Raises :class:`ReportError` for an unknown format or sort key, or when
    the file cannot be written.
    """
    if report is not None and stats is not None:
        raise TypeError("write() takes stats or report, not both")
    check_sort(sort)
    chosen = format_for(path_template, fmt)
    claim(path_template)
    path = resolve_path(path_template)
    data = serialize(report if report is not None else build(stats), chosen, sort)
    mine = keep_others and path == path_template and _claims.get(path_template) == os.getpid()
    try:
        written, state = write_atomic(path, data, _claimed_states.get(path_template) if mine else None)
    except OSError as exc:
        raise ReportError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    if written == path and mine and state:
        _claimed_states[path_template] = state  # this process's own report: the next write replaces it
    if written != path:
        try:
            sys.stderr.write(
                f"fastpatch: {_shown(path)} was written by another process while this one ran; "
                f"report written to {_shown(written)}\n"
            )
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - stderr closed or gone: the report is written all the same
            pass
    return written


def _may_replace(st: os.stat_result, directory: str) -> bool:
    """Whether this process may replace the directory entry ``st`` (lstat)
    of ``directory``: in a sticky directory (``/tmp``) only the entry's
    owner, the directory's owner or root may."""
    import stat

    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:
        return True
    try:
        parent = os.stat(directory)
    except OSError:
        return True  # the write itself will say what is wrong
    euid = geteuid()
    return not parent.st_mode & stat.S_ISVTX or euid in (0, st.st_uid, parent.st_uid)


def check_writable(path_template: str, fmt: Optional[str] = None) -> None:
    """Raise :class:`ReportError` unless this process could write the report
    file now, by the rules of :func:`write_atomic`: for an unknown format
    name, an empty path, a path that is a directory (or a link to one), a
    missing parent directory or one that is not a directory, a directory
    where no file can be created (it tries: it creates and removes a
    temporary file there, as :func:`write` will), a link there that cannot
    be followed, or a file or link there that this process may not replace
    (another user's, in a sticky directory); a device or a named pipe, or a
    link to one, must be
    writable. ``{pid}`` is substituted first; directories are never
    created. On success it claims the template for this process
    (:func:`claim`): call it at start, in the process whose report should
    carry the plain name, before the program runs or forks.
    """
    import stat

    if fmt is not None:
        _check_format(fmt)
    if not isinstance(path_template, str) or not path_template.strip():
        raise ReportError("the report path is empty")
    path = resolve_path(path_template)
    try:
        entry: Optional[os.stat_result] = os.lstat(path)
    except OSError:
        entry = None
    target = entry
    if entry is not None and stat.S_ISLNK(entry.st_mode):
        try:
            target = os.stat(path)  # the kernel follows it, as write_atomic's open would
        except OSError as exc:
            raise _unfollowable(path, exc) from None
    if target is not None and stat.S_ISDIR(target.st_mode):
        raise ReportError(f"cannot write the report to {path}: it is a directory")
    if target is not None and not stat.S_ISREG(target.st_mode):
        # A device or a pipe: written in place, never opened here (a pipe would block).
        if not os.access(path, os.W_OK):
            raise ReportError(f"cannot write the report to {path}: permission denied")
        claim(path_template)
        return
    if target is not None and entry is not target and _own_stream(target) is not None:
        claim(path_template)  # a link to the file this process's stdout or stderr writes
        return
    directory = os.path.dirname(path) or "."
    if not os.path.exists(directory):
        raise ReportError(f"cannot write the report to {path}: directory {directory} does not exist")
    if not os.path.isdir(directory):
        raise ReportError(f"cannot write the report to {path}: {directory} is not a directory")
    if entry is not None and not _may_replace(entry, directory):
        if stat.S_ISLNK(entry.st_mode):
            raise _refused_link(path, f"another user's, in the sticky directory {directory}")
        raise ReportError(
            f"cannot write the report to {path}: it is another user's file, in the sticky directory "
            f"{directory}, where only its owner may replace it"
        )
    probe = _temp_path(path)
    try:
        os.close(_open_new(probe))
    except OSError as exc:
        raise ReportError(
            f"cannot write the report to {path}: cannot create a file in {directory}: {exc.strerror or exc}"
        ) from None
    try:
        os.unlink(probe)
    except OSError:
        pass
    claim(path_template)


# --------------------------------------------------------------------------
# python -m fastpatch report
# --------------------------------------------------------------------------


def _encodable(text: str, stream: TextIO) -> str:
    """``text`` with every character that ``stream`` cannot encode (a lone
    surrogate, anything beyond ASCII in the C locale) as a backslash escape."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def _error(message: str) -> int:
    sys.stderr.write("fastpatch: error: " + message.replace("\n", "\\n") + "\n")
    return 2


def report_main(files: Sequence[str], output: Optional[str] = None, fmt: Optional[str] = None,
                sort: str = "total") -> int:
    """``python -m fastpatch report [-o FILE] [-f FORMAT] [-s SORT] FILE...``
    without the argument parsing: load every JSON report in ``files``, merge
    them (:func:`merge`) and write the result to ``output`` (format ``fmt``
    or from its extension; ``{pid}`` is substituted as everywhere), or, with
    no ``output``, print it to stdout: the text table, or JSON with
    ``fmt="json"`` (pstats is binary and needs ``output``). ``sort`` orders
    the table.

    Returns the exit status: 0, or 2 after a one-line ``fastpatch: error:
    ...`` on stderr for bad options, an unwritable output (checked before
    reading anything), a file that cannot be read, is not a fastpatch
    report or is given twice. 1 if stdout was closed early (``| head``).
    """
    try:
        check_sort(sort)
        if fmt is not None:
            _check_format(fmt)
        if not files:
            raise ReportError("no report files given")
        if output is None and fmt == "pstats":
            raise ReportError("pstats is a binary format: give an output file with -o")
        if output is not None:
            check_writable(output, fmt)
        reports = []
        sources: Dict[Tuple[Any, ...], str] = {}
        for path in files:
            report = load(path)
            for process in _processes(report):
                identity = _identity(process)
                if identity in sources:
                    raise ReportError(
                        f"{path} repeats the report of process {process['pid']} already read from "
                        f"{sources[identity]}; merging it again would count its calls twice"
                    )
                sources[identity] = path
            reports.append(report)
        merged = merge(reports)
        if output is not None:
            write(output, fmt, report=merged, sort=sort, keep_others=False)
            return 0
    except ReportError as exc:
        return _error(str(exc))
    try:
        if fmt == "json":
            sys.stdout.write(_json_text(merged))
        else:
            sys.stdout.write(_encodable(text_table(merged, sort), sys.stdout))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`| head`); keep the interpreter's final flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return 0
