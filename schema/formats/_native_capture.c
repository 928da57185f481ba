/* The in-memory dump capture's records -> TensorFile objects (recorder/tf1/capture_records.py:
 * parse_records is the spec and the pure twin). On 2 509 records the Python loop took ~8 ms
 * (the data aside) and this 3-5 ms, making the same objects from the record headers.
 *
 * capture_records(blob, pos, names, dtypes, make, out, seen) -> pos of the first record it
 * did not take (len(blob) when it took them all). It stops, touching nothing of that record,
 * where Python must decide: a header short or malformed (Python raises the error), names not
 * in `names` yet (Python decodes and learns them), a dtype not in `dtypes`. */
#include "_native.h"

#define HEAD 48   /* struct "<IQiiIIIIIII" of capture_records.py: _HEAD */

static uint32_t u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static PyObject *dims_of(const unsigned char *p, uint32_t rank) {
    PyObject *dims = PyTuple_New(rank);
    if (dims == NULL) return NULL;
    for (uint32_t k = 0; k < rank; k++) {
        int64_t d;
        memcpy(&d, p + 8 * (size_t)k, 8);
        PyObject *v = PyLong_FromLongLong(d);
        if (v == NULL) { Py_DECREF(dims); return NULL; }
        PyTuple_SET_ITEM(dims, k, v);
    }
    return dims;
}

/* One well-formed record whose names and dtype are known -> out.append(make(...)).
 * Returns 1 done, 0 Python's to take, -1 error set. */
static int take_one(PyObject *blob, PyObject *base, const unsigned char *b, Py_ssize_t i,
                    Py_ssize_t end, PyObject *names, PyObject *dtypes, PyObject *make,
                    PyObject *out, PyObject *seen, Py_ssize_t *next) {
    if (end - i < HEAD) return 0;
    const uint32_t n = u32(b + i);
    uint64_t ts;
    memcpy(&ts, b + i + 4, 8);
    int32_t slot, dtype;
    memcpy(&slot, b + i + 12, 4);
    memcpy(&dtype, b + i + 16, 4);
    const uint32_t rank = u32(b + i + 20), ld = u32(b + i + 24), ln = u32(b + i + 28),
                   lo = u32(b + i + 32), le = u32(b + i + 36), cat = u32(b + i + 40),
                   clen = u32(b + i + 44);
    const uint64_t stop = (uint64_t)i + 4 + n, j = (uint64_t)i + HEAD;
    if (stop > (uint64_t)end ||
        j + 8 * (uint64_t)rank + ld + ln + lo + le != stop ||
        (clen && (uint64_t)cat + clen > le))
        return 0;
    const unsigned char *names_at = b + j + 8 * (uint64_t)rank;
    PyObject *raw = PyBytes_FromStringAndSize((const char *)names_at, (Py_ssize_t)ld + ln + lo);
    if (raw == NULL) return -1;
    PyObject *key = Py_BuildValue("(NII)", raw, ld, ln);
    if (key == NULL) return -1;
    PyObject *known = PyDict_GetItemWithError(names, key);   /* borrowed */
    Py_DECREF(key);
    if (known == NULL) return PyErr_Occurred() ? -1 : 0;
    PyObject *dkey = PyLong_FromLong(dtype);
    if (dkey == NULL) return -1;
    PyObject *dname = PyDict_GetItemWithError(dtypes, dkey);   /* borrowed */
    Py_DECREF(dkey);
    if (dname == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(known) || PyTuple_GET_SIZE(known) != 4) {
        PyErr_SetString(PyExc_TypeError, "capture_records: names values must be 4-tuples");
        return -1;
    }
    /* held while make() runs Python code (another thread may add to `names` meanwhile) */
    Py_INCREF(known);
    Py_INCREF(dname);
    PyObject *device = PyTuple_GET_ITEM(known, 0), *dev_dir = PyTuple_GET_ITEM(known, 1),
             *node = PyTuple_GET_ITEM(known, 2), *op = PyTuple_GET_ITEM(known, 3);
    PyObject *py_slot = NULL, *py_ts = NULL, *name = NULL, *ext = NULL, *data = NULL,
             *dims = NULL, *content = NULL, *tf = NULL;
    int status = -1;
    py_slot = PyLong_FromLong(slot);
    py_ts = PyLong_FromUnsignedLongLong(ts);
    if (py_slot == NULL || py_ts == NULL) goto done;
    name = PyTuple_Pack(5, dev_dir, node, py_slot, op, py_ts);
    if (name == NULL) goto done;
    /* TF's collision suffix: the k-th repeat of a name within one take is "<micros>-k" */
    PyObject *count = PyDict_GetItemWithError(seen, name);   /* borrowed */
    if (count == NULL && PyErr_Occurred()) goto done;
    long k = count ? PyLong_AsLong(count) : 0;
    if (k == -1 && PyErr_Occurred()) goto done;
    PyObject *next_count = PyLong_FromLong(k + 1);
    if (next_count == NULL) goto done;
    int set = PyDict_SetItem(seen, name, next_count);
    Py_DECREF(next_count);
    if (set < 0) goto done;
    ext = k ? PyUnicode_FromFormat("%llu-%ld", (unsigned long long)ts, k)
            : PyUnicode_FromFormat("%llu", (unsigned long long)ts);
    /* blob[start:stop] without a copy: a RecordSlice (_native_slice.c; it keeps the buffer
     * alive and, unlike the memoryview slice _parse_one takes, is not followed by the cycle
     * collector), or the slice itself for a blob of another kind */
    data = base != NULL
        ? record_slice(base, (const char *)b + (stop - le), (Py_ssize_t)le)
        : PySequence_GetSlice(blob, (Py_ssize_t)(stop - le), (Py_ssize_t)stop);
    dims = dims_of(b + j, rank);
    content = Py_BuildValue("(II)", cat, cat + clen);
    if (ext == NULL || data == NULL || dims == NULL || content == NULL) goto done;
    PyObject *args[11] = {dev_dir, node, py_slot, op, py_ts, ext, data, device, dname, dims,
                          content};
    tf = PyObject_Vectorcall(make, args, 11, NULL);
    if (tf == NULL) goto done;
    /* Not tracked by the cycle collector: a step's 2 509 TensorFiles live while the ingest
     * encodes it, long enough to be promoted to the oldest generation, whose growth sets off
     * full collections (0.2-0.35 s each in a TensorFlow process with a large graph). Untracked,
     * a step promotes half as many objects (sampled mid-run: ~2 300 memoryviews and as many
     * TensorFiles before, the memoryviews alone after; RecordSlices then took the
     * memoryviews' place). A TensorFile refers to strings, ints, tuples and its data, none of
     * which refers back, so it is in no cycle; a dataclass instance's dealloc untracks with
     * the checked PyObject_GC_UnTrack. */
    if (PyObject_GC_IsTracked(tf)) PyObject_GC_UnTrack(tf);
    if (PyList_Append(out, tf) < 0) goto done;
    *next = (Py_ssize_t)stop;
    status = 1;
done:
    Py_XDECREF(py_slot); Py_XDECREF(py_ts); Py_XDECREF(name); Py_XDECREF(ext);
    Py_XDECREF(data); Py_XDECREF(dims); Py_XDECREF(content); Py_XDECREF(tf);
    Py_DECREF(known); Py_DECREF(dname);
    return status;
}

PyObject *py_capture_records(PyObject *self, PyObject *args) {
    PyObject *blob, *names, *dtypes, *make, *out, *seen;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "OnO!O!OO!O!", &blob, &pos, &PyDict_Type, &names,
                          &PyDict_Type, &dtypes, &make, &PyList_Type, &out, &PyDict_Type,
                          &seen))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(blob, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *b = view.buf;
    const Py_ssize_t end = view.len;
    /* what the RecordSlices refer to: a slice of the whole records shares the buffer with
     * the take's memoryview and outlives its release(), as the memoryview slices did */
    PyObject *base = NULL;
    if (PyMemoryView_Check(blob)) {
        const Py_buffer *v = PyMemoryView_GET_BUFFER(blob);
        if (v->ndim == 1 && v->itemsize == 1 && PyBuffer_IsContiguous(v, 'C'))
            base = PySequence_GetSlice(blob, 0, end);
    } else if (PyBytes_Check(blob)) {
        base = PyMemoryView_FromObject(blob);
    }
    if (base == NULL && PyErr_Occurred()) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t i = pos < 0 ? 0 : pos;
    while (i < end) {
        Py_ssize_t next = i;
        const int got = take_one(blob, base, b, i, end, names, dtypes, make, out, seen, &next);
        if (got < 0) { Py_XDECREF(base); PyBuffer_Release(&view); return NULL; }
        if (got == 0) break;
        i = next;
    }
    Py_XDECREF(base);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(i);
}
