/*
 * _ext_probe.h -- the Probe (one per instrumented definition) and the Token
 * (one per running or suspended activation), as _ext_probe.c defines them,
 * for the other files of fastpatch._ext: Origin sets a probe's error rule
 * and reads its call count, the module setup makes the types, the test
 * hooks measure them. A snapshot writer (telemetry) reads the fields of
 * the probes in the module's called list directly, under the GIL, after
 * probe_flush-ing the pending return: see fp_probe_flush.
 */
#ifndef FASTPATCH_EXT_PROBE_H
#define FASTPATCH_EXT_PROBE_H

#include "_compat.h"
#include "_ext_state.h"

struct ProbeObject {
    PyObject_HEAD
    TokenObject *spare;   /* strong: an idle token for the next activation */
    int tsc;              /* this probe's clock: 1 for the TSC, 0 for CLOCK_MONOTONIC */
    int stop_errors;      /* FP_STOP_*_IS_ERROR: which iteration end signals are errors here (Origin) */
    /* The sampling rate: 1 times every activation (exact timing, the
       default), N >= 2 times each activation with probability 1/N, 0 times
       none (count-only: no clock read at all). Set by set_sample(); it
       applies from the next activation, whose token carries its weight. */
    uint32_t sample;
    /* What the next activation's entry does (see probe_enter):
       0            time it on the TSC: sample 1 on the fast clock, the
                    steady state of exact timing;
       2 and above  leave it untimed, and count down;
       1            a timed activation of a sampled probe, which draws the
                    next gap (probe_enter_sampled on the TSC, else the
                    general half); otherwise the general half decides
                    (probe_decide_weight): exact timing on CLOCK_MONOTONIC,
                    which stays 1; count-only, which starts again from
                    UINT32_MAX. */
    uint32_t countdown;
    uint32_t epoch;        /* bumped by reset() and a forked child's clear(): the counters restarted */
    uint32_t called_index; /* where this probe is in the module's called list, or FP_NOT_CALLED */
    uint64_t calls;       /* activations started */
    uint64_t completed;   /* activations ended, however */
    uint64_t errors;      /* activations ended by an exception */
    uint64_t untimed;     /* activations ended that were not timed: timed = completed - untimed */
    /* Horvitz-Thompson sums: a timed activation chosen with probability
       1/N adds N to its bucket and N times its duration to the total (N = 1
       under exact timing); min and max are over the timed activations. */
    uint64_t total_ticks; /* in this probe's clock ticks */
    uint64_t min_ticks;
    uint64_t max_ticks;
    /* The duration of the latest normal return timed with weight 1 on the
       fast clock, in TSC ticks, not yet folded into the counters;
       FP_NO_PENDING when there is none (always, on CLOCK_MONOTONIC). See
       token_exit. */
    int64_t pending_ticks;
    /* FP_HIST_BUCKETS weighted counts, allocated by the first activation
       (with the probe's place in the called list): a whole program's import
       hook makes a probe for every function it splices, and most of them
       are never called. 64 bits and never halved, so that every count only
       grows between two resets. */
    uint64_t *hist;
    /* 1 / -ln(1 - 1/sample) when sample >= 2 (else 0): what turns an
       exponential draw into the geometric gap to the next timed activation
       (see sampler_gap). */
    double gap_per_nat;
};

/* called_index of a probe not in its module's called list. */
#define FP_NOT_CALLED UINT32_MAX

/* The largest sampling rate set_sample() accepts. */
#define FP_MAX_SAMPLE 1000000000u

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
    /* In the probe's clock when timed; when untimed, the number of forks
       seen at the start (see fp_fork_floor_ticks), which is what tells an
       activation begun before a fork. */
    int64_t start_ticks;
    /* The weight of this activation, decided at its start so that a
       suspended generator or coroutine keeps it across a change of rate: 0
       untimed, N timed with probability 1/N. An idle token's is 1, which
       the fast entry of exact timing relies on to leave it unwritten. */
    uint32_t weight;
    fp_state *state;      /* kept alive by the token type's module */
    TokenObject *next;    /* free-list link, meaningful only while idle */
};

FP_INTERNAL extern PyType_Spec fp_probe_spec;
FP_INTERNAL extern PyType_Spec fp_token_spec;

/* The module's free list, at the module's end: frees every idle token on it. */
FP_INTERNAL void fp_free_idle_tokens(fp_state *st);

/* Module function (METH_NOARGS) forked_child(): see fp_fork_floor_ticks. It
   also re-seeds the sampler and empties the called list: a probe is listed
   again at its first activation in the child. */
FP_INTERNAL PyObject *fp_forked_child(PyObject *module, PyObject *ignored);

/* Module function (METH_NOARGS) called_probes() -> list: the probes of the
   called list (see fp_state.called), in its order. */
FP_INTERNAL PyObject *fp_called_probes(PyObject *module, PyObject *ignored);

/* Module function (METH_O) set_default_sample(n) -> int: the rate of the
   probes made from now on (the import hook's, for a whole module); returns
   the previous one. */
FP_INTERNAL PyObject *fp_set_default_sample(PyObject *module, PyObject *arg);

/* The sampler's generator, process-wide: seeded from the operating system
   at the module's first import and in a forked child; the test hook seeds
   it with a known value. */
FP_INTERNAL void fp_sampler_seed(uint64_t seed);
FP_INTERNAL void fp_sampler_init(void);

/* The test hook's view of the draw: the gap that the nonzero random word
   `word` gives at rate `rate` (2 ... FP_MAX_SAMPLE), and the gap log() gives
   for it. 0, or -1 for a rate or word out of range. */
FP_INTERNAL int fp_sampler_gap_for_testing(uint32_t rate, uint64_t word, uint32_t *gap, uint32_t *gap_by_log);

/* Fold a probe's pending return into its counters: what every reader of
   total_ticks, min_ticks, max_ticks and hist does first (under the GIL). */
FP_INTERNAL void fp_probe_flush(ProbeObject *p);

#endif /* FASTPATCH_EXT_PROBE_H */
