"""Code that already ran splices as it did fresh: 3.11+ specialise a code
object's units in place as it runs, and ``sys.monitoring`` (3.12+) rewrites
them; the C splicer reads such code through ``co_code``."""

from __future__ import annotations

import dis
import sys
import types
from typing import Any, Dict

import pytest

from splice_harness import PY, c_splicer, python_splice, same_code

_HOT_SOURCE = """
def hot(items, k):
    total = 0
    for i, x in enumerate(items):
        if x.real > k:
            total += x * i
        else:
            total -= len(str(x))
    try:
        return total // k
    except ZeroDivisionError:
        return None
"""


def _fresh_hot() -> types.CodeType:
    module = compile(_HOT_SOURCE, "<hot>", "exec")
    return next(c for c in module.co_consts if isinstance(c, types.CodeType))


def _hot_function() -> Any:
    namespace: Dict[str, Any] = {}
    exec(compile(_HOT_SOURCE, "<hot>", "exec"), namespace)
    return namespace["hot"]


@pytest.mark.skipif(PY < (3, 11), reason="3.11+ specialise a code object's units in place as it runs")
def test_code_that_ran_hot_splices_as_it_did_fresh():
    # The C splicer reads code that never ran as CPython runs it, and code
    # that ran (specialised opcodes, counters in the caches) through co_code.
    c = c_splicer()
    hot = _hot_function()
    for _ in range(3000):
        hot([1, 2.5, 3, 40], 2)
    specialised = [i.opname for i in dis.get_instructions(hot, adaptive=True)]  # type: ignore[call-arg]
    assert specialised != [i.opname for i in dis.get_instructions(hot)], "nothing was specialised"
    probe = object()
    same_code(c.splice(hot.__code__, probe, ()), c.splice(_fresh_hot(), probe, ()))
    same_code(c.splice(_fresh_hot(), probe, ()), python_splice(_fresh_hot(), probe, ()))


@pytest.mark.skipif(PY < (3, 12), reason="sys.monitoring is 3.12+")
def test_code_instrumented_by_sys_monitoring_splices_as_it_did_fresh():
    c = c_splicer()
    hot = _hot_function()
    mon = sys.monitoring  # type: ignore[attr-defined]
    tool = next(t for t in range(6) if mon.get_tool(t) is None)
    mon.use_tool_id(tool, "fastpatch-test")
    try:
        mon.register_callback(tool, mon.events.LINE, lambda code, line: None)
        mon.set_local_events(tool, hot.__code__, mon.events.LINE)
        hot([1, 2.5], 1)  # instrumented on its first run
        assert any(i.opname.startswith("INSTRUMENTED") for i in dis.get_instructions(hot, adaptive=True))  # type: ignore[call-arg]
        probe = object()
        same_code(c.splice(hot.__code__, probe, ()), c.splice(_fresh_hot(), probe, ()))
    finally:
        mon.set_local_events(tool, hot.__code__, 0)
        mon.register_callback(tool, mon.events.LINE, None)
        mon.free_tool_id(tool)
