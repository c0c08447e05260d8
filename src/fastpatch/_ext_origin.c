/*
 * _ext_origin.c -- fastpatch._ext's Origin type, and the lazy table of the
 * Origins nobody has asked about yet.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_ext_origin.h"
#include "_ext_probe.h"
#include "_ext_state.h"

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
    fp_state *st = fp_state_of(owner);
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

PyType_Spec fp_origin_spec = {
    .name = "fastpatch._ext.Origin",
    .basicsize = sizeof(OriginObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = origin_slots,
};

/* ===================================================================== */
/* The lazy table                                                        */
/* ===================================================================== */

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
PyObject *
fp_lazy_add(PyObject *module, PyObject *origin)
{
    fp_state *st = fp_state_of(module);
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
PyObject *
fp_lazy_origin(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    fp_state *st = fp_state_of(module);
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
origin_named_by(PyObject *value)
{
    return (OriginObject *)PyLong_AsVoidPtr(value);
}

/* lazy_get(code) -> the Origin listed under this original code, or None. */
PyObject *
fp_lazy_get(PyObject *module, PyObject *code)
{
    fp_state *st = fp_state_of(module);
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
    return Py_NewRef((PyObject *)origin_named_by(value));
}

/* lazy_discard(origin): take the entry of the Origin's original code out of
   the lazy table (its definition is registered now), whichever Origin it names. */
PyObject *
fp_lazy_discard(PyObject *module, PyObject *origin)
{
    fp_state *st = fp_state_of(module);
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
        origin_named_by(value)->in_lazy = 0;
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
        OriginObject *o = origin_named_by(value);
        if (!called_only || ((ProbeObject *)o->probe)->calls != 0) {
            PyList_SET_ITEM(out, n++, Py_NewRef((PyObject *)o));
        }
    }
    Py_SET_SIZE(out, n);  /* the slots past n were never filled: NULL */
    return out;
}

/* lazy_origins() -> list: every Origin in the lazy table. */
PyObject *
fp_lazy_origins(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return lazy_list(fp_state_of(module), 0);
}

/* called_origins() -> list: the Origins in the lazy table whose probe has
   been called: what the report at exit reads of the thousands of
   definitions the import hook splices, most of which never run. */
PyObject *
fp_called_origins(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return lazy_list(fp_state_of(module), 1);
}

/* lazy_clear(): empty the lazy table. */
PyObject *
fp_lazy_clear(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fp_state *st = fp_state_of(module);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(st->lazy, &pos, &key, &value)) {
        origin_named_by(value)->in_lazy = 0;
    }
    PyDict_Clear(st->lazy);
    Py_RETURN_NONE;
}

/* lazy_count() -> int: the Origins in the lazy table. */
PyObject *
fp_lazy_count(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(PyDict_GET_SIZE(fp_state_of(module)->lazy));
}

