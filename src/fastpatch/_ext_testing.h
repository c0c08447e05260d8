/*
 * _ext_testing.h -- the method table of fastpatch._ext's test hooks
 * (_ext_testing.c), which the module setup adds to the module.
 */
#ifndef FASTPATCH_EXT_TESTING_H
#define FASTPATCH_EXT_TESTING_H

#include "_compat.h"

FP_INTERNAL extern PyMethodDef fp_testing_methods[];

#endif /* FASTPATCH_EXT_TESTING_H */
