/* tfevents records (tfevents_decode's _fast path and its raw rows). */
#include "_native.h"

/* -- tfevents records (tfevents_decode's _fast path and its raw rows) ---------------------- */



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
int event_of(const unsigned char *b, Py_ssize_t n, event_t *e) {
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
int tags_of(PyObject *cache, PyObject *ns, span_t tag, int strict, PyObject **bare,
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

/* the row a tensor value of plugin `plugin` makes: 1 a scalar (*value), 2 a histogram, 0
 * none the compiled path makes */
int tensor_row(const event_t *e, const unsigned char *b, span_t plugin, double *value) {
    Py_ssize_t size = e->c_end - e->c_at;
    if (span_is(plugin, "scalars") && e->ndims == 0 &&
        ((e->dtype == 1 && size == 4) || (e->dtype == 2 && size == 8))) {
        if (e->dtype == 1) { float x; memcpy(&x, b + e->c_at, 4); *value = x; }
        else memcpy(value, b + e->c_at, 8);
        return 1;
    }
    if (span_is(plugin, "histograms") && e->dtype == 2 && e->ndims == 2 && e->dims[1] == 3 &&
        e->dims[0] > 0 && size == 24 * e->dims[0])
        return 2;
    return 0;
}

/* which row the summary of Event e makes, as tfevents_decode._fast decides: 1 a scalar (its
 * value in *value), 2 a histogram (e's content), 0 none the compiled path makes (the caller
 * stops there), -1 an error; *full is the row's tag (borrowed from the file's tag cache, alive
 * for this record). A value's own metadata is remembered for the file's later values. */
int event_row(event_t *e, const unsigned char *b, PyObject *ns, PyObject *metadata,
              PyObject *cache, PyObject **full, double *value) {
    PyObject *bare = NULL;
    span_t plugin = {NULL, 0};
    int table;
    int ok = tags_of(cache, ns, e->tag.n < 0 ? (span_t){(const unsigned char *)"", 0} : e->tag,
                     e->kind == 2, &bare, full);
    if (ok <= 0) return ok;   /* 0: a non-UTF-8 simple_value tag: the general path warns */
    if (e->kind == 8) {
        int found;
        if (e->has_meta) {
            found = plugin_of(e->meta.p, 0, e->meta.n, &plugin);
        } else {
            PyObject *md = PyDict_GetItemWithError(metadata, bare);
            if (!md && PyErr_Occurred()) return -1;
            found = (md && PyBytes_Check(md))
                        ? plugin_of((const unsigned char *)PyBytes_AS_STRING(md), 0,
                                    PyBytes_GET_SIZE(md), &plugin)
                        : (md ? -1 : 0);
        }
        if (found < 0) return 0;
        if (!(table = tensor_row(e, b, plugin, value))) return 0;
    } else {
        if (e->has_meta && plugin_of(e->meta.p, 0, e->meta.n, &plugin) < 0) return 0;
        table = 1;
        *value = (double)e->simple;
    }
    if (e->has_meta) {   /* remembered for the file's later values of the tag */
        PyObject *md = PyDict_GetItemWithError(metadata, bare);
        if (!md && PyErr_Occurred()) return -1;
        if (!md || !PyBytes_Check(md) || PyBytes_GET_SIZE(md) != e->meta.n ||
            memcmp(PyBytes_AS_STRING(md), e->meta.p, e->meta.n)) {
            PyObject *m = PyBytes_FromStringAndSize((const char *)e->meta.p, e->meta.n);
            if (!m || PyDict_SetItem(metadata, bare, m) < 0) {
                Py_XDECREF(m);
                return -1;
            }
            Py_DECREF(m);
        }
    }
    return table;
}

/* decode_events(records, i, file, source, namespace, metadata, tags, raw lists...,
 *               scalars cols, histograms cols, attempt)
 *   -> (index of the first record not decoded here, decoded rows added, last step, last wall)
 * records: [(offset, index, data)]. */
PyObject *py_decode_events(PyObject *self, PyObject *args) {
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
        PyObject *full = NULL;
        PyObject *cuts = Py_None, *record = data;
        int table = 0;   /* decoded row: 1 scalar, 2 histogram */
        PyObject *value = NULL;
        if (e.summaries) {
            double v;
            table = event_row(&e, b, ns, metadata, cache, &full, &v);
            if (table < 0) goto error;
            if (!table) break;
            if (table == 1 && !(value = PyFloat_FromDouble(v))) goto error;
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
            Py_ssize_t counts3[3] = {k, k, k};
            hist_row(&hb, PyList_GET_SIZE(ht.lists[9]), 3, counts3);
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
    /* lefts, limits, counts in the buffer -> columns bucket_lefts, bucket_limits, _counts */
    static const int cols3[3] = {11, 9, 10};
    if (have_h && !hist_finish(&hb, &ht, cols3, 3)) return NULL;
    if (!any) return Py_BuildValue("(nnOO)", i, rows, Py_None, Py_None);
    return Py_BuildValue("(nnLd)", i, rows, (long long)last_step, last_wall);
error:
    if (gc_was) PyGC_Enable();
    hist_free(&hb);
    return NULL;
}
