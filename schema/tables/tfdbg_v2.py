"""The Parquet tables of tfdbg v2 debug dumps (`recorder.enable_dump_debug_info`,
`import-dumps` of a v2 dump root; read by `replay --to debug-dump` and `show`); listed in
tables.TABLES.

`tfdbg_v2_records`: every record of every DebugEvent file, raw, so a rebuild writes the files
back byte for byte; keyed by the run's attempt, the session (the tfdbg run id: one per
`enable_dump_debug_info` session; file names carry only the second they were made in, and
sessions of one process can share it), the file (its name carries the host and the file
kind) and the record's order in it. A file's first row is a "file" row (so a file TF
created and never wrote to comes back too); bytes after a damaged or half-written last
record are an "unframed" row. Next to the raw bytes, the DebugEvent fields that `show` and
the rebuild's filters need are columns: what the event is, op type and name, graph id,
tensor debug mode, and the health / SHAPE summary values with the NaN/Inf they count.

`step` is the record's index in its file (for `.execution`, the execution index
DebugDataReader gives it), not a training step: tfdbg v2 does not know the global step.
These tables are in tables.STEPLESS, so their segments do not set an attempt's first step.

`tfdbg_v2_blobs`: the contents (the `lines`) of source files, stored once per sha256 across
the whole store: a source-file record keeps its bytes around them and names the blob.
TF snapshots every Python file a traced op came from, TF's and Keras' own included (7 MB of
a 10 MB NO_TENSOR dump), and again in every dump root.
"""

import pyarrow as pa

from .columns import KEY as _KEY

RECORDS_TABLE = "tfdbg_v2_records"
BLOBS_TABLE = "tfdbg_v2_blobs"

TFDBG_V2_RECORDS = pa.schema(_KEY + [                   # tag: the file kind
    pa.field("session", pa.string(), nullable=False),  # the tfdbg run id it was recorded under
    pa.field("host", pa.string()),                    # from the file name
    pa.field("file", pa.string(), nullable=False),    # tfdbg_events.<seconds>.<host>.<kind>
    pa.field("kind", pa.string(), nullable=False),    # metadata | source_files | ... | graphs
    pa.field("index", pa.int64(), nullable=False),    # record number in the file (-1: "file")
    pa.field("offset", pa.int64(), nullable=False),   # byte offset of the record in the file
    pa.field("what", pa.string(), nullable=False),    # DebugEvent kind | file | unframed | unparsed
    pa.field("length", pa.int64(), nullable=False),   # bytes of the record's data
    pa.field("crc", pa.int64()),                      # masked crc32c of the data, if cut
    pa.field("record", pa.binary()),                  # the data (a blob's bytes left out)
    pa.field("blob", pa.string()),                    # sha256 of the bytes left out
    pa.field("blob_at", pa.int64()),                  # where they go back into `record`
    # decoded, for show and the filters
    pa.field("tfdbg_run_id", pa.string()),            # debug_metadata
    pa.field("op_type", pa.string()),                 # execution, graph_op_creation
    pa.field("op_name", pa.string()),                 # trace, op creation; a graph's name
    pa.field("graph_id", pa.string()),       # execution, trace (context), op creation, graph
    pa.field("output_slot", pa.int32()),              # trace
    pa.field("tensor_debug_mode", pa.string()),       # execution, trace: NO_TENSOR, ...
    pa.field("debug_values", pa.list_(pa.float64())),  # health / SHAPE summaries, all outputs
    pa.field("nonfinite", pa.int64()),                # NaN and +-Inf elements they count
    pa.field("source_path", pa.string()),             # source_file: the file's path
])

TFDBG_V2_BLOBS = pa.schema(_KEY + [                     # step 0; tag: a file path it was seen as
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("data", pa.binary(), nullable=False),
])

__all__ = ["TFDBG_V2_RECORDS", "TFDBG_V2_BLOBS", "RECORDS_TABLE", "BLOBS_TABLE"]
