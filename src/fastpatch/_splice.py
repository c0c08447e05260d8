"""Splice the dialect's entry and exit sequences into a code object.

Disassembling every function with ``bytecode`` would cost many times a
``compile()`` of its source, so the splicer works on the raw code units:
it decodes instructions once, inserts the cached sequences, re-encodes jump
arguments (growing EXTENDED_ARG prefixes until they fit), and rewrites the
line table and exception table for the new offsets. ``tests/test_splice.py``
checks its output against the same transformation done with ``bytecode``.

The transformation, for every dialect:

* the entry (``LOAD_CONST probe; UNARY_INVERT``) goes at the start of the
  body: after the prologue (RESUME on 3.11+, GEN_START on 3.10
  generators), never inside any exception-table range, and jumps to the
  first body instruction still land after it;
* every ``RETURN_VALUE`` gains an ``exit`` prefix (``BINARY_SUBSCR``), and
  every ``RETURN_CONST k`` becomes ``LOAD_CONST k; exit; RETURN_VALUE``;
  jumps to the return land on the prefix;
* the token sits under the function's own stack, so every exception-table
  depth grows by one and ``co_stacksize`` by one.

Injected instructions take the location of the instruction they are
attached to, so tracers see the same lines, and tracebacks keep theirs.
"""

from __future__ import annotations

import dis
from types import CodeType
from typing import Dict, List, Optional, Tuple

from ._recipes import ABSOLUTE, FORWARD, Dialect, current


class SpliceError(ValueError):
    """The code object has a shape the splicer does not recognise."""


def _arg_bytes(ext: int, op: int, arg: int, extended_arg: int) -> bytes:
    """The code units of ``op arg`` with exactly ``ext`` EXTENDED_ARG prefixes."""
    out = bytearray()
    for shift in range(8 * ext, 0, -8):
        out += bytes((extended_arg, (arg >> shift) & 0xFF))
    out += bytes((op, arg & 0xFF))
    return bytes(out)


def _ext_needed(arg: int) -> int:
    if arg < 0:
        raise SpliceError(f"negative instruction argument {arg}")
    n = 0
    while arg > 0xFF:
        arg >>= 8
        n += 1
    return n


class _Decoded:
    """Instruction groups of a code object: EXTENDED_ARG prefixes, opcode
    and inline caches together, addressed in code units."""

    __slots__ = ("starts", "ops", "args", "sizes", "index_of", "n_units")

    def __init__(self, raw: bytes, d: Dialect) -> None:
        caches = d.caches
        ext_op = d.extended_arg
        starts: List[int] = []
        ops: List[int] = []
        args: List[int] = []
        sizes: List[int] = []
        n = len(raw) // 2
        i = 0
        while i < n:
            s = i
            op = raw[2 * i]
            arg = raw[2 * i + 1]
            while op == ext_op:
                i += 1
                if i >= n:
                    raise SpliceError("code ends inside an EXTENDED_ARG prefix")
                op = raw[2 * i]
                arg = (arg << 8) | raw[2 * i + 1]
            i += 1 + caches[op]
            starts.append(s)
            ops.append(op)
            args.append(arg)
            sizes.append(i - s)
        self.starts = starts
        self.ops = ops
        self.args = args
        self.sizes = sizes
        self.n_units = n
        self.index_of: Dict[int, int] = {s: g for g, s in enumerate(starts)}
        self.index_of[n] = len(starts)

    def group_at(self, unit: int, what: str) -> int:
        g = self.index_of.get(unit)
        if g is None:
            raise SpliceError(f"{what} at code unit {unit} is not an instruction boundary")
        return g


def _entry_group(dec: _Decoded, d: Dialect, flags: int) -> int:
    """Index of the first body instruction: the entry goes right before it."""
    ops = dec.ops
    if d.prologue_end is not None:  # 3.11+: after the first RESUME
        for g, op in enumerate(ops):
            if op == d.prologue_end:
                return g + 1
        raise SpliceError("code object has no RESUME instruction")
    if d.gen_start is not None and ops and ops[0] == d.gen_start:  # 3.10 generators
        return 1
    return 0


def splice(code: CodeType, probe: object) -> CodeType:
    """Return a copy of ``code`` that times each activation with ``probe``."""
    d = current()
    raw = code.co_code
    dec = _Decoded(raw, d)
    starts, ops, args, sizes = dec.starts, dec.ops, dec.args, dec.sizes
    n_groups = len(starts)
    caches = d.caches
    jumps = d.jumps
    ext_op = d.extended_arg
    unit = d.jump_unit

    g_entry = _entry_group(dec, d, code.co_flags)
    if g_entry >= n_groups:
        raise SpliceError("code object has no body after its prologue")

    # Jump targets, as group indices.
    target: Dict[int, int] = {}
    for g in range(n_groups):
        kind = jumps[ops[g]]
        if kind:
            a = args[g] // unit if unit != 1 else args[g]
            if kind == ABSOLUTE:
                t = a
            elif kind == FORWARD:
                t = starts[g] + sizes[g] + a
            else:
                t = starts[g] + sizes[g] - a
            target[g] = dec.group_at(t, "jump target")

    consts = code.co_consts
    probe_index = len(consts)
    entry_units = _arg_bytes(_ext_needed(probe_index), d.load_const, probe_index, ext_op) + d.entry_tail
    exit_code = d.exit
    ret_value, ret_const = d.return_value, d.return_const
    ret_value_code = d.return_value_code

    # Units inserted before each group's own instruction, and the
    # own instruction's EXTENDED_ARG count (grown for jumps as needed).
    pre = [0] * n_groups
    ext = [0] * n_groups
    own = [0] * n_groups
    for g in range(n_groups):
        op = ops[g]
        if op == ret_value:
            pre[g] = len(exit_code) // 2
        elif op == ret_const and ret_const is not None:
            # LOAD_CONST k; exit; then RETURN_VALUE stands for the group's own instruction.
            pre[g] = 1 + _ext_needed(args[g]) + len(exit_code) // 2
        if g in target:
            ext[g] = sizes[g] - 1 - caches[op]
        else:
            ext[g] = _ext_needed(args[g])
        own[g] = (1 if op == ret_const else ext[g] + 1 + caches[op])
    hole = len(entry_units) // 2
    pre[g_entry] += hole

    # Lay out until every jump argument fits its EXTENDED_ARG prefixes.
    span_start = [0] * (n_groups + 1)
    new_arg: Dict[int, int] = {}
    while True:
        pos = 0
        for g in range(n_groups):
            span_start[g] = pos
            pos += pre[g] + own[g]
        span_start[n_groups] = pos
        grew = False
        for g, t in target.items():
            dest = span_start[t] + (hole if t == g_entry else 0)
            own_start = span_start[g] + pre[g]
            kind = jumps[ops[g]]
            if kind == ABSOLUTE:
                a = dest
            elif kind == FORWARD:
                a = dest - (own_start + own[g])
            else:
                a = (own_start + own[g]) - dest
            if a < 0:
                raise SpliceError(f"jump direction flipped at code unit {starts[g]}")
            a *= unit
            need = _ext_needed(a)
            if need > ext[g]:
                own[g] += need - ext[g]
                ext[g] = need
                grew = True
            new_arg[g] = a
        if not grew:
            break
    total_units = span_start[n_groups]

    out = bytearray()
    for g in range(n_groups):
        op = ops[g]
        if g == g_entry:
            out += entry_units
        if op == ret_const and ret_const is not None:
            k = args[g]
            out += _arg_bytes(_ext_needed(k), d.load_const, k, ext_op)
            out += exit_code
            out += ret_value_code
            continue
        if op == ret_value:
            out += exit_code
        out += _arg_bytes(ext[g], op, new_arg.get(g, args[g]), ext_op)
        out += b"\x00\x00" * caches[op]
    assert len(out) == 2 * total_units

    hole_start = span_start[g_entry]
    replace: Dict[str, object] = {
        "co_code": bytes(out),
        "co_consts": consts + (probe,),
        "co_stacksize": max(code.co_stacksize + 1, 2),
    }
    if d.line_format == "locations":
        replace["co_linetable"] = _locations_table(code, dec, span_start)
    elif d.line_format == "linetable":
        replace["co_linetable"] = _linetable_310(code, dec, span_start)
    else:
        replace["co_lnotab"] = _lnotab_39(code, dec, span_start)
    if d.has_exception_table:
        replace["co_exceptiontable"] = _exception_table(
            code, dec, span_start, hole_start, hole_start + hole, g_entry
        )
    return code.replace(**replace)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Line tables. Every unit of a group's span (inserted prefix included) gets
# the location of the group's own instruction.
# --------------------------------------------------------------------------


def _lnotab_39(code: CodeType, dec: _Decoded, span_start: List[int]) -> bytes:
    line_starts = list(dis.findlinestarts(code))  # (byte offset, line), line changes only
    out = bytearray()
    prev_addr, prev_line = 0, code.co_firstlineno
    for addr, line in line_starts:
        g = dec.group_at(addr // 2, "line start")
        new_addr = 2 * span_start[g]
        bd, ld = new_addr - prev_addr, line - prev_line
        while bd > 255:
            out += b"\xff\x00"
            bd -= 255
        while ld > 127:
            out += bytes((bd, 127))
            bd, ld = 0, ld - 127
        while ld < -128:
            out += bytes((bd, 0x80))
            bd, ld = 0, ld + 128
        out += bytes((bd, ld & 0xFF))
        prev_addr, prev_line = new_addr, line
    return bytes(out)


def _linetable_310(code: CodeType, dec: _Decoded, span_start: List[int]) -> bytes:
    out = bytearray()
    prev_line = code.co_firstlineno
    for start, end, line in code.co_lines():  # type: ignore[attr-defined, unused-ignore]
        gs = dec.group_at(start // 2, "line range start")
        ge = dec.group_at(end // 2, "line range end")
        bdelta = 2 * (span_start[ge] - span_start[gs])
        if bdelta == 0:
            continue
        if line is None:
            ldelta = -128
        else:
            ldelta = line - prev_line
            prev_line = line
            while ldelta > 127:
                out += b"\x00\x7f"
                ldelta -= 127
            while ldelta < -127:
                out += b"\x00\x81"
                ldelta += 127
        while bdelta > 254:
            out += bytes((254, ldelta & 0xFF))
            ldelta = -128 if line is None else 0
            bdelta -= 254
        out += bytes((bdelta, ldelta & 0xFF))
    return bytes(out)


def _write_varint(out: bytearray, value: int) -> None:
    while value >= 64:
        out.append(64 | (value & 63))
        value >>= 6
    out.append(value)


def _write_svarint(out: bytearray, value: int) -> None:
    _write_varint(out, ((-value) << 1) | 1 if value < 0 else value << 1)


_Location = Tuple[Optional[int], Optional[int], Optional[int], Optional[int]]


def _locations_table(code: CodeType, dec: _Decoded, span_start: List[int]) -> bytes:
    """3.11+ location table (Objects/locations.md), in long and short-free forms."""
    positions = list(code.co_positions())  # type: ignore[attr-defined, unused-ignore]
    caches = current().caches
    runs: List[Tuple[_Location, int]] = []
    for g, s in enumerate(dec.starts):
        op_unit = s + dec.sizes[g] - 1 - caches[dec.ops[g]]
        loc = positions[op_unit]
        length = span_start[g + 1] - span_start[g]
        if runs and runs[-1][0] == loc:
            runs[-1] = (loc, runs[-1][1] + length)
        else:
            runs.append((loc, length))
    out = bytearray()
    prev_line = code.co_firstlineno
    for loc, length in runs:
        line, end_line, col, end_col = loc
        while length > 0:
            chunk = min(length, 8)
            length -= chunk
            if line is None:
                out.append(0x80 | (15 << 3) | (chunk - 1))
                continue
            if col is None and end_col is None and (end_line is None or end_line == line):
                out.append(0x80 | (13 << 3) | (chunk - 1))
                _write_svarint(out, line - prev_line)
            else:
                out.append(0x80 | (14 << 3) | (chunk - 1))
                _write_svarint(out, line - prev_line)
                _write_varint(out, (end_line if end_line is not None else line) - line)
                _write_varint(out, (col if col is not None else -1) + 1)
                _write_varint(out, (end_col if end_col is not None else -1) + 1)
            prev_line = line
    return bytes(out)


# --------------------------------------------------------------------------
# Exception table (3.11+)
# --------------------------------------------------------------------------


def _read_exception_table(table: bytes) -> List[Tuple[int, int, int, int, bool]]:
    """(start, end, target, depth, lasti) per entry, in code units."""
    entries = []
    it = iter(table)

    def varint(first: int) -> int:
        value = first & 63
        b = first
        while b & 64:
            b = next(it)
            value = (value << 6) | (b & 63)
        return value

    for b in it:
        start = varint(b)
        length = varint(next(it))
        target = varint(next(it))
        dl = varint(next(it))
        entries.append((start, start + length, target, dl >> 1, bool(dl & 1)))
    return entries


def _write_exception_varint(out: bytearray, value: int, msb: int) -> None:
    chunks = [value & 63]
    value >>= 6
    while value:
        chunks.append(value & 63)
        value >>= 6
    for i in range(len(chunks) - 1, -1, -1):
        b = chunks[i] | (64 if i else 0)
        if i == len(chunks) - 1:
            b |= msb
        out.append(b)


def _exception_table(
    code: CodeType,
    dec: _Decoded,
    span_start: List[int],
    hole_start: int,
    hole_end: int,
    g_entry: int,
) -> bytes:
    out = bytearray()
    hole = hole_end - hole_start
    for start, end, tgt, depth, lasti in _read_exception_table(code.co_exceptiontable):  # type: ignore[attr-defined, unused-ignore]
        gs = dec.group_at(start, "exception range start")
        ge = dec.group_at(end, "exception range end")
        gt = dec.group_at(tgt, "exception handler")
        new_start, new_end = span_start[gs], span_start[ge]
        new_target = span_start[gt] + (hole if gt == g_entry else 0)
        # The entry code runs before the token exists: no handler may cover it.
        pieces = []
        if new_start < hole_end and new_end > hole_start:
            if new_start < hole_start:
                pieces.append((new_start, hole_start))
            if new_end > hole_end:
                pieces.append((hole_end, new_end))
        else:
            pieces.append((new_start, new_end))
        for s, e in pieces:
            # A range (or piece) in the prologue, such as the 3.12+ generator
            # wrapper's RESUME, runs before the token is pushed: its depth
            # stays. Everything after the entry has the token under it.
            dl = ((depth + 1 if s >= hole_end else depth) << 1) | int(lasti)
            _write_exception_varint(out, s, 0x80)
            _write_exception_varint(out, e - s, 0)
            _write_exception_varint(out, new_target, 0)
            _write_exception_varint(out, dl, 0)
    return bytes(out)
