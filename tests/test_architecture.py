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
import subprocess
import sys
from typing import Dict, List, Set

import fastpatch

PACKAGE = "fastpatch"
SOURCE = os.path.dirname(fastpatch.__file__)
#: What ``python -m fastpatch`` runs: it may import the face, as any program does.
ENTRY_POINTS = {"fastpatch.__main__"}
#: The one module that imports the C extensions (see its docstring).
BOUNDARY = "fastpatch._native"


def _modules() -> Dict[str, str]:
    """Dotted name -> path of every Python module of the package, its subpackages' included."""
    found = {}
    for directory, dirs, files in os.walk(SOURCE):
        dirs[:] = sorted(d for d in dirs if os.path.exists(os.path.join(directory, d, "__init__.py")))
        relative = os.path.relpath(directory, SOURCE)
        package = PACKAGE if relative == "." else ".".join([PACKAGE, *relative.split(os.sep)])
        for entry in files:
            if entry.endswith(".py"):
                stem = entry[:-3]
                found[package if stem == "__init__" else f"{package}.{stem}"] = os.path.join(directory, entry)
    return found


def _is_package(name: str, modules: Dict[str, str]) -> bool:
    return os.path.basename(modules[name]) == "__init__.py"


def _c_extensions() -> Set[str]:
    """The C extensions: the modules typed by a stub (``.pyi``) and written in C, not Python."""
    return {
        f"{PACKAGE}.{entry[:-4]}" for entry in os.listdir(SOURCE)
        if entry.endswith(".pyi") and not os.path.exists(os.path.join(SOURCE, entry[:-4] + ".py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def _imports(tree: ast.Module, name: str, package: str, submodules: Set[str]) -> Set[str]:
    """The modules of the package that module ``name`` (of ``package``)
    imports: a name taken from the package itself (``from fastpatch import
    x``, ``from . import x`` where ``x`` is no module) is an import of the
    face, ``fastpatch``."""
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
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(filter(None, [*parent, base]))
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
        package = name if _is_package(name, modules) else name.rpartition(".")[0]
        with open(path, encoding="utf-8") as fh:
            graph[name] = _imports(ast.parse(fh.read(), path), name, package, submodules) - {name}
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
    assert "fastpatch._stats" in graph["fastpatch._reports.definitions"]  # `from .. import _stats`
    assert "fastpatch._reports.schema" in graph["fastpatch._reports.build"]


def test_no_import_cycle_among_fastpatchs_modules():
    assert _cycles(_graph()) == []


def test_no_module_imports_the_package_face_back():
    graph = _graph()
    assert sorted(m for m, targets in graph.items() if PACKAGE in targets and m not in ENTRY_POINTS) == []


def test_only_the_boundary_module_imports_the_c_extensions():
    graph = _graph()
    c_extensions = _c_extensions()
    assert sorted(m for m, targets in graph.items() if targets & c_extensions) == [BOUNDARY]


def test_import_fastpatch_loads_only_the_face_the_c_extension_and_the_clock():
    # The rest of the package loads with the first name taken from the face.
    code = (
        "import sys\nimport fastpatch\n"
        "print(sorted(m for m in sys.modules if m.startswith('fastpatch')))\n"
        "fastpatch.instrument\n"
        "print('fastpatch._patch' in sys.modules, 'fastpatch._registry' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines() == [
        "['fastpatch', 'fastpatch._clock', 'fastpatch._ext', 'fastpatch._native', 'fastpatch._version']",
        "True True",
    ]
