/*
 * _compat.h -- every difference between CPython versions, and between
 * compilers, that fastpatch's C code knows about, and the only place in it
 * that tests PY_VERSION_HEX or calls CPython's private API (the shims
 * below). Included by every C file of the four extensions: fastpatch._ext
 * (_ext*.c, the probes), fastpatch._csplice (_csplice*.c and _ctree.c, the
 * splicer), fastpatch._jumps (_jumps.c, the debugger-jump guard) and
 * fastpatch._signals (_signals.c).
 *
 * Adding a CPython version touches three files: its recipe in _recipes.py
 * (the injected sequences and the shape of its prologue, which the
 * splicers, the jump guard and the debugger rules all read from there),
 * the shims here where its C API or code object changed, and its trove
 * classifier in pyproject.toml. A version that changes the line-table or
 * exception-table encoding changes both splicers too (_pysplice.py,
 * _csplice_tables.c): the recipe only names the encoding.
 */
#ifndef FASTPATCH_COMPAT_H
#define FASTPATCH_COMPAT_H

#include <Python.h>
#include <stdint.h>

/* ===================================================================== */
/* Compilers                                                             */
/* ===================================================================== */

#if defined(__GNUC__) || defined(__clang__)
#  define FP_LIKELY(x) __builtin_expect(!!(x), 1)
#  define FP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#  define FP_LIKELY(x) (x)
#  define FP_UNLIKELY(x) (x)
#endif

/* FP_NOINLINE keeps the general halves of the probes out of the fast ones
   (the fast halves then need no stack frame); FP_COLD is for what runs once
   in billions of calls. */
#if defined(__GNUC__) || defined(__clang__)
#  define FP_NOINLINE __attribute__((noinline))
#  define FP_COLD __attribute__((noinline, cold))
#elif defined(_MSC_VER)
#  define FP_NOINLINE __declspec(noinline)
#  define FP_COLD __declspec(noinline)
#else
#  define FP_NOINLINE
#  define FP_COLD
#endif

/* What one C file of an extension shares with the others of the same
   extension, and nothing else sees: hidden from the dynamic symbol table
   (a DLL exports nothing unless told), so that a variable the hot path
   reads from another file is addressed as directly as a static one. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#  define FP_INTERNAL __attribute__((visibility("hidden")))
#else
#  define FP_INTERNAL
#endif

/* ===================================================================== */
/* CPython                                                               */
/* ===================================================================== */

/* fp_error_set: whether an exception is set in the running thread, as
   PyErr_Occurred() != NULL. 3.9 ends every activation through the token's
   deallocator, which asks this on every call to tell a return from an
   exception; PyErr_Occurred is an exported function there, whose call
   costs the deallocator its leaf shape (a stack frame, saved registers).
   3.9's internal header has the same read inline (the running thread state
   is one word of _PyRuntime, exported), so it is used where installed. */
#if PY_VERSION_HEX < 0x030A0000 && defined(__has_include)
#  if __has_include("internal/pycore_pystate.h")
#    define FP_ERROR_SET_INLINE 1
#  endif
#endif
#if defined(FP_ERROR_SET_INLINE)
#  ifndef Py_BUILD_CORE
#    define Py_BUILD_CORE
#    define FP_UNDEF_BUILD_CORE
#  endif
#  include "internal/pycore_pystate.h"
#  ifdef FP_UNDEF_BUILD_CORE
#    undef Py_BUILD_CORE
#    undef FP_UNDEF_BUILD_CORE
#  endif
static inline int
fp_error_set(void)
{
    PyThreadState *tstate = _PyThreadState_GET();
    return tstate != NULL && tstate->curexc_type != NULL;
}
#else
static inline int
fp_error_set(void)
{
    return PyErr_Occurred() != NULL;
}
#endif

/* Token: created only by the entry probe (3.10+ can say so). */
#if PY_VERSION_HEX >= 0x030A0000
#  define FP_TOKEN_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION)
#else
#  define FP_TOKEN_FLAGS Py_TPFLAGS_DEFAULT
#endif

/* 3.12+: a module can say which interpreters it supports; see fp_slots.
   (Whether the TSC is invariant and its calibration are process-wide; the
   default clock is per interpreter, in the module state.) */
#if PY_VERSION_HEX >= 0x030C0000
#  define FP_HAVE_MULTIPLE_INTERPRETERS_SLOT 1
#else
#  define FP_HAVE_MULTIPLE_INTERPRETERS_SLOT 0
#endif

/* 3.13+: free-threaded builds exist, and a module says whether it needs the GIL. */
#if PY_VERSION_HEX >= 0x030D0000
#  define FP_HAVE_MOD_GIL_SLOT 1
#else
#  define FP_HAVE_MOD_GIL_SLOT 0
#endif

/*
 * Function versions (3.13+). Specialised call sites check a function's
 * version, and assigning __code__ clears it for good, so a function whose
 * code fastpatch swapped would never be specialised for again. A function
 * made from the new code would carry that code's co_version; fp_set_code
 * gives it that. 3.13 sets a version over any other; 3.14 and 3.15 accept a
 * version only on a function that has none (FUNC_VERSION_UNSET, 0), so the
 * cleared marker goes first. _PyFunction_SetVersion is exported, declared
 * in an internal header. Free-threaded builds are not built (see README).
 */
#if PY_VERSION_HEX >= 0x030D0000 && !defined(Py_GIL_DISABLED)
PyAPI_FUNC(void) _PyFunction_SetVersion(PyFunctionObject *func, uint32_t version);
static inline void
fp_restore_function_version(PyObject *func, PyObject *code)
{
    uint32_t version = ((PyCodeObject *)code)->co_version;
    if (version >= 2) {  /* FUNC_VERSION_FIRST_VALID: versions ran out otherwise */
        ((PyFunctionObject *)func)->func_version = 0;
        _PyFunction_SetVersion((PyFunctionObject *)func, version);
    }
}
#else
static inline void
fp_restore_function_version(PyObject *func, PyObject *code)
{
    (void)func;
    (void)code;
}
#endif

/*
 * Frames, for the debugger-jump guard (_jumps.c). 3.9 and 3.10 expose the
 * frame struct: f_lasti (a byte offset on 3.9, a code unit on 3.10, of the
 * instruction a line event stops before) and the value stack, whose depth
 * is f_stacktop - f_valuestack while a trace function runs (3.9) or
 * f_stackdepth (3.10). From 3.11 frames are opaque and the guard only
 * refuses jumps, before CPython makes them. (What the entry and the
 * prologue look like comes from the dialect, at install.)
 */
#if PY_VERSION_HEX < 0x030B0000
#  include <frameobject.h>
#  define FP_FRAME_STACK_EDITABLE 1
#  if PY_VERSION_HEX >= 0x030A0000
#    define FP_FRAME_LASTI(f) ((f)->f_lasti)
#    define FP_FRAME_SET_LASTI(f, unit) ((f)->f_lasti = (unit))
#    define FP_FRAME_DEPTH(f) ((f)->f_stackdepth)
#    define FP_FRAME_SET_DEPTH(f, d) ((f)->f_stackdepth = (d))
#  else
#    define FP_FRAME_LASTI(f) ((f)->f_lasti / 2)
#    define FP_FRAME_SET_LASTI(f, unit) ((f)->f_lasti = 2 * (unit))
#    define FP_FRAME_DEPTH(f) ((int)((f)->f_stacktop - (f)->f_valuestack))
#    define FP_FRAME_SET_DEPTH(f, d) ((f)->f_stacktop = (f)->f_valuestack + (d))
#  endif
#  define FP_FRAME_STACK(f) ((f)->f_valuestack)
#  define FP_FRAME_CODE(f) ((PyCodeObject *)Py_NewRef((f)->f_code))
#else
#  define FP_FRAME_STACK_EDITABLE 0
#  define FP_FRAME_CODE(f) PyFrame_GetCode(f)
#endif

/*
 * Private API, the same on every supported version (each declared in
 * Include/cpython/object.h, exported):
 *
 * fp_revive: a token whose refcount reached zero becomes a live object with
 * one reference again, as CPython's own free lists revive theirs, so that
 * the activations of a function that keeps raising allocate nothing (3.9's
 * release builds set the refcount themselves: see below).
 * fp_type_lookup: a borrowed reference to the attribute `name` found in
 * `type`'s MRO, without calling a descriptor (the f_lineno getset the jump
 * guard wraps).
 */
static inline void
fp_revive(PyObject *op)
{
#if PY_VERSION_HEX < 0x030A0000 && !defined(Py_REF_DEBUG) && !defined(Py_TRACE_REFS)
    /* 3.9 ends every activation through the token's deallocator, so this
       runs on every call there. Its _Py_NewReference is a call that, in a
       release build, sets the refcount and, while tracemalloc traces, moves
       the memory block's traceback to this line; the block stays traced
       either way (it was never freed), so only the refcount is set here. */
    Py_SET_REFCNT(op, 1);
#else
    _Py_NewReference(op);
#endif
}

static inline PyObject *
fp_type_lookup(PyTypeObject *type, PyObject *name)
{
    return _PyType_Lookup(type, name);
}

/* Py_NewRef is 3.10+. */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
fp_new_ref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#  define Py_NewRef(o) fp_new_ref((PyObject *)(o))
#endif

/* Code objects, for the C splicer (_csplice*.c, _ctree.c): new references
   to the raw bytecode and the line table, and the exception table (3.11+)
   borrowed.
   3.11+ run a code object's own copy of its code units, which they
   specialise (and 3.12+ instrument) in place; co_code is a deoptimised copy
   made on first access and then kept. FP_CODE_ADAPTIVE borrows the code
   units as they run, FP_CODE_UNITS counts them: for code that has never
   run, they are co_code but for the counters in the inline caches. */
#if PY_VERSION_HEX >= 0x030B0000
#  define FP_CODE_BYTES(co) PyCode_GetCode(co)
#  define FP_CODE_ADAPTIVE(co) ((const unsigned char *)(co)->co_code_adaptive)
#  define FP_CODE_UNITS(co) Py_SIZE(co)
#  define FP_CODE_LINES(co) Py_NewRef((co)->co_linetable)
#  define FP_CODE_EXCEPTIONS(co) ((co)->co_exceptiontable)
#  define FP_HAVE_EXCEPTION_TABLE 1
#  define FP_CODE_QUALNAME(co) Py_NewRef((co)->co_qualname)  /* 3.11+ code carries it */
#elif PY_VERSION_HEX >= 0x030A0000
#  define FP_CODE_BYTES(co) Py_NewRef((co)->co_code)
#  define FP_CODE_LINES(co) Py_NewRef((co)->co_linetable)
#  define FP_HAVE_EXCEPTION_TABLE 0
#else
#  define FP_CODE_BYTES(co) Py_NewRef((co)->co_code)
#  define FP_CODE_LINES(co) Py_NewRef((co)->co_lnotab)
#  define FP_HAVE_EXCEPTION_TABLE 0
#endif


/* A copy of `co` with its code units, constants, stack size, line table and
   (3.11+) exception table replaced: what code.replace() makes, through the
   same constructor, without parsing keyword arguments (the import hook
   makes thousands a program). `exceptions` is ignored before 3.11. New
   reference. */
#if PY_VERSION_HEX >= 0x030C0000
#  define FP_CODE_NEW PyUnstable_Code_NewWithPosOnlyArgs
#else
#  define FP_CODE_NEW PyCode_NewWithPosOnlyArgs
#endif
static inline PyObject *
fp_code_with(PyCodeObject *co, PyObject *units, PyObject *consts, int stacksize, PyObject *lines,
             PyObject *exceptions)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *result = NULL;
    PyObject *varnames = PyCode_GetVarnames(co);
    PyObject *cellvars = varnames != NULL ? PyCode_GetCellvars(co) : NULL;
    PyObject *freevars = cellvars != NULL ? PyCode_GetFreevars(co) : NULL;
    if (freevars != NULL) {
        result = (PyObject *)FP_CODE_NEW(
            co->co_argcount, co->co_posonlyargcount, co->co_kwonlyargcount, co->co_nlocals, stacksize, co->co_flags,
            units, consts, co->co_names, varnames, freevars, cellvars, co->co_filename, co->co_name, co->co_qualname,
            co->co_firstlineno, lines, exceptions);
    }
    Py_XDECREF(varnames);
    Py_XDECREF(cellvars);
    Py_XDECREF(freevars);
    return result;
#else
    (void)exceptions;
    return (PyObject *)FP_CODE_NEW(
        co->co_argcount, co->co_posonlyargcount, co->co_kwonlyargcount, co->co_nlocals, stacksize, co->co_flags,
        units, consts, co->co_names, co->co_varnames, co->co_freevars, co->co_cellvars, co->co_filename, co->co_name,
        co->co_firstlineno, lines);
#endif
}

/* 3.14+ tuples cache their hash (ob_hash, -1 until computed): a tuple whose
   items are replaced in place (the main code's co_consts, before it runs:
   see fp_put_nested_code in _ext_code.c) must forget it. */
#if PY_VERSION_HEX >= 0x030E0000
#  define FP_TUPLE_FORGET_HASH(t) (((PyTupleObject *)(t))->ob_hash = -1)
#else
#  define FP_TUPLE_FORGET_HASH(t) ((void)(t))
#endif

#endif /* FASTPATCH_COMPAT_H */
