"""`tfblackbox import-dumps ROOT`, tfdbg v2 part: archive a dump root that
`tf.debugging.experimental.enable_dump_debug_info` wrote.

Every record of every DebugEvent file becomes a `tfdbg_v2_records` row (source-file lines a
`tfdbg_v2_blobs` row, once per content across the store), the same rows the recorder makes, so
`replay --to debug-dump` writes the files back byte for byte. Everything is checked before
anything is written: an entry that is not a tfdbg v2 file, a record whose checksum does not
match, or file sets of more than one tfdbg run (DebugDataReader reads one run per dump root)
stop the import with a message naming them. A file that ends in a half-written record (its
process was killed) is imported with a warning: its complete records as records, the rest as
the bytes they were.
"""

import os
import socket

from tfblackbox.schema import BlackboxError
from tfblackbox.schema.codecs import rows as row_buffers
from tfblackbox.schema.formats import tfdbg_v2, tfrecord
from tfblackbox.schema.codecs.tfdbg_v2_rows import (BlobIndex, FileSource, file_row, record_rows,
                                           unframed_row)
from tfblackbox.schema.tables.tfdbg_v2 import BLOBS_TABLE, RECORDS_TABLE

from .tfdbg_v1 import open_run

FLUSH_BYTES = 64 << 20
CHUNK_BYTES = 4 << 20


def is_dump_root(root):
    """Whether ROOT holds tfdbg v2 files (what import-dumps then expects it to be)."""
    try:
        return any(tfdbg_v2.parse_name(n) for n in os.listdir(root))
    except OSError:
        return False


def check(root):
    """(files by name, tfdbg run ids, warnings) of a dump root, after reading it all."""
    names = sorted(os.listdir(root))
    odd = [n for n in names if tfdbg_v2.parse_name(n) is None
           or not os.path.isfile(os.path.join(root, n))]
    if odd:
        raise BlackboxError(f"{os.path.join(root, odd[0])}: not a tfdbg v2 DebugEvent file "
                            f"(tfdbg_events.<seconds>.<host>.<kind>) of a dump root "
                            f"({len(odd)} such entries); nothing imported")
    warnings, runs = [], {}
    for name in names:
        path = os.path.join(root, name)
        reader = tfrecord.RecordReader(path)
        try:
            for index, (_offset, data) in enumerate(reader):
                if name.endswith(".metadata") and index == 0:
                    run_id = tfdbg_v2.parse_event(data).tfdbg_run_id
                    runs.setdefault(run_id, []).append(name)
        except tfrecord.CorruptRecordError as e:
            raise BlackboxError(f"{e}; nothing imported") from e
        except BlackboxError as e:   # a metadata record that is not a DebugEvent
            raise BlackboxError(f"{path}: {e}; nothing imported") from e
        if reader.partial:
            warnings.append(f"{path}: ends with {reader.partial} bytes of an incomplete record "
                            f"after byte {reader.offset} (its writer was killed?); they are "
                            f"kept as they are")
    if len(runs) > 1:
        listed = "; ".join(f"{r or '(none)'} in {', '.join(n)}" for r, n in sorted(
            runs.items(), key=lambda kv: str(kv[0])))
        raise BlackboxError(f"{root} holds file sets of {len(runs)} tfdbg runs ({listed}); "
                            f"DebugDataReader reads one run per dump root: move each run's "
                            f"files into a directory of its own and import each (--run ID "
                            f"puts them into one recorded run); nothing imported")
    return names, sorted(r for r in runs if r), warnings


class _Segments:
    """The import's rows, written as segments of one attempt every FLUSH_BYTES: the blobs
    before the records that name them."""

    def __init__(self, store, run_id, writer_id, attempt):
        self.store, self.run_id, self.writer_id = store, run_id, writer_id
        self.buffers = row_buffers.ColumnBuffers(attempt)
        self.nbytes = self.segments = 0

    def add(self, table, rows, nbytes=0):
        if rows is not None:
            self.buffers.add_table(table, rows)
            self.nbytes += nbytes
        if self.nbytes >= FLUSH_BYTES:
            self.flush()

    def flush(self):
        tables = self.buffers.take()
        for name in (BLOBS_TABLE, RECORDS_TABLE):
            if name in tables:
                self.store.write_segment(self.run_id, name, tables[name], self.writer_id)
                self.segments += 1
        self.nbytes = 0


def import_dump_root(store, root, run_id=None):
    if not os.path.isdir(root):
        raise BlackboxError(f"dump root {root} is not a directory")
    names, tfdbg_runs, warnings = check(root)
    session = tfdbg_runs[0] if tfdbg_runs else _file_set(names)
    run_id, created = open_run(store, run_id, root)
    writer_id, attempt = store.begin_attempt(run_id, socket.gethostname(), os.getpid())
    out = _Segments(store, run_id, writer_id, attempt)
    blobs = BlobIndex(store)
    records = 0
    try:
        for name in names:
            records += _import_file(out, blobs, os.path.join(root, name), session)
        out.flush()
    finally:
        store.end_attempt(writer_id)
        if created:
            store.finish_run(run_id, 0)
    return {"run_id": run_id, "dump_root": os.path.abspath(root), "format": "tfdbg v2",
            "files": len(names), "records": records, "tfdbg_run_ids": tfdbg_runs,
            "segments": out.segments, "warnings": warnings}


def _file_set(names):
    """A session name for files without a metadata record: their first file set's name."""
    return tfdbg_v2.parse_name(names[0]).file_set if names else "empty"


def _import_file(out, blobs, path, session):
    src = FileSource(os.path.basename(path), session)
    out.add(RECORDS_TABLE, file_row(src))
    reader = tfrecord.RecordReader(path)
    chunk, n, count = [], 0, 0
    for index, (offset, data) in enumerate(reader):
        chunk.append((offset, index, data))
        n += len(data)
        if n >= CHUNK_BYTES:
            count += _add(out, blobs, src, chunk, n)
            chunk, n = [], 0
    count += _add(out, blobs, src, chunk, n)
    if reader.partial:
        with open(path, "rb") as f:
            f.seek(reader.offset)
            rest = f.read()
        out.add(RECORDS_TABLE, unframed_row(src, reader.offset, reader.index, rest), len(rest))
    return count


def _add(out, blobs, src, chunk, n):
    if not chunk:
        return 0
    table, blob_table = record_rows(src, chunk, blobs)
    out.add(BLOBS_TABLE, blob_table)
    out.add(RECORDS_TABLE, table, n)
    return len(chunk)
