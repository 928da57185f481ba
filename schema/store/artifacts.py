"""Artifacts: versions of a run's named file sets (checkpoints, SavedModels, data), their files
content-addressed by sha256 under `data/artifacts/<ab>/<sha256>` of the data location.

The protocol is the segments' one: every blob is written durably first (local: a temporary
name with the writer's host and pid, fsync, rename, fsync of the folder; object store: an
upload under the final name), then the version and its files are registered in one catalog
transaction. A kill at any instant leaves no half version, only unregistered blobs, which
`verify` (and a writer's Store.open, for local data) removes once their writer is gone or the
grace period passed. A blob some registered version already uses is not written again, so
the unchanged shards of a big model cost nothing; on the data location's own file system a
file that is never rewritten in place may be hard-linked instead of copied (`link=True`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
import uuid
from typing import Any, BinaryIO

from sqlalchemy import func

from . import catalog as cat
from . import chunks as chunking
from .chunks import BLOB_DIR, blob_rel, temp_blob_path
from ..errors import BlackboxError, StoreDamageError
from ..formats.files import fsync_path

COPY_BLOCK = 8 << 20


@dataclasses.dataclass(frozen=True)
class ArtifactFile:
    path: str        # relative path inside the artifact, "/"-separated
    sha256: str      # hex digest of the bytes
    size: int


@dataclasses.dataclass(frozen=True)
class ArtifactVersion:
    version_id: int          # catalog key, increasing in registration order
    run_id: str
    writer_id: int | None
    name: str                # as recorded, e.g. "run_<run_id>_model"
    version: int             # 0, 1, 2 ... per (run_id, name), in registration order
    type: str                # "model", "dataset", ...
    aliases: tuple[str, ...]
    metadata: dict
    step: int | None         # the run's step when logged
    wall_time: float         # when logged (time.time())
    files: tuple[ArtifactFile, ...]
    token: str = ""          # names the logging event across stores (merge)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def check_path(path: str) -> str:
    """An artifact-relative path as stored: '/'-separated, relative, no '..'."""
    p = str(path).replace(os.sep, "/")
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if not parts or p.startswith("/") or ".." in parts:
        raise BlackboxError(f"artifact file path {path!r} is not a relative path inside the "
                            f"artifact (expected e.g. 'model.keras' or 'variables/x.index')")
    return "/".join(parts)


def hash_file(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(COPY_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


# -- writing blobs ---------------------------------------------------------------------------

def stored_shas(catalog, shas) -> set[str]:
    """Which of `shas` some registered version already uses (their blobs are in place)."""
    shas = list(set(shas))
    if not shas:
        return set()
    f = cat.ArtifactFileRow
    return catalog.read(lambda s: set(s.scalars(cat.select(f.sha256).where(
        f.sha256.in_(shas)).distinct())))


def put_temp(store, tmp: str, sha: str | None = None,
             size: int | None = None) -> tuple[str, int, int]:
    """Takes a local temporary blob (temp_blob_path; written or hard-linked there by the
    caller) into place under its sha256 (computed unless given). Returns (sha256, size, bytes
    newly stored): 0 when a registered version already has these bytes (the temporary is
    then removed)."""
    try:
        if sha is None or size is None:
            sha, size = hash_file(tmp)
        if sha in stored_shas(store.catalog, [sha]):
            os.remove(tmp)
            return sha, size, 0
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        final = store.data.path(blob_rel(sha))
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(tmp, final)
        fsync_path(os.path.dirname(final))
        return sha, size, size
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _copy(src: str, tmp: str) -> None:
    """src's bytes into a new file tmp; on an error tmp is not left behind."""
    try:
        with open(src, "rb") as i, open(tmp, "xb") as o:
            shutil.copyfileobj(i, o, COPY_BLOCK)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def put_file(store, src: str, link: bool = False) -> tuple[str, int, int]:
    """Stores the bytes of local file `src` as a blob; returns (sha256, size, bytes newly
    stored). `link`: hard-link instead of copying when the data location is on src's file
    system (only for files never rewritten in place afterwards: the blob shares the inode);
    anything else is copied. On an error nothing is left behind."""
    store.require_write("storing an artifact file")
    data = store.data
    if data.local:
        tmp = temp_blob_path(data)
        if link:
            try:
                os.link(src, tmp)
                return put_temp(store, tmp)
            except OSError:
                pass   # another file system, or no links there: copy
        _copy(src, tmp)
        return put_temp(store, tmp)
    sha, size = hash_file(src)
    if sha in stored_shas(store.catalog, [sha]):
        return sha, size, 0
    rel = blob_rel(sha)
    with data.new_file(rel) as sink, open(src, "rb") as i:
        shutil.copyfileobj(i, sink, COPY_BLOCK)
    if sink.sha256() != sha:   # the file changed while it was read
        data.remove(rel)
        raise BlackboxError(f"artifact file {src} changed while it was stored; not stored")
    return sha, size, size


def put_bytes(store, blob: bytes) -> tuple[str, int, int]:
    """Stores bytes as a blob (merge, tests); returns (sha256, size, bytes newly stored)."""
    store.require_write("storing an artifact file")
    sha = hashlib.sha256(blob).hexdigest()
    if sha in stored_shas(store.catalog, [sha]):
        return sha, len(blob), 0
    store.data.write_new(blob_rel(sha), blob)
    return sha, len(blob), len(blob)


# -- registering and reading versions --------------------------------------------------------

def register(store, run_id: str, name: str, type: str, files, aliases=(), metadata=None,
             step: int | None = None, wall_time: float | None = None,
             writer_id: int | None = None, token: str | None = None,
             version: int | None = None,
             chunks: dict[str, Any] | None = None) -> ArtifactVersion:
    """Registers a version whose blobs are all written: `files` are ArtifactFile (or (path,
    sha256, size)); `chunks` {file sha256: [(chunk sha256, size)]} of its chunked files
    (chunks.py; their chunk blobs written). One transaction; a retry after a lost answer
    finds its token and returns that version. `version` None: the next number of (run,
    name)."""
    store.require_write("registering an artifact version")
    files = tuple(sorted((_as_file(f) for f in files), key=lambda f: f.path))
    if len({f.path for f in files}) != len(files):
        raise BlackboxError(f"artifact {name!r}: two files with the same path")
    token = token or uuid.uuid4().hex
    aliases = tuple(dict.fromkeys(str(a) for a in aliases or ()))
    metadata = dict(metadata or {})
    wall_time = time.time() if wall_time is None else float(wall_time)
    meta_json = json.dumps(metadata, sort_keys=True, default=str)
    v = cat.ArtifactVersionRow

    def add(s):
        if s.info.get("retry"):
            done = s.scalar(cat.select(v).where(v.token == token))
            if done is not None:
                return _record(done, files)
        number = version
        if number is None:
            top = s.scalar(cat.select(func.max(v.version)).where(v.run_id == run_id,
                                                                     v.name == name))
            number = 0 if top is None else top + 1
        vid = s.execute(cat.insert(v).values(
            token=token, run_id=run_id, writer_id=writer_id, name=name, version=number,
            type=type, aliases_json=json.dumps(list(aliases)), metadata_json=meta_json,
            step=step, wall_time=wall_time, created_at=time.time())).inserted_primary_key[0]
        chunking.add_rows(s, chunks)
        if files:
            s.execute(cat.insert(cat.ArtifactFileRow), [
                dict(version_id=vid, path=f.path, sha256=f.sha256, size=f.size)
                for f in files])
        return ArtifactVersion(vid, run_id, writer_id, name, number, type, aliases,
                               json.loads(meta_json), step, wall_time, files, token)
    return store.catalog.transact(add)


def _as_file(f):
    if isinstance(f, ArtifactFile):
        return ArtifactFile(check_path(f.path), f.sha256, int(f.size))
    path, sha, size = f
    return ArtifactFile(check_path(path), str(sha), int(size))


def _record(row, files):
    return ArtifactVersion(row.version_id, row.run_id, row.writer_id, row.name, row.version,
                           row.type, tuple(json.loads(row.aliases_json)),
                           json.loads(row.metadata_json), row.step, row.wall_time,
                           tuple(files), row.token)


def artifacts(store, run_id: str | None = None, name: str | None = None
              ) -> list[ArtifactVersion]:
    """Registered versions in registration order; `name` also takes 'name:vN' or
    'name:alias' (the versions bearing that alias)."""
    wanted_version, alias = None, None
    if name is not None and ":" in name:
        name, tail = name.rsplit(":", 1)
        if tail.startswith("v") and tail[1:].isdigit():
            wanted_version = int(tail[1:])
        else:
            alias = tail
    v, f = cat.ArtifactVersionRow, cat.ArtifactFileRow

    def read(s):
        q = cat.select(v).order_by(v.version_id)
        if run_id is not None:
            q = q.where(v.run_id == run_id)
        if name is not None:
            q = q.where(v.name == name)
        if wanted_version is not None:
            q = q.where(v.version == wanted_version)
        rows = list(s.scalars(q))
        files: dict[int, list[ArtifactFile]] = {}
        if rows:
            ids = [r.version_id for r in rows]
            for chunk in range(0, len(ids), 500):
                for fr in s.scalars(cat.select(f).where(f.version_id.in_(
                        ids[chunk:chunk + 500])).order_by(f.version_id, f.path)):
                    files.setdefault(fr.version_id, []).append(
                        ArtifactFile(fr.path, fr.sha256, fr.size))
        out = [_record(r, files.get(r.version_id, [])) for r in rows]
        return [a for a in out if alias is None or alias in a.aliases]
    return store.catalog.read(read)


def open_artifact_file(store, sha256: str) -> BinaryIO:
    listed = chunking.chunk_lists(store.catalog, [sha256]).get(sha256)
    if listed:
        return io.BufferedReader(chunking.ChunkReader(store, sha256, listed), COPY_BLOCK)
    try:
        return store.data.open_input(blob_rel(sha256))
    except FileNotFoundError as e:
        raise StoreDamageError(
            f"store {store.root}: artifact blob {store.data.show(blob_rel(sha256))} is missing; "
            f"run `tfblackbox verify --store {store.root}`") from e


def local_artifact_path(store, sha256: str) -> str | None:
    """The blob's local path; None on an object store or for a chunked file (read it through
    open_artifact_file)."""
    if not store.data.local or chunking.chunk_lists(store.catalog, [sha256]):
        return None
    return store.data.path(blob_rel(sha256))


def store_file(store, src: str, max_new: int | None = None) -> chunking.StoredFile | None:
    """Stores local file `src` (never linked: its bytes are copied, so whatever rewrites
    `src` later cannot touch the store): chunked from CHUNK_MIN bytes on, else one whole blob.
    `max_new`: if storing would add more bytes than that, nothing is written and None is
    returned. Blobs only: register the version after."""
    store.require_write("storing an artifact file")
    if os.path.getsize(src) >= chunking.CHUNK_MIN:
        planned = chunking.plan(src)
        if planned[1] >= chunking.CHUNK_MIN:
            if planned[0] in stored_shas(store.catalog, [planned[0]]):
                return chunking.StoredFile(planned[0], planned[1], 0, None)
            if max_new is not None and chunking.new_chunk_bytes(
                    store.catalog, planned[2]) > max_new:
                return None
            return chunking.store_chunks(store, src, planned)
    sha, size = hash_file(src)
    if sha in stored_shas(store.catalog, [sha]):
        return chunking.StoredFile(sha, size, 0, None)
    if max_new is not None and size > max_new:
        return None
    if store.data.local:
        tmp = temp_blob_path(store.data)
        _copy(src, tmp)
        got = put_temp(store, tmp)
    else:
        got = put_file(store, src)
    if got[0] != sha:
        raise BlackboxError(f"artifact file {src} changed while it was stored; not stored")
    return chunking.StoredFile(sha, size, got[2], None)


def blob_age_time(data, rel, mtime):
    """When a local blob file came to be, for the orphan grace: a hard-linked blob keeps its
    source's (maybe old) mtime, but the link and the rename moved its ctime."""
    try:
        return max(mtime or 0.0, os.stat(data.path(rel)).st_ctime)
    except OSError:
        return mtime


def registered_blobs(store) -> dict[str, int]:
    """{blob rel path: size} of every blob a registered version uses: whole files' blobs and
    chunked files' chunks (a chunked file has no blob of its own)."""
    f, c = cat.ArtifactFileRow, cat.ArtifactChunkRow
    chunked = cat.select(c.sha256).distinct()
    whole = store.catalog.read(lambda s: {blob_rel(sha): size for sha, size in s.execute(
        cat.select(f.sha256, f.size).where(f.sha256.not_in(chunked)).distinct())})
    return {**whole, **chunking.registered_chunk_blobs(store.catalog)}


def check_blobs(store) -> tuple[int, list[tuple[str, str]]]:
    """(blobs checked, [(path, reason)]) for every registered blob: present, size, sha256."""
    damaged = []
    blobs = registered_blobs(store)
    for rel, size in sorted(blobs.items()):
        digest, got = hashlib.sha256(), 0
        try:
            with store.data.open_input(rel) as f:
                while block := f.read(COPY_BLOCK):
                    digest.update(block)
                    got += len(block)
        except FileNotFoundError:
            damaged.append((store.data.show(rel), "missing: a registered artifact version "
                            "uses it but the blob does not exist"))
            continue
        except OSError as e:
            damaged.append((store.data.show(rel), f"unreadable: {e}"))
            continue
        if got != size:
            damaged.append((store.data.show(rel), f"size {got} bytes, catalog records {size}"))
        elif digest.hexdigest() != rel.rsplit("/", 1)[-1]:
            damaged.append((store.data.show(rel), f"sha256 {digest.hexdigest()[:12]}…, its "
                            f"name says {rel.rsplit('/', 1)[-1][:12]}…"))
    return len(blobs), damaged


__all__ = ["ArtifactFile", "ArtifactVersion", "BLOB_DIR", "blob_rel", "check_path",
           "hash_file", "temp_blob_path", "stored_shas", "put_temp", "put_file", "put_bytes",
           "register", "artifacts", "open_artifact_file", "local_artifact_path",
           "registered_blobs", "check_blobs", "blob_age_time", "store_file"]
