/*
 * fastpatch._ext -- the hot path of fastpatch.
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
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "_compat.h"

#if defined(_WIN32)
#  include <windows.h>
#else
#  include <time.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define FP_LIKELY(x) __builtin_expect(!!(x), 1)
#  define FP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#  define FP_LIKELY(x) (x)
#  define FP_UNLIKELY(x) (x)
#endif

/* ===================================================================== */
/* Clock                                                                 */
/* ===================================================================== */

#if defined(_WIN32)
static LARGE_INTEGER fp_qpc_freq;

static void
fp_clock_init(void)
{
    QueryPerformanceFrequency(&fp_qpc_freq);
}

static inline int64_t
fp_now_ns(void)
{
    LARGE_INTEGER c;
    QueryPerformanceCounter(&c);
    /* Split to avoid overflowing 64 bits for long uptimes. */
    int64_t f = fp_qpc_freq.QuadPart;
    int64_t s = c.QuadPart / f, r = c.QuadPart % f;
    return s * 1000000000LL + (r * 1000000000LL) / f;
}
#else
static void
fp_clock_init(void)
{
}

/* CLOCK_MONOTONIC is served by the vDSO on Linux: no system call. */
static inline int64_t
fp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#endif

/*
 * The TSC clock: rdtsc costs about 9 ns against about 18 ns for
 * clock_gettime (back to back, on the CI host's Intel Xeon). It is offered only where the CPU reports an invariant TSC
 * (constant rate, running through sleep states). A TSC probe counts ticks:
 * its totals, minimum and maximum are converted to nanoseconds when stats
 * are read, by the ratio of CLOCK_MONOTONIC to the TSC over the whole time
 * since the TSC was first chosen, which gets better the longer the process
 * runs. Its histogram buckets count nanoseconds, like a monotonic probe's,
 * so that histograms merge across processes: each duration is converted
 * when it is folded in (off the caller's path, see token_exit), by the ratio
 * measured over the first FP_CALIBRATION_NS and refined whenever stats are
 * read. Each probe keeps the clock it
 * was created with, so both kinds can live side by side.
 */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER))
#  define FP_HAVE_TSC 1
#  if defined(_MSC_VER)
#    include <intrin.h>
#  else
#    include <x86intrin.h>
#    include <cpuid.h>
#  endif
#else
#  define FP_HAVE_TSC 0
#endif

/* Process-wide, written once under the GIL, the same for every
   interpreter that loads the module: whether the CPU's TSC is invariant,
   the first (TSC, CLOCK_MONOTONIC) reading, and 2**32 times the nanoseconds
   per TSC tick over the calibration (0 until measured). */
static int fp_tsc_checked = 0;
static int fp_tsc_invariant = 0;
static uint64_t fp_calib_tsc0 = 0;
static int64_t fp_calib_ns0 = 0;
static uint64_t fp_tsc_mult = 0;

/* 100 us of busy waiting, once per process, when the TSC is first chosen
   (every process the import hook reaches pays it at startup): pairs of
   readings each bracket a CLOCK_MONOTONIC read between two close TSC reads,
   a few tens of ns apart on a shared VM, so the ratio is good to a few parts
   in 10**4 at once. It only places durations in histogram buckets, which
   are 12% wide; fp_tsc_ns_per_tick, which converts totals when stats are
   read, measures over the whole time since and refines it. */
#define FP_CALIBRATION_NS 100000

#if FP_HAVE_TSC
static int
fp_tsc_is_invariant(void)
{
#  if defined(_MSC_VER)
    int regs[4];
    __cpuid(regs, 0x80000000);
    if ((unsigned)regs[0] < 0x80000007u) {
        return 0;
    }
    __cpuid(regs, 0x80000007);
    return (regs[3] >> 8) & 1;
#  else
    unsigned a, b, c, d;
    if (__get_cpuid_max(0x80000000u, NULL) < 0x80000007u) {
        return 0;
    }
    __cpuid(0x80000007u, a, b, c, d);
    (void)a; (void)b; (void)c;
    return (d >> 8) & 1;
#  endif
}
#else
static int
fp_tsc_is_invariant(void)
{
    return 0;
}
#endif

#if FP_HAVE_TSC
/* (ticks * mult) >> 32, without overflow for any duration. */
static inline uint64_t
fp_mul_shift32(uint64_t ticks, uint64_t mult)
{
#  if defined(_MSC_VER)
    uint64_t hi, lo = _umul128(ticks, mult, &hi);
    return (hi << 32) | (lo >> 32);
#  else
    return (uint64_t)(((unsigned __int128)ticks * mult) >> 32);
#  endif
}

static inline uint64_t
fp_tsc_to_ns(uint64_t ticks)
{
    return fp_mul_shift32(ticks, fp_tsc_mult);
}

/* One simultaneous (TSC, CLOCK_MONOTONIC) reading: of a few tries, the
   monotonic read bracketed by the two closest TSC reads. */
static void
fp_clock_pair(uint64_t *tsc, int64_t *ns)
{
    uint64_t best = UINT64_MAX;
    *tsc = 0;
    *ns = 0;
    for (int i = 0; i < 8; i++) {
        uint64_t a = __rdtsc();
        int64_t n = fp_now_ns();
        uint64_t b = __rdtsc();
        if (b - a < best) {
            best = b - a;
            *tsc = a + (b - a) / 2;
            *ns = n;
        }
    }
}

static void
fp_calibrate_tsc(void)
{
    uint64_t t1;
    int64_t n1;
    fp_clock_pair(&fp_calib_tsc0, &fp_calib_ns0);
    do {
        fp_clock_pair(&t1, &n1);
    } while (n1 - fp_calib_ns0 < FP_CALIBRATION_NS || t1 <= fp_calib_tsc0);
    fp_tsc_mult = ((uint64_t)(n1 - fp_calib_ns0) << 32) / (t1 - fp_calib_tsc0);
}

/* Nanoseconds per TSC tick, over the whole time since calibration began;
   the histogram's ratio becomes it. */
static double
fp_tsc_ns_per_tick(void)
{
    uint64_t t;
    int64_t n;
    fp_clock_pair(&t, &n);
    double ns_per_tick = (double)(n - fp_calib_ns0) / (double)(t - fp_calib_tsc0);
    if (n - fp_calib_ns0 > 10 * FP_CALIBRATION_NS && t > fp_calib_tsc0) {
        fp_tsc_mult = (uint64_t)(ns_per_tick * 4294967296.0);
    }
    return ns_per_tick;
}
#endif

/* FP_NOINLINE keeps the general halves of the probes out of the fast ones
   (the fast halves then need no stack frame); FP_COLD is for what runs once
   in billions of calls. */
#if defined(__GNUC__) || defined(__clang__)
#  define FP_NOINLINE __attribute__((noinline))
#  define FP_COLD __attribute__((noinline, cold))
#elif defined(_MSC_VER)
#  define FP_NOINLINE __declspec(noinline)
#  define FP_COLD __declspec(noinline)
#else
#  define FP_NOINLINE
#  define FP_COLD
#endif

/* A probe's clock: TSC ticks for a TSC probe, nanoseconds otherwise. */
static inline int64_t
fp_now_ticks(int tsc)
{
#if FP_HAVE_TSC
    if (tsc) {
        return (int64_t)__rdtsc();
    }
#else
    (void)tsc;
#endif
    return fp_now_ns();
}

/* ===================================================================== */
/* Histogram                                                             */
/* ===================================================================== */

/*
 * Buckets over u = duration_ns >> FP_HIST_SHIFT (4 ns units), the same on
 * every clock, so that histograms from different processes merge exactly:
 *
 *   u < 8            one bucket per unit: 0-32 ns, within 2 ns;
 *   8 <= u < 64      log-linear, 8 equal sub-buckets per power of two
 *                    (32-256 ns);
 *   64 <= u < 2**39  6 buckets per power of two (256 ns to 2**41 ns, about
 *                    36.6 minutes), cut at the cells of the 6 bits below the
 *                    leading one (fp_sixths), each bucket at most 1.1275
 *                    times as wide at its top as at its bottom;
 *   u >= 2**39       the last bucket, which Python treats as open-ended.
 *
 * Python's _stats.bucket_bounds mirrors this, and reports a bucket by the
 * point that is closest, relatively, to both of its ends, which keeps every
 * percentile from 32 ns to 2**41 ns within 6.25% of a recorded duration
 * (tests/test_histogram.py checks every bucket). 231 buckets keep the whole
 * probe within 1 KiB; 8 sub-buckets per power of two all the way up would
 * need 296 for the same range.
 */
#define FP_HIST_SHIFT 2
#define FP_HIST_LOG_START 32          /* first bucket of the 6-per-octave part */
#define FP_HIST_TOP_EXP 38            /* u's highest power of two below the top bucket */
#define FP_HIST_BUCKETS (FP_HIST_LOG_START + 6 * (FP_HIST_TOP_EXP - 5) + 1)

/* Which of the 6 buckets of a power of two holds the cell (u's 6 bits below
   its leading one): cells 0-7, 8-16, 17-26, 27-37, 38-50, 51-63. */
static const uint8_t fp_sixths[64] = {
    0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
};

static inline unsigned
fp_log2(uint64_t u)
{
#if defined(__GNUC__) || defined(__clang__)
    return 63u - (unsigned)__builtin_clzll(u);
#else
    unsigned e = 0;
    for (uint64_t v = u; v > 1; v >>= 1) {
        e++;
    }
    return e;
#endif
}

static inline unsigned
fp_bucket_of(uint64_t ns)
{
    uint64_t u = ns >> FP_HIST_SHIFT;
    if (u < 64) {
        if (u < 8) {
            return (unsigned)u;
        }
        unsigned e = fp_log2(u);  /* 3, 4 or 5 */
        return 8 + (e - 3) * 8 + (unsigned)((u >> (e - 3)) & 7);
    }
    unsigned e = fp_log2(u);
    if (e > FP_HIST_TOP_EXP) {
        return FP_HIST_BUCKETS - 1;
    }
    return FP_HIST_LOG_START + (e - 6) * 6 + fp_sixths[(u >> (e - 6)) & 63];
}

/* ===================================================================== */
/* Module state                                                          */
/* ===================================================================== */

typedef struct TokenObject TokenObject;

typedef struct {
    PyTypeObject *probe_type;
    PyTypeObject *token_type;
    PyTypeObject *origin_type;
    /* The lazy table: id(original code) -> id(Origin), both ints, of the
       Origins waiting to be registered (see Origin). */
    PyObject *lazy;
    TokenObject *free_tokens; /* singly linked through TokenObject.next */
    Py_ssize_t n_free;
    int default_tsc;          /* the clock of probes this interpreter creates from now on */
} fp_state;

/* Tokens beyond this many idle ones are returned to the allocator. */
#define FP_MAX_FREE_TOKENS 4096

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

/* ===================================================================== */
/* Probe: one per instrumented definition                                */
/* ===================================================================== */

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

#define FP_HIST_BYTES (sizeof(uint32_t) * FP_HIST_BUCKETS)

/* What snapshot() shows of a probe that never ran. */
static const uint32_t fp_empty_hist[FP_HIST_BUCKETS] = {0};

#define FP_NO_PENDING (-1)

/*
 * StopIteration and StopAsyncIteration are how __next__ and __anext__ (and
 * a helper raising on their behalf) say "no more": an activation that ends
 * with one of them, as the exception its caller receives, ended normally.
 * Where CPython turns one into RuntimeError as it leaves the frame (PEP 479:
 * StopIteration out of a generator, coroutine or async generator; PEP 525:
 * StopAsyncIteration out of an async generator), the caller receives an
 * error, and so it is one. Set from the code's flags when the probe's
 * Origin is made (origin_make); 0, a plain function's rule, until then.
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

/*
 * fork: a child keeps the instrumentation and starts with zeroed counters
 * (Python clears every probe after fork). Activations that were running or
 * suspended at the fork may still end in the child, the one that called
 * fork() always does; their starts were counted in the parent, which counts
 * their ends too, so the child ignores them, and merging the reports of
 * parent and child counts each activation once. Process-wide, per clock
 * (index: the probe's tsc flag); no fork means INT64_MIN.
 */
static int64_t fp_fork_floor_ticks[2] = {INT64_MIN, INT64_MIN};

static inline int
token_started_before_fork(const TokenObject *t, int tsc)
{
    return t->start_ticks < fp_fork_floor_ticks[tsc];
}

/* Zero every counter. Activations still running stay counted as started,
   so that their ends keep completed <= calls. */
static void
probe_clear_counters(ProbeObject *p)
{
    p->calls -= p->completed;
    p->completed = p->errors = p->total_ticks = p->max_ticks = 0;
    p->min_ticks = UINT64_MAX;
    p->pending_ticks = FP_NO_PENDING;
    if (p->hist != NULL) {
        memset(p->hist, 0, FP_HIST_BYTES);
    }
}

/* The histogram, at a probe's first activation. 0, or -1 with MemoryError set. */
static FP_COLD int
probe_alloc_hist(ProbeObject *p)
{
    p->hist = PyMem_Calloc(FP_HIST_BUCKETS, sizeof(uint32_t));
    if (p->hist == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Halve every bucket when one would overflow. Percentiles only use the
   buckets' proportions, which halving keeps. Runs once per 4 billion
   observations in one bucket at most. */
static void
probe_halve_histogram(ProbeObject *p)
{
    for (int i = 0; i < FP_HIST_BUCKETS; i++) {
        p->hist[i] = (p->hist[i] >> 1) + (p->hist[i] & 1);
    }
}

/* A histogram bucket just wrapped around to 0. */
static FP_COLD void
probe_bucket_wrapped(ProbeObject *p, uint32_t *slot)
{
    *slot = UINT32_MAX;
    probe_halve_histogram(p);
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

/* Fold one duration into total, min, max and the histogram, and return the
   bucket if it wrapped around (the caller then calls probe_bucket_wrapped),
   else NULL. Counting the ending itself (completed, errors) is the
   caller's. */
static inline uint32_t *
probe_fold_duration(ProbeObject *p, uint64_t ticks, uint64_t ns)
{
    p->total_ticks += ticks;
    if (ticks < p->min_ticks) {
        p->min_ticks = ticks;
    }
    if (ticks > p->max_ticks) {
        p->max_ticks = ticks;
    }
    uint32_t *slot = &p->hist[fp_bucket_of(ns)];
    return FP_UNLIKELY(++*slot == 0) ? slot : NULL;
}

static inline void
probe_add_duration(ProbeObject *p, int64_t elapsed)
{
    uint64_t ticks = elapsed > 0 ? (uint64_t)elapsed : 0;
    uint32_t *wrapped = probe_fold_duration(p, ticks, probe_ticks_to_ns(p, ticks));
    if (FP_UNLIKELY(wrapped != NULL)) {
        probe_bucket_wrapped(p, wrapped);
    }
}

/* Fold the pending return in; every reader of the durations calls this. */
static inline void
probe_flush(ProbeObject *p)
{
    if (p->pending_ticks != FP_NO_PENDING) {
        probe_add_duration(p, p->pending_ticks);
        p->pending_ticks = FP_NO_PENDING;
    }
}

/* The cold half of the entry: the probe's spare token is in use (recursion,
   threads, suspended generators), so take one from the free list or make
   one. Returns a new reference, or NULL with MemoryError set. */
static FP_NOINLINE TokenObject *
token_take_slow(fp_state *st)
{
    TokenObject *t = st->free_tokens;
    if (t != NULL) {
        /* The list's reference becomes the caller's. */
        st->free_tokens = t->next;
        st->n_free--;
        return t;
    }
    t = PyObject_New(TokenObject, st->token_type);
    if (t != NULL) {
        t->probe = NULL;
        t->state = st;
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
    if (st->n_free < FP_MAX_FREE_TOKENS) {
        t->next = st->free_tokens;
        st->free_tokens = t;
        st->n_free++;
    }
    else {
        Py_DECREF(t);
    }
}

/*
 * The hot paths below are split in two. The fast half covers the steady
 * state of a TSC probe and is a leaf function that needs no stack frame:
 * everything else (the monotonic clock, re-entered functions, the first
 * return) goes to the general half with a tail call.
 */
#if FP_HAVE_TSC
#  define FP_FAST_CLOCK(p) ((p)->tsc)
#  define FP_FAST_NOW() ((int64_t)__rdtsc())
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
    if (FP_UNLIKELY(p->hist == NULL) && probe_alloc_hist(p) < 0) {
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
    t->start_ticks = fp_now_ticks(p->tsc);
    return (PyObject *)t;
}

/* nb_invert: the entry probe. Returns a new reference to a Token that
   holds the start time, or NULL with MemoryError set. */
static PyObject *
probe_enter(PyObject *self)
{
    ProbeObject *p = (ProbeObject *)self;
    TokenObject *t = p->spare;
    if (FP_UNLIKELY(t == NULL || !FP_FAST_CLOCK(p))) {
        return probe_enter_general(p);
    }
    p->spare = NULL;  /* the spare slot's reference becomes the stack's */
    t->probe = p;
    p->calls++;
    t->start_ticks = FP_FAST_NOW();
    return (PyObject *)t;
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
    p->tsc = ((fp_state *)PyModule_GetState(module))->default_tsc;
    p->stop_errors = 0;
    p->calls = 0;
    probe_clear_counters(p);
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
    if (p->spare != NULL) {
        token_stash(p->spare);
        p->spare = NULL;
    }
    PyMem_Free(p->hist);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Returns a new reference to the tuple (calls, completed, errors,
   total_ticks, min_ticks, max_ticks, histogram_bytes, ns_per_tick), with
   the latest return folded in: durations in this probe's clock ticks and
   what converts them (1.0 for CLOCK_MONOTONIC); histogram buckets in ns.
   min_ticks is 0 while nothing has completed. */
static PyObject *
probe_snapshot(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ProbeObject *p = (ProbeObject *)self;
    probe_flush(p);
    return Py_BuildValue(
        "(KKKKKKy#d)",
        (unsigned long long)p->calls,
        (unsigned long long)p->completed,
        (unsigned long long)p->errors,
        (unsigned long long)p->total_ticks,
        (unsigned long long)(p->completed ? p->min_ticks : 0),
        (unsigned long long)p->max_ticks,
        (const char *)(p->hist != NULL ? p->hist : fp_empty_hist), (Py_ssize_t)FP_HIST_BYTES,
#if FP_HAVE_TSC
        p->tsc ? fp_tsc_ns_per_tick() : 1.0);
#else
        1.0);
#endif
}

static PyObject *
probe_reset(PyObject *self, PyObject *Py_UNUSED(ignored))
{
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

/* For the tests: set every histogram bucket to `count`, so that the rare
   overflow path can be reached without 4 billion calls. */
static PyObject *
probe_fill_histogram(PyObject *self, PyObject *arg)
{
    unsigned long count = PyLong_AsUnsignedLong(arg);
    if (count == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (count > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a bucket holds at most 2**32 - 1");
        return NULL;
    }
    ProbeObject *p = (ProbeObject *)self;
    if (p->hist == NULL && probe_alloc_hist(p) < 0) {
        return NULL;
    }
    for (int i = 0; i < FP_HIST_BUCKETS; i++) {
        p->hist[i] = (uint32_t)count;
    }
    Py_RETURN_NONE;
}

static PyMethodDef probe_methods[] = {
    {"snapshot", probe_snapshot, METH_NOARGS,
     "snapshot() -> (calls, completed, errors, total_ticks, min_ticks, max_ticks, histogram_bytes, ns_per_tick)"},
    {"reset", probe_reset, METH_NOARGS,
     "Zero every counter; activations running now stay counted as started."},
    {"clear", probe_clear, METH_NOARGS,
     "Zero every counter, in a forked child, where activations in flight are no longer counted."},
    {"_fill_histogram", probe_fill_histogram, METH_O, "For tests: set every bucket to a count."},
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

static PyGetSetDef probe_getset[] = {
    {"clock", probe_clock, NULL, "This probe's clock: 'tsc' or 'monotonic'.", NULL},
    {"calls", probe_calls, NULL, "Activations started (cheaper than snapshot()[0]).", NULL},
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

static PyType_Spec probe_spec = {
    .name = "fastpatch._ext.Probe",
    .basicsize = sizeof(ProbeObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = probe_slots,
};

/* ===================================================================== */
/* Origin: where spliced code comes from                                 */
/* ===================================================================== */

/*
 * The constant that code spliced by the import hook carries after its
 * probe: the original code, the probe, the module and the qualified name,
 * everything _patch needs to register the definition the first time
 * anything asks about it. Immutable, and not tracked by the garbage
 * collector: it can only refer to a code object made before it, a probe
 * (which refers to nothing) and two strings, so it can be in no cycle. The
 * import hook makes thousands of them a program; keeping them out of the
 * collector's generations keeps collections as short as without fastpatch.
 *
 * The lazy table lists the Origins of definitions nobody has asked about
 * yet, by their original code, so that _patch can register one when its
 * original code turns up, and read the ones that were called for a report.
 * It holds them weakly without weak reference objects (which the collector
 * would track, thousands of them): an Origin in the table takes its entry
 * out as it dies.
 */
typedef struct {
    PyObject_HEAD
    PyObject *code;
    PyObject *probe;
    PyObject *module;
    PyObject *qualname;
    PyObject *weakreflist;
    int in_lazy;            /* its entry in the lazy table may be there */
} OriginObject;

/* Which end signals are errors for activations of `code` (see FP_STOP_ITERATION_IS_ERROR). */
static int
fp_stop_errors_of(PyCodeObject *code)
{
    int flags = code->co_flags;
    int stop_errors = 0;
    if (flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) {
        stop_errors |= FP_STOP_ITERATION_IS_ERROR;
    }
    if (flags & CO_ASYNC_GENERATOR) {
        stop_errors |= FP_STOP_ASYNC_ITERATION_IS_ERROR;
    }
    return stop_errors;
}

/* Returns a new reference to an Origin of `code` (a code object) for
   `probe` (a Probe), whose error rule it sets from the code's kind. */
static PyObject *
origin_make(PyTypeObject *type, PyObject *code, PyObject *probe, PyObject *module, PyObject *qualname)
{
    OriginObject *o = (OriginObject *)type->tp_alloc(type, 0);
    if (o == NULL) {
        return NULL;
    }
    ((ProbeObject *)probe)->stop_errors = fp_stop_errors_of((PyCodeObject *)code);
    o->code = Py_NewRef(code);
    o->probe = Py_NewRef(probe);
    o->module = Py_NewRef(module);
    o->qualname = Py_NewRef(qualname);
    o->weakreflist = NULL;
    o->in_lazy = 0;
    return (PyObject *)o;
}

static PyObject *
origin_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"code", "probe", "module", "qualname", NULL};
    PyObject *code, *probe, *module, *qualname;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OUU:Origin", kwlist, &PyCode_Type, &code, &probe, &module,
                                     &qualname)) {
        return NULL;
    }
    PyObject *owner = PyType_GetModule(type);
    if (owner == NULL) {
        return NULL;
    }
    fp_state *st = (fp_state *)PyModule_GetState(owner);
    if (Py_TYPE(probe) != st->probe_type) {
        PyErr_Format(PyExc_TypeError, "Origin() needs a fastpatch probe, not %.100s", Py_TYPE(probe)->tp_name);
        return NULL;
    }
    return origin_make(type, code, probe, module, qualname);
}

/* The lazy table's key for `code`, or NULL with an exception set. */
static PyObject *
lazy_key(PyObject *code)
{
    return PyLong_FromVoidPtr(code);
}

/* Take `o`'s entry out of the lazy table, if the entry is still its own. */
static void
lazy_remove(fp_state *st, OriginObject *o)
{
    o->in_lazy = 0;
    if (st == NULL || st->lazy == NULL) {
        return;
    }
    PyObject *key = lazy_key(o->code);
    PyObject *value = key != NULL ? PyDict_GetItemWithError(st->lazy, key) : NULL;  /* borrowed */
    if (value != NULL && PyLong_AsVoidPtr(value) == (void *)o) {
        PyDict_DelItem(st->lazy, key);
    }
    Py_XDECREF(key);
}

static void
origin_dealloc(PyObject *self)
{
    OriginObject *o = (OriginObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (o->in_lazy) {
        /* a deallocator may run while an exception propagates */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        lazy_remove((fp_state *)PyType_GetModuleState(tp), o);
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    if (o->weakreflist != NULL) {
        PyObject_ClearWeakRefs(self);
    }
    Py_XDECREF(o->code);
    Py_XDECREF(o->probe);
    Py_XDECREF(o->module);
    Py_XDECREF(o->qualname);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
origin_repr(PyObject *self)
{
    OriginObject *o = (OriginObject *)self;
    return PyUnicode_FromFormat("<fastpatch origin of %U.%U>", o->module, o->qualname);
}

static PyObject *
origin_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    OriginObject *o = (OriginObject *)self;
    return Py_BuildValue("(O(OOOO))", (PyObject *)Py_TYPE(self), o->code, o->probe, o->module, o->qualname);
}

static PyMethodDef origin_methods[] = {
    {"__reduce__", origin_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef origin_members[] = {
    {"code", T_OBJECT_EX, offsetof(OriginObject, code), READONLY, "The original code object."},
    {"probe", T_OBJECT_EX, offsetof(OriginObject, probe), READONLY, "The probe the spliced code runs."},
    {"module", T_OBJECT_EX, offsetof(OriginObject, module), READONLY, "The name of the module it was defined in."},
    {"qualname", T_OBJECT_EX, offsetof(OriginObject, qualname), READONLY, "Its qualified name."},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(OriginObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot origin_slots[] = {
    {Py_tp_new, origin_new},
    {Py_tp_dealloc, origin_dealloc},
    {Py_tp_repr, origin_repr},
    {Py_tp_methods, origin_methods},
    {Py_tp_members, origin_members},
    {Py_tp_doc, "Origin(code, probe, module, qualname): the constant spliced code carries after its probe.\n\n"
                "It holds the original code, so that the original lives as long as any code runs the probe,\n"
                "and the probe, module and qualified name, so that the definition can be registered the\n"
                "first time anything asks about code that carries it. Making one sets the probe's error\n"
                "rule from the code's kind: StopIteration and StopAsyncIteration end an activation\n"
                "normally unless CPython turns them into RuntimeError as they leave that kind of frame."},
    {0, NULL},
};

static PyType_Spec origin_spec = {
    .name = "fastpatch._ext.Origin",
    .basicsize = sizeof(OriginObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = origin_slots,
};

/* ===================================================================== */
/* Token: one per running or suspended activation                        */
/* ===================================================================== */

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
            int64_t elapsed = fp_now_ticks(p->tsc) - t->start_ticks;
            probe_flush(p);
            p->pending_ticks = elapsed > 0 ? elapsed : 0;
            p->completed++;
        }
        t->probe = NULL;
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

/* A histogram bucket of the fast path below just wrapped around. */
static FP_COLD PyObject *
token_exit_overflow(ProbeObject *p, uint32_t *slot, PyObject *retval)
{
    probe_bucket_wrapped(p, slot);
    return retval;
}

/* Whether an end must take the general half (shared by the exit's
   subscript and the deallocator): the fast half needs a probe on the fast
   clock, its spare slot free for the token, a previous end pending, and an
   activation begun in this process. A macro, so that each caller's branch
   hint covers the whole condition. */
#define TOKEN_NEEDS_GENERAL_END(t, p)                                                               \
    ((p) == NULL || !FP_FAST_CLOCK(p) || (p)->spare != NULL || (p)->pending_ticks == FP_NO_PENDING \
     || token_started_before_fork((t), 1))

/* The fast half of an end: this end's duration becomes the pending one,
   and the token leaves the activation (the caller puts it in its probe's
   spare slot, with a reference). Returns the previous pending duration, to
   fold in. */
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

static PyObject *
token_exit(PyObject *self, PyObject *retval)
{
    TokenObject *t = (TokenObject *)self;
    ProbeObject *p = t->probe;
    if (FP_UNLIKELY(TOKEN_NEEDS_GENERAL_END(t, p))) {
        return token_exit_general(t, retval);
    }
    uint64_t previous = token_end_fast(t, p);
    Py_INCREF(t);  /* the spare slot's reference */
    p->spare = t;
    Py_INCREF(retval);
    /* probe_add_duration(), with the rare overflow as a tail call. */
    uint32_t *wrapped = probe_fold_duration(p, previous, FP_FAST_TO_NS(previous));
    if (FP_UNLIKELY(wrapped != NULL)) {
        return token_exit_overflow(p, wrapped, retval);
    }
    return retval;
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
            int64_t end = fp_now_ticks(p->tsc);
            int is_error = probe_ending_is_error(p);
            int64_t elapsed = end - t->start_ticks;
            p->completed++;
            p->errors += (uint64_t)is_error;
            /* Pending, as in token_exit_general: then the next end through
               the deallocator (every return on 3.9) takes the fast path. */
            probe_flush(p);
            p->pending_ticks = elapsed > 0 ? elapsed : 0;
        }
        t->probe = NULL;
    }
    /* Revive it for its probe's spare slot or the free list, so that
       functions which keep raising do not allocate either. */
    if (p != NULL && p->spare == NULL) {
        _Py_NewReference((PyObject *)t);
        p->spare = t;
        return;
    }
    fp_state *st = t->state;
    if (st != NULL && st->n_free < FP_MAX_FREE_TOKENS) {
        _Py_NewReference((PyObject *)t);
        t->next = st->free_tokens;
        st->free_tokens = t;
        st->n_free++;
        return;
    }
    PyObject_Free(t);
    Py_DECREF(tp);
}

/* The steady state of a normal end through the deallocator (every return on
   3.9): as token_exit's fast half, one end late (token_dealloc_general
   leaves each end pending too), the token back to its probe's spare slot. */
static void
token_dealloc(PyObject *self)
{
    TokenObject *t = (TokenObject *)self;
    ProbeObject *p = t->probe;
    if (FP_UNLIKELY(TOKEN_NEEDS_GENERAL_END(t, p) || PyErr_Occurred() != NULL)) {
        token_dealloc_general(t);
        return;
    }
    uint64_t previous = token_end_fast(t, p);
    _Py_NewReference(self);  /* the spare slot's reference */
    p->spare = t;
    uint32_t *wrapped = probe_fold_duration(p, previous, FP_FAST_TO_NS(previous));
    if (FP_UNLIKELY(wrapped != NULL)) {
        probe_bucket_wrapped(p, wrapped);
    }
}

static PyType_Slot token_slots[] = {
    {Py_tp_dealloc, token_dealloc},
    {Py_mp_subscript, token_exit},
    {Py_tp_doc, "Start time of one activation; lives on the frame's value stack."},
    {0, NULL},
};

static PyType_Spec token_spec = {
    .name = "fastpatch._ext.Token",
    .basicsize = sizeof(TokenObject),
    .itemsize = 0,
    .flags = FP_TOKEN_FLAGS,
    .slots = token_slots,
};

/* ===================================================================== */
/* The main script's code, for zero-code activation                      */
/* ===================================================================== */

/*
 * `python SCRIPT` and `python -c CODE` compile the program's main code and
 * run it themselves: no import, so no import hook sees it. CPython raises
 * the audit event "cpython.run_file" (with the file name) or
 * "cpython.run_command" first, then, in pythonrun.c's run_mod, "exec" with
 * the compiled code object just before it runs it (3.13+ import linecache
 * in between for -c, which raises an "exec" of its own). An audit hook sees
 * that code object while nothing has run it yet, and its co_consts tuple is
 * the compiler's own: the nested code objects the functions will be made
 * from can be replaced there, in place (CPython's own intern_constants does
 * the same to a code object's tuple as it makes it). Every version reads
 * constants from co_consts when it runs the code (LOAD_CONST, by index).
 *
 * The hook is a C one (PySys_AddAuditHook): it cannot be removed, so after
 * its one use it costs every later audit event a load and a branch; a
 * Python hook would cost each event a call. Process-wide state, written
 * under the GIL by the interpreter that armed it, the only one it acts for.
 * A main script read from a .pyc file is unmarshalled and run without an
 * "exec" event: it is left alone, as are `-m` (runpy asks the import hook
 * for the code) and the interactive prompt.
 */
#define FP_MAIN_OFF 0      /* done, or never asked */
#define FP_MAIN_WAITING 1  /* armed: waiting for cpython.run_file or cpython.run_command */
#define FP_MAIN_READY 2    /* waiting for the "exec" of the main code */

static int fp_main_state = FP_MAIN_OFF;
static int fp_main_hook_added = 0;             /* PySys_AddAuditHook, once per process */
static PyObject *fp_main_callback = NULL;      /* strong while not FP_MAIN_OFF */
static PyObject *fp_main_filename = NULL;      /* strong while FP_MAIN_READY */
static PyInterpreterState *fp_main_interp = NULL;

static void
fp_main_done(void)
{
    fp_main_state = FP_MAIN_OFF;
    Py_CLEAR(fp_main_callback);
    Py_CLEAR(fp_main_filename);
}

/* Put the nested code objects of `spliced` (the main code with its
   functions spliced, as the import hook splices a module) into `code`'s own
   co_consts, in place. Checks everything before it changes anything: 0, or
   -1 with an exception set and `code` untouched. */
static int
fp_put_nested_code(PyCodeObject *code, PyObject *spliced)
{
    if (!PyCode_Check(spliced)) {
        PyErr_Format(PyExc_TypeError, "the spliced main code is a %.100s, not a code object",
                     Py_TYPE(spliced)->tp_name);
        return -1;
    }
    PyObject *mine = code->co_consts, *theirs = ((PyCodeObject *)spliced)->co_consts;
    Py_ssize_t n = PyTuple_GET_SIZE(mine);
    if (PyTuple_GET_SIZE(theirs) != n) {
        PyErr_Format(PyExc_ValueError, "the spliced main code has %zd constants, not %zd",
                     PyTuple_GET_SIZE(theirs), n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *old = PyTuple_GET_ITEM(mine, i), *new = PyTuple_GET_ITEM(theirs, i);
        if (old != new && !(PyCode_Check(old) && PyCode_Check(new))) {
            PyErr_Format(PyExc_ValueError, "the spliced main code's constant %zd is not a code object in both", i);
            return -1;
        }
    }
    int changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *old = PyTuple_GET_ITEM(mine, i), *new = PyTuple_GET_ITEM(theirs, i);
        if (old != new) {
            PyTuple_SET_ITEM(mine, i, Py_NewRef(new));
            Py_DECREF(old);  /* the spliced code's Origin keeps an original code alive */
            changed = 1;
        }
    }
    if (changed) {
        FP_TUPLE_FORGET_HASH(mine);
        /* The collector may have stopped tracking a tuple of untracked
           items; the new ones may be tracked. */
        if (!PyObject_GC_IsTracked(mine)) {
            PyObject_GC_Track(mine);
        }
    }
    return 0;
}

/* "exec" while FP_MAIN_READY: whether `args` holds the main code. */
static int
fp_main_is_main_code(PyObject *args, PyCodeObject **code)
{
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1 || !PyCode_Check(PyTuple_GET_ITEM(args, 0))) {
        return 0;
    }
    PyCodeObject *co = (PyCodeObject *)PyTuple_GET_ITEM(args, 0);
    if (PyUnicode_CompareWithASCIIString(co->co_name, "<module>") != 0
        || PyUnicode_Compare(co->co_filename, fp_main_filename) != 0) {
        PyErr_Clear();  /* a failed comparison (cannot happen with str) is no match */
        return 0;
    }
    *code = co;
    return 1;
}

/* The main code, once compiled and before it runs: the callback's spliced
   code goes into it. Whatever fails is one line on stderr; the program runs. */
static void
fp_main_splice(PyCodeObject *code)
{
    PyObject *callback = fp_main_callback;
    fp_main_callback = NULL;  /* ours now; the hook is off before any Python code runs */
    fp_main_done();
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *spliced = PyObject_CallOneArg(callback, (PyObject *)code);
    if (spliced == NULL || fp_put_nested_code(code, spliced) < 0) {
        PyObject *etype, *evalue, *etb;
        PyErr_Fetch(&etype, &evalue, &etb);
        PyErr_NormalizeException(&etype, &evalue, &etb);
        PySys_FormatStderr("fastpatch: could not instrument __main__: %s: %S\n",
                           etype != NULL ? ((PyTypeObject *)etype)->tp_name : "?", evalue != NULL ? evalue : Py_None);
        Py_XDECREF(etype);
        Py_XDECREF(evalue);
        Py_XDECREF(etb);
        PyErr_Clear();
    }
    Py_XDECREF(spliced);
    Py_DECREF(callback);
    PyErr_Restore(type, value, tb);
}

static FP_NOINLINE int
fp_main_audit_event(const char *event, PyObject *args)
{
    if (strncmp(event, "cpython.", 8) == 0) {
        const char *what = event + 8;
        if (strcmp(what, "_PySys_ClearAuditHooks") == 0) {  /* finalisation: hooks are about to go */
            fp_main_done();
            fp_main_hook_added = 0;
            return 0;
        }
        if (fp_main_state != FP_MAIN_WAITING || strncmp(what, "run_", 4) != 0
            || PyInterpreterState_Get() != fp_main_interp) {
            return 0;
        }
        PyObject *filename = NULL;
        if (strcmp(what, "run_command") == 0) {
            filename = PyUnicode_FromString("<string>");
        }
        else if (strcmp(what, "run_file") == 0 && PyTuple_Check(args) && PyTuple_GET_SIZE(args) >= 1
                 && PyUnicode_Check(PyTuple_GET_ITEM(args, 0))) {
            filename = Py_NewRef(PyTuple_GET_ITEM(args, 0));
        }
        if (filename == NULL) {  /* -m, the prompt, stdin: not ours (or out of memory) */
            PyErr_Clear();
            fp_main_done();
            return 0;
        }
        fp_main_filename = filename;
        fp_main_state = FP_MAIN_READY;
        return 0;
    }
    PyCodeObject *code;
    if (fp_main_state == FP_MAIN_READY && strcmp(event, "exec") == 0 && PyInterpreterState_Get() == fp_main_interp
        && fp_main_is_main_code(args, &code)) {
        fp_main_splice(code);
    }
    return 0;
}

/* The audit hook: one load and a branch for every event once its work is done. */
static int
fp_main_audit_hook(const char *event, PyObject *args, void *Py_UNUSED(data))
{
    if (FP_LIKELY(fp_main_state == FP_MAIN_OFF)) {
        return 0;
    }
    return fp_main_audit_event(event, args);
}

/* splice_main_code(callback): the main code of `python SCRIPT` or `python
   -c CODE`, about to run in this interpreter, goes once through
   callback(code) -> code with its functions spliced (see above). Call it
   during startup (fastpatch.pth); a .pyc main script, -m and the
   interactive prompt are left alone. */
static PyObject *
fp_splice_main_code(PyObject *Py_UNUSED(module), PyObject *callback)
{
    if (!PyCallable_Check(callback)) {
        PyErr_Format(PyExc_TypeError, "splice_main_code() needs a callable, not %.100s", Py_TYPE(callback)->tp_name);
        return NULL;
    }
    if (!fp_main_hook_added) {
        if (PySys_AddAuditHook(fp_main_audit_hook, NULL) < 0) {
            if (!PyErr_Occurred()) {  /* another audit hook refused it, and the refusal was cleared */
                PyErr_SetString(PyExc_RuntimeError, "an audit hook refused fastpatch's audit hook");
            }
            return NULL;
        }
        fp_main_hook_added = 1;
    }
    fp_main_done();
    fp_main_callback = Py_NewRef(callback);
    fp_main_interp = PyInterpreterState_Get();
    fp_main_state = FP_MAIN_WAITING;
    Py_RETURN_NONE;
}

/* ===================================================================== */
/* Module functions (cold path)                                          */
/* ===================================================================== */


/* set_code(func, code): func.__code__ = code, and on 3.13+ the function
   version a function made from `code` would have (see
   fp_restore_function_version), so that calls to it still specialise. */
static PyObject *
fp_set_code(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "set_code() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *func = args[0], *code = args[1];
    if (!PyFunction_Check(func)) {
        PyErr_Format(PyExc_TypeError, "set_code() needs a function, not %.100s",
                     Py_TYPE(func)->tp_name);
        return NULL;
    }
    if (!PyCode_Check(code)) {
        PyErr_Format(PyExc_TypeError, "set_code() needs a code object, not %.100s",
                     Py_TYPE(code)->tp_name);
        return NULL;
    }
    if (PyObject_SetAttrString(func, "__code__", code) < 0) {
        return NULL;
    }
    fp_restore_function_version(func, code);
    Py_RETURN_NONE;
}

/* set_default_clock(tsc): the clock of probes this interpreter creates from
   now on. Returns whether the TSC is used; asking for it where it is not
   invariant leaves CLOCK_MONOTONIC and returns False. The first TSC choice
   in the process measures the tick rate (FP_CALIBRATION_NS). */
static PyObject *
fp_set_default_clock(PyObject *module, PyObject *arg)
{
    int want = PyObject_IsTrue(arg);
    if (want < 0) {
        return NULL;
    }
    fp_state *st = (fp_state *)PyModule_GetState(module);
    st->default_tsc = want && fp_tsc_invariant;
#if FP_HAVE_TSC
    if (st->default_tsc && fp_tsc_mult == 0) {
        fp_calibrate_tsc();
    }
#endif
    return PyBool_FromLong(st->default_tsc);
}

/* forked_child(): in a child just forked, stop counting the activations
   that started before the fork (see fp_fork_floor_ticks). */
static PyObject *
fp_forked_child(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    fp_fork_floor_ticks[0] = fp_now_ticks(0);
    fp_fork_floor_ticks[1] = fp_tsc_invariant ? fp_now_ticks(1) : INT64_MIN;
    Py_RETURN_NONE;
}

static PyObject *
fp_clock_name(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    return PyUnicode_FromString(st->default_tsc ? "tsc" : "monotonic");
}

static PyObject *
fp_bucket_index(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long long ns = PyLong_AsUnsignedLongLong(arg);
    if (ns == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(fp_bucket_of((uint64_t)ns));
}

static PyObject *
fp_probe_size(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t((Py_ssize_t)(sizeof(ProbeObject) + FP_HIST_BYTES));
}

static PyObject *
fp_idle_tokens(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    return PyLong_FromSsize_t(st->n_free);
}

static int
check_origin(fp_state *st, PyObject *origin)
{
    if (Py_TYPE(origin) != st->origin_type) {
        PyErr_Format(PyExc_TypeError, "expected a fastpatch Origin, not %.100s", Py_TYPE(origin)->tp_name);
        return -1;
    }
    return 0;
}

/* lazy_add(origin): list the Origin in the lazy table, under its original code. */
static PyObject *
fp_lazy_add(PyObject *module, PyObject *origin)
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    if (check_origin(st, origin) < 0) {
        return NULL;
    }
    OriginObject *o = (OriginObject *)origin;
    PyObject *key = lazy_key(o->code), *value = PyLong_FromVoidPtr(origin);
    int rc = key != NULL && value != NULL ? PyDict_SetItem(st->lazy, key, value) : -1;
    Py_XDECREF(key);
    Py_XDECREF(value);
    if (rc < 0) {
        return NULL;
    }
    o->in_lazy = 1;
    Py_RETURN_NONE;
}

/* lazy_origin(code, probe, module, qualname) -> a new Origin, listed in
   the lazy table: what the C splicer makes for each function it splices. */
static PyObject *
fp_lazy_origin(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    if (nargs != 4 || !PyCode_Check(args[0]) || Py_TYPE(args[1]) != st->probe_type || !PyUnicode_Check(args[2])
        || !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "lazy_origin(code, probe, module: str, qualname: str)");
        return NULL;
    }
    PyObject *origin = origin_make(st->origin_type, args[0], args[1], args[2], args[3]);
    if (origin == NULL) {
        return NULL;
    }
    PyObject *listed = fp_lazy_add(module, origin);
    if (listed == NULL) {
        Py_DECREF(origin);
        return NULL;
    }
    Py_DECREF(listed);
    return origin;
}

/* The Origin a lazy table value names: borrowed; alive, since an Origin
   takes its entry out as it dies. */
static OriginObject *
lazy_origin(PyObject *value)
{
    return (OriginObject *)PyLong_AsVoidPtr(value);
}

/* lazy_get(code) -> the Origin listed under this original code, or None. */
static PyObject *
fp_lazy_get(PyObject *module, PyObject *code)
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    PyObject *key = lazy_key(code);
    if (key == NULL) {
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(st->lazy, key);  /* borrowed */
    Py_DECREF(key);
    if (value == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return Py_NewRef((PyObject *)lazy_origin(value));
}

/* lazy_discard(origin): take the entry of the Origin's original code out of
   the lazy table (its definition is registered now), whichever Origin it names. */
static PyObject *
fp_lazy_discard(PyObject *module, PyObject *origin)
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    if (check_origin(st, origin) < 0) {
        return NULL;
    }
    PyObject *key = lazy_key(((OriginObject *)origin)->code);
    if (key == NULL) {
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(st->lazy, key);  /* borrowed */
    int rc = 0;
    if (value != NULL) {
        lazy_origin(value)->in_lazy = 0;
        rc = PyDict_DelItem(st->lazy, key);
    }
    Py_DECREF(key);
    if (rc < 0 || PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The Origins of the lazy table, all of them or those whose probe was
   called; new list, holding each one.

   Nothing is allocated while the table is walked: an allocation could run
   the garbage collector, which could free code and with it an Origin, whose
   deallocator takes its entry out of the table under PyDict_Next. So the
   list is made first, as long as the table (a collection then can only
   shrink the table), and cut to the Origins taken. */
static PyObject *
lazy_list(fp_state *st, int called_only)
{
    PyObject *out = PyList_New(PyDict_GET_SIZE(st->lazy)), *key, *value;
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0, n = 0;
    while (n < PyList_GET_SIZE(out) && PyDict_Next(st->lazy, &pos, &key, &value)) {
        OriginObject *o = lazy_origin(value);
        if (!called_only || ((ProbeObject *)o->probe)->calls != 0) {
            PyList_SET_ITEM(out, n++, Py_NewRef((PyObject *)o));
        }
    }
    Py_SET_SIZE(out, n);  /* the slots past n were never filled: NULL */
    return out;
}

/* lazy_origins() -> list: every Origin in the lazy table. */
static PyObject *
fp_lazy_origins(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return lazy_list((fp_state *)PyModule_GetState(module), 0);
}

/* called_origins() -> list: the Origins in the lazy table whose probe has
   been called: what the report at exit reads of the thousands of
   definitions the import hook splices, most of which never run. */
static PyObject *
fp_called_origins(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return lazy_list((fp_state *)PyModule_GetState(module), 1);
}

/* lazy_clear(): empty the lazy table. */
static PyObject *
fp_lazy_clear(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(st->lazy, &pos, &key, &value)) {
        lazy_origin(value)->in_lazy = 0;
    }
    PyDict_Clear(st->lazy);
    Py_RETURN_NONE;
}

/* lazy_count() -> int: the Origins in the lazy table. */
static PyObject *
fp_lazy_count(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(PyDict_GET_SIZE(((fp_state *)PyModule_GetState(module))->lazy));
}

static PyMethodDef fp_methods[] = {
    {"lazy_add", fp_lazy_add, METH_O, "lazy_add(origin): list an Origin in the lazy table."},
    {"lazy_origin", (PyCFunction)(void (*)(void))fp_lazy_origin, METH_FASTCALL,
     "lazy_origin(code, probe, module, qualname) -> a new Origin, listed in the lazy table."},
    {"lazy_get", fp_lazy_get, METH_O, "lazy_get(code) -> the Origin listed under this original code, or None."},
    {"lazy_discard", fp_lazy_discard, METH_O, "lazy_discard(origin): take an Origin out of the lazy table."},
    {"lazy_origins", fp_lazy_origins, METH_NOARGS, "lazy_origins() -> list: every Origin in the lazy table."},
    {"called_origins", fp_called_origins, METH_NOARGS,
     "called_origins() -> list: the Origins in the lazy table whose probe has been called."},
    {"lazy_clear", fp_lazy_clear, METH_NOARGS, "lazy_clear(): empty the lazy table."},
    {"lazy_count", fp_lazy_count, METH_NOARGS, "lazy_count() -> int: the Origins in the lazy table."},
    {"splice_main_code", fp_splice_main_code, METH_O,
     "splice_main_code(callback): the main code of `python SCRIPT` or `python -c CODE`, once compiled and\n"
     "before it runs, gets the nested code objects of callback(code) (its functions spliced), in place."},
    {"set_code", (PyCFunction)(void (*)(void))fp_set_code, METH_FASTCALL,
     "set_code(func, code): assign func.__code__, keeping calls to func specialisable."},
    {"set_default_clock", fp_set_default_clock, METH_O,
     "set_default_clock(tsc) -> bool: the clock of probes this interpreter creates from now on."},
    {"forked_child", fp_forked_child, METH_NOARGS,
     "In a child just forked: activations that started before the fork are no longer counted."},
    {"clock_name", fp_clock_name, METH_NOARGS, "The default clock of new probes: 'tsc' or 'monotonic'."},
    {"bucket_index", fp_bucket_index, METH_O, "Histogram bucket of a duration in ns."},
    {"probe_size", fp_probe_size, METH_NOARGS,
     "Bytes of C state per probe once called (the histogram is allocated at its first call)."},
    {"idle_tokens", fp_idle_tokens, METH_NOARGS, "Tokens waiting on the free list."},
    {NULL, NULL, 0, NULL},
};

/* ===================================================================== */
/* Module setup                                                          */
/* ===================================================================== */

/* PyModule_AddObjectRef is 3.10+. */
static int
fp_add_object(PyObject *module, const char *name, PyObject *value)
{
    Py_INCREF(value);
    if (PyModule_AddObject(module, name, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    return 0;
}

static int
fp_exec(PyObject *module)
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    if (!fp_tsc_checked) {  /* once per process; later interpreters only read it */
        fp_clock_init();
        fp_tsc_invariant = fp_tsc_is_invariant();
        fp_tsc_checked = 1;
    }
    st->free_tokens = NULL;
    st->n_free = 0;
    st->default_tsc = 0;
    st->probe_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &probe_spec, NULL);
    if (st->probe_type == NULL) {
        return -1;
    }
    st->token_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &token_spec, NULL);
    if (st->token_type == NULL) {
        return -1;
    }
    st->origin_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &origin_spec, NULL);
    if (st->origin_type == NULL) {
        return -1;
    }
    st->lazy = PyDict_New();
    if (st->lazy == NULL) {
        return -1;
    }
    if (fp_add_object(module, "Probe", (PyObject *)st->probe_type) < 0
        || fp_add_object(module, "Token", (PyObject *)st->token_type) < 0
        || fp_add_object(module, "Origin", (PyObject *)st->origin_type) < 0
        || PyModule_AddIntConstant(module, "HIST_BUCKETS", FP_HIST_BUCKETS) < 0
        || PyModule_AddIntConstant(module, "HIST_SHIFT", FP_HIST_SHIFT) < 0) {
        return -1;
    }
    return 0;
}

static int
fp_traverse(PyObject *module, visitproc visit, void *arg)
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    Py_VISIT(st->probe_type);
    Py_VISIT(st->token_type);
    Py_VISIT(st->origin_type);
    Py_VISIT(st->lazy);
    return 0;
}

static int
fp_clear(PyObject *module)
{
    fp_state *st = (fp_state *)PyModule_GetState(module);
    Py_CLEAR(st->probe_type);
    Py_CLEAR(st->token_type);
    Py_CLEAR(st->origin_type);
    Py_CLEAR(st->lazy);
    return 0;
}

/* Idle tokens are live objects owned by the list; they hold their type. */
static void
fp_free(void *module)
{
    fp_state *st = (fp_state *)PyModule_GetState((PyObject *)module);
    while (st->free_tokens != NULL) {
        TokenObject *t = st->free_tokens;
        st->free_tokens = t->next;
        Py_DECREF(Py_TYPE(t));
        PyObject_Free(t);
    }
    st->n_free = 0;
    fp_clear((PyObject *)module);
}

static PyModuleDef_Slot fp_slots[] = {
    {Py_mod_exec, fp_exec},
#if FP_HAVE_MULTIPLE_INTERPRETERS_SLOT
    /* Each interpreter's module has its own state (free list, default
       clock) and probes; what is process-wide (whether the TSC is
       invariant, its tick rate) is written once, under the GIL. So
       subinterpreters that share the main GIL (the legacy kind mod_wsgi
       uses) are fine, and those with a GIL of their own are refused. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
#if FP_HAVE_MOD_GIL_SLOT
    /* Counters are plain increments that rely on the GIL. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fp_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastpatch._ext",
    .m_doc = "Clock, probes, counters and histograms for fastpatch.",
    .m_size = sizeof(fp_state),
    .m_methods = fp_methods,
    .m_slots = fp_slots,
    .m_traverse = fp_traverse,
    .m_clear = fp_clear,
    .m_free = fp_free,
};

PyMODINIT_FUNC
PyInit__ext(void)
{
    return PyModuleDef_Init(&fp_module);
}
