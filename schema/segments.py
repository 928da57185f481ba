"""The segment protocol: a Parquet file exists for readers only once the catalog registers it.

temporary name (leading '.') -> fsync -> rename into place -> fsync dir -> register in one
transaction. A crash at any point leaves either nothing, or an orphan file that `verify` and
`Store.open` remove; never a registered segment without its file.
"""

import dataclasses
import hashlib
import io
import itertools
import os
import socket
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from . import catalog as cat
from .tables import schema_of

_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_SEQ = itertools.count()
COMPRESSION = "zstd"
ROW_GROUP_ROWS = 65_536   # small enough that a step-range read skips most of a big segment


@dataclasses.dataclass(frozen=True)
class SegmentRecord:
    segment_id: int
    run_id: str
    table: str
    writer_id: int | None
    path: str
    row_count: int
    size_bytes: int
    sha256: str
    min_step: int | None
    max_step: int | None
    created_at: float


def to_record(row):
    return SegmentRecord(row.segment_id, row.run_id, row.table_name, row.writer_id, row.path,
                         row.row_count, row.size_bytes, row.sha256, row.min_step, row.max_step,
                         row.created_at)


def segment_dir(table, run_id):
    return f"data/{table}/run_id={run_id}"


def file_name(prefix):
    """<prefix>-<host>-<pid>-<seq>-<rand>.parquet: unique, and tells who is writing it."""
    return f"{prefix}-{_HOST_TAG}-{os.getpid()}-{next(_SEQ):06d}-{uuid.uuid4().hex[:6]}.parquet"


def parse_owner(name):
    """(host_tag, pid) of a segment or temp file name, or None when it is not ours."""
    parts = name.lstrip(".").split("-")
    if len(parts) < 5 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def is_this_host(host_tag):
    return host_tag == _HOST_TAG


def encode(table, name):
    """Casts a table to its schema constant and serialises it to Parquet bytes."""
    table = table.cast(schema_of(name)) if table.schema != schema_of(name) else table
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    return table, sink.getvalue()


def step_range(table):
    if table.num_rows == 0:
        return None, None
    import pyarrow.compute as pc
    mm = pc.min_max(table["step"]).as_py()
    return mm["min"], mm["max"]


def write_file(root, rel_path, data):
    """Writes bytes durably under a temporary name, then renames into place."""
    final = os.path.join(root, rel_path)
    folder, name = os.path.split(final)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, "." + name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _fsync_dir(folder)


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_segment(root, catalog, run_id, table_name, table, writer_id=None):
    """Writes one segment and registers it; returns its SegmentRecord.

    If registration fails the file is removed again and the error raised, so the caller keeps
    its rows and may retry.
    """
    table, data = encode(table, table_name)
    rel = f"{segment_dir(table_name, run_id)}/{file_name(writer_id if writer_id else 'w')}"
    write_file(root, rel, data)
    lo, hi = step_range(table)
    now = time.time()
    try:
        with catalog.session() as s:
            row = cat.SegmentRow(run_id=run_id, table_name=table_name, writer_id=writer_id,
                                 path=rel, row_count=table.num_rows, size_bytes=len(data),
                                 sha256=hashlib.sha256(data).hexdigest(), min_step=lo,
                                 max_step=hi, created_at=now)
            s.add(row)
            if writer_id is not None and lo is not None:
                w = s.get(cat.WriterRow, writer_id)
                if w is not None and (w.first_step is None or lo < w.first_step):
                    w.first_step = lo
            run = s.get(cat.RunRow, run_id)
            if run is not None:
                run.heartbeat_at = now
            s.flush()
            rec = to_record(row)
    except BaseException:
        try:
            os.remove(os.path.join(root, rel))
        except OSError:
            pass
        raise
    return rec


def read_segment_file(root, rel_path, columns=None):
    return pq.read_table(os.path.join(root, rel_path), columns=columns)


def empty_table(table_name):
    return schema_of(table_name).empty_table()


__all__ = ["SegmentRecord", "write_segment", "write_file", "encode", "read_segment_file",
           "empty_table", "segment_dir", "file_name", "parse_owner", "is_this_host", "pa"]
