"""The segment protocol: a Parquet file exists for readers only once the catalog registers it.

Local: temporary name (leading '.') -> fsync -> rename into place -> fsync dir. Object store:
upload under the final, unique name (an object appears whole or not at all). Then register in
one transaction, which holds no file I/O. A crash at any point leaves either nothing, or an
orphan file that `verify` (and `Store.open`, for local data) removes; never a registered
segment without its file.
"""

import contextlib
import dataclasses
import functools
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
from . import lifecycle_sql as sql
from ..codecs import histogram_edges
from ..tables import STEPLESS, WRITE_OPTIONS, schema_of, table_name

_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_SEQ = itertools.count()
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
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


def parquet_options(name):
    """How every segment of table `name` is written (one place, for segments and compaction).

    Dictionary encoding only for string columns (tags, kinds): tried on float and list columns
    it tripled the encoding time and made files larger than zstd alone (tools/bench_hooks).
    malloc, not pyarrow's default mimalloc pool, which keeps freed pages: a long recording would
    otherwise hold tens of MB it no longer uses (tools/bench_store).
    Statistics (min/max a row group) only for flat columns: readers prune row groups by step,
    and min/max of list, struct and binary columns (histogram buckets, raw records) cost a
    quarter of a histogram segment's encoding and serve no reader.
    Float columns, and lists of floats, are byte-stream split (each value's bytes in planes
    before zstd): on tools/bench_tensorboard's histograms that encoded in 16.5 ms to 1.43 MB,
    against 25.6 ms to 1.85 MB plain (bucket counts are whole numbers, edges share exponents)."""
    fields = schema_of(name)
    strings = [f.name for f in fields if pa.types.is_string(f.type)]
    flat = [f.name for f in fields if not pa.types.is_nested(f.type)
            and not pa.types.is_binary(f.type) and not pa.types.is_large_binary(f.type)]
    floats = [f.name for f in fields if pa.types.is_floating(f.type)]
    floats += [f"{f.name}.list.element" for f in fields
               if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)]
    options = dict(compression=COMPRESSION, compression_level=COMPRESSION_LEVEL,
                   use_dictionary=strings, write_statistics=flat,
                   use_byte_stream_split=floats or False,
                   memory_pool=pa.system_memory_pool())
    # a table's own (schema/tables/__init__.py)
    options.update(WRITE_OPTIONS.get(table_name(name), {}))
    return options


def stored(table, name):
    """The rows of table `name` as a segment keeps them: cast to the schema constant, a
    histogram's repeated left edges cut (histogram_edges.py; Store.read puts them back)."""
    table = table.cast(schema_of(name)) if table.schema != schema_of(name) else table
    return histogram_edges.compact(table) if name == histogram_edges.TABLE else table


def read_back(table, name):
    """A segment's rows as the store gives them (stored's inverse)."""
    return histogram_edges.expand(table) if name == histogram_edges.TABLE else table


def encode(table, name):
    """Casts a table to its schema constant and serialises it to Parquet bytes."""
    table = stored(table, name)
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, **parquet_options(name))
    return table, sink.getvalue()


def write_streamed(data, rel_path, name, batches):
    """Writes record batches (cast to table `name`'s schema) into one new Parquet file at
    `rel_path` of DataLocation `data` (durably, see DataLocation.new_file); memory stays at one
    batch. Returns (rows, size_bytes, sha256, min_step, max_step)."""
    import pyarrow.compute as pc
    schema = schema_of(name)
    rows, lo, hi = 0, None, None
    with data.new_file(rel_path) as sink:
        with pq.ParquetWriter(sink, schema, **parquet_options(name)) as writer:
            for batch in batches:
                t = stored(pa.Table.from_batches([batch]), name)
                if t.num_rows == 0:
                    continue
                writer.write_table(t, row_group_size=ROW_GROUP_ROWS)
                mm = pc.min_max(t["step"]).as_py()
                lo = mm["min"] if lo is None else min(lo, mm["min"])
                hi = mm["max"] if hi is None else max(hi, mm["max"])
                rows += t.num_rows
    return rows, sink.size, sink.sha256(), lo, hi


def step_range(table):
    if table.num_rows == 0:
        return None, None
    import pyarrow.compute as pc
    mm = pc.min_max(table["step"]).as_py()
    return mm["min"], mm["max"]


def write_segment(data, catalog, run_id, table_name, table, writer_id=None):
    """Writes one segment and registers it; returns its SegmentRecord.

    If registration fails the file is removed again and the error raised, so the caller keeps
    its rows and may retry.
    """
    return write_encoded(data, catalog, run_id, table_name, Encoded.of(table, table_name),
                         writer_id)


class Encoded:
    """A whole Parquet segment in memory, with what the catalog records of it."""

    def __init__(self, data, rows, min_step, max_step):
        self.data, self.rows, self.min_step, self.max_step = data, rows, min_step, max_step

    @functools.cached_property
    def digest(self):
        """sha256 of the bytes (hex): computed once, on whichever thread asks first."""
        return hashlib.sha256(self.data).hexdigest()

    @classmethod
    def of(cls, table, table_name):
        """Table `table_name`'s rows encoded as one segment (its size known before writing)."""
        table, blob = encode(table, table_name)
        return cls(blob, table.num_rows, *step_range(table))


class StreamEncoder:
    """Encodes one segment row group by row group as its rows arrive (the recorder's writer
    does the Parquet work for large tables while training runs, not all at a flush)."""

    def __init__(self, table_name):
        self.table_name, self.schema = table_name, schema_of(table_name)
        self._sink = pa.BufferOutputStream(memory_pool=pa.system_memory_pool())
        self._writer = pq.ParquetWriter(self._sink, self.schema, **parquet_options(table_name))
        self.rows, self.min_step, self.max_step = 0, None, None

    def write(self, table):
        if table.num_rows == 0:
            return
        table = stored(table, self.table_name)
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        lo, hi = step_range(table)
        self.rows += table.num_rows
        self.min_step = lo if self.min_step is None else min(lo, self.min_step)
        self.max_step = hi if self.max_step is None else max(hi, self.max_step)

    @property
    def nbytes(self):
        """Bytes of the segment encoded so far (held in memory until it is written)."""
        return self._sink.tell()

    def finish(self):
        self._writer.close()
        return Encoded(self._sink.getvalue(), self.rows, self.min_step, self.max_step)


def write_encoded(data, catalog, run_id, table_name, encoded, writer_id=None):
    """Writes an encoded segment durably to DataLocation `data` and registers it; returns its
    SegmentRecord. If registration fails the file is removed again and the error raised."""
    blob = encoded.data
    rel = f"{segment_dir(table_name, run_id)}/{file_name(writer_id if writer_id else 'w')}"
    data.write_new(rel, blob)
    digest = encoded.digest
    try:
        return register(catalog, run_id, table_name, writer_id, rel, encoded.rows, len(blob),
                        digest, encoded.min_step, encoded.max_step)
    except BaseException:
        try:
            data.remove(rel)
        except OSError:
            pass
        raise


def register(catalog, run_id, table_name, writer_id, rel, rows, size, digest, lo, hi,
             also=None, heartbeat=True):
    """Registers a written file as a segment in one transaction (retried on a dropped
    connection; a retry that finds the path registered, by a commit whose answer was lost,
    takes that). The writer's first step (and with `heartbeat` the run's heartbeat) move with
    it. `also(s, segment_id)` adds more to the same transaction. Plain statements, not ORM
    objects: on a server catalog each is a round trip, and this runs for every flush."""
    now = time.time()
    values = sql.row(sql.INSERT_SEGMENT, run_id=run_id, table_name=table_name,
                     writer_id=writer_id, path=rel, row_count=rows, size_bytes=size,
                     sha256=digest, min_step=lo, max_step=hi, created_at=now)
    seg = cat.SegmentRow

    def add(s):
        if s.info.get("retry"):
            done = s.scalar(cat.select(seg).where(seg.path == rel))
            if done is not None:
                return to_record(done)
        segment_id = sql.INSERT_SEGMENT.new_id(s, values)
        # a stepless table's "steps" are record indices (tfdbg v2): they must not lower the
        # attempt's first step, which would hide earlier attempts' rows
        if writer_id is not None and lo is not None and table_name not in STEPLESS:
            s.execute(sql.WRITER_FIRST_STEP, {"step": lo, "writer_id": writer_id})
        if heartbeat:
            s.execute(sql.RUN_HEARTBEAT, {"now": now, "run_id": run_id})
        if also is not None:
            also(s, segment_id)
        return SegmentRecord(segment_id, run_id, table_name, writer_id, rel, rows, size, digest,
                             lo, hi, now)
    return catalog.transact(add)


def write_group(data, catalog, run_id, tables, writer_id=None):
    """Writes several tables' segments ({name: pa.Table}) to DataLocation `data` and registers
    them all in one transaction: an importer's flush lands whole or not at all (its raw
    records and the rows decoded from them together). Returns the SegmentRecords. A writer's
    first_step is not moved: an import is no resumption, its rows hide no earlier attempt's."""
    written = []
    try:
        for name, table in tables.items():
            written.append(write_file(data, run_id, name, Encoded.of(table, name), writer_id))
        return register_group(catalog, run_id, written, writer_id)
    except BaseException:
        remove_files(data, written)
        raise


def write_file(data, run_id, table_name, encoded, writer_id=None):
    """Writes an encoded segment's file durably (not yet registered): (table, rel, Encoded)."""
    rel = f"{segment_dir(table_name, run_id)}/{file_name(writer_id if writer_id else 'w')}"
    data.write_new(rel, encoded.data)
    encoded.digest   # noqa: B018 - hashed here, on the writing thread, not at registration
    return table_name, rel, encoded


def remove_files(data, written):
    for _name, rel, _encoded in written:
        with contextlib.suppress(OSError):
            data.remove(rel)


def register_group(catalog, run_id, written, writer_id=None, also=None):
    """Registers files write_file wrote ([(table, rel, Encoded)]) in one transaction; returns
    their SegmentRecords. The caller removes the files if it raises. `also(session)` adds
    more to the transaction (an importer's attempt end with its last group)."""
    now = time.time()
    seg = cat.SegmentRow
    digests = [e.digest for _n, _r, e in written]

    def add(s):
        if s.info.get("retry") and written and s.scalar(
                cat.select(seg).where(seg.path == written[0][1])) is not None:
            return [to_record(r) for r in s.scalars(cat.select(seg).where(
                seg.path.in_([w[1] for w in written])))]
        out = []
        for (name, rel, e), digest in zip(written, digests):
            segment_id = sql.INSERT_SEGMENT.new_id(s, sql.row(
                sql.INSERT_SEGMENT, run_id=run_id, table_name=name, writer_id=writer_id,
                path=rel, row_count=e.rows, size_bytes=len(e.data), sha256=digest,
                min_step=e.min_step, max_step=e.max_step, created_at=now))
            out.append(SegmentRecord(segment_id, run_id, name, writer_id, rel, e.rows,
                                     len(e.data), digest, e.min_step, e.max_step, now))
        s.execute(sql.RUN_HEARTBEAT, {"now": now, "run_id": run_id})
        if also is not None:
            also(s)
        return out
    return catalog.transact(add)


__all__ = ["SegmentRecord", "write_segment", "write_encoded", "write_group", "register",
           "write_file", "register_group", "remove_files",
           "Encoded",
           "StreamEncoder",
           "encode", "segment_dir", "file_name", "parse_owner", "is_this_host"]
