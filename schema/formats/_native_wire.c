/* The protobuf wire format, and rows appended to the row builder's column lists. */
#include "_native.h"

/* -- the wire format ---------------------------------------------------------------------- */


/* a varint at *i (< end); 0 if it runs past end or is longer than 10 bytes */
int rd_varint(const unsigned char *b, Py_ssize_t *i, Py_ssize_t end, uint64_t *out) {
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

int rd_field(const unsigned char *b, Py_ssize_t *i, Py_ssize_t end, field_t *f) {
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
int plugin_of(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, span_t *name) {
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

int span_is(span_t s, const char *text) {
    size_t n = strlen(text);
    return s.n == (Py_ssize_t)n && memcmp(s.p, text, n) == 0;
}

/* numpy's pairwise sum of doubles (float(counts.sum()) in the pure path), so the histogram
 * row's num is the same double */
double pairwise(const double *a, Py_ssize_t n) {
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


const char *SCALAR_COLS[] = {"step", "wall_time", "tag", "attempt", "value", NULL};
const char *HISTO_COLS[] = {"step", "wall_time", "tag", "attempt", "num", "min", "max",
                                   "sum", "sum_squares", "bucket_limits", "bucket_counts",
                                   "bucket_lefts", "source", NULL};
const char *RAW_COLS[] = {"step", "wall_time", "tag", "file", "source", "offset",
                                 "index", "what", "length", "crc", "record", "cuts", NULL};

/* the lists of `cols` in `names`' order; the dict must hold exactly those names */
int table_init(table_t *t, PyObject *cols, const char **names) {
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
int table_add(table_t *t, PyObject **values) {
    int ok = 1;
    for (int k = 0; k < t->count; k++) {
        if (ok && PyList_Append(t->lists[k], values[k]) < 0) ok = 0;
        Py_DECREF(values[k]);
    }
    return ok;
}

/* -- histogram buckets: copied into one buffer a call, made into numpy views at its end ---- */

int hist_reserve(hbuf_t *h, Py_ssize_t more) {
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

/* a new row's arrays start here: `narr` arrays of the counts given, consecutive */
void hist_row(hbuf_t *h, Py_ssize_t pos, int narr, const Py_ssize_t *counts) {
    hrow_t *row = &h->rows[h->nrows++];
    row->pos = pos;
    Py_ssize_t at = h->len;
    for (int c = 0; c < narr; c++) {
        row->at[c] = at;
        row->n[c] = counts[c];
        at += counts[c];
    }
    h->len = at;
}

/* puts the arrays (views of one array of the call's buckets: one numpy call, not one an
 * array) in place of the placeholders: the c-th array of a row into column cols[c] */
int hist_finish(hbuf_t *h, table_t *ht, const int *cols, int narr) {
    int ok = 1;
    if (h->nrows) {
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)h->vals,
                                                    h->len * (Py_ssize_t)sizeof(double));
        PyObject *all = bytes ? PyObject_CallFunctionObjArgs(frombuffer, bytes, f8, NULL) : NULL;
        Py_XDECREF(bytes);
        if (!all) ok = 0;
        for (Py_ssize_t r = 0; ok && r < h->nrows; r++) {
            hrow_t *row = &h->rows[r];
            for (int c = 0; ok && c < narr; c++) {
                PyObject *view = PySequence_GetSlice(all, row->at[c], row->at[c] + row->n[c]);
                if (!view || PyList_SetItem(ht->lists[cols[c]], row->pos, view) < 0) ok = 0;
            }
        }
        Py_XDECREF(all);
    }
    hist_free(h);
    return ok;
}

void hist_free(hbuf_t *h) {
    PyMem_Free(h->vals);
    PyMem_Free(h->rows);
    memset(h, 0, sizeof *h);
}
