"""Adding definitions up exactly: within one process (``build.reported``)
and across the reports of many (:func:`combine`, :func:`read`).

One definition is one module, qualname and first line, as DESIGN.md says
(``__mp_main__``, multiprocessing's name for the parent's main script in a
spawned child, counts as ``__main__``): calls, errors, completed and
total_ns are summed, min_ns is the least min_ns of the entries that
completed anything, max_ns the greatest, and histograms are added bucket by
bucket, so every percentile is the one a single process making all the
calls would report.
"""

from __future__ import annotations

from .. import _stats
from . import schema
from .schema import MAX_INTEGER, MAX_TEXT, Report, ReportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Sequence, Set, Tuple

    from .._stats import Stats
    from .schema import Document


class _Merged:
    """One definition's counters, added up from any number of sources."""

    __slots__ = ("name", "module", "qualname", "filename", "firstlineno", "calls", "errors", "completed",
                 "total_ns", "min_ns", "max_ns", "histogram", "clocks")

    def __init__(self, name: str, module: str, qualname: str, filename: str, firstlineno: int) -> None:
        self.name = name
        self.module = module
        self.qualname = qualname
        self.filename = filename
        self.firstlineno = firstlineno
        self.calls = self.errors = self.completed = self.total_ns = self.min_ns = self.max_ns = 0
        self.histogram = [0] * _stats.HIST_BUCKETS
        self.clocks: Set[str] = set()

    def add(self, calls: int, errors: int, completed: int, total_ns: int, min_ns: int, max_ns: int,
            counts: Iterable[Tuple[int, int]], clock: str) -> None:
        if completed:
            self.min_ns = min_ns if not self.completed else min(self.min_ns, min_ns)
            self.max_ns = max(self.max_ns, max_ns)
        self.calls += calls
        self.errors += errors
        self.completed += completed
        self.total_ns += total_ns
        hist = self.histogram
        for index, count in counts:
            hist[index] += count
        self.clocks.add(clock)

    def stats(self) -> Stats:
        clock = next(iter(self.clocks)) if len(self.clocks) == 1 else "mixed" if self.clocks else "monotonic"
        return _stats.Stats(
            name=self.name, calls=self.calls, errors=self.errors, total_ns=self.total_ns, min_ns=self.min_ns,
            max_ns=self.max_ns, completed=self.completed, histogram=tuple(self.histogram), clock=clock,
            module=self.module, qualname=self.qualname, filename=self.filename, firstlineno=self.firstlineno,
        )


class Definitions:
    """Definitions keyed as DESIGN.md says: module, qualname and first line.
    Name and filename come from the first source that has the definition."""

    def __init__(self) -> None:
        self.by_key: Dict[Tuple[str, str, int], _Merged] = {}

    def entry(self, name: str, module: str, qualname: str, filename: str, firstlineno: int) -> _Merged:
        if module == "__mp_main__":
            if name == f"{module}.{qualname}":
                name = f"__main__.{qualname}"
            module = "__main__"
        key = (module, qualname, firstlineno)
        merged = self.by_key.get(key)
        if merged is None:
            merged = self.by_key[key] = _Merged(name, module, qualname, filename, firstlineno)
        return merged

    def stats(self) -> List[Stats]:
        """One Stats per definition, sorted by module, qualname and first line."""
        return [self.by_key[key].stats() for key in sorted(self.by_key)]


# --------------------------------------------------------------------------
# Reports of many processes
# --------------------------------------------------------------------------


def processes(document: Document) -> List[Dict[str, Any]]:
    """The processes a (validated) report covers: its own list if it is
    merged, else one entry made from its top level."""
    if "processes" in document:
        return [dict(p) for p in document["processes"]]
    entry = {key: document[key] for key in ("pid", "argv", "python", "created")}
    if isinstance(document.get("report_id"), str):
        entry["report_id"] = document["report_id"]
    return [entry]


def identity(process: Dict[str, Any]) -> Tuple[Any, ...]:
    """What tells one process's report from another's, in any merge."""
    rid = process.get("report_id")
    return ("id", rid) if rid else ("pid", process["pid"], process["created"])


def combine(documents: Sequence[Document]) -> Report:
    """The Report that adds ``documents`` up exactly (see the module's
    docstring); its document is a valid version-1 report.

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
    seen: Dict[Tuple[Any, ...], int] = {}
    clocks: List[str] = []
    for i, document in enumerate(documents):
        schema.validate(document, f"report #{i + 1}")
        for process in processes(document):
            key = identity(process)
            if key in seen:
                raise ReportError(
                    f"report #{i + 1} repeats the report of process {process['pid']} already in report "
                    f"#{seen[key] + 1}; merging it again would count its calls twice"
                )
            seen[key] = i
            merged_processes.append(process)
        if document["clock"] not in clocks:
            clocks.append(document["clock"])
        for fn in document["functions"]:
            definitions.entry(fn["name"], fn["module"], fn["qualname"], fn["filename"], fn["firstlineno"]).add(
                fn["calls"], fn["errors"], fn["completed"], fn["total_ns"], fn["min_ns"], fn["max_ns"],
                ((int(k), n) for k, n in fn["histogram"]["counts"].items()), schema.function_clock(fn, document),
            )
    functions = definitions.stats()
    for s in functions:
        for key in ("calls", "errors", "completed", "total_ns"):
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
        "format": "fastpatch",
        "version": schema.VERSION,
        "fastpatch_version": schema.fastpatch_version(),
        "report_id": schema.new_report_id(),
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


def read(paths: Sequence[str]) -> Report:
    """The reports in the files ``paths`` (``schema.load``) added up
    exactly: what ``python -m fastpatch report`` prints or converts.

    Raises :class:`ReportError` for a file ``load`` refuses, a process
    whose report was already read from another file (named), or what
    :func:`combine` refuses.
    """
    documents = []
    sources: Dict[Tuple[Any, ...], str] = {}
    for path in paths:
        document = schema.load(path)
        for process in processes(document):
            key = identity(process)
            if key in sources:
                raise ReportError(
                    f"{path} repeats the report of process {process['pid']} already read from "
                    f"{sources[key]}; merging it again would count its calls twice"
                )
            sources[key] = path
        documents.append(document)
    return combine(documents)
