/*
 * fastpatch._csplice -- the splicer in C.
 *
 * The same transformation as fastpatch/_pysplice.py, code unit for code unit
 * and byte for byte (tests/test_splice_c_vs_python.py checks the two
 * against each other over a corpus and whole stdlib modules), and the walk
 * over a module's code objects that the import hook makes with it: the hook
 * splices every function of every module it reaches, and in Python that
 * costs about as much as the import itself. This file is the module: the
 * dialect (what the running CPython's code objects look like and what is
 * injected, from _recipes.Dialect once, through configure()) and the entry
 * points. The other files:
 *
 *   _ctree.c, .h             the walk over a module's tree of code objects
 *   _csplice_phases.c, .h    the splice of one code object, in the six
 *                            phases _pysplice.py names, with their names
 *   _csplice_tables.c, .h    its line table and exception table
 *   _csplice_insertions.h    the insertions a splice makes and the offset
 *                            map they define
 *   _csplice_dialect.h       the dialect as configure() copied it
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_csplice_dialect.h"
#include "_csplice_phases.h"
#include "_ctree.h"

static int
check_configured(const cs_state *st)
{
    if (!st->configured) {
        PyErr_SetString(PyExc_RuntimeError, "fastpatch._csplice is not configured");
        return -1;
    }
    return 0;
}

/* splice(code, probe, trailer) -> code: see _splice.splice. */
static PyObject *
cs_splice(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    if (nargs != 3 || !PyCode_Check(args[0]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "splice(code, probe, trailer: tuple)");
        return NULL;
    }
    if (check_configured(st) < 0) {
        return NULL;
    }
    return cs_splice_code(st, args[0], ((PyCodeObject *)args[0])->co_consts, args[1], args[2]);
}

/* patch_tree(code, module, probe_type, lazy_origin, instrumented, skipped,
   wanted=None) -> code: `code` (a module body) with every function nested
   in it spliced (_ctree.c). Each spliced function gets probe_type() and
   lazy_origin(code, probe, module, qualname) as its Origin, and its
   qualified name appended to `instrumented`; one the splicer does not
   recognise is left as it is and (qualname, reason) appended to `skipped`.
   `wanted`, None or a callable, is asked wanted(qualname) once per
   function: one it refuses is left as it is, with its nested functions
   decided on their own. */
static PyObject *
cs_patch_tree(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    if (nargs < 6 || nargs > 7 || !PyCode_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyCallable_Check(args[3])
        || !PyList_Check(args[4]) || !PyList_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "patch_tree(code, module: str, probe_type, lazy_origin, instrumented: list, "
                        "skipped: list, wanted=None)");
        return NULL;
    }
    PyObject *wanted = nargs == 7 && args[6] != Py_None ? args[6] : NULL;
    if (wanted != NULL && !PyCallable_Check(wanted)) {
        PyErr_Format(PyExc_TypeError, "patch_tree() wanted must be None or a callable, not %.100s",
                     Py_TYPE(wanted)->tp_name);
        return NULL;
    }
    if (check_configured(st) < 0) {
        return NULL;
    }
    return cs_walk_tree(st, args[0], args[1], args[2], args[3], args[4], args[5], wanted);
}

/* ------------------------------------------------------------------ */
/* configure                                                           */
/* ------------------------------------------------------------------ */

static int
copy_bytes_attr(PyObject *dialect, const char *name, unsigned char **dst, Py_ssize_t *len)
{
    PyObject *value = PyObject_GetAttrString(dialect, name);
    if (value == NULL) {
        return -1;
    }
    if (!PyBytes_Check(value)) {
        PyErr_Format(PyExc_TypeError, "Dialect.%s is not bytes", name);
        Py_DECREF(value);
        return -1;
    }
    *len = PyBytes_GET_SIZE(value);
    PyMem_Free(*dst);
    *dst = PyMem_Malloc((size_t)*len + 1);
    if (*dst == NULL) {
        Py_DECREF(value);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*dst, PyBytes_AS_STRING(value), (size_t)*len);
    Py_DECREF(value);
    return 0;
}

/* An int attribute, None as -1. */
static int
int_attr(PyObject *dialect, const char *name, int *dst)
{
    PyObject *value = PyObject_GetAttrString(dialect, name);
    if (value == NULL) {
        return -1;
    }
    if (value == Py_None) {
        *dst = -1;
    }
    else {
        long v = PyLong_AsLong(value);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(value);
            return -1;
        }
        *dst = (int)v;
    }
    Py_DECREF(value);
    return 0;
}

/* configure(dialect, splice_error): the running version's Dialect. */
static PyObject *
cs_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure(dialect, splice_error)");
        return NULL;
    }
    PyObject *dialect = args[0];
    unsigned char *caches = NULL, *jumps = NULL, *deopt = NULL;
    Py_ssize_t caches_len = 0, jumps_len = 0, deopt_len = 0;
    PyObject *line_table = NULL;
    int has_exc = 0;
    st->configured = 0;
    if (copy_bytes_attr(dialect, "caches", &caches, &caches_len) < 0
        || copy_bytes_attr(dialect, "jumps", &jumps, &jumps_len) < 0
        || copy_bytes_attr(dialect, "deopt", &deopt, &deopt_len) < 0
        || copy_bytes_attr(dialect, "entry_tail", &st->entry_tail, &st->entry_tail_len) < 0
        || copy_bytes_attr(dialect, "stacked_entry_tail", &st->stacked_entry_tail, &st->stacked_entry_tail_len) < 0
        || copy_bytes_attr(dialect, "exit_code", &st->exit_code, &st->exit_code_len) < 0
        || copy_bytes_attr(dialect, "return_value_code", &st->return_value_code, &st->return_value_code_len) < 0
        || int_attr(dialect, "extended_arg", &st->extended_arg) < 0
        || int_attr(dialect, "return_value", &st->return_value) < 0
        || int_attr(dialect, "return_const", &st->return_const) < 0
        || int_attr(dialect, "load_const", &st->load_const) < 0
        || int_attr(dialect, "entry_before", &st->entry_before) < 0
        || int_attr(dialect, "where_mask", &st->where_mask) < 0
        || int_attr(dialect, "stacked_marker", &st->stacked_marker) < 0
        || int_attr(dialect, "stacked_where", &st->stacked_where) < 0
        || int_attr(dialect, "entry_has_line", &st->entry_has_line) < 0
        || int_attr(dialect, "has_exception_table", &has_exc) < 0
        || int_attr(dialect, "jump_unit", &st->jump_unit) < 0) {
        goto fail;
    }
    if (caches_len != 256 || jumps_len != 256 || deopt_len != 256) {
        PyErr_SetString(PyExc_ValueError, "Dialect.caches, .jumps and .deopt need 256 entries");
        goto fail;
    }
    for (int op = 0; op < 256; op++) {
        if (caches[op] > CS_MAX_CACHES) {
            PyErr_Format(PyExc_ValueError, "opcode %d has %d inline cache units: the C splicer handles %d at most",
                         op, caches[op], CS_MAX_CACHES);
            goto fail;
        }
    }
    line_table = PyObject_GetAttrString(dialect, "line_table");
    if (line_table == NULL) {
        goto fail;
    }
    if (PyUnicode_CompareWithASCIIString(line_table, "lnotab") == 0) {
        st->line_table = LNOTAB;
    }
    else if (PyUnicode_CompareWithASCIIString(line_table, "linetable") == 0) {
        st->line_table = LINETABLE;
    }
    else {
        st->line_table = LOCATIONS;
    }
    st->has_exception_table = has_exc;
    memcpy(st->caches, caches, 256);
    memcpy(st->jumps, jumps, 256);
    memcpy(st->deopt, deopt, 256);
    for (int op = 0; op < 256; op++) {
        st->returns_and_jumps[op] = (unsigned char)(jumps[op] != 0 || op == st->return_value || op == st->return_const);
    }
    Py_XSETREF(st->splice_error, Py_NewRef(args[1]));
    st->configured = 1;
    PyMem_Free(caches);
    PyMem_Free(jumps);
    PyMem_Free(deopt);
    Py_DECREF(line_table);
    Py_RETURN_NONE;
fail:
    PyMem_Free(caches);
    PyMem_Free(jumps);
    PyMem_Free(deopt);
    Py_XDECREF(line_table);
    return NULL;
}

static PyMethodDef cs_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))cs_configure, METH_FASTCALL,
     "configure(dialect, splice_error): the running CPython's _recipes.Dialect."},
    {"splice", (PyCFunction)(void (*)(void))cs_splice, METH_FASTCALL,
     "splice(code, probe, trailer) -> code: as fastpatch._splice.splice."},
    {"patch_tree", (PyCFunction)(void (*)(void))cs_patch_tree, METH_FASTCALL,
     "patch_tree(code, module, probe_type, lazy_origin, instrumented, skipped, wanted=None) -> code: "
     "every function nested in a module body spliced (wanted: None, or wanted(qualname) -> bool)."},
    {NULL, NULL, 0, NULL},
};

static int
cs_exec(PyObject *module)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    memset(st, 0, sizeof(*st));
    return 0;
}

static int
cs_traverse(PyObject *module, visitproc visit, void *arg)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    Py_VISIT(st->splice_error);
    return 0;
}

static int
cs_clear(PyObject *module)
{
    cs_state *st = (cs_state *)PyModule_GetState(module);
    Py_CLEAR(st->splice_error);
    return 0;
}

static void
cs_free(void *module)
{
    cs_state *st = (cs_state *)PyModule_GetState((PyObject *)module);
    PyMem_Free(st->entry_tail);
    PyMem_Free(st->stacked_entry_tail);
    PyMem_Free(st->exit_code);
    PyMem_Free(st->return_value_code);
    st->entry_tail = st->stacked_entry_tail = st->exit_code = st->return_value_code = NULL;
    cs_clear((PyObject *)module);
}

static PyModuleDef_Slot cs_slots[] = {
    {Py_mod_exec, cs_exec},
#if FP_HAVE_MULTIPLE_INTERPRETERS_SLOT
    /* Everything is in the module state, per interpreter. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if FP_HAVE_MOD_GIL_SLOT
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef cs_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastpatch._csplice",
    .m_doc = "The splicer in C: the same transformation as fastpatch._pysplice, and the walk over a module's code.",
    .m_size = sizeof(cs_state),
    .m_methods = cs_methods,
    .m_slots = cs_slots,
    .m_traverse = cs_traverse,
    .m_clear = cs_clear,
    .m_free = cs_free,
};

PyMODINIT_FUNC
PyInit__csplice(void)
{
    return PyModuleDef_Init(&cs_module);
}
