/*
 * _csplice.h -- what the C files of fastpatch._csplice share: the dialect as
 * configure() copied it, the byte buffer, the insertions and the offset map
 * they make, and each file's entry points.
 *
 *   _csplice.c          the module: configure(), splice(), patch_tree()
 *   _csplice_phases.c   the splice of one code object, in the phases
 *                       _pysplice.py names
 *   _csplice_tables.c   its line table and exception table
 *   _ctree.c            the walk over a module's tree of code objects
 */
#ifndef FASTPATCH_CSPLICE_H
#define FASTPATCH_CSPLICE_H

#include <string.h>

#include "_compat.h"

/* Jump kinds (_recipes.py) and the sides of an insertion (_pysplice.py). */
enum { NOT_A_JUMP = 0, ABSOLUTE = 1, FORWARD = 2, BACKWARD = 3 };
enum { AFTER_PREVIOUS = 0, ENTRY = 1, BEFORE_NEXT = 2 };
/* Dialect.line_table: the encodings the splicers know. */
enum { LNOTAB = 0, LINETABLE = 1, LOCATIONS = 2 };

/* More inline cache units than any opcode has so far (10 at most, on
   3.11); configure() refuses a dialect with more. */
#define CS_MAX_CACHES 16

/* The running version's _recipes.Dialect, copied by configure(): the module
   state, one per interpreter. Opcodes that do not exist there are -1. */
typedef struct {
    int configured;
    unsigned char caches[256];
    unsigned char jumps[256];
    unsigned char returns_and_jumps[256];  /* 1 for each opcode that returns or jumps */
    unsigned char deopt[256];   /* Dialect.deopt: each opcode as compiled, 0 where unknown */
    int extended_arg, return_value, return_const, load_const;
    /* The prologue (_recipes.Prologue). */
    int entry_before, where_mask, stacked_marker, stacked_where;
    int entry_has_line, line_table, has_exception_table, jump_unit;
    unsigned char *entry_tail, *stacked_entry_tail, *exit_code, *return_value_code;
    Py_ssize_t entry_tail_len, stacked_entry_tail_len, exit_code_len, return_value_code_len;
    PyObject *splice_error;   /* fastpatch._splice.SpliceError */
} cs_state;

/* ------------------------------------------------------------------ */
/* A growable byte buffer                                              */
/* ------------------------------------------------------------------ */

typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
} cs_buf;

/* 0, or -1 with MemoryError set. */
static inline int
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

static inline int
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

static inline int
buf_byte(cs_buf *b, int value)
{
    unsigned char c = (unsigned char)value;
    return buf_put(b, &c, 1);
}

/* ------------------------------------------------------------------ */
/* Insertions and the offset map (_pysplice._Insertion, _OffsetMap)    */
/* ------------------------------------------------------------------ */

typedef struct {
    Py_ssize_t at;       /* code unit boundary in the original code */
    int side;
    Py_ssize_t units;
    const unsigned char *content;   /* NULL: a jump's added EXTENDED_ARGs, until they are written */
    Py_ssize_t jump;     /* for those: the jump's index; else -1 */
} cs_insertion;

/* One entry per distinct boundary with insertions, in order. */
typedef struct {
    Py_ssize_t at, before, prev, entry, all;
} cs_boundary;

typedef struct {
    cs_boundary *b;
    Py_ssize_t n;
} cs_offsets;

/* (where boundary x's own insertions start, its group of insertions in *own
   or NULL if it has none). */
static inline Py_ssize_t
offsets_position_and_group(const cs_offsets *o, Py_ssize_t x, const cs_boundary **own)
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

/* A jump or handler target: after the entry, on a return's prefix. */
static inline Py_ssize_t
offsets_target(const cs_offsets *o, Py_ssize_t x)
{
    const cs_boundary *own;
    Py_ssize_t pos = offsets_position_and_group(o, x, &own);
    return own ? pos + own->prev + own->entry : pos;
}

/* A range boundary (line tables, range ends): before what belongs to the next instruction. */
static inline Py_ssize_t
offsets_boundary(const cs_offsets *o, Py_ssize_t x)
{
    const cs_boundary *own;
    Py_ssize_t pos = offsets_position_and_group(o, x, &own);
    return own ? pos + own->prev : pos;
}

/* The original instruction starting at x: after everything inserted at x. */
static inline Py_ssize_t
offsets_own(const cs_offsets *o, Py_ssize_t x)
{
    const cs_boundary *own;
    Py_ssize_t pos = offsets_position_and_group(o, x, &own);
    return own ? pos + own->all : pos;
}

/* ------------------------------------------------------------------ */
/* Entry points of the files                                           */
/* ------------------------------------------------------------------ */

/* _csplice_phases.c: a new reference to the splice of `code`, whose
   constants are `consts` (its own, or the same with nested code objects
   already spliced), with `probe` and the tuple `trailer` appended to them;
   or NULL with an exception (SpliceError for a code object the splicer
   does not recognise). */
FP_INTERNAL PyObject *cs_splice_code(cs_state *st, PyObject *code, PyObject *consts, PyObject *probe,
                                     PyObject *trailer);

/* _csplice_tables.c: the spliced code's tables, new bytes or NULL with an
   exception. The 3.10+ line table with the entries covering each
   insertion's instruction lengthened (`ins` in order); 3.9's lnotab with
   its line changes moved; the 3.11+ exception table with its ranges moved,
   none covering the entry (hole_start to hole_end). */
FP_INTERNAL PyObject *cs_lengthened_line_table(const cs_state *st, const unsigned char *table, Py_ssize_t len,
                                               const cs_insertion *ins, Py_ssize_t n_ins, int locations,
                                               int entry_unlocated);
FP_INTERNAL PyObject *cs_moved_lnotab(const unsigned char *table, Py_ssize_t len, int firstlineno,
                                      const cs_offsets *o);
#if FP_HAVE_EXCEPTION_TABLE
FP_INTERNAL PyObject *cs_moved_exception_table(const cs_state *st, const unsigned char *t, Py_ssize_t len,
                                               const cs_offsets *o, Py_ssize_t hole_start, Py_ssize_t hole_end);
#endif

/* _ctree.c: a new reference to `code` (a module body) with every function
   nested in it spliced, or NULL with an exception; see cs_patch_tree in
   _csplice.c for the arguments. */
FP_INTERNAL PyObject *cs_walk_tree(cs_state *st, PyObject *code, PyObject *module, PyObject *probe_type,
                                   PyObject *lazy_origin, PyObject *instrumented, PyObject *skipped,
                                   PyObject *wanted);

#endif /* FASTPATCH_CSPLICE_H */
