"""The C splicer (``_csplice.c``) gives the Python splicer's bytes, and its
tree walk the Python walk's result. Each side is called by name, so the
comparison holds whichever splicer FASTPATCH_SPLICER makes fastpatch run."""

from __future__ import annotations

import dis
import os
import types
from typing import Any, Callable, List, Optional, Tuple

import pytest

import fastpatch
from fastpatch import _splice, _tree
from sample_pkgs import unique
from splice_harness import CORPUS_CODES, PY, STDLIB_MODULES, c_splicer, python_splice, same_code, stdlib_codes


@pytest.mark.parametrize("module", STDLIB_MODULES)
def test_the_c_splicer_gives_the_python_splicers_bytes(module):
    c = c_splicer()
    probe = object()
    codes = stdlib_codes(module)
    for code in codes + [code for _, code in CORPUS_CODES]:
        try:
            want = python_splice(code, probe, ("trailer",))
        except _splice.SpliceError as exc:
            with pytest.raises(_splice.SpliceError, match=str(exc)):
                c.splice(code, probe, ("trailer",))
            continue
        same_code(c.splice(code, probe, ("trailer",)), want)


def test_the_deopt_table_is_diss():
    # Dialect.deopt is built without importing dis; it must say what dis says.
    import opcode

    from fastpatch._recipes import _deopt_table

    table = _deopt_table(opcode)
    want = [0] * 256
    all_opmap = getattr(dis, "_all_opmap", dis.opmap)
    for name, op in all_opmap.items():
        if op < 256 and not name.startswith("INSTRUMENTED_") and name != "ENTER_EXECUTOR":
            want[op] = dis.opmap[getattr(dis, "deoptmap", {}).get(name, name)]
    assert table == want
    assert all(table[op] == op for op in (dis.opmap["LOAD_FAST"], dis.opmap["RETURN_VALUE"], dis.opmap["EXTENDED_ARG"]))
    if PY >= (3, 11):
        assert sum(1 for op, base in enumerate(table) if base and base != op) >= 50  # the specialised ones


def _walk_both(source: str, wanted: Optional[Callable[[str], bool]] = None) -> List[Tuple[Any, str, List[str]]]:
    """(tree, module name, the qualnames it asked ``wanted`` about) of the C
    walk and of the Python walk over the functions of ``source``."""
    c = c_splicer()
    results = []
    for walk in ("c", "python"):
        asked: List[str] = []

        def asking(qualname: str, asked: List[str] = asked) -> bool:
            asked.append(qualname)
            return wanted(qualname)  # type: ignore[misc]

        top = compile(source, "<walked>", "exec")
        module = unique(f"walked_{walk}")
        tree = _tree.PatchedTree(top)
        if walk == "c":
            extra = () if wanted is None else (asking,)
            tree.code = c.patch_tree(
                top, module, fastpatch._ext.Probe, fastpatch._ext.lazy_origin, tree.instrumented, tree.skipped, *extra
            )
        else:
            tree.code = _tree._Walk(module, None if wanted is None else asking, tree).consts_spliced(top, "")
        results.append((tree, module, asked))
    return results


def _nested_codes(code: types.CodeType) -> List[types.CodeType]:
    """Every code object nested in ``code``, depth first, each after its own."""
    out = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out += _nested_codes(const) + [const]
    return out


def _carries_a_probe(code: types.CodeType) -> bool:
    return any(type(x) in (fastpatch._ext.Probe, fastpatch._ext.Origin) for x in code.co_consts)


def _same_trees(got: types.CodeType, want: types.CodeType) -> int:
    """Assert that two walks' results have the same shape, code and
    constants, each with its own probes and origins; how many codes they nest."""
    pairs = list(zip(_nested_codes(got), _nested_codes(want)))
    assert len(pairs) == len(_nested_codes(want)) == len(_nested_codes(got))
    for a, b in pairs:
        assert a.co_qualname == b.co_qualname if PY >= (3, 11) else a.co_name == b.co_name
        assert [type(x) for x in a.co_consts] == [type(x) for x in b.co_consts]
        ours = (fastpatch._ext.Probe, fastpatch._ext.Origin, types.CodeType)  # nested codes: compared as pairs
        assert tuple(x for x in a.co_consts if type(x) not in ours) == tuple(
            x for x in b.co_consts if type(x) not in ours
        )
        assert a.co_code == b.co_code
    return len(pairs)


def _lazy_qualnames(module: str) -> List[str]:
    return sorted(o.qualname for o in fastpatch._ext.lazy_origins() if o.module == module)


def test_the_c_tree_walk_gives_the_python_walks_result():
    path = os.path.join(os.path.dirname(fastpatch.__file__), "_hook.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    (got, got_module, _), (want, want_module, _) = _walk_both(source)
    assert got.instrumented == want.instrumented and len(got.instrumented) > 30
    assert got.skipped == want.skipped
    assert _same_trees(got.code, want.code) > 30
    assert _lazy_qualnames(got_module) == _lazy_qualnames(want_module) == sorted(want.instrumented)


REFUSALS = """
def outer(n):
    def inner(x):
        return [x + n for _ in range(1)]
    return inner

class Refused:
    def method(self):
        return 1

    class Nested:
        def deep(self):
            return 2

class Mixed:
    def timed(self):
        return 3

    def untimed(self):
        return lambda: 4
"""


REFUSED = {"outer", "Refused.method", "Refused.Nested.deep", "Mixed.untimed"}
REFUSALS_FUNCTIONS = [
    "outer", "outer.<locals>.inner", "Refused.method", "Refused.Nested.deep", "Mixed.timed", "Mixed.untimed",
    "Mixed.untimed.<locals>.<lambda>",
] + (["outer.<locals>.inner.<locals>.<listcomp>"] if PY < (3, 12) else [])  # a function of its own before 3.12
TIMED = sorted(set(REFUSALS_FUNCTIONS) - REFUSED)


def _not_refused(qualname: str) -> bool:
    return qualname not in REFUSED


def test_both_tree_walks_leave_what_wanted_refuses_as_it_is_and_splice_what_is_nested_in_it():
    if not _tree._c_walk_takes_wanted(c_splicer()):
        pytest.skip("this build's C walk takes no `wanted`")
    (got, got_module, got_asked), (want, want_module, want_asked) = _walk_both(REFUSALS, _not_refused)
    for tree, module, asked in ((got, got_module, got_asked), (want, want_module, want_asked)):
        assert sorted(asked) == sorted(REFUSALS_FUNCTIONS)  # once per function; never a class body
        assert sorted(tree.instrumented) == TIMED
        assert tree.skipped == []
        assert _lazy_qualnames(module) == TIMED  # an Origin for each spliced function, and none for the others
        if PY >= (3, 11):
            by_name = {c.co_qualname: c for c in _nested_codes(tree.code)}
            assert sorted(q for q, c in by_name.items() if _carries_a_probe(c)) == TIMED
            assert not _carries_a_probe(by_name["outer"]) and _carries_a_probe(by_name["outer.<locals>.inner"])
    assert got.instrumented == want.instrumented
    _same_trees(got.code, want.code)


def test_neither_tree_walk_lists_a_function_wanted_refuses_as_already_spliced():
    c = c_splicer()
    if not _tree._c_walk_takes_wanted(c):
        pytest.skip("this build's C walk takes no `wanted`")
    once = _tree.patch_module_code(compile(REFUSALS, "<walked>", "exec"), unique("walked_once")).code
    for walk in ("c", "python"):
        tree = _tree.PatchedTree(once)
        if walk == "c":
            tree.code = c.patch_tree(
                once, "again", fastpatch._ext.Probe, fastpatch._ext.lazy_origin, tree.instrumented, tree.skipped,
                _not_refused,
            )
        else:
            tree.code = _tree._Walk("again", _not_refused, tree).consts_spliced(once, "")
        assert (tree.code, tree.instrumented) == (once, [])
        assert sorted(tree.skipped) == [(q, _tree.ALREADY_SPLICED) for q in TIMED]
