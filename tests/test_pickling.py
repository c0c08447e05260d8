"""Pickling instrumented functions by value (cloudpickle, dill).

cloudpickle (joblib/loky, Dask, Ray, PySpark) and dill (multiprocess,
pathos) pickle functions defined in ``__main__``, lambdas and closures by
value, through their code object's constants, the probe among them. What
arrives on the other side: the function, working, instrumented under the
same name, with the receiving process's own counters (in the sending
process those are the definition's own). Unpickling it needs fastpatch
importable there.
"""

from __future__ import annotations

import multiprocessing
import sys

import pytest

import fastpatch

PICKLERS = ["cloudpickle", "dill"]


def _pickler(name):
    module = pytest.importorskip(name, reason=f"needs {name}")
    try:  # a release that predates this Python cannot pickle code by value at all
        module.loads(module.dumps(lambda x: x))
    except Exception as exc:  # noqa: BLE001 - the skip reason names it
        pytest.skip(f"{name} {module.__version__} cannot pickle a plain lambda on this Python: {exc!r:.120}")
    return module


def _make_closure(k):
    def add(x):
        return x + k

    return add


@pytest.mark.parametrize("pickler", PICKLERS)
def test_an_instrumented_closure_pickled_by_value_arrives_working_and_instrumented(pickler):
    p = _pickler(pickler)
    add = _make_closure(5)
    fastpatch.instrument(add, name="pickled.add")
    assert add(1) == 6
    copy = p.loads(p.dumps(add))
    assert copy is not add and copy(2) == 7
    assert fastpatch.is_instrumented(copy)
    # in the same process, the copy is the same definition: one entry, one set of counters
    s = fastpatch.stats(copy)
    assert (s.name, s.calls) == ("pickled.add", 2)
    assert [x.name for x in fastpatch.all_stats()].count("pickled.add") == 1
    fastpatch.uninstrument(copy)
    assert not fastpatch.is_instrumented(copy) and copy(3) == 8
    assert fastpatch.is_instrumented(add)  # the original is untouched


@pytest.mark.parametrize("pickler", PICKLERS)
def test_a_lambda_pickled_many_times_keeps_one_definition(pickler):
    p = _pickler(pickler)
    square = eval("lambda x: x * x")  # noqa: S307 - a lambda with no module to pickle it by reference
    fastpatch.instrument(square)
    data = p.dumps(square)
    copies = [p.loads(data) for _ in range(20)]
    assert [c(3) for c in copies] == [9] * 20
    assert fastpatch.stats(square).calls == 20
    assert {fastpatch.stats(c).name for c in copies} == {fastpatch.stats(square).name}
    assert [s.name for s in fastpatch.all_stats()].count(fastpatch.stats(square).name) == 1


def _run_in_spawned_child(pickler_name, payload):
    import importlib

    pickler = importlib.import_module(pickler_name)
    import fastpatch as fp

    func = pickler.loads(payload)
    results = [func(i) for i in range(3)]
    s = fp.stats(func)
    return results, fp.is_instrumented(func), s.name, s.calls, s.completed


@pytest.mark.parametrize("pickler", PICKLERS)
def test_an_instrumented_function_sent_to_a_spawned_process_counts_there(pickler):
    p = _pickler(pickler)
    add = _make_closure(10)
    fastpatch.instrument(add, name="sent.add")
    add(0)
    payload = p.dumps(add)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        results, instrumented, name, calls, completed = pool.apply(_run_in_spawned_child, (pickler, payload))
    assert results == [10, 11, 12]
    assert instrumented and name == "sent.add"
    assert (calls, completed) == (3, 3)  # the child's own counters
    assert fastpatch.stats(add).calls == 1  # and the parent's are its own


def test_pickling_a_probe_that_belongs_to_nothing_is_a_clear_error():
    import pickle

    from fastpatch import _ext

    with pytest.raises(pickle.PicklingError, match="belongs to no instrumented definition"):
        pickle.dumps(_ext.Probe())


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_copy_made_from_instrumented_code_stays_registered_after_the_original_function_dies():
    import gc
    import types

    namespace: dict = {}
    exec("def f(x):\n    return x * 3\n", namespace)
    f = namespace.pop("f")
    fastpatch.instrument(f, name="copied.f")
    copy = types.FunctionType(f.__code__, f.__globals__, "copy")
    del f, namespace
    gc.collect()
    assert copy(2) == 6
    assert fastpatch.is_instrumented(copy)
    assert fastpatch.stats(copy).name == "copied.f"
    fastpatch.instrument(copy)  # already instrumented: never spliced twice
    assert copy(1) == 3
    assert fastpatch.stats(copy).calls == 2  # one probe: each call counted once
    consts = copy.__code__.co_consts
    assert sum(type(c) is fastpatch._ext.Probe for c in consts) == 1
    fastpatch.uninstrument(copy)
    assert copy(1) == 3 and not fastpatch.is_instrumented(copy)
