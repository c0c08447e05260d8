/*
 * _ctree.c -- the walk over a module's tree of code objects, in C: every
 * function code object nested in a module body spliced (its own nested
 * functions first), each with a new probe and an Origin listed in the lazy
 * table, so that the functions and closures the module creates run
 * instrumented from their first call. The import hook walks every module
 * it splices this way (patch_tree(), in _csplice.c); with the Python
 * splicer, a Python walk does the same (tests/test_splice_c_vs_python.py
 * compares the two).
 *
 * `wanted` (None for every function) is asked once about each function
 * code object, by its qualified name: a function it refuses gets no probe
 * and no Origin and keeps its own code, but the functions nested in it are
 * walked and decided on their own; it is rebuilt only to hold a nested one
 * that changed.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_csplice_phases.h"
#include "_ctree.h"

typedef struct {
    cs_state *st;
    PyObject *module;        /* str */
    PyObject *probe_type;    /* _ext.Probe */
    PyObject *lazy_origin;   /* _ext.lazy_origin: a new Origin, listed in the lazy table */
    PyObject *instrumented;  /* list of qualnames */
    PyObject *skipped;       /* list of (qualname, reason) */
    PyObject *wanted;        /* wanted(qualname) -> bool, or NULL for every function */
} cs_tree;

static PyObject *patched_code(cs_tree *t, PyObject *code, PyObject *qualname);

/* The qualified name of `code`, nested in `parent` whose qualified name is
   `parent_qualname` ("" for a module): 3.11+ code objects carry it; for
   3.9/3.10 it is built as the compiler builds it. New reference. */
static PyObject *
nested_qualname(PyObject *parent, PyObject *parent_qualname, PyObject *code)
{
#ifdef FP_CODE_QUALNAME
    (void)parent;
    (void)parent_qualname;
    return FP_CODE_QUALNAME((PyCodeObject *)code);
#else
    PyObject *name = ((PyCodeObject *)code)->co_name;
    if (((PyCodeObject *)parent)->co_flags & CO_OPTIMIZED) {
        return PyUnicode_FromFormat("%U.<locals>.%U", parent_qualname, name);
    }
    if (PyUnicode_GET_LENGTH(parent_qualname) == 0) {
        return Py_NewRef(name);
    }
    return PyUnicode_FromFormat("%U.%U", parent_qualname, name);
#endif
}

/* The constants of `code` with each nested code object patched (a new
   tuple), or its own constants (a new reference) when nothing changed. */
static PyObject *
patched_consts(cs_tree *t, PyObject *code, PyObject *qualname)
{
    PyObject *consts = ((PyCodeObject *)code)->co_consts;
    Py_ssize_t n = PyTuple_GET_SIZE(consts);
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (!PyCode_Check(c)) {
            continue;
        }
        PyObject *inner = nested_qualname(code, qualname, c);
        if (inner == NULL) {
            goto fail;
        }
        PyObject *patched = patched_code(t, c, inner);
        Py_DECREF(inner);
        if (patched == NULL) {
            goto fail;
        }
        if (patched == c) {
            Py_DECREF(patched);
            continue;
        }
        if (out == NULL) {
            out = PyTuple_New(n);
            if (out == NULL) {
                Py_DECREF(patched);
                goto fail;
            }
            for (Py_ssize_t k = 0; k < n; k++) {
                PyTuple_SET_ITEM(out, k, Py_NewRef(PyTuple_GET_ITEM(consts, k)));
            }
        }
        PyObject *old = PyTuple_GET_ITEM(out, i);
        PyTuple_SET_ITEM(out, i, patched);  /* steals patched */
        Py_DECREF(old);
    }
    return out != NULL ? out : Py_NewRef(consts);
fail:
    Py_XDECREF(out);
    return NULL;
}

/* `code` itself if `consts` are its own constants, else code.replace(co_consts=consts). New reference. */
static PyObject *
with_consts(PyObject *code, PyObject *consts)
{
    PyCodeObject *co = (PyCodeObject *)code;
    if (consts == co->co_consts) {
        return Py_NewRef(code);
    }
    PyObject *units = FP_CODE_BYTES(co), *lines = FP_CODE_LINES(co), *result = NULL;
    if (units != NULL && lines != NULL) {
#if FP_HAVE_EXCEPTION_TABLE
        PyObject *exceptions = FP_CODE_EXCEPTIONS(co);
#else
        PyObject *exceptions = NULL;
#endif
        result = fp_code_with(co, units, consts, co->co_stacksize, lines, exceptions);
    }
    Py_XDECREF(units);
    Py_XDECREF(lines);
    return result;
}

/* Whether the function `qualname` is to be spliced: 1, 0, or -1 with the
   exception wanted() raised. */
static int
is_wanted(cs_tree *t, PyObject *qualname)
{
    if (t->wanted == NULL) {
        return 1;
    }
    PyObject *answer = PyObject_CallOneArg(t->wanted, qualname);
    if (answer == NULL) {
        return -1;
    }
    int wanted = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    return wanted;
}

/* Append (qualname, reason) to the skipped list: 0, or -1 with an exception. */
static int
note_skipped(cs_tree *t, PyObject *qualname, PyObject *reason)
{
    PyObject *item = PyTuple_Pack(2, qualname, reason);
    int rc = item != NULL ? PyList_Append(t->skipped, item) : -1;
    Py_XDECREF(item);
    return rc;
}

/* A new reference to the function `code` spliced, its constants `consts`
   (its nested functions patched), with a new probe and its Origin; or, for
   code the splicer does not recognise, to `code` with `consts`, the reason
   in the skipped list. NULL with an exception for anything else. */
static PyObject *
spliced_function(cs_tree *t, PyObject *code, PyObject *consts, PyObject *qualname)
{
    PyObject *result = NULL, *origin = NULL, *trailer = NULL;
    PyObject *probe = PyObject_CallNoArgs(t->probe_type);
    if (probe == NULL) {
        return NULL;
    }
    /* registered lazily: the Origin holds all a definition needs */
    PyObject *origin_args[4] = {code, probe, t->module, qualname};
    origin = PyObject_Vectorcall(t->lazy_origin, origin_args, 4, NULL);
    trailer = origin != NULL ? PyTuple_Pack(1, origin) : NULL;
    if (trailer == NULL) {
        goto done;
    }
    result = cs_splice_code(t->st, code, consts, probe, trailer);
    if (result != NULL) {
        if (PyList_Append(t->instrumented, qualname) < 0) {
            Py_CLEAR(result);
        }
    }
    else if (PyErr_ExceptionMatches(t->st->splice_error)) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *reason = value != NULL ? PyObject_Str(value) : NULL;
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        if (reason != NULL && note_skipped(t, qualname, reason) == 0) {
            result = with_consts(code, consts);
        }
        Py_XDECREF(reason);
    }
done:
    Py_DECREF(probe);
    Py_XDECREF(origin);
    Py_XDECREF(trailer);
    return result;
}

/* A nested code object, its own nested functions first, spliced if it is a
   function that `wanted` accepts. New reference, or NULL with an exception. */
static PyObject *
patched_code(cs_tree *t, PyObject *code, PyObject *qualname)
{
    PyObject *consts = patched_consts(t, code, qualname), *result = NULL;
    if (consts == NULL) {
        return NULL;
    }
    PyObject *own = ((PyCodeObject *)code)->co_consts;
    Py_ssize_t n = PyTuple_GET_SIZE(own);
    if (!(((PyCodeObject *)code)->co_flags & CO_OPTIMIZED)) {  /* a class body: only what it defines is timed */
        result = with_consts(code, consts);
        goto done;
    }
    int wanted = is_wanted(t, qualname);
    if (wanted <= 0) {
        result = wanted == 0 ? with_consts(code, consts) : NULL;
        goto done;
    }
    if (n >= 2 && (PyObject *)Py_TYPE(PyTuple_GET_ITEM(own, n - 2)) == t->probe_type) {
        /* .pyc files never hold probes: a reload of code spliced here */
        PyObject *reason = PyUnicode_FromString("already carries a fastpatch probe");
        if (reason != NULL && note_skipped(t, qualname, reason) == 0) {
            result = with_consts(code, consts);
        }
        Py_XDECREF(reason);
        goto done;
    }
    result = spliced_function(t, code, consts, qualname);
done:
    Py_DECREF(consts);
    return result;
}

PyObject *
cs_walk_tree(cs_state *st, PyObject *code, PyObject *module, PyObject *probe_type, PyObject *lazy_origin,
             PyObject *instrumented, PyObject *skipped, PyObject *wanted)
{
    cs_tree t = {st, module, probe_type, lazy_origin, instrumented, skipped, wanted};
    PyObject *top = PyUnicode_FromString("");
    if (top == NULL) {
        return NULL;
    }
    PyObject *consts = patched_consts(&t, code, top);
    Py_DECREF(top);
    if (consts == NULL) {
        return NULL;
    }
    PyObject *result = with_consts(code, consts);
    Py_DECREF(consts);
    return result;
}
