/*
 * _ext_testing.c -- fastpatch._ext's test hooks: module functions for the
 * tests alone, each named _testing_*, in a method table of their own that
 * the module setup adds after the real one. fastpatch's own code never
 * calls them.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_ext_histogram.h"
#include "_ext_probe.h"
#include "_ext_state.h"
#include "_ext_telemetry.h"
#include "_ext_testing.h"

/* _testing_bucket_index(ns) -> int: the histogram bucket of a duration in ns. */
static PyObject *
testing_bucket_index(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long long ns = PyLong_AsUnsignedLongLong(arg);
    if (ns == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(fp_bucket_of((uint64_t)ns));
}

/* _testing_probe_size() -> int: bytes of C state per probe once called. */
static PyObject *
testing_probe_size(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t((Py_ssize_t)(sizeof(ProbeObject) + FP_HIST_BYTES));
}

/* _testing_idle_tokens() -> int: the tokens on the module's free list. */
static PyObject *
testing_idle_tokens(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(fp_state_of(module)->n_free);
}

/* _testing_seed_sampler(seed): seed the sampler's generator, so that a
   test's choice of timed activations is the same on every run. */
static PyObject *
testing_seed_sampler(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long long seed = PyLong_AsUnsignedLongLong(arg);
    if (seed == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    fp_sampler_seed((uint64_t)seed);
    Py_RETURN_NONE;
}

/* _testing_sampler_gap(n, word) -> (gap, gap_by_log): the gap to the next
   timed activation that the random word `word` draws at rate n, and the
   gap that log() alone gives for it (see sampler_gap in _ext_probe.c). */
static PyObject *
testing_sampler_gap(PyObject *Py_UNUSED(module), PyObject *args)
{
    unsigned long rate;
    unsigned long long word;
    if (!PyArg_ParseTuple(args, "kK:_testing_sampler_gap", &rate, &word)) {
        return NULL;
    }
    uint32_t gap, gap_by_log;
    if (rate > UINT32_MAX || fp_sampler_gap_for_testing((uint32_t)rate, (uint64_t)word, &gap, &gap_by_log) < 0) {
        PyErr_SetString(PyExc_ValueError, "_testing_sampler_gap needs a rate of 2 or more and a nonzero word");
        return NULL;
    }
    return Py_BuildValue("(kk)", (unsigned long)gap, (unsigned long)gap_by_log);
}

/*
 * The slot floor: what the injected instructions cost with probes that do
 * nothing but hand a token back and forth. A SlotFloor object goes where a
 * Probe would be in a spliced code object (the benchmarks swap the constant):
 * its nb_invert hands its spare token to the activation, the token's
 * mp_subscript (the exit's subscript) puts it back and returns the return
 * value, and its deallocator (3.9's exit, and any end by an exception) does
 * the same by reviving it. One increment at each end lets a benchmark check
 * that both ran on every call. No clock, no countdown, no counters beyond
 * those two, no error check: no probe riding on these instructions can cost
 * less, so the benchmarks measure fastpatch's count-only and sampled modes
 * against it.
 */
typedef struct {
    PyObject_HEAD
    PyObject *spare;          /* an idle token, or NULL */
    PyTypeObject *token_type; /* a strong reference */
    unsigned long long entries;
    unsigned long long exits;
} SlotFloorObject;

typedef struct {
    PyObject_HEAD
    SlotFloorObject *floor;   /* borrowed: the code object holds its floor; NULL when idle */
} SlotFloorTokenObject;

static PyObject *
slot_floor_enter(PyObject *self)
{
    SlotFloorObject *f = (SlotFloorObject *)self;
    SlotFloorTokenObject *t = (SlotFloorTokenObject *)f->spare;
    if (t != NULL) {
        f->spare = NULL;  /* the spare slot's reference becomes the stack's */
    }
    else {
        t = PyObject_New(SlotFloorTokenObject, f->token_type);
        if (t == NULL) {
            return NULL;
        }
    }
    t->floor = f;
    f->entries++;
    return (PyObject *)t;
}

/* Ends the activation of token `t`, if it has one: counted, the token
   idle. Returns its floor when that floor's spare slot is free for the
   token, else NULL. */
static inline SlotFloorObject *
slot_floor_end(SlotFloorTokenObject *t)
{
    SlotFloorObject *f = t->floor;
    if (f == NULL) {
        return NULL;
    }
    f->exits++;
    t->floor = NULL;
    return f->spare == NULL ? f : NULL;
}

static PyObject *
slot_floor_exit(PyObject *self, PyObject *retval)
{
    SlotFloorObject *f = slot_floor_end((SlotFloorTokenObject *)self);
    if (f != NULL) {
        Py_INCREF(self);
        f->spare = self;
    }
    Py_INCREF(retval);
    return retval;
}

static void
slot_floor_token_dealloc(PyObject *self)
{
    SlotFloorObject *f = slot_floor_end((SlotFloorTokenObject *)self);
    if (f != NULL) {
        fp_revive(self);
        f->spare = self;
        return;
    }
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static void
slot_floor_dealloc(PyObject *self)
{
    SlotFloorObject *f = (SlotFloorObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(f->spare);
    Py_CLEAR(f->token_type);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyMemberDef slot_floor_members[] = {
    {"entries", T_ULONGLONG, offsetof(SlotFloorObject, entries), READONLY, "nb_invert calls (activations begun)"},
    {"exits", T_ULONGLONG, offsetof(SlotFloorObject, exits), READONLY, "activations ended (subscript or deallocator)"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot slot_floor_slots[] = {
    {Py_tp_dealloc, slot_floor_dealloc},
    {Py_nb_invert, slot_floor_enter},
    {Py_tp_members, slot_floor_members},
    {Py_tp_doc, "For benchmarks: a probe that only hands a token back and forth (the slot floor)."},
    {0, NULL},
};

static PyType_Spec slot_floor_spec = {
    .name = "fastpatch._ext.SlotFloor",
    .basicsize = sizeof(SlotFloorObject),
    .flags = FP_TOKEN_FLAGS,
    .slots = slot_floor_slots,
};

static PyType_Slot slot_floor_token_slots[] = {
    {Py_tp_dealloc, slot_floor_token_dealloc},
    {Py_mp_subscript, slot_floor_exit},
    {0, NULL},
};

static PyType_Spec slot_floor_token_spec = {
    .name = "fastpatch._ext.SlotFloorToken",
    .basicsize = sizeof(SlotFloorTokenObject),
    .flags = FP_TOKEN_FLAGS,
    .slots = slot_floor_token_slots,
};

/* _testing_slot_floor() -> SlotFloor: a new slot floor, of types of its own. */
static PyObject *
testing_slot_floor(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    PyTypeObject *floor_type = (PyTypeObject *)PyType_FromSpec(&slot_floor_spec);
    if (floor_type == NULL) {
        return NULL;
    }
    PyTypeObject *token_type = (PyTypeObject *)PyType_FromSpec(&slot_floor_token_spec);
    if (token_type == NULL) {
        Py_DECREF(floor_type);
        return NULL;
    }
    SlotFloorObject *f = PyObject_New(SlotFloorObject, floor_type);
    Py_DECREF(floor_type);  /* the instance holds its type */
    if (f == NULL) {
        Py_DECREF(token_type);
        return NULL;
    }
    f->spare = NULL;
    f->token_type = token_type;
    f->entries = 0;
    f->exits = 0;
    return (PyObject *)f;
}

PyMethodDef fp_testing_methods[] = {
    {"_testing_slot_floor", testing_slot_floor, METH_NOARGS,
     "For benchmarks: a probe that only hands a token back and forth, to put in a Probe's place."},
    {"_testing_seed_sampler", testing_seed_sampler, METH_O,
     "For tests: seed the sampler's generator (process-wide) with a known value."},
    {"_testing_sampler_gap", testing_sampler_gap, METH_VARARGS,
     "For tests: (gap, gap by log()) that a random word draws at a rate."},
    {"_testing_bucket_index", testing_bucket_index, METH_O, "For tests: the histogram bucket of a duration in ns."},
    {"_testing_probe_size", testing_probe_size, METH_NOARGS,
     "For tests: bytes of C state per probe once called (the histogram is allocated at its first call)."},
    {"_testing_idle_tokens", testing_idle_tokens, METH_NOARGS, "For tests: the tokens waiting on the free list."},
    {"_testing_hammer_slots", (PyCFunction)(void (*)(void))fp_testing_hammer_slots, METH_FASTCALL,
     "For tests: rewrite the first count records of a mapped counters file rounds times, under their seqlocks."},
    {NULL, NULL, 0, NULL},
};
