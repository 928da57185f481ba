"""Store: one directory holding `catalog.sqlite` and Parquet segments under `data/`.

`Store.create` makes (or opens) a store; `Store.open` refuses anything that is not a store it
understands. Readers see registered segments only, and for a step recorded by several attempts
of a run (resumed from an older checkpoint) they keep the latest attempt's rows.
"""

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import catalog as cat
from . import migrations, segments
from . import runs as run_writes
from .errors import NotAStoreError, RunNotFoundError, StoreDamageError
from .records import run_record, writer_record
from .tables import schema_of

CATALOG_FILE = "catalog.sqlite"


def package_version():
    try:
        from importlib.metadata import version
        return version("tfblackbox")
    except Exception:
        return "unknown"


class Store:
    def __init__(self, root, catalog):
        self.root = os.path.abspath(root)
        self.catalog = catalog

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, path, catalog_url=None):
        """Creates a store at `path` (an absent or empty directory), or opens the one there."""
        path = os.fspath(path)
        if os.path.exists(os.path.join(path, CATALOG_FILE)) or (
                catalog_url and os.path.isdir(os.path.join(path, "data"))):
            return cls.open(path, catalog_url)
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotAStoreError(f"cannot create a store at {path}: it is a file, not a directory")
        if os.path.isdir(path) and os.listdir(path):
            raise NotAStoreError(
                f"cannot create a store at {path}: the directory is not empty and holds no "
                f"{CATALOG_FILE}; choose an empty or new directory")
        try:
            os.makedirs(os.path.join(path, "data"), exist_ok=True)
            _probe_writable(os.path.join(path, "data"))
        except OSError as e:
            raise NotAStoreError(f"cannot create a store at {path}: {e.strerror or e}") from e
        catalog = cat.Catalog(catalog_url or _sqlite_url(path))
        catalog.create_all()
        with catalog.session() as s:
            if s.get(cat.Meta, "format_version") is None:
                catalog.set_meta(s, "format_version", cat.FORMAT_VERSION)
                catalog.set_meta(s, "created_by", package_version())
                catalog.set_meta(s, "created_at", time.time())
        return cls(path, catalog)

    @classmethod
    def open(cls, path, catalog_url=None, clean_orphans=True):
        """Opens an existing store; refuses a non-store or a store of a newer format."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise NotAStoreError(f"{path} is not a tfblackbox store: no such directory")
        if catalog_url is None and not os.path.isfile(os.path.join(path, CATALOG_FILE)):
            raise NotAStoreError(
                f"{path} is not a tfblackbox store: it has no {CATALOG_FILE} (a store is made by "
                f"recorder.init(store=...) or Store.create)")
        catalog = cat.Catalog(catalog_url or _sqlite_url(path))
        try:
            tables = catalog.table_names()
        except Exception as e:
            raise NotAStoreError(f"{path}: {CATALOG_FILE} is not a readable SQLite catalog: {e}") from e
        if "meta" not in tables:
            raise NotAStoreError(f"{path} is not a tfblackbox store: its catalog has no meta table")
        found = catalog.get_meta("format_version")
        migrations.check_and_migrate(catalog, path, found, package_version())
        store = cls(path, catalog)
        if clean_orphans:
            from .maintenance import remove_orphans
            try:
                remove_orphans(store)
            except OSError:
                pass   # a read-only copy of a store still opens
        return store

    def close(self):
        self.catalog.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Store({self.root!r})"

    # -- runs ---------------------------------------------------------------------------------

    def runs(self, project=None):
        with self.catalog.session() as s:
            q = cat.select(cat.RunRow).order_by(cat.RunRow.started_at)
            if project is not None:
                q = q.where(cat.RunRow.project == project)
            return [run_record(r) for r in s.scalars(q)]

    def run(self, run_id):
        with self.catalog.session() as s:
            row = s.get(cat.RunRow, run_id)
            if row is None:
                known = [r for r in s.scalars(cat.select(cat.RunRow.run_id))]
                raise RunNotFoundError(
                    f"run {run_id!r} is not in store {self.root} (runs here: "
                    f"{', '.join(known[:20]) or 'none'})")
            return run_record(row)

    def has_run(self, run_id):
        with self.catalog.session() as s:
            return s.get(cat.RunRow, run_id) is not None

    def writers(self, run_id):
        with self.catalog.session() as s:
            q = cat.select(cat.WriterRow).where(cat.WriterRow.run_id == run_id).order_by(
                cat.WriterRow.attempt)
            return [writer_record(w) for w in s.scalars(q)]

    def segments(self, run_id=None, table=None):
        with self.catalog.session() as s:
            q = cat.select(cat.SegmentRow).order_by(cat.SegmentRow.segment_id)
            if run_id is not None:
                q = q.where(cat.SegmentRow.run_id == run_id)
            if table is not None:
                q = q.where(cat.SegmentRow.table_name == table)
            return [segments.to_record(r) for r in s.scalars(q)]

    # -- writing (used by the recorder and by compaction) --------------------------------------

    def write_segment(self, run_id, table_name, table, writer_id=None):
        return segments.write_segment(self.root, self.catalog, run_id, table_name, table,
                                      writer_id)

    def write_encoded(self, run_id, table_name, encoded, writer_id=None):
        """Registers a segment encoded beforehand (segments.StreamEncoder)."""
        return segments.write_encoded(self.root, self.catalog, run_id, table_name, encoded,
                                      writer_id)

    # runs.py holds the catalog writes of a run's lifecycle
    create_run = run_writes.create_run
    begin_attempt = run_writes.begin_attempt
    end_attempt = run_writes.end_attempt
    note_writer = run_writes.note_writer
    finish_run = run_writes.finish_run
    reopen_run = run_writes.reopen_run
    get_cursor = run_writes.get_cursor
    set_cursor = run_writes.set_cursor

    # -- reading ------------------------------------------------------------------------------

    def read(self, run_id, table, columns=None, latest_only=True, steps=None):
        """All registered rows of one run's table as a pyarrow.Table sorted by step.

        `steps=(lo, hi)` keeps lo <= step < hi (either may be None). With `latest_only`, rows an
        earlier attempt recorded at or after a later attempt's first step are left out.
        """
        schema = schema_of(table)
        self.run(run_id)   # a clear error for an unknown run
        try:
            result = self._scan_registered(run_id, table, schema, steps)
        except StoreDamageError:
            # a compaction may have swapped the files between listing and reading: list again
            result = self._scan_registered(run_id, table, schema, steps)
        if latest_only:
            result = self._latest_attempts(run_id, result)
        if result.num_rows > 1 and not _sorted(result["step"]):
            result = result.take(pc.sort_indices(result["step"]))   # stable: keeps file order
        if columns is not None:
            result = result.select(columns)
        return result

    def scalars(self, run_id, **kw):
        return self.read(run_id, "scalars", **kw)

    def histograms(self, run_id, **kw):
        return self.read(run_id, "histograms", **kw)

    def media(self, run_id, **kw):
        return self.read(run_id, "media", **kw)

    def tensors(self, run_id, **kw):
        return self.read(run_id, "tensors", **kw)

    def _scan_registered(self, run_id, table, schema, steps):
        segs = self.segments(run_id, table)
        if steps is not None:
            lo, hi = steps
            segs = [g for g in segs if g.max_step is None or (
                (lo is None or g.max_step >= lo) and (hi is None or g.min_step < hi))]
        if not segs:
            return schema.empty_table()
        return self._scan([g.path for g in segs], schema, _step_filter(steps))

    def _scan(self, rel_paths, schema, row_filter=None):
        paths = [os.path.join(self.root, p) for p in rel_paths]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise StoreDamageError(
                f"store {self.root}: registered segment {missing[0]} is missing "
                f"({len(missing)} missing in all); run `tfblackbox verify --store {self.root}`")
        try:
            # the step filter prunes row groups by their statistics: a window of a big segment
            # reads only the row groups it needs
            return ds.dataset(paths, schema=schema, format="parquet").to_table(filter=row_filter)
        except (pa.ArrowException, OSError) as e:
            bad = _find_unreadable(paths)
            raise StoreDamageError(
                f"store {self.root}: segment {bad or '?'} cannot be read as Parquet ({e}); run "
                f"`tfblackbox verify --store {self.root}`") from e

    def _latest_attempts(self, run_id, table):
        writers = self.writers(run_id)
        if table.num_rows == 0 or len(writers) < 2:
            return table
        top = max(w.attempt for w in writers)
        cutoff = np.full(top + 2, np.iinfo(np.int64).max, dtype=np.int64)
        later_min = np.iinfo(np.int64).max
        for w in sorted(writers, key=lambda w: -w.attempt):
            cutoff[w.attempt] = later_min
            if w.first_step is not None:
                later_min = min(later_min, w.first_step)
        attempts = table["attempt"].to_numpy()
        keep = table["step"].to_numpy() < cutoff[np.clip(attempts, 0, top + 1)]
        return table if keep.all() else table.filter(pa.array(keep))

    def size_bytes(self, run_id=None):
        return sum(g.size_bytes for g in self.segments(run_id))


def _step_filter(steps):
    lo, hi = steps if steps is not None else (None, None)
    expr = None
    if lo is not None:
        expr = ds.field("step") >= lo
    if hi is not None:
        expr = (ds.field("step") < hi) if expr is None else expr & (ds.field("step") < hi)
    return expr


def _sorted(column):
    steps = column.to_numpy()
    return bool((steps[1:] >= steps[:-1]).all())


def _sqlite_url(path):
    return "sqlite:///" + os.path.abspath(os.path.join(path, CATALOG_FILE))


def _probe_writable(folder):
    probe = os.path.join(folder, f".probe-{os.getpid()}")
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.remove(probe)


def _find_unreadable(paths):
    import pyarrow.parquet as pq
    for p in paths:
        try:
            pq.read_metadata(p)
        except Exception:
            return p
    return None
