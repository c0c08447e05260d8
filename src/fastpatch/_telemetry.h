/*
 * _telemetry.h -- the layout of a live telemetry file (major version 1), the
 * single source of truth: the writer (_ext_telemetry.c) includes it, and a
 * test parses the part between the LAYOUT markers with cffi and holds the
 * Python reader (fastpatch/export/_files.py) to every offset and size.
 *
 * A file is one 4096-byte header page, then an array of fixed-size slots,
 * each either a record (one definition's counters) or a block of names;
 * the archive of a directory (archive.fpt, written by a sweep, never by the
 * C writer) also lists the processes it absorbed.
 * Everything is little-endian and naturally aligned. Readers refuse another
 * major version; a minor version only adds fields in what is zero or padding
 * now, and slot_size / header_size let an older reader skip them.
 *
 * Every slot starts with a seqlock word: even while the slot is stable,
 * odd while the writer changes it. A reader copies a slot only through
 * _ext.read_slots (acquire loads, bounded retries): plain loads of a live
 * mapping are not ordered on every CPU.
 *
 * Published numbers are finished nanoseconds, never clock ticks, and every
 * counter of a record never decreases: it holds all that the process
 * counted for the definition since it started, across reset() (epochs).
 *
 * The part between the markers is plain C that cffi's cdef accepts: no
 * preprocessor lines, array sizes as numbers.
 */
#ifndef FASTPATCH_TELEMETRY_H
#define FASTPATCH_TELEMETRY_H

#include <stddef.h>
#include <stdint.h>

/* LAYOUT BEGIN */
struct fpt_header {              /* at offset 0; zeros follow it up to header_size */
    char magic[8];               /* "FPTELEM\0" */
    uint16_t major;              /* 1 */
    uint16_t minor;              /* 0 */
    uint32_t header_size;        /* 4096: where slot 0 starts */
    uint32_t slot_size;          /* sizeof(struct fpt_record) */
    uint32_t hist_buckets;       /* 231 */
    uint32_t hist_layout_crc;    /* the CRC in fastpatch._stats.histogram_layout() */
    uint32_t endian;             /* 0x01020304, as the writer stored it */
    uint64_t pid;
    uint64_t start_ticks;        /* field 22 of /proc/<pid>/stat: with pid, unique per boot */
    uint64_t created_unix_ns;
    uint64_t heartbeat_unix_ns;  /* stored (release) after each snapshot */
    uint64_t generation;         /* snapshots written */
    uint32_t state;              /* 0 INIT, 1 LIVE, 2 EXITED, 3 ARCHIVE; INIT -> LIVE last at creation */
    uint32_t n_slots;            /* published slots, stored (release) after the slot is complete */
    uint32_t interval_ms;
    uint32_t flags;              /* none yet */
    char service[64];            /* NUL-terminated, truncated */
    char python[16];             /* "3.12.1" */
    char fastpatch_version[16];
    uint8_t reserved[72];        /* zeros: a later minor version may use them */
};

struct fpt_record {              /* slot kind 1: one definition */
    uint64_t seq;                /* even: stable; odd: being written */
    uint16_t kind;               /* 1 */
    uint16_t flags;              /* 1: the probe reads the TSC */
    uint32_t firstlineno;
    uint32_t name_slot;          /* the strings slot holding the names */
    uint32_t name_off;           /* "module\0qualname\0filename\0" at this offset of its data */
    uint32_t sample;             /* the sampling rate at the last snapshot (0 count-only, 1 exact, N) */
    uint32_t reserved;
    uint64_t calls;              /* activations started */
    uint64_t completed;          /* activations ended */
    uint64_t errors;             /* activations ended by an exception */
    uint64_t timed;              /* timed activations ended */
    uint64_t total_ns;           /* weighted (Horvitz-Thompson) total */
    uint64_t min_ns;             /* over timed activations; 0 while none */
    uint64_t max_ns;
    uint64_t hist[231];          /* weighted counts per bucket (fastpatch._stats.bucket_bounds) */
    uint8_t pad[48];             /* to 1984 = 31 * 64 bytes */
};

struct fpt_strings {             /* slot kind 2: packed NUL-terminated names */
    uint64_t seq;
    uint16_t kind;               /* 2 */
    uint16_t reserved;
    uint32_t used;               /* bytes of data in use */
    char data[1968];             /* to slot_size */
};

struct fpt_absorbed {            /* slot kind 3, archive files only: processes folded in */
    uint64_t seq;
    uint16_t kind;               /* 3 */
    uint16_t reserved;
    uint32_t count;              /* entries in use */
    uint64_t entries[246];       /* count triples (pid, start_ticks, absorbed_unix_ns) */
};
/* LAYOUT END */

#define FPT_MAGIC "FPTELEM"      /* and its NUL: 8 bytes */
#define FPT_MAJOR 1
#define FPT_MINOR 0
#define FPT_HEADER_SIZE 4096u
#define FPT_ENDIAN 0x01020304u
#define FPT_HIST_BUCKETS 231

#define FPT_STATE_INIT 0u
#define FPT_STATE_LIVE 1u
#define FPT_STATE_EXITED 2u
#define FPT_STATE_ARCHIVE 3u

#define FPT_KIND_RECORD 1u
#define FPT_KIND_STRINGS 2u
#define FPT_KIND_ABSORBED 3u

#define FPT_RECORD_TSC 1u

#define FPT_SLOT_SIZE ((uint32_t)sizeof(struct fpt_record))
#define FPT_STRINGS_DATA ((uint32_t)sizeof(((struct fpt_strings *)0)->data))

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#  define FPT_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#elif defined(__GNUC__) || defined(__clang__)
#  define FPT_STATIC_ASSERT(cond, msg) __extension__ _Static_assert(cond, msg)
#else
#  define FPT_STATIC_ASSERT(cond, msg) typedef char fpt_static_assert_##__LINE__[(cond) ? 1 : -1]
#endif

FPT_STATIC_ASSERT(sizeof(struct fpt_header) == 256, "header struct");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, major) == 8, "major");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, header_size) == 12, "header_size");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, endian) == 28, "endian");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, pid) == 32, "pid");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, heartbeat_unix_ns) == 56, "heartbeat");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, state) == 72, "state");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, n_slots) == 76, "n_slots");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, service) == 88, "service");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, python) == 152, "python");
FPT_STATIC_ASSERT(offsetof(struct fpt_header, fastpatch_version) == 168, "fastpatch_version");
FPT_STATIC_ASSERT(sizeof(struct fpt_record) == 1984, "record");
FPT_STATIC_ASSERT(sizeof(struct fpt_record) % 64 == 0, "records fill whole cache lines");
FPT_STATIC_ASSERT(offsetof(struct fpt_record, firstlineno) == 12, "firstlineno");
FPT_STATIC_ASSERT(offsetof(struct fpt_record, sample) == 24, "sample");
FPT_STATIC_ASSERT(offsetof(struct fpt_record, calls) == 32, "calls");
FPT_STATIC_ASSERT(offsetof(struct fpt_record, max_ns) == 80, "max_ns");
FPT_STATIC_ASSERT(offsetof(struct fpt_record, hist) == 88, "hist");
FPT_STATIC_ASSERT(sizeof(struct fpt_strings) == sizeof(struct fpt_record), "one slot size");
FPT_STATIC_ASSERT(offsetof(struct fpt_strings, data) == 16, "strings data");
FPT_STATIC_ASSERT(sizeof(struct fpt_absorbed) == sizeof(struct fpt_record), "one slot size");
FPT_STATIC_ASSERT(offsetof(struct fpt_absorbed, entries) == 16, "absorbed entries");

#endif /* FASTPATCH_TELEMETRY_H */
