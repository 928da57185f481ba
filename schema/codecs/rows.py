"""The one row builder: column buffers -> Arrow tables cast to the table's schema constant.

The recorder's writer thread, the dump capture and every importer build their rows here, so
a table's rows look the same whoever made them. The tfdbg v1 rows have their builders in
tfdbg_v1_rows.py.
"""

import itertools

import numpy as np
import pyarrow as pa

from ..tables import schema_of

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
        in): producers that build Arrow arrays themselves skip the per-value conversion. Rows
        keep the order they were added in, lists and tables mixed (import-tfevents)."""
        schema = schema_of(table)
        cols = self.tables.pop(table, None)
        if cols and next(iter(cols.values())):   # the rows before these, first
            self.arrow.setdefault(table, []).append(_list_table(table, cols))
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
                out[name] = _list_table(name, cols)
        for name, parts in self.arrow.items():
            table = pa.concat_tables(parts + ([out[name]] if name in out else []))
            # One chunk, as Parquet pages split at chunk ends, unless the chunks are large
            # already (dumps: ~1 ms a dumped step to copy, for 1% smaller files)
            if table.nbytes < min(1 << 30, COMBINE_BELOW * table.column(0).num_chunks):
                table = table.combine_chunks(memory_pool=_POOL)
            out[name] = table
        self.tables, self.arrow, self.arrow_bytes, self.rows = {}, {}, {}, 0
        return out


def _list_table(name, cols):
    schema = schema_of(name)
    return pa.Table.from_arrays([arrow_column(cols[f.name], f.type) for f in schema],
                                schema=schema)


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
        bitmap, pa.py_buffer(offsets.astype(np.int32)), _joined(values, int(offsets[-1]))],
        null_count=-1 if valid is None else int((~valid).sum()))


def _joined(values, total):
    """The values one after the other. Past a few MB into a numpy array: numpy allocates those
    in huge pages. Joining 2 509 slices of 25 MB took 14 ms as bytes (mostly page faults)
    and 5 ms this way here."""
    if total < JOIN_IN_NUMPY:
        return pa.py_buffer(b"".join(values))
    out = np.empty(total, np.uint8)
    view, at = memoryview(out), 0
    for v in values:
        n = len(v)
        view[at:at + n] = v
        at += n
    return pa.py_buffer(out)


JOIN_IN_NUMPY = 4 << 20




