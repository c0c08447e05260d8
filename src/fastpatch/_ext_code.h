/*
 * _ext_code.h -- what _ext_code.c gives the module setup: the module
 * functions that put spliced code where it runs.
 */
#ifndef FASTPATCH_EXT_CODE_H
#define FASTPATCH_EXT_CODE_H

#include "_compat.h"

/* set_code(func, code) (METH_FASTCALL); splice_main_code(callback) (METH_O). */
FP_INTERNAL PyObject *fp_set_code(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
FP_INTERNAL PyObject *fp_splice_main_code(PyObject *module, PyObject *callback);

#endif /* FASTPATCH_EXT_CODE_H */
