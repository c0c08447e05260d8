/*
 * _ext_code.c -- spliced code put where it runs: a function's __code__
 * (set_code), and the main script's code, through an audit hook, just
 * before the interpreter runs it (splice_main_code). Nothing here is on a
 * call's path.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_ext_code.h"

/* ===================================================================== */
/* A function's code                                                     */
/* ===================================================================== */

/* set_code(func, code): func.__code__ = code, and on 3.13+ the function
   version a function made from `code` would have (see
   fp_restore_function_version), so that calls to it still specialise. */
PyObject *
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
PyObject *
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
