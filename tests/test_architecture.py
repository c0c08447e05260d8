"""The import graph of fastpatch's own modules, read from their source: no
cycle, no module that imports the package's face (``fastpatch/__init__.py``)
back, and one module alone that imports the C extensions.

Every import statement counts, at the top of a module or inside a function
(a lazy import still runs), except those under ``if TYPE_CHECKING:``, which
never run: only mypy reads them.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Set

import fastpatch

PACKAGE = "fastpatch"
SOURCE = os.path.dirname(fastpatch.__file__)
#: What ``python -m fastpatch`` runs: it may import the face, as any program does.
ENTRY_POINTS = {"fastpatch.__main__"}
#: The one module that imports the C extensions (see its docstring).
BOUNDARY = "fastpatch._native"


def _modules() -> Dict[str, str]:
    """Dotted name -> path of every Python module of the package."""
    found = {}
    for entry in sorted(os.listdir(SOURCE)):
        if entry.endswith(".py"):
            stem = entry[:-3]
            found[PACKAGE if stem == "__init__" else f"{PACKAGE}.{stem}"] = os.path.join(SOURCE, entry)
    return found


def _c_extensions() -> Set[str]:
    """The C extensions: the modules typed by a stub (``.pyi``) and written in C, not Python."""
    return {
        f"{PACKAGE}.{entry[:-4]}" for entry in os.listdir(SOURCE)
        if entry.endswith(".pyi") and not os.path.exists(os.path.join(SOURCE, entry[:-4] + ".py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def _imports(tree: ast.Module, name: str, submodules: Set[str]) -> Set[str]:
    """The modules of the package that module ``name`` imports: a name taken
    from the package itself (``from fastpatch import x``, ``from . import x``
    where ``x`` is no module) is an import of the face, ``fastpatch``."""
    package = name if name == PACKAGE else name.rpartition(".")[0]
    targets: Set[str] = set()
    stack: List[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(filter(None, [package, base]))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in submodules else base)
        stack.extend(ast.iter_child_nodes(node))
    return {t for t in targets if t == PACKAGE or t.startswith(PACKAGE + ".")}


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    submodules = set(modules) | _c_extensions()
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as fh:
            graph[name] = _imports(ast.parse(fh.read(), path), name, submodules) - {name}
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Each cycle found by a depth-first walk, as the modules on it."""
    cycles = []
    state: Dict[str, int] = {}  # 1: on the walk's path, 2: done
    path: List[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_the_graph_is_read_from_every_module_of_the_package():
    graph = _graph()
    assert {PACKAGE, BOUNDARY, "fastpatch._patch", "fastpatch._hook", "fastpatch._cli"} <= set(graph)
    assert {"fastpatch._ext", "fastpatch._csplice", "fastpatch._jumps", "fastpatch._signals"} <= _c_extensions()
    assert "fastpatch._clock" in graph[PACKAGE] and "fastpatch._registry" in graph["fastpatch._patch"]


def test_no_import_cycle_among_fastpatchs_modules():
    assert _cycles(_graph()) == []


def test_no_module_imports_the_package_face_back():
    graph = _graph()
    assert sorted(m for m, targets in graph.items() if PACKAGE in targets and m not in ENTRY_POINTS) == []


def test_only_the_boundary_module_imports_the_c_extensions():
    graph = _graph()
    c_extensions = _c_extensions()
    assert sorted(m for m, targets in graph.items() if targets & c_extensions) == [BOUNDARY]
