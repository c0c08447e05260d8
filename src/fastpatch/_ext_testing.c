/*
 * _ext_testing.c -- fastpatch._ext's test hooks: module functions for the
 * tests alone, each named _testing_*, in a method table of their own that
 * the module setup adds after the real one. fastpatch's own code never
 * calls them.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

PyMethodDef fp_testing_methods[] = {
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
