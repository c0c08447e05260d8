"""The rules of the debugger-jump guard (``_jumps.c``) that need a code
object's stack depths or line table. Called only when a debugger sets
``frame.f_lineno`` in instrumented code, so ``dis`` is imported lazily.
What the prologue looks like comes from the running dialect (the recipe's
``Prologue``), as in the splicers."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Dict, Optional, Tuple

_depths: Tuple[Optional[CodeType], Dict[int, int]] = (None, {})


def expected_depth(code: CodeType, unit: int) -> Optional[int]:
    """3.9/3.10: the value-stack depth code unit ``unit`` of ``code`` runs
    with, the token included, or None if no path reaches it."""
    global _depths
    cached, depths = _depths
    if cached is not code:
        depths = _stack_depths(code)
        _depths = (code, depths)
    return depths.get(unit)


def _stack_depths(code: CodeType) -> Dict[int, int]:
    import dis

    instrs = [i for i in dis.get_instructions(code)]
    index = {ins.offset: k for k, ins in enumerate(instrs)}
    depth = {0: _values_left_by_prologue(code)}
    work = [0]
    step = 2  # bytes per code unit
    while work:
        offset = work.pop()
        k = index[offset]
        ins = instrs[k]
        here = depth[offset]
        following = instrs[k + 1].offset if k + 1 < len(instrs) else None
        successors = []
        if ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs:
            successors.append((ins.argval, here + dis.stack_effect(ins.opcode, ins.arg, jump=True)))
            if ins.opname not in ("JUMP_FORWARD", "JUMP_ABSOLUTE"):
                successors.append((following, here + dis.stack_effect(ins.opcode, ins.arg, jump=False)))
        elif ins.opname not in ("RETURN_VALUE", "RAISE_VARARGS", "RERAISE"):
            arg = ins.arg if ins.opcode >= dis.HAVE_ARGUMENT else None
            successors.append((following, here + dis.stack_effect(ins.opcode, arg)))
        for target, target_depth in successors:
            if target is not None and target not in depth:
                depth[target] = target_depth
                work.append(target)
    return {offset // step: d for offset, d in depth.items()}


def _values_left_by_prologue(code: CodeType) -> int:
    """3.9/3.10: the values on the stack when spliced ``code`` starts, which
    its entry puts the token under (3.10: a generator's first send, which the
    GEN_START after the entry pops), as the dialect's prologue says."""
    from ._recipes import running_dialect

    d = running_dialect()
    if d.stacked_marker is None:
        return 0
    raw = code.co_code
    marker = raw[0::2].find(bytes((d.stacked_marker,)))
    return d.stacked_values if marker >= 0 and raw[2 * marker + 1] & d.where_mask == d.stacked_where else 0


def prologue_refusal(code: CodeType, lineno: object) -> Optional[str]:
    """3.11+: why a jump to ``lineno`` in an instrumented generator or
    coroutine must be refused (CPython would land it before RESUME, on
    RETURN_GENERATOR), or None."""
    if not isinstance(lineno, int) or isinstance(lineno, bool):
        return None  # CPython's own setter reports the wrong type
    from ._pysplice import find_entry
    from ._recipes import running_dialect

    raw = code.co_code
    first_resume = 2 * find_entry(running_dialect(), raw[0::2], raw[1::2])[0]
    # CPython jumps to the first instruction of the first line at or after lineno.
    starts = [(start, line) for start, _end, line in code.co_lines() if line is not None and line >= lineno]
    if not starts:
        return None
    target_line = min(line for _start, line in starts)
    if min(start for start, line in starts if line == target_line) < first_resume:
        return f"can't jump to line {lineno}: it starts before the generator or coroutine does"
    return None


__all__ = ["expected_depth", "prologue_refusal"]
