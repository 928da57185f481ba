"""Store: one directory holding `catalog.sqlite` and Parquet segments under `data/`.

`Store.create` makes (or opens) a store; `Store.open` refuses anything that is not a store it
understands. Readers see registered segments only, and for a step recorded by several attempts
of a run (resumed from an older checkpoint) they keep the latest attempt's rows.
"""

import contextlib
import os
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import catalog as cat
from . import migrate, segments
from . import runs as run_writes
from .errors import NotAStoreError, RunNotFoundError, StoreDamageError
from .records import run_record, writer_record
from .formats.files import fsync_path
from .tables import schema_of

CATALOG_FILE = "catalog.sqlite"
# A few KiB kept free on the store's disk: on a full disk, finish() deletes this file to make
# room for the catalog write that marks the run (SQLite needs space for its journal).
RESERVE_FILE = ".tfblackbox-reserve"
RESERVE_BYTES = 256 << 10


class Store:
    def __init__(self, root, catalog):
        self.root = os.path.abspath(root)
        self.catalog = catalog

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, path, catalog_url=None):
        """Creates a store at `path` (an absent or empty directory), or opens the one there.

        Atomic: the catalog is built complete (tables and format version) under a temporary
        name and linked into place, so a process killed at any instant leaves either no
        catalog (the next create finishes the job) or a whole one. Several processes creating
        the same store at once all end up in the one that was linked first."""
        path = os.fspath(path)
        if catalog_url is None:
            _create_sqlite(path)
            return cls.open(path)
        if not os.path.isdir(os.path.join(path, "data")):
            _make_data_dir(path)
        catalog = cat.Catalog(catalog_url)
        if "meta" not in catalog.table_names():
            _init_catalog(catalog)
        catalog.dispose()
        return cls.open(path, catalog_url)

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
        found = catalog.get_meta("format_version") if "meta" in tables else None
        if found is None and _never_used(catalog, tables):
            # tfblackbox <= 0.1 created the tables and the version in two steps: a process
            # killed between them left this; no run was ever recorded, so start it afresh
            _drop_all(catalog)
            _init_catalog(catalog)
            tables = catalog.table_names()
            found = catalog.get_meta("format_version")
        if "meta" not in tables and found is None:
            raise NotAStoreError(f"{path} is not a tfblackbox store: its catalog has no meta table")
        found = migrate.check(path, found)
        migrate.upgrade(catalog, path, found,
                        None if catalog_url else os.path.join(path, CATALOG_FILE))
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

    # -- the space reserve --------------------------------------------------------------------

    def keep_reserve(self):
        """Makes sure the reserve file exists (best effort: a full disk has no room for it)."""
        path = os.path.join(self.root, RESERVE_FILE)
        if os.path.exists(path) and os.path.getsize(path) == RESERVE_BYTES:
            return True
        try:
            with open(path, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(path)
            return False

    def release_reserve(self):
        """Frees the reserve's space; True if there was one."""
        try:
            os.remove(os.path.join(self.root, RESERVE_FILE))
            return True
        except OSError:
            return False

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


# -- creating -------------------------------------------------------------------------------

CREATING_PREFIX = "." + CATALOG_FILE + ".creating-"


def _create_sqlite(path):
    """Makes the SQLite store at `path` unless its catalog exists (see Store.create)."""
    final = os.path.join(path, CATALOG_FILE)
    if os.path.exists(final):
        # a creator killed between linking its catalog into place and removing its
        # temporary name leaves that name behind
        for name in os.listdir(path):
            _half_made(path, name)
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotAStoreError(f"cannot create a store at {path}: it is a file, not a directory")
    if os.path.isdir(path):
        foreign = [n for n in os.listdir(path) if not _half_made(path, n)]
        if foreign:
            raise NotAStoreError(
                f"cannot create a store at {path}: the directory is not empty and holds no "
                f"{CATALOG_FILE} (found {sorted(foreign)[0]!r}); choose an empty or new "
                f"directory")
    _make_data_dir(path)
    tmp = f"{os.path.join(path, CREATING_PREFIX)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        catalog = cat.Catalog(_sqlite_url_of(tmp))
        try:
            _init_catalog(catalog)
        finally:
            catalog.dispose()
        fsync_path(tmp)
        _link_into_place(tmp, final)
        fsync_path(path)
    except OSError as e:
        raise NotAStoreError(f"cannot create a store at {path}: {e.strerror or e}") from e
    finally:
        for leftover in (tmp, tmp + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


def _drop_all(catalog):
    from sqlalchemy import MetaData
    with catalog.write() as s:
        meta = MetaData()
        meta.reflect(s.connection())
        meta.drop_all(s.connection())


def _never_used(catalog, tables):
    """An empty catalog, or one with our tables but no version and no run in it."""
    if not tables:
        return True
    if not {"meta", "runs"} <= tables:
        return False
    with catalog.session() as s:
        return s.scalar(cat.select(cat.RunRow.run_id).limit(1)) is None


def _half_made(path, name):
    """True for what a create killed midway leaves: an empty data/ tree, and temporary
    catalogs (those of dead processes are removed here)."""
    full = os.path.join(path, name)
    if name == "data" and os.path.isdir(full):
        return not any(files for _d, _s, files in os.walk(full))
    if name == RESERVE_FILE:
        return True
    if name.startswith(CREATING_PREFIX):
        pid = name[len(CREATING_PREFIX):].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(full)
        return True
    return False


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _link_into_place(tmp, final):
    """A hard link never replaces a catalog another process linked first; on a filesystem
    without hard links (FAT), a rename guarded by an existence check."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return
    except OSError:
        if not os.path.exists(final):
            os.rename(tmp, final)


def _make_data_dir(path):
    try:
        os.makedirs(os.path.join(path, "data"), exist_ok=True)
        _probe_writable(os.path.join(path, "data"))
    except OSError as e:
        raise NotAStoreError(f"cannot create a store at {path}: {e.strerror or e}") from e


def _init_catalog(catalog):
    """Tables and format version in one transaction."""
    with catalog.write() as s:
        cat.Base.metadata.create_all(s.connection())
        migrate.stamp_newest(s.connection())
        if s.get(cat.Meta, "format_version") is None:
            catalog.set_meta(s, "format_version", migrate.FORMAT_VERSION)
            catalog.set_meta(s, "created_by", migrate.package_version())
            catalog.set_meta(s, "created_at", time.time())


def _sqlite_url(path):
    return _sqlite_url_of(os.path.join(path, CATALOG_FILE))


def _sqlite_url_of(file):
    return "sqlite:///" + os.path.abspath(file)


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
