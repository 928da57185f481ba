/* The compiled twin of the per-record paths (plain CPython C API, no other build dependency):
 * TFRecord framing and masked crc32c (tfrecord.py), and Event/Summary decoding of the kinds
 * a writer writes at every step straight into the row builder's column lists
 * (codecs/tfevents_decode.py's _fast path, codecs/summary_decode.py's _decode_value_fast).
 *
 * Every function decodes what it can and stops, touching nothing, at the first record or
 * value it cannot decode exactly as the pure-Python path would: the caller hands that one to
 * the Python decoder and calls again after it, so rows keep their order and the Python path
 * stays the spec for everything odd (damage, other kinds, non-UTF-8 tags, warnings).
 * native.py loads it; tests/test_native_decode.py holds both paths to the same rows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* -- crc32c ------------------------------------------------------------------------------ */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t crc_soft(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;   /* little-endian hosts only: checked at import */
        c = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^
            crc_table[5][(w >> 16) & 0xFF] ^ crc_table[4][(w >> 24) & 0xFF] ^
            crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
            crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
    return c ^ 0xFFFFFFFFu;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_HW_CRC 1
__attribute__((target("sse4.2")))
static uint32_t crc_hw(const unsigned char *p, size_t n) {
    uint64_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32 ^ 0xFFFFFFFFu;
}
#endif

static int use_hw;

static uint32_t crc32c(const unsigned char *p, size_t n) {
#ifdef HAVE_HW_CRC
    if (use_hw) return crc_hw(p, n);
#endif
    return crc_soft(p, n);
}

static uint32_t masked(const unsigned char *p, size_t n) {
    uint32_t c = crc32c(p, n);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

static uint64_t le64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t le32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static PyObject *py_masked_crc(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c;
    Py_BEGIN_ALLOW_THREADS
    c = masked(b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

/* frame(buf, pos) -> (records [(pos, bytes)], pos after them, status, need)
 * status 0: stopped at fewer bytes than a whole record (need: that record's whole size, or 0
 * when even its header is incomplete); 1: the length's checksum is bad at pos; 2: the data's
 * checksum is bad at pos (need: the record's size). */
static PyObject *py_frame(PyObject *self, PyObject *args) {
    Py_buffer b;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "y*n", &b, &pos)) return NULL;
    const unsigned char *buf = b.buf;
    Py_ssize_t n = b.len;
    int status = 0;
    unsigned long long need = 0;
    PyObject *out = PyList_New(0);
    if (!out) goto fail;
    while (n - pos >= 12) {
        uint64_t length = le64(buf + pos);
        if (masked(buf + pos, 8) != le32(buf + pos + 8)) { status = 1; break; }
        if (length > (uint64_t)PY_SSIZE_T_MAX - 16) { need = ~0ULL; break; }   /* never fits */
        if ((uint64_t)(n - pos) < length + 16) { need = length + 16; break; }
        const unsigned char *data = buf + pos + 12;
        if (masked(data, (size_t)length) != le32(data + length)) {
            status = 2;
            need = length + 16;
            break;
        }
        PyObject *rec = Py_BuildValue("(ny#)", pos, (const char *)data, (Py_ssize_t)length);
        if (!rec || PyList_Append(out, rec) < 0) { Py_XDECREF(rec); goto fail; }
        Py_DECREF(rec);
        pos += 16 + (Py_ssize_t)length;
    }
    PyBuffer_Release(&b);
    return Py_BuildValue("(NniK)", out, pos, status, need);
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&b);
    return NULL;
}

/* -- the wire format ---------------------------------------------------------------------- */

typedef struct { const unsigned char *p; Py_ssize_t n; } span_t;

/* a varint at *i (< end); 0 if it runs past end or is longer than 10 bytes */
static int rd_varint(const unsigned char *b, Py_ssize_t *i, Py_ssize_t end, uint64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    while (*i < end && shift < 70) {
        unsigned char c = b[(*i)++];
        v |= (uint64_t)(c & 0x7F) << shift;
        if (c < 0x80) { *out = v; return 1; }
        shift += 7;
    }
    return 0;
}

/* one field at *i: its number and wire type, and the payload (start, end); 0 for a field
 * the pure path would not read the same way (groups, truncation) */
typedef struct { uint64_t number; int wire; Py_ssize_t start, end; uint64_t value; } field_t;

static int rd_field(const unsigned char *b, Py_ssize_t *i, Py_ssize_t end, field_t *f) {
    uint64_t key;
    if (!rd_varint(b, i, end, &key)) return 0;
    f->number = key >> 3;
    f->wire = (int)(key & 7);
    f->start = *i;
    if (f->wire == 0) {
        if (!rd_varint(b, i, end, &f->value)) return 0;
    } else if (f->wire == 2) {
        uint64_t size;
        if (!rd_varint(b, i, end, &size)) return 0;
        if (size > (uint64_t)(end - *i)) return 0;
        f->start = *i;
        *i += (Py_ssize_t)size;
    } else if (f->wire == 1 || f->wire == 5) {
        Py_ssize_t k = f->wire == 1 ? 8 : 4;
        if (end - *i < k) return 0;
        *i += k;
    } else {
        return 0;
    }
    f->end = *i;
    return 1;
}

/* SummaryMetadata -> plugin_data.plugin_name, as tfevents.plugin_name reads it: the whole
 * message must parse, and each plugin_data up to the first that names a plugin; 1 found,
 * 0 none (""), -1 not parseable (the caller leaves it to the pure path) */
static int plugin_of(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, span_t *name) {
    field_t f, g;
    int found = 0;
    while (i < end) {
        if (!rd_field(b, &i, end, &f)) return -1;
        if (f.number == 1 && f.wire == 2 && !found) {
            Py_ssize_t j = f.start;
            while (j < f.end) {
                if (!rd_field(b, &j, f.end, &g)) return -1;
                if (g.number == 1 && g.wire == 2 && !found) {
                    name->p = b + g.start;
                    name->n = g.end - g.start;
                    found = 1;
                }
            }
        }
    }
    return found;
}

static int span_is(span_t s, const char *text) {
    size_t n = strlen(text);
    return s.n == (Py_ssize_t)n && memcmp(s.p, text, n) == 0;
}

/* numpy's pairwise sum of doubles (float(counts.sum()) in the pure path), so the histogram
 * row's num is the same double */
static double pairwise(const double *a, Py_ssize_t n) {
    if (n < 8) {
        double r = -0.0;
        for (Py_ssize_t i = 0; i < n; i++) r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        Py_ssize_t i;
        for (int k = 0; k < 8; k++) r[k] = a[k];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int k = 0; k < 8; k++) r[k] += a[i + k];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    Py_ssize_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise(a, n2) + pairwise(a + n2, n - n2);
}

/* -- appending to the row builder's column lists ------------------------------------------ */

typedef struct {
    PyObject *cols;                   /* the table's {name: list} (ColumnBuffers.columns) */
    PyObject *lists[16];
    const char *names[16];
    int count;
} table_t;

static const char *SCALAR_COLS[] = {"step", "wall_time", "tag", "attempt", "value", NULL};
static const char *HISTO_COLS[] = {"step", "wall_time", "tag", "attempt", "num", "min", "max",
                                   "sum", "sum_squares", "bucket_limits", "bucket_counts",
                                   "bucket_lefts", "source", NULL};
static const char *RAW_COLS[] = {"step", "wall_time", "tag", "file", "source", "offset",
                                 "index", "what", "length", "crc", "record", "cuts", NULL};

/* the lists of `cols` in `names`' order; the dict must hold exactly those names */
static int table_init(table_t *t, PyObject *cols, const char **names) {
    t->cols = cols;
    t->count = 0;
    if (!PyDict_Check(cols)) {
        PyErr_SetString(PyExc_TypeError, "column buffers must be a dict of lists");
        return 0;
    }
    for (int k = 0; names[k]; k++) {
        PyObject *l = PyDict_GetItemString(cols, names[k]);
        if (!l || !PyList_Check(l)) {
            PyErr_Format(PyExc_ValueError, "column %s missing from the buffers", names[k]);
            return 0;
        }
        t->lists[k] = l;
        t->names[k] = names[k];
        t->count++;
    }
    if (PyDict_Size(cols) != t->count) {
        PyErr_SetString(PyExc_ValueError, "the buffers hold columns this decoder does not know");
        return 0;
    }
    return 1;
}

/* appends values (stolen references; NULL-free) as one row; on failure the row may be
 * partly appended and the error is set: the caller raises (a bug, not bad input) */
static int table_add(table_t *t, PyObject **values) {
    int ok = 1;
    for (int k = 0; k < t->count; k++) {
        if (ok && PyList_Append(t->lists[k], values[k]) < 0) ok = 0;
        Py_DECREF(values[k]);
    }
    return ok;
}

/* -- Summary values: tag + simple_value or tag + histo (summary_decode's fast path) ------- */

static PyObject *frombuffer;   /* numpy.frombuffer, set by the caller */
static PyObject *f8;           /* "<f8" */
static PyObject *s_empty, *s_histo, *s_tensor, *s_summary, *s_histograms, *zero;

/* packed HistogramProto in b[i:n]: the five doubles and the array spans; 0 for another layout */
typedef struct { double d[5]; Py_ssize_t arr_at[2], arr_n[2]; } histo_t;

static int histo_packed(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, histo_t *h) {
    memset(h, 0, sizeof *h);
    while (i < n) {
        unsigned char tag = b[i];
        int field = tag >> 3, wire = tag & 7;
        if (wire == 1 && field >= 1 && field <= 5 && i + 9 <= n) {
            memcpy(&h->d[field - 1], b + i + 1, 8);
            i += 9;
        } else if (wire == 2 && (field == 6 || field == 7)) {
            uint64_t length;
            i += 1;
            if (!rd_varint(b, &i, n, &length)) return 0;
            if (length % 8 || length > (uint64_t)(n - i)) return 0;
            h->arr_at[field - 6] = i;
            h->arr_n[field - 6] = (Py_ssize_t)(length / 8);
            i += (Py_ssize_t)length;
        } else {
            return 0;
        }
    }
    return i == n;
}

static PyObject *array_of(PyObject *data, Py_ssize_t at, Py_ssize_t count) {
    PyObject *c = PyLong_FromSsize_t(count), *o = PyLong_FromSsize_t(at);
    PyObject *arr = (c && o) ? PyObject_CallFunctionObjArgs(frombuffer, data, f8, c, o, NULL)
                             : NULL;
    Py_XDECREF(c);
    Py_XDECREF(o);
    return arr;
}

/* summary_values(data, pos, step, wall, scalars cols, histograms cols, attempt)
 *   -> (pos of the first value not decoded here, rows added); a value that is not field 1,
 * not tag + simple_value / tag + packed histo, or has a non-UTF-8 tag stops it. */
static PyObject *py_summary_values(PyObject *self, PyObject *args) {
    PyObject *data, *step, *wall, *scols, *hcols, *attempt;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "O!nOOOOO", &PyBytes_Type, &data, &pos, &step, &wall, &scols,
                          &hcols, &attempt))
        return NULL;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), rows = 0;
    table_t st, ht;
    int have_s = 0, have_h = 0;
    PyObject *tagobj = NULL;
    while (pos < n) {
        Py_ssize_t i = pos, end;
        uint64_t key, size;
        if (!rd_varint(b, &i, n, &key) || key != 0x0A || !rd_varint(b, &i, n, &size) ||
            size > (uint64_t)(n - i))
            break;
        end = i + (Py_ssize_t)size;
        span_t tag = {NULL, -1};
        int have_simple = 0, have_histo = 0, bad = 0;
        float simple = 0;
        Py_ssize_t hs = 0, he = 0;
        while (i < end && !bad) {
            unsigned char k = b[i];
            if (k == 0x0A || k == 0x2A || k == 0x4A) {
                uint64_t len;
                i += 1;
                if (!rd_varint(b, &i, end, &len) || len > (uint64_t)(end - i)) { bad = 1; break; }
                if (k == 0x0A) { tag.p = b + i; tag.n = (Py_ssize_t)len; }
                else if (k == 0x2A) { hs = i; he = i + (Py_ssize_t)len; have_histo = 1; }
                i += (Py_ssize_t)len;
            } else if (k == 0x15 && end - i >= 5) {
                memcpy(&simple, b + i + 1, 4);
                have_simple = 1;
                i += 5;
            } else {
                bad = 1;
            }
        }
        if (bad || i != end || tag.n < 0 || have_simple == have_histo) break;
        histo_t h;
        if (have_histo && !histo_packed(b, hs, he, &h)) break;
        tagobj = PyUnicode_DecodeUTF8((const char *)tag.p, tag.n, NULL);
        if (!tagobj) { PyErr_Clear(); break; }
        if (have_simple) {
            if (!have_s && !(have_s = table_init(&st, scols, SCALAR_COLS))) goto fail_tag;
            PyObject *v[5] = {Py_NewRef(step), Py_NewRef(wall), tagobj, Py_NewRef(attempt),
                              PyFloat_FromDouble((double)simple)};
            if (!v[4] || !table_add(&st, v)) goto fail;
        } else {
            if (!have_h && !(have_h = table_init(&ht, hcols, HISTO_COLS))) goto fail_tag;
            PyObject *arrs[2];
            for (int a = 0; a < 2; a++) {
                arrs[a] = array_of(data, h.arr_n[a] ? h.arr_at[a] : 0, h.arr_n[a]);
                if (!arrs[a]) { if (a) Py_DECREF(arrs[0]); goto fail_tag; }
            }
            /* histo_fields' column order: min max num sum sum_squares in the proto */
            PyObject *v[13] = {Py_NewRef(step), Py_NewRef(wall), tagobj, Py_NewRef(attempt),
                               PyFloat_FromDouble(h.d[2]), PyFloat_FromDouble(h.d[0]),
                               PyFloat_FromDouble(h.d[1]), PyFloat_FromDouble(h.d[3]),
                               PyFloat_FromDouble(h.d[4]), arrs[0], arrs[1], Py_NewRef(Py_None),
                               Py_NewRef(s_histo)};
            if (!table_add(&ht, v)) goto fail;
        }
        rows++;
        pos = end;
    }
    return Py_BuildValue("(nn)", pos, rows);
fail_tag:
    Py_XDECREF(tagobj);
fail:
    return NULL;
}

/* -- tfevents records (tfevents_decode's _fast path and its raw rows) ---------------------- */

typedef struct {
    double wall;
    int64_t step;
    int what;                 /* the first Event kind field (3..10), 0 for none */
    Py_ssize_t sum_at, sum_end;
    int summaries;
    /* the one summary value */
    span_t tag, meta;
    int has_meta;
    int kind;                 /* 0 none, 2 simple_value, 8 tensor */
    float simple;
    /* its tensor */
    uint64_t dtype;
    int64_t dims[2];
    int ndims;
    Py_ssize_t c_at, c_end;
    int has_content;
} event_t;

static const char *KINDS[] = {NULL, NULL, NULL, "file_version", "graph_def", "summary",
                              "log_message", "session_log", "tagged_run_metadata",
                              "meta_graph_def", "source_metadata"};
static PyObject *kind_names[11];

/* a TensorShapeProto of at most two known dims; 0 for anything else (the pure path's
 * unknown_rank sets `other`) */
static int shape_of(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, event_t *e) {
    field_t f, g;
    e->ndims = 0;
    while (i < end) {
        if (!rd_field(b, &i, end, &f)) return 0;
        if (f.number == 2 && f.wire == 2) {
            int64_t size = 0;
            Py_ssize_t j = f.start;
            while (j < f.end) {
                if (!rd_field(b, &j, f.end, &g)) return 0;
                if (g.number == 1 && g.wire == 0) size = (int64_t)g.value;
            }
            if (e->ndims == 2) return 0;
            e->dims[e->ndims++] = size;
        } else if (f.number == 3) {
            return 0;
        }
    }
    return 1;
}

static int tensor_of(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, event_t *e) {
    field_t f;
    e->dtype = 0;
    e->ndims = 0;
    e->has_content = 0;
    while (i < end) {
        if (!rd_field(b, &i, end, &f)) return 0;
        if (f.number == 1 && f.wire == 0) e->dtype = f.value;
        else if (f.number == 2 && f.wire == 2) { if (!shape_of(b, f.start, f.end, e)) return 0; }
        else if (f.number == 4 && f.wire == 2) {
            e->c_at = f.start;
            e->c_end = f.end;
            e->has_content = 1;
        } else if (f.number != 3) return 0;   /* string_val or anything else: not fast */
    }
    return e->has_content;
}

/* an Event of the fast kinds; 0 for anything the pure path decodes another way */
static int event_of(const unsigned char *b, Py_ssize_t n, event_t *e) {
    field_t f, g;
    Py_ssize_t i = 0;
    memset(e, 0, sizeof *e);
    e->tag.n = -1;
    while (i < n) {
        if (!rd_field(b, &i, n, &f)) return 0;
        if (f.number == 1 && f.wire == 1) memcpy(&e->wall, b + f.start, 8);
        else if (f.number == 2 && f.wire == 0) e->step = (int64_t)f.value;
        else if (f.number >= 3 && f.number <= 10 && f.wire == 2) {
            if (!e->what) e->what = (int)f.number;
            if (f.number == 8) return 0;    /* tagged_run_metadata's tag: the pure path */
            if (f.number == 5) {
                e->summaries++;
                e->sum_at = f.start;
                e->sum_end = f.end;
            }
        }
    }
    if (e->summaries > 1) return 0;
    if (!e->summaries) return 1;
    /* the summary: exactly one value */
    int values = 0;
    i = e->sum_at;
    Py_ssize_t vs = 0, ve = 0;
    while (i < e->sum_end) {
        if (!rd_field(b, &i, e->sum_end, &f)) return 0;
        if (f.number != 1 || f.wire != 2) return 0;
        values++;
        vs = f.start;
        ve = f.end;
    }
    if (values != 1) return 0;
    i = vs;
    while (i < ve) {
        if (!rd_field(b, &i, ve, &g)) return 0;
        if (g.number == 1 && g.wire == 2) { e->tag.p = b + g.start; e->tag.n = g.end - g.start; }
        else if (g.number == 9 && g.wire == 2) {
            e->meta.p = b + g.start;
            e->meta.n = g.end - g.start;
            e->has_meta = 1;
        } else if (g.number == 2 && g.wire == 5) {
            if (e->kind) return 0;
            e->kind = 2;
            memcpy(&e->simple, b + g.start, 4);
        } else if (g.number == 8 && g.wire == 2) {
            if (e->kind) return 0;
            e->kind = 8;
            if (!tensor_of(b, g.start, g.end, e)) return 0;
        } else {
            return 0;
        }
    }
    return e->kind != 0;
}

/* the tag as the file's rows name it: (tag, namespace/tag), cached per file by tag bytes */
static int tags_of(PyObject *cache, PyObject *ns, span_t tag, int strict, PyObject **bare,
                   PyObject **full) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)tag.p, tag.n);
    if (!key) return -1;
    PyObject *hit = PyDict_GetItemWithError(cache, key);
    if (hit) {
        Py_DECREF(key);
        if (PyTuple_GET_ITEM(hit, 2) == Py_False && strict) return 0;
        *bare = PyTuple_GET_ITEM(hit, 0);
        *full = PyTuple_GET_ITEM(hit, 1);
        return 1;
    }
    if (PyErr_Occurred()) { Py_DECREF(key); return -1; }
    PyObject *b = PyUnicode_DecodeUTF8((const char *)tag.p, tag.n, NULL);
    PyObject *valid = Py_True;
    if (!b) {
        PyErr_Clear();
        valid = Py_False;
        b = PyUnicode_DecodeUTF8((const char *)tag.p, tag.n, "replace");
        if (!b) { Py_DECREF(key); return -1; }
    }
    PyObject *f;
    if (PyUnicode_GET_LENGTH(ns) && PyUnicode_GET_LENGTH(b)) f = PyUnicode_FromFormat("%U/%U", ns, b);
    else f = Py_NewRef(PyUnicode_GET_LENGTH(b) ? b : ns);
    PyObject *entry = f ? PyTuple_Pack(3, b, f, valid) : NULL;
    Py_DECREF(b);
    Py_XDECREF(f);
    if (entry && PyDict_Size(cache) >= 4096) PyDict_Clear(cache);   /* bounded */
    if (!entry || PyDict_SetItem(cache, key, entry) < 0) {
        Py_XDECREF(entry);
        Py_DECREF(key);
        return -1;
    }
    Py_DECREF(key);
    Py_DECREF(entry);   /* the cache holds it for this record at least */
    *bare = PyTuple_GET_ITEM(entry, 0);
    *full = PyTuple_GET_ITEM(entry, 1);
    if (valid == Py_False && strict) return 0;
    return 1;
}

/* the histogram buckets of one decode_events call */
typedef struct { Py_ssize_t at, k, pos; } hrow_t;
typedef struct { double *vals; Py_ssize_t len, cap; hrow_t *rows; Py_ssize_t nrows, rcap; } hbuf_t;

static int hist_reserve(hbuf_t *h, Py_ssize_t more) {
    if (h->len + more > h->cap) {
        Py_ssize_t cap = h->cap ? h->cap : 4096;
        while (cap < h->len + more) cap *= 2;
        double *v = PyMem_Realloc(h->vals, cap * sizeof(double));
        if (!v) { PyErr_NoMemory(); return 0; }
        h->vals = v;
        h->cap = cap;
    }
    if (h->nrows == h->rcap) {
        Py_ssize_t cap = h->rcap ? 2 * h->rcap : 256;
        hrow_t *r = PyMem_Realloc(h->rows, cap * sizeof(hrow_t));
        if (!r) { PyErr_NoMemory(); return 0; }
        h->rows = r;
        h->rcap = cap;
    }
    return 1;
}

/* puts the arrays (views of one array of the call's buckets) in place of the placeholders:
 * limits, counts, lefts are the histogram columns 9, 10, 11 */
static int hist_finish(hbuf_t *h, table_t *ht) {
    int ok = 1;
    if (h->nrows) {
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)h->vals,
                                                    h->len * (Py_ssize_t)sizeof(double));
        PyObject *all = bytes ? PyObject_CallFunctionObjArgs(frombuffer, bytes, f8, NULL) : NULL;
        Py_XDECREF(bytes);
        if (!all) ok = 0;
        for (Py_ssize_t r = 0; ok && r < h->nrows; r++) {
            hrow_t *row = &h->rows[r];
            for (int c = 0; ok && c < 3; c++) {   /* lefts, limits, counts in the buffer */
                Py_ssize_t from = row->at + c * row->k;
                PyObject *view = PySequence_GetSlice(all, from, from + row->k);
                PyObject *list = ht->lists[c == 0 ? 11 : c == 1 ? 9 : 10];
                if (!view || PyList_SetItem(list, row->pos, view) < 0) ok = 0;
            }
        }
        Py_XDECREF(all);
    }
    PyMem_Free(h->vals);
    PyMem_Free(h->rows);
    memset(h, 0, sizeof *h);
    return ok;
}

static PyObject *k_at, *k_size, *k_table, *k_tag, *k_index, *k_part;

/* a cut's description, as tfevents_decode._fast writes it */
static PyObject *cut_of(Py_ssize_t at, Py_ssize_t size, PyObject *tag) {
    PyObject *d = PyDict_New(), *a = PyLong_FromSsize_t(at), *s = PyLong_FromSsize_t(size);
    if (!d || !a || !s || PyDict_SetItem(d, k_at, a) < 0 || PyDict_SetItem(d, k_size, s) < 0 ||
        PyDict_SetItem(d, k_table, s_histograms) < 0 || PyDict_SetItem(d, k_tag, tag) < 0 ||
        PyDict_SetItem(d, k_index, zero) < 0 || PyDict_SetItem(d, k_part, zero) < 0) {
        Py_XDECREF(d);
        d = NULL;
    }
    Py_XDECREF(a);
    Py_XDECREF(s);
    return d;
}

/* decode_events(records, i, file, source, namespace, metadata, tags, raw lists...,
 *               scalars cols, histograms cols, attempt)
 *   -> (index of the first record not decoded here, decoded rows added, last step, last wall)
 * records: [(offset, index, data)]. */
static PyObject *py_decode_events(PyObject *self, PyObject *args) {
    PyObject *records, *file, *source, *ns, *metadata, *cache, *raw, *scols, *hcols, *attempt;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "O!nOOUO!O!O!OOO", &PyList_Type, &records, &i, &file, &source,
                          &ns, &PyDict_Type, &metadata, &PyDict_Type, &cache, &PyDict_Type,
                          &raw, &scols, &hcols, &attempt))
        return NULL;
    table_t rt, st, ht;
    int have_s = 0, have_h = 0;
    hbuf_t hb = {0};
    if (!table_init(&rt, raw, RAW_COLS)) return NULL;
    /* no cyclic collection while the call's rows are made (a histogram's cut is a dict and
     * a list: the collector ran dozens of times a batch, a fifth of the time); nothing else
     * runs meanwhile, the GIL is held */
    int gc_was = PyGC_Disable();
    Py_ssize_t total = PyList_GET_SIZE(records), rows = 0;
    int64_t last_step = 0;
    double last_wall = 0;
    int any = 0;
    for (; i < total; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != 3) break;
        PyObject *data = PyTuple_GET_ITEM(rec, 2);
        if (!PyBytes_Check(data)) break;
        const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(data);
        Py_ssize_t n = PyBytes_GET_SIZE(data);
        event_t e;
        if (!event_of(b, n, &e)) break;
        PyObject *bare = NULL, *full = NULL;
        PyObject *cuts = Py_None, *record = data;
        int table = 0;   /* decoded row: 1 scalar, 2 histogram */
        PyObject *value = NULL;
        span_t plugin = {NULL, 0};
        if (e.summaries) {
            int ok = tags_of(cache, ns, e.tag.n < 0 ? (span_t){(const unsigned char *)"", 0}
                                                    : e.tag, e.kind == 2, &bare, &full);
            if (ok < 0) goto error;
            if (!ok) break;   /* a non-UTF-8 simple_value tag: the general path warns */
            if (e.kind == 8) {
                int found;
                if (e.has_meta) {
                    found = plugin_of(e.meta.p, 0, e.meta.n, &plugin);
                } else {
                    PyObject *md = PyDict_GetItemWithError(metadata, bare);
                    if (!md && PyErr_Occurred()) goto error;
                    found = (md && PyBytes_Check(md))
                                ? plugin_of((const unsigned char *)PyBytes_AS_STRING(md), 0,
                                            PyBytes_GET_SIZE(md), &plugin)
                                : (md ? -1 : 0);
                }
                if (found < 0) break;
                Py_ssize_t size = e.c_end - e.c_at;
                if (span_is(plugin, "scalars") && e.ndims == 0 &&
                    ((e.dtype == 1 && size == 4) || (e.dtype == 2 && size == 8))) {
                    double v;
                    if (e.dtype == 1) { float x; memcpy(&x, b + e.c_at, 4); v = x; }
                    else memcpy(&v, b + e.c_at, 8);
                    table = 1;
                    value = PyFloat_FromDouble(v);
                } else if (span_is(plugin, "histograms") && e.dtype == 2 && e.ndims == 2 &&
                           e.dims[1] == 3 && e.dims[0] > 0 && size == 24 * e.dims[0]) {
                    table = 2;
                } else {
                    break;
                }
            } else {
                if (e.has_meta && plugin_of(e.meta.p, 0, e.meta.n, &plugin) < 0) break;
                table = 1;
                value = PyFloat_FromDouble((double)e.simple);
            }
            if (table == 1 && !value) goto error;
            if (e.has_meta) {   /* remembered for the file's later values of the tag */
                PyObject *md = PyDict_GetItemWithError(metadata, bare);
                if (!md && PyErr_Occurred()) { Py_XDECREF(value); goto error; }
                if (!md || !PyBytes_Check(md) || PyBytes_GET_SIZE(md) != e.meta.n ||
                    memcmp(PyBytes_AS_STRING(md), e.meta.p, e.meta.n)) {
                    PyObject *m = PyBytes_FromStringAndSize((const char *)e.meta.p, e.meta.n);
                    if (!m || PyDict_SetItem(metadata, bare, m) < 0) {
                        Py_XDECREF(m);
                        Py_XDECREF(value);
                        goto error;
                    }
                    Py_DECREF(m);
                }
            }
        }
        PyObject *stepo = PyLong_FromLongLong(e.step), *wallo = PyFloat_FromDouble(e.wall);
        if (!stepo || !wallo) goto fail_row;
        if (table == 1) {
            if (!have_s && !(have_s = table_init(&st, scols, SCALAR_COLS))) goto fail_row;
            PyObject *v[5] = {Py_NewRef(stepo), Py_NewRef(wallo), Py_NewRef(full),
                              Py_NewRef(attempt), value};
            value = NULL;
            if (!table_add(&st, v)) goto fail_row;
            rows++;
        } else if (table == 2) {
            if (!have_h && !(have_h = table_init(&ht, hcols, HISTO_COLS))) goto fail_row;
            Py_ssize_t k = (Py_ssize_t)e.dims[0];
            const unsigned char *c = b + e.c_at;
            /* lefts, limits, counts: the [k, 3] columns, copied out as the pure path does,
             * into one buffer for the call; their arrays are views of it, put in place of
             * the None below once the call's records are done (one numpy call a batch) */
            if (!hist_reserve(&hb, 3 * k)) goto fail_row;
            double *d = hb.vals + hb.len;
            for (Py_ssize_t r = 0; r < k; r++) {
                memcpy(&d[r], c + 24 * r, 8);
                memcpy(&d[k + r], c + 24 * r + 8, 8);
                memcpy(&d[2 * k + r], c + 24 * r + 16, 8);
            }
            double num = pairwise(d + 2 * k, k), lo = d[0], hi = d[2 * k - 1];
            hb.rows[hb.nrows].at = hb.len;
            hb.rows[hb.nrows].k = k;
            hb.rows[hb.nrows].pos = PyList_GET_SIZE(ht.lists[9]);
            hb.nrows++;
            hb.len += 3 * k;
            PyObject *v[13] = {Py_NewRef(stepo), Py_NewRef(wallo), Py_NewRef(full),
                               Py_NewRef(attempt), PyFloat_FromDouble(num),
                               PyFloat_FromDouble(lo), PyFloat_FromDouble(hi),
                               Py_NewRef(Py_None), Py_NewRef(Py_None), Py_NewRef(Py_None),
                               Py_NewRef(Py_None), Py_NewRef(Py_None), Py_NewRef(s_tensor)};
            if (!table_add(&ht, v)) goto fail_row;
            rows++;
            /* the content lives in the histogram row: cut from the raw record */
            Py_ssize_t at = e.c_at, size = e.c_end - e.c_at;
            record = PyBytes_FromStringAndSize(NULL, n - size);
            if (!record) goto fail_row;
            memcpy(PyBytes_AS_STRING(record), b, at);
            memcpy(PyBytes_AS_STRING(record) + at, b + e.c_end, n - e.c_end);
            PyObject *cut = cut_of(at, size, full);
            cuts = cut ? PyList_New(1) : NULL;
            if (!cuts) { Py_XDECREF(cut); Py_DECREF(record); goto fail_row; }
            PyList_SET_ITEM(cuts, 0, cut);
        }
        {
            /* a summary's first tag (under the namespace); "" for other Events */
            PyObject *rtag = e.summaries ? full : kind_names[0];
            PyObject *what = e.what ? kind_names[e.what] : s_empty;
            PyObject *v[12] = {stepo, wallo, Py_NewRef(rtag), Py_NewRef(file),
                               Py_NewRef(source), Py_NewRef(PyTuple_GET_ITEM(rec, 0)),
                               Py_NewRef(PyTuple_GET_ITEM(rec, 1)), Py_NewRef(what),
                               PyLong_FromSsize_t(n), PyLong_FromUnsignedLong(masked(b, n)),
                               record == data ? Py_NewRef(data) : record,
                               cuts == Py_None ? Py_NewRef(Py_None) : cuts};
            stepo = wallo = NULL;
            if (!v[8] || !v[9]) {
                for (int k = 0; k < 12; k++) Py_XDECREF(v[k]);
                goto error;
            }
            if (!table_add(&rt, v)) goto error;
        }
        last_step = e.step;
        last_wall = e.wall;
        any = 1;
        continue;
    fail_row:
        Py_XDECREF(value);
        Py_XDECREF(stepo);
        Py_XDECREF(wallo);
        goto error;
    }
    if (gc_was) PyGC_Enable();
    if (have_h && !hist_finish(&hb, &ht)) return NULL;
    if (!any) return Py_BuildValue("(nnOO)", i, rows, Py_None, Py_None);
    return Py_BuildValue("(nnLd)", i, rows, (long long)last_step, last_wall);
error:
    if (gc_was) PyGC_Enable();
    PyMem_Free(hb.vals);
    PyMem_Free(hb.rows);
    return NULL;
}

static PyObject *py_setup(PyObject *self, PyObject *args) {
    PyObject *fb;
    if (!PyArg_ParseTuple(args, "O", &fb)) return NULL;
    Py_XSETREF(frombuffer, Py_NewRef(fb));
    Py_RETURN_NONE;
}

static PyObject *py_hardware_crc(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(use_hw);
}

static PyMethodDef methods[] = {
    {"masked_crc", py_masked_crc, METH_O, "TFRecord's masked crc32c of a bytes-like object."},
    {"frame", py_frame, METH_VARARGS, "frame(buf, pos) -> (records, pos, status, need)."},
    {"summary_values", py_summary_values, METH_VARARGS,
     "Decodes a Summary's simple_value / histo values from pos into column lists."},
    {"decode_events", py_decode_events, METH_VARARGS,
     "Decodes tfevents records of the per-step kinds into column lists."},
    {"setup", py_setup, METH_VARARGS, "setup(numpy.frombuffer)."},
    {"hardware_crc", py_hardware_crc, METH_NOARGS, "Whether crc32c uses SSE4.2."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "_native assumes a little-endian host");
        return NULL;
    }
    crc_init();
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    use_hw = __builtin_cpu_supports("sse4.2");
#endif
    f8 = PyUnicode_InternFromString("<f8");
    s_empty = PyUnicode_InternFromString("empty");
    s_histo = PyUnicode_InternFromString("histo");
    s_tensor = PyUnicode_InternFromString("tensor");
    s_summary = PyUnicode_InternFromString("summary");
    s_histograms = PyUnicode_InternFromString("histograms");
    zero = PyLong_FromLong(0);
    k_at = PyUnicode_InternFromString("at");
    k_size = PyUnicode_InternFromString("size");
    k_table = PyUnicode_InternFromString("table");
    k_tag = PyUnicode_InternFromString("tag");
    k_index = PyUnicode_InternFromString("index");
    k_part = PyUnicode_InternFromString("part");
    kind_names[0] = PyUnicode_InternFromString("");
    for (int k = 3; k <= 10; k++) kind_names[k] = PyUnicode_InternFromString(KINDS[k]);
    kind_names[1] = kind_names[2] = kind_names[0];
    if (!f8 || !s_histo || !s_tensor || !s_summary || !s_histograms || !zero) return NULL;
    return PyModule_Create(&module);
}
