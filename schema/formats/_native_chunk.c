/* A whole chunk of a tfevents file -> column buffers (import-tfevents): the records framed in
 * one bytes buffer (frame_spans: their positions, no bytes object a record) decoded as
 * decode_events decodes them, but into flat C arrays handed back as bytes that pyarrow wraps
 * without copying (codecs/tfevents_columns.py) instead of a Python object per value. Tags are
 * numbered per call (one string each). It stops, as decode_events does, at the first record
 * it cannot decode exactly as the pure path would; the caller decodes that one and calls again. */
#include "_native.h"

#include <math.h>

/* a column: a bytes object written in place and cut to its length at the end (no copy) */
typedef struct { PyObject *obj; char *p; Py_ssize_t len, cap; } grow_t;

static int reserve(grow_t *g, Py_ssize_t n) {
    if (g->len + n > g->cap) {
        Py_ssize_t cap = g->cap ? g->cap : 4096;
        while (cap < g->len + n) cap *= 2;
        if (!g->obj) g->obj = PyBytes_FromStringAndSize(NULL, cap);
        else if (_PyBytes_Resize(&g->obj, cap) < 0) g->obj = NULL;
        if (!g->obj) return 0;
        g->p = PyBytes_AS_STRING(g->obj);
        g->cap = cap;
    }
    return 1;
}

static inline int grow(grow_t *g, const void *src, Py_ssize_t n) {
    if (g->len + n > g->cap && !reserve(g, n)) return 0;
    memcpy(g->p + g->len, src, n);
    g->len += n;
    return 1;
}

/* the column as a bytes object of its length (a new reference); g no longer holds it */
static PyObject *take(grow_t *g) {
    PyObject *o = g->obj;
    g->obj = NULL;
    if (!o) return PyBytes_FromStringAndSize(NULL, 0);
    if (_PyBytes_Resize(&o, g->len) < 0) return NULL;
    return o;
}

#define FIRST_ROOM (256 << 10)   /* bytes a column starts with, at most */

/* Store formats 8 and 9 (codecs/histogram_edges.py, which cuts the pure path's rows the same
 * way): whether a [k, 3] histogram's left edges repeat its right edges (all but its first
 * needless), and in *even whether its right edges are also tf.linspace's from the first left
 * edge to the last right one (all but that last needless). Bit for bit: the expansion
 * computes `first + step * i` as numpy does, one rounding a step (no contraction to FMA:
 * setup.py builds with -ffp-contract=off, and each operation is a statement of its own). */
static int cut_edges(const double *lefts, const double *limits, Py_ssize_t k, int *even) {
    *even = 0;
    if (k < 2 || memcmp(lefts + 1, limits, 8 * (size_t)(k - 1)) != 0) return 0;
    double first = lefts[0], last = limits[k - 1];
    if (!isfinite(first) || !isfinite(last)) return 1;
    double span = last - first;
    double step = span / (double)k;
    for (Py_ssize_t i = 1; i < k; i++) {
        double rise = step * (double)i;
        double edge = first + rise;
        if (memcmp(&edge, &limits[i - 1], 8) != 0) return 1;
    }
    *even = 1;
    return 1;
}
#define PUT(g, v) grow(&(g), &(v), sizeof(v))

/* the columns of one call, in the order chunk_names lists them (tfevents_columns.py) */
enum { R_STEP, R_WALL, R_TAG, R_OFFSET, R_INDEX, R_WHAT, R_LENGTH, R_CRC, R_REC_END, R_DATA,
       R_CUT, C_AT, C_SIZE, S_STEP, S_WALL, S_TAG, S_VALUE, H_STEP, H_WALL, H_TAG, H_NUM, H_MIN,
       H_MAX, H_END, H_LIMITS, H_COUNTS, H_LEFTS, H_LIMITS_END, H_LEFTS_END, NCOLS };

/* frame_spans(buf, pos) -> (int64 positions of the records' headers as bytes, pos after them,
 * status, need): frame() without a bytes object a record */
PyObject *py_frame_spans(PyObject *self, PyObject *args) {
    Py_buffer b;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "y*n", &b, &pos)) return NULL;
    const unsigned char *buf = b.buf;
    Py_ssize_t n = b.len;
    int status = 0;
    unsigned long long need = 0;
    grow_t out = {0};
    int ok = 1;
    while (n - pos >= 12) {
        uint64_t length;
        uint32_t lcrc, dcrc;
        memcpy(&length, buf + pos, 8);
        memcpy(&lcrc, buf + pos + 8, 4);
        if (masked(buf + pos, 8) != lcrc) { status = 1; break; }
        if (length > (uint64_t)PY_SSIZE_T_MAX - 16) { need = ~0ULL; break; }
        if ((uint64_t)(n - pos) < length + 16) { need = length + 16; break; }
        memcpy(&dcrc, buf + pos + 12 + length, 4);
        if (masked(buf + pos + 12, (size_t)length) != dcrc) {
            status = 2;
            need = length + 16;
            break;
        }
        int64_t at = pos;
        if (!PUT(out, at)) { ok = 0; break; }
        pos += 16 + (Py_ssize_t)length;
    }
    PyBuffer_Release(&b);
    PyObject *spans = ok ? take(&out) : NULL;
    Py_XDECREF(out.obj);
    if (!spans) return NULL;
    return Py_BuildValue("(NniK)", spans, pos, status, need);
}

/* the call's number of tag `full`, adding it to `tags` (a list) the first time */
static int tag_number(PyObject *numbers, PyObject *tags, PyObject *full, int32_t *out) {
    PyObject *hit = PyDict_GetItemWithError(numbers, full);
    if (hit) { *out = (int32_t)PyLong_AsLong(hit); return 1; }
    if (PyErr_Occurred()) return 0;
    PyObject *k = PyLong_FromSsize_t(PyList_GET_SIZE(tags));
    if (!k || PyDict_SetItem(numbers, full, k) < 0 || PyList_Append(tags, full) < 0) {
        Py_XDECREF(k);
        return 0;
    }
    Py_DECREF(k);
    *out = (int32_t)(PyList_GET_SIZE(tags) - 1);
    return 1;
}

/* the tensor values' tags seen in this call, each with the metadata it came with last: a
 * record whose tag and metadata bytes are those of one seen is decoded without the file's
 * dicts (its tag, metadata and plugin are known; the metadata is in the file's dict already,
 * as nothing else writes it during the call). ASCII tags only: two non-UTF-8 tags may
 * decode to one string, whose metadata either may change. */
#define SEEN 32
typedef struct { span_t tag, meta, plugin; PyObject *full; int32_t number; } seen_t;

static seen_t *seen_find(seen_t *seen, int n, const event_t *e) {
    for (int k = 0; k < n; k++)
        if (seen[k].tag.n == e->tag.n && !memcmp(seen[k].tag.p, e->tag.p, e->tag.n))
            return &seen[k];
    return NULL;
}

static void seen_put(seen_t *seen, int *n, const event_t *e, PyObject *full, int32_t number) {
    span_t plugin = {NULL, 0};
    for (Py_ssize_t k = 0; k < e->tag.n; k++)
        if (e->tag.p[k] >= 0x80) return;
    if (plugin_of(e->meta.p, 0, e->meta.n, &plugin) < 0) return;
    seen_t *s = seen_find(seen, *n, e);
    if (!s) {
        if (*n == SEEN) return;
        s = &seen[(*n)++];
    }
    *s = (seen_t){e->tag, e->meta, plugin, full, number};
}

/* decode_chunk(buf, spans, i, base, first_index, namespace, metadata, tags cache)
 *   -> (index in spans of the first record not decoded here, last step, last wall (None,
 *       None if none was), tags [str], (NCOLS bytes columns))
 * spans: frame_spans' positions in buf (records whose checksums were checked); a record's
 * offset in the file is base + its position, its index in the file first_index + its number. */
PyObject *py_decode_chunk(PyObject *self, PyObject *args) {
    Py_buffer buf, sp;
    Py_ssize_t i, base, first;
    PyObject *ns, *metadata, *cache;
    if (!PyArg_ParseTuple(args, "y*y*nnnUO!O!", &buf, &sp, &i, &base, &first, &ns,
                          &PyDict_Type, &metadata, &PyDict_Type, &cache))
        return NULL;
    const int64_t *spans = sp.buf;
    Py_ssize_t total = sp.len / 8;
    grow_t c[NCOLS];
    memset(c, 0, sizeof c);
    PyObject *tags = PyList_New(0), *numbers = PyDict_New(), *result = NULL;
    int64_t last_step = 0;
    double last_wall = 0;
    int any = 0;
    int32_t zero32 = 0;
    seen_t seen[SEEN];
    int nseen = 0;
    if (!tags || !numbers || !PUT(c[R_REC_END], zero32) || !PUT(c[H_END], zero32) ||
        !PUT(c[H_LIMITS_END], zero32) || !PUT(c[H_LEFTS_END], zero32))
        goto done;
    /* room for the first records (more as they come: a bytes object grows in place, by
     * mremap once large); room for the whole rest up front made a call that stops early,
     * after a few records, cost a millisecond */
    Py_ssize_t rest = i < total ? buf.len - spans[i] : 0;
    if (rest < 0) rest = 0;
    for (int k = 0; k < NCOLS; k++) {
        Py_ssize_t bound = k == R_DATA ? rest : k >= H_LIMITS && k <= H_LEFTS ? rest / 3 + 8
                                                                : 8 * (total - i) + 8;
        if (!reserve(&c[k], bound < FIRST_ROOM ? bound : FIRST_ROOM)) goto done;
    }
    for (; i < total; i++) {
        int64_t at = spans[i];
        if (at < 0 || at > buf.len - 16) break;   /* not frame_spans' */
        uint64_t length;
        memcpy(&length, (const char *)buf.buf + at, 8);
        if (length > (uint64_t)(buf.len - at - 16)) break;
        const unsigned char *b = (const unsigned char *)buf.buf + at + 12;
        Py_ssize_t n = (Py_ssize_t)length;
        if (c[R_DATA].len + n > INT32_MAX - 1 || c[H_COUNTS].len > (INT32_MAX - 1) / 2) break;
        event_t e;
        if (!event_of(b, n, &e)) break;
        PyObject *full = NULL;
        double value = 0;
        int table = 0;
        int32_t tag;
        int cached = e.summaries && e.kind == 8 && e.has_meta && e.tag.n >= 0;
        seen_t *s = cached ? seen_find(seen, nseen, &e) : NULL;
        if (s && s->meta.n == e.meta.n && !memcmp(s->meta.p, e.meta.p, e.meta.n)) {
            if (!(table = tensor_row(&e, b, s->plugin, &value))) break;
            tag = s->number;
        } else {
            if (e.summaries) {
                table = event_row(&e, b, ns, metadata, cache, &full, &value);
                if (table < 0) goto done;
                if (!table) break;
            }
            if (!tag_number(numbers, tags, e.summaries ? full : kind_names[0], &tag)) goto done;
            if (cached) seen_put(seen, &nseen, &e, full, tag);
        }
        int64_t offset = base + at, index = first + i, len64 = n;
        int64_t crc;
        uint32_t crc32;
        memcpy(&crc32, b + n, 4);   /* the footer frame_spans checked: the data's masked crc */
        crc = crc32;
        int32_t what = e.what;
        uint8_t cut = table == 2;
        if (!PUT(c[R_STEP], e.step) || !PUT(c[R_WALL], e.wall) || !PUT(c[R_TAG], tag) ||
            !PUT(c[R_OFFSET], offset) || !PUT(c[R_INDEX], index) || !PUT(c[R_WHAT], what) ||
            !PUT(c[R_LENGTH], len64) || !PUT(c[R_CRC], crc) || !PUT(c[R_CUT], cut))
            goto done;
        if (table == 1) {
            if (!PUT(c[S_STEP], e.step) || !PUT(c[S_WALL], e.wall) || !PUT(c[S_TAG], tag) ||
                !PUT(c[S_VALUE], value) || !grow(&c[R_DATA], b, n))
                goto done;
        } else if (table == 2) {
            Py_ssize_t k = (Py_ssize_t)e.dims[0];
            const unsigned char *t = b + e.c_at;
            /* lefts, limits, counts: the [k, 3] columns */
            double *arr[3];
            for (int col = 0; col < 3; col++) {
                grow_t *g = &c[col == 0 ? H_LEFTS : col == 1 ? H_LIMITS : H_COUNTS];
                if (!reserve(g, 8 * k)) goto done;
                arr[col] = (double *)(g->p + g->len);
                g->len += 8 * k;
                for (Py_ssize_t r = 0; r < k; r++) memcpy(&arr[col][r], t + 24 * r + 8 * col, 8);
            }
            const double *lefts = arr[0], *limits = arr[1], *counts = arr[2];
            double num = pairwise(counts, k), lo = lefts[0], hi = limits[k - 1];
            /* the store's form (histogram_edges.py): edges it gives back are not kept */
            int even = 0, repeat = cut_edges(lefts, limits, k, &even);
            if (even) {
                arr[1][0] = hi;
                c[H_LIMITS].len -= 8 * (k - 1);
            }
            if (repeat) c[H_LEFTS].len -= 8 * (k - 1);
            int32_t end = (int32_t)(c[H_COUNTS].len / 8), mend = (int32_t)(c[H_LIMITS].len / 8),
                    lend = (int32_t)(c[H_LEFTS].len / 8);
            int64_t cat = e.c_at, csize = e.c_end - e.c_at;
            if (!PUT(c[H_STEP], e.step) || !PUT(c[H_WALL], e.wall) || !PUT(c[H_TAG], tag) ||
                !PUT(c[H_NUM], num) || !PUT(c[H_MIN], lo) || !PUT(c[H_MAX], hi) ||
                !PUT(c[H_END], end) || !PUT(c[H_LIMITS_END], mend) ||
                !PUT(c[H_LEFTS_END], lend) || !PUT(c[C_AT], cat) || !PUT(c[C_SIZE], csize) ||
                /* the content lives in the histogram row: cut from the raw record */
                !grow(&c[R_DATA], b, e.c_at) || !grow(&c[R_DATA], b + e.c_end, n - e.c_end))
                goto done;
        } else if (!grow(&c[R_DATA], b, n)) {
            goto done;
        }
        int32_t rend = (int32_t)c[R_DATA].len;
        if (!PUT(c[R_REC_END], rend)) goto done;
        last_step = e.step;
        last_wall = e.wall;
        any = 1;
    }
    PyObject *cols = PyTuple_New(NCOLS);
    if (!cols) goto done;
    for (int k = 0; k < NCOLS; k++) {
        PyObject *o = take(&c[k]);
        if (!o) { Py_DECREF(cols); goto done; }
        PyTuple_SET_ITEM(cols, k, o);
    }
    result = any ? Py_BuildValue("(nLdON)", i, (long long)last_step, last_wall, tags, cols)
                 : Py_BuildValue("(nOOON)", i, Py_None, Py_None, tags, cols);
done:
    for (int k = 0; k < NCOLS; k++) Py_XDECREF(c[k].obj);
    Py_XDECREF(tags);
    Py_XDECREF(numbers);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&sp);
    return result;
}
