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

#include "_ext_clock.h"
#include "_ext_histogram.h"
#include "_ext_probe.h"
#include "_ext_state.h"

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
static const uint32_t fp_empty_hist[FP_HIST_BUCKETS] = {0};

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

/* forked_child(): in a child just forked, stop counting the activations
   that started before the fork. */
PyObject *
fp_forked_child(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    fp_fork_floor_ticks[0] = fp_now_ticks(0);
    fp_fork_floor_ticks[1] = fp_tsc_invariant ? fp_now_ticks(1) : INT64_MIN;
    Py_RETURN_NONE;
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
    TokenObject *t = free_list_pop(st);
    if (t != NULL) {
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
    if (free_list_has_room(st)) {
        free_list_push(st, t);
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
    p->tsc = fp_state_of(module)->default_tsc;
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

/* A test hook: set every histogram bucket to `count`, so that the rare
   overflow path can be reached without 4 billion calls. */
static PyObject *
probe_testing_fill_histogram(PyObject *self, PyObject *arg)
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
    fp_revive(self);  /* the spare slot's reference */
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

PyType_Spec fp_token_spec = {
    .name = "fastpatch._ext.Token",
    .basicsize = sizeof(TokenObject),
    .itemsize = 0,
    .flags = FP_TOKEN_FLAGS,
    .slots = token_slots,
};

