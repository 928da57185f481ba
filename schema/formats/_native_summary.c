/* Summary values: tag + simple_value or tag + histo (summary_decode's fast path). */
#include "_native.h"

/* -- Summary values: tag + simple_value or tag + histo (summary_decode's fast path) ------- */


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


/* summary_values(data, pos, step, wall, scalars cols, histograms cols, attempt)
 *   -> (pos of the first value not decoded here, rows added); a value that is not field 1,
 * not tag + simple_value / tag + packed histo, or has a non-UTF-8 tag stops it. */
PyObject *py_summary_values(PyObject *self, PyObject *args) {
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
    hbuf_t hb = {0};   /* the bucket arrays: numpy views of one array, made at the end */
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
            if (!hist_reserve(&hb, h.arr_n[0] + h.arr_n[1])) goto fail_tag;
            for (int a = 0; a < 2; a++)
                memcpy(hb.vals + hb.len + (a ? h.arr_n[0] : 0), b + h.arr_at[a],
                       8 * h.arr_n[a]);
            hist_row(&hb, PyList_GET_SIZE(ht.lists[9]), 2, h.arr_n);
            /* histo_fields' column order: min max num sum sum_squares in the proto */
            PyObject *v[13] = {Py_NewRef(step), Py_NewRef(wall), tagobj, Py_NewRef(attempt),
                               PyFloat_FromDouble(h.d[2]), PyFloat_FromDouble(h.d[0]),
                               PyFloat_FromDouble(h.d[1]), PyFloat_FromDouble(h.d[3]),
                               PyFloat_FromDouble(h.d[4]), Py_NewRef(Py_None),
                               Py_NewRef(Py_None), Py_NewRef(Py_None), Py_NewRef(s_histo)};
            if (!table_add(&ht, v)) goto fail;
        }
        rows++;
        pos = end;
    }
    static const int cols2[2] = {9, 10};   /* bucket_limits, bucket_counts */
    if (have_h && !hist_finish(&hb, &ht, cols2, 2)) return NULL;
    return Py_BuildValue("(nn)", pos, rows);
fail_tag:
    Py_XDECREF(tagobj);
fail:
    hist_free(&hb);
    return NULL;
}
