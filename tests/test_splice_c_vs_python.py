"""The C splicer (``_csplice.c``) gives the Python splicer's bytes, and its
tree walk the Python walk's result. Each side is called by name, so the
comparison holds whichever splicer FASTPATCH_SPLICER makes fastpatch run."""

from __future__ import annotations

import dis
import os
import types
from typing import Any, List

import pytest

import fastpatch
from fastpatch import _splice
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


def test_the_c_tree_walk_gives_the_python_walks_result():
    from fastpatch import _patch

    c = c_splicer()
    path = os.path.join(os.path.dirname(fastpatch.__file__), "_patch.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    results = []
    for walk in ("c", "python"):
        top = compile(source, path, "exec")
        tree = _patch.PatchedTree(top)
        if walk == "c":
            made: List[Any] = []

            def lazy_origin(*args: Any, made: List[Any] = made) -> Any:
                made.append(_patch.Origin(*args))
                return made[-1]

            tree.code = c.patch_tree(top, "m", fastpatch._ext.Probe, lazy_origin, tree.instrumented, tree.skipped)
            assert len(made) == len(tree.instrumented)
        else:
            tree.code = _patch._patch_tree(top, "m", "", tree)
        results.append(tree)
    got, want = results
    assert got.instrumented == want.instrumented and len(got.instrumented) > 30
    assert got.skipped == want.skipped

    def spliced(code: types.CodeType) -> List[types.CodeType]:
        out = []
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                out += spliced(const) + [const]
        return out

    pairs = list(zip(spliced(got.code), spliced(want.code)))
    assert len(pairs) == len(spliced(want.code)) > 30
    for a, b in pairs:
        # the same shape, each with its own probe and origin
        assert [type(x) for x in a.co_consts] == [type(x) for x in b.co_consts]
        ours = (fastpatch._ext.Probe, _patch.Origin, types.CodeType)  # nested codes: compared as pairs
        assert tuple(x for x in a.co_consts if type(x) not in ours) == tuple(
            x for x in b.co_consts if type(x) not in ours
        )
        assert a.co_code == b.co_code
