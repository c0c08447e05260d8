/*
 * _ext_probe.h -- the Probe (one per instrumented definition) and the Token
 * (one per running or suspended activation), as _ext_probe.c defines them,
 * for the other files of fastpatch._ext: Origin sets a probe's error rule
 * and reads its call count, the module setup makes the types, the test
 * hooks measure them.
 */
#ifndef FASTPATCH_EXT_PROBE_H
#define FASTPATCH_EXT_PROBE_H

#include "_compat.h"
#include "_ext_state.h"

typedef struct {
    PyObject_HEAD
    TokenObject *spare;   /* strong: an idle token for the next activation */
    int tsc;              /* this probe's clock: 1 for the TSC, 0 for CLOCK_MONOTONIC */
    int stop_errors;      /* FP_STOP_*_IS_ERROR: which iteration end signals are errors here (Origin) */
    uint64_t calls;       /* activations started */
    uint64_t completed;   /* activations ended, however */
    uint64_t errors;      /* activations ended by an exception */
    uint64_t total_ticks; /* durations of the ended activations, in this probe's clock ticks */
    uint64_t min_ticks;
    uint64_t max_ticks;
    /* The duration of the latest normal return, in this probe's clock ticks
       (ns, or TSC ticks), not yet folded into the counters; FP_NO_PENDING
       when there is none. See token_exit. */
    int64_t pending_ticks;
    /* FP_HIST_BUCKETS counts, allocated by the first activation: a whole
       program's import hook makes a probe for every function it splices,
       and most of them are never called. */
    uint32_t *hist;
} ProbeObject;

#define FP_NO_PENDING (-1)

/*
 * StopIteration and StopAsyncIteration are how __next__ and __anext__ (and
 * a helper raising on their behalf) say "no more": an activation that ends
 * with one of them, as the exception its caller receives, ended normally.
 * Where CPython turns one into RuntimeError as it leaves the frame (PEP 479:
 * StopIteration out of a generator, coroutine or async generator; PEP 525:
 * StopAsyncIteration out of an async generator), the caller receives an
 * error, and so it is one. Set from the code's flags when the probe's
 * Origin is made (origin_make, _ext_origin.c); 0, a plain function's rule, until then.
 */
#define FP_STOP_ITERATION_IS_ERROR 1
#define FP_STOP_ASYNC_ITERATION_IS_ERROR 2

/*
 * A token's probe pointer is borrowed. The token sits on the value stack
 * of a frame running the probe's code, that code holds the probe among its
 * constants, and every CPython clears a frame's value stack before it drops
 * the frame's code. probe_dealloc still refuses to free a probe with
 * activations outstanding, for a token that something took off a frame
 * (gc.get_referents) and kept past the frame's end.
 */
struct TokenObject {
    PyObject_HEAD
    ProbeObject *probe;   /* set while the activation runs, NULL while idle */
    int64_t start_ticks;  /* in the probe's clock */
    fp_state *state;      /* kept alive by the token type's module */
    TokenObject *next;    /* free-list link, meaningful only while idle */
};

FP_INTERNAL extern PyType_Spec fp_probe_spec;
FP_INTERNAL extern PyType_Spec fp_token_spec;

/* The module's free list, at the module's end: frees every idle token on it. */
FP_INTERNAL void fp_free_idle_tokens(fp_state *st);

/* Module function (METH_NOARGS) forked_child(): see fp_fork_floor_ticks. */
FP_INTERNAL PyObject *fp_forked_child(PyObject *module, PyObject *ignored);

#endif /* FASTPATCH_EXT_PROBE_H */
