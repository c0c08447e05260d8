/*
 * _csplice_insertions.h -- what the splice's phases (_csplice_phases.c) and
 * its tables (_csplice_tables.c) share: a growable byte buffer, the
 * insertions a splice makes, and the offset map they define (static inline:
 * the tables query it for every entry).
 */
#ifndef FASTPATCH_CSPLICE_INSERTIONS_H
#define FASTPATCH_CSPLICE_INSERTIONS_H

#include <string.h>

#include "_compat.h"

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

#endif /* FASTPATCH_CSPLICE_INSERTIONS_H */
