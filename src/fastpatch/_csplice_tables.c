/*
 * _csplice_tables.c -- the spliced code's line table and exception table
 * (the last phase, rewrite_tables, calls these): the same bytes as
 * _pysplice.py's _lengthened_line_table, _moved_lnotab and
 * _moved_exception_table. The encodings are the ones CPython documents in
 * Objects/lnotab_notes.txt (3.9, 3.10), Objects/locations.md and
 * Objects/exception_handling_notes.txt (3.11+); the dialect only names
 * which one the running version uses.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_csplice_tables.h"

/* ------------------------------------------------------------------ */
/* Line tables                                                         */
/* ------------------------------------------------------------------ */

/* One 3.10 linetable range covering `units` code units. */
static int
write_linetable_310_entry(cs_buf *out, int ldelta, Py_ssize_t units)
{
    Py_ssize_t remaining = 2 * units;
    while (remaining > 254) {
        if (buf_byte(out, 254) < 0 || buf_byte(out, ldelta) < 0) {
            return -1;
        }
        ldelta = ldelta == 0x80 ? 0x80 : 0;
        remaining -= 254;
    }
    if (buf_byte(out, (int)remaining) < 0 || buf_byte(out, ldelta) < 0) {
        return -1;
    }
    return 0;
}

/* One 3.11+ location entry (its first byte and payload) covering `units`,
   in chunks of at most 8; `repeat`: all of them as "the same location again". */
static int
write_location_entry(cs_buf *out, const unsigned char *entry, Py_ssize_t entry_len, Py_ssize_t units, int repeat)
{
    int code = (entry[0] >> 3) & 15;
    const unsigned char *payload = entry + 1;
    Py_ssize_t payload_len = entry_len - 1;
    int repeat_code = code;
    const unsigned char *repeat_payload = payload;
    Py_ssize_t repeat_len = payload_len;
    unsigned char zero = 0;
    Py_ssize_t skip = 0;
    if (code >= 10 && code <= 12) {
        repeat_code = 10;
    }
    else if (code == 13 || code == 14) {   /* first varint: the line delta, repeated as 0 */
        while (payload[skip] & 64) {
            skip++;
        }
        skip++;
    }
    int first = !repeat;
    while (units > 0) {
        Py_ssize_t chunk = units < 8 ? units : 8;
        units -= chunk;
        if (first) {
            if (buf_byte(out, 0x80 | (code << 3) | (int)(chunk - 1)) < 0 || buf_put(out, payload, payload_len) < 0) {
                return -1;
            }
            first = 0;
        }
        else {
            if (buf_byte(out, 0x80 | (repeat_code << 3) | (int)(chunk - 1)) < 0) {
                return -1;
            }
            if (skip) {
                if (buf_put(out, &zero, 1) < 0 || buf_put(out, payload + skip, payload_len - skip) < 0) {
                    return -1;
                }
            }
            else if (buf_put(out, repeat_payload, repeat_len) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* `entry` (one location entry, or one 3.10 pair) again, covering `units`
   code units; `repeat`: as "the same location again", the continuation of
   `entry`. */
static int
write_entry(cs_buf *out, const unsigned char *entry, Py_ssize_t entry_len, Py_ssize_t units, int locations,
            int repeat)
{
    if (locations) {
        return write_location_entry(out, entry, entry_len, units, repeat);
    }
    int ldelta = entry[1];
    if (repeat) {
        ldelta = ldelta == 0x80 ? 0x80 : 0;
    }
    return write_linetable_310_entry(out, ldelta, units);
}

/* _pysplice._lengthened_line_table, in one pass over the table: the
   insertions come sorted by code unit, so the entry that covers each one
   (the entry whose units hold the instruction it belongs to) is found by
   walking the entries alongside them. */
PyObject *
cs_lengthened_line_table(const cs_state *st, const unsigned char *table, Py_ssize_t len, const cs_insertion *ins,
                         Py_ssize_t n_ins, int locations, int entry_unlocated)
{
    static const unsigned char no_location[1] = {0x80 | (15 << 3)};
    static const unsigned char no_line[2] = {0, 0x80};
    PyObject *result = NULL;
    cs_buf out = {0};
    if (buf_reserve(&out, len + 16) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    /* Bytes of a 3.11+ location entry by its code (Objects/locations.md):
       short forms 2, one-line forms 3, no location 1; the varint forms (13
       and 14, -1 here) are scanned for the next entry's first byte, whose
       top bit only a first byte has. */
    static const signed char entry_bytes[16] = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, -1, -1, 1};
    Py_ssize_t i = 0;      /* the next insertion */
    Py_ssize_t total = 0;  /* code units covered by the entries before this one */
    Py_ssize_t prev = 0;   /* the table is written up to here */
    Py_ssize_t next_owner = n_ins ? (ins[0].side == AFTER_PREVIOUS ? ins[0].at - 1 : ins[0].at) : 0;
    for (Py_ssize_t j = 0; j < len && i < n_ins;) {
        Py_ssize_t end, units;
        if (locations) {
            end = j + entry_bytes[(table[j] >> 3) & 15];
            if (end <= j || (end < len && !(table[end] & 0x80)) || end > len) {
                end = j + 1;
                while (end < len && !(table[end] & 0x80)) {
                    end++;
                }
            }
            units = (table[j] & 7) + 1;
        }
        else {
            end = j + 2;
            units = table[j] / 2;
        }
        Py_ssize_t covered = total + units;
        if (next_owner >= covered) {  /* most entries: no insertion belongs to them */
            total = covered;
            j = end;
            continue;
        }
        Py_ssize_t extra = 0, before = 0, unlocated = 0;
        for (; i < n_ins; i++) {
            Py_ssize_t owner = ins[i].side == AFTER_PREVIOUS ? ins[i].at - 1 : ins[i].at;
            if (owner >= covered) {
                next_owner = owner;
                break;
            }
            if (ins[i].side == ENTRY && entry_unlocated) {
                before = ins[i].at - total;
                unlocated = ins[i].units;
            }
            else {
                extra += ins[i].units;
            }
        }
        if (extra || unlocated) {
            if (buf_put(&out, table + prev, j - prev) < 0) {
                goto done;
            }
            if (unlocated) {
                if (before && write_entry(&out, table + j, end - j, before, locations, 0) < 0) {
                    goto done;
                }
                if (write_entry(&out, locations ? no_location : no_line, locations ? 1 : 2, unlocated, locations,
                                0) < 0) {
                    goto done;
                }
            }
            if (write_entry(&out, table + j, end - j, units - before + extra, locations, before > 0) < 0) {
                goto done;
            }
            prev = end;
        }
        total = covered;
        j = end;
    }
    if (i < n_ins) {
        PyErr_Format(st->splice_error, "no line table entry covers code unit %zd",
                     ins[i].side == AFTER_PREVIOUS ? ins[i].at - 1 : ins[i].at);
        goto done;
    }
    if (buf_put(&out, table + prev, len - prev) < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)out.data, out.len);
done:
    PyMem_Free(out.data);
    return result;
}

/* _pysplice._moved_lnotab */
PyObject *
cs_moved_lnotab(const unsigned char *table, Py_ssize_t len, int firstlineno, const cs_offsets *o)
{
    PyObject *result = NULL;
    cs_buf out = {0};
    Py_ssize_t *change_addr = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(len / 2 + 1));
    long *change_line = PyMem_Malloc(sizeof(long) * (size_t)(len / 2 + 1));
    Py_ssize_t n = 0;
    if (change_addr == NULL || change_line == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t addr = 0;
    long line = firstlineno;
    for (Py_ssize_t j = 0; j + 1 < len; j += 2) {
        addr += table[j];
        int ld = table[j + 1];
        if (ld) {
            line += ld >= 128 ? ld - 256 : ld;
            if (n && change_addr[n - 1] == addr) {
                change_line[n - 1] = line;
            }
            else {
                change_addr[n] = addr;
                change_line[n++] = line;
            }
        }
    }
    Py_ssize_t prev_addr = 0;
    long prev_line = firstlineno;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t new_addr = 2 * offsets_boundary(o, change_addr[i] / 2);
        Py_ssize_t bd = new_addr - prev_addr;
        long ld = change_line[i] - prev_line;
        while (bd > 255) {
            if (buf_byte(&out, 255) < 0 || buf_byte(&out, 0) < 0) {
                goto done;
            }
            bd -= 255;
        }
        while (ld > 127) {
            if (buf_byte(&out, (int)bd) < 0 || buf_byte(&out, 127) < 0) {
                goto done;
            }
            bd = 0;
            ld -= 127;
        }
        while (ld < -128) {
            if (buf_byte(&out, (int)bd) < 0 || buf_byte(&out, 0x80) < 0) {
                goto done;
            }
            bd = 0;
            ld += 128;
        }
        if (buf_byte(&out, (int)bd) < 0 || buf_byte(&out, (int)(ld & 0xFF)) < 0) {
            goto done;
        }
        prev_addr = new_addr;
        prev_line = change_line[i];
    }
    result = PyBytes_FromStringAndSize((const char *)out.data, out.len);
done:
    PyMem_Free(out.data);
    PyMem_Free(change_addr);
    PyMem_Free(change_line);
    return result;
}

/* ------------------------------------------------------------------ */
/* Exception table (3.11+)                                             */
/* ------------------------------------------------------------------ */

#if FP_HAVE_EXCEPTION_TABLE

static int
read_varint(const unsigned char *t, Py_ssize_t len, Py_ssize_t *j, Py_ssize_t *value)
{
    if (*j >= len) {
        return -1;
    }
    unsigned char b = t[(*j)++];
    Py_ssize_t v = b & 63;
    while (b & 64) {
        if (*j >= len) {
            return -1;
        }
        b = t[(*j)++];
        v = (v << 6) | (b & 63);
    }
    *value = v;
    return 0;
}

static int
write_exception_varint(cs_buf *out, Py_ssize_t value, int msb)
{
    unsigned char chunks[12];
    int n = 0;
    do {
        chunks[n++] = (unsigned char)(value & 63);
        value >>= 6;
    } while (value);
    for (int i = n - 1; i >= 0; i--) {
        int b = chunks[i] | (i ? 64 : 0);
        if (i == n - 1) {
            b |= msb;
        }
        if (buf_byte(out, b) < 0) {
            return -1;
        }
    }
    return 0;
}

/* _pysplice._moved_exception_table */
PyObject *
cs_moved_exception_table(const cs_state *st, const unsigned char *t, Py_ssize_t len, const cs_offsets *o,
                         Py_ssize_t hole_start, Py_ssize_t hole_end)
{
    PyObject *result = NULL;
    cs_buf out = {0};
    Py_ssize_t j = 0;
    while (j < len) {
        Py_ssize_t start, length, target, dl;
        if (read_varint(t, len, &j, &start) < 0 || read_varint(t, len, &j, &length) < 0
            || read_varint(t, len, &j, &target) < 0 || read_varint(t, len, &j, &dl) < 0) {
            PyErr_SetString(st->splice_error, "malformed exception table");
            goto done;
        }
        Py_ssize_t depth = dl >> 1;
        int lasti = (int)(dl & 1);
        Py_ssize_t new_start = offsets_target(o, start), new_end = offsets_boundary(o, start + length);
        Py_ssize_t new_target = offsets_target(o, target);
        Py_ssize_t pieces[2][2];
        int n = 0;
        if (new_start < hole_end && new_end > hole_start) {
            if (new_start < hole_start) {
                pieces[n][0] = new_start;
                pieces[n++][1] = hole_start;
            }
            if (hole_end < new_end) {
                pieces[n][0] = hole_end;
                pieces[n++][1] = new_end;
            }
        }
        else if (new_start < new_end) {
            pieces[n][0] = new_start;
            pieces[n++][1] = new_end;
        }
        for (int i = 0; i < n; i++) {
            Py_ssize_t s = pieces[i][0], e = pieces[i][1];
            Py_ssize_t d = ((s >= hole_end ? depth + 1 : depth) << 1) | lasti;
            if (write_exception_varint(&out, s, 0x80) < 0 || write_exception_varint(&out, e - s, 0) < 0
                || write_exception_varint(&out, new_target, 0) < 0 || write_exception_varint(&out, d, 0) < 0) {
                goto done;
            }
        }
    }
    result = PyBytes_FromStringAndSize((const char *)out.data, out.len);
done:
    PyMem_Free(out.data);
    return result;
}
#endif  /* FP_HAVE_EXCEPTION_TABLE */
