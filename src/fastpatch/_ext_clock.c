/*
 * _ext_clock.c -- the probes' clock, what runs once: whether the CPU's TSC
 * is invariant, its calibration against CLOCK_MONOTONIC, and the module
 * functions that choose and name the clock of new probes. The reads the hot
 * path makes are in _ext_clock.h.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "_ext_clock.h"
#include "_ext_state.h"

FP_INTERNAL int fp_tsc_invariant = 0;
FP_INTERNAL uint64_t fp_tsc_mult = 0;
FP_INTERNAL uint64_t fp_tsc_mult_lo = 0;
FP_INTERNAL uint64_t fp_tsc_mult_hi = 0;
#if defined(_WIN32)
FP_INTERNAL LARGE_INTEGER fp_qpc_freq;
#endif

/* Process-wide, like the two above: whether fp_clock_init has run, and the
   first (TSC, CLOCK_MONOTONIC) reading of the calibration. */
static int fp_clock_checked = 0;
static uint64_t fp_calib_tsc0 = 0;
static int64_t fp_calib_ns0 = 0;

/* 100 us of busy waiting, once per process, when the TSC is first chosen
   (every process the import hook reaches pays it at startup): pairs of
   readings each bracket a CLOCK_MONOTONIC read between two close TSC reads,
   a few tens of ns apart on a shared VM, so the ratio is good to a few parts
   in 10**4 at once. It only places durations in histogram buckets, which
   are 12% wide; fp_tsc_ns_per_tick, which converts totals when stats are
   read, measures over the whole time since and refines it. */
#define FP_CALIBRATION_NS 100000

#if FP_HAVE_TSC
/* Every store to fp_tsc_mult goes through here (see fp_tsc_mult_lo). */
static void
fp_tsc_set_mult(uint64_t mult)
{
    if (fp_tsc_mult_lo == 0 || mult < fp_tsc_mult_lo) {
        fp_tsc_mult_lo = mult;
    }
    if (mult > fp_tsc_mult_hi) {
        fp_tsc_mult_hi = mult;
    }
    fp_tsc_mult = mult;
}

static int
fp_tsc_is_invariant(void)
{
#  if defined(_MSC_VER)
    int regs[4];
    __cpuid(regs, 0x80000000);
    if ((unsigned)regs[0] < 0x80000007u) {
        return 0;
    }
    __cpuid(regs, 0x80000007);
    return (regs[3] >> 8) & 1;
#  else
    unsigned a, b, c, d;
    if (__get_cpuid_max(0x80000000u, NULL) < 0x80000007u) {
        return 0;
    }
    __cpuid(0x80000007u, a, b, c, d);
    (void)a; (void)b; (void)c;
    return (d >> 8) & 1;
#  endif
}

/* One simultaneous (TSC, CLOCK_MONOTONIC) reading: of a few tries, the
   monotonic read bracketed by the two closest TSC reads. */
static void
fp_clock_pair(uint64_t *tsc, int64_t *ns)
{
    uint64_t best = UINT64_MAX;
    *tsc = 0;
    *ns = 0;
    for (int i = 0; i < 8; i++) {
        uint64_t a = fp_tsc_now();
        int64_t n = fp_now_ns();
        uint64_t b = fp_tsc_now();
        if (b - a < best) {
            best = b - a;
            *tsc = a + (b - a) / 2;
            *ns = n;
        }
    }
}

static void
fp_calibrate_tsc(void)
{
    uint64_t t1;
    int64_t n1;
    fp_clock_pair(&fp_calib_tsc0, &fp_calib_ns0);
    do {
        fp_clock_pair(&t1, &n1);
    } while (n1 - fp_calib_ns0 < FP_CALIBRATION_NS || t1 <= fp_calib_tsc0);
    fp_tsc_set_mult(((uint64_t)(n1 - fp_calib_ns0) << 32) / (t1 - fp_calib_tsc0));
}

double
fp_tsc_ns_per_tick(void)
{
    uint64_t t;
    int64_t n;
    fp_clock_pair(&t, &n);
    double ns_per_tick = (double)(n - fp_calib_ns0) / (double)(t - fp_calib_tsc0);
    if (n - fp_calib_ns0 > 10 * FP_CALIBRATION_NS && t > fp_calib_tsc0) {
        fp_tsc_set_mult((uint64_t)(ns_per_tick * 4294967296.0));
    }
    return ns_per_tick;
}
#else
static int
fp_tsc_is_invariant(void)
{
    return 0;
}
#endif

void
fp_clock_init(void)
{
    if (fp_clock_checked) {
        return;
    }
#if defined(_WIN32)
    QueryPerformanceFrequency(&fp_qpc_freq);
#endif
    fp_tsc_invariant = fp_tsc_is_invariant();
    fp_clock_checked = 1;
}

/* set_default_clock(tsc): the clock of probes this interpreter creates from
   now on. Returns whether the TSC is used; asking for it where it is not
   invariant leaves CLOCK_MONOTONIC and returns False. The first TSC choice
   in the process measures the tick rate (FP_CALIBRATION_NS). */
PyObject *
fp_set_default_clock(PyObject *module, PyObject *arg)
{
    int want = PyObject_IsTrue(arg);
    if (want < 0) {
        return NULL;
    }
    fp_state *st = fp_state_of(module);
    st->default_tsc = want && fp_tsc_invariant;
#if FP_HAVE_TSC
    if (st->default_tsc && fp_tsc_mult == 0) {
        fp_calibrate_tsc();
    }
#endif
    return PyBool_FromLong(st->default_tsc);
}

/* clock_name(): the default clock of new probes, "tsc" or "monotonic". */
PyObject *
fp_clock_name(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(fp_state_of(module)->default_tsc ? "tsc" : "monotonic");
}
