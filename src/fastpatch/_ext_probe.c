/*
 * _ext_probe.c -- fastpatch._ext's Probe and Token: the hot path, whole in
 * this one translation unit (the clock reads and the histogram layout it
 * uses are static inline, from _ext_clock.h and _ext_histogram.h).
 *
 * The Python front end splices two tiny instruction sequences into a
 * function's own code object:
 *
 *   entry:   LOAD_CONST <probe>; UNARY_INVERT        -> pushes a Token
 *   return:  token[retval], a subscript              -> records, yields retval
 *
 * (The recipes in _recipes.py spell the subscript per version; on 3.9 the
 * exit drops the token instead, and its deallocator records the return.)
 * Neither the inversion nor the subscript is a call, so sys.setprofile,
 * sys.monitoring and cProfile see no C call: the probe reaches C through
 * the nb_invert and mp_subscript slots.
 *
 * The Token is the per-activation state. It lives at the bottom of the
 * frame's value stack, under everything the function itself pushes, so a
 * suspended generator or coroutine carries its own start time with it:
 * interleaved coroutines and greenlet stack switches cannot mix them up,
 * and nothing appears in locals() or co_varnames.
 *
 * An activation that does not end through a return (an exception leaving
 * the frame, close() of a suspended generator, finalisation) still drops
 * its token: the interpreter pops the value stack while unwinding or
 * clearing the frame. token_dealloc records those endings, so no exception
 * handler is injected and tracebacks are untouched.
 *
 * Everything here runs under the GIL and allocates nothing in the steady
 * state: tokens come from the probe's spare slot or from a free list kept
 * in the module state.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#if !defined(_WIN32)
#  include <fcntl.h>
#  include <unistd.h>
#endif

#include "_ext_clock.h"
#include "_ext_histogram.h"
#include "_ext_probe.h"
#include "_ext_state.h"
#include "_ext_telemetry.h"

/* ===================================================================== */
/* The free list of idle tokens (in the module state)                    */
/* ===================================================================== */

/*
 * Token lifecycle. Idle tokens are owned, one reference each, by their
 * probe's spare slot or by the module's free list, so an idle token never
 * dies. The entry probe hands that reference to the value stack; the
 * return probe gives the token back with a new reference before the
 * subscript drops the stack's one. The steady state therefore runs no
 * allocator (and, from 3.10, no deallocator), and a function that is not
 * re-entered finds its token in its own probe. A token's deallocator runs
 * when its frame is torn down without the exit's subscript (an exception, a
 * closed generator, every return on 3.9): token_dealloc records that end
 * and revives the token for its probe's spare slot or the free list; it is
 * freed only when the free list is full.
 */

static inline int
free_list_has_room(const fp_state *st)
{
    return st->n_free < FP_MAX_FREE_TOKENS;
}

/* Keep an idle token: the list takes the caller's reference (check
   free_list_has_room first). */
static inline void
free_list_push(fp_state *st, TokenObject *t)
{
    t->next = st->free_tokens;
    st->free_tokens = t;
    st->n_free++;
}

/* An idle token, whose reference (the list's) becomes the caller's, or NULL
   when the list is empty. */
static inline TokenObject *
free_list_pop(fp_state *st)
{
    TokenObject *t = st->free_tokens;
    if (t != NULL) {
        st->free_tokens = t->next;
        st->n_free--;
    }
    return t;
}

void
fp_free_idle_tokens(fp_state *st)
{
    /* Idle tokens are live objects owned by the list; they hold their type. */
    TokenObject *t;
    while ((t = free_list_pop(st)) != NULL) {
        Py_DECREF(Py_TYPE(t));
        PyObject_Free(t);
    }
}

/* ===================================================================== */
/* Probe: one per instrumented definition                                */
/* ===================================================================== */

/* What snapshot() shows of a probe that never ran. */
static const uint64_t fp_empty_hist[FP_HIST_BUCKETS] = {0};

/*
 * fork: a child keeps the instrumentation and starts with zeroed counters
 * (Python clears every probe after fork). Activations that were running or
 * suspended at the fork may still end in the child, the one that called
 * fork() always does; their starts were counted in the parent, which counts
 * their ends too, so the child ignores them, and merging the reports of
 * parent and child counts each activation once. Process-wide, per clock
 * (index: the probe's tsc flag); no fork means INT64_MIN. An untimed
 * activation reads no clock: its token's start is the number of forks this
 * process had seen at its start (fp_forks_seen), which is below the number
 * after any later fork, and not below its own. A count needs no clock
 * index, which keeps the untimed halves shorter than a floor does.
 */
static int64_t fp_fork_floor_ticks[2] = {INT64_MIN, INT64_MIN};
static int64_t fp_forks_seen = 0;

/* Whether an activation of weight 1 or more began before a fork. */
static inline int
timed_token_started_before_fork(const TokenObject *t, int tsc)
{
    return t->start_ticks < fp_fork_floor_ticks[tsc];
}

/* Whether an untimed activation (weight 0) began before a fork. */
static inline int
untimed_token_started_before_fork(const TokenObject *t)
{
    return t->start_ticks < fp_forks_seen;
}

static inline int
token_started_before_fork(const TokenObject *t, int tsc)
{
    return t->weight == 0 ? untimed_token_started_before_fork(t) : timed_token_started_before_fork(t, tsc);
}

/* ===================================================================== */
/* The sampler: which activations a sampled probe times                  */
/* ===================================================================== */

/*
 * Bernoulli sampling: each activation of a probe sampled at N is timed,
 * independently, with probability 1/N, so no periodic workload can alias
 * with the choice. Drawn as the gap to the next timed activation, which is
 * geometric (untimed activations before it: 0, 1, ... with mean N - 1), so
 * that an untimed activation costs a decrement and no random number.
 * xorshift64* (Vigna), process-wide under the GIL.
 *
 * The gap is drawn by inversion, floor(-ln(u) / -ln(1 - 1/N)) for u
 * uniform in (0, 1): u is a random word over 2**64 (never 0: xorshift64*'s
 * output is not), that is u = m * 2**-z with z the word's leading zeros and
 * m in [1/2, 1) its normalised mantissa, so -ln(u) = z ln 2 - ln(m). A
 * table of -ln at FP_GAP_SEGMENTS + 1 points of [1/2, 1] brackets -ln(m)
 * between two of its entries; when both ends of the bracket give the same
 * gap, that is the gap, exactly the one log() would give. Otherwise, for
 * about 0.7 N / FP_GAP_SEGMENTS of the draws (1 % at N = 16), log()
 * decides. The distribution is therefore the inversion's, geometric with
 * mean N - 1 gaps to the last bit of a double, without a log() per draw.
 */
static uint64_t fp_sampler_state = 0x9e3779b97f4a7c15ULL;

#define FP_GAP_SEGMENT_BITS 10
#define FP_GAP_SEGMENTS (1u << FP_GAP_SEGMENT_BITS)
#define FP_LN_2 0.6931471805599453
#define FP_MAX_GAP (UINT32_MAX - 2)  /* a countdown of FP_MAX_GAP + 1 stays below count-only's */

/* -ln(1/2 + j / (2 FP_GAP_SEGMENTS)) for j = 0 ... FP_GAP_SEGMENTS: from ln 2
   down to 0. Filled once per process, by fp_sampler_init. */
static double fp_gap_neg_log[FP_GAP_SEGMENTS + 1];

/* splitmix64's finaliser: spreads any seed (a pid, a time) over 64 bits. */
static uint64_t
sampler_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void
fp_sampler_seed(uint64_t seed)
{
    uint64_t s = sampler_mix(seed);
    fp_sampler_state = s != 0 ? s : 0x9e3779b97f4a7c15ULL;  /* xorshift's one forbidden state */
}

/* 64 bits from the operating system, mixed with the time, the pid and an
   address (all a system without /dev/urandom gets). */
static void
sampler_seed_from_os(void)
{
#if defined(_WIN32)
    uint64_t pid = (uint64_t)GetCurrentProcessId();
#else
    uint64_t pid = (uint64_t)getpid();
#endif
    uint64_t seed = (uint64_t)fp_now_ns() ^ (pid << 32) ^ (uint64_t)(uintptr_t)&seed;
#if !defined(_WIN32)
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        uint64_t os_bytes = 0;
        if (read(fd, &os_bytes, sizeof(os_bytes)) == (ssize_t)sizeof(os_bytes)) {
            seed ^= os_bytes;
        }
        close(fd);
    }
#endif
    fp_sampler_seed(seed);
}

void
fp_sampler_init(void)
{
    static int seeded = 0;  /* process-wide: later interpreters share the generator */
    if (!seeded) {
        sampler_seed_from_os();
        for (unsigned j = 0; j <= FP_GAP_SEGMENTS; j++) {
            fp_gap_neg_log[j] = -log(0.5 + (double)j / (2.0 * FP_GAP_SEGMENTS));
        }
        seeded = 1;
    }
}

static inline uint64_t
sampler_next(void)
{
    uint64_t x = fp_sampler_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    fp_sampler_state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* floor(x) for x >= 0, at most FP_MAX_GAP. */
static inline uint32_t
gap_of(double x)
{
    return x < (double)FP_MAX_GAP ? (uint32_t)x : FP_MAX_GAP;
}

/* The gap for u = m * 2**-z, m normalised (bit 63 set), by log(): what
   decides when the table's bracket does not. The mantissa keeps 53 bits,
   which stay within the bracket of its segment (its top bits). */
static uint32_t
sampler_gap_by_log(uint64_t m, unsigned z, double gap_per_nat)
{
    double mantissa = (double)(m >> 11) * (1.0 / 9007199254740992.0);  /* [1/2, 1) */
    return gap_of(((double)z * FP_LN_2 - log(mantissa)) * gap_per_nat);
}

/* The gap that a nonzero random word gives at gap_per_nat = 1 / -ln(1 - 1/n)
   (see the sampler's comment above). */
static inline uint32_t
sampler_gap_of_word(uint64_t word, double gap_per_nat)
{
    unsigned z = 63u - fp_log2(word);
    uint64_t m = word << z;
    unsigned segment = (unsigned)(m >> (63 - FP_GAP_SEGMENT_BITS)) & (FP_GAP_SEGMENTS - 1);
    double halvings = (double)z * FP_LN_2;
    /* m in [1/2 + segment / 2S, 1/2 + (segment + 1) / 2S): -ln(m) between these */
    uint32_t low = gap_of((halvings + fp_gap_neg_log[segment + 1]) * gap_per_nat);
    uint32_t high = gap_of((halvings + fp_gap_neg_log[segment]) * gap_per_nat);
    if (FP_LIKELY(low == high)) {
        return low;
    }
    return sampler_gap_by_log(m, z, gap_per_nat);
}

/* The untimed activations before the next timed one, for a probe sampled
   at n >= 2: geometric with success probability 1/n. */
static FP_NOINLINE uint32_t
sampler_gap(const ProbeObject *p)
{
    return sampler_gap_of_word(sampler_next(), p->gap_per_nat);
}

int
fp_sampler_gap_for_testing(uint32_t rate, uint64_t word, uint32_t *gap, uint32_t *gap_by_log)
{
    if (rate < 2 || rate > FP_MAX_SAMPLE || word == 0) {
        return -1;
    }
    double gap_per_nat = -1.0 / log1p(-1.0 / (double)rate);
    unsigned z = 63u - fp_log2(word);
    *gap = sampler_gap_of_word(word, gap_per_nat);
    *gap_by_log = sampler_gap_by_log(word << z, z, gap_per_nat);
    return 0;
}

/* Set a probe's rate (a checked one: 0 to FP_MAX_SAMPLE); the countdown
   is the caller's. */
static void
probe_set_rate(ProbeObject *p, uint32_t rate)
{
    p->sample = rate;
    p->gap_per_nat = rate >= 2 ? -1.0 / log1p(-1.0 / (double)rate) : 0.0;
}

/* The countdown after a timed activation (or at the start) of a probe whose
   rate is not 1: count-only never times again, N draws the next gap. */
static inline uint32_t
probe_countdown_after_timed(ProbeObject *p)
{
    return p->sample == 0 ? UINT32_MAX : sampler_gap(p) + 1;
}

/* The countdown that starts a probe at its rate (see ProbeObject.countdown). */
static void
probe_arm_countdown(ProbeObject *p)
{
    if (p->sample == 1) {
#if FP_HAVE_TSC
        p->countdown = p->tsc ? 0 : 1;
#else
        p->countdown = 1;
#endif
    }
    else {
        p->countdown = probe_countdown_after_timed(p);
    }
}

/* The weight of an activation starting now, in the general half of the
   entry: 0 untimed, or N >= 1 (see ProbeObject.countdown). */
static inline uint32_t
probe_decide_weight(ProbeObject *p)
{
    uint32_t c = p->countdown;
    if (c == 0) {
        return 1;
    }
    if (c > 1) {
        p->countdown = c - 1;
        return 0;
    }
    if (p->sample == 1) {
        return 1;
    }
    p->countdown = probe_countdown_after_timed(p);
    return p->sample;  /* 0 for count-only: untimed */
}

/* ===================================================================== */
/* The called list (in the module state)                                 */
/* ===================================================================== */

/* Append a probe at its first activation. 0, or -1 with MemoryError set. */
static FP_COLD int
called_list_append(fp_state *st, ProbeObject *p)
{
    if (st->n_called == st->called_capacity) {
        uint32_t capacity = st->called_capacity ? 2 * st->called_capacity : 64;
        if (capacity >= FP_NOT_CALLED) {
            PyErr_NoMemory();
            return -1;
        }
        ProbeObject **grown = PyMem_Realloc(st->called, capacity * sizeof(ProbeObject *));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->called = grown;
        uint64_t *records = PyMem_Realloc(st->called_records, capacity * sizeof(uint64_t));
        if (records == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->called_records = records;
        st->called_capacity = capacity;
    }
    p->called_index = st->n_called;
    st->called_records[st->n_called] = 0;
    st->called[st->n_called++] = p;
    return 0;
}

/* Take a dying probe out: the last one moves into its place. */
static void
called_list_remove(fp_state *st, ProbeObject *p)
{
    uint32_t i = p->called_index;
    if (i == FP_NOT_CALLED || st == NULL || i >= st->n_called || st->called[i] != p) {
        return;
    }
    ProbeObject *last = st->called[--st->n_called];
    st->called[i] = last;
    st->called_records[i] = st->called_records[st->n_called];
    last->called_index = i;
    p->called_index = FP_NOT_CALLED;
}

PyObject *
fp_called_probes(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fp_state *st = fp_state_of(module);
    /* Nothing runs Python code (or frees a probe) between the list's
       allocation and its filling: PyList_New may collect, so it comes first,
       and the called list is read after it. */
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < st->n_called; i++) {
        if (PyList_Append(out, (PyObject *)st->called[i]) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* forked_child(): in a child just forked, stop counting the activations
   that started before the fork, draw other samples than the parent's, and
   list again only the probes that the child activates. */
PyObject *
fp_forked_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fp_fork_floor_ticks[0] = fp_now_ticks(0);
    fp_fork_floor_ticks[1] = fp_tsc_invariant ? fp_now_ticks(1) : INT64_MIN;
    fp_forks_seen++;
    sampler_seed_from_os();
    fp_state *st = fp_state_of(module);
    for (uint32_t i = 0; i < st->n_called; i++) {
        ProbeObject *p = st->called[i];
        p->called_index = FP_NOT_CALLED;
        p->countdown = 1;  /* the next entry takes the general half, which lists it again */
    }
    st->n_called = 0;
    Py_RETURN_NONE;
}

/* Zero every counter and start a new epoch. Activations still running stay
   counted as started, so that their ends keep completed <= calls. */
static void
probe_clear_counters(ProbeObject *p)
{
    p->calls -= p->completed;
    p->completed = p->errors = p->untimed = p->total_ticks = p->max_ticks = 0;
    p->min_ticks = UINT64_MAX;
    p->pending_ticks = FP_NO_PENDING;
    p->epoch++;
    if (p->hist != NULL) {
        memset(p->hist, 0, FP_HIST_BYTES);
    }
}

/* A probe's first activation (in this process, for a forked child): its
   histogram if it has none yet, its place in the called list, and a fresh
   countdown. 0, or -1 with MemoryError set. */
static FP_COLD int
probe_start_counting(ProbeObject *p)
{
    if (p->hist == NULL) {
        p->hist = PyMem_Calloc(FP_HIST_BUCKETS, sizeof(uint64_t));
        if (p->hist == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* the probe type, which each probe holds, holds the module */
    if (called_list_append((fp_state *)PyType_GetModuleState(Py_TYPE(p)), p) < 0) {
        return -1;
    }
    probe_arm_countdown(p);
    if (fp_telemetry_armed) {
        fp_telemetry_first_call();
    }
    return 0;
}

/* A duration in this probe's clock ticks, in nanoseconds, for its bucket. */
static inline uint64_t
probe_ticks_to_ns(const ProbeObject *p, uint64_t ticks)
{
#if FP_HAVE_TSC
    return p->tsc ? fp_tsc_to_ns(ticks) : ticks;
#else
    (void)p;
    return ticks;
#endif
}

/* Fold one duration of weight 1 into total, min, max and the histogram.
   Counting the ending itself (completed, errors) is the caller's. A bucket
   of 64 bits cannot wrap: 2**64 calls take centuries. */
static inline void
probe_fold(ProbeObject *p, uint64_t ticks, uint64_t ns, uint32_t weight)
{
    p->total_ticks += ticks * weight;
    if (ticks < p->min_ticks) {
        p->min_ticks = ticks;
    }
    if (ticks > p->max_ticks) {
        p->max_ticks = ticks;
    }
    p->hist[fp_bucket_of(ns)] += weight;
}

static inline void
probe_fold_duration(ProbeObject *p, uint64_t ticks, uint64_t ns)
{
    probe_fold(p, ticks, ns, 1);
}

/* Fold one timed duration that stands for `weight` activations. */
static void
probe_fold_weighted(ProbeObject *p, int64_t elapsed, uint32_t weight)
{
    uint64_t ticks = elapsed > 0 ? (uint64_t)elapsed : 0;
    probe_fold(p, ticks, probe_ticks_to_ns(p, ticks), weight);
}

void
fp_probe_flush(ProbeObject *p)
{
    if (p->pending_ticks != FP_NO_PENDING) {
        probe_fold_duration(p, (uint64_t)p->pending_ticks, probe_ticks_to_ns(p, (uint64_t)p->pending_ticks));
        p->pending_ticks = FP_NO_PENDING;
    }
}

/* The cold half of the entry: the probe's spare token is in use (recursion,
   threads, suspended generators), so take one from the free list or make
   one. Returns a new reference, or NULL with MemoryError set. */
static FP_NOINLINE TokenObject *
token_take_slow(fp_state *st)
{
    TokenObject *t = free_list_pop(st);
    if (t != NULL) {
        return t;
    }
    t = PyObject_New(TokenObject, st->token_type);
    if (t != NULL) {
        t->probe = NULL;
        t->state = st;
        t->weight = 1;
    }
    return t;
}

/* Keep an idle token that nobody else holds a reference for: the caller's
   reference goes to the free list, or the token is freed when the list is
   full. */
static FP_NOINLINE void
token_stash(TokenObject *t)
{
    fp_state *st = t->state;
    if (free_list_has_room(st)) {
        free_list_push(st, t);
    }
    else {
        Py_DECREF(t);
    }
}

/*
 * The hot paths below are split in two. The fast half covers the steady
 * state of a TSC probe under exact timing, and the untimed activations of a
 * sampled or count-only probe, and is a leaf function that needs no stack
 * frame. A timed activation of a sampled probe on the TSC goes to a half of
 * its own (probe_enter_sampled, token_exit_sampled), everything else (the
 * monotonic clock, re-entered functions, the first return) to the general
 * half, each with a tail call.
 */
#if FP_HAVE_TSC
#  define FP_FAST_CLOCK(p) ((p)->tsc)
#  define FP_FAST_NOW() ((int64_t)fp_tsc_now())
#  define FP_FAST_TO_NS(ticks) fp_tsc_to_ns(ticks)
#else
#  define FP_FAST_CLOCK(p) 0
#  define FP_FAST_NOW() 0
#  define FP_FAST_TO_NS(ticks) (ticks)
#endif

static FP_NOINLINE PyObject *
probe_enter_general(ProbeObject *p)
{
    /* The first activation of a probe comes here: it has no spare token yet. */
    if (FP_UNLIKELY(p->called_index == FP_NOT_CALLED) && probe_start_counting(p) < 0) {
        return NULL;
    }
    TokenObject *t = p->spare;
    if (t != NULL) {
        p->spare = NULL;  /* the spare slot's reference becomes the stack's */
    }
    else {
        /* the probe type, which each probe holds, holds the module */
        t = token_take_slow((fp_state *)PyType_GetModuleState(Py_TYPE(p)));
        if (t == NULL) {
            return NULL;
        }
    }
    t->probe = p;
    p->calls++;
    uint32_t weight = probe_decide_weight(p);
    t->weight = weight;
    t->start_ticks = weight != 0 ? fp_now_ticks(p->tsc) : fp_forks_seen;
    return (PyObject *)t;
}

/* The entry of a timed activation of a sampled probe on the fast clock,
   listed already (the general half lists a probe at its first activation
   in this process): its weight is the rate, and the next gap is drawn
   before the clock is read, so that the draw is not part of the duration.
   Returns the spare token `t`, whose reference becomes the stack's. */
static FP_NOINLINE PyObject *
probe_enter_sampled(ProbeObject *p, TokenObject *t)
{
    p->spare = NULL;
    t->probe = p;
    p->calls++;
    t->weight = p->sample;
    p->countdown = sampler_gap(p) + 1;
    t->start_ticks = FP_FAST_NOW();
    return (PyObject *)t;
}

/* nb_invert: the entry probe. Returns a new reference to a Token that
   holds the start time and the weight, or NULL with MemoryError set. */
static PyObject *
probe_enter(PyObject *self)
{
    ProbeObject *p = (ProbeObject *)self;
    TokenObject *t = p->spare;
    uint32_t countdown = p->countdown;
    if (FP_LIKELY(t != NULL)) {
        if (FP_LIKELY(countdown == 0)) {
            /* exact timing on the fast clock: the idle token's weight is 1 */
            p->spare = NULL;  /* the spare slot's reference becomes the stack's */
            t->probe = p;
            p->calls++;
            t->start_ticks = FP_FAST_NOW();
            return (PyObject *)t;
        }
        if (countdown > 1) {
            /* untimed: no clock read */
            p->countdown = countdown - 1;
            p->spare = NULL;
            t->probe = p;
            p->calls++;
            t->weight = 0;
            t->start_ticks = fp_forks_seen;
            return (PyObject *)t;
        }
        /* countdown 1: a timed activation, or one the general half decides */
        if (p->sample >= 2 && FP_FAST_CLOCK(p) && p->called_index != FP_NOT_CALLED) {
            return probe_enter_sampled(p, t);
        }
    }
    return probe_enter_general(p);
}

static PyObject *
probe_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Probe() takes no arguments");
        return NULL;
    }
    PyObject *module = PyType_GetModule(type);
    if (module == NULL) {
        return NULL;
    }
    ProbeObject *p = (ProbeObject *)type->tp_alloc(type, 0);
    if (p == NULL) {
        return NULL;
    }
    p->spare = NULL;
    p->hist = NULL;
    p->tsc = fp_state_of(module)->default_tsc;
    p->stop_errors = 0;
    probe_set_rate(p, fp_state_of(module)->default_sample);
    p->countdown = 1;  /* armed by the first activation (probe_start_counting) */
    p->called_index = FP_NOT_CALLED;
    p->calls = 0;
    probe_clear_counters(p);
    p->epoch = 0;
    return (PyObject *)p;
}

static void
probe_dealloc(PyObject *self)
{
    ProbeObject *p = (ProbeObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (p->calls != p->completed) {
        /* A token of a running activation outlived the code that held this
           probe (see TokenObject): keep the memory it points to. */
        return;
    }
    called_list_remove((fp_state *)PyType_GetModuleState(tp), p);
    if (p->spare != NULL) {
        token_stash(p->spare);
        p->spare = NULL;
    }
    PyMem_Free(p->hist);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Returns a new reference to the tuple (calls, completed, errors,
   total_ticks, min_ticks, max_ticks, histogram_bytes, ns_per_tick, timed,
   sample, epoch), with the latest return folded in: durations in this
   probe's clock ticks and what converts them (1.0 for CLOCK_MONOTONIC);
   histogram buckets (uint64, weighted) in ns. min_ticks is 0 while nothing
   timed has completed. */
static PyObject *
probe_snapshot(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ProbeObject *p = (ProbeObject *)self;
    fp_probe_flush(p);
    uint64_t timed = p->completed - p->untimed;
    return Py_BuildValue(
        "(KKKKKKy#dKkk)",
        (unsigned long long)p->calls,
        (unsigned long long)p->completed,
        (unsigned long long)p->errors,
        (unsigned long long)p->total_ticks,
        (unsigned long long)(timed ? p->min_ticks : 0),
        (unsigned long long)p->max_ticks,
        (const char *)(p->hist != NULL ? p->hist : fp_empty_hist), (Py_ssize_t)FP_HIST_BYTES,
#if FP_HAVE_TSC
        p->tsc ? fp_tsc_ns_per_tick() : 1.0,
#else
        1.0,
#endif
        (unsigned long long)timed,
        (unsigned long)p->sample,
        (unsigned long)p->epoch);
}

static PyObject *
probe_reset(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    fp_telemetry_before_reset((ProbeObject *)self);
    probe_clear_counters((ProbeObject *)self);
    Py_RETURN_NONE;
}

/* In a forked child (after fp_forked_child): zero everything, activations
   in flight included, which the child no longer counts. */
static PyObject *
probe_clear(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ProbeObject *p = (ProbeObject *)self;
    p->calls = p->completed;
    probe_clear_counters(p);
    Py_RETURN_NONE;
}

/* A sampling rate from Python: 0 and the rate, or -1 with TypeError or
   ValueError set. */
static int
sample_from_object(PyObject *arg, uint32_t *rate)
{
    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "sample must be an int, not %.100s", Py_TYPE(arg)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || n < 0 || n > (long long)FP_MAX_SAMPLE) {
        PyErr_Format(PyExc_ValueError,
                     "sample must be 1 (exact timing), N from 2 to %u (time one call in N) or 0 (count only), not %R",
                     FP_MAX_SAMPLE, arg);
        return -1;
    }
    *rate = (uint32_t)n;
    return 0;
}

PyObject *
fp_set_default_sample(PyObject *module, PyObject *arg)
{
    fp_state *st = fp_state_of(module);
    uint32_t rate;
    if (sample_from_object(arg, &rate) < 0) {
        return NULL;
    }
    uint32_t previous = st->default_sample;
    st->default_sample = rate;
    return PyLong_FromUnsignedLong((unsigned long)previous);
}

/* set_sample(n): the rate from the next activation on (see
   ProbeObject.sample); activations already started keep their weight. */
static PyObject *
probe_set_sample(PyObject *self, PyObject *arg)
{
    ProbeObject *p = (ProbeObject *)self;
    uint32_t rate;
    if (sample_from_object(arg, &rate) < 0) {
        return NULL;
    }
    probe_set_rate(p, rate);
    if (p->called_index != FP_NOT_CALLED) {
        probe_arm_countdown(p);
    }
    /* else the first activation (in this process) arms it */
    Py_RETURN_NONE;
}

/* A test hook: set every histogram bucket to `count`, so that counts past
   2**32 can be reached without 4 billion calls. */
static PyObject *
probe_testing_fill_histogram(PyObject *self, PyObject *arg)
{
    unsigned long long count = PyLong_AsUnsignedLongLong(arg);
    if (count == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    ProbeObject *p = (ProbeObject *)self;
    if (p->called_index == FP_NOT_CALLED && probe_start_counting(p) < 0) {
        return NULL;
    }
    for (int i = 0; i < FP_HIST_BUCKETS; i++) {
        p->hist[i] = (uint64_t)count;
    }
    Py_RETURN_NONE;
}

static PyMethodDef probe_methods[] = {
    {"snapshot", probe_snapshot, METH_NOARGS,
     "snapshot() -> (calls, completed, errors, total_ticks, min_ticks, max_ticks, histogram_bytes, ns_per_tick,\n"
     "timed, sample, epoch)"},
    {"reset", probe_reset, METH_NOARGS,
     "Zero every counter and bump the epoch; activations running now stay counted as started."},
    {"clear", probe_clear, METH_NOARGS,
     "Zero every counter and bump the epoch, in a forked child, where activations in flight are no longer counted."},
    {"set_sample", probe_set_sample, METH_O,
     "set_sample(n): time every activation (1), one in n on average (n >= 2) or none (0), from the next one."},
    /* test hooks: named _testing_*, for the tests alone */
    {"_testing_fill_histogram", probe_testing_fill_histogram, METH_O, "For tests: set every bucket to a count."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
probe_clock(PyObject *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(((ProbeObject *)self)->tsc ? "tsc" : "monotonic");
}

static PyObject *
probe_calls(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong((unsigned long long)((ProbeObject *)self)->calls);
}

static PyObject *
probe_sample(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong((unsigned long)((ProbeObject *)self)->sample);
}

static PyObject *
probe_epoch(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong((unsigned long)((ProbeObject *)self)->epoch);
}

static PyGetSetDef probe_getset[] = {
    {"clock", probe_clock, NULL, "This probe's clock: 'tsc' or 'monotonic'.", NULL},
    {"calls", probe_calls, NULL, "Activations started (cheaper than snapshot()[0]).", NULL},
    {"sample", probe_sample, NULL, "The sampling rate of the next activation: 1 exact, N one in N, 0 count only.",
     NULL},
    {"epoch", probe_epoch, NULL, "How many times the counters were zeroed (reset(), a forked child's clear()).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot probe_slots[] = {
    {Py_tp_getset, probe_getset},
    {Py_tp_new, probe_new},
    {Py_tp_dealloc, probe_dealloc},
    {Py_nb_invert, probe_enter},
    {Py_tp_methods, probe_methods},
    {Py_tp_doc, "Counters and latency histogram of one instrumented definition."},
    {0, NULL},
};

PyType_Spec fp_probe_spec = {
    .name = "fastpatch._ext.Probe",
    .basicsize = sizeof(ProbeObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = probe_slots,
};

/* ===================================================================== */
/* Token: one per running or suspended activation                        */
/* ===================================================================== */

/* Count the end of an activation begun in this process, on the general
   path: a timed one of weight 1 on the fast clock becomes the pending end
   (then the next end takes the fast path), any other timed one is folded in
   with its weight, an untimed one is counted only. */
static void
token_end_counted(TokenObject *t, ProbeObject *p, int is_error)
{
    uint32_t weight = t->weight;
    p->completed++;
    p->errors += (uint64_t)is_error;
    if (weight == 0) {
        p->untimed++;
        return;
    }
    int64_t elapsed = fp_now_ticks(p->tsc) - t->start_ticks;
    fp_probe_flush(p);
    if (weight == 1 && FP_FAST_CLOCK(p)) {
        p->pending_ticks = elapsed > 0 ? elapsed : 0;
    }
    else {
        probe_fold_weighted(p, elapsed, weight);
    }
}

/* mp_subscript: the return probe. token[retval] records a normal end and
   returns a new reference to retval. The token goes back to its probe's
   spare slot (or the free list) here, with a reference of its own; the
   subscript instruction drops the stack's reference right after, and no
   Python code can run in between.

   The duration is accounted one return behind: this return's duration is
   only stored in p->pending_ticks, and the previous pending one is folded into the
   counters and the histogram. Nothing done here then waits for the clock
   read: the histogram store's address would depend on it, and the CPU
   cannot run later loads past a store whose address is still unknown (about
   4 ns per call with the TSC on AMD Zen 4). Every reader flushes the pending
   duration first (probe_flush), so what users see is always complete. */
static FP_NOINLINE PyObject *
token_exit_general(TokenObject *t, PyObject *retval)
{
    ProbeObject *p = t->probe;
    if (p != NULL) {
        if (FP_LIKELY(!token_started_before_fork(t, p->tsc))) {
            token_end_counted(t, p, 0);
        }
        t->probe = NULL;
        t->weight = 1;
        Py_INCREF(t);  /* the idle token's own reference */
        if (p->spare == NULL) {
            p->spare = t;
        }
        else {
            token_stash(t);
        }
    }
    Py_INCREF(retval);
    return retval;
}

/* Whether an end can take the fast half, exact or untimed (shared by the
   exit's subscript and the deallocator): the fast half needs its probe's
   spare slot free for the token, an activation begun in this process, and
   either weight 1 with a previous end pending (which only a probe on the
   fast clock has) or weight 0. Macros, so that each caller's branch hint
   covers the whole condition. */
#define TOKEN_CAN_END_FAST(t, p) ((p) != NULL && (p)->spare == NULL)
#define TOKEN_EXACT_FAST(t, p) \
    ((t)->weight == 1 && (p)->pending_ticks != FP_NO_PENDING && !timed_token_started_before_fork((t), 1))
#define TOKEN_UNTIMED_FAST(t, p) ((t)->weight == 0 && !untimed_token_started_before_fork(t))
#define TOKEN_SAMPLED_FAST(t, p) ((t)->weight >= 2 && FP_FAST_CLOCK(p) && !timed_token_started_before_fork((t), 1))

/* The fast half of an exact end: this end's duration becomes the pending
   one, and the token leaves the activation (the caller puts it in its
   probe's spare slot, with a reference). Returns the previous pending
   duration, to fold in. */
static inline uint64_t
token_end_fast(TokenObject *t, ProbeObject *p)
{
    int64_t elapsed = FP_FAST_NOW() - t->start_ticks;
    uint64_t previous = (uint64_t)p->pending_ticks;
    p->pending_ticks = elapsed > 0 ? elapsed : 0;
    p->completed++;
    t->probe = NULL;
    return previous;
}

/* The fast half of an untimed end: counted, no clock read. The token's
   weight goes back to an idle token's. */
static inline void
token_end_untimed(TokenObject *t, ProbeObject *p)
{
    p->completed++;
    p->untimed++;
    t->probe = NULL;
    t->weight = 1;
}

/* The end of a timed activation of a sampled probe on the fast clock
   (TOKEN_SAMPLED_FAST): folded in at once with its weight, not left
   pending, which is for weight 1 only; the order in which durations are
   folded changes none of the sums, the extremes or the buckets. The token
   leaves the activation with an idle token's weight (the caller puts it in
   its probe's spare slot). */
static void
token_end_sampled(TokenObject *t, ProbeObject *p)
{
    int64_t elapsed = FP_FAST_NOW() - t->start_ticks;
    uint32_t weight = t->weight;
    p->completed++;
    t->probe = NULL;
    t->weight = 1;
    probe_fold_weighted(p, elapsed, weight);
}

/* token_exit's half for TOKEN_SAMPLED_FAST: as the exact fast half, with
   the weighted fold. It takes token_exit's own arguments, so that the tail
   call moves no register on the way of the exact half. */
static FP_NOINLINE PyObject *
token_exit_sampled(TokenObject *t, PyObject *retval)
{
    ProbeObject *p = t->probe;
    token_end_sampled(t, p);
    Py_INCREF(t);  /* the spare slot's reference */
    p->spare = t;
    Py_INCREF(retval);
    return retval;
}

static PyObject *
token_exit(PyObject *self, PyObject *retval)
{
    TokenObject *t = (TokenObject *)self;
    ProbeObject *p = t->probe;
    if (FP_LIKELY(TOKEN_CAN_END_FAST(t, p))) {
        if (FP_LIKELY(TOKEN_EXACT_FAST(t, p))) {
            uint64_t previous = token_end_fast(t, p);
            Py_INCREF(t);  /* the spare slot's reference */
            p->spare = t;
            Py_INCREF(retval);
            probe_fold_duration(p, previous, FP_FAST_TO_NS(previous));
            return retval;
        }
        if (TOKEN_UNTIMED_FAST(t, p)) {
            token_end_untimed(t, p);
            Py_INCREF(t);
            p->spare = t;
            Py_INCREF(retval);
            return retval;
        }
        if (TOKEN_SAMPLED_FAST(t, p)) {
            return token_exit_sampled(t, retval);
        }
    }
    return token_exit_general(t, retval);
}

/* Whether the exception set now, which ends an activation of `p`, is an
   error: not GeneratorExit (how close() ends a frame), nor an iteration end
   signal that reaches the caller as it is (FP_STOP_ITERATION_IS_ERROR).
   Every timed function that raises comes here, so the exception's class is
   looked up once, in its MRO, in place of one subclass check per class
   (PyErr_ExceptionMatches: about 100 instructions each on 3.12). */
static int
probe_ending_is_error(const ProbeObject *p)
{
    PyObject *type = PyErr_Occurred();  /* borrowed: the exception's class */
    if (type == NULL) {
        return 0;
    }
    PyObject *mro = PyType_Check(type) ? ((PyTypeObject *)type)->tp_mro : NULL;
    if (mro == NULL) {
        return 1;
    }
    for (Py_ssize_t i = 0, n = PyTuple_GET_SIZE(mro); i < n; i++) {
        PyObject *base = PyTuple_GET_ITEM(mro, i);
        if (base == PyExc_GeneratorExit) {
            return 0;
        }
        if (base == PyExc_StopIteration) {
            return (p->stop_errors & FP_STOP_ITERATION_IS_ERROR) != 0;
        }
        if (base == PyExc_StopAsyncIteration) {
            return (p->stop_errors & FP_STOP_ASYNC_ITERATION_IS_ERROR) != 0;
        }
    }
    return 1;
}

/* A token that still has its probe when it dies ended its activation
   without the exit's subscript: an exception left the frame, a suspended
   generator was closed or finalised, or (3.9, whose exit is ROT_TWO;
   POP_TOP) the function returned. The exception being propagated, if any,
   is still set while the stack unwinds, before CPython turns an iteration
   end signal leaving a generator into RuntimeError (probe_ending_is_error). */
static FP_NOINLINE void
token_dealloc_general(TokenObject *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    ProbeObject *p = t->probe;
    if (p != NULL) {
        if (FP_LIKELY(!token_started_before_fork(t, p->tsc))) {
            /* Pending, as in token_exit_general: then the next end through
               the deallocator (every return on 3.9) takes the fast path. */
            token_end_counted(t, p, probe_ending_is_error(p));
        }
        t->probe = NULL;
    }
    t->weight = 1;
    /* Revive it for its probe's spare slot or the free list, so that
       functions which keep raising do not allocate either. */
    if (p != NULL && p->spare == NULL) {
        fp_revive((PyObject *)t);
        p->spare = t;
        return;
    }
    fp_state *st = t->state;
    if (st != NULL && free_list_has_room(st)) {
        fp_revive((PyObject *)t);
        free_list_push(st, t);
        return;
    }
    PyObject_Free(t);
    Py_DECREF(tp);
}

/* The steady state of a normal end through the deallocator (every return on
   3.9): as token_exit's fast halves, one end late (token_dealloc_general
   leaves each end pending too), the token back to its probe's spare slot. */
static void
token_dealloc(PyObject *self)
{
    TokenObject *t = (TokenObject *)self;
    ProbeObject *p = t->probe;
    if (FP_LIKELY(TOKEN_CAN_END_FAST(t, p) && !fp_error_set())) {
        if (FP_LIKELY(TOKEN_EXACT_FAST(t, p))) {
            uint64_t previous = token_end_fast(t, p);
            fp_revive(self);  /* the spare slot's reference */
            p->spare = t;
            probe_fold_duration(p, previous, FP_FAST_TO_NS(previous));
            return;
        }
        if (TOKEN_UNTIMED_FAST(t, p)) {
            token_end_untimed(t, p);
            fp_revive(self);
            p->spare = t;
            return;
        }
        if (TOKEN_SAMPLED_FAST(t, p)) {
            token_end_sampled(t, p);
            fp_revive(self);
            p->spare = t;
            return;
        }
    }
    token_dealloc_general(t);
}

static PyType_Slot token_slots[] = {
    {Py_tp_dealloc, token_dealloc},
    {Py_mp_subscript, token_exit},
    {Py_tp_doc, "Start time of one activation; lives on the frame's value stack."},
    {0, NULL},
};

PyType_Spec fp_token_spec = {
    .name = "fastpatch._ext.Token",
    .basicsize = sizeof(TokenObject),
    .itemsize = 0,
    .flags = FP_TOKEN_FLAGS,
    .slots = token_slots,
};

