/*
 * fastpatch._signals -- the one thing about signals that Python allows only
 * in the main thread and fastpatch needs in another one: giving a signal back
 * its default action.
 *
 * A Pool worker's main thread can be blocked for good when SIGTERM comes
 * (Pool.terminate() holds the lock that idle workers wait on), so there the
 * report is written by a watcher thread (fastpatch._activate), which must
 * then end the process as SIGTERM would have without fastpatch: by its
 * default action. signal.signal() refuses to run outside the main thread;
 * the C call below does not. Nothing here is on any call's path.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <signal.h>

#include "_compat.h"

static PyObject *
fp_restore_default(PyObject *module, PyObject *arg)
{
    (void)module;
    long signum = PyLong_AsLong(arg);
    if (signum == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (signum < 1 || signum > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "signal number out of range: %ld", signum);
        return NULL;
    }
    /* CPython's own record of the Python-level handler stays as it is: the
       caller is about to end the process, and the main thread may be reading
       that record (signal.getsignal) at this moment. */
    if (PyOS_setsig((int)signum, SIG_DFL) == SIG_ERR) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef fp_signals_methods[] = {
    {"restore_default", fp_restore_default, METH_O,
     "restore_default(signum, /) -> None: give the signal its default action (SIG_DFL), from any thread."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot fp_signals_slots[] = {
#if FP_HAVE_MULTIPLE_INTERPRETERS_SLOT
    /* No state at all: a signal's action belongs to the process. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if FP_HAVE_MOD_GIL_SLOT
    /* One system call on no Python object. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fp_signals_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastpatch._signals",
    .m_doc = "Gives a signal back its default action from any thread (a Pool worker's SIGTERM watcher).",
    .m_size = 0,
    .m_methods = fp_signals_methods,
    .m_slots = fp_signals_slots,
};

PyMODINIT_FUNC
PyInit__signals(void)
{
    return PyModuleDef_Init(&fp_signals_module);
}
