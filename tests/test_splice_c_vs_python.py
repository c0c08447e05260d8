"""The C splicer (``_csplice.c``) gives the Python splicer's bytes, and its
tree walk the Python walk's result. Each side is called by name, so the
comparison holds whichever splicer FASTPATCH_SPLICER makes fastpatch run."""

from __future__ import annotations

import dis
import os
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import fastpatch
from fastpatch import _ext, _splice, _tree
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
        ask = None if wanted is None else asking
        if walk == "c":
            tree.code = c.patch_tree(top, module, _ext.Probe, _ext.lazy_origin, tree.instrumented, tree.skipped, ask)
        else:
            tree.code = _tree._Walk(module, ask, tree).consts_spliced(top, "")
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


def _not_refused(qualname: str) -> bool:
    return qualname not in REFUSED


def test_both_tree_walks_leave_what_wanted_refuses_as_it_is_and_splice_what_is_nested_in_it():
    names = [name for name, _code in _functions(compile(WANTED_SOURCE, "<walked>", "exec"))]
    timed = sorted(name for name in names if name not in REFUSED)
    (got, got_module, got_asked), (want, want_module, want_asked) = _walk_both(WANTED_SOURCE, _not_refused)
    for tree, module, asked in ((got, got_module, got_asked), (want, want_module, want_asked)):
        assert sorted(asked) == sorted(names)  # once per function; never a class body
        assert sorted(tree.instrumented) == timed
        assert tree.skipped == []
        assert _lazy_qualnames(module) == timed  # an Origin for each spliced function, and none for the others
        assert sorted(name for name, code in _functions(tree.code) if _carries_a_probe(code)) == timed
    assert got.instrumented == want.instrumented
    _same_trees(got.code, want.code)


def test_neither_tree_walk_lists_a_function_wanted_refuses_as_already_spliced():
    c = c_splicer()
    once = _tree.patch_module_code(compile(WANTED_SOURCE, "<walked>", "exec"), unique("walked_once")).code
    timed = sorted(name for name, _code in _functions(once) if name not in REFUSED)
    for walk in ("c", "python"):
        tree = _tree.PatchedTree(once)
        if walk == "c":
            tree.code = c.patch_tree(
                once, "again", _ext.Probe, _ext.lazy_origin, tree.instrumented, tree.skipped, _not_refused
            )
        else:
            tree.code = _tree._Walk("again", _not_refused, tree).consts_spliced(once, "")
        assert (tree.code, tree.instrumented) == (once, [])
        assert sorted(tree.skipped) == [(name, _tree.ALREADY_SPLICED) for name in timed]
