/* Shared by the compiled decoder's parts (_native.c: the module, crc32c and framing;
 * _native_wire.c: the wire format and the column lists; _native_summary.c: Summary values;
 * _native_events.c: tfevents records;
 * _native_chunk.c: chunks of records into flat columns; _native_codec.c: the dump codec's
 * byte planes; _native_capture.c: the dump capture's records; _native_slice.c: their
 * tensors' data). What it is: _native.c. */
#ifndef TFBLACKBOX_NATIVE_H
#define TFBLACKBOX_NATIVE_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Raised with every change of a function's arguments or results; native.py's ABI must match
 * (2: codec_planes takes spans; 4: capture_records' data are RecordSlices) */
#define TFBB_NATIVE_ABI 4

typedef struct { const unsigned char *p; Py_ssize_t n; } span_t;

/* _native_slice.c: a read-only view into the capture's records, left out of the collector */
extern PyTypeObject RecordSlice_Type;
PyObject *record_slice(PyObject *base, const char *at, Py_ssize_t len);

/* one field: its number, wire type, payload (start, end) and a varint's value */
typedef struct { uint64_t number; int wire; Py_ssize_t start, end; uint64_t value; } field_t;

/* one Event of the per-step kinds (_native_events.c: event_of) */
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
int event_of(const unsigned char *b, Py_ssize_t n, event_t *e);
int tensor_row(const event_t *e, const unsigned char *b, span_t plugin, double *value);
int event_row(event_t *e, const unsigned char *b, PyObject *ns, PyObject *metadata,
              PyObject *cache, PyObject **full, double *value);
int tags_of(PyObject *cache, PyObject *ns, span_t tag, int strict, PyObject **bare,
            PyObject **full);

/* a table's column lists, in the order of the names given to table_init */
typedef struct {
    PyObject *cols;                   /* the table's {name: list} (ColumnBuffers.columns) */
    PyObject *lists[16];
    const char *names[16];
    int count;
} table_t;

/* the histogram buckets of one call: each row's arrays (at most 3), as numpy views at its end */
typedef struct { Py_ssize_t pos, at[3], n[3]; } hrow_t;
typedef struct { double *vals; Py_ssize_t len, cap; hrow_t *rows; Py_ssize_t nrows, rcap; } hbuf_t;
int hist_reserve(hbuf_t *h, Py_ssize_t more);
void hist_row(hbuf_t *h, Py_ssize_t pos, int narr, const Py_ssize_t *counts);
int hist_finish(hbuf_t *h, table_t *ht, const int *cols, int narr);
void hist_free(hbuf_t *h);

uint32_t masked(const unsigned char *p, size_t n);
int rd_varint(const unsigned char *b, Py_ssize_t *i, Py_ssize_t end, uint64_t *out);
int rd_field(const unsigned char *b, Py_ssize_t *i, Py_ssize_t end, field_t *f);
int plugin_of(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, span_t *name);
int span_is(span_t s, const char *text);
double pairwise(const double *a, Py_ssize_t n);
int table_init(table_t *t, PyObject *cols, const char **names);
int table_add(table_t *t, PyObject **values);
PyObject *py_summary_values(PyObject *self, PyObject *args);
PyObject *py_decode_events(PyObject *self, PyObject *args);
PyObject *py_decode_chunk(PyObject *self, PyObject *args);
PyObject *py_frame_spans(PyObject *self, PyObject *args);
PyObject *py_codec_planes(PyObject *self, PyObject *args);
PyObject *py_capture_records(PyObject *self, PyObject *args);

extern const char *SCALAR_COLS[], *HISTO_COLS[], *RAW_COLS[];
extern PyObject *frombuffer, *f8, *s_empty, *s_histo, *s_tensor, *s_summary, *s_histograms,
    *zero, *kind_names[11], *k_at, *k_size, *k_table, *k_tag, *k_index, *k_part;

#endif
