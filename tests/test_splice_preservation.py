"""Splicing keeps every original instruction as it was: its opcode and
argument, its line or location, its jump target and its exception handler,
each moved by exactly the injected instructions (read back with ``dis``);
and the instrumented corpus runs as the original does, counted exactly."""

from __future__ import annotations

import dis

import pytest

import fastpatch
from fastpatch import _splice
from splice_harness import (
    ACTIVE_CASES,
    CORPUS_CODES,
    CORPUS_IDS,
    ENTRY_SIGS,
    EXIT_SIGS,
    JUMP_OPS,
    PY,
    STDLIB_MODULES,
    View,
    case_namespace,
    check_against_original,
    count_sequence,
    first_body_index,
    stdlib_codes,
)


def test_corpus_covers_what_it_claims():
    names = {n for n, _ in CORPUS_CODES}
    assert "closure_with_nonlocal_inner:bump" in names
    codes = dict(CORPUS_CODES)
    # the probe's LOAD_CONST index needs EXTENDED_ARG
    assert len(codes["many_constants:target"].co_consts) > 256
    # some jump in the big function needs EXTENDED_ARG
    big = codes["extended_arg_jumps:target"]
    assert any(
        i.opname == "EXTENDED_ARG" and nxt.opcode in JUMP_OPS
        for i, nxt in zip(list(dis.get_instructions(big)), list(dis.get_instructions(big))[1:])
    )
    # loops whose head is the first body instruction: some jump lands there
    for name in ("loop_head_is_first_instruction:target", "generator_loop_head_is_first_instruction:target"):
        view = View(codes[name])
        first = first_body_index(view)
        assert first in {view.jump_target(i) for i in range(len(view.instrs)) if view.is_jump(i)}, name


@pytest.mark.parametrize("name,code", CORPUS_CODES, ids=CORPUS_IDS)
def test_splicing_preserves_instructions_lines_jumps_handlers_and_attributes(name, code):
    probe = object()
    check_against_original(code, _splice.splice(code, probe), probe)


@pytest.mark.parametrize("case", ACTIVE_CASES, ids=[c.name for c in ACTIVE_CASES])
def test_instrumented_corpus_behaves_the_same(case):
    # Two function objects from one definition: one stays original.
    original = case_namespace(case)[case.target]
    patched = case_namespace(case)[case.target]
    assert original.__code__ is patched.__code__
    expected = case.drive(original)
    fastpatch.instrument(patched)
    try:
        assert patched.__code__ is not original.__code__
        assert case.drive(patched) == expected
        s = fastpatch.stats(patched)
        assert (s.calls, s.completed, s.errors) == (case.calls, case.calls, case.errors)
        # other function objects of the definition are untouched and uncounted
        # (a fresh one: the closure case keeps state between drives)
        other = case_namespace(case)[case.target]
        assert other.__code__ is original.__code__
        assert case.drive(other) == expected
        s = fastpatch.stats(patched)
        assert (s.calls, s.completed, s.errors) == (case.calls, case.calls, case.errors)
    finally:
        fastpatch.uninstrument(patched)
    assert patched.__code__ is original.__code__


@pytest.mark.parametrize("module", STDLIB_MODULES)
def test_every_code_object_of_a_big_stdlib_module_splices_preserving_everything(module):
    codes = stdlib_codes(module)
    assert len(codes) > 20
    probe = object()
    n_returns_total = 0
    for code in codes:
        new = _splice.splice(code, probe)
        n = View(new)
        offsets = {i.offset for i in dis.get_instructions(new)}
        # every jump and handler lands on an instruction boundary
        for i in dis.get_instructions(new):
            if i.opcode in JUMP_OPS:
                assert i.argval in offsets, (code, i)
        if PY >= (3, 11):
            for e in dis._parse_exception_table(new):
                assert e.start in offsets and e.target in offsets and (e.end in offsets or e.end == len(new.co_code))
        # exactly one exit more per return, and one entry
        o = View(code)
        old_ops = [i.opname for i in o.instrs]
        old_sigs, new_sigs = o.sigs(), n.sigs()
        returns = old_ops.count("RETURN_VALUE") + old_ops.count("RETURN_CONST")
        n_returns_total += returns
        assert count_sequence(new_sigs, EXIT_SIGS) == count_sequence(old_sigs, EXIT_SIGS) + returns
        assert count_sequence(new_sigs, ENTRY_SIGS) == count_sequence(old_sigs, ENTRY_SIGS) + 1
        assert "RETURN_CONST" not in [i.opname for i in n.instrs]
        # and the full per-instruction comparison with the original
        check_against_original(code, new, probe)
    assert n_returns_total > len(codes)
