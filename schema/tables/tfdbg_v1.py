"""The Parquet tables of tfdbg v1 debug dumps (DumpHook, import-dumps; read by replay --to
debug-dump); listed in tables.TABLES.

One recorded session.run is one `tfdbg_v1_runs` row (its core metadata, fetches and feed-keys Events
as TF wrote them, and which partition graph each device ran), plus one `tfdbg_v1_tensors` row per
dumped tensor (the whole dump-file Event as TF produced it, with node, slot, debug op, device,
timestamp, dtype and shape as columns; since format 3 its tensor_content encoded against earlier
dumps of the same watch, see codecs/tfdbg_v1_codec.py), plus `tfdbg_v1_graphs` rows: each distinct
partition graph once per device (by the hash tfdbg puts in its file name), not once per step.

The common leading columns: `step` is the TF global step at which the session.run began,
`wall_time` the time (seconds) of the row's event, `tag` the watch key / run dir / device.
Rows of one session.run are joined on (attempt, run_key); `run_key` is the tfdbg run dir name
`run_<micros>_<n>`.
"""

import pyarrow as pa

from .columns import KEY as _KEY

TFDBG_V1_RUNS = pa.schema(_KEY + [                          # tag: the run dir name
    pa.field("run_key", pa.string(), nullable=False),    # run_<micros>_<n>
    pa.field("session_run", pa.int64()),                 # n, as in the run dir name
    pa.field("status", pa.string()),                     # ok | error (the run raised) | partial
    pa.field("source", pa.string()),                     # DumpHook | import
    pa.field("core_metadata_name", pa.string()),         # _tfdbg_core_metadata_sessionrun..._<us>
    pa.field("core_metadata", pa.binary()),              # the Event bytes as TF wrote them
    pa.field("fetches_info", pa.binary()),               # Event bytes (log_message = repr)
    pa.field("feed_keys_info", pa.binary()),
    pa.field("devices", pa.list_(pa.string())),          # devices that dumped or ran a graph
    pa.field("graph_devices", pa.list_(pa.string())),    # parallel lists: which graph per device
    pa.field("graph_hashes", pa.list_(pa.string())),
    pa.field("graph_timestamps", pa.list_(pa.int64())),  # micros in the graph file name
    pa.field("graph_wall_times", pa.list_(pa.float64())),  # Event.wall_time of the graph file
    pa.field("graph_events", pa.list_(pa.binary())),     # raw graph Events, only when they do
                                                         # not rebuild byte-exactly (else null)
    pa.field("tensor_count", pa.int64()),
    pa.field("tensor_bytes", pa.int64()),
])

TFDBG_V1_TENSORS = pa.schema(_KEY + [                       # tag: node:slot:debug_op
    pa.field("run_key", pa.string(), nullable=False),
    pa.field("device", pa.string(), nullable=False),
    pa.field("node_name", pa.string(), nullable=False),
    pa.field("output_slot", pa.int32()),
    pa.field("debug_op", pa.string()),
    pa.field("timestamp", pa.int64()),                   # micros, from the dump file name
    pa.field("ext_timestamp", pa.string()),              # "<micros>-<k>" when TF de-duplicated
    pa.field("dtype", pa.string()),
    pa.field("shape", pa.list_(pa.int64())),
    pa.field("event", pa.binary()),                      # the dump file: one serialized Event,
                                                         # less its tensor_content when codec
    # Store format 3 (dump_codec.py): tensor_content encoded against earlier dumps of the watch
    pa.field("content_at", pa.int32()),                  # where the content goes back in event
    pa.field("codec", pa.string()),                      # w<width>o<order> | null: event whole
    pa.field("content", pa.binary()),                    # the encoded words, in byte planes
    pa.field("chain_run", pa.string()),                  # run_key of the chain's key frame
    pa.field("chain_step", pa.int64()),                  # its step: where a reader starts
    pa.field("chain_pos", pa.int32()),                   # dumps since the key frame (0: it)
])

TFDBG_V1_GRAPHS = pa.schema(_KEY + [                        # tag: the device
    pa.field("device", pa.string(), nullable=False),
    pa.field("graph_hash", pa.string(), nullable=False),
    pa.field("timestamp", pa.int64()),                   # micros in the file name
    pa.field("event_wall_time", pa.float64()),           # Event.wall_time
    pa.field("graph_def", pa.binary()),                  # serialized GraphDef (Event.graph_def)
])

# Dumped tensors are mostly float32 whose low mantissa bytes are noise. On tools/bench_dump's
# MLP (format 2, raw Events), zstd level 2 stored them in 159 KB a step at 1.2 ms, level 3 in
# 155 KB at 2.2 ms, levels 7-12 in 152 KB at 5-14 ms. Format 3 encodes the content first
# (dump_codec.py), which is what shrinks it; on its byte planes (a 2 509-tensor segment of
# 72.5 MB in memory) level 1 took 59 ms to 8.1 MB, level 2 65 ms to 8.2 MB, level 3 75 ms,
# level -1 48 ms but 10.3 MB, lz4 47 ms to 11.2 MB.
DUMP_WRITE_OPTIONS = {"compression_level": 1}

__all__ = ["TFDBG_V1_RUNS", "TFDBG_V1_TENSORS", "TFDBG_V1_GRAPHS", "DUMP_WRITE_OPTIONS"]
