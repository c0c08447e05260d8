/*
 * _ctree.h -- the walk over a module's tree of code objects (_ctree.c), for
 * the module's patch_tree().
 */
#ifndef FASTPATCH_CTREE_H
#define FASTPATCH_CTREE_H

#include "_csplice_dialect.h"

/* A new reference to `code` (a module body) with every function nested in
   it spliced, or NULL with an exception; see cs_patch_tree in _csplice.c
   for the arguments (`wanted`: NULL for every function). */
FP_INTERNAL PyObject *cs_walk_tree(cs_state *st, PyObject *code, PyObject *module, PyObject *probe_type,
                                   PyObject *lazy_origin, PyObject *instrumented, PyObject *skipped,
                                   PyObject *wanted);

#endif /* FASTPATCH_CTREE_H */
