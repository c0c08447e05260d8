/*
 * _ext_histogram.h -- the layout of a probe's latency histogram: which
 * bucket a duration in nanoseconds falls in. Static inline, for the hot path
 * (_ext_probe.c folds each duration in).
 *
 * Buckets over u = duration_ns >> FP_HIST_SHIFT (4 ns units), the same on
 * every clock, so that histograms from different processes merge exactly:
 *
 *   u < 8            one bucket per unit: 0-32 ns, within 2 ns;
 *   8 <= u < 64      log-linear, 8 equal sub-buckets per power of two
 *                    (32-256 ns);
 *   64 <= u < 2**39  6 buckets per power of two (256 ns to 2**41 ns, about
 *                    36.6 minutes), cut at the cells of the 6 bits below the
 *                    leading one (fp_sixths), each bucket at most 1.1275
 *                    times as wide at its top as at its bottom;
 *   u >= 2**39       the last bucket, which Python treats as open-ended.
 *
 * Python's _stats.bucket_bounds mirrors this, and reports a bucket by the
 * point that is closest, relatively, to both of its ends, which keeps every
 * percentile from 32 ns to 2**41 ns within 6.25% of a recorded duration
 * (tests/test_histogram.py checks every bucket). 231 buckets keep the whole
 * probe small; 8 sub-buckets per power of two all the way up would
 * need 296 for the same range. Counts are 64 bits (never halved): 1848
 * bytes, and a called probe stays within 2 KiB.
 */
#ifndef FASTPATCH_EXT_HISTOGRAM_H
#define FASTPATCH_EXT_HISTOGRAM_H

#include "_compat.h"

#define FP_HIST_SHIFT 2
#define FP_HIST_LOG_START 32          /* first bucket of the 6-per-octave part */
#define FP_HIST_TOP_EXP 38            /* u's highest power of two below the top bucket */
#define FP_HIST_BUCKETS (FP_HIST_LOG_START + 6 * (FP_HIST_TOP_EXP - 5) + 1)
#define FP_HIST_BYTES (sizeof(uint64_t) * FP_HIST_BUCKETS)

/* Which of the 6 buckets of a power of two holds the cell (u's 6 bits below
   its leading one): cells 0-7, 8-16, 17-26, 27-37, 38-50, 51-63. */
static const uint8_t fp_sixths[64] = {
    0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
};

static inline unsigned
fp_log2(uint64_t u)
{
#if defined(__GNUC__) || defined(__clang__)
    return 63u - (unsigned)__builtin_clzll(u);
#else
    unsigned e = 0;
    for (uint64_t v = u; v > 1; v >>= 1) {
        e++;
    }
    return e;
#endif
}

/* The bucket of a duration in nanoseconds. */
static inline unsigned
fp_bucket_of(uint64_t ns)
{
    uint64_t u = ns >> FP_HIST_SHIFT;
    if (u < 64) {
        if (u < 8) {
            return (unsigned)u;
        }
        unsigned e = fp_log2(u);  /* 3, 4 or 5 */
        return 8 + (e - 3) * 8 + (unsigned)((u >> (e - 3)) & 7);
    }
    unsigned e = fp_log2(u);
    if (e > FP_HIST_TOP_EXP) {
        return FP_HIST_BUCKETS - 1;
    }
    return FP_HIST_LOG_START + (e - 6) * 6 + fp_sixths[(u >> (e - 6)) & 63];
}

#endif /* FASTPATCH_EXT_HISTOGRAM_H */
