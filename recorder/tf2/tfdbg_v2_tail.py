"""The tfdbg v2 capture: what the record tail (record_tail.py) reads in one
`enable_dump_debug_info` session's staging dir, and how its DebugEvent records become rows
(schema/tfdbg2_rows.py).

Each of TF's six files gets a "file" row first, then its records, stored raw and keyed by
file kind and order; source-file lines are stored once per content hash (a BlobIndex shared
by the run's sessions). Bytes the writer has taken are freed from the staging files
(staging.HolePuncher), so the staging dir holds about one poll's worth of records.

Order matters for a store cut short by a kill -9: a graph execution trace names ops that the
`.graphs` file created, and TF flushes the non-execution files before the circular buffers.
So each poll reads the execution files first and the others after, and hands the others'
records to the writer first: whatever prefix of the handed chunks reaches the store, the
graphs a trace needs are in it.

`max_bytes` bounds the record bytes recorded: the chunk that would pass it is cut to what
fits, one warning is logged, and from then on the files are only freed, not recorded.
"""

import logging
import os

from tfblackbox.schema.formats import tfdbg_v2
from tfblackbox.schema.codecs.tfdbg_v2_rows import (BlobIndex, FileSource, add_rows, file_row,
                                                    unframed_row)

from .record_tail import POLL_SECS, RecordTail
from .staging import HolePuncher

log = logging.getLogger("tfblackbox")

RECORDS = "tfdbg_v2_records"


class TfdbgV2Tail(RecordTail):
    what, thread_name = "tfdbg v2", "tfdbg2"

    def __init__(self, run, root, session, max_bytes=None, poll_secs=POLL_SECS, blobs=None):
        super().__init__(run, poll_secs, max_bytes)
        self.root, self.session = root, session
        # the source-file hashes known to the store: used on the writer thread only, and
        # shared by a run's sessions (what one added may not be written yet)
        self.blobs = blobs if blobs is not None else BlobIndex(run.store)
        # source files the writer dropped before storing them are stored again when needed
        run.writer.on_drop(lambda tables: "tfdbg_v2_blobs" in tables and self.blobs.forget())
        self.punch = HolePuncher()
        self.start()

    def new_files(self):
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self.root, name)
            if path not in self.files and tfdbg_v2.parse_name(name) is not None:
                yield path, FileSource(name, self.session), (0, 0)

    def order(self, files):
        files = sorted(files, key=lambda f: f.src.name)
        first = [f for f in files if f.src.kind in tfdbg_v2.EXECUTION_KINDS]
        later = [f for f in files if f.src.kind not in tfdbg_v2.EXECUTION_KINDS]
        return first + later, later + first

    def file_rows(self, src, buffers):
        buffers.add_table(RECORDS, file_row(src))

    def rows(self, src, records, buffers):
        add_rows(buffers, src, records, self.blobs)

    def unframed(self, src, offset, index, data, buffers):
        buffers.add_table(RECORDS, unframed_row(src, offset, index, data))

    def taken(self, f, upto):
        self.punch.free(f.path, upto)

    def budget_reached(self):
        log.warning("tfblackbox: run %s: enable_dump_debug_info's max_bytes=%d is reached "
                    "(%d bytes of records recorded); the rest of this tfdbg v2 session is "
                    "not recorded (training goes on)", self.run.run_id, self.max_bytes,
                    self.recorded_bytes)
