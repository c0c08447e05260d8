"""The C splicer (``_csplice.c``) gives the Python splicer's bytes, and its
tree walk the Python walk's result. Each side is called by name, so the
comparison holds whichever splicer FASTPATCH_SPLICER makes fastpatch run."""

from __future__ import annotations

import dis
import os
import types
from typing import Any, Dict, List, Tuple

import pytest

import fastpatch
from fastpatch import _ext, _splice
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


WANTED_SOURCE = '''
def kept(x):
    def refused_inside(y):
        def kept_deeper(z):
            return z
        return kept_deeper(y)
    return refused_inside(x) + 1

def refused(x):
    def kept_inside(y):
        return y * 2
    return kept_inside(x) + sum(v for v in range(x))

def refused_alone(x):
    return x

class Shape:
    def kept_method(self):
        return [n for n in range(3)]

    def refused_method(self):
        return 4
'''

REFUSED = {"kept.<locals>.refused_inside", "refused", "refused_alone", "Shape.refused_method"}


def _functions(code: types.CodeType, qualname: str = "") -> List[Tuple[str, types.CodeType]]:
    """(qualname, code) of every function code object nested in ``code``, as the walk names them."""
    out = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if PY >= (3, 11):
                name = const.co_qualname
            elif code.co_flags & 1:  # CO_OPTIMIZED: a function's locals
                name = f"{qualname}.<locals>.{const.co_name}"
            else:
                name = f"{qualname}.{const.co_name}" if qualname else const.co_name
            out += _functions(const, name)
            if const.co_flags & 1:
                out.append((name, const))
    return out


def test_the_c_tree_walk_splices_only_what_wanted_accepts_and_decides_each_nested_function_on_its_own():
    c = c_splicer()
    original = compile(WANTED_SOURCE, "wanted.py", "exec")
    asked: List[str] = []
    made: List[Any] = []

    def wanted(qualname: str) -> bool:
        asked.append(qualname)
        return qualname not in REFUSED

    def lazy_origin(*args: Any) -> Any:
        made.append(fastpatch._ext.lazy_origin(*args))
        return made[-1]

    instrumented: List[str] = []
    skipped: List[Tuple[str, str]] = []
    top = c.patch_tree(original, "m", fastpatch._ext.Probe, lazy_origin, instrumented, skipped, wanted)
    everything = c.patch_tree(original, "m", fastpatch._ext.Probe, fastpatch._ext.lazy_origin, [], [], None)

    names = [name for name, _code in _functions(original)]
    assert set(names) >= REFUSED | {
        "kept", "kept.<locals>.refused_inside.<locals>.kept_deeper", "refused.<locals>.kept_inside",
        "refused.<locals>.<genexpr>", "Shape.kept_method",
    }
    assert sorted(asked) == sorted(names) and len(asked) == len(set(asked))  # once per function
    accepted = [name for name in names if name not in REFUSED]
    assert instrumented == accepted and skipped == []
    assert [origin.qualname for origin in made] == accepted  # no probe, no Origin for a refused function

    spliced, full = dict(_functions(top)), dict(_functions(everything))
    for name, code in _functions(original):
        ours = [const for const in spliced[name].co_consts if type(const) in (_ext.Probe, _ext.Origin)]
        if name in REFUSED:
            assert ours == [] and spliced[name].co_code == code.co_code
        else:
            assert len(ours) == 2 and spliced[name].co_code == full[name].co_code
    # A refused function is rebuilt only to hold a nested function that changed.
    originals = dict(_functions(original))
    assert spliced["refused_alone"] is originals["refused_alone"]
    assert spliced["refused"] is not originals["refused"]

    namespace: Dict[str, Any] = {"__name__": "m"}
    exec(top, namespace)
    assert (namespace["kept"](3), namespace["refused"](3), namespace["Shape"]().kept_method()) == (4, 9, [0, 1, 2])
    assert [fastpatch.is_instrumented(namespace[name]) for name in ("kept", "refused", "refused_alone")] == [
        True, False, False,
    ]


def test_the_c_tree_walk_refuses_a_wanted_that_is_not_callable_and_lets_wanteds_error_through():
    c = c_splicer()
    code = compile(WANTED_SOURCE, "wanted.py", "exec")
    with pytest.raises(TypeError, match="^patch_tree\\(\\) wanted must be None or a callable, not int$"):
        c.patch_tree(code, "m", fastpatch._ext.Probe, fastpatch._ext.lazy_origin, [], [], 3)

    def wanted(qualname: str) -> bool:
        raise LookupError(qualname)

    instrumented: List[str] = []
    with pytest.raises(LookupError, match="^kept.<locals>.refused_inside.<locals>.kept_deeper$"):
        c.patch_tree(code, "m", fastpatch._ext.Probe, fastpatch._ext.lazy_origin, instrumented, [], wanted)
    assert instrumented == []
