/*
 * _ext_clock.h -- the probes' clock: CLOCK_MONOTONIC (QueryPerformanceCounter
 * on Windows), or the CPU's time-stamp counter.
 *
 * The reads are static inline, so that the hot path (_ext_probe.c) compiles
 * them into its leaf functions; what runs once (the TSC check, its
 * calibration) and the module functions about the clock are in
 * _ext_clock.c.
 *
 * The TSC clock: rdtsc costs about 9 ns against about 18 ns for
 * clock_gettime (back to back, on the CI host's Intel Xeon). It is offered
 * only where the CPU reports an invariant TSC (constant rate, running
 * through sleep states). A TSC probe counts ticks: its totals, minimum and
 * maximum are converted to nanoseconds when stats are read, by the ratio of
 * CLOCK_MONOTONIC to the TSC over the whole time since the TSC was first
 * chosen, which gets better the longer the process runs. Its histogram
 * buckets count nanoseconds, like a monotonic probe's, so that histograms
 * merge across processes: each duration is converted when it is folded in
 * (off the caller's path, see token_exit), by the ratio measured over the
 * first FP_CALIBRATION_NS and refined whenever stats are read. Each probe
 * keeps the clock it was created with, so both kinds can live side by side.
 */
#ifndef FASTPATCH_EXT_CLOCK_H
#define FASTPATCH_EXT_CLOCK_H

#include "_compat.h"

#if defined(_WIN32)
#  include <windows.h>
#else
#  include <time.h>
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER))
#  define FP_HAVE_TSC 1
#  if defined(_MSC_VER)
#    include <intrin.h>
#  else
#    include <x86intrin.h>
#    include <cpuid.h>
#  endif
#else
#  define FP_HAVE_TSC 0
#endif

/* Process-wide, written once under the GIL, the same for every interpreter
   that loads the module (_ext_clock.c): whether the CPU's TSC is invariant,
   and 2**32 times the nanoseconds per TSC tick over the calibration (0
   until measured). */
FP_INTERNAL extern int fp_tsc_invariant;
FP_INTERNAL extern uint64_t fp_tsc_mult;
/* The smallest and the largest value fp_tsc_mult has held in this process
   (0 until measured): every duration in a TSC probe's histogram went to its
   bucket by one of them, so a probe's minimum and maximum ticks bound its
   non-zero buckets (the telemetry writer copies only those). */
FP_INTERNAL extern uint64_t fp_tsc_mult_lo;
FP_INTERNAL extern uint64_t fp_tsc_mult_hi;

#if defined(_WIN32)
FP_INTERNAL extern LARGE_INTEGER fp_qpc_freq;

static inline int64_t
fp_now_ns(void)
{
    LARGE_INTEGER c;
    QueryPerformanceCounter(&c);
    /* Split to avoid overflowing 64 bits for long uptimes. */
    int64_t f = fp_qpc_freq.QuadPart;
    int64_t s = c.QuadPart / f, r = c.QuadPart % f;
    return s * 1000000000LL + (r * 1000000000LL) / f;
}
#else
/* CLOCK_MONOTONIC is served by the vDSO on Linux: no system call. */
static inline int64_t
fp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
#endif

#if FP_HAVE_TSC
/* The time-stamp counter, in ticks: the only rdtsc of fastpatch. */
static inline uint64_t
fp_tsc_now(void)
{
    return __rdtsc();
}

/* (ticks * mult) >> 32, without overflow for any duration. */
static inline uint64_t
fp_mul_shift32(uint64_t ticks, uint64_t mult)
{
#  if defined(_MSC_VER)
    uint64_t hi, lo = _umul128(ticks, mult, &hi);
    return (hi << 32) | (lo >> 32);
#  else
    return (uint64_t)(((unsigned __int128)ticks * mult) >> 32);
#  endif
}

/* A duration in TSC ticks, in nanoseconds by the histogram's ratio. */
static inline uint64_t
fp_tsc_to_ns(uint64_t ticks)
{
    return fp_mul_shift32(ticks, fp_tsc_mult);
}
#endif

/* A probe's clock: TSC ticks for a TSC probe, nanoseconds otherwise. */
static inline int64_t
fp_now_ticks(int tsc)
{
#if FP_HAVE_TSC
    if (tsc) {
        return (int64_t)fp_tsc_now();
    }
#else
    (void)tsc;
#endif
    return fp_now_ns();
}

/* Once per process, at the first import (later interpreters only read
   what it found): the clocks' constants, and whether the TSC is invariant. */
FP_INTERNAL void fp_clock_init(void);

#if FP_HAVE_TSC
/* Nanoseconds per TSC tick, over the whole time since calibration began;
   the histogram's ratio becomes it. */
FP_INTERNAL double fp_tsc_ns_per_tick(void);
#endif

/* Module functions (METH_O, METH_NOARGS): set_default_clock(tsc) -> bool, clock_name() -> str. */
FP_INTERNAL PyObject *fp_set_default_clock(PyObject *module, PyObject *arg);
FP_INTERNAL PyObject *fp_clock_name(PyObject *module, PyObject *ignored);

#endif /* FASTPATCH_EXT_CLOCK_H */
