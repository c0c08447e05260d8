"""Which modules and functions a pattern selects: one matcher for the
import hook, ``python -m fastpatch run`` and the environment; and the
``Selection`` that the bulk API and the hook fill with what they did.

Pattern syntax (DESIGN.md, "Patterns"):

* ``myapp`` selects the module ``myapp`` and every submodule of it
  (``myapp.db.models``);
* glob characters (``*``, ``?``, ``[...]``) match within one part of a
  dotted name: ``myapp.*.views`` selects ``myapp.api.views`` (and its
  submodules), not ``myapp.views``; a ``*`` never crosses a dot;
* ``module:Qual.name`` selects the function or method ``Qual.name`` of
  ``module``, and what is nested in it (a class's methods);
* an absolute directory path (a pattern with a path separator) selects
  the top-level modules and packages found directly in that directory when
  the patterns are compiled (each process looks for itself): how ``run``
  names the program's own code without listing it in ``FASTPATCH_INCLUDE``;
* exclusion wins over inclusion, and fastpatch's own modules are never
  selected.

No ``re`` or ``fnmatch`` here: every process the environment activates
imports this module, and ``re`` alone would double what that costs.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

# Never instrumented, whatever the patterns say: timing the timer would
# recurse, and the startup module runs before anything can be timed.
_OWN_MODULES = ("fastpatch", "_fastpatch_startup")


def is_own_module(name: str) -> bool:
    """Whether ``name`` is fastpatch itself or one of its modules."""
    for own in _OWN_MODULES:
        if name == own or name.startswith(own + "."):
            return True
    return False


def split_patterns(text: str) -> List[str]:
    """The patterns of a comma-separated list (an environment variable), blanks dropped."""
    return [p.strip() for p in text.split(",") if p.strip()]


class PatternError(ValueError):
    """A pattern that can never select anything (empty, or malformed)."""


def is_directory_pattern(pattern: str) -> bool:
    """Whether ``pattern`` names a directory (it holds a path separator)."""
    return "/" in pattern or os.sep in pattern


def module_names_in(directory: str) -> List[str]:
    """The top-level modules and packages a program finds in ``directory``
    (on its sys.path): ``*.py`` files, packages and namespace portions, in
    name order; not ``__main__``, a virtual environment or site-packages."""
    names: List[str] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return names
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name == "__pycache__":
            continue
        try:
            if entry.is_file() and name.endswith(".py") and name[:-3].isidentifier() and name != "__main__.py":
                names.append(name[:-3])
            elif entry.is_dir() and name.isidentifier() and name not in ("site-packages", "dist-packages"):
                if os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                    continue  # a virtual environment
                inside = os.listdir(entry.path)
                if "__init__.py" in inside or any(n.endswith(".py") for n in inside):
                    names.append(name)
        except OSError:
            continue
    return names


def _is_glob(part: str) -> bool:
    return "*" in part or "?" in part or "[" in part


def _check(pattern: str) -> None:
    if not isinstance(pattern, str):
        raise TypeError(f"a fastpatch pattern must be a str, not {type(pattern).__name__}")
    if is_directory_pattern(pattern):
        if not os.path.isabs(pattern):
            raise PatternError(f"bad pattern {pattern!r}: a directory must be an absolute path")
        return
    module, colon, qualname = pattern.partition(":")
    parts = module.split(".") + (qualname.split(".") if colon else [])
    if not module or (colon and not qualname) or not all(
        part and not any(c.isspace() or c in ".:" for c in part) for part in parts
    ):
        raise PatternError(f"bad pattern {pattern!r}: expected a dotted module name, a glob, or module:Qual.name")


def _char_class(pattern: str, start: int) -> Tuple[int, str, bool]:
    """The ``[...]`` at ``start``: (index after it, its members, negated), or
    (-1, "", False) when it is not closed (then ``[`` is a plain character)."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] == "!"
    if negated:
        i += 1
    first = i
    if i < len(pattern) and pattern[i] == "]":  # a leading ] is a member
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 1
    if i >= len(pattern):
        return -1, "", False
    return i + 1, pattern[first:i], negated


def _in_class(members: str, c: str) -> bool:
    i = 0
    while i < len(members):
        if i + 2 < len(members) and members[i + 1] == "-":
            if members[i] <= c <= members[i + 2]:
                return True
            i += 3
        else:
            if members[i] == c:
                return True
            i += 1
    return False


def glob_match(pattern: str, text: str) -> bool:
    """Shell-style match of a whole string: ``*``, ``?``, ``[seq]``, ``[!seq]``."""
    p = t = 0
    star_p = star_t = -1
    while t < len(text):
        if p < len(pattern):
            c = pattern[p]
            if c == "*":
                star_p, star_t = p, t
                p += 1
                continue
            if c == "?":
                p += 1
                t += 1
                continue
            if c == "[":
                end, members, negated = _char_class(pattern, p)
                if end < 0:
                    if text[t] == "[":
                        p += 1
                        t += 1
                        continue
                elif _in_class(members, text[t]) != negated:
                    p = end
                    t += 1
                    continue
            elif c == text[t]:
                p += 1
                t += 1
                continue
        if star_p < 0:
            return False
        star_t += 1  # let the last * take one more character
        p, t = star_p + 1, star_t
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


class _ModulePattern:
    """A dotted-name pattern: its parts, matched one by one against the
    first parts of a module name (the rest are submodules)."""

    __slots__ = ("text", "parts", "globs")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts = text.split(".")
        self.globs = [_is_glob(part) for part in self.parts]

    def matches(self, name_parts: List[str]) -> bool:
        if len(name_parts) < len(self.parts):
            return False
        for part, glob, actual in zip(self.parts, self.globs, name_parts):
            if not (glob_match(part, actual) if glob else part == actual):
                return False
        return True


class Patterns:
    """Compiled include and exclude patterns.

    ``selects_module(name)`` answers for whole modules (every function of
    the module is timed); ``qualnames_in(name)`` lists the ``Qual.name``
    of ``module:Qual.name`` patterns for a module not selected whole; and
    ``excluded_qualnames(name)`` lists the ones excluded from a module that
    is. Answers are cached per module name: the import hook asks once per
    import.
    """

    def __init__(self, include: Iterable[str], exclude: Iterable[str] = ()) -> None:
        if isinstance(include, str) or isinstance(exclude, str):
            raise TypeError("include and exclude must be lists of patterns, not a single string")
        self.include: Tuple[str, ...] = tuple(include)
        self.exclude: Tuple[str, ...] = tuple(exclude)
        for p in self.include + self.exclude:
            _check(p)
        include = [p for p in self.include if not is_directory_pattern(p)]
        exclude = [p for p in self.exclude if not is_directory_pattern(p)]
        # top-level name -> the directory pattern that found it there
        self._include_found = self._found_in_directories(self.include)
        self._exclude_found = self._found_in_directories(self.exclude)
        self._include_modules = [_ModulePattern(p) for p in include if ":" not in p]
        self._exclude_modules = [_ModulePattern(p) for p in exclude if ":" not in p]
        self._include_functions = self._by_module(p for p in include if ":" in p)
        self._exclude_functions = self._by_module(p for p in exclude if ":" in p)
        #: Whether any include pattern names functions (``module:Qual.name``).
        self.has_function_patterns = bool(self._include_functions)
        self._cache: Dict[str, bool] = {}
        #: Include patterns that selected something (see ``unmatched``).
        self.matched: Set[str] = set()

    def top_level_names(self) -> Optional[FrozenSet[str]]:
        """The top-level package of every module the include patterns can
        select, or None when one of them is a glob (``*.views``)."""
        tops = set(self._include_found)
        for pattern in self.include:
            if is_directory_pattern(pattern):
                continue
            top = pattern.partition(":")[0].partition(".")[0]
            if _is_glob(top):
                return None
            tops.add(top)
        return frozenset(tops)

    def _excluded(self, name: str) -> bool:
        parts = name.split(".")
        return parts[0] in self._exclude_found or any(p.matches(parts) for p in self._exclude_modules)

    @staticmethod
    def _found_in_directories(patterns: Iterable[str]) -> Dict[str, str]:
        found: Dict[str, str] = {}
        for p in patterns:
            if is_directory_pattern(p):
                for name in module_names_in(p):
                    found.setdefault(name, p)
        return found

    @staticmethod
    def _by_module(patterns: Iterable[str]) -> Dict[str, FrozenSet[str]]:
        table: Dict[str, Set[str]] = {}
        for p in patterns:
            module, _, qualname = p.partition(":")
            table.setdefault(module, set()).add(qualname)
        return {m: frozenset(q) for m, q in table.items()}

    def __repr__(self) -> str:
        return f"Patterns(include={list(self.include)!r}, exclude={list(self.exclude)!r})"

    def selects_module(self, name: str) -> bool:
        """Whether every function of module ``name`` is selected."""
        answer = self._cache.get(name)
        if answer is None:
            answer = False
            if not is_own_module(name) and not self._excluded(name):
                parts = name.split(".")
                directory = self._include_found.get(parts[0])
                if directory is not None:
                    self.matched.add(directory)
                    answer = True
                for pattern in self._include_modules:
                    if pattern.matches(parts):
                        self.matched.add(pattern.text)
                        answer = True
            self._cache[name] = answer
        return answer

    def qualnames_in(self, name: str) -> FrozenSet[str]:
        """The ``Qual.name`` selected one by one in module ``name`` (``module:Qual.name``)."""
        if not self._include_functions or is_own_module(name) or self._excluded(name):
            return frozenset()
        return self._include_functions.get(name, frozenset())

    def excluded_qualnames(self, name: str) -> FrozenSet[str]:
        """The ``Qual.name`` excluded one by one from module ``name``."""
        return self._exclude_functions.get(name, frozenset())

    def wants(self, name: str) -> bool:
        """Whether anything in module ``name`` is selected (whole or by qualname)."""
        return self.selects_module(name) or bool(self.qualnames_in(name))

    def note_function_found(self, module: str, qualname: str) -> None:
        """Record that the ``module:qualname`` pattern found its function."""
        pattern = f"{module}:{qualname}"
        if pattern in self.include:
            self.matched.add(pattern)

    def unmatched(self) -> List[str]:
        """Include patterns that have selected nothing so far, in the order given."""
        return [p for p in self.include if p not in self.matched]


class Selection:
    """What a bulk call instrumented, and what it skipped and why.

    * ``modules``: the modules walked, in order;
    * ``instrumented``: the names (``module.qualname``) of the definitions
      now timed by this call;
    * ``skipped``: ``(name, reason)`` for each thing met and left alone: a C
      function, an object imported from another module, a decorator wrapper,
      a function already instrumented, a submodule that failed to import...
    * ``counts()``: how many were skipped for each reason.

    Selections add up with ``+``.
    """

    __slots__ = ("modules", "_instrumented", "skipped", "_spliced")

    def __init__(self) -> None:
        self.modules: List[str] = []
        self._instrumented: List[str] = []
        self.skipped: List[Tuple[str, str]] = []
        # (module, qualnames) of what the import hook spliced: the names are
        # made when first read (a whole program splices thousands, and
        # nothing may ever read them).
        self._spliced: List[Tuple[str, List[str]]] = []

    @property
    def instrumented(self) -> List[str]:
        if self._spliced:
            for module, qualnames in self._spliced:
                self._instrumented += [f"{module}.{q}" for q in qualnames]
            self._spliced.clear()
        return self._instrumented

    @instrumented.setter
    def instrumented(self, names: List[str]) -> None:
        self._spliced.clear()
        self._instrumented = names

    def add_spliced(self, module: str, qualnames: List[str]) -> None:
        """Record the functions of ``module`` the import hook spliced."""
        if qualnames:
            self._spliced.append((module, qualnames))

    def counts(self) -> Dict[str, int]:
        """The number of things skipped for each reason."""
        counts: Dict[str, int] = {}
        for _name, reason in self.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    def __add__(self, other: Selection) -> Selection:
        if not isinstance(other, Selection):
            return NotImplemented
        both = Selection()
        for s in (self, other):
            both.modules += s.modules
            both.instrumented += s.instrumented
            both.skipped += s.skipped
        return both

    def __repr__(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.counts().items(), key=lambda item: -item[1]))
        return (
            f"<Selection: {len(self.modules)} module{'s' if len(self.modules) != 1 else ''}, "
            f"{len(self.instrumented)} instrumented, {len(self.skipped)} skipped"
            + (f" ({reasons})" if reasons else "")
            + ">"
        )
