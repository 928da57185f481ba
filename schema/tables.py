"""One pyarrow schema constant per Parquet table; every batch is cast to it before writing.

Common leading columns: the TF global step, the wall time at which that step ran, the tag, and
the attempt (writer) that recorded the row, so readers can prefer the latest attempt.
"""

import pyarrow as pa

from .columns import KEY as _KEY

SCALARS = pa.schema(_KEY + [pa.field("value", pa.float64())])

HISTOGRAMS = pa.schema(_KEY + [
    pa.field("num", pa.float64()),
    pa.field("min", pa.float64()),
    pa.field("max", pa.float64()),
    pa.field("sum", pa.float64()),
    pa.field("sum_squares", pa.float64()),
    pa.field("bucket_limits", pa.list_(pa.float64())),   # right edges, as HistogramProto
    pa.field("bucket_counts", pa.list_(pa.float64())),
    pa.field("bucket_lefts", pa.list_(pa.float64())),    # left edges; only for plugin tensors
    pa.field("source", pa.string()),                      # "histo" or "tensor"
])

# Images, audio, text, pr-curves: the bytes exactly as the summary carried them, plus the
# per-kind fields that a replay needs without TensorFlow.
MEDIA = pa.schema(_KEY + [
    pa.field("kind", pa.string(), nullable=False),        # image | audio | text | pr_curve
    pa.field("index", pa.int32()),                        # position within a multi-item tensor
    pa.field("content_type", pa.string()),
    pa.field("data", pa.binary()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("colorspace", pa.int32()),
    pa.field("sample_rate", pa.float64()),
    pa.field("num_channels", pa.int64()),
    pa.field("length_frames", pa.int64()),
    pa.field("plugin_content", pa.binary()),
])

# Every other tensor summary, kept as the raw TensorProto bytes with dtype and shape.
TENSORS = pa.schema(_KEY + [
    pa.field("dtype", pa.string()),
    pa.field("shape", pa.list_(pa.int64())),
    pa.field("plugin_name", pa.string()),
    pa.field("plugin_content", pa.binary()),
    pa.field("tensor", pa.binary()),
])

# Tables of other kinds have their schema constants in their own modules
from .dumps import DEBUG_GRAPHS, DEBUG_RUNS, DEBUG_TENSORS, DUMP_WRITE_OPTIONS  # noqa: E402
from .logged import CONSOLE, LOG_VALUES, RUN_EVENTS, WANDB_OBJECTS  # noqa: E402
from .tfevents_tables import TFEVENTS_RECORDS  # noqa: E402
from .tfdbg2_tables import TFDBG2_BLOBS, TFDBG2_RECORDS  # noqa: E402

TABLES = {
    "scalars": SCALARS,
    "histograms": HISTOGRAMS,
    "media": MEDIA,
    "tensors": TENSORS,
    "debug_runs": DEBUG_RUNS,
    "debug_tensors": DEBUG_TENSORS,
    "debug_graphs": DEBUG_GRAPHS,
    "tfevents_records": TFEVENTS_RECORDS,
    "log_values": LOG_VALUES,
    "wandb_objects": WANDB_OBJECTS,
    "run_events": RUN_EVENTS,
    "console": CONSOLE,
    "tfdbg2_records": TFDBG2_RECORDS,
    "tfdbg2_blobs": TFDBG2_BLOBS,
}

# Tables whose `step` is not the training step (tfdbg v2 records are numbered within their
# file): their segments leave an attempt's first step alone, which decides whose rows win
# when a resumed run re-does steps (segments.write_encoded, Store.read).
STEPLESS = {"tfdbg2_records", "tfdbg2_blobs"}

# Parquet writer options of a table beyond the common ones (segments.parquet_options)
WRITE_OPTIONS = {
    "debug_tensors": DUMP_WRITE_OPTIONS,
}


def schema_of(table):
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}") from None
