"""Store: a catalog (SQLite in the store directory, or a SQLAlchemy URL) plus Parquet segments
under `data/` of its data location (the directory, or any pyarrow filesystem URI).

`Store.create` makes (or opens) a store; `Store.open` refuses anything that is not a store it
understands (opening.py). Readers see registered segments only, and for a step recorded by
several attempts of a run (resumed from an older checkpoint) they keep the latest attempt's
rows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import catalog as cat
from . import lifecycle_sql, migrate, opening, segments
from . import runs as run_writes
from . import losses as loss_rows
from . import triggers as trigger_rows
from . import artifacts as artifact_store
from .artifacts import ArtifactVersion
from .data_location import DataLocation
from ..errors import NotAStoreError, ReadOnlyStoreError, RunNotFoundError, StoreDamageError
from .records import RunRecord, WriterRecord, run_record, task_order, writer_record
from ..tables import schema_of, table_name

CATALOG_FILE = opening.CATALOG_FILE
# A few KiB kept free on the store's disk: on a full disk, finish() deletes this file to make
# room for the catalog write that marks the run (SQLite needs space for its journal).
RESERVE_FILE = opening.RESERVE_FILE
RESERVE_BYTES = 256 << 10


ACCESS = ("read", "replay", "write")


class Store:
    def __init__(self, root, catalog, data, directory=None, access="write", write_url=None):
        self.root = root            # the store directory, or the catalog URL without credentials
        self.catalog = catalog
        self.data = data            # DataLocation of the Parquet files
        # the directory of a SQLite store (it keeps the reserve file); None for a server catalog
        self.directory = directory
        self.access = access        # read | replay | write (Store.open)
        self._write_url = write_url or catalog.url
        self._cursor_catalog = catalog if access == "write" else None

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, catalog_url: str | None = None,
               data: str | None = None) -> Store:
        """Creates a store, or opens the one there (to write). `path` is a directory (SQLite
        catalog in it) or a SQLAlchemy URL (`postgresql+psycopg://user@host/db`); `data` is
        where the Parquet files go (default: the directory; required for a new store at a
        URL), a directory or a pyarrow filesystem URI (`s3://bucket/prefix`), recorded in the
        catalog.

        Atomic: a SQLite catalog is built complete under a temporary name and linked into
        place; a server catalog is built in one transaction under an advisory lock. So a
        process killed at any instant leaves either no catalog (the next create finishes the
        job) or a whole one, and processes creating the same store at once all end up in one."""
        directory, url = opening.create(path, catalog_url, data)
        store = cls.open(directory if directory is not None else url,
                         url if directory is not None else None, access="write",
                         _creating=True)
        if data is not None and DataLocation(data) != store.data:
            store.close()
            raise NotAStoreError(f"store {store.root} keeps its data at {store.data.uri}, not "
                                 f"at {DataLocation(data).uri}; leave data= out to use it")
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, catalog_url: str | None = None, access: str = "read",
             clean_orphans: bool = True, _creating: bool = False) -> Store:
        """Opens an existing store; refuses a non-store or a store of a newer format.

        access="read" (the default): changes nothing. The catalog is opened read-only (the
          database refuses writes), no file is created, deleted or rewritten, and a store of
          an older format is refused, naming `tfblackbox upgrade`.
        access="replay": a reader that records its replay cursors (`set_cursor`), the one
          catalog write a replay makes; nothing else.
        access="write": a writer. Upgrades an older format in place (keeping a backup of a
          SQLite catalog) and, unless clean_orphans=False, removes orphan files of dead
          writers (local data: an object store's listing is verify's job). Only create (a
          writer) finishes a catalog whose creation by tfblackbox 0.1 was cut short."""
        if access not in ACCESS:
            raise ValueError(f"access={access!r}: expected one of {', '.join(ACCESS)}")
        write = access == "write"
        opened = opening.open_catalog(path, catalog_url, finish_half_made=_creating,
                                      write=write)
        if write and not opened.catalog.read_only:
            migrate.upgrade(opened.catalog, opened.where, opened.found, opened.sqlite_file,
                            opened.data)
        directory = os.path.dirname(opened.sqlite_file) if opened.sqlite_file else None
        store = cls(opened.where, opened.catalog, opened.data, directory, access,
                    opened.write_url)
        if write and clean_orphans and opened.data.local:
            from .maintenance import remove_orphans
            try:
                remove_orphans(store)
            except OSError:
                pass   # a read-only copy of a store still opens
        return store

    @staticmethod
    def upgrade(path: str | os.PathLike, catalog_url: str | None = None) -> dict:
        """Upgrades an older store to this format in place (`tfblackbox upgrade`), after
        keeping a copy of a SQLite catalog; a store at this format is left as it is. Returns
        {"store", "format_before", "format_after", "backup" (None: none made)}."""
        return opening.upgrade(path, catalog_url)

    def require_write(self, what):
        """Refuses `what` (a write) on a store opened to read, before anything is written."""
        if self.access != "write":
            raise ReadOnlyStoreError(
                f"store {self.root} was opened to read (access={self.access!r}), and readers "
                f"change nothing; {what} needs Store.open(..., access='write')")

    def cursor_catalog(self):
        """The catalog replay cursors are written to: a writer's own; for a replay, a
        connection of its own that writes nothing else; a reader has none."""
        if self._cursor_catalog is None:
            if self.access != "replay":
                self.require_write("recording a replay cursor")
            self._cursor_catalog = cat.Catalog(self._write_url)
        return self._cursor_catalog

    def is_at(self, spec):
        """Whether `spec` (a directory or a catalog URL) names this store."""
        spec = os.fspath(spec)
        if cat.is_url(spec):
            return cat.display_url(spec) == self.catalog.shown
        return self.directory is not None and os.path.abspath(spec) == self.directory

    def close(self) -> None:
        if self._cursor_catalog is not None and self._cursor_catalog is not self.catalog:
            self._cursor_catalog.dispose()
        self.catalog.dispose()

    # -- the space reserve --------------------------------------------------------------------

    def keep_reserve(self):
        """Makes sure the reserve file exists (best effort: a full disk has no room for it).
        Only a SQLite store has one: a server catalog's disk is not the training host's."""
        if self.directory is None:
            return False
        self.require_write("keeping a space reserve")
        path = os.path.join(self.directory, RESERVE_FILE)
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
        if self.directory is None:
            return False
        self.require_write("releasing the space reserve")
        try:
            os.remove(os.path.join(self.directory, RESERVE_FILE))
            return True
        except OSError:
            return False

    def free_space(self):
        """(bytes free, file system size) of the fuller of the file systems of the local data
        directory and a SQLite catalog's directory; None when neither is local."""
        found = []
        for path in {p for p in (self.data.base if self.data.local else None, self.directory)
                     if p}:
            try:
                st = os.statvfs(path)
            except OSError:
                continue
            found.append((st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
        return min(found) if found else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Store({self.root!r})"

    # -- runs ---------------------------------------------------------------------------------

    def runs(self, project: str | None = None) -> list[RunRecord]:
        """Run records in the order they started; the runs of one multi-worker group stand
        together where its first run started, the chief's first (records.task_order)."""
        def read(s):
            q = cat.select(cat.RunRow).order_by(cat.RunRow.started_at)
            if project is not None:
                q = q.where(cat.RunRow.project == project)
            return [run_record(r) for r in s.scalars(q)]
        return task_order(self.catalog.read(read))

    def run(self, run_id: str) -> RunRecord:
        def read(s):
            row = s.get(cat.RunRow, run_id)
            if row is not None:
                return run_record(row)
            known = [r for r in s.scalars(cat.select(cat.RunRow.run_id))]
            raise RunNotFoundError(
                f"run {run_id!r} is not in store {self.root} (runs here: "
                f"{', '.join(known[:20]) or 'none'})")
        return self.catalog.read(read)

    def has_run(self, run_id: str) -> bool:
        return self.catalog.read(
            lambda s: s.execute(lifecycle_sql.RUN_EXISTS, {"run_id": run_id}).first() is not None)

    def writers(self, run_id: str) -> list[WriterRecord]:
        def read(s):
            q = cat.select(cat.WriterRow).where(cat.WriterRow.run_id == run_id).order_by(
                cat.WriterRow.attempt)
            return [writer_record(w) for w in s.scalars(q)]
        return self.catalog.read(read)

    def segments(self, run_id: str | None = None,
                 table: str | None = None) -> list[segments.SegmentRecord]:
        def read(s):
            q = cat.select(cat.SegmentRow).order_by(cat.SegmentRow.segment_id)
            if run_id is not None:
                q = q.where(cat.SegmentRow.run_id == run_id)
            if table is not None:
                q = q.where(cat.SegmentRow.table_name == table)
            return [segments.to_record(r) for r in s.scalars(q)]
        return self.catalog.read(read)

    # -- writing (used by the recorder and by compaction) --------------------------------------

    def write_segment(self, run_id, table_name, table, writer_id=None):
        self.require_write("writing a segment")
        return segments.write_segment(self.data, self.catalog, run_id, table_name, table,
                                      writer_id)

    def write_encoded(self, run_id, table_name, encoded, writer_id=None):
        """Registers a segment encoded beforehand (segments.StreamEncoder)."""
        self.require_write("writing a segment")
        return segments.write_encoded(self.data, self.catalog, run_id, table_name, encoded,
                                      writer_id)

    # runs.py holds the catalog writes of a run's lifecycle
    create_run = run_writes.create_run
    begin_attempt = run_writes.begin_attempt
    end_attempt = run_writes.end_attempt
    attempt_end = run_writes.attempt_end
    note_writer = run_writes.note_writer
    note_run = run_writes.note_run
    finish_run = run_writes.finish_run
    reopen_run = run_writes.reopen_run
    get_cursor = run_writes.get_cursor
    set_cursor = run_writes.set_cursor
    # triggers.py: black-box triggers that fired (DumpHook's ring mode)
    record_trigger = trigger_rows.record_trigger
    triggers = trigger_rows.triggers
    # losses.py: rows an attempt recorded but could not store (a full disk), per table
    note_losses = loss_rows.note_losses
    losses = loss_rows.losses

    # -- artifacts (artifacts.py): versions of checkpoints and files, blobs by sha256 --------

    def artifacts(self, run_id: str | None = None,
                  name: str | None = None) -> list[ArtifactVersion]:
        """Registered artifact versions in registration order (readers see whole versions
        only); `name` may be 'name', 'name:vN' or 'name:alias'."""
        return artifact_store.artifacts(self, run_id, name)

    def open_artifact_file(self, sha256: str) -> BinaryIO:
        """The stored bytes of an artifact file (a binary stream; local or pyarrow.fs)."""
        return artifact_store.open_artifact_file(self, sha256)

    def local_artifact_path(self, sha256: str) -> str | None:
        """A local path to the blob when the data location is local, else None."""
        return artifact_store.local_artifact_path(self, sha256)

    def put_artifact_file(self, src: str, link: bool = False) -> tuple[str, int, int]:
        """Stores a local file's bytes as a blob: (sha256, size, bytes newly stored)."""
        return artifact_store.put_file(self, src, link)

    def register_artifact(self, run_id: str, name: str, type: str, files: Sequence[Any],
                          aliases: Sequence[str] = (), metadata: dict | None = None,
                          step: int | None = None, wall_time: float | None = None,
                          writer_id: int | None = None) -> ArtifactVersion:
        """Registers a version whose blobs are written (put_artifact_file), in one
        transaction; its number is the next of (run, name)."""
        return artifact_store.register(self, run_id, name, type, files, aliases, metadata,
                                       step, wall_time, writer_id)

    # -- reading ------------------------------------------------------------------------------

    def read(self, run_id: str, table: str, columns: Sequence[str] | None = None,
             latest_only: bool = True,
             steps: tuple[int | None, int | None] | None = None,
             registered: tuple[float | None, float | None] | None = None) -> pa.Table:
        """All registered rows of one run's table as a pyarrow.Table sorted by step.

        `steps=(lo, hi)` keeps lo <= step < hi (either may be None). With `latest_only`, rows an
        earlier attempt recorded at or after a later attempt's first step are left out.
        `registered=(after, until)` reads only the segments registered in after < time <= until
        (either may be None): what a live run had stored by some time, or has stored since.
        A table's format-5 name (debug_*, tfdbg2_*) reads its format-6 table.
        """
        table = table_name(table)
        schema = schema_of(table)
        self.run(run_id)   # a clear error for an unknown run
        try:
            result = self._scan_registered(run_id, table, schema, steps, registered)
        except StoreDamageError:
            # a compaction may have swapped the files between listing and reading: list again
            result = self._scan_registered(run_id, table, schema, steps, registered)
        if columns is None or {"bucket_lefts", "bucket_limits"} & set(columns):
            # (else nothing to put back: histogram_edges.py cuts only these lists)
            result = segments.read_back(result, table)
        if latest_only:
            result = self._latest_attempts(run_id, result)
        if result.num_rows > 1 and not _sorted(result["step"]):
            result = result.take(pc.sort_indices(result["step"]))   # stable: keeps file order
        if columns is not None:
            result = result.select(columns)
        return result

    def scalars(self, run_id: str, **kw: Any) -> pa.Table:
        return self.read(run_id, "scalars", **kw)

    def histograms(self, run_id: str, **kw: Any) -> pa.Table:
        return self.read(run_id, "histograms", **kw)

    def media(self, run_id: str, **kw: Any) -> pa.Table:
        return self.read(run_id, "media", **kw)

    def tensors(self, run_id: str, **kw: Any) -> pa.Table:
        return self.read(run_id, "tensors", **kw)

    def _scan_registered(self, run_id, table, schema, steps, registered=None):
        segs = self.segments(run_id, table)
        if registered is not None:
            after, until = registered
            segs = [g for g in segs if (after is None or g.created_at > after) and
                    (until is None or g.created_at <= until)]
        if steps is not None:
            lo, hi = steps
            segs = [g for g in segs if g.max_step is None or (
                (lo is None or g.max_step >= lo) and (hi is None or g.min_step < hi))]
        if not segs:
            return schema.empty_table()
        return self._scan([g.path for g in segs], schema, _step_filter(steps))

    def _scan(self, rel_paths, schema, row_filter=None):
        try:
            # the step filter prunes row groups by their statistics: a window of a big segment
            # reads only the row groups it needs
            return self.data.dataset(rel_paths, schema).to_table(filter=row_filter)
        except (pa.ArrowException, OSError) as e:
            missing = [r for r in rel_paths if not self.data.exists(r)]
            if missing:
                raise StoreDamageError(
                    f"store {self.root}: registered segment {self.data.show(missing[0])} is "
                    f"missing ({len(missing)} missing in all); run `tfblackbox verify --store "
                    f"{self.root}`") from e
            bad = _find_unreadable(self.data, rel_paths)
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

    def size_bytes(self, run_id: str | None = None) -> int:
        return sum(g.size_bytes for g in self.segments(run_id))

    def to_pandas(self, runs: str | Sequence[str] | None = None, table: str = "scalars",
                  pivot: bool = False) -> Any:
        """Runs as a pandas DataFrame, in tbparse's long or pivoted shapes (the `pandas`
        extra; schema/codecs/frames.py says the columns). Typed Any: pandas is optional."""
        from ..codecs import frames
        return frames.to_pandas(self, runs, table, pivot)


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


def _find_unreadable(data, rel_paths):
    for rel in rel_paths:
        try:
            data.parquet_file(rel).metadata  # noqa: B018 -- reading the footer is the check
        except Exception:
            return data.show(rel)
    return None
