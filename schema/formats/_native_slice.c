/* RecordSlice: a read-only view of a tensor's Event in the dump capture's records, what
 * capture_records gives each TensorFile as its data (recorder/tf1/capture_records.py).
 *
 * A memoryview slice did that job, but memoryviews are followed by the cycle collector, and a
 * step's 2 509 of them live through the ingest's collections: promoted to the oldest
 * generation, they set off a full collection (0.27-0.36 s in a TensorFlow process) in every
 * 40-step DumpHook run at 2 509 tensors. A RecordSlice refers only to a memoryview of the
 * whole take (the same buffer the slices shared, so the capture gets it back when the last
 * one goes) and to nothing that could refer back, so it is left out of the collector. It
 * does what the ingest asks of its data: the buffer protocol (read-only), len, an index (an
 * int), a slice (a memoryview), ==, bytes() and tobytes(). */
#include "_native.h"

#include <stddef.h>

typedef struct {
    PyObject_HEAD
    PyObject *base;          /* a memoryview of the whole take: keeps its memory alive */
    const char *at;
    Py_ssize_t len;
    PyObject *weakrefs;
} RecordSlice;

static void slice_dealloc(RecordSlice *self) {
    if (self->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    Py_XDECREF(self->base);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int slice_getbuffer(RecordSlice *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, (void *)self->at, self->len, 1, flags);
}

static Py_ssize_t slice_length(RecordSlice *self) { return self->len; }

static PyObject *slice_item(RecordSlice *self, Py_ssize_t i) {
    if (i < 0 || i >= self->len) {   /* sq_item gets i with len added when it was negative */
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return NULL;
    }
    return PyLong_FromLong((unsigned char)self->at[i]);
}

static PyObject *slice_subscript(RecordSlice *self, PyObject *key) {
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) return NULL;
        return slice_item(self, i < 0 ? i + self->len : i);
    }
    PyObject *view = PyMemoryView_FromObject((PyObject *)self);   /* a slice: memoryview's */
    if (view == NULL) return NULL;
    PyObject *got = PyObject_GetItem(view, key);
    Py_DECREF(view);
    return got;
}

static PyObject *slice_richcompare(PyObject *a, PyObject *b, int op) {
    /* not bytes-like (`x in values` compares with None): no buffer asked, no error raised */
    if ((op != Py_EQ && op != Py_NE) || !PyObject_CheckBuffer(a) || !PyObject_CheckBuffer(b))
        Py_RETURN_NOTIMPLEMENTED;
    Py_buffer x, y;
    if (PyObject_GetBuffer(a, &x, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (PyObject_GetBuffer(b, &y, PyBUF_SIMPLE) < 0) {   /* not one block of bytes */
        PyErr_Clear();
        PyBuffer_Release(&x);
        Py_RETURN_NOTIMPLEMENTED;
    }
    const int same = x.len == y.len && (x.len == 0 || memcmp(x.buf, y.buf, x.len) == 0);
    PyBuffer_Release(&x);
    PyBuffer_Release(&y);
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static PyObject *slice_tobytes(RecordSlice *self, PyObject *unused) {
    (void)unused;
    return PyBytes_FromStringAndSize(self->at, self->len);
}

static PyObject *slice_repr(RecordSlice *self) {
    return PyUnicode_FromFormat("<RecordSlice of %zd bytes>", self->len);
}

static PySequenceMethods slice_as_sequence = {
    .sq_length = (lenfunc)slice_length,
    .sq_item = (ssizeargfunc)slice_item,
};
static PyMappingMethods slice_as_mapping = {
    .mp_length = (lenfunc)slice_length,
    .mp_subscript = (binaryfunc)slice_subscript,
};
static PyBufferProcs slice_as_buffer = {.bf_getbuffer = (getbufferproc)slice_getbuffer};
static PyMethodDef slice_methods[] = {
    {"tobytes", (PyCFunction)slice_tobytes, METH_NOARGS, "The bytes, copied."},
    {"__bytes__", (PyCFunction)slice_tobytes, METH_NOARGS, "The bytes, copied."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject RecordSlice_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tfblackbox.schema.formats._native.RecordSlice",
    .tp_basicsize = sizeof(RecordSlice),
    .tp_dealloc = (destructor)slice_dealloc,
    .tp_repr = (reprfunc)slice_repr,
    .tp_as_sequence = &slice_as_sequence,
    .tp_as_mapping = &slice_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_as_buffer = &slice_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,   /* not Py_TPFLAGS_HAVE_GC: left out of the collector */
    .tp_doc = "A read-only view of a tensor's Event in the dump capture's records.",
    .tp_richcompare = slice_richcompare,
    .tp_weaklistoffset = offsetof(RecordSlice, weakrefs),
    .tp_methods = slice_methods,
};

/* `base` a memoryview whose memory holds [at, at + len) and stays put while it lives */
PyObject *record_slice(PyObject *base, const char *at, Py_ssize_t len) {
    RecordSlice *self = PyObject_New(RecordSlice, &RecordSlice_Type);
    if (self == NULL) return NULL;
    self->base = Py_NewRef(base);
    self->at = at;
    self->len = len;
    self->weakrefs = NULL;
    return (PyObject *)self;
}
