"""_tree.patch_module_code, the core of the import hook: every function code
object nested in a module body spliced at once, generator expressions,
comprehensions, lambdas, closures and methods included, registered lazily."""

from __future__ import annotations

import gc
import sys

import pytest

import fastpatch
from fastpatch import _ext, _registry, _tree

SOURCE = '''
import asyncio

def squares(xs):
    return list(x * x for x in xs)

def evens(xs):
    return [x for x in xs if x % 2 == 0]

def keyed(xs):
    return {x: str(x) for x in xs}

def nested_genexprs(rows):
    return sum(sum(v for v in row) for row in rows)

def maker(k):
    def add(x):
        return x + k
    return add

scale = lambda x: x * 3

class Shape:
    sides = [n for n in range(3)]

    def __init__(self, n):
        self.n = n

    @property
    def double(self):
        return self.n * 2

    @staticmethod
    def unit():
        return 1

    @classmethod
    def make(cls, n):
        return cls(n)

def gen(n):
    total = yield from (i for i in range(n))
    return total

async def agen_sum(xs):
    return sum([x async for x in _aiter(xs)])

async def _aiter(xs):
    for x in xs:
        yield x

def run_async(xs):
    coro = agen_sum(xs)
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value

def everything():
    return (
        squares([1, 2, 3]), evens(range(7)), keyed([1, 2]), nested_genexprs([[1, 2], [3]]),
        maker(10)(5), scale(4), Shape.sides, Shape(3).double, Shape.unit(), Shape.make(2).n,
        list(gen(4)), run_async([1, 2, 3]),
    )
'''


def _module(patched: bool, name: str):
    code = compile(SOURCE, f"<{name}>", "exec")
    tree = None
    if patched:
        tree = _tree.patch_module_code(code, name)
        code = tree.code
    namespace = {"__name__": name}
    exec(code, namespace)
    return namespace, tree


def test_every_kind_of_nested_function_runs_spliced_and_behaves_the_same():
    plain, _ = _module(False, "modcode_plain")
    spliced, tree = _module(True, "modcode_spliced")
    assert tree.skipped == []
    assert {"squares", "squares.<locals>.<genexpr>", "maker.<locals>.add", "<lambda>", "Shape.double",
            "Shape.<listcomp>" if sys.version_info < (3, 12) else "Shape.unit", "gen.<locals>.<genexpr>",
            "agen_sum.<locals>.<listcomp>" if sys.version_info < (3, 12) else "agen_sum"} <= set(tree.instrumented)
    assert spliced["everything"]() == plain["everything"]()
    assert fastpatch.is_instrumented(spliced["squares"])
    assert fastpatch.is_instrumented(spliced["maker"](1))  # closures made later run spliced code too
    s = fastpatch.stats(spliced["squares"])
    assert (s.calls, s.completed, s.errors) == (1, 1, 0)
    assert s.name == "modcode_spliced.squares"


def test_generator_expressions_count_one_activation_each_from_their_first_resume():
    spliced, _ = _module(True, "modcode_genexpr")
    spliced["squares"]([1, 2])
    spliced["squares"]([])
    spliced["nested_genexprs"]([[1], [2, 3], []])
    by_name = {s.name: s for s in fastpatch.all_stats() if s.module == "modcode_genexpr"}
    outer = by_name["modcode_genexpr.squares.<locals>.<genexpr>"]
    assert (outer.calls, outer.completed, outer.errors) == (2, 2, 0)
    # the compiler names a generator expression inside another one
    # "<genexpr>.<locals>.<genexpr>" up to 3.10, "<genexpr>.<genexpr>" from 3.11
    (inner,) = [
        s for name, s in by_name.items() if name.startswith("modcode_genexpr.nested") and name.count("<genexpr>") == 2
    ]
    assert (inner.calls, inner.completed) == (3, 3)
    # one created and never iterated is not an activation
    genexpr_code = next(c for c in spliced["squares"].__code__.co_consts if hasattr(c, "co_code"))
    genexpr = type(spliced["squares"])(genexpr_code, spliced)
    assert fastpatch.stats(genexpr).name == outer.name
    never = genexpr(iter([1]))
    del never
    gc.collect()
    assert (fastpatch.stats(genexpr).calls, fastpatch.stats(genexpr).completed) == (2, 2)


def test_the_report_at_exit_reads_only_what_was_called_and_registers_nothing_else():
    spliced, tree = _module(True, "modcode_called")
    spliced["maker"](2)(3)
    spliced["scale"](1)
    called = {s.name: s for s in _registry.called_stats() if s.module == "modcode_called"}
    expected = {"modcode_called.maker", "modcode_called.maker.<locals>.add", "modcode_called.<lambda>"}
    if sys.version_info < (3, 12):  # the class body's comprehension ran, as a function of its own
        expected.add("modcode_called.Shape.<listcomp>")
    assert set(called) == expected
    assert all((s.calls, s.completed, s.errors) == (1, 1, 0) for s in called.values())
    # reading them registered nothing: every definition is still waiting in the lazy table
    waiting = _ext.lazy_origins()
    lazy_names = {o.qualname for o in waiting if o.module == "modcode_called"}
    assert {"squares", "maker", "maker.<locals>.add"} <= lazy_names
    assert not any(d.module == "modcode_called" for d in _registry._by_original.values())
    # and asking about one registers it, with the same numbers
    assert fastpatch.stats(spliced["maker"]).to_dict() == called["modcode_called.maker"].to_dict()
    assert "maker" not in {o.qualname for o in _ext.lazy_origins() if o.module == "modcode_called"}
    assert _registry.has_definitions()
    # all_stats() still lists every definition, with the same numbers for the called ones
    every = {s.name: s for s in fastpatch.all_stats() if s.module == "modcode_called"}
    assert len(every) == len(tree.instrumented)
    assert all(every[name].to_dict() == s.to_dict() for name, s in called.items())


def test_the_lazy_table_holds_origins_weakly_by_their_original_code():
    f_code = compile("def f():\n    return 1\n", "<lazy>", "exec").co_consts[0]
    before = _ext.lazy_count()
    origin = _ext.Origin(f_code, _ext.Probe(), "lazymod", "f")
    _ext.lazy_add(origin)
    assert _ext.lazy_get(f_code) is origin and _ext.lazy_count() == before + 1
    assert origin in _ext.lazy_origins() and origin not in _ext.called_origins()
    token = ~origin.probe
    token[None]
    assert origin in _ext.called_origins()
    del origin, token
    assert _ext.lazy_get(f_code) is None and _ext.lazy_count() == before  # it took its entry out as it died
    # registered: out of the table, whichever Origin of that code it named
    first, second = (_ext.Origin(f_code, _ext.Probe(), "lazymod", "f") for _ in range(2))
    _ext.lazy_add(first)
    _ext.lazy_add(second)
    assert _ext.lazy_get(f_code) is second and _ext.lazy_count() == before + 1
    _ext.lazy_discard(first)
    assert _ext.lazy_get(f_code) is None and _ext.lazy_count() == before
    del first, second
    assert _ext.lazy_count() == before


def test_a_definition_spliced_while_another_thread_registers_the_lazy_table_keeps_its_name(monkeypatch):
    # The telemetry writer's thread registers the lazy table (to name new records) while the main thread's
    # import hook splices a module: what the hook adds meanwhile must stay listed, under its own name.
    early_code, late_code = (c for c in compile("def early():\n    return 1\ndef late():\n    return 2\n",
                                                "<race>", "exec").co_consts if hasattr(c, "co_code"))
    early = _ext.Origin(early_code, _ext.Probe(), "racemod", "early")
    late = _ext.Origin(late_code, _ext.Probe(), "racemod", "late")
    _ext.lazy_add(early)
    register = _registry.register_origin

    def register_while_the_hook_splices(origin, patched, name=None):
        if origin is early:
            _ext.lazy_add(late)
        return register(origin, patched, name)

    monkeypatch.setattr(_registry, "register_origin", register_while_the_hook_splices)
    _registry._register_lazy()
    monkeypatch.undo()
    assert {s.name for s in fastpatch.all_stats() if s.module == "racemod"} == {"racemod.early", "racemod.late"}


def test_an_origin_is_built_only_from_a_code_object_a_probe_and_two_names():
    f_code = compile("def f():\n    return 1\n", "<origin>", "exec").co_consts[0]
    origin = _ext.Origin(f_code, _ext.Probe(), "m", "f")
    assert (origin.code, origin.module, origin.qualname) == (f_code, "m", "f")
    assert repr(origin) == "<fastpatch origin of m.f>"
    assert not gc.is_tracked(origin)  # it can be in no cycle
    for args in ((None, _ext.Probe(), "m", "f"), (f_code, object(), "m", "f"), (f_code, _ext.Probe(), 1, "f")):
        with pytest.raises(TypeError):
            _ext.Origin(*args)
    with pytest.raises(AttributeError):
        origin.code = f_code  # type: ignore[misc]
    with pytest.raises(TypeError):
        _ext.lazy_add(object())


def test_the_splicers_origins_are_made_and_listed_in_one_call():
    f_code = compile("def f():\n    return 1\n", "<made>", "exec").co_consts[0]
    origin = _ext.lazy_origin(f_code, _ext.Probe(), "m", "f")
    assert type(origin) is _ext.Origin and _ext.lazy_get(f_code) is origin
    for args in ((f_code, object(), "m", "f"), (None, _ext.Probe(), "m", "f"), (f_code, _ext.Probe(), "m")):
        with pytest.raises(TypeError):
            _ext.lazy_origin(*args)
    del origin
    assert _ext.lazy_get(f_code) is None
