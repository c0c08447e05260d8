"""The splicer against the same transformation done with the ``bytecode``
package's high-level API (labels, TryBegin/TryEnd pseudo instructions,
computed exception depths and stack size), instruction by instruction."""

from __future__ import annotations

import dis
import types
from typing import Any, List

import pytest
from bytecode import Bytecode, Instr, TryBegin, TryEnd

from fastpatch import _splice
from splice_harness import (
    CORPUS_CODES,
    CORPUS_IDS,
    ENTRY_SIGS,
    EXIT_SIGS,
    PROLOGUE,
    PY,
    RECIPE,
    Layout,
    View,
    count_sequence,
    entry_index,
    stacked,
    takes_arg,
)

try:
    from bytecode.instr import InstrLocation
except ImportError:  # bytecode 0.16 (3.9, 3.10) has line numbers only
    InstrLocation = None


def _instr(name: str, arg: Any, location: Any) -> Instr:
    if PY < (3, 11):  # bytecode 0.16: a line number, None for none
        lineno = location if location is None or isinstance(location, int) else location.lineno
        return Instr(name, arg, lineno=lineno) if takes_arg(name) else Instr(name, lineno=lineno)
    return Instr(name, arg, location=location) if takes_arg(name) else Instr(name, location=location)


def _bytecode_instrument(code: types.CodeType, probe: object) -> types.CodeType:
    bc = Bytecode.from_code(code)
    items = list(bc)
    instr_at = [k for k, it in enumerate(items) if isinstance(it, Instr)]

    # Where the entry goes, as the recipe's prologue says: right before the
    # function's own RESUME (3.11+; before any TryBegin opening there, so no
    # range covers it), else at the start (before a 3.10 generator's GEN_START).
    instrs = [(items[k].name, items[k].arg) for k in instr_at]
    if PROLOGUE.entry_before is not None:
        pos = instr_at[entry_index(instrs)]
        while pos and isinstance(items[pos - 1], TryBegin):
            pos -= 1
    else:
        pos = 0
    # The entry goes *before* any Label of the first body instruction, so
    # jumps there skip it, and before any TryBegin, so no range covers it.
    # It has no location (3.10+), or the first body instruction's line (3.9).
    if RECIPE.entry_has_line:
        loc = next(it for it in items[pos:] if isinstance(it, Instr)).location
    else:
        loc = InstrLocation(None, None, None, None) if PY >= (3, 11) else None
    tail = list(RECIPE.entry)
    if stacked(instrs):
        tail += PROLOGUE.stacked_entry
    entry = [_instr("LOAD_CONST", probe, loc)] + [_instr(name, arg, loc) for name, arg in tail]

    # A range still open here covers the prologue and the body (the 3.12+
    # generator wrapper: RESUME and everything after it go to one handler).
    # The entry runs before the token exists, so no handler may see it; and
    # bytecode gives each *handler* one depth, the smallest level any of its
    # TryBegins is reached at, so keeping the prologue part (level 0, no token
    # yet) would drag the body's depths down with it. So the range starts
    # after the entry here; the test checks the prologue's coverage against
    # the original code instead.
    open_blocks: List[Any] = []
    for it in items[:pos]:
        if isinstance(it, TryBegin):
            open_blocks.append(it)
        elif isinstance(it, TryEnd):
            open_blocks.remove(it.entry)
    prologue = [it for it in items[:pos] if not any(it is tb for tb in open_blocks)]
    new_items = prologue + entry + open_blocks + items[pos:]

    # Returns: the exit right before the RETURN_VALUE (after its Label
    # and TryBegin, so jumps and handlers reach the prefix).
    out: List[Any] = []
    for it in new_items:
        if isinstance(it, Instr) and it.name == "RETURN_VALUE":
            out += [_instr(name, arg, it.location) for name, arg in RECIPE.exit_sequence]
            out.append(it)
        elif isinstance(it, Instr) and it.name == "RETURN_CONST":
            out.append(Instr("LOAD_CONST", it.arg, location=it.location))
            out += [_instr(name, arg, it.location) for name, arg in RECIPE.exit_sequence]
            out.append(Instr("RETURN_VALUE", location=it.location))
        else:
            out.append(it)
    bc.clear()
    bc.extend(out)
    return bc.to_code()


@pytest.mark.parametrize("name,code", CORPUS_CODES, ids=CORPUS_IDS)
def test_splice_matches_bytecode(name, code):
    probe = object()
    got = _splice.splice(code, probe)
    want = _bytecode_instrument(code, probe)
    # bytecode's plain round trip of the original, to tell its own
    # deviations from CPython apart from the splicer's.
    roundtrip = Bytecode.from_code(code).to_code()
    o, g, w, rt = View(code), View(got), View(want), View(roundtrip)
    layout = Layout(o)

    # Instructions and arguments; jumps as target instruction indices. The
    # views drop EXTENDED_ARG prefixes: bytecode re-derives minimal prefixes
    # and numbers co_consts its own way (the probe gets a small index
    # there), while the splicer keeps a jump's original prefixes and
    # appends the probe. Neither changes what any instruction means.
    assert [g.sig(i) for i in range(len(g.instrs))] == [w.sig(i) for i in range(len(w.instrs))]

    # Injected instructions carry the same locations in both: none for the
    # entry (3.10+), the neighbour's for the rest. bytecode 0.16 on 3.10
    # loses every line after a leading instruction without one (the entry,
    # or a genexpr's GEN_START): it is no oracle for lines there, and
    # test_splice_preservation.py checks those codes against the original.
    o_locs = [o.location(i) for i in range(len(o.instrs))]
    if PY == (3, 10):
        pass
    elif [rt.location(i) for i in range(len(rt.instrs))] == o_locs:
        assert [g.location(i) for i in range(len(g.instrs))] == [w.location(i) for i in range(len(w.instrs))]
    else:
        raise AssertionError(f"bytecode's round trip changes the locations of {name}")

    # Exception handling, per instruction: (handler, depth, lasti).
    #
    # bytecode 0.19 gives each *handler* one depth: the smallest stack level
    # found inside any of its TryBegin/TryEnd ranges, counting the level
    # after a range's last instruction. Two consequences, both normalised
    # here explicitly:
    # * where that differs from CPython's compiler on the untouched code
    #   (cleanup ranges that start inside a handler, e.g. COPY 3; POP_EXCEPT;
    #   RERAISE 1 on 3.11, come out 2 higher), we subtract the disagreement
    #   of its round trip, placed with the same layout;
    # * a handler whose ranges include a RETURN_VALUE may get the level
    #   after the return, which is 0 with or without the token (the exit's
    #   exit has consumed it, and RETURN_VALUE pops the value), so
    #   bytecode may see no growth for such a handler. Whether it does depends
    #   on the order its CFG walk reaches the ranges, so for those handlers
    #   (and only those) we accept exactly the two values: one more than
    #   bytecode's, or equal.
    # What remains is bytecode's own account of what the token does to each
    # depth, compared exactly everywhere else.
    o_cover, rt_cover = o.cover(), rt.cover()
    assert [c and c[::2] for c in rt_cover] == [c and c[::2] for c in o_cover]  # same handlers and lasti
    o_placed, rt_placed = layout.cover(o_cover), layout.cover(rt_cover)
    w_cover, g_cover = w.cover(), g.cover()
    assert len(w_cover) == len(o_placed) == len(g_cover)
    returning_handlers = {
        c[0] for c, ins in zip(w_cover, w.instrs) if c is not None and ins.opname == "RETURN_VALUE"
    }
    normalised = []
    for j, (gc, wc, oc, rc) in enumerate(zip(g_cover, w_cover, o_placed, rt_placed)):
        if j < layout.hole_end - 2:
            # the prologue: _bytecode_instrument leaves it uncovered (see there)
            assert wc is None
            normalised.append(oc)
        elif wc is None or oc is None:
            normalised.append(wc)
        else:
            target, depth, lasti = wc
            depth -= rc[1] - oc[1]
            if target in returning_handlers and gc is not None and gc[1] == depth + 1:
                depth += 1
            normalised.append((target, depth, lasti))
    assert g_cover == normalised

    # Stack size: the splicer adds one for the token (and 2 is the least the
    # exit needs). bytecode's estimate inherits its over-estimated handler
    # depths, so we allow for its round-trip excess.
    assert got.co_stacksize == max(code.co_stacksize + 1, 2)
    assert got.co_stacksize >= want.co_stacksize - (roundtrip.co_stacksize - code.co_stacksize)
    assert got.co_consts == code.co_consts + (probe,)
    assert got.co_consts[-1] is probe


def test_bytecode_oracle_sees_the_entry_and_exits():
    """The normalisations above must not hide the injected code itself."""
    code = dict(CORPUS_CODES)["try_except_else_finally:target"]
    probe = object()
    o, w = View(code), View(_bytecode_instrument(code, probe))
    sigs = [w.sig(i) for i in range(len(w.instrs))]
    old_sigs = [o.sig(i) for i in range(len(o.instrs))]
    assert count_sequence(sigs, ENTRY_SIGS) == count_sequence(old_sigs, ENTRY_SIGS) + 1
    n_returns = sum(i.opname in ("RETURN_VALUE", "RETURN_CONST") for i in dis.get_instructions(code))
    assert n_returns >= 2
    assert count_sequence(sigs, EXIT_SIGS) == count_sequence(old_sigs, EXIT_SIGS) + n_returns
    if PY >= (3, 11):
        # every handler of the body sees the token: depths grew by one
        o = View(code)
        assert {c[1] for c in w.cover() if c} != {c[1] for c in o.cover() if c}
