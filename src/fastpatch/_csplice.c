/*
 * fastpatch._csplice -- the splicer's loop in C.
 *
 * The same transformation as fastpatch/_pysplice.py, code unit for code unit
 * and byte for byte (tests/test_splice_c_vs_python.py checks the two against each other
 * over a corpus and whole stdlib modules): the import hook splices every
 * function of every module it reaches, and in Python that costs about as
 * much as the import itself. Read _splice.py for the why of it and
 * _pysplice.py for each step; the comments here say only where C differs.
 *
 * The dialect (what the running CPython's code objects look like and what
 * is injected) comes from _recipes.Dialect once, through configure().
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_compat.h"

/* Jump kinds (_recipes.py) and the sides of an insertion (_pysplice.py). */
enum { NOT_A_JUMP = 0, ABSOLUTE = 1, FORWARD = 2, BACKWARD = 3 };
enum { AFTER_PREVIOUS = 0, ENTRY = 1, BEFORE_NEXT = 2 };
enum { LNOTAB = 0, LINETABLE = 1, LOCATIONS = 2 };

typedef struct {
    int configured;
    unsigned char caches[256];
    unsigned char jumps[256];
    unsigned char interesting[256];
    unsigned char deopt[256];   /* Dialect.deopt: each opcode as compiled, 0 where unknown */
    int extended_arg, return_value, return_const, load_const;
    int entry_before, entry_before_mask, genexpr_start, generator_start, entry_has_line;
    int line_table, has_exception_table, jump_unit;
    unsigned char *entry_tail, *stacked_entry_tail, *exit, *return_value_code;
    Py_ssize_t entry_tail_len, stacked_entry_tail_len, exit_len, return_value_code_len;
    PyObject *splice_error;   /* fastpatch._splice.SpliceError */
} cs_state;

/* More inline cache units than any opcode has so far (10 at most, on
   3.11); configure() refuses a dialect with more. */
#define CS_MAX_CACHES 16

/* A growable byte buffer. */
typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
} cs_buf;

static int
buf_reserve(cs_buf *b, Py_ssize_t extra)
{
    if (b->len + extra <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    unsigned char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int
buf_put(cs_buf *b, const unsigned char *src, Py_ssize_t n)
{
    if (n <= 0) {
        return 0;
    }
    if (buf_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

static int
buf_byte(cs_buf *b, int value)
{
    unsigned char c = (unsigned char)value;
    return buf_put(b, &c, 1);
}

/* ------------------------------------------------------------------ */
/* Insertions and the offset map                                       */
/* ------------------------------------------------------------------ */

typedef struct {
    Py_ssize_t at;       /* code unit boundary in the original code */
    int side;
    Py_ssize_t units;
    const unsigned char *content;   /* NULL: a jump's new EXTENDED_ARGs */
    Py_ssize_t jump;     /* for those: the jump's index */
} cs_insertion;

typedef struct {
    Py_ssize_t start, op_unit, target;
    int kind;
    Py_ssize_t grown;    /* EXTENDED_ARG units inserted before it */
    Py_ssize_t arg;      /* its new argument */
} cs_jump;

/* One entry per distinct boundary with insertions, in order. */
typedef struct {
    Py_ssize_t at, before, prev, entry, all;
} cs_boundary;

typedef struct {
    cs_boundary *b;
    Py_ssize_t n;
} cs_offsets;

static int
insertion_cmp(const void *x, const void *y)
{
    const cs_insertion *a = x, *b = y;
    if (a->at != b->at) {
        return a->at < b->at ? -1 : 1;
    }
    return a->side - b->side;
}

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

/* Units inserted before boundary x, and its own boundary record or NULL. */
static Py_ssize_t
offsets_split(const cs_offsets *o, Py_ssize_t x, const cs_boundary **own)
{
    Py_ssize_t lo = 0, hi = o->n;   /* first boundary with at > x */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (o->b[mid].at <= x) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    if (lo && o->b[lo - 1].at == x) {
        *own = &o->b[lo - 1];
        return x + o->b[lo - 1].before;
    }
    *own = NULL;
    if (lo == 0) {
        return x;
    }
    const cs_boundary *p = &o->b[lo - 1];
    return x + p->before + p->all;
}

static Py_ssize_t
offsets_target(const cs_offsets *o, Py_ssize_t x)
{
    const cs_boundary *own;
    Py_ssize_t pos = offsets_split(o, x, &own);
    return own ? pos + own->prev + own->entry : pos;
}

static Py_ssize_t
offsets_boundary(const cs_offsets *o, Py_ssize_t x)
{
    const cs_boundary *own;
    Py_ssize_t pos = offsets_split(o, x, &own);
    return own ? pos + own->prev : pos;
}

static Py_ssize_t
offsets_own(const cs_offsets *o, Py_ssize_t x)
{
    const cs_boundary *own;
    Py_ssize_t pos = offsets_split(o, x, &own);
    return own ? pos + own->all : pos;
}

static int
ext_needed(Py_ssize_t arg)
{
    int n = 0;
    while (arg > 0xFF) {
        arg >>= 8;
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Line tables                                                         */
/* ------------------------------------------------------------------ */

static int
write_linetable_310(cs_buf *out, int ldelta, Py_ssize_t units)
{
    Py_ssize_t remaining = 2 * units;
    while (remaining > 254) {
        if (buf_byte(out, 254) < 0 || buf_byte(out, ldelta) < 0) {
            return -1;
        }
        ldelta = ldelta == 0x80 ? 0x80 : 0;
        remaining -= 254;
    }
    if (buf_byte(out, (int)remaining) < 0 || buf_byte(out, ldelta) < 0) {
        return -1;
    }
    return 0;
}

/* One 3.11+ location entry (its first byte and payload) covering `units`,
   in chunks of at most 8; `repeat`: all of them as "the same location again". */
static int
write_location(cs_buf *out, const unsigned char *entry, Py_ssize_t entry_len, Py_ssize_t units, int repeat)
{
    int code = (entry[0] >> 3) & 15;
    const unsigned char *payload = entry + 1;
    Py_ssize_t payload_len = entry_len - 1;
    int repeat_code = code;
    const unsigned char *repeat_payload = payload;
    Py_ssize_t repeat_len = payload_len;
    unsigned char zero = 0;
    Py_ssize_t skip = 0;
    if (code >= 10 && code <= 12) {
        repeat_code = 10;
    }
    else if (code == 13 || code == 14) {   /* first varint: the line delta, repeated as 0 */
        while (payload[skip] & 64) {
            skip++;
        }
        skip++;
    }
    int first = !repeat;
    while (units > 0) {
        Py_ssize_t chunk = units < 8 ? units : 8;
        units -= chunk;
        if (first) {
            if (buf_byte(out, 0x80 | (code << 3) | (int)(chunk - 1)) < 0 || buf_put(out, payload, payload_len) < 0) {
                return -1;
            }
            first = 0;
        }
        else {
            if (buf_byte(out, 0x80 | (repeat_code << 3) | (int)(chunk - 1)) < 0) {
                return -1;
            }
            if (skip) {
                if (buf_put(out, &zero, 1) < 0 || buf_put(out, payload + skip, payload_len - skip) < 0) {
                    return -1;
                }
            }
            else if (buf_put(out, repeat_payload, repeat_len) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int
write_entry(cs_buf *out, const unsigned char *entry, Py_ssize_t entry_len, Py_ssize_t units, int locations,
            int repeat)
{
    if (locations) {
        return write_location(out, entry, entry_len, units, repeat);
    }
    int ldelta = entry[1];
    if (repeat) {
        ldelta = ldelta == 0x80 ? 0x80 : 0;
    }
    return write_linetable_310(out, ldelta, units);
}

/* _pysplice._lengthen_entries, in one pass over the table: the insertions
   come sorted by code unit, so the entry that covers each one (the entry
   whose units hold the instruction it belongs to) is found by walking the
   entries alongside them. */
static PyObject *
lengthen_entries(const unsigned char *table, Py_ssize_t len, const cs_insertion *ins, Py_ssize_t n_ins,
                 int locations, int entry_unlocated)
{
    static const unsigned char no_location[1] = {0x80 | (15 << 3)};
    static const unsigned char no_line[2] = {0, 0x80};
    PyObject *result = NULL;
    cs_buf out = {0};
    if (buf_reserve(&out, len + 16) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    /* Bytes of a 3.11+ location entry by its code (Objects/locations.md):
       short forms 2, one-line forms 3, no location 1; the varint forms (13
       and 14, -1 here) are scanned for the next entry's first byte, whose
       top bit only a first byte has. */
    static const signed char entry_bytes[16] = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, -1, -1, 1};
    Py_ssize_t i = 0;      /* the next insertion */
    Py_ssize_t total = 0;  /* code units covered by the entries before this one */
    Py_ssize_t prev = 0;   /* the table is written up to here */
    Py_ssize_t next_owner = n_ins ? (ins[0].side == AFTER_PREVIOUS ? ins[0].at - 1 : ins[0].at) : 0;
    for (Py_ssize_t j = 0; j < len && i < n_ins;) {
        Py_ssize_t end, units;
        if (locations) {
            end = j + entry_bytes[(table[j] >> 3) & 15];
            if (end <= j || (end < len && !(table[end] & 0x80)) || end > len) {
                end = j + 1;
                while (end < len && !(table[end] & 0x80)) {
                    end++;
                }
            }
            units = (table[j] & 7) + 1;
        }
        else {
            end = j + 2;
            units = table[j] / 2;
        }
        Py_ssize_t covered = total + units;
        if (next_owner >= covered) {  /* most entries: no insertion belongs to them */
            total = covered;
            j = end;
            continue;
        }
        Py_ssize_t extra = 0, before = 0, unlocated = 0;
        for (; i < n_ins; i++) {
            Py_ssize_t owner = ins[i].side == AFTER_PREVIOUS ? ins[i].at - 1 : ins[i].at;
            if (owner >= covered) {
                next_owner = owner;
                break;
            }
            if (ins[i].side == ENTRY && entry_unlocated) {
                before = ins[i].at - total;
                unlocated = ins[i].units;
            }
            else {
                extra += ins[i].units;
            }
        }
        if (extra || unlocated) {
            if (buf_put(&out, table + prev, j - prev) < 0) {
                goto done;
            }
            if (unlocated) {
                if (before && write_entry(&out, table + j, end - j, before, locations, 0) < 0) {
                    goto done;
                }
                if (write_entry(&out, locations ? no_location : no_line, locations ? 1 : 2, unlocated, locations,
                                0) < 0) {
                    goto done;
                }
            }
            if (write_entry(&out, table + j, end - j, units - before + extra, locations, before > 0) < 0) {
                goto done;
            }
            prev = end;
        }
        total = covered;
        j = end;
    }
    if (i < n_ins) {
        PyErr_Format(PyExc_ValueError, "no line table entry covers code unit %zd",
                     ins[i].side == AFTER_PREVIOUS ? ins[i].at - 1 : ins[i].at);
        goto done;
    }
    if (buf_put(&out, table + prev, len - prev) < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)out.data, out.len);
done:
    PyMem_Free(out.data);
    return result;
}

/* _pysplice._lnotab_39 */
static PyObject *
lnotab_39(const unsigned char *table, Py_ssize_t len, int firstlineno, const cs_offsets *o)
{
    PyObject *result = NULL;
    cs_buf out = {0};
    Py_ssize_t *change_addr = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(len / 2 + 1));
    long *change_line = PyMem_Malloc(sizeof(long) * (size_t)(len / 2 + 1));
    Py_ssize_t n = 0;
    if (change_addr == NULL || change_line == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t addr = 0;
    long line = firstlineno;
    for (Py_ssize_t j = 0; j + 1 < len; j += 2) {
        addr += table[j];
        int ld = table[j + 1];
        if (ld) {
            line += ld >= 128 ? ld - 256 : ld;
            if (n && change_addr[n - 1] == addr) {
                change_line[n - 1] = line;
            }
            else {
                change_addr[n] = addr;
                change_line[n++] = line;
            }
        }
    }
    Py_ssize_t prev_addr = 0;
    long prev_line = firstlineno;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t new_addr = 2 * offsets_boundary(o, change_addr[i] / 2);
        Py_ssize_t bd = new_addr - prev_addr;
        long ld = change_line[i] - prev_line;
        while (bd > 255) {
            if (buf_byte(&out, 255) < 0 || buf_byte(&out, 0) < 0) {
                goto done;
            }
            bd -= 255;
        }
        while (ld > 127) {
            if (buf_byte(&out, (int)bd) < 0 || buf_byte(&out, 127) < 0) {
                goto done;
            }
            bd = 0;
            ld -= 127;
        }
        while (ld < -128) {
            if (buf_byte(&out, (int)bd) < 0 || buf_byte(&out, 0x80) < 0) {
                goto done;
            }
            bd = 0;
            ld += 128;
        }
        if (buf_byte(&out, (int)bd) < 0 || buf_byte(&out, (int)(ld & 0xFF)) < 0) {
            goto done;
        }
        prev_addr = new_addr;
        prev_line = change_line[i];
    }
    result = PyBytes_FromStringAndSize((const char *)out.data, out.len);
done:
    PyMem_Free(out.data);
    PyMem_Free(change_addr);
    PyMem_Free(change_line);
    return result;
}

/* ------------------------------------------------------------------ */
/* Exception table (3.11+)                                             */
/* ------------------------------------------------------------------ */
#if FP_HAVE_EXCEPTION_TABLE

static int
read_varint(const unsigned char *t, Py_ssize_t len, Py_ssize_t *j, Py_ssize_t *value)
{
    if (*j >= len) {
        return -1;
    }
    unsigned char b = t[(*j)++];
    Py_ssize_t v = b & 63;
    while (b & 64) {
        if (*j >= len) {
            return -1;
        }
        b = t[(*j)++];
        v = (v << 6) | (b & 63);
    }
    *value = v;
    return 0;
}

static int
write_varint(cs_buf *out, Py_ssize_t value, int msb)
{
    unsigned char chunks[12];
    int n = 0;
    do {
        chunks[n++] = (unsigned char)(value & 63);
        value >>= 6;
    } while (value);
    for (int i = n - 1; i >= 0; i--) {
        int b = chunks[i] | (i ? 64 : 0);
        if (i == n - 1) {
            b |= msb;
        }
        if (buf_byte(out, b) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
exception_table(cs_state *st, const unsigned char *t, Py_ssize_t len, const cs_offsets *o, Py_ssize_t hole_start,
                Py_ssize_t hole_end)
{
    PyObject *result = NULL;
    cs_buf out = {0};
    Py_ssize_t j = 0;
    while (j < len) {
        Py_ssize_t start, length, target, dl;
        if (read_varint(t, len, &j, &start) < 0 || read_varint(t, len, &j, &length) < 0
            || read_varint(t, len, &j, &target) < 0 || read_varint(t, len, &j, &dl) < 0) {
            PyErr_SetString(st->splice_error, "malformed exception table");
            goto done;
        }
        Py_ssize_t depth = dl >> 1;
        int lasti = (int)(dl & 1);
        Py_ssize_t new_start = offsets_target(o, start), new_end = offsets_boundary(o, start + length);
        Py_ssize_t new_target = offsets_target(o, target);
        Py_ssize_t pieces[2][2];
        int n = 0;
        if (new_start < hole_end && new_end > hole_start) {
            if (new_start < hole_start) {
                pieces[n][0] = new_start;
                pieces[n++][1] = hole_start;
            }
            if (hole_end < new_end) {
                pieces[n][0] = hole_end;
                pieces[n++][1] = new_end;
            }
        }
        else if (new_start < new_end) {
            pieces[n][0] = new_start;
            pieces[n++][1] = new_end;
        }
        for (int i = 0; i < n; i++) {
            Py_ssize_t s = pieces[i][0], e = pieces[i][1];
            Py_ssize_t d = ((s >= hole_end ? depth + 1 : depth) << 1) | lasti;
            if (write_varint(&out, s, 0x80) < 0 || write_varint(&out, e - s, 0) < 0
                || write_varint(&out, new_target, 0) < 0 || write_varint(&out, d, 0) < 0) {
                goto done;
            }
        }
    }
    result = PyBytes_FromStringAndSize((const char *)out.data, out.len);
done:
    PyMem_Free(out.data);
    return result;
}
#endif  /* FP_HAVE_EXCEPTION_TABLE */

/* ------------------------------------------------------------------ */
/* splice                                                              */
/* ------------------------------------------------------------------ */

/* The splice of `code`, whose constants are `consts` (its own, or the same
   with nested code objects already spliced), with `probe` and the trailer
   appended to them. Returns a new reference, or NULL with an exception
   (SpliceError for a code object the splicer does not recognise). */
/* The code units of `co` as compiled (co_code), with the positions of the
   instructions the splice acts on (returns and jumps, st->interesting).
   3.11+: deoptimised here as PyCode_GetCode does it (each opcode to its
   base through Dialect.deopt, the inline caches zeroed), which spares the
   copy CPython would keep with every code object the import hook splices;
   code with instrumented opcodes (3.12+), whose originals only CPython
   knows, goes through PyCode_GetCode. */
typedef struct {
    unsigned char *units;   /* 2 * n bytes (and room after them), in one PyMem block with `at` */
    Py_ssize_t n;
    Py_ssize_t *at;         /* code units of the interesting instructions, in order */
    Py_ssize_t n_at;
} cs_units;

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

static int
code_units(cs_state *st, PyCodeObject *co, cs_units *u)
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
        n_at += st->interesting[op];
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
        u->n_at += st->interesting[u->units[2 * i]];
    }
    return 0;
}

static PyObject *
splice_impl(cs_state *st, PyObject *code, PyObject *consts, PyObject *probe, PyObject *trailer)
{
    PyCodeObject *co = (PyCodeObject *)code;
    PyObject *result = NULL, *linetable = NULL;
    PyObject *new_code = NULL, *new_consts = NULL, *new_lines = NULL, *new_exc = NULL;
    unsigned char *buf = NULL, *entry = NULL, *const_tail = NULL, *grown_content = NULL;
    cs_units u = {0};
    cs_insertion *ins = NULL, *sorted = NULL;
    cs_jump *jumps = NULL;
    void *scratch = NULL;
    cs_offsets offsets = {0};
    cs_buf out = {0};

    if (code_units(st, co, &u) < 0) {
        goto done;
    }
    const unsigned char *raw = u.units;
    Py_ssize_t n = u.n;
    int ext_op = st->extended_arg;

    Py_ssize_t entry_at;
    const unsigned char *entry_tail = st->entry_tail;
    Py_ssize_t entry_tail_len = st->entry_tail_len;
    if (st->entry_before >= 0) {
        /* before the RESUME where the function itself starts (see _pysplice._function_start) */
        entry_at = -1;
        int first = 1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (raw[2 * i] != st->entry_before) {
                continue;
            }
            if (first && st->genexpr_start >= 0 && (raw[2 * i + 1] & st->entry_before_mask) == st->genexpr_start) {
                entry_tail = st->stacked_entry_tail;
                entry_tail_len = st->stacked_entry_tail_len;
            }
            first = 0;
            if ((raw[2 * i + 1] & st->entry_before_mask) == 0) {
                entry_at = i;
                break;
            }
        }
        if (entry_at < 0) {
            PyErr_SetString(st->splice_error, "code object has no RESUME instruction");
            goto done;
        }
    }
    else if (st->generator_start >= 0 && n && raw[0] == st->generator_start) {
        entry_at = 0; /* before GEN_START: the token goes under the first send */
        entry_tail = st->stacked_entry_tail;
        entry_tail_len = st->stacked_entry_tail_len;
    }
    else {
        entry_at = 0;
    }
    if (entry_at >= n) {
        PyErr_SetString(st->splice_error, "code object has no body after its prologue");
        goto done;
    }

    /* The entry: LOAD_CONST <probe index> with its EXTENDED_ARGs, then the recipe's tail. */
    Py_ssize_t probe_index = PyTuple_GET_SIZE(consts);
    int probe_ext = ext_needed(probe_index);
    Py_ssize_t entry_len = 2 * (probe_ext + 1) + entry_tail_len;
    Py_ssize_t const_tail_len = st->exit_len + st->return_value_code_len;
    /* One block for the scratch arrays: the insertions (at most the entry,
       one per unit and one grown prefix per unit, twice: as made and
       sorted), the jumps, the copy of the code, the entry and a
       RETURN_CONST's tail. */
    size_t n_ins_max = (size_t)(2 * n + 2);
    size_t scratch_size = 2 * n_ins_max * sizeof(cs_insertion) + (size_t)(n + 1) * sizeof(cs_jump)
                          + (size_t)(2 * n) + (size_t)entry_len + (size_t)const_tail_len + 16;
    scratch = PyMem_Malloc(scratch_size);
    if (scratch == NULL || buf_reserve(&out, 2 * n + entry_len + 64) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    ins = (cs_insertion *)scratch;
    sorted = ins + n_ins_max;
    jumps = (cs_jump *)(sorted + n_ins_max);
    buf = (unsigned char *)(jumps + n + 1);
    entry = buf + 2 * n;
    const_tail = entry + entry_len;
    for (int k = probe_ext, j = 0; k > 0; k--, j += 2) {
        entry[j] = (unsigned char)ext_op;
        entry[j + 1] = (unsigned char)((probe_index >> (8 * k)) & 0xFF);
    }
    entry[2 * probe_ext] = (unsigned char)st->load_const;
    entry[2 * probe_ext + 1] = (unsigned char)(probe_index & 0xFF);
    memcpy(entry + 2 * (probe_ext + 1), entry_tail, (size_t)entry_tail_len);
    memcpy(const_tail, st->exit, (size_t)st->exit_len);
    memcpy(const_tail + st->exit_len, st->return_value_code, (size_t)st->return_value_code_len);
    memcpy(buf, raw, (size_t)(2 * n));

    Py_ssize_t n_base = 0, n_jumps = 0;
    ins[n_base++] = (cs_insertion){entry_at, ENTRY, entry_len / 2, entry, -1};
    for (Py_ssize_t k = 0; k < u.n_at; k++) {
        Py_ssize_t i = u.at[k];
        int op = raw[2 * i];
        Py_ssize_t start = i;
        while (start && raw[2 * (start - 1)] == ext_op) {
            start--;
        }
        if (op == st->return_value) {
            ins[n_base++] = (cs_insertion){start, BEFORE_NEXT, st->exit_len / 2, st->exit, -1};
        }
        else if (op == st->return_const) {
            buf[2 * i] = (unsigned char)st->load_const;
            ins[n_base++] = (cs_insertion){i + 1, AFTER_PREVIOUS, const_tail_len / 2, const_tail, -1};
        }
        else {
            Py_ssize_t arg = 0;
            for (Py_ssize_t j = start; j <= i; j++) {
                arg = (arg << 8) | raw[2 * j + 1];
            }
            Py_ssize_t a = arg / st->jump_unit;
            int kind = st->jumps[op];
            Py_ssize_t next = i + 1 + st->caches[op];
            Py_ssize_t target = kind == ABSOLUTE ? a : kind == FORWARD ? next + a : next - a;
            if (target < 0 || target >= n || raw[2 * target] == 0 || (target && raw[2 * (target - 1)] == ext_op)) {
                PyErr_Format(st->splice_error, "jump at code unit %zd lands inside an instruction", i);
                goto done;
            }
            jumps[n_jumps++] = (cs_jump){start, i, target, kind, 0, 0};
        }
    }

    /* Lay out until every jump argument fits its EXTENDED_ARG prefixes: the
       base insertions (ins[0..n_base)) stay; each round appends the jumps'
       grown prefixes after them and sorts a copy. */
    Py_ssize_t n_ins;
    for (;;) {
        n_ins = n_base;
        for (Py_ssize_t k = 0; k < n_jumps; k++) {
            if (jumps[k].grown) {
                ins[n_ins++] = (cs_insertion){jumps[k].start, BEFORE_NEXT, jumps[k].grown, NULL, k};
            }
        }
        memcpy(sorted, ins, sizeof(cs_insertion) * (size_t)n_ins);
        qsort(sorted, (size_t)n_ins, sizeof(cs_insertion), insertion_cmp);
        if (offsets_build(&offsets, sorted, n_ins) < 0) {
            goto done;
        }
        int more = 0;
        for (Py_ssize_t k = 0; k < n_jumps; k++) {
            cs_jump *jmp = &jumps[k];
            Py_ssize_t own_ext = jmp->op_unit - jmp->start;
            Py_ssize_t ext = own_ext + jmp->grown;
            Py_ssize_t dest = offsets_target(&offsets, jmp->target);
            Py_ssize_t next = offsets_own(&offsets, jmp->start) + own_ext + 1 + st->caches[raw[2 * jmp->op_unit]];
            Py_ssize_t a = jmp->kind == ABSOLUTE ? dest : jmp->kind == FORWARD ? dest - next : next - dest;
            if (a < 0) {
                PyErr_Format(st->splice_error, "jump at code unit %zd changed direction", jmp->op_unit);
                goto done;
            }
            a *= st->jump_unit;
            int need = ext_needed(a);
            if (need > ext) {
                jmp->grown += need - ext;
                more = 1;
            }
            jmp->arg = a;
        }
        if (!more) {
            break;
        }
    }
    ins = sorted;  /* from here on, in order */

    /* Write jump arguments, and the content of the grown prefixes. */
    Py_ssize_t grown_total = 0;
    for (Py_ssize_t k = 0; k < n_jumps; k++) {
        grown_total += jumps[k].grown;
    }
    if (grown_total) {
        grown_content = PyMem_Malloc((size_t)(2 * grown_total));
        if (grown_content == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (Py_ssize_t k = 0; k < n_jumps; k++) {
        cs_jump *jmp = &jumps[k];
        Py_ssize_t own_ext = jmp->op_unit - jmp->start;
        for (Py_ssize_t e = 0; e <= own_ext; e++) {
            buf[2 * (jmp->op_unit - e) + 1] = (unsigned char)((jmp->arg >> (8 * e)) & 0xFF);
        }
    }
    Py_ssize_t used = 0;
    for (Py_ssize_t i = 0; i < n_ins; i++) {
        if (ins[i].content == NULL) {
            cs_jump *jmp = &jumps[ins[i].jump];
            Py_ssize_t own_ext = jmp->op_unit - jmp->start;
            unsigned char *dst = grown_content + 2 * used;
            for (Py_ssize_t e = own_ext + jmp->grown, j = 0; e > own_ext; e--, j += 2) {
                dst[j] = (unsigned char)ext_op;
                dst[j + 1] = (unsigned char)((jmp->arg >> (8 * e)) & 0xFF);
            }
            ins[i].content = dst;
            used += jmp->grown;
        }
    }
    Py_ssize_t prev = 0;
    for (Py_ssize_t i = 0; i < n_ins; i++) {
        if (buf_put(&out, buf + 2 * prev, 2 * (ins[i].at - prev)) < 0
            || buf_put(&out, ins[i].content, 2 * ins[i].units) < 0) {
            goto done;
        }
        prev = ins[i].at;
    }
    if (buf_put(&out, buf + 2 * prev, 2 * (n - prev)) < 0) {
        goto done;
    }
    new_code = PyBytes_FromStringAndSize((const char *)out.data, out.len);
    if (new_code == NULL) {
        goto done;
    }

    /* Constants: the probe, then the trailer. */
    Py_ssize_t n_consts = PyTuple_GET_SIZE(consts), n_trailer = PyTuple_GET_SIZE(trailer);
    new_consts = PyTuple_New(n_consts + 1 + n_trailer);
    if (new_consts == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_consts; i++) {
        PyTuple_SET_ITEM(new_consts, i, Py_NewRef(PyTuple_GET_ITEM(consts, i)));
    }
    PyTuple_SET_ITEM(new_consts, n_consts, Py_NewRef(probe));
    for (Py_ssize_t i = 0; i < n_trailer; i++) {
        PyTuple_SET_ITEM(new_consts, n_consts + 1 + i, Py_NewRef(PyTuple_GET_ITEM(trailer, i)));
    }

    linetable = FP_CODE_LINES(co);
    if (linetable == NULL || !PyBytes_Check(linetable)) {
        goto done;
    }
    if (st->line_table == LNOTAB) {
        new_lines = lnotab_39((const unsigned char *)PyBytes_AS_STRING(linetable), PyBytes_GET_SIZE(linetable),
                              co->co_firstlineno, &offsets);
        if (new_lines == NULL) {
            goto done;
        }
    }
    else {
        new_lines = lengthen_entries((const unsigned char *)PyBytes_AS_STRING(linetable), PyBytes_GET_SIZE(linetable),
                                     ins, n_ins, st->line_table == LOCATIONS, !st->entry_has_line);
        if (new_lines == NULL) {
            if (PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                PyErr_SetObject(st->splice_error, value);
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
            }
            goto done;
        }
    }
#if FP_HAVE_EXCEPTION_TABLE
    if (st->has_exception_table) {
        PyObject *exctable = FP_CODE_EXCEPTIONS(co);  /* borrowed */
        Py_ssize_t hole_start = offsets_boundary(&offsets, entry_at);
        new_exc = exception_table(st, (const unsigned char *)PyBytes_AS_STRING(exctable), PyBytes_GET_SIZE(exctable),
                                  &offsets, hole_start, hole_start + entry_len / 2);
        if (new_exc == NULL) {
            goto done;
        }
    }
#endif
    result = fp_code_with(co, new_code, new_consts, co->co_stacksize + 1 > 2 ? co->co_stacksize + 1 : 2, new_lines,
                          new_exc);

done:
    PyMem_Free(u.units);
    Py_XDECREF(linetable);
    Py_XDECREF(new_code);
    Py_XDECREF(new_consts);
    Py_XDECREF(new_lines);
    Py_XDECREF(new_exc);
    PyMem_Free(scratch);
    PyMem_Free(grown_content);
    PyMem_Free(offsets.b);
    PyMem_Free(out.data);
    return result;
}

static int
cs_check_configured(cs_state *st)
{
    if (!st->configured) {
        PyErr_SetString(PyExc_RuntimeError, "fastpatch._csplice is not configured");
        return -1;
    }
    return 0;
}

/* splice(code, probe, trailer) -> code: see _splice.splice. */
static PyObject *
cs_splice(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    if (nargs != 3 || !PyCode_Check(args[0]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "splice(code, probe, trailer: tuple)");
        return NULL;
    }
    if (cs_check_configured(st) < 0) {
        return NULL;
    }
    return splice_impl(st, args[0], ((PyCodeObject *)args[0])->co_consts, args[1], args[2]);
}

/* ------------------------------------------------------------------ */
/* patch_tree: _patch.patch_module_code's walk                         */
/* ------------------------------------------------------------------ */

typedef struct {
    cs_state *st;
    PyObject *module;        /* str */
    PyObject *probe_type;    /* _ext.Probe */
    PyObject *lazy_origin;   /* _ext.lazy_origin: a new Origin, listed in the lazy table */
    PyObject *instrumented;  /* list of qualnames */
    PyObject *skipped;       /* list of (qualname, reason) */
} cs_tree;

static PyObject *tree_function(cs_tree *t, PyObject *code, PyObject *qualname);

/* The qualified name of `code`, nested in `parent` whose qualified name is
   `parent_qualname` ("" for a module): 3.11+ code objects carry it; for
   3.9/3.10 it is built as the compiler builds it. New reference. */
static PyObject *
tree_qualname(PyObject *parent, PyObject *parent_qualname, PyObject *code)
{
#ifdef FP_CODE_QUALNAME
    (void)parent;
    (void)parent_qualname;
    return FP_CODE_QUALNAME((PyCodeObject *)code);
#else
    PyObject *name = ((PyCodeObject *)code)->co_name;
    if (((PyCodeObject *)parent)->co_flags & CO_OPTIMIZED) {
        return PyUnicode_FromFormat("%U.<locals>.%U", parent_qualname, name);
    }
    if (PyUnicode_GET_LENGTH(parent_qualname) == 0) {
        return Py_NewRef(name);
    }
    return PyUnicode_FromFormat("%U.%U", parent_qualname, name);
#endif
}

/* The constants of `code` with each nested code object patched (a new
   tuple), or its own constants (a new reference) when nothing changed. */
static PyObject *
tree_consts(cs_tree *t, PyObject *code, PyObject *qualname)
{
    PyObject *consts = ((PyCodeObject *)code)->co_consts;
    Py_ssize_t n = PyTuple_GET_SIZE(consts);
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (!PyCode_Check(c)) {
            continue;
        }
        PyObject *inner = tree_qualname(code, qualname, c);
        if (inner == NULL) {
            goto fail;
        }
        PyObject *patched = tree_function(t, c, inner);
        Py_DECREF(inner);
        if (patched == NULL) {
            goto fail;
        }
        if (patched == c) {
            Py_DECREF(patched);
            continue;
        }
        if (out == NULL) {
            out = PyTuple_New(n);
            if (out == NULL) {
                Py_DECREF(patched);
                goto fail;
            }
            for (Py_ssize_t k = 0; k < n; k++) {
                PyTuple_SET_ITEM(out, k, Py_NewRef(PyTuple_GET_ITEM(consts, k)));
            }
        }
        PyObject *old = PyTuple_GET_ITEM(out, i);
        PyTuple_SET_ITEM(out, i, patched);  /* steals patched */
        Py_DECREF(old);
    }
    return out != NULL ? out : Py_NewRef(consts);
fail:
    Py_XDECREF(out);
    return NULL;
}

/* code.replace(co_consts=consts) */
static PyObject *
tree_replace_consts(cs_tree *t, PyObject *code, PyObject *consts)
{
    (void)t;
    PyCodeObject *co = (PyCodeObject *)code;
    PyObject *units = FP_CODE_BYTES(co), *lines = FP_CODE_LINES(co), *result = NULL;
    if (units != NULL && lines != NULL) {
#if FP_HAVE_EXCEPTION_TABLE
        PyObject *exceptions = FP_CODE_EXCEPTIONS(co);
#else
        PyObject *exceptions = NULL;
#endif
        result = fp_code_with(co, units, consts, co->co_stacksize, lines, exceptions);
    }
    Py_XDECREF(units);
    Py_XDECREF(lines);
    return result;
}

static int
tree_skip(cs_tree *t, PyObject *qualname, const char *reason)
{
    PyObject *item = Py_BuildValue("(Os)", qualname, reason);
    if (item == NULL) {
        return -1;
    }
    int rc = PyList_Append(t->skipped, item);
    Py_DECREF(item);
    return rc;
}

/* A nested code object, its own nested functions first, spliced if it is a
   function (_patch._patch_function_tree). New reference. */
static PyObject *
tree_function(cs_tree *t, PyObject *code, PyObject *qualname)
{
    PyObject *consts = tree_consts(t, code, qualname);
    if (consts == NULL) {
        return NULL;
    }
    PyObject *own = ((PyCodeObject *)code)->co_consts;
    Py_ssize_t n = PyTuple_GET_SIZE(own);
    PyObject *result = NULL, *probe = NULL, *origin = NULL, *trailer = NULL;
    if (!(((PyCodeObject *)code)->co_flags & CO_OPTIMIZED)) {  /* a class body: only what it defines is timed */
        result = consts == own ? Py_NewRef(code) : tree_replace_consts(t, code, consts);
        goto done;
    }
    if (n >= 2 && (PyObject *)Py_TYPE(PyTuple_GET_ITEM(own, n - 2)) == t->probe_type) {
        /* .pyc files never hold probes: a reload of code spliced here */
        if (tree_skip(t, qualname, "already carries a fastpatch probe") < 0) {
            goto done;
        }
        result = consts == own ? Py_NewRef(code) : tree_replace_consts(t, code, consts);
        goto done;
    }
    probe = PyObject_CallNoArgs(t->probe_type);
    if (probe == NULL) {
        goto done;
    }
    /* registered lazily: the Origin holds all a definition needs */
    PyObject *origin_args[4] = {code, probe, t->module, qualname};
    origin = PyObject_Vectorcall(t->lazy_origin, origin_args, 4, NULL);
    trailer = origin != NULL ? PyTuple_Pack(1, origin) : NULL;
    if (trailer == NULL) {
        goto done;
    }
    result = splice_impl(t->st, code, consts, probe, trailer);
    if (result == NULL) {
        if (!PyErr_ExceptionMatches(t->st->splice_error)) {
            goto done;
        }
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *reason = value != NULL ? PyObject_Str(value) : NULL;
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        if (reason == NULL) {
            goto done;
        }
        PyObject *item = PyTuple_Pack(2, qualname, reason);
        Py_DECREF(reason);
        if (item == NULL || PyList_Append(t->skipped, item) < 0) {
            Py_XDECREF(item);
            goto done;
        }
        Py_DECREF(item);
        result = consts == own ? Py_NewRef(code) : tree_replace_consts(t, code, consts);
        goto done;
    }
    if (PyList_Append(t->instrumented, qualname) < 0) {
        Py_CLEAR(result);
    }
done:
    Py_DECREF(consts);
    Py_XDECREF(probe);
    Py_XDECREF(origin);
    Py_XDECREF(trailer);
    return result;
}

/* patch_tree(code, module, probe_type, lazy_origin, instrumented, skipped) -> code:
   _patch.patch_module_code's walk over a module body's nested code objects. */
static PyObject *
cs_patch_tree(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    if (nargs != 6 || !PyCode_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyCallable_Check(args[3])
        || !PyList_Check(args[4]) || !PyList_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "patch_tree(code, module: str, probe_type, lazy_origin, instrumented: list, "
                        "skipped: list)");
        return NULL;
    }
    if (cs_check_configured(st) < 0) {
        return NULL;
    }
    cs_tree t = {st, args[1], args[2], args[3], args[4], args[5]};
    PyObject *top = PyUnicode_FromString("");
    if (top == NULL) {
        return NULL;
    }
    PyObject *consts = tree_consts(&t, args[0], top);
    Py_DECREF(top);
    if (consts == NULL) {
        return NULL;
    }
    PyObject *result = consts == ((PyCodeObject *)args[0])->co_consts ? Py_NewRef(args[0])
                                                                       : tree_replace_consts(&t, args[0], consts);
    Py_DECREF(consts);
    return result;
}

/* ------------------------------------------------------------------ */
/* configure                                                           */
/* ------------------------------------------------------------------ */

static int
copy_bytes_attr(PyObject *dialect, const char *name, unsigned char **dst, Py_ssize_t *len)
{
    PyObject *value = PyObject_GetAttrString(dialect, name);
    if (value == NULL) {
        return -1;
    }
    if (!PyBytes_Check(value)) {
        PyErr_Format(PyExc_TypeError, "Dialect.%s is not bytes", name);
        Py_DECREF(value);
        return -1;
    }
    *len = PyBytes_GET_SIZE(value);
    PyMem_Free(*dst);
    *dst = PyMem_Malloc((size_t)*len + 1);
    if (*dst == NULL) {
        Py_DECREF(value);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*dst, PyBytes_AS_STRING(value), (size_t)*len);
    Py_DECREF(value);
    return 0;
}

/* An int attribute, None as -1. */
static int
int_attr(PyObject *dialect, const char *name, int *dst)
{
    PyObject *value = PyObject_GetAttrString(dialect, name);
    if (value == NULL) {
        return -1;
    }
    if (value == Py_None) {
        *dst = -1;
    }
    else {
        long v = PyLong_AsLong(value);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(value);
            return -1;
        }
        *dst = (int)v;
    }
    Py_DECREF(value);
    return 0;
}

/* configure(dialect, splice_error): the running version's Dialect. */
static PyObject *
cs_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure(dialect, splice_error)");
        return NULL;
    }
    PyObject *dialect = args[0];
    unsigned char *caches = NULL, *jumps = NULL, *deopt = NULL;
    Py_ssize_t caches_len = 0, jumps_len = 0, deopt_len = 0;
    PyObject *line_table = NULL;
    int has_exc = 0;
    st->configured = 0;
    if (copy_bytes_attr(dialect, "caches", &caches, &caches_len) < 0
        || copy_bytes_attr(dialect, "jumps", &jumps, &jumps_len) < 0
        || copy_bytes_attr(dialect, "deopt", &deopt, &deopt_len) < 0
        || copy_bytes_attr(dialect, "entry_tail", &st->entry_tail, &st->entry_tail_len) < 0
        || copy_bytes_attr(dialect, "stacked_entry_tail", &st->stacked_entry_tail, &st->stacked_entry_tail_len) < 0
        || copy_bytes_attr(dialect, "exit", &st->exit, &st->exit_len) < 0
        || copy_bytes_attr(dialect, "return_value_code", &st->return_value_code, &st->return_value_code_len) < 0
        || int_attr(dialect, "extended_arg", &st->extended_arg) < 0
        || int_attr(dialect, "return_value", &st->return_value) < 0
        || int_attr(dialect, "return_const", &st->return_const) < 0
        || int_attr(dialect, "load_const", &st->load_const) < 0
        || int_attr(dialect, "entry_before", &st->entry_before) < 0
        || int_attr(dialect, "entry_before_mask", &st->entry_before_mask) < 0
        || int_attr(dialect, "genexpr_start", &st->genexpr_start) < 0
        || int_attr(dialect, "generator_start", &st->generator_start) < 0
        || int_attr(dialect, "entry_has_line", &st->entry_has_line) < 0
        || int_attr(dialect, "has_exception_table", &has_exc) < 0
        || int_attr(dialect, "jump_unit", &st->jump_unit) < 0) {
        goto fail;
    }
    if (caches_len != 256 || jumps_len != 256 || deopt_len != 256) {
        PyErr_SetString(PyExc_ValueError, "Dialect.caches, .jumps and .deopt need 256 entries");
        goto fail;
    }
    for (int op = 0; op < 256; op++) {
        if (caches[op] > CS_MAX_CACHES) {
            PyErr_Format(PyExc_ValueError, "opcode %d has %d inline cache units: the C splicer handles %d at most",
                         op, caches[op], CS_MAX_CACHES);
            goto fail;
        }
    }
    line_table = PyObject_GetAttrString(dialect, "line_table");
    if (line_table == NULL) {
        goto fail;
    }
    if (PyUnicode_CompareWithASCIIString(line_table, "lnotab") == 0) {
        st->line_table = LNOTAB;
    }
    else if (PyUnicode_CompareWithASCIIString(line_table, "linetable") == 0) {
        st->line_table = LINETABLE;
    }
    else {
        st->line_table = LOCATIONS;
    }
    st->has_exception_table = has_exc;
    memcpy(st->caches, caches, 256);
    memcpy(st->jumps, jumps, 256);
    memcpy(st->deopt, deopt, 256);
    for (int op = 0; op < 256; op++) {
        st->interesting[op] = (unsigned char)(jumps[op] != 0 || op == st->return_value || op == st->return_const);
    }
    Py_XSETREF(st->splice_error, Py_NewRef(args[1]));
    st->configured = 1;
    PyMem_Free(caches);
    PyMem_Free(jumps);
    PyMem_Free(deopt);
    Py_DECREF(line_table);
    Py_RETURN_NONE;
fail:
    PyMem_Free(caches);
    PyMem_Free(jumps);
    PyMem_Free(deopt);
    Py_XDECREF(line_table);
    return NULL;
}

static PyMethodDef cs_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))cs_configure, METH_FASTCALL,
     "configure(dialect, splice_error): the running CPython's _recipes.Dialect."},
    {"splice", (PyCFunction)(void (*)(void))cs_splice, METH_FASTCALL,
     "splice(code, probe, trailer) -> code: as fastpatch._splice.splice."},
    {"patch_tree", (PyCFunction)(void (*)(void))cs_patch_tree, METH_FASTCALL,
     "patch_tree(code, module, probe_type, lazy_origin, instrumented, skipped) -> code: "
     "as fastpatch._patch.patch_module_code's walk."},
    {NULL, NULL, 0, NULL},
};

static int
cs_exec(PyObject *module)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    memset(st, 0, sizeof(*st));
    return 0;
}

static int
cs_traverse(PyObject *module, visitproc visit, void *arg)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    Py_VISIT(st->splice_error);
    return 0;
}

static int
cs_clear(PyObject *module)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    Py_CLEAR(st->splice_error);
    return 0;
}

static void
cs_free(void *module)
{
    cs_state *st = (cs_state *)PyModule_GetState((PyObject *)module);
    PyMem_Free(st->entry_tail);
    PyMem_Free(st->stacked_entry_tail);
    PyMem_Free(st->exit);
    PyMem_Free(st->return_value_code);
    st->entry_tail = st->stacked_entry_tail = st->exit = st->return_value_code = NULL;
    cs_clear((PyObject *)module);
}

static PyModuleDef_Slot cs_slots[] = {
    {Py_mod_exec, cs_exec},
#if FP_HAVE_MULTIPLE_INTERPRETERS_SLOT
    /* Everything is in the module state, per interpreter. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if FP_HAVE_MOD_GIL_SLOT
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef cs_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastpatch._csplice",
    .m_doc = "The splicer's loop in C: the same transformation as fastpatch._splice.",
    .m_size = sizeof(cs_state),
    .m_methods = cs_methods,
    .m_slots = cs_slots,
    .m_traverse = cs_traverse,
    .m_clear = cs_clear,
    .m_free = cs_free,
};

PyMODINIT_FUNC
PyInit__csplice(void)
{
    return PyModuleDef_Init(&cs_module);
}
