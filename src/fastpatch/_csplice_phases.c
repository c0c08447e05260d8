/*
 * _csplice_phases.c -- the splice of one code object, in the six phases
 * _pysplice.py names, with the same names: find_entry,
 * scan_returns_and_jumps, lay_out_until_jumps_fit, write_jump_arguments,
 * emit and rewrite_tables. The same transformation, code unit for code unit
 * and byte for byte (tests/test_splice_c_vs_python.py holds the two to it
 * over a corpus and whole stdlib modules); read _splice.py for the why of
 * it and _pysplice.py for each phase. The comments here say only where C
 * differs.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_csplice_dialect.h"
#include "_csplice_insertions.h"
#include "_csplice_phases.h"
#include "_csplice_tables.h"

/* A jump, as scan_returns_and_jumps finds it and the later phases move it. */
typedef struct {
    Py_ssize_t start, op_unit, target;
    int kind;
    Py_ssize_t added;    /* EXTENDED_ARG prefixes added before it */
    Py_ssize_t arg;      /* its new argument */
    const unsigned char *added_code;  /* the code units of those prefixes, once written */
} cs_jump;

/* The code units of `co` as compiled (co_code), with the positions of the
   instructions that return or jump. 3.11+: deoptimised here as
   PyCode_GetCode does it (each opcode to its base through Dialect.deopt,
   the inline caches zeroed), which spares the copy CPython would keep with
   every code object the import hook splices; code with instrumented opcodes
   (3.12+), whose originals only CPython knows, goes through
   PyCode_GetCode. */
typedef struct {
    unsigned char *units;   /* 2 * n bytes (and room after them), in one PyMem block with `at` */
    Py_ssize_t n;
    Py_ssize_t *at;         /* code units of the returns and jumps, in order */
    Py_ssize_t n_at;
} cs_units;

/* Everything one splice works on, phase after phase. */
typedef struct {
    cs_state *st;
    PyCodeObject *co;
    cs_units u;                    /* the code as compiled */
    unsigned char *units;          /* a copy of its units, as the spliced code has them */
    Py_ssize_t entry_at;
    int stacked;                   /* the prologue has left values on the stack at the entry */
    unsigned char *entry;          /* the entry's code units */
    Py_ssize_t entry_units;
    unsigned char *return_tail;    /* after a RETURN_CONST made a LOAD_CONST: the exit, RETURN_VALUE */
    cs_insertion *fixed;           /* the entry and one insertion per return */
    Py_ssize_t n_fixed;
    cs_insertion *insertions;      /* all of them, in order, once laid out */
    Py_ssize_t n_insertions;
    cs_jump *jumps;
    Py_ssize_t n_jumps;
    cs_offsets offsets;
    unsigned char *added_code;     /* the jumps' added prefixes, written whole */
    void *scratch;                 /* the one block the arrays above live in */
} cs_splice;

/* ------------------------------------------------------------------ */
/* Instructions: one writer of EXTENDED_ARG prefixes, one jump decode  */
/* and encode                                                          */
/* ------------------------------------------------------------------ */

/* How many EXTENDED_ARG prefixes an instruction with argument `arg` needs. */
static Py_ssize_t
prefixes_for(Py_ssize_t arg)
{
    Py_ssize_t n = 0;
    while (arg > 0xFF) {
        arg >>= 8;
        n++;
    }
    return n;
}

/* Write the 2 * (prefixes + 1) bytes of `op arg` behind `prefixes`
   EXTENDED_ARGs, which hold the bytes of `arg` above its lowest (those
   beyond are dropped), to `dst`. */
static void
instruction(const cs_state *st, unsigned char *dst, int op, Py_ssize_t arg, Py_ssize_t prefixes)
{
    for (Py_ssize_t k = prefixes; k > 0; k--, dst += 2) {
        dst[0] = (unsigned char)st->extended_arg;
        dst[1] = (unsigned char)((arg >> (8 * k)) & 0xFF);
    }
    dst[0] = (unsigned char)op;
    dst[1] = (unsigned char)(arg & 0xFF);
}

/* The argument of the instruction at `op_unit`, with its EXTENDED_ARG prefixes from `start`. */
static Py_ssize_t
argument(const unsigned char *raw, Py_ssize_t start, Py_ssize_t op_unit)
{
    Py_ssize_t arg = 0;
    for (Py_ssize_t j = start; j <= op_unit; j++) {
        arg = (arg << 8) | raw[2 * j + 1];
    }
    return arg;
}

/* The code unit a jump of `kind` with argument `arg` lands on, the
   instruction after it starting at `next_unit`. */
static Py_ssize_t
jump_target(const cs_state *st, int kind, Py_ssize_t next_unit, Py_ssize_t arg)
{
    Py_ssize_t a = arg / st->jump_unit;
    return kind == ABSOLUTE ? a : kind == FORWARD ? next_unit + a : next_unit - a;
}

/* The argument of a jump of `kind` to `target`, the instruction after it
   starting at `next_unit`: negative where the jump would have to change
   direction. */
static Py_ssize_t
jump_argument(const cs_state *st, int kind, Py_ssize_t next_unit, Py_ssize_t target)
{
    Py_ssize_t a = kind == ABSOLUTE ? target : kind == FORWARD ? target - next_unit : next_unit - target;
    return a * st->jump_unit;
}

/* ------------------------------------------------------------------ */
/* The code as compiled                                                */
/* ------------------------------------------------------------------ */

/* One PyMem block: the units, room for zeroing CS_MAX_CACHES units after the
   last instruction, then `at`. */
static int
units_alloc(cs_units *u, Py_ssize_t n)
{
    size_t unit_bytes = ((size_t)(2 * n) + 2 * CS_MAX_CACHES + 8) & ~(size_t)7;
    u->units = PyMem_Malloc(unit_bytes + sizeof(Py_ssize_t) * (size_t)(n + 1));
    if (u->units == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    u->n = n;
    u->at = (Py_ssize_t *)(u->units + unit_bytes);
    u->n_at = 0;
    return 0;
}

/* Fill `u` with the code units of `co` as compiled: 0, or -1 with an exception. */
static int
units_as_compiled(const cs_state *st, PyCodeObject *co, cs_units *u)
{
#ifdef FP_CODE_ADAPTIVE
    Py_ssize_t size = FP_CODE_UNITS(co);
    const unsigned char *adaptive = FP_CODE_ADAPTIVE(co);
    if (units_alloc(u, size) < 0) {
        return -1;
    }
    unsigned char *units = u->units;
    Py_ssize_t *at = u->at, n_at = 0, i = 0;
    while (i < size) {
        int op = st->deopt[adaptive[2 * i]];
        if (op == 0) {
            break;
        }
        units[2 * i] = (unsigned char)op;
        units[2 * i + 1] = adaptive[2 * i + 1];
        /* Zero as many units as any opcode has caches (configure checks),
           whatever this one has: no branch on the count; the units past
           its caches are written over next. */
        memset(units + 2 * (i + 1), 0, 2 * CS_MAX_CACHES);
        at[n_at] = i;
        n_at += st->returns_and_jumps[op];
        i += 1 + st->caches[op];
    }
    if (i == size) {
        u->n_at = n_at;
        return 0;
    }
    PyMem_Free(u->units);
    u->units = NULL;
#endif
    PyObject *co_code = FP_CODE_BYTES(co);
    if (co_code == NULL) {
        return -1;
    }
    if (units_alloc(u, PyBytes_GET_SIZE(co_code) / 2) < 0) {
        Py_DECREF(co_code);
        return -1;
    }
    memcpy(u->units, PyBytes_AS_STRING(co_code), (size_t)(2 * u->n));
    Py_DECREF(co_code);
    for (Py_ssize_t i = 0; i < u->n; i += 1 + st->caches[u->units[2 * i]]) {
        u->at[u->n_at] = i;
        u->n_at += st->returns_and_jumps[u->units[2 * i]];
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The phases                                                          */
/* ------------------------------------------------------------------ */

/* The code unit the entry goes before, and whether the prologue has left
   values on the stack there, as the dialect's prologue says: 0, or -1 with
   SpliceError where the code has no unit the entry could go before. */
static int
find_entry(cs_splice *s)
{
    const cs_state *st = s->st;
    const unsigned char *raw = s->u.units;
    Py_ssize_t n = s->u.n, at = 0;
    if (st->entry_before >= 0) {
        at = -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (raw[2 * i] == st->entry_before && (raw[2 * i + 1] & st->where_mask) == 0) {
                at = i;
                break;
            }
        }
        if (at < 0) {
            PyErr_SetString(st->splice_error, "code object has no RESUME instruction");
            return -1;
        }
    }
    s->stacked = 0;
    for (Py_ssize_t i = 0; st->stacked_marker >= 0 && i <= at && i < n; i++) {
        if (raw[2 * i] == st->stacked_marker) {
            s->stacked = (raw[2 * i + 1] & st->where_mask) == st->stacked_where;
            break;
        }
    }
    s->entry_at = at;
    return 0;
}

/* The entry's code units (_pysplice._entry_code) and the tail a RETURN_CONST
   gets, in the scratch block, which is allocated here for every phase: the
   insertions (at most the entry, one per unit and one added prefix per
   unit, twice: the fixed ones and all of them), the jumps, the copy of the
   units, the entry and the tail. 0, or -1 with MemoryError. */
static int
allocate_scratch(cs_splice *s, Py_ssize_t probe_index)
{
    const cs_state *st = s->st;
    Py_ssize_t n = s->u.n, load_prefixes = prefixes_for(probe_index);
    Py_ssize_t tail_len = s->stacked ? st->stacked_entry_tail_len : st->entry_tail_len;
    Py_ssize_t entry_len = 2 * (load_prefixes + 1) + tail_len;
    Py_ssize_t return_tail_len = st->exit_code_len + st->return_value_code_len;
    size_t n_ins_max = (size_t)(2 * n + 2);
    s->scratch = PyMem_Malloc(2 * n_ins_max * sizeof(cs_insertion) + (size_t)(n + 1) * sizeof(cs_jump)
                              + (size_t)(2 * n) + (size_t)entry_len + (size_t)return_tail_len + 16);
    if (s->scratch == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->fixed = (cs_insertion *)s->scratch;
    s->insertions = s->fixed + n_ins_max;
    s->jumps = (cs_jump *)(s->insertions + n_ins_max);
    s->units = (unsigned char *)(s->jumps + n + 1);
    s->entry = s->units + 2 * n;
    s->return_tail = s->entry + entry_len;
    memcpy(s->units, s->u.units, (size_t)(2 * n));
    instruction(st, s->entry, st->load_const, probe_index, load_prefixes);
    memcpy(s->entry + 2 * (load_prefixes + 1), s->stacked ? st->stacked_entry_tail : st->entry_tail,
           (size_t)tail_len);
    s->entry_units = entry_len / 2;
    memcpy(s->return_tail, st->exit_code, (size_t)st->exit_code_len);
    memcpy(s->return_tail + st->exit_code_len, st->return_value_code, (size_t)st->return_value_code_len);
    return 0;
}

/* The insertions whose size is fixed (the entry and one at each return) and
   the jumps with the units they land on; each RETURN_CONST becomes a
   LOAD_CONST in s->units. 0, or -1 with SpliceError for a jump that lands
   inside an instruction. */
static int
scan_returns_and_jumps(cs_splice *s)
{
    const cs_state *st = s->st;
    const unsigned char *raw = s->u.units;
    Py_ssize_t n = s->u.n;
    int ext_op = st->extended_arg;
    s->fixed[0] = (cs_insertion){s->entry_at, ENTRY, s->entry_units, s->entry, -1};
    s->n_fixed = 1;
    s->n_jumps = 0;
    for (Py_ssize_t k = 0; k < s->u.n_at; k++) {
        Py_ssize_t i = s->u.at[k], start = i;
        int op = raw[2 * i];
        while (start && raw[2 * (start - 1)] == ext_op) {
            start--;
        }
        if (op == st->return_value) {
            s->fixed[s->n_fixed++] = (cs_insertion){start, BEFORE_NEXT, st->exit_code_len / 2, st->exit_code, -1};
        }
        else if (op == st->return_const) {
            s->units[2 * i] = (unsigned char)st->load_const;  /* same argument: the constant to return */
            s->fixed[s->n_fixed++] = (cs_insertion){
                i + 1, AFTER_PREVIOUS, (st->exit_code_len + st->return_value_code_len) / 2, s->return_tail, -1};
        }
        else {
            int kind = st->jumps[op];
            Py_ssize_t target = jump_target(st, kind, i + 1 + st->caches[op], argument(raw, start, i));
            if (target < 0 || target >= n || raw[2 * target] == 0 || (target && raw[2 * (target - 1)] == ext_op)) {
                PyErr_Format(st->splice_error, "jump at code unit %zd lands inside an instruction", i);
                return -1;
            }
            s->jumps[s->n_jumps++] = (cs_jump){start, i, target, kind, 0, 0, NULL};
        }
    }
    return 0;
}

static int
insertion_order(const void *x, const void *y)
{
    const cs_insertion *a = x, *b = y;
    if (a->at != b->at) {
        return a->at < b->at ? -1 : 1;
    }
    return a->side - b->side;
}

/* The offset map of `n` insertions in order (_pysplice._OffsetMap). */
static int
offsets_build(cs_offsets *o, const cs_insertion *ins, Py_ssize_t n)
{
    cs_boundary *b = PyMem_Realloc(o->b, sizeof(cs_boundary) * (size_t)(n + 1));
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->b = b;
    o->n = 0;
    Py_ssize_t before = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (o->n == 0 || b[o->n - 1].at != ins[i].at) {
            b[o->n].at = ins[i].at;
            b[o->n].before = before;   /* units inserted strictly before this boundary */
            b[o->n].prev = b[o->n].entry = b[o->n].all = 0;
            o->n++;
        }
        cs_boundary *last = &b[o->n - 1];
        last->all += ins[i].units;
        before += ins[i].units;
        if (ins[i].side == AFTER_PREVIOUS) {
            last->prev += ins[i].units;
        }
        else if (ins[i].side == ENTRY) {
            last->entry += ins[i].units;
        }
    }
    return 0;
}

/* Every insertion in order, and the offset map they make, once each jump's
   new argument fits its EXTENDED_ARG prefixes; sets each jump's added and
   arg. 0, or -1 with SpliceError for a jump whose target would have moved
   to its other side. */
static int
lay_out_until_jumps_fit(cs_splice *s)
{
    const cs_state *st = s->st;
    for (;;) {
        Py_ssize_t n_ins = s->n_fixed;
        memcpy(s->insertions, s->fixed, sizeof(cs_insertion) * (size_t)s->n_fixed);
        for (Py_ssize_t k = 0; k < s->n_jumps; k++) {
            if (s->jumps[k].added) {
                s->insertions[n_ins++] = (cs_insertion){s->jumps[k].start, BEFORE_NEXT, s->jumps[k].added, NULL, k};
            }
        }
        qsort(s->insertions, (size_t)n_ins, sizeof(cs_insertion), insertion_order);
        s->n_insertions = n_ins;
        if (offsets_build(&s->offsets, s->insertions, n_ins) < 0) {
            return -1;
        }
        int grew = 0;
        for (Py_ssize_t k = 0; k < s->n_jumps; k++) {
            cs_jump *jmp = &s->jumps[k];
            Py_ssize_t own = jmp->op_unit - jmp->start;
            Py_ssize_t next_unit = offsets_own(&s->offsets, jmp->start) + own + 1
                                   + st->caches[s->u.units[2 * jmp->op_unit]];
            Py_ssize_t arg = jump_argument(st, jmp->kind, next_unit, offsets_target(&s->offsets, jmp->target));
            if (arg < 0) {
                PyErr_Format(st->splice_error, "jump at code unit %zd changed direction", jmp->op_unit);
                return -1;
            }
            Py_ssize_t need = prefixes_for(arg);
            if (need > own + jmp->added) {
                jmp->added = need - own;
                grew = 1;
            }
            jmp->arg = arg;
        }
        if (!grew) {
            return 0;
        }
    }
}

/* Write each jump whole, with its new argument: its own units in s->units,
   its added prefixes as the content of the insertion that holds them. A
   jump with added prefixes is written whole into s->added_code, and its own
   part copied from there. 0, or -1 with MemoryError. */
static int
write_jump_arguments(cs_splice *s)
{
    const cs_state *st = s->st;
    Py_ssize_t added_units = 0, used = 0;
    for (Py_ssize_t k = 0; k < s->n_jumps; k++) {
        if (s->jumps[k].added) {
            added_units += s->jumps[k].added + s->jumps[k].op_unit - s->jumps[k].start + 1;
        }
    }
    if (added_units) {
        s->added_code = PyMem_Malloc((size_t)(2 * added_units));
        if (s->added_code == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t k = 0; k < s->n_jumps; k++) {
        cs_jump *jmp = &s->jumps[k];
        Py_ssize_t own = jmp->op_unit - jmp->start;
        int op = s->units[2 * jmp->op_unit];
        if (!jmp->added) {
            instruction(st, s->units + 2 * jmp->start, op, jmp->arg, own);
            continue;
        }
        unsigned char *whole = s->added_code + 2 * used;
        instruction(st, whole, op, jmp->arg, own + jmp->added);
        memcpy(s->units + 2 * jmp->start, whole + 2 * jmp->added, (size_t)(2 * (own + 1)));
        jmp->added_code = whole;
        used += jmp->added + own + 1;
    }
    for (Py_ssize_t i = 0; i < s->n_insertions; i++) {
        if (s->insertions[i].content == NULL) {
            s->insertions[i].content = s->jumps[s->insertions[i].jump].added_code;
        }
    }
    return 0;
}

/* The spliced code units: a new bytes object, or NULL with MemoryError. */
static PyObject *
emit(cs_splice *s)
{
    const unsigned char *units = s->units;
    cs_buf out = {0};
    PyObject *result = NULL;
    Py_ssize_t prev = 0;
    if (buf_reserve(&out, 2 * s->u.n + s->entry_units * 2 + 64) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < s->n_insertions; i++) {
        const cs_insertion *ins = &s->insertions[i];
        if (buf_put(&out, units + 2 * prev, 2 * (ins->at - prev)) < 0
            || buf_put(&out, ins->content, 2 * ins->units) < 0) {
            goto done;
        }
        prev = ins->at;
    }
    if (buf_put(&out, units + 2 * prev, 2 * (s->u.n - prev)) < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)out.data, out.len);
done:
    PyMem_Free(out.data);
    return result;
}

/* The spliced code's line table (*lines) and, 3.11+, exception table
   (*exceptions, else NULL): new references. 0, or -1 with an exception. */
static int
rewrite_tables(cs_splice *s, PyObject **lines, PyObject **exceptions)
{
    const cs_state *st = s->st;
    PyObject *table = FP_CODE_LINES(s->co);
    *lines = *exceptions = NULL;
    if (table == NULL) {
        return -1;
    }
    const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(table);
    if (st->line_table == LNOTAB) {
        *lines = cs_moved_lnotab(bytes, PyBytes_GET_SIZE(table), s->co->co_firstlineno, &s->offsets);
    }
    else {
        *lines = cs_lengthened_line_table(st, bytes, PyBytes_GET_SIZE(table), s->insertions, s->n_insertions,
                                          st->line_table == LOCATIONS, !st->entry_has_line);
    }
    Py_DECREF(table);
    if (*lines == NULL) {
        return -1;
    }
#if FP_HAVE_EXCEPTION_TABLE
    if (st->has_exception_table) {
        PyObject *exctable = FP_CODE_EXCEPTIONS(s->co);  /* borrowed */
        Py_ssize_t hole_start = offsets_boundary(&s->offsets, s->entry_at);
        *exceptions = cs_moved_exception_table(st, (const unsigned char *)PyBytes_AS_STRING(exctable),
                                               PyBytes_GET_SIZE(exctable), &s->offsets, hole_start,
                                               hole_start + s->entry_units);
        if (*exceptions == NULL) {
            Py_CLEAR(*lines);
            return -1;
        }
    }
#endif
    return 0;
}

/* ------------------------------------------------------------------ */
/* The splice                                                          */
/* ------------------------------------------------------------------ */

/* `consts`, then the probe, then the trailer: a new tuple. */
static PyObject *
spliced_consts(PyObject *consts, PyObject *probe, PyObject *trailer)
{
    Py_ssize_t n_consts = PyTuple_GET_SIZE(consts), n_trailer = PyTuple_GET_SIZE(trailer);
    PyObject *out = PyTuple_New(n_consts + 1 + n_trailer);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n_consts; i++) {
        PyTuple_SET_ITEM(out, i, Py_NewRef(PyTuple_GET_ITEM(consts, i)));
    }
    PyTuple_SET_ITEM(out, n_consts, Py_NewRef(probe));
    for (Py_ssize_t i = 0; i < n_trailer; i++) {
        PyTuple_SET_ITEM(out, n_consts + 1 + i, Py_NewRef(PyTuple_GET_ITEM(trailer, i)));
    }
    return out;
}

PyObject *
cs_splice_code(cs_state *st, PyObject *code, PyObject *consts, PyObject *probe, PyObject *trailer)
{
    PyCodeObject *co = (PyCodeObject *)code;
    cs_splice s = {0};
    PyObject *result = NULL, *units = NULL, *new_consts = NULL, *lines = NULL, *exceptions = NULL;
    s.st = st;
    s.co = co;
    if (units_as_compiled(st, co, &s.u) < 0 || find_entry(&s) < 0) {
        goto done;
    }
    if (s.entry_at >= s.u.n) {
        PyErr_SetString(st->splice_error, "code object has no body after its prologue");
        goto done;
    }
    if (allocate_scratch(&s, PyTuple_GET_SIZE(consts)) < 0 || scan_returns_and_jumps(&s) < 0
        || lay_out_until_jumps_fit(&s) < 0 || write_jump_arguments(&s) < 0) {
        goto done;
    }
    units = emit(&s);
    new_consts = units != NULL ? spliced_consts(consts, probe, trailer) : NULL;
    if (new_consts == NULL || rewrite_tables(&s, &lines, &exceptions) < 0) {
        goto done;
    }
    result = fp_code_with(co, units, new_consts, co->co_stacksize + 1 > 2 ? co->co_stacksize + 1 : 2, lines,
                          exceptions);
done:
    PyMem_Free(s.u.units);
    PyMem_Free(s.scratch);
    PyMem_Free(s.added_code);
    PyMem_Free(s.offsets.b);
    Py_XDECREF(units);
    Py_XDECREF(new_consts);
    Py_XDECREF(lines);
    Py_XDECREF(exceptions);
    return result;
}
