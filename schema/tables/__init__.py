"""The store's Parquet tables: one pyarrow schema constant per table, in one module per table
family (summaries, logged, tfevents, tfdbg_v1, tfdbg_v2, system); every batch is cast to its table's
constant before writing. This module is their index.

Common leading columns: the TF global step, the wall time at which that step ran, the tag, and
the attempt (writer) that recorded the row, so readers can prefer the latest attempt.
"""

from .logged import CONSOLE, LOG_VALUES, RUN_EVENTS, WANDB_OBJECTS
from .summaries import HISTOGRAMS, MEDIA, SCALARS, TENSORS
from .tfdbg_v1 import DUMP_WRITE_OPTIONS, TFDBG_V1_GRAPHS, TFDBG_V1_RUNS, TFDBG_V1_TENSORS
from .tfevents import TFEVENTS_RECORDS
from .tfdbg_v2 import TFDBG_V2_BLOBS, TFDBG_V2_RECORDS
from .system import FILE_BLOBS, SYSTEM_METRICS

TABLES = {
    "scalars": SCALARS,
    "histograms": HISTOGRAMS,
    "media": MEDIA,
    "tensors": TENSORS,
    "tfdbg_v1_runs": TFDBG_V1_RUNS,
    "tfdbg_v1_tensors": TFDBG_V1_TENSORS,
    "tfdbg_v1_graphs": TFDBG_V1_GRAPHS,
    "tfevents_records": TFEVENTS_RECORDS,
    "log_values": LOG_VALUES,
    "wandb_objects": WANDB_OBJECTS,
    "run_events": RUN_EVENTS,
    "console": CONSOLE,
    "tfdbg_v2_records": TFDBG_V2_RECORDS,
    "tfdbg_v2_blobs": TFDBG_V2_BLOBS,
    "system_metrics": SYSTEM_METRICS,
    "file_blobs": FILE_BLOBS,
}

# Tables whose `step` is not the training step (tfdbg v2 records are numbered within their
# file, system samples within their attempt, file blobs are step 0): their segments leave an
# attempt's first step alone, which decides whose rows win when a resumed run re-does steps
# (segments.write_encoded, Store.read).
STEPLESS = {"tfdbg_v2_records", "tfdbg_v2_blobs", "system_metrics", "file_blobs"}

# What the recorder's writer does first when the store cannot take everything (a full disk):
# it writes the tiers in order, and past its memory bound drops the last tier first. Metrics
# are small and what a run is read for; media and kept tensors come next; raw records and
# dumps are the bulk (a dumped step can be megabytes) and can be spared first.
METRICS, MEDIA, BULK = 0, 1, 2
TIERS = {
    "scalars": METRICS, "histograms": METRICS, "log_values": METRICS, "console": METRICS,
    "run_events": METRICS, "system_metrics": METRICS,
    "file_blobs": MEDIA, "media": MEDIA, "tensors": MEDIA, "wandb_objects": MEDIA,
    # in the order written: what other rows refer to before them
    "tfevents_records": BULK, "tfdbg_v1_graphs": BULK, "tfdbg_v1_tensors": BULK,
    "tfdbg_v1_runs": BULK, "tfdbg_v2_blobs": BULK, "tfdbg_v2_records": BULK,
}
# Written with the bulk, dropped only with the metrics (or with their dumped step's tensors):
# other rows need them (a dumped step's tensors its tfdbg_v1_runs row, which makes them visible,
# and its partition graph; a tfdbg v2 record its source file), the recorder stores a graph or
# a source file only once, and they are small (file_blobs: the run's files, once per hash).
DROPPED_LAST = {"tfdbg_v1_graphs", "tfdbg_v1_runs", "tfdbg_v2_blobs", "file_blobs"}


def drop_tier(table):
    """The tier a table's rows are dropped with (the highest goes first)."""
    return METRICS if table in DROPPED_LAST else TIERS[table]


# Parquet writer options of a table beyond the common ones (segments.parquet_options)
WRITE_OPTIONS = {
    "tfdbg_v1_tensors": DUMP_WRITE_OPTIONS,
}


# Store format 6 named the tfdbg tables by the glossary (tfdbg v1 / v2). The names before it,
# which older stores' migrations and users' code may still use, resolve to the new ones.
FORMAT5_NAMES = {"debug_runs": "tfdbg_v1_runs", "debug_tensors": "tfdbg_v1_tensors",
                 "debug_graphs": "tfdbg_v1_graphs", "tfdbg2_records": "tfdbg_v2_records",
                 "tfdbg2_blobs": "tfdbg_v2_blobs"}


def table_name(table):
    """A table's name in this format (a format-5 name is translated)."""
    return FORMAT5_NAMES.get(table, table)


def schema_of(table):
    try:
        return TABLES[table_name(table)]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}") from None
