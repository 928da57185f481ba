"""The Parquet tables of the machine a run trained on (recorder/system/; read by the W&B and
TensorBoard replays, the report and `show`); listed in tables.TABLES.

`system_metrics`: the sampler's samples, one row per key and sample, with the keys wandb's
system monitor uses (`cpu`, `memory_percent`, `proc.memory.rssMB`, `disk./.usagePercent`,
`network.sent`, `gpu.0.gpu`, ...). `step` is the sample's number within its attempt (0, 1,
...), not a training step, so the table is in tables.STEPLESS; `wall_time` is when it was
taken (every key of one sample shares it); `tag` is the key. `train_step` is the run's step
when it was taken; `reason` why it was taken: "interval", "finish", or "trigger <kind> at
step <n>" (a black-box trigger that fired).

`file_blobs`: the bytes of the files a run keeps beside its history (requirements.txt, the
saved program, git diffs), once per sha256 across the whole store: the run that first had
a content stores it; a run names its files (path in the W&B files dir, sha256, size) in
`run_events` rows of kind "file". `tag` is the path it was first seen as; `step` 0.
"""

import pyarrow as pa

from .columns import KEY as _KEY

METRICS_TABLE = "system_metrics"
FILES_TABLE = "file_blobs"

SYSTEM_METRICS = pa.schema(_KEY + [
    pa.field("value", pa.float64()),
    pa.field("train_step", pa.int64()),
    pa.field("reason", pa.string()),
])

FILE_BLOBS = pa.schema(_KEY + [
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("data", pa.binary(), nullable=False),
])

__all__ = ["SYSTEM_METRICS", "FILE_BLOBS", "METRICS_TABLE", "FILES_TABLE"]
