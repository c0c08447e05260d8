/*
 * _ext_telemetry.c -- live telemetry's C half: read_slots, the seqlock copy
 * that every reader of a counters file uses, and the snapshot writer.
 *
 * The writer is process-wide (one file per process) and belongs to the
 * interpreter that armed it. Arming (telemetry_arm, from
 * fastpatch.export.start or activation) only stores what the writer needs:
 * the thread starts at the first activation of any probe (the cold path of
 * probe_start_counting), so that a pre-fork master that never runs
 * instrumented code has no thread and no file. The thread opens the file at
 * its first snapshot, through Python (the directory's rules live there),
 * and then, every interval, takes the GIL, walks the module's called list
 * and writes each probe whose counters changed into its record under the
 * record's seqlock. The per-call path is untouched: the probes never see
 * the file.
 *
 * Fork: Python's os.register_at_fork(before=telemetry_pause) joins the
 * thread (no thread exists at fork, so 3.12+ has nothing to warn about and
 * no lock is held), after_in_parent=telemetry_resume starts it again; in
 * the child, a pthread_atfork handler drops the parent's mapping and file
 * descriptor without writing (so that the flock on the parent's file stays
 * the parent's alone) and forgets every record: the child gets its own file
 * at its first call.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#if defined(__linux__)
#  include <sys/vfs.h>
#endif

#include "_compat.h"
#include "_ext_clock.h"
#include "_ext_histogram.h"
#include "_ext_probe.h"
#include "_ext_state.h"
#include "_ext_telemetry.h"
#include "_telemetry.h"

#if FP_HAVE_TELEMETRY_WRITER
#  include <errno.h>
#  include <fcntl.h>
#  include <pthread.h>
#  include <sys/mman.h>
#  include <time.h>
#  include <unistd.h>
#endif

FPT_STATIC_ASSERT(FPT_HIST_BUCKETS == FP_HIST_BUCKETS, "the file's histogram is the probe's");

#if defined(__GNUC__) || defined(__clang__)
#  define FPT_LOAD_ACQUIRE(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#  define FPT_LOAD_RELAXED(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#  define FPT_STORE_RELEASE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#  define FPT_STORE_RELAXED(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#  define FPT_FENCE_ACQUIRE() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#  define FPT_FENCE_RELEASE() __atomic_thread_fence(__ATOMIC_RELEASE)
#else
#  define FPT_LOAD_ACQUIRE(p) (*(volatile uint64_t *)(p))
#  define FPT_LOAD_RELAXED(p) (*(volatile uint64_t *)(p))
#  define FPT_STORE_RELEASE(p, v) (*(volatile uint64_t *)(p) = (v))
#  define FPT_STORE_RELAXED(p, v) (*(volatile uint64_t *)(p) = (v))
#  define FPT_FENCE_ACQUIRE() ((void)0)
#  define FPT_FENCE_RELEASE() ((void)0)
#endif

/* A reader gives up on a slot that changed under it this many times in a row. */
#define FPT_READ_RETRIES 100

/* ===================================================================== */
/* read_slots: the seqlock copy                                          */
/* ===================================================================== */

/* Copy one slot of `size` bytes under its seqlock into `out`. Returns 1 if
   the copy is consistent; 0 if the slot kept changing, and then the copy's
   seq word is odd, which the reader takes as "unstable". */
static int
copy_slot(unsigned char *out, const unsigned char *slot, size_t size)
{
    const uint64_t *seqp = (const uint64_t *)slot;
    for (int attempt = 0; attempt < FPT_READ_RETRIES; attempt++) {
        uint64_t before = FPT_LOAD_ACQUIRE(seqp);
        if (before & 1) {
            continue;
        }
        memcpy(out, slot, size);
        FPT_FENCE_ACQUIRE();
        uint64_t after = FPT_LOAD_RELAXED(seqp);
        if (before == after) {
            memcpy(out, &before, sizeof before);
            return 1;
        }
    }
    uint64_t odd = 1;
    memcpy(out, &odd, sizeof odd);
    return 0;
}

/* read_slots(buffer, first, count) -> bytes: `count` slots from slot
   `first` of a counters file mapped in `buffer`, each copied under its
   seqlock. header_size and slot_size are read from the buffer's header and
   every bound is checked against the buffer's length: ValueError if the
   slots do not all lie inside it. Returns a new reference. */
PyObject *
fp_read_slots(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read_slots(buffer, first, count) takes 3 arguments");
        return NULL;
    }
    Py_ssize_t first = PyLong_AsSsize_t(args[1]);
    if (first == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *out = NULL;
    const unsigned char *base = (const unsigned char *)view.buf;
    uint32_t header_size, slot_size;
    if (view.len < (Py_ssize_t)sizeof(struct fpt_header)) {
        PyErr_Format(PyExc_ValueError, "read_slots: a buffer of %zd bytes holds no header", view.len);
        goto done;
    }
    memcpy(&header_size, base + offsetof(struct fpt_header, header_size), sizeof header_size);
    memcpy(&slot_size, base + offsetof(struct fpt_header, slot_size), sizeof slot_size);
    if (header_size < sizeof(struct fpt_header) || header_size % 8 || slot_size < 16 || slot_size % 8) {
        PyErr_Format(PyExc_ValueError, "read_slots: header_size %u or slot_size %u is not a valid layout",
                     header_size, slot_size);
        goto done;
    }
    if (first < 0 || count < 0 || (uint64_t)first + (uint64_t)count > ((uint64_t)view.len - 0) / slot_size
        || (uint64_t)header_size + ((uint64_t)first + (uint64_t)count) * slot_size > (uint64_t)view.len) {
        PyErr_Format(PyExc_ValueError, "read_slots: slots %zd to %zd lie beyond the buffer's %zd bytes", first,
                     first + count, view.len);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)slot_size);
    if (out == NULL) {
        goto done;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *src = base + header_size + (size_t)first * slot_size;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        copy_slot(dst + (size_t)i * slot_size, src + (size_t)i * slot_size, slot_size);
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&view);
    return out;
}

/* ===================================================================== */
/* decode_records: a copy's records, their histograms folded             */
/* ===================================================================== */

/* A uint32_t field of the struct fpt_record at `slot` (only 8-byte aligned). */
#define read_u32(slot, field) read_u32_at((slot) + offsetof(struct fpt_record, field))

static inline uint32_t
read_u32_at(const unsigned char *at)
{
    uint32_t v;
    memcpy(&v, at, sizeof v);
    return v;
}

/* Parse `arg`, the cuts of `fn` (increasing from above 0 to
   FPT_HIST_BUCKETS), into cuts[] and *n_cuts; -1 with an exception set. */
static int
parse_cuts(PyObject *arg, const char *fn, Py_ssize_t cuts[FPT_HIST_BUCKETS], Py_ssize_t *n_cuts)
{
    PyObject *seq = PySequence_Fast(arg, "cuts must be a sequence of ints");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_ssize_t previous = 0;
    int ok = n >= 1 && n <= FPT_HIST_BUCKETS;
    for (Py_ssize_t j = 0; ok && j < n; j++) {
        cuts[j] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, j));
        if (cuts[j] == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        ok = cuts[j] > previous && cuts[j] <= FPT_HIST_BUCKETS;
        previous = cuts[j];
    }
    Py_DECREF(seq);
    if (!ok || previous != FPT_HIST_BUCKETS) {
        PyErr_Format(PyExc_ValueError, "%s: cuts must increase from above 0 to %d", fn, FPT_HIST_BUCKETS);
        return -1;
    }
    *n_cuts = n;
    return 0;
}

/* Sum hist[first..end) into a new int: in uint64_t while it fits (always,
   in practice), else as Python ints, so that the sum is exact. */
static PyObject *
sum_buckets(const uint64_t *hist, Py_ssize_t first, Py_ssize_t end)
{
    uint64_t sum = 0;
    Py_ssize_t i = first;
    for (; i < end; i++) {
        if (hist[i] > UINT64_MAX - sum) {
            break;
        }
        sum += hist[i];
    }
    PyObject *total = PyLong_FromUnsignedLongLong(sum);
    for (; i < end && total != NULL; i++) {
        PyObject *item = PyLong_FromUnsignedLongLong(hist[i]);
        if (item == NULL) {
            Py_CLEAR(total);
            break;
        }
        Py_SETREF(total, PyNumber_Add(total, item));
        Py_DECREF(item);
    }
    return total;
}

/* Point parts[0..3] at the module, the qualname and the filename of a
   record (each NUL-terminated; parts[3] is just past the filename), from
   the strings slot `name_slot` of the copy `base` of `n_slots` slots; -1
   with a ValueError saying what is wrong if the slot or the offset holds no
   three names. */
static int
record_name_parts(const unsigned char *base, Py_ssize_t n_slots, Py_ssize_t slot_size, uint32_t name_slot,
                  uint32_t name_off, const char *parts[4])
{
    const unsigned char *slot = base;
    uint64_t seq = 1;
    uint16_t kind = 0;
    uint32_t used = 0;
    if (name_slot < n_slots) {
        slot = base + (size_t)name_slot * slot_size;
        memcpy(&seq, slot, sizeof seq);
        memcpy(&kind, slot + offsetof(struct fpt_strings, kind), sizeof kind);
        memcpy(&used, slot + offsetof(struct fpt_strings, used), sizeof used);
    }
    if (seq & 1 || kind != FPT_KIND_STRINGS) {
        PyErr_Format(PyExc_ValueError, "a record names slot %u offset %u, which holds no names", name_slot,
                     name_off);
        return -1;
    }
    if (used > (uint64_t)slot_size - offsetof(struct fpt_strings, data)) {
        PyErr_Format(PyExc_ValueError, "slot %u says %u bytes of names, more than the slot holds", name_slot,
                     used);
        return -1;
    }
    if (name_off >= used) {
        PyErr_Format(PyExc_ValueError, "a record names slot %u offset %u, which holds no names", name_slot,
                     name_off);
        return -1;
    }
    const char *start = (const char *)slot + offsetof(struct fpt_strings, data) + name_off;
    const char *end = start + (used - name_off);
    parts[0] = start;
    for (int k = 1; k < 4; k++) {
        const char *nul = memchr(parts[k - 1], 0, (size_t)(end - parts[k - 1]));
        if (nul == NULL) {
            PyErr_Format(PyExc_ValueError, "the names at slot %u offset %u are not three NUL-terminated strings",
                         name_slot, name_off);
            return -1;
        }
        parts[k] = nul + 1;
    }
    return 0;
}

/* "module.qualname" of a record's names (see record_name_parts). Returns a
   new reference. */
static PyObject *
function_name(const char *const parts[4])
{
    PyObject *module = PyUnicode_DecodeUTF8(parts[0], parts[1] - parts[0] - 1, "replace");
    PyObject *qualname = PyUnicode_DecodeUTF8(parts[1], parts[2] - parts[1] - 1, "replace");
    PyObject *name = NULL;
    if (module != NULL && qualname != NULL) {
        name = PyUnicode_FromFormat("%U.%U", module, qualname);
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return name;
}

/* The names of a record, "module.qualname", or with `full` the tuple
   ("module.qualname", module, qualname, filename); ValueError as
   record_name_parts raises it. Returns a new reference. */
static PyObject *
record_names(const unsigned char *base, Py_ssize_t n_slots, Py_ssize_t slot_size, uint32_t name_slot,
             uint32_t name_off, int full)
{
    const char *parts[4];
    if (record_name_parts(base, n_slots, slot_size, name_slot, name_off, parts) < 0) {
        return NULL;
    }
    if (!full) {
        return function_name(parts);
    }
    PyObject *module = PyUnicode_DecodeUTF8(parts[0], parts[1] - parts[0] - 1, "replace");
    PyObject *qualname = PyUnicode_DecodeUTF8(parts[1], parts[2] - parts[1] - 1, "replace");
    PyObject *filename = PyUnicode_DecodeUTF8(parts[2], parts[3] - parts[2] - 1, "replace");
    PyObject *name = NULL, *result = NULL;
    if (module != NULL && qualname != NULL && filename != NULL) {
        name = PyUnicode_FromFormat("%U.%U", module, qualname);
    }
    if (name != NULL) {
        result = PyTuple_Pack(4, name, module, qualname, filename);
        Py_DECREF(name);
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(filename);
    return result;
}

/* The tuple of one record: its names, its fields, then its histogram's
   sums over [cuts[j-1], cuts[j]) for each cut. */
static PyObject *
record_tuple(const unsigned char *base, Py_ssize_t n_slots, Py_ssize_t slot_size, Py_ssize_t index,
             const Py_ssize_t *cuts, Py_ssize_t n_cuts, int full)
{
    const unsigned char *slot = base + index * slot_size;
    struct fpt_record r;
    /* Everything up to the histogram, and the histogram itself: memcpy,
       as the copy's slots are only 8-byte aligned. */
    memcpy(&r, slot, offsetof(struct fpt_record, hist));
    uint64_t hist[FPT_HIST_BUCKETS];
    memcpy(hist, slot + offsetof(struct fpt_record, hist), sizeof hist);
    PyObject *names = record_names(base, n_slots, slot_size, r.name_slot, r.name_off, full);
    if (names == NULL) {
        return NULL;
    }
    PyObject *counts = PyTuple_New(n_cuts);
    if (counts == NULL) {
        Py_DECREF(names);
        return NULL;
    }
    Py_ssize_t first = 0;
    for (Py_ssize_t j = 0; j < n_cuts; j++) {
        PyObject *sum = sum_buckets(hist, first, cuts[j]);
        if (sum == NULL) {
            Py_DECREF(names);
            Py_DECREF(counts);
            return NULL;
        }
        PyTuple_SET_ITEM(counts, j, sum);
        first = cuts[j];
    }
    return Py_BuildValue("(NHIIKKKKKKKN)", names, r.flags, r.firstlineno, r.sample,
                         (unsigned long long)r.calls, (unsigned long long)r.completed,
                         (unsigned long long)r.errors, (unsigned long long)r.timed,
                         (unsigned long long)r.total_ns, (unsigned long long)r.min_ns,
                         (unsigned long long)r.max_ns, counts);
}

/* The arguments that decode_records and fold_records share: (data,
   slot_size, cuts). On success the buffer is held (the caller releases it)
   and holds whole slots; -1 with an exception set, nothing held. */
static int
records_arguments(const char *name, PyObject *const *args, Py_ssize_t *slot_size, Py_ssize_t *cuts,
                  Py_ssize_t *n_cuts, Py_buffer *view)
{
    *slot_size = PyLong_AsSsize_t(args[1]);
    if (*slot_size == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (*slot_size < (Py_ssize_t)offsetof(struct fpt_record, pad) || *slot_size % 8) {
        PyErr_Format(PyExc_ValueError, "%s: slot size %zd is smaller than a record or unaligned", name,
                     *slot_size);
        return -1;
    }
    *n_cuts = 0;
    if (parse_cuts(args[2], name, cuts, n_cuts) < 0) {
        return -1;
    }
    if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view->len % *slot_size) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes are not whole slots of %zd", name, view->len, *slot_size);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* The kind of a slot copied at `slot`, or -1 (and *unstable counted) when
   its writer was inside its seqlock. */
static inline int
stable_slot_kind(const unsigned char *slot, Py_ssize_t *unstable)
{
    uint64_t seq;
    uint16_t kind;
    memcpy(&seq, slot, sizeof seq);
    memcpy(&kind, slot + offsetof(struct fpt_record, kind), sizeof kind);
    if (seq & 1) {
        (*unstable)++;
        return -1;
    }
    return kind;
}

/* Files what the records loops make of slot `i` of kind `kind`: a record's
   `item` (stolen; NULL when making it failed) in `records`, a strings or
   absorbed slot's index in `others`, and nothing for an unused or newer
   kind of slot, as the Python reader treats those. Returns 0, or -1 with an
   exception set. */
static int
records_file_slot(int kind, Py_ssize_t i, PyObject *item, PyObject *records, PyObject *others)
{
    PyObject *list = records;
    if (kind != FPT_KIND_RECORD) {
        if (kind != FPT_KIND_STRINGS && kind != FPT_KIND_ABSORBED) {
            return 0;
        }
        item = PyLong_FromSsize_t(i);
        list = others;
    }
    if (item == NULL || PyList_Append(list, item) < 0) {
        Py_XDECREF(item);
        return -1;
    }
    Py_DECREF(item);
    return 0;
}

/* decode_records(data, slot_size, cuts, full_names) -> (records, others, unstable):
   see the docstring in _ext.c's method table. Returns a new reference. */
PyObject *
fp_decode_records(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "decode_records(data, slot_size, cuts, full_names) takes 4 arguments");
        return NULL;
    }
    int full = PyObject_IsTrue(args[3]);
    if (full < 0) {
        return NULL;
    }
    Py_ssize_t slot_size, cuts[FPT_HIST_BUCKETS], n_cuts;
    Py_buffer view;
    if (records_arguments("decode_records", args, &slot_size, cuts, &n_cuts, &view) < 0) {
        return NULL;
    }
    PyObject *records = NULL, *others = NULL, *result = NULL;
    Py_ssize_t unstable = 0;
    records = PyList_New(0);
    others = PyList_New(0);
    if (records == NULL || others == NULL) {
        goto done;
    }
    const unsigned char *base = (const unsigned char *)view.buf;
    for (Py_ssize_t i = 0; i < view.len / slot_size; i++) {
        int kind = stable_slot_kind(base + i * slot_size, &unstable);
        if (kind < 0) {
            continue;
        }
        PyObject *item = NULL;
        if (kind == FPT_KIND_RECORD) {
            item = record_tuple(base, view.len / slot_size, slot_size, i, cuts, n_cuts, full);
        }
        if (records_file_slot(kind, i, item, records, others) < 0) {
            goto done;
        }
    }
    result = Py_BuildValue("(OOn)", records, others, unstable);
done:
    Py_XDECREF(records);
    Py_XDECREF(others);
    PyBuffer_Release(&view);
    return result;
}

/* ===================================================================== */
/* fold_records and merge_records: the exporters' merge by name, in C    */
/* ===================================================================== */

/* Fields of a record packed by fold_records, before its n_cuts counts:
   flags, firstlineno, sample, calls, completed, errors, timed, total_ns,
   min_ns, max_ns (a Folded tuple's order, its name aside). */
#define FOLD_FIELDS 10

/* *acc += v; -1 (and *acc unchanged) if the sum needs more than 64 bits. */
static inline int
add_u64(uint64_t *acc, uint64_t v)
{
    if (v > UINT64_MAX - *acc) {
        return -1;
    }
    *acc += v;
    return 0;
}

/* Pack the record at `slot` into out[FOLD_FIELDS + n_cuts]: -1 if a
   count's sum needs more than 64 bits. */
static int
pack_record(uint64_t *out, const unsigned char *slot, const Py_ssize_t *cuts, Py_ssize_t n_cuts)
{
    struct fpt_record r;
    memcpy(&r, slot, offsetof(struct fpt_record, hist));
    const uint64_t fields[FOLD_FIELDS] = {r.flags, r.firstlineno, r.sample, r.calls, r.completed, r.errors, r.timed,
                                          r.total_ns, r.min_ns, r.max_ns};
    memcpy(out, fields, sizeof fields);
    uint64_t hist[FPT_HIST_BUCKETS];
    memcpy(hist, slot + offsetof(struct fpt_record, hist), sizeof hist);
    /* Below 2**56 each, no sum of 231 buckets can overflow: then plain
       sums, which the compiler vectorizes (this is most of a scrape's C). */
    uint64_t high = 0;
    for (Py_ssize_t i = 0; i < FPT_HIST_BUCKETS; i++) {
        high |= hist[i];
    }
    FPT_STATIC_ASSERT(FPT_HIST_BUCKETS < 256, "256 buckets below 2**56 sum below 2**64");
    int checked = (high >> 56) != 0;
    Py_ssize_t first = 0;
    for (Py_ssize_t j = 0; j < n_cuts; j++) {
        uint64_t sum = 0;
        if (checked) {
            for (Py_ssize_t i = first; i < cuts[j]; i++) {
                if (add_u64(&sum, hist[i]) < 0) {
                    return -1;
                }
            }
        }
        else {
            for (Py_ssize_t i = first; i < cuts[j]; i++) {
                sum += hist[i];
            }
        }
        out[FOLD_FIELDS + j] = sum;
        first = cuts[j];
    }
    return 0;
}

/* fold_records(data, slot_size, cuts) -> (keys, packed, others, unstable):
   see the docstring in _ext.c's method table. Returns a new reference. */
PyObject *
fp_fold_records(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "fold_records(data, slot_size, cuts) takes 3 arguments");
        return NULL;
    }
    Py_ssize_t slot_size, cuts[FPT_HIST_BUCKETS], n_cuts;
    Py_buffer view;
    if (records_arguments("fold_records", args, &slot_size, cuts, &n_cuts, &view) < 0) {
        return NULL;
    }
    PyObject *keys = NULL, *others = NULL, *packed = NULL, *result = NULL;
    uint64_t *fields = NULL;
    Py_ssize_t unstable = 0, n_records = 0;
    int overflow = 0;
    const unsigned char *base = (const unsigned char *)view.buf;
    Py_ssize_t n_slots = view.len / slot_size;
    Py_ssize_t width = FOLD_FIELDS + n_cuts;
    keys = PyList_New(0);
    others = PyList_New(0);
    fields = PyMem_Malloc((size_t)(n_slots ? n_slots : 1) * (size_t)width * sizeof *fields);
    if (keys == NULL || others == NULL || fields == NULL) {
        if (fields == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_slots; i++) {
        const unsigned char *slot = base + i * slot_size;
        int kind = stable_slot_kind(slot, &unstable);
        if (kind < 0) {
            continue;
        }
        PyObject *item = NULL;
        if (kind == FPT_KIND_RECORD) {
            const char *parts[4];
            if (record_name_parts(base, n_slots, slot_size, read_u32(slot, name_slot), read_u32(slot, name_off),
                                  parts) < 0) {
                goto done;
            }
            /* "module\0qualname": what merge_records merges by, before it decodes a name. */
            item = PyBytes_FromStringAndSize(parts[0], parts[2] - parts[0] - 1);
            overflow = overflow || pack_record(fields + n_records * width, slot, cuts, n_cuts) < 0;
            n_records++;
        }
        if (records_file_slot(kind, i, item, keys, others) < 0) {
            goto done;
        }
    }
    packed = overflow ? Py_NewRef(Py_None)
                      : PyBytes_FromStringAndSize((const char *)fields,
                                                  n_records * width * (Py_ssize_t)sizeof *fields);
    if (packed != NULL) {
        result = Py_BuildValue("(OOOn)", keys, packed, others, unstable);
    }
done:
    PyMem_Free(fields);
    Py_XDECREF(keys);
    Py_XDECREF(packed);
    Py_XDECREF(others);
    PyBuffer_Release(&view);
    return result;
}

/* A function's merged counters, summed over the records of its name. */
struct merged_row {
    uint64_t calls, errors, total_ns, active, min_ns, max_ns;
    int timed;  /* some record of it has timed calls (min_ns and max_ns are theirs) */
};

/* "module.qualname" of a key "module\0qualname", each part decoded as
   UTF-8 with "replace", as decode_records names a record. Returns a new
   reference. */
static PyObject *
key_name(PyObject *key)
{
    const char *start = PyBytes_AS_STRING(key);
    Py_ssize_t size = PyBytes_GET_SIZE(key);
    const char *nul = memchr(start, 0, (size_t)size);
    if (nul == NULL) {
        return PyErr_Format(PyExc_ValueError, "merge_records: a key %R is not module\\0qualname", key);
    }
    PyObject *module = PyUnicode_DecodeUTF8(start, nul - start, "replace");
    PyObject *qualname = PyUnicode_DecodeUTF8(nul + 1, size - (nul + 1 - start), "replace");
    PyObject *name = NULL;
    if (module != NULL && qualname != NULL) {
        name = PyUnicode_FromFormat("%U.%U", module, qualname);
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return name;
}

/* The index of the merged row of `key` (see key_name), n_rows if its name
   is new; -1 with an exception set. `by_key` maps each key met to its
   index, so that a name seen in an earlier file is not decoded again;
   `by_name` maps the decoded names, as two keys may decode to one (invalid
   UTF-8, or a dot moved between module and qualname). */
static Py_ssize_t
merged_index(PyObject *by_key, PyObject *by_name, PyObject *names, PyObject *key)
{
    PyObject *found = PyDict_GetItemWithError(by_key, key);  /* borrowed */
    if (found != NULL) {
        return PyLong_AsSsize_t(found);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t index = -1;
    PyObject *position = NULL;
    PyObject *name = key_name(key);
    if (name == NULL) {
        return -1;
    }
    found = PyDict_GetItemWithError(by_name, name);
    if (found != NULL) {
        position = Py_NewRef(found);
    }
    else if (PyErr_Occurred() || (position = PyLong_FromSsize_t(PyList_GET_SIZE(names))) == NULL
             || PyDict_SetItem(by_name, name, position) < 0 || PyList_Append(names, name) < 0) {
        goto done;
    }
    if (PyDict_SetItem(by_key, key, position) == 0) {
        index = PyLong_AsSsize_t(position);
    }
done:
    Py_DECREF(name);
    Py_XDECREF(position);
    return index;
}

/* Add the packed record `f` into `row` and its `counts`; -1 if a sum needs
   more than 64 bits. */
static int
merge_packed(struct merged_row *row, uint64_t *counts, const uint64_t *f, Py_ssize_t n_cuts, int alive)
{
    /* f: flags, firstlineno, sample, calls, completed, errors, timed, total_ns, min_ns, max_ns, counts */
    uint64_t calls = f[3], completed = f[4], errors = f[5], timed = f[6], total_ns = f[7];
    if (add_u64(&row->calls, calls) < 0 || add_u64(&row->errors, errors) < 0 || add_u64(&row->total_ns, total_ns) < 0
        || (alive && calls > completed && add_u64(&row->active, calls - completed) < 0)) {
        return -1;
    }
    if (timed) {
        row->min_ns = row->timed && row->min_ns < f[8] ? row->min_ns : f[8];
        row->max_ns = row->timed && row->max_ns > f[9] ? row->max_ns : f[9];
        row->timed = 1;
    }
    for (Py_ssize_t j = 0; j < n_cuts; j++) {
        if (add_u64(&counts[j], f[FOLD_FIELDS + j]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The dict merge_records returns, of its rows. Returns a new reference. */
static PyObject *
merged_dict(PyObject *names, const struct merged_row *rows, const uint64_t *counts, Py_ssize_t n_cuts)
{
    PyObject *result = PyDict_New();
    for (Py_ssize_t k = 0; result != NULL && k < PyList_GET_SIZE(names); k++) {
        const struct merged_row *row = &rows[k];
        PyObject *spans = PyList_New(n_cuts);
        for (Py_ssize_t j = 0; spans != NULL && j < n_cuts; j++) {
            PyObject *n = PyLong_FromUnsignedLongLong(counts[k * n_cuts + j]);
            if (n == NULL) {
                Py_CLEAR(spans);
                break;
            }
            PyList_SET_ITEM(spans, j, n);
        }
        PyObject *value = spans == NULL ? NULL : Py_BuildValue(
            "[KKKKNKK]", (unsigned long long)row->calls, (unsigned long long)row->errors,
            (unsigned long long)row->total_ns, (unsigned long long)row->active, spans,
            (unsigned long long)(row->timed ? row->min_ns : 0), (unsigned long long)(row->timed ? row->max_ns : 0));
        if (value == NULL || PyDict_SetItem(result, PyList_GET_ITEM(names, k), value) < 0) {
            Py_XDECREF(value);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(value);
    }
    return result;
}

/* merge_records(sources, n_cuts) -> dict or None: see the docstring in
   _ext.c's method table. Returns a new reference. */
PyObject *
fp_merge_records(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "merge_records(sources, n_cuts) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t n_cuts = PyLong_AsSsize_t(args[1]);
    if (n_cuts == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n_cuts < 1 || n_cuts > FPT_HIST_BUCKETS) {
        PyErr_Format(PyExc_ValueError, "merge_records: n_cuts %zd is not 1 to %d", n_cuts, FPT_HIST_BUCKETS);
        return NULL;
    }
    PyObject *sources = PySequence_Fast(args[0], "merge_records: sources must be a sequence");
    if (sources == NULL) {
        return NULL;
    }
    PyObject *by_key = PyDict_New(), *by_name = PyDict_New(), *names = PyList_New(0), *result = NULL;
    struct merged_row *rows = NULL;
    uint64_t *counts = NULL;
    Py_ssize_t capacity = 0, n_rows = 0, width = FOLD_FIELDS + n_cuts;
    int overflow = 0;
    if (by_key == NULL || by_name == NULL || names == NULL) {
        goto done;
    }
    for (Py_ssize_t s = 0; s < PySequence_Fast_GET_SIZE(sources) && !overflow; s++) {
        PyObject *keys, *packed, *alive_obj;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sources, s), "O!O!O;merge_records: each source is "
                              "(keys, packed, alive)", &PyList_Type, &keys, &PyBytes_Type, &packed, &alive_obj)) {
            goto done;
        }
        int alive = PyObject_IsTrue(alive_obj);
        if (alive < 0) {
            goto done;
        }
        Py_ssize_t n_keys = PyList_GET_SIZE(keys);
        if (PyBytes_GET_SIZE(packed) != n_keys * width * (Py_ssize_t)sizeof(uint64_t)) {
            PyErr_Format(PyExc_ValueError, "merge_records: %zd packed bytes for %zd keys of %zd counts",
                         PyBytes_GET_SIZE(packed), n_keys, n_cuts);
            goto done;
        }
        const char *fields = PyBytes_AS_STRING(packed);
        for (Py_ssize_t i = 0; i < n_keys && !overflow; i++) {
            PyObject *key = PyList_GET_ITEM(keys, i);
            if (!PyBytes_Check(key)) {
                PyErr_SetString(PyExc_TypeError, "merge_records: keys must be bytes");
                goto done;
            }
            Py_ssize_t k = merged_index(by_key, by_name, names, key);
            if (k < 0) {
                goto done;
            }
            if (k == n_rows) {  /* a new name: its row, zeroed */
                if (n_rows == capacity) {
                    Py_ssize_t grown = capacity ? 2 * capacity : 256;
                    struct merged_row *more_rows = PyMem_Realloc(rows, (size_t)grown * sizeof *rows);
                    if (more_rows != NULL) {
                        rows = more_rows;
                    }
                    uint64_t *more_counts = PyMem_Realloc(counts, (size_t)(grown * n_cuts) * sizeof *counts);
                    if (more_counts != NULL) {
                        counts = more_counts;
                    }
                    if (more_rows == NULL || more_counts == NULL) {
                        PyErr_NoMemory();
                        goto done;
                    }
                    capacity = grown;
                }
                memset(&rows[k], 0, sizeof rows[k]);
                memset(&counts[k * n_cuts], 0, (size_t)n_cuts * sizeof *counts);
                n_rows++;
            }
            uint64_t f[FOLD_FIELDS + FPT_HIST_BUCKETS];
            memcpy(f, fields + i * width * (Py_ssize_t)sizeof *f, (size_t)width * sizeof *f);
            overflow = merge_packed(&rows[k], &counts[k * n_cuts], f, n_cuts, alive) < 0;
        }
    }
    result = overflow ? Py_NewRef(Py_None) : merged_dict(names, rows, counts, n_cuts);
done:
    PyMem_Free(rows);
    PyMem_Free(counts);
    Py_XDECREF(by_key);
    Py_XDECREF(by_name);
    Py_XDECREF(names);
    Py_DECREF(sources);
    return result;
}

/* _testing_hammer_slots(buffer, count, rounds): for the torn-read test,
   rewrite the first `count` record slots of a file mapped in `buffer`
   `rounds` times each, under their seqlocks, as the writer does, with the
   GIL released. Each write keeps completed == calls == the sum of hist, so
   that a torn copy shows. */
PyObject *
fp_testing_hammer_slots(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t count, rounds;
    if (nargs != 3 || (count = PyLong_AsSsize_t(args[1])) < 0 || (rounds = PyLong_AsSsize_t(args[2])) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "_testing_hammer_slots(buffer, count, rounds)");
        }
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (view.len < (Py_ssize_t)(FPT_HEADER_SIZE + (size_t)count * FPT_SLOT_SIZE)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "_testing_hammer_slots: the buffer is too small");
        return NULL;
    }
    unsigned char *base = (unsigned char *)view.buf + FPT_HEADER_SIZE;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t n = 0; n < rounds; n++) {
        for (Py_ssize_t i = 0; i < count; i++) {
            struct fpt_record *r = (struct fpt_record *)(base + (size_t)i * FPT_SLOT_SIZE);
            uint64_t seq = r->seq;
            FPT_STORE_RELAXED(&r->seq, seq + 1);
            FPT_FENCE_RELEASE();
            uint64_t v = r->calls + 1;
            r->calls = v;
            r->completed = v;
            r->timed = v;
            r->hist[(size_t)(v % FPT_HIST_BUCKETS)]++;
            FPT_STORE_RELEASE(&r->seq, seq + 2);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* telemetry_layout() -> dict: the offsets and sizes of _telemetry.h as this
   compiler laid them out, which the tests compare with cffi's and with the
   Python reader's. Returns a new reference. */
PyObject *
fp_telemetry_layout(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
#define FPT_FIELD(type, field) #type "." #field, (Py_ssize_t)offsetof(struct type, field)
    return Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,"
        "s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n}",
        "sizeof.fpt_header", (Py_ssize_t)sizeof(struct fpt_header),
        "sizeof.fpt_record", (Py_ssize_t)sizeof(struct fpt_record),
        "sizeof.fpt_strings", (Py_ssize_t)sizeof(struct fpt_strings),
        FPT_FIELD(fpt_header, magic), FPT_FIELD(fpt_header, major), FPT_FIELD(fpt_header, minor),
        FPT_FIELD(fpt_header, header_size), FPT_FIELD(fpt_header, slot_size), FPT_FIELD(fpt_header, hist_buckets),
        FPT_FIELD(fpt_header, hist_layout_crc), FPT_FIELD(fpt_header, endian), FPT_FIELD(fpt_header, pid),
        FPT_FIELD(fpt_header, start_ticks), FPT_FIELD(fpt_header, created_unix_ns),
        FPT_FIELD(fpt_header, heartbeat_unix_ns), FPT_FIELD(fpt_header, generation), FPT_FIELD(fpt_header, state),
        FPT_FIELD(fpt_header, n_slots), FPT_FIELD(fpt_header, interval_ms), FPT_FIELD(fpt_header, flags),
        FPT_FIELD(fpt_header, service), FPT_FIELD(fpt_header, python), FPT_FIELD(fpt_header, fastpatch_version),
        FPT_FIELD(fpt_record, seq), FPT_FIELD(fpt_record, kind), FPT_FIELD(fpt_record, flags),
        FPT_FIELD(fpt_record, firstlineno), FPT_FIELD(fpt_record, name_slot), FPT_FIELD(fpt_record, name_off),
        FPT_FIELD(fpt_record, sample), FPT_FIELD(fpt_record, calls), FPT_FIELD(fpt_record, completed),
        FPT_FIELD(fpt_record, errors), FPT_FIELD(fpt_record, timed), FPT_FIELD(fpt_record, total_ns),
        FPT_FIELD(fpt_record, min_ns), FPT_FIELD(fpt_record, max_ns), FPT_FIELD(fpt_record, hist),
        FPT_FIELD(fpt_strings, seq), FPT_FIELD(fpt_strings, kind), FPT_FIELD(fpt_strings, used),
        FPT_FIELD(fpt_strings, data), "sizeof.fpt_absorbed", (Py_ssize_t)sizeof(struct fpt_absorbed),
        FPT_FIELD(fpt_absorbed, kind), FPT_FIELD(fpt_absorbed, count), FPT_FIELD(fpt_absorbed, entries));
#undef FPT_FIELD
}

/* filesystem_type(fd) -> int: statfs's f_type of the filesystem that holds
   fd (Linux), or -1 where the system has no such number. The writer warns
   when a telemetry directory is not on tmpfs or ramfs, where every snapshot
   would dirty pages that the kernel writes back to a disk. OSError if fstatfs
   fails. Returns a new reference. */
PyObject *
fp_filesystem_type(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0) {
        return NULL;
    }
#if defined(__linux__)
    struct statfs st;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fstatfs(fd, &st);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* f_type is a signed word on some ABIs: the magic numbers are 32-bit. */
    return PyLong_FromUnsignedLong((unsigned long)st.f_type & 0xFFFFFFFFul);
#else
    return PyLong_FromLong(-1);
#endif
}

#if FP_HAVE_TELEMETRY_WRITER

/* ===================================================================== */
/* The writer's state (process-wide)                                     */
/* ===================================================================== */

/* What the writer keeps per record, beside the file. */
typedef struct {
    /* What earlier epochs of the probe counted (added by reset(), see
       fp_telemetry_before_reset): the record is these plus the probe's
       counters, so that it never decreases. */
    uint64_t calls, completed, errors, timed, total_ns, min_ns, max_ns;
    uint64_t *hist;               /* NULL until a reset happens while the record exists */
    /* The probe as the last snapshot wrote it: unchanged probes are skipped. */
    uint64_t seen_calls, seen_completed;
    uint32_t seen_epoch, seen_sample;
    uint64_t written_total_ns;    /* TSC totals follow a refined ratio: never publish less */
    /* The record's seq word as last stored: the writer is its only writer,
       and reading it back from the mapping would wait for a cache miss. */
    uint64_t seq;
    int written;
} fpt_stage;

static struct {
    int armed;
    PyObject *module;             /* strong while armed: its called list is walked */
    PyObject *opener;             /* opener(size) -> (fd, start_ticks) or None */
    PyObject *namer;              /* namer(probes) -> [(module, qualname, filename, firstlineno)] */
    uint32_t interval_ms;
    uint32_t layout_crc;
    char service[64], python[16], version[16];
    /* the file */
    int fd;
    unsigned char *map;
    size_t map_size;
    uint32_t n_slots, capacity;   /* slots written, slots the file holds */
    uint32_t strings_slot;        /* the strings slot being filled, or UINT32_MAX */
    uint32_t file_id;             /* bumped for each file; never 0 (see fp_state.called_records) */
    int open_failed;              /* the opener said no: no file, no retries */
    int full;                     /* the file could not grow: new definitions are not published */
    fpt_stage *stages;            /* per slot */
    uint32_t stages_capacity;
    uint64_t generation;
    /* the thread */
    pthread_t thread;
    int running;                  /* created and not joined */
    int stop;                     /* under mutex */
    int resume_after_fork;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
} W = {.fd = -1, .strings_slot = UINT32_MAX, .file_id = 1, .mutex = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER};

int fp_telemetry_armed = 0;

static uint64_t
unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline struct fpt_header *
file_header(void)
{
    return (struct fpt_header *)W.map;
}

static inline unsigned char *
file_slot(uint32_t i)
{
    return W.map + FPT_HEADER_SIZE + (size_t)i * FPT_SLOT_SIZE;
}

static size_t
file_size_for(uint32_t slots)
{
    return FPT_HEADER_SIZE + (size_t)slots * FPT_SLOT_SIZE;
}

/* Forget the file without writing to it: the mapping, the descriptor (and
   with it this process's share of the flock), every record. Async-signal-
   safe, for the pthread_atfork child handler. */
static void
file_drop(void)
{
    if (W.map != NULL) {
        munmap(W.map, W.map_size);
        W.map = NULL;
        W.map_size = 0;
    }
    if (W.fd >= 0) {
        close(W.fd);
        W.fd = -1;
    }
    W.n_slots = W.capacity = 0;
    W.strings_slot = UINT32_MAX;
    W.file_id = W.file_id == UINT32_MAX ? 1 : W.file_id + 1;
    W.open_failed = W.full = 0;
    W.generation = 0;
}

static void
stages_free(void)
{
    for (uint32_t i = 0; i < W.stages_capacity; i++) {
        PyMem_RawFree(W.stages[i].hist);
    }
    PyMem_RawFree(W.stages);
    W.stages = NULL;
    W.stages_capacity = 0;
}

/* Map `size` bytes of the file. 0, or -1 with errno set. */
static int
file_map(size_t size)
{
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, W.fd, 0);
    if (map == MAP_FAILED) {
        return -1;
    }
    if (W.map != NULL) {
        munmap(W.map, W.map_size);
    }
    W.map = map;
    W.map_size = size;
    return 0;
}

/* Make room for one more slot: grow the file to twice its slots, reserving
   the blocks (posix_fallocate) so that a full filesystem fails here, not as
   SIGBUS at a later store. 0, or -1 (said once, on stderr) when it cannot. */
static int
file_reserve_slot(void)
{
    if (W.n_slots < W.capacity) {
        return 0;
    }
    if (W.full) {
        return -1;
    }
    uint32_t capacity = W.capacity ? 2 * W.capacity : 64;
    size_t size = file_size_for(capacity);
    int err = posix_fallocate(W.fd, 0, (off_t)size);
    if (err == 0 && file_map(size) < 0) {
        err = errno;
    }
    if (err != 0) {
        W.full = 1;
        PySys_WriteStderr("fastpatch: the telemetry file cannot grow to %zu bytes (%s): functions called from "
                          "now on are not published\n", size, strerror(err));
        return -1;
    }
    W.capacity = capacity;
    return 0;
}

static fpt_stage *
stage_for(uint32_t slot)
{
    if (slot >= W.stages_capacity) {
        uint32_t capacity = W.stages_capacity ? W.stages_capacity : 64;
        while (capacity <= slot) {
            capacity *= 2;
        }
        fpt_stage *grown = PyMem_RawRealloc(W.stages, capacity * sizeof(fpt_stage));
        if (grown == NULL) {
            return NULL;
        }
        memset(grown + W.stages_capacity, 0, (capacity - W.stages_capacity) * sizeof(fpt_stage));
        W.stages = grown;
        W.stages_capacity = capacity;
    }
    return &W.stages[slot];
}

/* Open the file through the opener and write its header. 0, or -1: no
   file (the opener said why), and no further attempts. With the GIL. */
static int
file_open(void)
{
    PyObject *got = PyObject_CallFunction(W.opener, "n", (Py_ssize_t)file_size_for(64));
    int fd = -1;
    unsigned long long start_ticks = 0;
    if (got == NULL) {
        PyErr_WriteUnraisable(W.opener);
    }
    else if (got != Py_None && !PyArg_ParseTuple(got, "iK", &fd, &start_ticks)) {
        PyErr_WriteUnraisable(W.opener);
        fd = -1;
    }
    Py_XDECREF(got);
    if (fd < 0) {
        W.open_failed = 1;
        return -1;
    }
    if (W.stages != NULL) {
        for (uint32_t i = 0; i < W.stages_capacity; i++) {
            PyMem_RawFree(W.stages[i].hist);
        }
        memset(W.stages, 0, W.stages_capacity * sizeof(fpt_stage));
    }
    W.fd = fd;
    W.capacity = 64;
    if (file_map(file_size_for(64)) < 0) {
        PySys_WriteStderr("fastpatch: cannot map the telemetry file (%s): no live telemetry\n", strerror(errno));
        close(fd);
        W.fd = -1;
        W.open_failed = 1;
        return -1;
    }
    struct fpt_header *h = file_header();
    memset(W.map, 0, FPT_HEADER_SIZE);
    memcpy(h->magic, FPT_MAGIC, sizeof h->magic);
    h->major = FPT_MAJOR;
    h->minor = FPT_MINOR;
    h->header_size = FPT_HEADER_SIZE;
    h->slot_size = FPT_SLOT_SIZE;
    h->hist_buckets = FPT_HIST_BUCKETS;
    h->hist_layout_crc = W.layout_crc;
    h->endian = FPT_ENDIAN;
    h->pid = (uint64_t)getpid();
    h->start_ticks = start_ticks;
    h->created_unix_ns = unix_ns();
    h->interval_ms = W.interval_ms;
    memcpy(h->service, W.service, sizeof h->service);
    memcpy(h->python, W.python, sizeof h->python);
    memcpy(h->fastpatch_version, W.version, sizeof h->fastpatch_version);
    W.n_slots = 0;
    W.strings_slot = UINT32_MAX;
    W.generation = 0;
    W.full = 0;
    /* LIVE last: a reader takes a file in INIT for one being made. */
    FPT_FENCE_RELEASE();
    __atomic_store_n(&h->state, FPT_STATE_LIVE, __ATOMIC_RELEASE);
    return 0;
}

/* ===================================================================== */
/* Snapshots                                                             */
/* ===================================================================== */

/* Append `len` bytes of names to a strings slot (a new one when the current
   one has no room). Sets *slot and *off. 0, or -1 when the file is full. */
static int
strings_add(const char *names, uint32_t len, uint32_t *slot, uint32_t *off)
{
    struct fpt_strings *s = NULL;
    if (W.strings_slot != UINT32_MAX) {
        s = (struct fpt_strings *)file_slot(W.strings_slot);
        if (s->used + len > FPT_STRINGS_DATA) {
            s = NULL;
        }
    }
    if (s == NULL) {
        if (file_reserve_slot() < 0) {
            return -1;
        }
        W.strings_slot = W.n_slots++;
        s = (struct fpt_strings *)file_slot(W.strings_slot);
        memset(s, 0, FPT_SLOT_SIZE);
        s->kind = FPT_KIND_STRINGS;
    }
    /* A published slot changes under its seqlock (readers may be copying it). */
    uint64_t seq = s->seq;
    FPT_STORE_RELAXED(&s->seq, seq + 1);
    FPT_FENCE_RELEASE();
    memcpy(s->data + s->used, names, len);
    *slot = W.strings_slot;
    *off = s->used;
    s->used += len;
    FPT_STORE_RELEASE(&s->seq, seq + 2);
    return 0;
}

/* Encode "module\0qualname\0filename\0" into buf (FPT_STRINGS_DATA bytes),
   cutting the filename, then the qualname, to fit. Returns the length, or 0
   on error (set). */
static uint32_t
names_encode(PyObject *names, char *buf, int *firstlineno)
{
    PyObject *module, *qualname, *filename;
    if (!PyArg_ParseTuple(names, "UUUi", &module, &qualname, &filename, firstlineno)) {
        return 0;
    }
    Py_ssize_t lens[3];
    const char *parts[3];
    PyObject *objs[3] = {module, qualname, filename};
    for (int i = 0; i < 3; i++) {
        parts[i] = PyUnicode_AsUTF8AndSize(objs[i], &lens[i]);
        if (parts[i] == NULL) {
            return 0;
        }
    }
    Py_ssize_t room = FPT_STRINGS_DATA - 3;
    lens[0] = lens[0] < room / 4 ? lens[0] : room / 4;
    lens[1] = lens[1] < room / 2 ? lens[1] : room / 2;
    lens[2] = lens[2] < room - lens[0] - lens[1] ? lens[2] : room - lens[0] - lens[1];
    uint32_t at = 0;
    for (int i = 0; i < 3; i++) {
        /* a name with a NUL in it would shift the others: cut it there */
        const char *nul = memchr(parts[i], 0, (size_t)lens[i]);
        size_t n = nul != NULL ? (size_t)(nul - parts[i]) : (size_t)lens[i];
        memcpy(buf + at, parts[i], n);
        at += (uint32_t)n;
        buf[at++] = '\0';
    }
    return at;
}

/* Give each of `fresh` (probes with no record in this file) a record, named
   by the namer. With the GIL; the list keeps them alive while Python runs. */
static void
records_add(fp_state *st, PyObject *fresh)
{
    PyObject *names = PyObject_CallOneArg(W.namer, fresh);
    if (names == NULL || !PyList_Check(names) || PyList_GET_SIZE(names) != PyList_GET_SIZE(fresh)) {
        if (names == NULL) {
            PyErr_WriteUnraisable(W.namer);
        }
        Py_XDECREF(names);
        return;
    }
    char buf[FPT_STRINGS_DATA];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fresh); i++) {
        ProbeObject *p = (ProbeObject *)PyList_GET_ITEM(fresh, i);
        int firstlineno = 0;
        uint32_t len = names_encode(PyList_GET_ITEM(names, i), buf, &firstlineno);
        if (len == 0) {
            PyErr_WriteUnraisable(W.namer);
            continue;
        }
        uint32_t name_slot, name_off;
        if (strings_add(buf, len, &name_slot, &name_off) < 0 || file_reserve_slot() < 0) {
            break;
        }
        uint32_t slot = W.n_slots;
        fpt_stage *stage = stage_for(slot);
        if (stage == NULL) {
            break;
        }
        W.n_slots++;
        memset(stage, 0, sizeof *stage);
        stage->min_ns = UINT64_MAX;
        struct fpt_record *r = (struct fpt_record *)file_slot(slot);
        memset(r, 0, FPT_SLOT_SIZE);
        r->kind = FPT_KIND_RECORD;
        r->flags = p->tsc ? FPT_RECORD_TSC : 0;
        r->firstlineno = firstlineno > 0 ? (uint32_t)firstlineno : 0;
        r->name_slot = name_slot;
        r->name_off = name_off;
        if (p->called_index != FP_NOT_CALLED) {
            st->called_records[p->called_index] = (uint64_t)W.file_id << 32 | (uint64_t)(slot + 1);
        }
    }
    Py_DECREF(names);
}

/* The record slot of a called probe in the current file: 1 and *slot, or 0
   when it has none there (new to this file, or to the process). */
static inline int
record_of(fp_state *st, const ProbeObject *p, uint32_t *slot)
{
    uint64_t v = st->called_records[p->called_index];
    if ((uint32_t)(v >> 32) != W.file_id || (uint32_t)v == 0) {
        return 0;
    }
    *slot = (uint32_t)v - 1;
    return 1;
}

static inline uint64_t
ticks_ns(const ProbeObject *p, uint64_t ticks, double ratio)
{
    return p->tsc ? (uint64_t)((double)ticks * ratio + 0.5) : ticks;
}

/* The bucket a duration of `ticks` of the probe's clock went to when it was
   folded in, at the lowest (hi 0) or the highest (hi 1) of the ratios the
   process used (see fp_tsc_mult_lo): fp_bucket_of and the conversion both
   only grow with their inputs. */
static inline unsigned
bucket_bound(const ProbeObject *p, uint64_t ticks, int hi)
{
#if FP_HAVE_TSC
    if (p->tsc) {
        return fp_bucket_of(fp_mul_shift32(ticks, hi ? fp_tsc_mult_hi : fp_tsc_mult_lo));
    }
#else
    (void)hi;
#endif
    return fp_bucket_of(ticks);
}

/* The buckets [*first, *end) of a flushed probe's histogram outside of which
   every count is 0; empty while nothing timed was folded in this epoch.
   Every duration folded into the histogram also lowers min_ticks or raises
   max_ticks to itself (probe_fold_duration, probe_fold_weighted): untimed
   and count-only activations touch neither, so the range only covers what
   was timed, which is all the histogram holds. */
static inline void
hist_range(const ProbeObject *p, unsigned *first, unsigned *end)
{
    if (p->min_ticks > p->max_ticks) {  /* cleared: UINT64_MAX and 0 */
        *first = *end = 0;
    }
    else {
        *first = bucket_bound(p, p->min_ticks, 0);
        *end = bucket_bound(p, p->max_ticks, 1) + 1;
    }
#ifdef Py_DEBUG
    for (unsigned i = 0; i < FP_HIST_BUCKETS; i++) {
        assert(p->hist[i] == 0 || (*first <= i && i < *end));
    }
#endif
}

/* Write a probe's counters (its flushed counters plus its stage's earlier
   epochs) into its record, under the record's seqlock.

   Only the histogram's non-zero range is copied (hist_range), except at the
   record's first write and the first in each epoch, which copy all of it:
   most of the snapshot's time went into copying whole histograms. The
   record stays exact, bucket by bucket: within an epoch, the stage's
   histogram does not change and the probe's counts only grow, so a bucket
   outside the range is 0 in the probe now and was 0 at every earlier write
   of the epoch, and the record still holds what the epoch's first write put
   there, the stage's count, plus 0. */
static void
record_write(ProbeObject *p, uint32_t slot, fpt_stage *stage, double ratio)
{
    struct fpt_record *r = (struct fpt_record *)file_slot(slot);
    uint64_t timed = p->completed - p->untimed;
    uint64_t total = stage->total_ns + ticks_ns(p, p->total_ticks, ratio);
    if (total < stage->written_total_ns) {
        total = stage->written_total_ns;
    }
    uint64_t lo = stage->min_ns, hi = stage->max_ns;
    if (timed) {
        uint64_t plo = ticks_ns(p, p->min_ticks, ratio), phi = ticks_ns(p, p->max_ticks, ratio);
        lo = plo < lo ? plo : lo;
        hi = phi > hi ? phi : hi;
    }
    uint64_t seq = stage->seq;
    FPT_STORE_RELAXED(&r->seq, seq + 1);
    FPT_FENCE_RELEASE();
    r->sample = p->sample;
    r->calls = stage->calls + p->calls;
    r->completed = stage->completed + p->completed;
    r->errors = stage->errors + p->errors;
    r->timed = stage->timed + timed;
    r->total_ns = total;
    r->min_ns = lo == UINT64_MAX ? 0 : lo;
    r->max_ns = hi;
    unsigned first = 0, end = FP_HIST_BUCKETS;
    if (stage->written && stage->seen_epoch == p->epoch) {
        hist_range(p, &first, &end);
    }
    if (stage->hist != NULL) {
        for (unsigned i = first; i < end; i++) {
            r->hist[i] = stage->hist[i] + p->hist[i];
        }
    }
    else if (first < end) {
        memcpy(r->hist + first, p->hist + first, (end - first) * sizeof(uint64_t));
    }
    FPT_STORE_RELEASE(&r->seq, seq + 2);
    stage->seq = seq + 2;
    stage->written_total_ns = total;
    stage->seen_calls = p->calls;
    stage->seen_completed = p->completed;
    stage->seen_epoch = p->epoch;
    stage->seen_sample = p->sample;
    stage->written = 1;
}

/* Write a listed probe's record if its counters changed since the record's
   last write. *ratio is 0.0 until a TSC probe needs it. */
static inline void
record_update(ProbeObject *p, uint32_t slot, double *ratio)
{
    fpt_stage *stage = &W.stages[slot];
    if (p->hist == NULL
        || (stage->written && stage->seen_calls == p->calls && stage->seen_completed == p->completed
            && stage->seen_epoch == p->epoch && stage->seen_sample == p->sample)) {
        return;
    }
#if FP_HAVE_TSC
    if (p->tsc && *ratio == 0.0) {
        *ratio = fp_tsc_ns_per_tick();
    }
#endif
    fp_probe_flush(p);
    record_write(p, slot, stage, *ratio);
}

/* One snapshot: open the file if needed, give new probes records, write the
   changed ones, then the heartbeat. With the GIL. */
static void
snapshot_write_unguarded(void);

/* The opener and the namer are Python and may let another thread run (the
   writer's, or one asking for a snapshot): one snapshot at a time. */
static int snapshot_busy = 0;

static void
snapshot_write(void)
{
    while (snapshot_busy) {
        Py_BEGIN_ALLOW_THREADS
        usleep(100);
        Py_END_ALLOW_THREADS
    }
    snapshot_busy = 1;
    snapshot_write_unguarded();
    snapshot_busy = 0;
}

static void
snapshot_write_unguarded(void)
{
    if (!W.armed || (W.fd < 0 && (W.open_failed || file_open() < 0))) {
        return;
    }
    fp_state *st = fp_state_of(W.module);
    PyObject *fresh = NULL;  /* the probes with no record yet */
    int listing = 1;         /* until the fresh list cannot be made or grow */
    double ratio = 0.0;      /* ns per TSC tick, measured at the first TSC probe written */
    /* One pass over the called list: a second would miss the cache on
       every probe again. */
    uint32_t i = 0;
    while (i < st->n_called) {
        ProbeObject *p = st->called[i];
        uint32_t slot;
        if (record_of(st, p, &slot)) {
            record_update(p, slot, &ratio);
        }
        else if (fresh == NULL && listing) {
            /* PyList_New may collect, which may free probes and move others
               in the list: this place is looked at again after it. */
            fresh = PyList_New(0);
            listing = fresh != NULL;
            continue;
        }
        else if (listing && PyList_Append(fresh, (PyObject *)p) < 0) {
            listing = 0;
        }
        i++;
    }
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(NULL);
    }
    uint32_t published = W.n_slots;
    if (fresh != NULL) {
        records_add(st, fresh);
        /* The namer ran Python code: the list, not the called list, is what
           still holds these probes. */
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(fresh); k++) {
            ProbeObject *p = (ProbeObject *)PyList_GET_ITEM(fresh, k);
            uint32_t slot;
            if (p->called_index != FP_NOT_CALLED && record_of(st, p, &slot)) {
                record_update(p, slot, &ratio);
            }
        }
        Py_DECREF(fresh);
    }
    struct fpt_header *h = file_header();
    if (W.n_slots != published) {
        FPT_FENCE_RELEASE();
        __atomic_store_n(&h->n_slots, W.n_slots, __ATOMIC_RELEASE);
    }
    W.generation++;
    FPT_STORE_RELAXED(&h->generation, W.generation);
    FPT_STORE_RELEASE(&h->heartbeat_unix_ns, unix_ns());
}

void
fp_telemetry_before_reset(ProbeObject *p)
{
    uint32_t slot;
    if (W.fd < 0 || W.module == NULL || p->called_index == FP_NOT_CALLED || p->hist == NULL) {
        return;
    }
    fp_state *st = fp_state_of(W.module);
    if ((fp_state *)PyType_GetModuleState(Py_TYPE(p)) != st || !record_of(st, p, &slot)) {
        return;
    }
    fpt_stage *stage = &W.stages[slot];
    if (stage->hist == NULL) {
        stage->hist = PyMem_RawCalloc(FP_HIST_BUCKETS, sizeof(uint64_t));
        if (stage->hist == NULL) {
            return;  /* the record then shows the new epoch's counts only: never a crash */
        }
    }
    fp_probe_flush(p);
    double ratio = 1.0;
#if FP_HAVE_TSC
    if (p->tsc) {
        ratio = fp_tsc_ns_per_tick();
    }
#endif
    uint64_t timed = p->completed - p->untimed;
    stage->calls += p->completed;  /* those in flight stay in the probe's calls */
    stage->completed += p->completed;
    stage->errors += p->errors;
    stage->timed += timed;
    stage->total_ns += ticks_ns(p, p->total_ticks, ratio);
    if (timed) {
        uint64_t lo = ticks_ns(p, p->min_ticks, ratio), hi = ticks_ns(p, p->max_ticks, ratio);
        stage->min_ns = lo < stage->min_ns ? lo : stage->min_ns;
        stage->max_ns = hi > stage->max_ns ? hi : stage->max_ns;
    }
    for (int i = 0; i < FP_HIST_BUCKETS; i++) {
        stage->hist[i] += p->hist[i];
    }
    stage->written = 0;
}

/* ===================================================================== */
/* The thread                                                            */
/* ===================================================================== */

static int
interpreter_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

static void *
writer_main(void *Py_UNUSED(arg))
{
    for (;;) {
        if (interpreter_finalizing()) {
            break;
        }
        PyGILState_STATE gil = PyGILState_Ensure();
        int stop = W.stop || !W.armed;
        if (!stop) {
            snapshot_write();
            stop = W.open_failed;
        }
        PyGILState_Release(gil);
        if (stop) {
            break;
        }
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        uint64_t ns = (uint64_t)deadline.tv_nsec + (uint64_t)W.interval_ms * 1000000ull;
        deadline.tv_sec += (time_t)(ns / 1000000000ull);
        deadline.tv_nsec = (long)(ns % 1000000000ull);
        pthread_mutex_lock(&W.mutex);
        while (!W.stop) {
            if (pthread_cond_timedwait(&W.wake, &W.mutex, &deadline) == ETIMEDOUT) {
                break;
            }
        }
        stop = W.stop;
        pthread_mutex_unlock(&W.mutex);
        if (stop) {
            break;
        }
    }
    return NULL;
}

static void
thread_start(void)
{
    if (W.running || !W.armed || W.open_failed) {
        return;
    }
    W.stop = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&W.thread, &attr, writer_main, NULL) == 0) {
        W.running = 1;
    }
    pthread_attr_destroy(&attr);
}

/* Stop and join the thread, with the GIL released while joining (the
   thread may be waiting for it). With the GIL. */
static void
thread_join(void)
{
    if (!W.running) {
        return;
    }
    W.running = 0;  /* before the GIL is released: nobody else joins it */
    pthread_t thread = W.thread;
    pthread_mutex_lock(&W.mutex);
    W.stop = 1;
    pthread_cond_signal(&W.wake);
    pthread_mutex_unlock(&W.mutex);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(thread, NULL);
    Py_END_ALLOW_THREADS
    W.stop = 0;
}

void
fp_telemetry_first_call(void)
{
    thread_start();
}

static void
atfork_child(void)
{
    snapshot_busy = 0;
    /* The thread does not exist here; the parent's file is the parent's. */
    W.running = 0;
    W.stop = 0;
    W.resume_after_fork = 0;
    pthread_mutex_init(&W.mutex, NULL);
    pthread_cond_init(&W.wake, NULL);
    file_drop();
}

static void
disarm(void)
{
    W.armed = fp_telemetry_armed = 0;
    Py_CLEAR(W.opener);
    Py_CLEAR(W.namer);
    Py_CLEAR(W.module);
}

/* ===================================================================== */
/* Module functions                                                      */
/* ===================================================================== */

static void
copy_text(char *dst, size_t size, PyObject *text)
{
    Py_ssize_t len = 0;
    const char *s = PyUnicode_AsUTF8AndSize(text, &len);
    memset(dst, 0, size);
    if (s != NULL) {
        memcpy(dst, s, (size_t)len < size - 1 ? (size_t)len : size - 1);
    }
}

/* telemetry_arm(opener, namer, interval_ms, layout_crc, service, python,
   version): arm the writer (see the top of this file). */
PyObject *
fp_telemetry_arm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static int atfork_registered = 0;
    if (nargs != 7 || !PyCallable_Check(args[0]) || !PyCallable_Check(args[1]) || !PyLong_Check(args[2])
        || !PyLong_Check(args[3]) || !PyUnicode_Check(args[4]) || !PyUnicode_Check(args[5])
        || !PyUnicode_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "telemetry_arm(opener, namer, interval_ms: int, layout_crc: int, "
                                         "service: str, python: str, version: str)");
        return NULL;
    }
    unsigned long interval = PyLong_AsUnsignedLong(args[2]);
    unsigned long crc = PyLong_AsUnsignedLong(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (interval == 0 || interval > 86400000ul) {
        PyErr_Format(PyExc_ValueError, "telemetry interval of %lu ms is out of range", interval);
        return NULL;
    }
    if (W.armed) {
        PyErr_SetString(PyExc_RuntimeError, "live telemetry is already on in this process");
        return NULL;
    }
    if (!atfork_registered) {
        if (pthread_atfork(NULL, NULL, atfork_child) != 0) {
            PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
            return NULL;
        }
        atfork_registered = 1;
    }
    W.opener = Py_NewRef(args[0]);
    W.namer = Py_NewRef(args[1]);
    W.module = Py_NewRef(module);
    W.interval_ms = (uint32_t)interval;
    W.layout_crc = (uint32_t)crc;
    copy_text(W.service, sizeof W.service, args[4]);
    copy_text(W.python, sizeof W.python, args[5]);
    copy_text(W.version, sizeof W.version, args[6]);
    W.open_failed = 0;
    W.armed = fp_telemetry_armed = 1;
    if (fp_state_of(module)->n_called > 0) {
        thread_start();  /* something ran before: its counts are published now */
    }
    Py_RETURN_NONE;
}

/* telemetry_stop(final): stop the thread; with final true, write a last
   snapshot and mark the file exited. Close the file and disarm. */
PyObject *
fp_telemetry_stop(PyObject *Py_UNUSED(module), PyObject *final)
{
    int last = PyObject_IsTrue(final);
    if (last < 0) {
        return NULL;
    }
    thread_join();
    /* The thread may have been stopped before its first snapshot opened the file. */
    if (W.armed && last && (W.fd >= 0 || (!W.open_failed && fp_state_of(W.module)->n_called > 0))) {
        snapshot_write();
    }
    if (W.armed && last && W.fd >= 0) {
        __atomic_store_n(&file_header()->state, FPT_STATE_EXITED, __ATOMIC_RELEASE);
    }
    file_drop();
    stages_free();
    disarm();
    Py_RETURN_NONE;
}

/* telemetry_snapshot() -> bool: write a snapshot now (opening the file if
   needed), as the thread does each interval; False if there is no file. */
PyObject *
fp_telemetry_snapshot(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (!W.armed) {
        Py_RETURN_FALSE;
    }
    snapshot_write();
    return PyBool_FromLong(W.fd >= 0);
}

/* telemetry_pause(): before a fork, join the thread (resumed after it in the parent). */
PyObject *
fp_telemetry_pause(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    W.resume_after_fork = W.running;
    thread_join();
    Py_RETURN_NONE;
}

/* telemetry_resume(): after a fork, in the parent. */
PyObject *
fp_telemetry_resume(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (W.resume_after_fork) {
        W.resume_after_fork = 0;
        thread_start();
    }
    Py_RETURN_NONE;
}

/* telemetry_forked_child(): after a fork, in the child: what the
   pthread_atfork handler did, for a process that armed after its fork. */
PyObject *
fp_telemetry_forked_child(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (W.fd >= 0 || W.running) {
        atfork_child();
    }
    Py_RETURN_NONE;
}

/* telemetry_status() -> dict: armed, running, file_open, slots, generation. */
PyObject *
fp_telemetry_status(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{s:O,s:O,s:O,s:I,s:K}", "armed", W.armed ? Py_True : Py_False, "running",
                         W.running ? Py_True : Py_False, "file_open", W.fd >= 0 ? Py_True : Py_False, "slots",
                         (unsigned int)W.n_slots, "generation", (unsigned long long)W.generation);
}

#else /* no writer on this platform: readers only */

int fp_telemetry_armed = 0;

void
fp_telemetry_first_call(void)
{
}

void
fp_telemetry_before_reset(ProbeObject *Py_UNUSED(p))
{
}

static PyObject *
no_writer(void)
{
    PyErr_SetString(PyExc_OSError, "live telemetry needs a POSIX system: this platform has no writer");
    return NULL;
}

PyObject *
fp_telemetry_arm(PyObject *Py_UNUSED(module), PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    return no_writer();
}

/* With no writer there is nothing to stop, pause, resume or hand over to a
   forked child: each of those returns None, as the writer's own do. */
#define NO_WRITER_NOTHING_TO_DO(name)                                          \
    PyObject *name(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored)) \
    {                                                                          \
        Py_RETURN_NONE;                                                        \
    }

NO_WRITER_NOTHING_TO_DO(fp_telemetry_stop)
NO_WRITER_NOTHING_TO_DO(fp_telemetry_pause)
NO_WRITER_NOTHING_TO_DO(fp_telemetry_resume)
NO_WRITER_NOTHING_TO_DO(fp_telemetry_forked_child)

PyObject *
fp_telemetry_snapshot(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_FALSE;
}

PyObject *
fp_telemetry_status(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{s:O,s:O,s:O,s:I,s:K}", "armed", Py_False, "running", Py_False, "file_open", Py_False,
                         "slots", 0u, "generation", 0ull);
}

#endif /* FP_HAVE_TELEMETRY_WRITER */
