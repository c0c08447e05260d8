/*
 * _csplice_tables.h -- the spliced code's line table and exception table
 * (_csplice_tables.c), for the last phase, rewrite_tables. Each returns new
 * bytes, or NULL with an exception.
 */
#ifndef FASTPATCH_CSPLICE_TABLES_H
#define FASTPATCH_CSPLICE_TABLES_H

#include "_csplice_dialect.h"
#include "_csplice_insertions.h"

/* The 3.10+ line table with the entries covering each insertion's
   instruction lengthened (`ins` in order). */
FP_INTERNAL PyObject *cs_lengthened_line_table(const cs_state *st, const unsigned char *table, Py_ssize_t len,
                                               const cs_insertion *ins, Py_ssize_t n_ins, int locations,
                                               int entry_unlocated);

/* 3.9's lnotab with its line changes moved through the offset map. */
FP_INTERNAL PyObject *cs_moved_lnotab(const unsigned char *table, Py_ssize_t len, int firstlineno,
                                      const cs_offsets *o);

#if FP_HAVE_EXCEPTION_TABLE
/* The 3.11+ exception table with its ranges moved, none covering the entry
   (hole_start to hole_end). */
FP_INTERNAL PyObject *cs_moved_exception_table(const cs_state *st, const unsigned char *t, Py_ssize_t len,
                                               const cs_offsets *o, Py_ssize_t hole_start, Py_ssize_t hole_end);
#endif

#endif /* FASTPATCH_CSPLICE_TABLES_H */
