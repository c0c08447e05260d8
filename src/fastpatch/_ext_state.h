/*
 * _ext_state.h -- the module state of fastpatch._ext: one per interpreter
 * that imports it (multi-phase init), reached from a module object or from
 * a type the module made (PyType_GetModuleState).
 */
#ifndef FASTPATCH_EXT_STATE_H
#define FASTPATCH_EXT_STATE_H

#include "_compat.h"

typedef struct TokenObject TokenObject;

typedef struct {
    PyTypeObject *probe_type;
    PyTypeObject *token_type;
    PyTypeObject *origin_type;
    /* The lazy table: id(original code) -> id(Origin), both ints, of the
       Origins waiting to be registered (see _ext_origin.c). */
    PyObject *lazy;
    TokenObject *free_tokens; /* idle tokens, singly linked through TokenObject.next (_ext_probe.c) */
    Py_ssize_t n_free;
    int default_tsc;          /* the clock of probes this interpreter creates from now on */
} fp_state;

/* Tokens beyond this many idle ones are returned to the allocator. */
#define FP_MAX_FREE_TOKENS 4096

static inline fp_state *
fp_state_of(PyObject *module)
{
    return (fp_state *)PyModule_GetState(module);
}

#endif /* FASTPATCH_EXT_STATE_H */
