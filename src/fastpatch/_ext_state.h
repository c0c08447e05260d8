/*
 * _ext_state.h -- the module state of fastpatch._ext: one per interpreter
 * that imports it (multi-phase init), reached from a module object or from
 * a type the module made (PyType_GetModuleState).
 */
#ifndef FASTPATCH_EXT_STATE_H
#define FASTPATCH_EXT_STATE_H

#include "_compat.h"

typedef struct TokenObject TokenObject;
typedef struct ProbeObject ProbeObject;

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
    uint32_t default_sample;  /* the sampling rate of probes this interpreter creates from now on */
    /* The called list: every live probe of this interpreter that has been
       activated (since the fork, in a forked child), borrowed, in no
       particular order. A probe is appended at its first activation (the
       cold path that allocates its histogram) and takes itself out as it
       dies, swapping the last one into its place (ProbeObject.called_index).
       A snapshot writer walks this, never the registry. */
    ProbeObject **called;
    /* Beside each entry of called, live telemetry's place for the probe
       (_ext_telemetry.c): file number << 32 | record slot + 1, 0 for none.
       Kept here rather than in the probe, which stays 128 bytes uncalled. */
    uint64_t *called_records;
    uint32_t n_called;
    uint32_t called_capacity;
} fp_state;

/* Tokens beyond this many idle ones are returned to the allocator. */
#define FP_MAX_FREE_TOKENS 4096

static inline fp_state *
fp_state_of(PyObject *module)
{
    return (fp_state *)PyModule_GetState(module);
}

#endif /* FASTPATCH_EXT_STATE_H */
