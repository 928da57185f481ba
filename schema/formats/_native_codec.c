/* The dump codec's words to byte planes in one pass (schema/codecs/tfdbg_v1_codec.py: the
 * pure twin is _residual + the per-row transpose in Encoder.encode). numpy took 7 passes over
 * a step's words with 25 MB temporaries, and a strided copy a row for the planes; this reads
 * each word once and writes each of its bytes once, without the GIL. */
#include "_native.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")   /* vectorizes the plane loops (-O2 leaves them scalar) */
#endif

/* Each row's words are copied into `cur` (the next steps' history), then zigzag(cur -
 * prediction) of each word, or the word itself for order 0, goes straight to its byte planes;
 * all in wrapping unsigned arithmetic of the word's width, as numpy's int arithmetic wraps.
 * One loop an order over a row, its pointers `restrict`, so gcc vectorizes it whole (the
 * plane loop's k is unrolled). Against a gather of every row first and then a block of
 * words at a time through a scratch array, one plane at a time: 9.3-10 ms against 14.7-16.5
 * for 2 509 float32 rows of 9 kB at order 3. */
#define ZIGZAG(T, BITS, d) ((T)((T)((d) << 1) ^ (T)(0 - (T)((d) >> ((BITS) - 1)))))
#define PLANES(T, v, o, n, j)                                                              \
    for (int k = 0; k < (int)sizeof(T); k++) (o)[k * (n) + (j)] = (unsigned char)((v) >> (8 * k))
#define STORED(T, BITS)                                                                      \
    /* one row; restrict on parameters (gcc ignores it on locals and versions for aliasing) */ \
    __attribute__((noinline)) static void row_##BITS(                                       \
            const T *restrict c, const T *restrict a, const T *restrict b,                 \
            const T *restrict e, int order, Py_ssize_t n, unsigned char *restrict o) {     \
        switch (order) {                                                                   \
        case 0:                                                                            \
            for (Py_ssize_t j = 0; j < n; j++) { const T v = c[j]; PLANES(T, v, o, n, j); } \
            break;                                                                         \
        case 1:                                                                            \
            for (Py_ssize_t j = 0; j < n; j++) {                                           \
                const T d = (T)(c[j] - a[j]);                                              \
                const T v = ZIGZAG(T, BITS, d);                                            \
                PLANES(T, v, o, n, j);                                                     \
            }                                                                              \
            break;                                                                         \
        case 2:                                                                            \
            for (Py_ssize_t j = 0; j < n; j++) {                                           \
                const T d = (T)(c[j] - (T)(a[j] + (T)(a[j] - b[j])));                      \
                const T v = ZIGZAG(T, BITS, d);                                            \
                PLANES(T, v, o, n, j);                                                     \
            }                                                                              \
            break;                                                                         \
        default:                                                                           \
            for (Py_ssize_t j = 0; j < n; j++) {                                           \
                const T d = (T)(c[j] - (T)((T)(3 * (T)(a[j] - b[j])) + e[j]));             \
                const T v = ZIGZAG(T, BITS, d);                                            \
                PLANES(T, v, o, n, j);                                                     \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    static void stored_##BITS(const unsigned char *const *src, T *cur, const T *h1,        \
                              const T *h2, const T *h3, const unsigned char *orders,       \
                              const int64_t *sizes, const int64_t *out_at, Py_ssize_t rows, \
                              unsigned char *out) {                                        \
        Py_ssize_t at = 0;                                                                 \
        for (Py_ssize_t r = 0; r < rows; r++) {                                            \
            const Py_ssize_t n = (Py_ssize_t)sizes[r];                                     \
            memcpy(cur + at, src[r], (size_t)n * sizeof(T));                               \
            row_##BITS(cur + at, h1 ? h1 + at : NULL, h2 ? h2 + at : NULL,                 \
                       h3 ? h3 + at : NULL, orders[r], n, out + out_at[r]);                \
            at += n;                                                                       \
        }                                                                                  \
    }
STORED(uint8_t, 8)
STORED(uint16_t, 16)
STORED(uint32_t, 32)
STORED(uint64_t, 64)

/* codec_planes(views, h1, h2, h3, orders, w, cur, out, out_at[, spans]): gathers the rows'
 * words (`views`, bytes-like, a row each; with `spans`, int64 (start, end) a row, the row is
 * view[start:end], so the caller makes no slice objects) into `cur` (writable, their total
 * length), and writes each
 * row's stored words (order orders[r]) as w byte planes into `out` at out_at[r] (int64 a row:
 * the caller lays out a binary column's data buffer, other rows between). The histories are the rows' previous words joined as `cur` is (None where no
 * row's order reaches them). The caller allocates cur and out (numpy: huge pages, where a
 * fresh 25 MB bytes object cost ~20 ms of page faults a step here). */
PyObject *py_codec_planes(PyObject *self, PyObject *args) {
    PyObject *views, *objs[3], *span_obj = Py_None;
    Py_buffer hist[3] = {{0}}, orders, cur, out, where, spans = {0};
    int w, got_spans = 0;
    if (!PyArg_ParseTuple(args, "O!OOOy*iw*w*y*|O", &PyList_Type, &views, &objs[0], &objs[1],
                          &objs[2], &orders, &w, &cur, &out, &where, &span_obj))
        return NULL;
    const int64_t *out_at = where.buf;
    PyObject *result = NULL;
    int got[3] = {0, 0, 0};
    const Py_ssize_t rows = PyList_GET_SIZE(views);
    Py_ssize_t held = 0, total = 0, top = 0;
    Py_buffer *bufs = PyMem_Calloc(rows ? rows : 1, sizeof(Py_buffer));
    int64_t *sizes = PyMem_Calloc(rows ? rows : 1, sizeof(int64_t));
    const unsigned char **row_at = PyMem_Calloc(rows ? rows : 1, sizeof(unsigned char *));
    Py_ssize_t *row_len = PyMem_Calloc(rows ? rows : 1, sizeof(Py_ssize_t));
    const unsigned char *ord = orders.buf;
    if (bufs == NULL || sizes == NULL || row_at == NULL || row_len == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (span_obj != Py_None) {
        if (PyObject_GetBuffer(span_obj, &spans, PyBUF_SIMPLE) < 0) goto done;
        got_spans = 1;
    }
    if ((w != 1 && w != 2 && w != 4 && w != 8) || orders.len != rows ||
        where.len != rows * (Py_ssize_t)sizeof(int64_t) ||
        (got_spans && spans.len != rows * 2 * (Py_ssize_t)sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "codec_planes: a bad width, or not an order, a place "
                        "(and a span) a row");
        goto done;
    }
    for (; held < rows; held++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(views, held), &bufs[held], PyBUF_SIMPLE) < 0)
            goto done;
        row_at[held] = bufs[held].buf;
        row_len[held] = bufs[held].len;
        if (got_spans) {
            const int64_t *sp = (const int64_t *)spans.buf + 2 * held;
            if (sp[0] < 0 || sp[0] > sp[1] || sp[1] > bufs[held].len) {
                held++;
                PyErr_Format(PyExc_ValueError, "codec_planes: row %zd's span %lld..%lld is "
                             "outside its %zd bytes", held - 1, (long long)sp[0],
                             (long long)sp[1], bufs[held - 1].len);
                goto done;
            }
            row_at[held] += sp[0];
            row_len[held] = (Py_ssize_t)(sp[1] - sp[0]);
        }
        if (row_len[held] % w || ord[held] > 3) {
            held++;
            PyErr_Format(PyExc_ValueError, "codec_planes: row %zd has %zd bytes (width %d) "
                         "or order %d", held - 1, row_len[held - 1], w, (int)ord[held - 1]);
            goto done;
        }
        if (out_at[held] < 0 || out_at[held] > out.len - row_len[held]) {
            held++;
            PyErr_Format(PyExc_ValueError, "codec_planes: row %zd's place %lld is outside "
                         "the %zd bytes of out", held - 1, (long long)out_at[held - 1],
                         out.len);
            goto done;
        }
        sizes[held] = row_len[held] / w;
        total += row_len[held];
        if (ord[held] > top) top = ord[held];
    }
    if (cur.len != total) {
        PyErr_SetString(PyExc_ValueError, "codec_planes: cur must be as long as the rows");
        goto done;
    }
    for (int k = 0; k < 3; k++) {
        if (objs[k] == Py_None) {
            if (k < top) {
                PyErr_Format(PyExc_ValueError, "codec_planes: an order-%d row needs history %d",
                             (int)top, k + 1);
                goto done;
            }
            continue;
        }
        if (PyObject_GetBuffer(objs[k], &hist[k], PyBUF_SIMPLE) < 0) goto done;
        got[k] = 1;
        if (hist[k].len != total) {
            PyErr_SetString(PyExc_ValueError, "codec_planes: a history is not as long as the rows");
            goto done;
        }
    }
    {
        unsigned char *c = cur.buf, *o = out.buf;
        const void *h[3] = {got[0] ? hist[0].buf : NULL, got[1] ? hist[1].buf : NULL,
                            got[2] ? hist[2].buf : NULL};
        Py_BEGIN_ALLOW_THREADS
        switch (w) {
        case 1: stored_8(row_at, (void *)c, h[0], h[1], h[2], ord, sizes, out_at, rows, o); break;
        case 2: stored_16(row_at, (void *)c, h[0], h[1], h[2], ord, sizes, out_at, rows, o); break;
        case 4: stored_32(row_at, (void *)c, h[0], h[1], h[2], ord, sizes, out_at, rows, o); break;
        default: stored_64(row_at, (void *)c, h[0], h[1], h[2], ord, sizes, out_at, rows, o); break;
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t r = 0; r < held; r++) PyBuffer_Release(&bufs[r]);
    PyMem_Free(bufs);
    PyMem_Free(sizes);
    PyMem_Free(row_at);
    PyMem_Free(row_len);
    if (got_spans) PyBuffer_Release(&spans);
    PyBuffer_Release(&orders);
    PyBuffer_Release(&cur);
    PyBuffer_Release(&out);
    PyBuffer_Release(&where);
    for (int k = 0; k < 3; k++)
        if (got[k]) PyBuffer_Release(&hist[k]);
    return result;
}
