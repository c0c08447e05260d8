/*
 * _ext_origin.h -- what _ext_origin.c gives the module setup: the Origin
 * type's spec and the module functions of the lazy table.
 */
#ifndef FASTPATCH_EXT_ORIGIN_H
#define FASTPATCH_EXT_ORIGIN_H

#include "_compat.h"

FP_INTERNAL extern PyType_Spec fp_origin_spec;

/* Module functions; their docstrings are in _ext.c's method table. */
FP_INTERNAL PyObject *fp_lazy_add(PyObject *module, PyObject *origin);                             /* METH_O */
FP_INTERNAL PyObject *fp_lazy_origin(PyObject *module, PyObject *const *args, Py_ssize_t nargs);  /* METH_FASTCALL */
FP_INTERNAL PyObject *fp_lazy_get(PyObject *module, PyObject *code);                               /* METH_O */
FP_INTERNAL PyObject *fp_lazy_discard(PyObject *module, PyObject *origin);                         /* METH_O */
FP_INTERNAL PyObject *fp_lazy_origins(PyObject *module, PyObject *ignored);                        /* METH_NOARGS */
FP_INTERNAL PyObject *fp_called_origins(PyObject *module, PyObject *ignored);                      /* METH_NOARGS */
FP_INTERNAL PyObject *fp_lazy_clear(PyObject *module, PyObject *ignored);                          /* METH_NOARGS */
FP_INTERNAL PyObject *fp_lazy_count(PyObject *module, PyObject *ignored);                          /* METH_NOARGS */

#endif /* FASTPATCH_EXT_ORIGIN_H */
