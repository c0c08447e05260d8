/*
 * fastpatch._ext -- the probes: clock, counters and latency histograms, and
 * the registry's C half. This file only sets the module up; each concern
 * has a file of its own:
 *
 *   _ext_probe.c, .h      Probe and Token: the hot path, whole in one
 *                         translation unit
 *   _ext_clock.h, .c      the clock: its reads (static inline, for the hot
 *                         path), the TSC check and calibration
 *   _ext_histogram.h      the histogram's bucket layout (static inline)
 *   _ext_state.h          the module state, one per interpreter
 *   _ext_origin.c, .h     Origin, and the lazy table of the Origins nobody
 *                         has asked about yet
 *   _ext_code.c, .h       spliced code put where it runs: set_code, and the
 *                         main script's audit hook
 *   _ext_telemetry.c, .h  live telemetry: the seqlock copy readers use
 *                         (read_slots) and the snapshot writer's thread;
 *                         the file layout is _telemetry.h
 *   _ext_testing.c, .h    the test hooks, in a method table of their own
 *   _compat.h             CPython versions, compilers, private API
 *
 * The method table below is the module's API (_ext.pyi types it); the test
 * hooks, each named _testing_*, are added from _ext_testing.c's table.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_compat.h"
#include "_ext_clock.h"
#include "_ext_code.h"
#include "_ext_histogram.h"
#include "_ext_origin.h"
#include "_ext_probe.h"
#include "_ext_state.h"
#include "_ext_telemetry.h"
#include "_ext_testing.h"

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
    {"set_default_sample", fp_set_default_sample, METH_O,
     "set_default_sample(n) -> int: the sampling rate of probes this interpreter creates from now on; returns the\n"
     "previous one."},
    {"forked_child", fp_forked_child, METH_NOARGS,
     "In a child just forked: activations that started before the fork are no longer counted."},
    {"called_probes", fp_called_probes, METH_NOARGS,
     "called_probes() -> list: every live probe activated in this process (since the fork, in a forked child)."},
    {"read_slots", (PyCFunction)(void (*)(void))fp_read_slots, METH_FASTCALL,
     "read_slots(buffer, first, count) -> bytes: count slots of a counters file from slot first, each copied\n"
     "under its seqlock (an unstable one comes back with an odd seq); ValueError for slots beyond the buffer."},
    {"decode_records", (PyCFunction)(void (*)(void))fp_decode_records, METH_FASTCALL,
     "decode_records(data, slot_size, cuts, full_names) -> (records, others, unstable): the slots of a copy from\n"
     "read_slots. records: a tuple per stable record slot, (names, flags, firstlineno, sample, calls, completed,\n"
     "errors, timed, total_ns, min_ns, max_ns, counts): names \"module.qualname\", or with full_names\n"
     "(\"module.qualname\", module, qualname, filename); counts[j] the sum of its histogram's buckets cuts[j-1]\n"
     "to cuts[j] - 1 (from 0; cuts increase to 231). others: the strings and absorbed slots' indexes; unstable:\n"
     "slots that kept changing. ValueError saying what is wrong for a bad slot size or cuts, or a record whose\n"
     "names are not three NUL-terminated strings of a stable strings slot."},
    {"fold_records", (PyCFunction)(void (*)(void))fp_fold_records, METH_FASTCALL,
     "fold_records(data, slot_size, cuts) -> (keys, packed, others, unstable): decode_records' records with cuts,\n"
     "compact: keys[i] the bytes module\\0qualname of the i-th stable record, packed its fields as uint64_t\n"
     "(flags, firstlineno, sample, calls, completed, errors, timed, total_ns, min_ns, max_ns, then len(cuts)\n"
     "counts), in native order; packed is None when a count needs more than 64 bits. others, unstable and\n"
     "ValueError as decode_records."},
    {"merge_records", (PyCFunction)(void (*)(void))fp_merge_records, METH_FASTCALL,
     "merge_records(sources, n_cuts) -> dict or None: the records of fold_records' answers, each source (keys,\n"
     "packed, alive), merged by \"module.qualname\": name -> [calls, errors, total_ns, active, counts, min_ns,\n"
     "max_ns], what fastpatch.export._functions.merge_folded returns for the same records (active: calls -\n"
     "completed of the alive sources' records; min_ns and max_ns over timed records, else 0). None when a sum\n"
     "needs more than 64 bits (merge_folded's Python ints are exact)."},
    {"telemetry_layout", fp_telemetry_layout, METH_NOARGS,
     "telemetry_layout() -> dict: sizes and offsets of _telemetry.h's structs, as compiled."},
    {"filesystem_type", fp_filesystem_type, METH_O,
     "filesystem_type(fd) -> int: statfs's f_type of the filesystem holding fd (Linux), else -1."},
    {"telemetry_arm", (PyCFunction)(void (*)(void))fp_telemetry_arm, METH_FASTCALL,
     "telemetry_arm(opener, namer, interval_ms, layout_crc, service, python, version): the writer's thread\n"
     "starts at the first activation of a probe (now if one ran already) and opens its file by opener(size)."},
    {"telemetry_stop", fp_telemetry_stop, METH_O,
     "telemetry_stop(final): join the writer's thread; if final, a last snapshot and the file marked exited;\n"
     "close the file and disarm."},
    {"telemetry_snapshot", fp_telemetry_snapshot, METH_NOARGS,
     "telemetry_snapshot() -> bool: write a snapshot now; False when there is no file."},
    {"telemetry_pause", fp_telemetry_pause, METH_NOARGS, "Before a fork: join the writer's thread."},
    {"telemetry_resume", fp_telemetry_resume, METH_NOARGS, "After a fork, in the parent: restart the thread."},
    {"telemetry_forked_child", fp_telemetry_forked_child, METH_NOARGS,
     "After a fork, in the child: forget the parent's file without writing to it."},
    {"telemetry_status", fp_telemetry_status, METH_NOARGS,
     "telemetry_status() -> dict: armed, running, file_open, slots, generation."},
    {"clock_name", fp_clock_name, METH_NOARGS, "The default clock of new probes: 'tsc' or 'monotonic'."},
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
    fp_state *st = fp_state_of(module);
    fp_clock_init();
    fp_sampler_init();
    st->free_tokens = NULL;
    st->default_sample = 1;
    st->called = NULL;
    st->called_records = NULL;
    st->n_called = st->called_capacity = 0;
    st->n_free = 0;
    st->default_tsc = 0;
    st->probe_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &fp_probe_spec, NULL);
    if (st->probe_type == NULL) {
        return -1;
    }
    st->token_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &fp_token_spec, NULL);
    if (st->token_type == NULL) {
        return -1;
    }
    st->origin_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &fp_origin_spec, NULL);
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
        || PyModule_AddIntConstant(module, "HIST_SHIFT", FP_HIST_SHIFT) < 0
        || PyModule_AddIntConstant(module, "MAX_SAMPLE", FP_MAX_SAMPLE) < 0
        || PyModule_AddFunctions(module, fp_testing_methods) < 0) {
        return -1;
    }
    return 0;
}

static int
fp_traverse(PyObject *module, visitproc visit, void *arg)
{
    fp_state *st = fp_state_of(module);
    Py_VISIT(st->probe_type);
    Py_VISIT(st->token_type);
    Py_VISIT(st->origin_type);
    Py_VISIT(st->lazy);
    return 0;
}

static int
fp_clear(PyObject *module)
{
    fp_state *st = fp_state_of(module);
    Py_CLEAR(st->probe_type);
    Py_CLEAR(st->token_type);
    Py_CLEAR(st->origin_type);
    Py_CLEAR(st->lazy);
    return 0;
}

static void
fp_free(void *module)
{
    fp_state *st = fp_state_of((PyObject *)module);
    fp_free_idle_tokens(st);
    /* No probe is left to take itself out: each holds its type, which holds the module. */
    PyMem_Free(st->called);
    PyMem_Free(st->called_records);
    st->default_sample = 1;
    st->called = NULL;
    st->called_records = NULL;
    st->n_called = st->called_capacity = 0;
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
