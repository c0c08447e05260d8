"""Adding the reports of many processes up exactly (:func:`combine`,
:func:`read`), definition by definition (``definitions.Definitions``)."""

from __future__ import annotations

import os

from . import schema
from .definitions import Definitions
from .schema import MAX_INTEGER, MAX_TEXT, Report, ReportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Sequence, Tuple

    from .schema import Document


def _processes(document: Document) -> List[Dict[str, Any]]:
    """The processes a (validated) report covers: its own list if it is
    merged, else one entry made from its top level."""
    if "processes" in document:
        return [dict(p) for p in document["processes"]]
    entry = {key: document[key] for key in ("pid", "argv", "python", "created")}
    if isinstance(document.get("report_id"), str):
        entry["report_id"] = document["report_id"]
    return [entry]


def _identity(process: Dict[str, Any]) -> Tuple[Any, ...]:
    """What tells one process's report from another's, in any merge."""
    rid = process.get("report_id")
    return ("id", rid) if rid else ("pid", process["pid"], process["created"])


def _new_processes(document: Document, source: str, seen: Dict[Tuple[Any, ...], str],
                   already: str) -> List[Dict[str, Any]]:
    """The processes of ``document`` (from ``source``), noted in ``seen`` as
    ``source``'s; :class:`ReportError` for a process already ``seen``,
    whose calls would be counted twice (``already``: how the message says
    where it was seen, "in" or "read from")."""
    found = _processes(document)
    for process in found:
        who = _identity(process)
        if who in seen:
            raise ReportError(
                f"{source} repeats the report of process {process['pid']} already {already} {seen[who]}; "
                "merging it again would count its calls twice"
            )
        seen[who] = source
    return found


def combine(documents: Sequence[Document]) -> Report:
    """The Report that adds ``documents`` up exactly (see
    ``definitions``); its document is a valid version-1 report.

    Its top level describes the first report: its ``pid``, ``argv``,
    ``python`` and ``created``. ``"processes"`` lists every process merged
    (``pid``, ``argv``, ``python``, ``created``, ``report_id``), in order,
    merged reports flattened, and ``"clock"`` is their common clock or
    ``"mixed"``, as is each function's. It has a new ``report_id``; keys
    the inputs have and this fastpatch does not know are dropped.

    Raises :class:`ReportError` for an empty sequence, a report that
    ``schema.validate`` refuses, the same process twice (the same
    ``report_id``: its calls would be counted twice), or sums beyond
    ``MAX_INTEGER``, which a merged report may not hold either.
    """
    if not documents:
        raise ReportError("no reports to merge")
    definitions = Definitions()
    merged_processes: List[Dict[str, Any]] = []
    seen: Dict[Tuple[Any, ...], str] = {}
    clocks: List[str] = []
    for i, document in enumerate(documents):
        source = f"report #{i + 1}"
        schema.validate(document, source)
        merged_processes += _new_processes(document, source, seen, "in")
        if document["clock"] not in clocks:
            clocks.append(document["clock"])
        for fn in document["functions"]:
            definitions.entry(fn["name"], fn["module"], fn["qualname"], fn["filename"], fn["firstlineno"]).add(
                fn["calls"], fn["errors"], fn["completed"], fn["total_ns"], fn["min_ns"], fn["max_ns"],
                ((int(k), n) for k, n in fn["histogram"]["counts"].items()), schema.function_clock(fn, document),
                *schema.function_sampling(fn),
            )
    functions = definitions.stats()
    for s in functions:
        for key in ("calls", "errors", "completed", "total_ns", "timed"):
            if getattr(s, key) > MAX_INTEGER:
                raise ReportError(
                    f"merging these reports gives {s.name} more than {MAX_TEXT} {key}, more than any real "
                    "processes could count (a corrupt report)"
                )
        if max(s.histogram) > MAX_INTEGER:
            raise ReportError(
                f"merging these reports gives {s.name} more than {MAX_TEXT} calls in one histogram bucket, more "
                "than any real processes could count (a corrupt report)"
            )
    first = documents[0]
    header = {
        **schema.new_identity(),
        "pid": first["pid"],
        "argv": list(first["argv"]),
        "python": first["python"],
        "clock": clocks[0] if len(clocks) == 1 else "mixed",
        "created": first["created"],
        "processes": merged_processes,
    }
    return Report(functions=functions, header=lambda: header)


def merge(documents: Sequence[Document]) -> Document:
    """The JSON document of :func:`combine`: ``documents`` added up exactly."""
    return combine(documents).document


def load(path: str) -> Document:
    """Read and check the JSON report in the file ``path``.

    Raises ``ReportError``, naming ``path``, for a file that cannot be
    read, that is not JSON (empty, truncated, binary: a file named as one
    of the binary formats, such as pstats, gets a hint), or that
    ``schema.validate`` refuses (foreign, newer version, other histogram
    layout, corrupt fields). Unknown keys are kept in the dict returned but
    never used.
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
        from .formats import named_by_extension

        binary = named_by_extension(path)
        hint = ""
        if binary is not None and binary.binary:
            hint = (f" (a {binary.name} file? `report` reads fastpatch JSON reports; {binary.name} files are "
                    "its output)")
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
    return schema.validate(report, path)


def _telemetry_document(path: str) -> Document:
    """The report of a live telemetry directory (every process there,
    merged); a file the reader skips costs one line on stderr. ReportError
    for a directory that cannot be read or holds no readable process file."""
    import sys

    from ..export import _files

    try:
        found = _files.read_directory(path)
    except OSError as exc:
        raise ReportError(f"cannot read telemetry directory {path}: {exc.strerror or exc}") from None
    for name, why in found.bad_files:
        sys.stderr.write(f"fastpatch: skipped telemetry file {os.path.join(path, name)}: {why}\n")
    if not found.processes:
        raise ReportError(f"telemetry directory {path} holds no readable process file")
    return found.report()


def read(paths: Sequence[str]) -> Report:
    """The reports in the files ``paths`` (:func:`load`) and live
    telemetry directories (every process file there) added up exactly:
    what ``python -m fastpatch report`` prints or converts.

    Raises :class:`ReportError` for a file ``load`` refuses, a directory
    that cannot be read or holds no readable process file, a process whose
    report was already read from another file (named), or what
    :func:`combine` refuses.
    """
    documents = []
    seen: Dict[Tuple[Any, ...], str] = {}
    for path in paths:
        document = _telemetry_document(path) if os.path.isdir(path) else load(path)
        _new_processes(document, path, seen, "read from")
        documents.append(document)
    return combine(documents)
