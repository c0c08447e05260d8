/*
 * _ext_telemetry.h -- live telemetry's C half (_ext_telemetry.c): the
 * seqlock copy every reader uses, and the snapshot writer, a thread of the
 * extension that publishes every called probe into this process's counters
 * file (the layout is in _telemetry.h; the files, their directory and
 * their rules are Python's, fastpatch/export/).
 */
#ifndef FASTPATCH_EXT_TELEMETRY_H
#define FASTPATCH_EXT_TELEMETRY_H

#include "_compat.h"
#include "_ext_state.h"

#if !defined(_WIN32)
#  define FP_HAVE_TELEMETRY_WRITER 1
#else
#  define FP_HAVE_TELEMETRY_WRITER 0
#endif

/* Set while a writer is armed: the first activation of a probe (the cold
   path) then starts the writer's thread, if it is not running. */
FP_INTERNAL extern int fp_telemetry_armed;

/* From probe_start_counting, with the GIL: start the armed writer's thread. */
FP_INTERNAL void fp_telemetry_first_call(void);

/* From reset(), before the probe's counters are zeroed (with the GIL): what
   the probe counted so far stays in its record, which never decreases. */
FP_INTERNAL void fp_telemetry_before_reset(ProbeObject *p);

/* The module functions (see their docstrings in _ext.c's method table). */
FP_INTERNAL PyObject *fp_read_slots(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
FP_INTERNAL PyObject *fp_decode_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
FP_INTERNAL PyObject *fp_fold_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
FP_INTERNAL PyObject *fp_merge_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
FP_INTERNAL PyObject *fp_telemetry_layout(PyObject *module, PyObject *ignored);
FP_INTERNAL PyObject *fp_filesystem_type(PyObject *module, PyObject *fd);
FP_INTERNAL PyObject *fp_telemetry_arm(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
FP_INTERNAL PyObject *fp_telemetry_stop(PyObject *module, PyObject *final);
FP_INTERNAL PyObject *fp_telemetry_snapshot(PyObject *module, PyObject *ignored);
FP_INTERNAL PyObject *fp_telemetry_pause(PyObject *module, PyObject *ignored);
FP_INTERNAL PyObject *fp_telemetry_resume(PyObject *module, PyObject *ignored);
FP_INTERNAL PyObject *fp_telemetry_forked_child(PyObject *module, PyObject *ignored);
FP_INTERNAL PyObject *fp_telemetry_status(PyObject *module, PyObject *ignored);
FP_INTERNAL PyObject *fp_testing_hammer_slots(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif /* FASTPATCH_EXT_TELEMETRY_H */
