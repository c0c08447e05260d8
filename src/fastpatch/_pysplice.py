"""The splicer in Python: the reference the C splicer (``_csplice.c``) is
held to, byte for byte, and what runs where the C one was not built.
``_splice.py`` says what a splice does and why; this module does it.
Imported only when used: processes with the C splicer never load it.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

from ._errors import SpliceError
from ._recipes import ABSOLUTE, FORWARD, Dialect, current

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Dict, Iterator, List, Tuple


def _ext_needed(arg: int) -> int:
    n = 0
    while arg > 0xFF:
        arg >>= 8
        n += 1
    return n


# Which side of its boundary an insertion belongs to.
_AFTER_PREVIOUS = 0  # a RETURN_CONST's tail: part of the instruction before the boundary
_ENTRY = 1  # the entry: its own, runs before the instruction after it
_BEFORE_NEXT = 2  # a return's prefix or a jump's new EXTENDED_ARGs: part of the instruction after it


class _Insertion:
    __slots__ = ("at", "side", "units", "content")

    def __init__(self, at: int, side: int, units: int, content: bytes) -> None:
        self.at = at  # code unit boundary in the original code
        self.side = side
        self.units = units
        self.content = content


class _Jump:
    __slots__ = ("start", "op_unit", "kind", "target")

    def __init__(self, start: int, op_unit: int, kind: int, target: int) -> None:
        self.start = start  # first unit of the instruction, EXTENDED_ARG prefixes included
        self.op_unit = op_unit
        self.kind = kind
        self.target = target  # code unit the jump lands on, in the original code


_marks: Dict[Tuple[int, int], bytes] = {}


def _interesting(d: Dialect, ops: bytes) -> Iterator[int]:
    """Code units whose opcode is a jump or a return."""
    table = _marks.get(d.version)
    if table is None:
        wanted = {op for op in range(256) if d.jumps[op]} | {d.return_value}
        if d.return_const is not None:
            wanted.add(d.return_const)
        table = _marks[d.version] = bytes(1 if op in wanted else 0 for op in range(256))
    marks = ops.translate(table)
    i = marks.find(1)
    while i >= 0:
        yield i
        i = marks.find(1, i + 1)


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

    def _split(self, b: int) -> Tuple[int, int]:
        """(units inserted before boundary b, index of b's own insertions or -1)."""
        i = bisect_right(self._at, b)
        if i and self._at[i - 1] == b:
            return b + self._before[i - 1], i - 1
        return b + self._before[i], -1

    def target(self, b: int) -> int:
        """A jump or handler target: after the entry, on a return's prefix."""
        pos, i = self._split(b)
        return pos if i < 0 else pos + self._prev[i] + self._entry[i]

    def boundary(self, b: int) -> int:
        """A range boundary (line tables, range ends): before what belongs to the next instruction."""
        pos, i = self._split(b)
        return pos if i < 0 else pos + self._prev[i]

    def own(self, b: int) -> int:
        """The original instruction starting at b: after everything inserted at b."""
        pos, i = self._split(b)
        return pos if i < 0 else pos + self._all[i]


def _function_start(d: Dialect, ops: bytes, args: bytes) -> int:
    """The code unit of the RESUME where the function itself starts (its
    argument, masked, is 0), or -1."""
    i = ops.find(bytes((d.entry_before,)))  # type: ignore[arg-type]
    while i >= 0 and args[i] & d.entry_before_mask:
        i = ops.find(bytes((d.entry_before,)), i + 1)  # type: ignore[arg-type]
    return i


def _insertion_order(ins: _Insertion) -> Tuple[int, int]:
    return (ins.at, ins.side)


def splice_in_python(code: CodeType, probe: object, trailer: Tuple[object, ...] = ()) -> CodeType:
    """``_splice.splice``, in Python: the reference for the C splicer."""
    d = current()
    raw = code.co_code
    n = len(raw) // 2
    ops = raw[0::2]
    args = raw[1::2]
    caches = d.caches
    ext_op = d.extended_arg

    entry_tail = d.entry_tail
    if d.entry_before is not None:
        entry_at = _function_start(d, ops, args)
        if entry_at < 0:
            raise SpliceError("code object has no RESUME instruction")
        first = ops.find(bytes((d.entry_before,)))
        if d.genexpr_start is not None and args[first] & d.entry_before_mask == d.genexpr_start:
            entry_tail = d.stacked_entry_tail
    elif d.generator_start is not None and n and ops[0] == d.generator_start:
        entry_at = 0  # before GEN_START: the token goes under the first send
        entry_tail = d.stacked_entry_tail
    else:
        entry_at = 0
    if entry_at >= n:
        raise SpliceError("code object has no body after its prologue")

    consts = code.co_consts
    probe_index = len(consts)
    entry = _with_arg(ext_op, d.load_const, probe_index) + entry_tail
    base: List[_Insertion] = [_Insertion(entry_at, _ENTRY, len(entry) // 2, entry)]
    jumps: List[_Jump] = []
    buf = bytearray(raw)
    exit_code = d.exit
    const_tail = exit_code + d.return_value_code
    unit = d.jump_unit

    for i in _interesting(d, ops):
        op = ops[i]
        start = i
        while start and ops[start - 1] == ext_op:
            start -= 1
        if op == d.return_value:
            base.append(_Insertion(start, _BEFORE_NEXT, len(exit_code) // 2, exit_code))
        elif op == d.return_const:
            buf[2 * i] = d.load_const  # same argument: the constant to return
            base.append(_Insertion(i + 1, _AFTER_PREVIOUS, len(const_tail) // 2, const_tail))
        else:
            arg = 0
            for j in range(start, i + 1):
                arg = (arg << 8) | args[j]
            a = arg // unit
            kind = d.jumps[op]
            nxt = i + 1 + caches[op]
            target = a if kind == ABSOLUTE else nxt + a if kind == FORWARD else nxt - a
            if not 0 <= target < n or ops[target] == 0 or (target and ops[target - 1] == ext_op):
                raise SpliceError(f"jump at code unit {i} lands inside an instruction")
            jumps.append(_Jump(start, i, kind, target))

    # Lay out until every jump argument fits its EXTENDED_ARG prefixes;
    # grown[start] counts the EXTENDED_ARG units inserted before a jump.
    grown: Dict[int, int] = {}
    while True:
        insertions = base + [_Insertion(start, _BEFORE_NEXT, extra, b"") for start, extra in grown.items()]
        insertions.sort(key=_insertion_order)
        offsets = _OffsetMap(insertions)
        new_args = []
        more = []
        for jmp in jumps:
            ext = jmp.op_unit - jmp.start + grown.get(jmp.start, 0)
            dest = offsets.target(jmp.target)
            nxt = offsets.own(jmp.start) + (jmp.op_unit - jmp.start) + 1 + caches[ops[jmp.op_unit]]
            a = dest if jmp.kind == ABSOLUTE else dest - nxt if jmp.kind == FORWARD else nxt - dest
            if a < 0:
                raise SpliceError(f"jump at code unit {jmp.op_unit} changed direction")
            a *= unit
            need = _ext_needed(a)
            if need > ext:
                more.append((jmp.start, need - ext))
            new_args.append(a)
        if not more:
            break
        for start, extra in more:
            grown[start] = grown.get(start, 0) + extra

    # Write jump arguments: the low bytes into the original prefix and
    # opcode units, the high bytes into the inserted EXTENDED_ARGs.
    grown_content: Dict[int, bytes] = {}
    for jmp, a in zip(jumps, new_args):
        own_ext = jmp.op_unit - jmp.start
        for k in range(own_ext + 1):
            buf[2 * (jmp.op_unit - k) + 1] = (a >> (8 * k)) & 0xFF
        extra = grown.get(jmp.start, 0)
        if extra:
            grown_content[jmp.start] = b"".join(
                bytes((ext_op, (a >> (8 * k)) & 0xFF)) for k in range(own_ext + extra, own_ext, -1)
            )
    out = bytearray()
    prev = 0
    for ins in insertions:
        out += buf[2 * prev : 2 * ins.at]
        out += ins.content if ins.content else grown_content[ins.at]
        prev = ins.at
    out += buf[2 * prev :]

    replace: Dict[str, object] = {
        "co_code": bytes(out),
        "co_consts": consts + (probe,) + trailer,
        "co_stacksize": max(code.co_stacksize + 1, 2),
    }
    if d.line_table == "locations":
        replace["co_linetable"] = _lengthen_entries(
            code.co_linetable, insertions, locations=True, entry_unlocated=not d.entry_has_line
        )
    elif d.line_table == "linetable":
        replace["co_linetable"] = _lengthen_entries(
            code.co_linetable, insertions, locations=False, entry_unlocated=not d.entry_has_line
        )
    else:
        replace["co_lnotab"] = _lnotab_39(code, offsets)
    if d.has_exception_table:
        hole_start = offsets.boundary(entry_at)
        hole_end = hole_start + len(entry) // 2
        replace["co_exceptiontable"] = _exception_table(code.co_exceptiontable, offsets, hole_start, hole_end)  # type: ignore[attr-defined, unused-ignore]
    return code.replace(**replace)  # type: ignore[arg-type]


def _with_arg(ext_op: int, op: int, arg: int) -> bytes:
    """Code units of ``op arg``, with as many EXTENDED_ARG prefixes as it needs."""
    out = bytearray()
    for k in range(_ext_needed(arg), 0, -1):
        out += bytes((ext_op, (arg >> (8 * k)) & 0xFF))
    out += bytes((op, arg & 0xFF))
    return bytes(out)


# --------------------------------------------------------------------------
# Line tables. An insertion lengthens the entry that covers the instruction
# it belongs to, so the inserted units share that instruction's location.
# --------------------------------------------------------------------------


# Code units covered by an entry, per byte of a 3.11+ location table: every
# entry starts with a byte that has bit 7 set and covers (byte & 7) + 1 units;
# payload bytes never have bit 7 set.
_LOCATION_UNITS = bytes(((b & 7) + 1) if b & 0x80 else 0 for b in range(256))


def _lengthen_entries(table: bytes, insertions: List[_Insertion], locations: bool, entry_unlocated: bool) -> bytes:
    """Lengthen the entries covering each insertion's instruction by its units.

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


def _lnotab_39(code: CodeType, offsets: _OffsetMap) -> bytes:
    """3.9 lnotab: line changes (boundaries where the line delta is non-zero)."""
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


def _exception_table(table: bytes, offsets: _OffsetMap, hole_start: int, hole_end: int) -> bytes:
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
