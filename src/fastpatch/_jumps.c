/*
 * fastpatch._jumps -- debugger jumps (frame.f_lineno = N) in instrumented code.
 *
 * A debugger jumps by setting f_lineno from a trace function (pdb's `jump`).
 * CPython checks that the jump keeps the frame's blocks (3.9, 3.10) or
 * value stack (3.11+) consistent, and knows nothing of fastpatch's token,
 * which sits at the bottom of the value stack for the whole activation.
 * This module wraps the f_lineno setter of the frame type so that, in code
 * that carries a fastpatch probe, no jump can leave the stack without its
 * token or with two, and none can crash:
 *
 * 3.9, 3.10 (the frame's value stack is public and editable):
 *   - a jump from before the entry has run to after it pushes the token the
 *     entry would have pushed (the activation is counted from the jump);
 *   - a jump from after the entry back onto it lands just after it instead,
 *     so the activation is not started twice;
 *   - the value stack is brought to the depth the target expects: values a
 *     block unwind left above the token are dropped, and a jump that would
 *     underflow the stack (into the middle of an expression) is refused.
 * 3.11+ (frames are opaque): CPython's own stack check keeps the token, since
 *   the entry runs before RESUME and has no line of its own; the one jump it
 *   lets through wrongly, to the `def` line of a generator or coroutine (it
 *   lands on RETURN_GENERATOR and crashes, with or without fastpatch on
 *   3.13+), is refused.
 *
 * The rules that need the code's stack depths or line table live in Python
 * (fastpatch._debugger), called only when a debugger jumps. Nothing here is
 * on any call's path.
 *
 * install(probe_type, dialect) hands over what the guard recognises: the
 * Probe type of this interpreter's fastpatch._ext, which marks instrumented
 * code, and the running version's _recipes.Dialect, whose entry (LOAD_CONST
 * <probe> and its tail, with the stacked tail where the prologue leaves
 * values under it) the guard finds at the start of 3.9/3.10 code.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_compat.h"

/* The frame type's own setter, and the definition that replaces its
   f_lineno getset in every interpreter (3.12+ keeps static types' dicts per
   interpreter, so each has its own descriptor; the setter is the same). */
static setter fp_original_setter = NULL;
static PyGetSetDef fp_guarded_def;

/* Where install() keeps the probe type: each interpreter has its own
   fastpatch._ext, and so its own Probe type, and its own dict
   (PyInterpreterState_GetDict), which holds it strongly. */
#define FP_PROBE_TYPE_KEY "fastpatch._jumps.probe_type"

/* The probe constant of instrumented code, or NULL (borrowed). */
static PyObject *
fp_probe_of(PyCodeObject *co)
{
    PyObject *dict = PyInterpreterState_GetDict(PyInterpreterState_Get());
    PyObject *probe_type = dict != NULL ? PyDict_GetItemString(dict, FP_PROBE_TYPE_KEY) : NULL;  /* borrowed */
    if (probe_type == NULL) {
        return NULL;  /* this interpreter instruments nothing */
    }
    PyObject *consts = co->co_consts;
    for (Py_ssize_t i = PyTuple_GET_SIZE(consts) - 1; i >= 0; i--) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if ((PyObject *)Py_TYPE(c) == probe_type) {
            return c;
        }
    }
    return NULL;
}

/* fastpatch._debugger.<name>(code, arg): a new reference, or NULL with an exception. */
static PyObject *
fp_call_rule(const char *name, PyObject *code, PyObject *arg)
{
    PyObject *module = PyImport_ImportModule("fastpatch._debugger");
    if (module == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_CallMethod(module, name, "OO", code, arg);
    Py_DECREF(module);
    return result;
}

#if FP_FRAME_STACK_EDITABLE

/* The entry's shape, from the dialect install() was given: process-wide,
   written under the GIL, the same for every interpreter. The tails are the
   code units after LOAD_CONST <probe>; a stacked entry is followed by the
   prologue's marker (3.10: GEN_START), which ends the prologue. */
#define FP_MAX_TAIL 32
static int fp_load_const = -1, fp_extended_arg = -1, fp_stacked_marker = -1;
static unsigned char fp_entry_tail[FP_MAX_TAIL], fp_stacked_entry_tail[FP_MAX_TAIL];
static Py_ssize_t fp_entry_tail_len = 0, fp_stacked_entry_tail_len = 0;

/* Whether the code units from `i` are `tail` (`len` bytes). */
static int
fp_units_are(const unsigned char *raw, int n, int i, const unsigned char *tail, Py_ssize_t len)
{
    return 2 * (Py_ssize_t)i + len <= 2 * (Py_ssize_t)n && memcmp(raw + 2 * i, tail, (size_t)len) == 0;
}

/* Where the prologue is: the entry starts at unit 0 with LOAD_CONST <probe>,
   which has run once the frame stands at `loaded`; the token is on the
   stack from `pushed` (after the entry's tail), and the body starts at
   `end` (after a 3.10 generator's stacked tail and GEN_START). Returns 0,
   or -1 if the code does not start with the entry. */
static int
fp_entry_bounds(PyCodeObject *co, PyObject *probe, int *loaded, int *pushed, int *end)
{
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(co->co_code);
    int n = (int)(PyBytes_GET_SIZE(co->co_code) / 2);
    int i = 0;
    Py_ssize_t want = -1;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(co->co_consts); k++) {
        if (PyTuple_GET_ITEM(co->co_consts, k) == probe) {
            want = k;
        }
    }
    Py_ssize_t arg = 0;
    while (i < n && raw[2 * i] == fp_extended_arg) {
        arg = (arg | raw[2 * i + 1]) << 8;
        i++;
    }
    if (i >= n || raw[2 * i] != fp_load_const || (arg | raw[2 * i + 1]) != want) {
        return -1;
    }
    *loaded = i + 1;
    *pushed = (int)(i + 1 + fp_entry_tail_len / 2);
    Py_ssize_t stacked_end = i + 1 + fp_stacked_entry_tail_len / 2;
    if (fp_stacked_marker >= 0 && fp_units_are(raw, n, i + 1, fp_stacked_entry_tail, fp_stacked_entry_tail_len)
        && stacked_end < n && raw[2 * stacked_end] == fp_stacked_marker) {
        *end = (int)stacked_end + 1;
        return 0;
    }
    if (!fp_units_are(raw, n, i + 1, fp_entry_tail, fp_entry_tail_len)) {
        return -1;
    }
    *end = *pushed;
    return 0;
}

/* Bring the value stack to the depth fastpatch._debugger says the target
   expects (the token included). Returns 0, 1 to refuse the jump, -1 on error. */
static int
fp_fit_stack(PyFrameObject *f, PyCodeObject *co, int to, int token_there)
{
    PyObject *arg = PyLong_FromLong(to);
    if (arg == NULL) {
        return -1;
    }
    PyObject *expected_obj = fp_call_rule("expected_depth", (PyObject *)co, arg);
    Py_DECREF(arg);
    if (expected_obj == NULL) {
        return -1;
    }
    if (expected_obj == Py_None) {
        Py_DECREF(expected_obj);
        return 0;
    }
    long expected = PyLong_AsLong(expected_obj);
    Py_DECREF(expected_obj);
    if (expected == -1 && PyErr_Occurred()) {
        return -1;
    }
    long have = FP_FRAME_DEPTH(f) + (token_there ? 0 : 1);
    if (have < expected) {
        return 1;
    }
    while (have > expected && expected >= 1) {
        int depth = FP_FRAME_DEPTH(f);
        PyObject *v = FP_FRAME_STACK(f)[depth - 1];
        FP_FRAME_SET_DEPTH(f, depth - 1);
        Py_XDECREF(v);
        have--;
    }
    return 0;
}

static int
fp_guarded_setlineno(PyObject *self, PyObject *value, void *closure)
{
    PyFrameObject *f = (PyFrameObject *)self;
    PyCodeObject *co = f->f_code;
    PyObject *probe = value != NULL ? fp_probe_of(co) : NULL;
    int loaded, pushed, end;
    if (probe == NULL || fp_entry_bounds(co, probe, &loaded, &pushed, &end) < 0) {
        return fp_original_setter(self, value, closure);
    }
    int from = FP_FRAME_LASTI(f);  /* the instruction the line event stopped before */
    if (fp_original_setter(self, value, closure) < 0) {
        return -1;
    }
    int to = FP_FRAME_LASTI(f);
    int token_there = from >= pushed;
    if (token_there && to < end) {
        FP_FRAME_SET_LASTI(f, end);  /* the token is there: do not start again */
        to = end;
    }
    if (to >= end) {
        int refused = fp_fit_stack(f, co, to, token_there);
        if (refused != 0) {
            if (refused > 0) {
                FP_FRAME_SET_LASTI(f, from);
                PyErr_SetString(PyExc_ValueError,
                                "can't jump into the middle of an expression (incompatible stacks)");
            }
            return -1;
        }
    }
    if (!token_there && to >= end) {
        /* The entry was skipped: start the activation here. */
        PyObject *token = PyNumber_Invert(probe);
        if (token == NULL) {
            return -1;
        }
        int depth = FP_FRAME_DEPTH(f);
        PyObject **stack = FP_FRAME_STACK(f);
        if (from == loaded && depth >= 1 && stack[depth - 1] == probe) {
            /* LOAD_CONST had run: its probe becomes the token */
            stack[depth - 1] = token;
            Py_DECREF(probe);
        }
        else {
            for (int k = depth; k > 0; k--) {
                stack[k] = stack[k - 1];
            }
            stack[0] = token;
            FP_FRAME_SET_DEPTH(f, depth + 1);
        }
    }
    return 0;
}

#else  /* 3.11+ */

static int
fp_guarded_setlineno(PyObject *self, PyObject *value, void *closure)
{
    if (value != NULL) {
        PyCodeObject *co = FP_FRAME_CODE((PyFrameObject *)self);
        int guarded = fp_probe_of(co) != NULL
                      && (co->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR));
        if (guarded) {
            PyObject *refusal = fp_call_rule("prologue_refusal", (PyObject *)co, value);
            Py_DECREF(co);
            if (refusal == NULL) {
                return -1;
            }
            if (refusal != Py_None) {
                PyErr_SetObject(PyExc_ValueError, refusal);
                Py_DECREF(refusal);
                return -1;
            }
            Py_DECREF(refusal);
        }
        else {
            Py_DECREF(co);
        }
    }
    return fp_original_setter(self, value, closure);
}

#endif

#if FP_FRAME_STACK_EDITABLE
/* A bytes attribute of the dialect into `dst` (at most FP_MAX_TAIL bytes). */
static int
fp_copy_tail(PyObject *dialect, const char *name, unsigned char *dst, Py_ssize_t *len)
{
    PyObject *value = PyObject_GetAttrString(dialect, name);
    if (value == NULL) {
        return -1;
    }
    int rc = -1;
    if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) > FP_MAX_TAIL || PyBytes_GET_SIZE(value) % 2) {
        PyErr_Format(PyExc_ValueError, "Dialect.%s must be whole code units, at most %d bytes", name, FP_MAX_TAIL);
    }
    else {
        *len = PyBytes_GET_SIZE(value);
        memcpy(dst, PyBytes_AS_STRING(value), (size_t)*len);
        rc = 0;
    }
    Py_DECREF(value);
    return rc;
}

/* An int attribute of the dialect, None as -1. */
static int
fp_copy_opcode(PyObject *dialect, const char *name, int *dst)
{
    PyObject *value = PyObject_GetAttrString(dialect, name);
    if (value == NULL) {
        return -1;
    }
    long v = value == Py_None ? -1 : PyLong_AsLong(value);
    Py_DECREF(value);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *dst = (int)v;
    return 0;
}
#endif

/* The entry's shape, from the dialect (3.9/3.10; the 3.11+ rules read the
   prologue in Python). 0, or -1 with an exception. */
static int
fp_read_dialect(PyObject *dialect)
{
#if FP_FRAME_STACK_EDITABLE
    if (fp_copy_opcode(dialect, "load_const", &fp_load_const) < 0
        || fp_copy_opcode(dialect, "extended_arg", &fp_extended_arg) < 0
        || fp_copy_opcode(dialect, "stacked_marker", &fp_stacked_marker) < 0
        || fp_copy_tail(dialect, "entry_tail", fp_entry_tail, &fp_entry_tail_len) < 0
        || fp_copy_tail(dialect, "stacked_entry_tail", fp_stacked_entry_tail, &fp_stacked_entry_tail_len) < 0) {
        return -1;
    }
#else
    (void)dialect;
#endif
    return 0;
}

/* install(probe_type, dialect): guard frame.f_lineno in this interpreter,
   for code carrying a probe of `probe_type`; idempotent. */
static PyObject *
fp_install(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "install(probe_type: type, dialect)");
        return NULL;
    }
    PyObject *dict = PyInterpreterState_GetDict(PyInterpreterState_Get());  /* borrowed */
    if (dict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this interpreter has no state dict for fastpatch's jump guard");
        return NULL;
    }
    if (fp_read_dialect(args[1]) < 0 || PyDict_SetItemString(dict, FP_PROBE_TYPE_KEY, args[0]) < 0) {
        return NULL;
    }
    PyObject *name = PyUnicode_InternFromString("f_lineno");
    if (name == NULL) {
        return NULL;
    }
    PyObject *descr = fp_type_lookup(&PyFrame_Type, name);  /* borrowed */
    Py_DECREF(name);
    if (descr == NULL || Py_TYPE(descr) != &PyGetSetDescr_Type) {
        PyErr_SetString(PyExc_RuntimeError, "frame.f_lineno is not a getset descriptor");
        return NULL;
    }
    PyGetSetDescrObject *getset = (PyGetSetDescrObject *)descr;
    if (getset->d_getset->set == fp_guarded_setlineno) {
        Py_RETURN_FALSE;
    }
    if (fp_original_setter == NULL) {
        fp_guarded_def = *getset->d_getset;
        fp_original_setter = fp_guarded_def.set;
        fp_guarded_def.set = fp_guarded_setlineno;
    }
    getset->d_getset = &fp_guarded_def;
    Py_RETURN_TRUE;
}

static PyMethodDef fp_jumps_methods[] = {
    {"install", (PyCFunction)(void (*)(void))fp_install, METH_FASTCALL,
     "install(probe_type, dialect) -> bool: guard frame.f_lineno in this interpreter, for code carrying a\n"
     "probe of probe_type, whose entry the dialect describes (True if it was not guarded yet)."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot fp_jumps_slots[] = {
#if FP_HAVE_MULTIPLE_INTERPRETERS_SLOT
    /* Nothing per interpreter but the descriptor, which install() patches
       in the interpreter that calls it; the setter is process-wide and
       written once, under the GIL. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
#if FP_HAVE_MOD_GIL_SLOT
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fp_jumps_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastpatch._jumps",
    .m_doc = "Keeps debugger jumps (frame.f_lineno = N) in instrumented code safe.",
    .m_size = 0,
    .m_methods = fp_jumps_methods,
    .m_slots = fp_jumps_slots,
};

PyMODINIT_FUNC
PyInit__jumps(void)
{
    return PyModuleDef_Init(&fp_jumps_module);
}
