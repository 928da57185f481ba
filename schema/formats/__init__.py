"""Foreign formats every side speaks, and the small helpers they share.

wire.py      the protobuf wire format (varints, fields), enough to read and write the few
             fields the store needs without TensorFlow
dtypes.py    TensorFlow's DataType enum and the one dtype vocabulary of the store
files.py     durable file writes (fsync, write-then-rename)
tfrecord.py  TFRecord framing (masked crc32c), shared by tfevents and tfdbg v2 files: a
             tailing reader that stops quietly at a half-written last record, and a writer
tfevents.py  the Event fields of tfevents files, read from the wire
tfdbg_v1.py  tfdbg's Event / Summary / TensorProto / GraphDef fields of v1 debug dumps
tfdbg_v1_layout.py  the v1 dump directory layout that DebugDumpDir reads
tfdbg_v2.py  tfdbg v2's DebugEvent files (enable_dump_debug_info): file names, and the event
             fields the store keeps as columns

Nothing here knows the store's files or tables; every module may be imported by the
recorder, the schema and the replay alike.
"""
