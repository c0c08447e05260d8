/*
 * _csplice_phases.h -- the splice of one code object (_csplice_phases.c),
 * for the module's splice() and the tree walk.
 */
#ifndef FASTPATCH_CSPLICE_PHASES_H
#define FASTPATCH_CSPLICE_PHASES_H

#include "_csplice_dialect.h"

/* A new reference to the splice of `code`, whose constants are `consts`
   (its own, or the same with nested code objects already spliced), with
   `probe` and the tuple `trailer` appended to them; or NULL with an
   exception (SpliceError for a code object the splicer does not
   recognise). */
FP_INTERNAL PyObject *cs_splice_code(cs_state *st, PyObject *code, PyObject *consts, PyObject *probe,
                                     PyObject *trailer);

#endif /* FASTPATCH_CSPLICE_PHASES_H */
