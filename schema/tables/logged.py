"""Tables of `recorder.log` and the TF2 side beyond the four summary tables (schema constants).

- LOG_VALUES: logged values that are not numbers, arrays or media (strings, lists, dicts,
  None), kept as the JSON text wandb.log would send, so a replay logs the same value.
- WANDB_OBJECTS: wandb's own media objects (Image, Audio, Html, Video, Table, Histogram)
  as the arguments that rebuild them (`meta_json`) plus their files' bytes (`files`).
- RUN_EVENTS: per-run records applied at their step, append-only, the latest winning:
  `kind` is summary, summary_remove, config, define_metric, value_type or model;
  `value_json` their argument. Once per attempt, at init (recorder/system/): `environment`
  (wandb's EnvironmentRecord fields as JSON), `job_type` (init's job_type) and `file` (a file
  of the run: path, sha256, size; its bytes in `file_blobs`, schema/tables/system.py). `seq`
  orders the rows of one attempt.
- CONSOLE: the training process's stdout/stderr, one row per line (a partial line when the
  stream switches or the line is old), exactly as written; `tag` is the stream.

Every table starts with the key columns of schema/tables/columns.py (step, wall_time, tag, attempt).
"""

import pyarrow as pa

from .columns import KEY as _KEY

LOG_VALUES = pa.schema(_KEY + [pa.field("value_json", pa.string())])

WANDB_OBJECTS = pa.schema(_KEY + [
    pa.field("index", pa.int32()),            # position in a logged list of objects
    pa.field("wandb_type", pa.string()),      # Image | Audio | Html | Video | Table | Histogram
    pa.field("meta_json", pa.string()),       # what rebuilds it; files referenced by position
    pa.field("files", pa.list_(pa.binary())),
])

RUN_EVENTS = pa.schema(_KEY + [
    pa.field("seq", pa.int64()),
    pa.field("kind", pa.string()),
    pa.field("value_json", pa.string()),
])

CONSOLE = pa.schema(_KEY + [
    pa.field("seq", pa.int64()),
    pa.field("text", pa.string()),
])

EVENT_KINDS = ("summary", "summary_remove", "config", "define_metric", "value_type", "model",
               "environment", "job_type", "file")
