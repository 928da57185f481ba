"""The table of raw tfevents records (recorder/tf2 tails the files tf.summary writes).

Every record of every event file is kept, so an export writes the files back byte for byte
(`tfevents_restore.py`). Payloads that a decoded row holds verbatim (an image's PNG, an audio
clip, a histogram's tensor content, a kept TensorProto) are stored once: the record keeps the
bytes around them and `cuts` says where each payload goes back and which decoded row holds
it; `crc` (the file's own masked crc32c of the whole record) checks the restored bytes.
"""

import pyarrow as pa

# step, wall_time and tag come from the Event (tag: the first summary value's, with the file's
# namespace; a tagged_run_metadata's tag; else "")
from .columns import KEY as _KEY

CUT = pa.struct([
    pa.field("at", pa.int64()),        # position of the payload in the original record
    pa.field("size", pa.int64()),
    pa.field("table", pa.string()),    # media | histograms | tensors
    pa.field("tag", pa.string()),      # the decoded row's tag (step, wall_time: the record's)
    pa.field("index", pa.int32()),     # media: the row's index; else 0
    pa.field("part", pa.int32()),      # which payload of the row (tfevents_restore.payloads)
])

TFEVENTS_RECORDS = pa.schema(_KEY + [
    pa.field("file", pa.string(), nullable=False),    # path in the exported logdir (namespace/name)
    pa.field("source", pa.string()),                   # the file's absolute path when recorded
    pa.field("offset", pa.int64(), nullable=False),   # byte offset of the record in the file
    pa.field("index", pa.int64(), nullable=False),    # record number in the file
    pa.field("what", pa.string(), nullable=False),    # Event kind; "unparsed"; "unframed" bytes
    pa.field("length", pa.int64(), nullable=False),   # bytes of the whole record data
    pa.field("crc", pa.int64()),                       # masked crc32c of the data, as in the file
    pa.field("record", pa.binary()),                   # the data, payloads in `cuts` left out
    pa.field("cuts", pa.list_(CUT)),
])
