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
 * This file: the module, crc32c and framing; the decoding in _native_*.c (_native.h);
 * _native_chunk.c: whole chunks into flat columns, for import-tfevents.
 * _native_capture.c: the in-memory dump capture's records into TensorFile objects.
 */
#include "_native.h"

/* the module's objects, made once at import (shared through _native.h) */
PyObject *frombuffer;   /* numpy.frombuffer, set by setup() */
PyObject *f8, *s_empty, *s_histo, *s_tensor, *s_summary, *s_histograms, *zero;
PyObject *kind_names[11];
PyObject *k_at, *k_size, *k_table, *k_tag, *k_index, *k_part;
static const char *KINDS[] = {NULL, NULL, NULL, "file_version", "graph_def", "summary",
                              "log_message", "session_log", "tagged_run_metadata",
                              "meta_graph_def", "source_metadata"};

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

uint32_t masked(const unsigned char *p, size_t n) {
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
    {"frame_spans", py_frame_spans, METH_VARARGS,
     "frame_spans(buf, pos) -> (int64 record positions as bytes, pos, status, need)."},
    {"decode_chunk", py_decode_chunk, METH_VARARGS,
     "Decodes the framed records of a buffer into flat columns (import-tfevents)."},
    {"codec_planes", py_codec_planes, METH_VARARGS,
     "codec_planes(views, h1, h2, h3, orders, w, cur, out, out_at[, spans]): the dump "
     "codec's byte planes."},
    {"capture_records", py_capture_records, METH_VARARGS,
     "capture_records(blob, pos, names, dtypes, make, out, seen): the dump capture's records."},
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
    if (PyType_Ready(&RecordSlice_Type) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "RecordSlice", (PyObject *)&RecordSlice_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    /* native.py loads only the build of its own sources: an editable install keeps an older
     * build until it is reinstalled */
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", TFBB_NATIVE_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

