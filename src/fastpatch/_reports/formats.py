"""The report formats: one :class:`Format` entry each, in one registry that
``-f``, ``FASTPATCH_FORMAT``, the choice by extension, the report at exit
and ``python -m fastpatch report`` all read.

A new format is one :func:`register` call below: its name, the extensions
that choose it, whether it is binary (and so needs a file, never stdout),
and its serializer.
"""

from __future__ import annotations

import os

from .schema import Report, ReportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple, Union

    from .._stats import Stats
    from .schema import Document

#: The format of an output file whose extension names no format.
DEFAULT = "text"


class Format:
    """A report format.

    ``serialize(report, sort)`` returns the report in this format: text
    (``str``) or, for a ``binary`` format, ``bytes``. ``sort`` is the sort
    key of the table, for the formats that have one. ``extensions`` (lower
    case, with the dot) choose this format for an output file without
    ``-f``.
    """

    __slots__ = ("name", "extensions", "binary", "serialize")

    def __init__(self, name: str, extensions: Tuple[str, ...], binary: bool,
                 serialize: Callable[[Report, str], Union[str, bytes]]) -> None:
        self.name = name
        self.extensions = extensions
        self.binary = binary
        self.serialize = serialize

    def text(self, report: Report, sort: str) -> str:
        """The report as text, for stdout (a text format only)."""
        data = self.serialize(report, sort)
        if not isinstance(data, str):
            raise TypeError(f"the {self.name} format is binary: it has no text")
        return data

    def file_bytes(self, report: Report, sort: str) -> bytes:
        """The bytes of a report file in this format; text is UTF-8."""
        data = self.serialize(report, sort)
        # A name may hold a lone surrogate (JSON allows "\ud800"), which UTF-8 cannot encode.
        return data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data


_REGISTRY: Dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to the formats (replacing one of the same name) and return it."""
    _REGISTRY[fmt.name] = fmt
    return fmt


def names() -> List[str]:
    """The format names, in the order they were registered."""
    return list(_REGISTRY)


def names_text(conjunction: str) -> str:
    """The names as a message lists them: "text, json or pstats"."""
    *most, last = names()
    return f"{', '.join(most)} {conjunction} {last}" if most else last


def extensions_text() -> str:
    """How ``-f``'s help says which extension chooses which format: ".json, .pstats/.prof, else text"."""
    chosen = ["/".join(fmt.extensions) for fmt in _REGISTRY.values() if fmt.extensions]
    return ", ".join(chosen + [f"else {DEFAULT}"])


def get(name: str) -> Format:
    """The format called ``name``; :class:`ReportError` for a name no format has."""
    fmt = _REGISTRY.get(name)
    if fmt is None:
        raise ReportError(f"unknown report format {name!r}; use one of {', '.join(_REGISTRY)}")
    return fmt


def named_by_extension(path: str) -> Optional[Format]:
    """The format whose extensions include ``path``'s (any case), if one does."""
    ext = os.path.splitext(path)[1].lower()
    for fmt in _REGISTRY.values():
        if ext in fmt.extensions:
            return fmt
    return None


def format_for(path: str, fmt: Optional[str] = None) -> str:
    """The format (its name) of a report file: ``fmt`` if given (checked),
    else the one :func:`named_by_extension` finds for ``path``, else
    ``DEFAULT``."""
    if fmt is not None:
        return get(fmt).name
    chosen = named_by_extension(path)
    return chosen.name if chosen is not None else DEFAULT


def check_sort(sort: str) -> None:
    """Raise :class:`ReportError` unless ``sort`` is a sort key of the table."""
    from .table import SORT_KEYS

    if sort not in SORT_KEYS:
        raise ReportError(f"unknown sort key {sort!r}; use one of {', '.join(sorted(SORT_KEYS))}")


def serialize(report: Union[Report, Document], fmt: str, sort: str = "total") -> bytes:
    """The bytes of a report file in format ``fmt`` (a name), of a Report
    or a (validated) document."""
    return get(fmt).file_bytes(Report.of(report), sort)


# --------------------------------------------------------------------------
# text, json, pstats
# --------------------------------------------------------------------------


def _text(report: Report, sort: str) -> str:
    """The table of ``fastpatch.report()`` for the report's functions, sorted by ``sort``."""
    import io

    from .table import NO_CALLS_TEXT, render

    check_sort(sort)
    buf = io.StringIO()
    render(report.functions, buf, sort, None, empty=NO_CALLS_TEXT)
    return buf.getvalue()


def _json(report: Report, sort: str) -> str:
    """JSON with one function per line: readable, diffable, and compact."""
    import json

    document = report.document
    lines = ["{"]
    for key, value in document.items():
        if key != "functions":
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
    lines.append('  "functions": [')
    functions = document.get("functions", [])
    lines.extend(f"    {json.dumps(fn)}{',' if i < len(functions) - 1 else ''}" for i, fn in enumerate(functions))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


#: The one pstats entry of a report without timed calls: pstats.Stats refuses an empty dict.
_PSTATS_PLACEHOLDER = ("~", 0, "<fastpatch: no instrumented function was called>")

def to_pstats(functions: List[Stats]) -> Dict[Tuple[str, int, str], Tuple[int, int, float, float, Dict[Any, Any]]]:
    """The stats dict of cProfile (``pstats.Stats(...).stats``) for a report's functions.

    Keys are cProfile's: ``(filename, firstlineno, co_name)``, where
    co_name is the last part of the qualname, so a function has the same
    key as in a cProfile run. Values are ``(primitive calls, calls,
    tottime, cumtime, callers)``: both call counts are ``completed`` (the
    activations ended; fastpatch does not tell recursive calls apart), and
    **tottime and cumtime are both the inclusive time** in seconds (time
    inside the function, including the functions it calls), because that is
    all fastpatch measures: sorting by either gives the same order, the
    per-call columns show the mean latency, and the total in the header
    counts nested time once per enclosing function. ``callers`` is empty:
    fastpatch records no call graph, so snakeviz shows the table but no
    call tree. For a sampled function the times are its estimated total
    (``Stats.total_ns``, see ``Stats.sampled``) over all its completed
    calls, and a count-only one has 0 seconds. Functions that completed nothing are left out; definitions
    that share a key are added up. A report without any timed call gives
    one placeholder entry, because ``pstats.Stats`` refuses an empty file.
    """
    totals: Dict[Tuple[str, int, str], Tuple[int, int]] = {}
    for s in functions:
        if not s.completed:
            continue
        key = (s.filename, s.firstlineno, s.qualname.rpartition(".")[2])
        completed, total_ns = totals.get(key, (0, 0))
        totals[key] = (completed + s.completed, total_ns + s.total_ns)
    out: Dict[Tuple[str, int, str], Tuple[int, int, float, float, Dict[Any, Any]]] = {}
    for key, (completed, total_ns) in totals.items():
        seconds = total_ns / 1e9
        out[key] = (completed, completed, seconds, seconds, {})
    if not out:
        out[_PSTATS_PLACEHOLDER] = (0, 0, 0.0, 0.0, {})
    return out


def _pstats(report: Report, sort: str) -> bytes:
    """A marshalled cProfile stats dict (:func:`to_pstats`), as ``pstats.Stats`` reads a file."""
    import marshal

    return marshal.dumps(to_pstats(report.functions))


register(Format("text", (), False, _text))
register(Format("json", (".json",), False, _json))
register(Format("pstats", (".pstats", ".prof"), True, _pstats))
