"""The summary tables: what a tf.summary / TF1 Summary value decodes into (scalars,
histograms, media, other tensors). Their common leading columns are in columns.py."""

import pyarrow as pa

from .columns import KEY as _KEY

SCALARS = pa.schema(_KEY + [pa.field("value", pa.float64())])

HISTOGRAMS = pa.schema(_KEY + [
    pa.field("num", pa.float64()),
    pa.field("min", pa.float64()),
    pa.field("max", pa.float64()),
    pa.field("sum", pa.float64()),
    pa.field("sum_squares", pa.float64()),
    # right edges, as HistogramProto. In a segment, the last one alone when they are
    # tf.linspace's (format 9, codecs/histogram_edges.py); Store.read gives them all
    pa.field("bucket_limits", pa.list_(pa.float64())),
    pa.field("bucket_counts", pa.list_(pa.float64())),
    # left edges; only for plugin tensors. In a segment, the first one alone when the rest
    # repeat bucket_limits (format 8, codecs/histogram_edges.py); Store.read gives them all
    pa.field("bucket_lefts", pa.list_(pa.float64())),
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
