"""The one row builder: column buffers -> Arrow tables cast to the table's schema constant.

The recorder's writer thread, the dump capture and every importer build their rows here, so
a table's rows look the same whoever made them. The tfdbg v1 rows (debug_runs, debug_tensors,
debug_graphs) have their builders here too: DumpHook and `import-dumps` make the very same
rows from a run's dump files.
"""

import itertools

import numpy as np
import pyarrow as pa

from .tables import schema_of
from .dumps import DEBUG_TENSORS

COMBINE_BELOW = 64 << 10     # average bytes per Arrow chunk under which take() makes one chunk
_POOL = pa.system_memory_pool()   # see segments.parquet_options: malloc returns freed pages


_HISTO_COLUMNS = ("num", "min", "max", "sum", "sum_squares", "bucket_limits", "bucket_counts")


class ColumnBuffers:
    """Per-table column lists (and ready-made Arrow tables) of one attempt; `take()` turns
    them into Arrow tables cast to each table's schema constant. The recorder's writer fills
    them on its thread (jobs), importers directly."""

    def __init__(self, attempt):
        self.attempt = attempt
        self.tables = {}
        self.arrow = {}    # table -> [pa.Table] added ready-made (add_table)
        self.arrow_bytes = {}   # table -> bytes in self.arrow[table]
        self.rows = 0

    def columns(self, table):
        cols = self.tables.get(table)
        if cols is None:
            cols = self.tables[table] = {f.name: [] for f in schema_of(table)}
        return cols

    def add(self, table, **row):
        cols = self.columns(table)
        row.setdefault("attempt", self.attempt)
        for name, values in cols.items():
            values.append(row.get(name))
        self.rows += 1

    def add_scalar(self, step, wall_time, tag, value):
        """The hot path: one scalar row without building a dict."""
        cols = self.tables.get("scalars") or self.columns("scalars")
        cols["step"].append(step)
        cols["wall_time"].append(wall_time)
        cols["tag"].append(tag)
        cols["attempt"].append(self.attempt)
        cols["value"].append(value)
        self.rows += 1

    def add_histogram(self, step, wall_time, tag, fields):
        """A `histo` histogram row (fields: histo_fields()'s dict) without the generic path."""
        cols = self.tables.get("histograms") or self.columns("histograms")
        cols["step"].append(step)
        cols["wall_time"].append(wall_time)
        cols["tag"].append(tag)
        cols["attempt"].append(self.attempt)
        for name in _HISTO_COLUMNS:
            cols[name].append(fields[name])
        cols["bucket_lefts"].append(None)
        cols["source"].append("histo")
        self.rows += 1

    def add_many(self, table, n, **columns):
        """Appends n rows given as equal-length lists (missing columns become null)."""
        cols = self.columns(table)
        for name, values in cols.items():
            if name in columns:
                values.extend(columns[name])
            elif name == "attempt":
                values.extend([self.attempt] * n)
            else:
                values.extend([None] * n)
        self.rows += n

    def add_table(self, table, rows):
        """Appends a ready pa.Table of `table`'s columns (a missing attempt column is filled
        in): producers that build Arrow arrays themselves skip the per-value conversion."""
        schema = schema_of(table)
        if "attempt" not in rows.column_names:
            rows = rows.append_column("attempt", pa.array(
                np.full(rows.num_rows, self.attempt, np.int32), pa.int32()))
        rows = rows.select(schema.names)
        self.arrow.setdefault(table, []).append(
            rows if rows.schema == schema else rows.cast(schema))
        self.arrow_bytes[table] = self.arrow_bytes.get(table, 0) + rows.nbytes
        self.rows += rows.num_rows

    def take_arrow(self, table):
        """Returns the ready-made rows of one table as a pa.Table and forgets them."""
        parts = self.arrow.pop(table, [])
        self.arrow_bytes.pop(table, None)
        out = pa.concat_tables(parts)
        self.rows -= out.num_rows
        return out

    def take(self):
        """Returns {table: pa.Table} and empties the buffers."""
        out = {}
        for name, cols in self.tables.items():
            if cols and next(iter(cols.values())):
                schema = schema_of(name)
                out[name] = pa.Table.from_arrays(
                    [arrow_column(cols[f.name], f.type) for f in schema], schema=schema)
        for name, parts in self.arrow.items():
            table = pa.concat_tables(([out[name]] if name in out else []) + parts)
            # One chunk, as Parquet pages split at chunk ends, unless the chunks are large
            # already (dumps: ~1 ms a dumped step to copy, for 1% smaller files)
            if table.nbytes < min(1 << 30, COMBINE_BELOW * table.column(0).num_chunks):
                table = table.combine_chunks(memory_pool=_POOL)
            out[name] = table
        self.tables, self.arrow, self.arrow_bytes, self.rows = {}, {}, {}, 0
        return out


def arrow_column(values, typ):
    """Lists of numpy arrays (histogram buckets) become one flat array plus offsets: ~20x
    faster than converting each array as a Python sequence."""
    if pa.types.is_list(typ) and values and all(isinstance(v, np.ndarray) for v in values):
        lengths = np.fromiter((len(v) for v in values), dtype=np.int32, count=len(values))
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)])
        flat = pa.array(np.concatenate(values), type=typ.value_type, memory_pool=_POOL)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32(), memory_pool=_POOL), flat,
                                        type=typ, pool=_POOL)
    return pa.array(values, type=typ, memory_pool=_POOL)



def int64_lists(values):
    """A list<int64> column (shapes) through one flat array."""
    if any(v is None for v in values):
        return pa.array(values, pa.list_(pa.int64()))
    offsets = np.zeros(len(values) + 1, np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(values), np.int64, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def binary_array(values):
    """One join and zero-copy buffers: pa.array(values) grows its data buffer by realloc, 10x
    slower on ~280 KB of Events a run. None values become nulls."""
    valid = None
    if None in values:
        valid = np.array([v is not None for v in values])
        values = [b"" if v is None else v for v in values]
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    if offsets[-1] >= 1 << 31:         # int32 offsets: let pyarrow split it into chunks
        return pa.array(values, pa.binary(), mask=None if valid is None else ~valid)
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.binary(), len(values), [
        bitmap, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(values))],
        null_count=-1 if valid is None else int((~valid).sum()))




# -- tfdbg v1 dumps -------------------------------------------------------------------------


DEBUG_TENSOR_COLUMNS = ["step", "wall_time", "tag", "run_key", "device", "node_name",
                        "output_slot", "debug_op", "timestamp", "ext_timestamp", "dtype",
                        "shape", "event", "content_at", "codec", "content", "chain_run",
                        "chain_step", "chain_pos"]


_CODEC_FIELDS = [DEBUG_TENSORS.field(name) for name in DEBUG_TENSOR_COLUMNS[13:]]


def debug_tensor_table(step, run_key, tensors, device_of, encoder=None):
    """The debug_tensors rows of one session.run as a pa.Table (no attempt column: the
    buffers add it), from TensorFile-like objects; built in one go because converting the
    Event bytes value by value cost as much as reading the files. `device_of(device_dir)`
    gives the device name. dtype and shape come from the object when it knows them (the
    in-memory capture), else from the Event. With a dump_codec.Encoder the tensor contents
    are encoded against the encoder's earlier runs (this run must then be stored, or the
    encoder told to forget()); without one the Events are kept whole."""
    return debug_tensor_runs([(step, run_key, tensors)], device_of, encoder)


def debug_tensor_runs(runs, device_of, encoder=None):
    """debug_tensor_table of several session.runs, [(step, run_key, tensors)], in one table
    (the recorder ingests what queued up together: Arrow's fixed costs paid once)."""
    from .formats import tfdbg_v1
    coded = None
    if encoder is not None:
        from .dump_codec import EncodedRows, canonical_key
        coded = EncodedRows()
    tags, devices, nodes, slots, ops, stamps, exts, dtypes, shapes = (
        [], [], [], [], [], [], [], [], [])
    steps, keys, datas = [], [], []
    for step, run_key, tensors in runs:
        if coded is not None:
            tensors = sorted(tensors, key=canonical_key)
        first = len(tags)
        for t in tensors:
            if t.dtype is None:      # the files capture: from the Event
                t.dtype, t.shape = tfdbg_v1.tensor_info(t.data)
            tags.append(f"{t.node_name}:{t.output_slot}:{t.debug_op}")
            devices.append(device_of(t.device_dir))
            nodes.append(t.node_name)
            slots.append(t.output_slot)
            ops.append(t.debug_op)
            stamps.append(t.timestamp)
            exts.append(None if t.ext_timestamp == str(t.timestamp) else t.ext_timestamp)
            dtypes.append(t.dtype)
            shapes.append(t.shape)
        steps.append((step, len(tensors)))
        keys.append((run_key, len(tensors)))
        if coded is not None:
            encoder.encode(coded, step, run_key, tensors, tags[first:], devices[first:])
        else:
            datas.extend(t.data for t in tensors)
    n = len(tags)
    stamps = np.array(stamps, np.int64)
    if coded is None:
        events = binary_array(datas)
        codec_columns = [pa.nulls(n, f.type) for f in _CODEC_FIELDS]
    else:
        columns = coded.columns()
        events = columns["event"]
        codec_columns = [columns[f.name] for f in _CODEC_FIELDS]
    return pa.Table.from_arrays([
        pa.array(np.repeat([s for s, _n in steps], [k for _s, k in steps]).astype(np.int64)),
        pa.array(stamps / 1e6), pa.array(tags, pa.string()),
        pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(len(keys), dtype=np.int32), [k for _r, k in keys])),
            pa.array([r for r, _k in keys], pa.string())).cast(pa.string()),
        pa.array(devices, pa.string()), pa.array(nodes, pa.string()),
        pa.array(slots, pa.int32()), pa.array(ops, pa.string()), pa.array(stamps),
        pa.array(exts, pa.string()), pa.array(dtypes, pa.string()),
        int64_lists(shapes), events, *codec_columns,
    ], names=DEBUG_TENSOR_COLUMNS)


def debug_run_row(step, wall_time, run_key, session_run, status, source, core_metadata_name,
                  core_metadata, fetches_info, feed_keys_info, devices, graphs, tensors):
    """The debug_runs row of one session.run. `graphs`: (device, graph hash, timestamp
    micros, Event wall time, raw Event bytes or None) per device that ran one, in device-dir
    order; raw bytes only where the graph file would not be rebuilt byte for byte."""
    raws = [g[4] for g in graphs]
    return dict(
        step=step, wall_time=wall_time, tag=run_key, run_key=run_key, session_run=session_run,
        status=status, source=source, core_metadata_name=core_metadata_name,
        core_metadata=core_metadata, fetches_info=fetches_info, feed_keys_info=feed_keys_info,
        devices=devices, graph_devices=[g[0] for g in graphs],
        graph_hashes=[g[1] for g in graphs], graph_timestamps=[g[2] for g in graphs],
        graph_wall_times=[g[3] for g in graphs],
        graph_events=raws if any(r is not None for r in raws) else None,
        tensor_count=len(tensors), tensor_bytes=sum(len(t.data) for t in tensors))


def debug_graph_row(step, device, graph_hash, timestamp, event_wall_time, graph_def):
    """A debug_graphs row: one distinct partition graph of one device."""
    return dict(step=step, wall_time=timestamp / 1e6, tag=device, device=device,
                graph_hash=graph_hash, timestamp=timestamp, event_wall_time=event_wall_time,
                graph_def=graph_def)
