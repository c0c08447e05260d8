/*
 * _csplice_dialect.h -- the running version's _recipes.Dialect, as
 * configure() (_csplice.c) copied it into fastpatch._csplice's module
 * state: what every C file of the splicer works from (_csplice.c lists
 * them).
 */
#ifndef FASTPATCH_CSPLICE_DIALECT_H
#define FASTPATCH_CSPLICE_DIALECT_H

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

#endif /* FASTPATCH_CSPLICE_DIALECT_H */
