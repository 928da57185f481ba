"""The leading columns of every Parquet table: the TF global step, the wall time at which
that step ran, the tag, and the attempt (writer) that recorded the row, so readers can prefer
the latest attempt."""

import pyarrow as pa

KEY = [
    pa.field("step", pa.int64(), nullable=False),
    pa.field("wall_time", pa.float64(), nullable=False),
    pa.field("tag", pa.string(), nullable=False),
    pa.field("attempt", pa.int32(), nullable=False),
]
