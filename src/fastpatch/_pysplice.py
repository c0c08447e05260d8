"""The splicer in Python: the reference the C splicer (``_csplice*.c``) is
held to, byte for byte, and what runs where the C one was not built.
``_splice.py`` says what a splice does and why; this module does it.
Imported only when used: processes with the C splicer never load it.

A splice runs in six phases, with the same names here and in C
(``_csplice_phases.c``):

1. ``find_entry``: the code unit where an activation starts, and whether the
   prologue has left values on the stack there (the dialect's prologue);
2. ``scan_returns_and_jumps``: the insertion before each return, and every
   jump with the code unit it lands on;
3. ``lay_out_until_jumps_fit``: where every original unit lands, again
   while a jump's new argument needs more EXTENDED_ARG prefixes than it has;
4. ``write_jump_arguments``: each jump's new argument, in its own units and
   the prefixes added before it;
5. ``emit``: the spliced code units;
6. ``rewrite_tables``: the line table and the exception table.

Each language has one jump decode and encode (``_jump_target``,
``_jump_argument``) and one writer of EXTENDED_ARG prefixes
(``_instruction``).
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

from ._errors import SpliceError
from ._recipes import ABSOLUTE, FORWARD, Dialect, running_dialect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Dict, Iterator, List, Optional, Tuple


# Which side of its boundary an insertion belongs to.
_AFTER_PREVIOUS = 0  # a RETURN_CONST's tail: part of the instruction before the boundary
_ENTRY = 1  # the entry: its own, runs before the instruction after it
_BEFORE_NEXT = 2  # a return's prefix or a jump's added EXTENDED_ARGs: part of the instruction after it


class _Jump:
    __slots__ = ("start", "op_unit", "kind", "target", "added", "arg", "added_code")

    def __init__(self, start: int, op_unit: int, kind: int, target: int) -> None:
        self.start = start  # first unit of the instruction, EXTENDED_ARG prefixes included
        self.op_unit = op_unit
        self.kind = kind
        self.target = target  # code unit the jump lands on, in the original code
        self.added = 0  # EXTENDED_ARG prefixes added before it
        self.arg = 0  # its new argument, once laid out
        self.added_code = b""  # the code units of the added prefixes, once written


class _Insertion:
    __slots__ = ("at", "side", "units", "content", "jump")

    def __init__(self, at: int, side: int, content: bytes, jump: Optional[_Jump] = None) -> None:
        self.at = at  # code unit boundary in the original code
        self.side = side
        self.content = content
        # A jump's added prefixes: their content is known once the layout is.
        self.jump = jump
        self.units = jump.added if jump is not None else len(content) // 2


def _insertion_order(ins: _Insertion) -> Tuple[int, int]:
    return (ins.at, ins.side)


# --------------------------------------------------------------------------
# Instructions: one writer of EXTENDED_ARG prefixes, one jump decode and encode
# --------------------------------------------------------------------------


def _prefixes_for(arg: int) -> int:
    """How many EXTENDED_ARG prefixes an instruction with argument ``arg`` needs."""
    n = 0
    while arg > 0xFF:
        arg >>= 8
        n += 1
    return n


def _instruction(d: Dialect, op: int, arg: int, prefixes: int) -> bytes:
    """The code units of ``op arg`` behind ``prefixes`` EXTENDED_ARGs, which
    hold the bytes of ``arg`` above its lowest (those beyond are dropped)."""
    out = bytearray()
    for k in range(prefixes, 0, -1):
        out += bytes((d.extended_arg, (arg >> (8 * k)) & 0xFF))
    out += bytes((op, arg & 0xFF))
    return bytes(out)


def _argument(args: bytes, start: int, op_unit: int) -> int:
    """The argument of the instruction at ``op_unit``, with its EXTENDED_ARG prefixes from ``start``."""
    arg = 0
    for j in range(start, op_unit + 1):
        arg = (arg << 8) | args[j]
    return arg


def _jump_target(d: Dialect, kind: int, next_unit: int, arg: int) -> int:
    """The code unit a jump of ``kind`` with argument ``arg`` lands on, the
    instruction after it starting at ``next_unit``."""
    a = arg // d.jump_unit
    return a if kind == ABSOLUTE else next_unit + a if kind == FORWARD else next_unit - a


def _jump_argument(d: Dialect, kind: int, next_unit: int, target: int) -> int:
    """The argument of a jump of ``kind`` to ``target``, the instruction after
    it starting at ``next_unit``: negative where the jump would have to change
    direction."""
    a = target if kind == ABSOLUTE else target - next_unit if kind == FORWARD else next_unit - target
    return a * d.jump_unit


class _OffsetMap:
    """Where original code-unit boundaries land once insertions are made."""

    __slots__ = ("_at", "_before", "_prev", "_entry", "_all")

    def __init__(self, insertions: List[_Insertion]) -> None:
        self._at: List[int] = []
        self._before: List[int] = [0]  # units inserted strictly before self._at[i]
        self._prev: List[int] = []
        self._entry: List[int] = []
        self._all: List[int] = []
        for ins in insertions:
            if not self._at or self._at[-1] != ins.at:
                self._at.append(ins.at)
                self._before.append(self._before[-1])
                self._prev.append(0)
                self._entry.append(0)
                self._all.append(0)
            self._before[-1] += ins.units
            self._all[-1] += ins.units
            if ins.side == _AFTER_PREVIOUS:
                self._prev[-1] += ins.units
            elif ins.side == _ENTRY:
                self._entry[-1] += ins.units

    def _position_and_group(self, b: int) -> Tuple[int, int]:
        """(where boundary b's own insertions start, the index of its group of
        insertions or -1 if it has none)."""
        i = bisect_right(self._at, b)
        if i and self._at[i - 1] == b:
            return b + self._before[i - 1], i - 1
        return b + self._before[i], -1

    def target(self, b: int) -> int:
        """A jump or handler target: after the entry, on a return's prefix."""
        pos, i = self._position_and_group(b)
        return pos if i < 0 else pos + self._prev[i] + self._entry[i]

    def boundary(self, b: int) -> int:
        """A range boundary (line tables, range ends): before what belongs to the next instruction."""
        pos, i = self._position_and_group(b)
        return pos if i < 0 else pos + self._prev[i]

    def own(self, b: int) -> int:
        """The original instruction starting at b: after everything inserted at b."""
        pos, i = self._position_and_group(b)
        return pos if i < 0 else pos + self._all[i]


# --------------------------------------------------------------------------
# The splice, phase by phase
# --------------------------------------------------------------------------


def splice_in_python(code: CodeType, probe: object, trailer: Tuple[object, ...] = ()) -> CodeType:
    """``_splice.splice``, in Python: the reference for the C splicer."""
    d = running_dialect()
    raw = code.co_code
    ops = raw[0::2]
    consts = code.co_consts
    entry_at, stacked = find_entry(d, ops, raw[1::2])
    if entry_at >= len(ops):
        raise SpliceError("code object has no body after its prologue")
    entry = _Insertion(entry_at, _ENTRY, _entry_code(d, len(consts), stacked))
    units = bytearray(raw)  # the original code units, as the spliced code has them
    fixed, jumps = scan_returns_and_jumps(d, raw, entry, units)
    insertions, offsets = lay_out_until_jumps_fit(d, ops, fixed, jumps)
    write_jump_arguments(d, units, jumps, insertions)
    tables = rewrite_tables(d, code, insertions, offsets, entry)
    return code.replace(
        co_code=emit(units, insertions),
        co_consts=consts + (probe,) + trailer,
        co_stacksize=max(code.co_stacksize + 1, 2),
        **tables,  # type: ignore[arg-type]
    )


def find_entry(d: Dialect, ops: bytes, args: bytes) -> Tuple[int, bool]:
    """(the code unit the entry goes before, whether the prologue has left
    values on the stack there), as the dialect's prologue says. SpliceError
    where the code has no unit the entry could go before."""
    entry_at = 0
    if d.entry_before is not None:
        start = bytes((d.entry_before,))
        entry_at = ops.find(start)
        while entry_at >= 0 and args[entry_at] & d.where_mask:
            entry_at = ops.find(start, entry_at + 1)
        if entry_at < 0:
            raise SpliceError("code object has no RESUME instruction")
    stacked = False
    if d.stacked_marker is not None:
        marker = ops.find(bytes((d.stacked_marker,)), 0, entry_at + 1)
        stacked = marker >= 0 and args[marker] & d.where_mask == d.stacked_where
    return entry_at, stacked


def _entry_code(d: Dialect, probe_index: int, stacked: bool) -> bytes:
    """The entry: ``LOAD_CONST <probe>`` and the recipe's tail, which puts the
    token under what the prologue left on the stack where it did."""
    load_probe = _instruction(d, d.load_const, probe_index, _prefixes_for(probe_index))
    return load_probe + (d.stacked_entry_tail if stacked else d.entry_tail)


_return_or_jump_marks: Dict[Tuple[int, int], bytes] = {}


def _returns_and_jumps(d: Dialect, ops: bytes) -> Iterator[int]:
    """The code units whose opcode is a return or a jump."""
    table = _return_or_jump_marks.get(d.version)
    if table is None:
        wanted = {op for op in range(256) if d.jumps[op]} | {d.return_value}
        if d.return_const is not None:
            wanted.add(d.return_const)
        table = _return_or_jump_marks[d.version] = bytes(1 if op in wanted else 0 for op in range(256))
    marks = ops.translate(table)
    i = marks.find(1)
    while i >= 0:
        yield i
        i = marks.find(1, i + 1)


def scan_returns_and_jumps(
    d: Dialect, raw: bytes, entry: _Insertion, units: bytearray
) -> Tuple[List[_Insertion], List[_Jump]]:
    """(the insertions whose size is fixed: the entry and one at each return,
    the jumps with the units they land on); each RETURN_CONST of ``raw``
    becomes a LOAD_CONST in ``units``. SpliceError for a jump that lands
    inside an instruction."""
    ops, args = raw[0::2], raw[1::2]
    n = len(ops)
    ext_op = d.extended_arg
    return_tail = d.exit_code + d.return_value_code
    fixed = [entry]
    jumps: List[_Jump] = []
    for i in _returns_and_jumps(d, ops):
        op = ops[i]
        start = i
        while start and ops[start - 1] == ext_op:
            start -= 1
        if op == d.return_value:
            fixed.append(_Insertion(start, _BEFORE_NEXT, d.exit_code))
        elif op == d.return_const:
            units[2 * i] = d.load_const  # same argument: the constant to return
            fixed.append(_Insertion(i + 1, _AFTER_PREVIOUS, return_tail))
        else:
            kind = d.jumps[op]
            target = _jump_target(d, kind, i + 1 + d.caches[op], _argument(args, start, i))
            if not 0 <= target < n or ops[target] == 0 or (target and ops[target - 1] == ext_op):
                raise SpliceError(f"jump at code unit {i} lands inside an instruction")
            jumps.append(_Jump(start, i, kind, target))
    return fixed, jumps


def lay_out_until_jumps_fit(
    d: Dialect, ops: bytes, fixed: List[_Insertion], jumps: List[_Jump]
) -> Tuple[List[_Insertion], _OffsetMap]:
    """(every insertion in order, the offset map they make), once each jump's
    new argument fits its EXTENDED_ARG prefixes: each round adds the prefixes
    the last one found missing, which moves everything again. Sets each
    jump's ``added`` and ``arg``; SpliceError for a jump whose target would
    have moved to its other side."""
    while True:
        insertions = fixed + [_Insertion(j.start, _BEFORE_NEXT, b"", j) for j in jumps if j.added]
        insertions.sort(key=_insertion_order)
        offsets = _OffsetMap(insertions)
        grew = False
        for jmp in jumps:
            own = jmp.op_unit - jmp.start
            next_unit = offsets.own(jmp.start) + own + 1 + d.caches[ops[jmp.op_unit]]
            arg = _jump_argument(d, jmp.kind, next_unit, offsets.target(jmp.target))
            if arg < 0:
                raise SpliceError(f"jump at code unit {jmp.op_unit} changed direction")
            need = _prefixes_for(arg)
            if need > own + jmp.added:
                jmp.added = need - own
                grew = True
            jmp.arg = arg
        if not grew:
            return insertions, offsets


def write_jump_arguments(d: Dialect, units: bytearray, jumps: List[_Jump], insertions: List[_Insertion]) -> None:
    """Write each jump whole, with its new argument: its own units in
    ``units``, its added prefixes as the content of the insertion that holds
    them (the highest bytes of the argument)."""
    for jmp in jumps:
        own = jmp.op_unit - jmp.start
        code = _instruction(d, units[2 * jmp.op_unit], jmp.arg, own + jmp.added)
        jmp.added_code = code[: 2 * jmp.added]
        units[2 * jmp.start : 2 * jmp.op_unit + 2] = code[2 * jmp.added :]
    for ins in insertions:
        if ins.jump is not None:
            ins.content = ins.jump.added_code


def emit(units: bytearray, insertions: List[_Insertion]) -> bytes:
    """The spliced code units: the original ones, with each insertion's content at its boundary."""
    out = bytearray()
    prev = 0
    for ins in insertions:
        out += units[2 * prev : 2 * ins.at]
        out += ins.content
        prev = ins.at
    out += units[2 * prev :]
    return bytes(out)


def rewrite_tables(
    d: Dialect, code: CodeType, insertions: List[_Insertion], offsets: _OffsetMap, entry: _Insertion
) -> Dict[str, bytes]:
    """The spliced code's line table and (3.11+) exception table, as ``code.replace()`` arguments."""
    tables: Dict[str, bytes] = {}
    if d.line_table == "lnotab":
        tables["co_lnotab"] = _moved_lnotab(code, offsets)
    else:
        tables["co_linetable"] = _lengthened_line_table(
            code.co_linetable, insertions, locations=d.line_table == "locations", entry_unlocated=not d.entry_has_line
        )
    if d.has_exception_table:
        hole_start = offsets.boundary(entry.at)
        tables["co_exceptiontable"] = _moved_exception_table(
            code.co_exceptiontable, offsets, hole_start, hole_start + entry.units  # type: ignore[attr-defined, unused-ignore]
        )
    return tables


# --------------------------------------------------------------------------
# Line tables. An insertion lengthens the entry that covers the instruction
# it belongs to, so the inserted units share that instruction's location.
# --------------------------------------------------------------------------


# Code units covered by an entry, per byte of a 3.11+ location table: every
# entry starts with a byte that has bit 7 set and covers (byte & 7) + 1 units;
# payload bytes never have bit 7 set.
_LOCATION_UNITS = bytes(((b & 7) + 1) if b & 0x80 else 0 for b in range(256))


def _lengthened_line_table(
    table: bytes, insertions: List[_Insertion], locations: bool, entry_unlocated: bool
) -> bytes:
    """The 3.10+ line table with the entries covering each insertion's
    instruction lengthened by its units.

    With ``entry_unlocated`` the entry instead gets an entry of its own with
    no line (3.10) or no location (3.11+), splitting the entry it falls in
    when it does not start one.
    """
    if locations:
        covered = list(accumulate(table.translate(_LOCATION_UNITS)))  # units up to and including entry k
        step = 1
    else:  # 3.10: (byte delta, line delta) pairs
        covered = [c // 2 for c in accumulate(table[0::2])]
        step = 2
    extra: Dict[int, int] = {}
    split: Dict[int, Tuple[int, int]] = {}  # entry k -> (its units before the entry, the entry's units)
    for ins in insertions:
        owner_unit = ins.at - 1 if ins.side == _AFTER_PREVIOUS else ins.at
        k = bisect_right(covered, owner_unit)  # the entry whose range holds owner_unit
        if k >= len(covered):
            raise SpliceError(f"no line table entry covers code unit {owner_unit}")
        if ins.side == _ENTRY and entry_unlocated:
            j = k * step
            units = (table[j] & 7) + 1 if locations else table[j] // 2
            split[k] = (ins.at - (covered[k] - units), ins.units)
            extra.setdefault(k, 0)
        else:
            extra[k] = extra.get(k, 0) + ins.units
    out = bytearray()
    prev = 0
    for k in sorted(extra):
        j = k * step
        if locations:
            end = j + 1
            while end < len(table) and not table[end] & 0x80:
                end += 1
            units = (table[j] & 7) + 1
        else:
            end = j + 2
            units = table[j] // 2
        out += table[prev:j]
        before, unlocated = split.get(k, (0, 0))
        if unlocated:
            if before:
                _write_entry(out, table[j:end], before, locations, repeat=False)
            _write_entry(out, _NO_LOCATION if locations else _NO_LINE, unlocated, locations, repeat=False)
        _write_entry(out, table[j:end], units - before + extra[k], locations, repeat=before > 0)
        prev = end
    out += table[prev:]
    return bytes(out)


# An entry with no location (3.11+: code 15) and a 3.10 range with no line (-128).
_NO_LOCATION = bytes((0x80 | (15 << 3),))
_NO_LINE = b"\x00\x80"


def _write_entry(out: bytearray, entry: bytes, units: int, locations: bool, repeat: bool) -> None:
    """Write ``entry`` (one location entry, or one 3.10 pair) again, covering
    ``units`` code units; ``repeat``: as "the same location again" after an
    entry that did not change the line, as the continuation of ``entry``."""
    if locations:
        _write_location_entry(out, entry, units, repeat)
    else:
        ldelta = entry[1]
        if repeat:
            ldelta = 0x80 if ldelta == 0x80 else 0
        _write_linetable_310_entry(out, ldelta, units)


def _write_location_entry(out: bytearray, entry: bytes, units: int, repeat: bool = False) -> None:
    """Write one 3.11+ location entry covering ``units`` code units (split
    into entries of at most 8; the repeats encode "same location again")."""
    code = (entry[0] >> 3) & 15
    payload = entry[1:]
    repeat_payload = payload
    if 10 <= code <= 12:  # one-line form: its code carries a line delta
        repeat_code = 10
    else:
        repeat_code = code
        if code in (13, 14):  # the first varint is the line delta: repeat with 0
            j = 0
            while payload[j] & 64:
                j += 1
            repeat_payload = b"\x00" + payload[j + 1 :]
    first = not repeat
    while units > 0:
        chunk = min(units, 8)
        units -= chunk
        if first:
            out.append(0x80 | (code << 3) | (chunk - 1))
            out += payload
            first = False
        else:
            out.append(0x80 | (repeat_code << 3) | (chunk - 1))
            out += repeat_payload


def _write_linetable_310_entry(out: bytearray, ldelta: int, units: int) -> None:
    """Write one 3.10 linetable range covering ``units`` code units."""
    remaining = 2 * units
    while remaining > 254:
        out += bytes((254, ldelta))
        ldelta = 0x80 if ldelta == 0x80 else 0  # continuation: same line, or still none
        remaining -= 254
    out += bytes((remaining, ldelta))


def _moved_lnotab(code: CodeType, offsets: _OffsetMap) -> bytes:
    """The 3.9 lnotab with each line change (a boundary where the line delta
    is not zero) moved through the offset map."""
    table = code.co_lnotab
    changes: List[Tuple[int, int]] = []
    addr, line = 0, code.co_firstlineno
    for j in range(0, len(table) - 1, 2):
        addr += table[j]
        ld = table[j + 1]
        if ld:
            line += ld - 256 if ld >= 128 else ld
            if changes and changes[-1][0] == addr:
                changes[-1] = (addr, line)
            else:
                changes.append((addr, line))
    out = bytearray()
    prev_addr, prev_line = 0, code.co_firstlineno
    for addr, line in changes:
        new_addr = 2 * offsets.boundary(addr // 2)
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


def _moved_exception_table(table: bytes, offsets: _OffsetMap, hole_start: int, hole_end: int) -> bytes:
    """The exception table with each range moved through the offset map, none
    covering the entry (``hole_start`` to ``hole_end``), and one more value on
    the stack after it (the token)."""
    out = bytearray()
    for start, end, tgt, depth, lasti in _read_exception_table(table):
        new_start, new_end = offsets.target(start), offsets.boundary(end)
        new_target = offsets.target(tgt)
        # The entry runs before the token exists: no range may cover it.
        if new_start < hole_end and new_end > hole_start:
            pieces = [(s, e) for s, e in ((new_start, hole_start), (hole_end, new_end)) if s < e]
        else:
            pieces = [(new_start, new_end)] if new_start < new_end else []
        for s, e in pieces:
            # A piece in the prologue, such as the 3.12+ generator wrapper's
            # RESUME, runs before the token is pushed: its depth stays.
            dl = ((depth + 1 if s >= hole_end else depth) << 1) | int(lasti)
            _write_exception_varint(out, s, 0x80)
            _write_exception_varint(out, e - s, 0)
            _write_exception_varint(out, new_target, 0)
            _write_exception_varint(out, dl, 0)
    return bytes(out)


__all__ = ["splice_in_python"]
