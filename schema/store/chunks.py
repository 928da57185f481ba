"""Large artifact files stored as chunks: fixed-size, aligned pieces of CHUNK_SIZE bytes, each
a content-addressed blob (`data/artifacts/<ab>/<chunk sha256>`) stored once per store, so the
unchanged regions of a re-saved model (the frozen half of a `.keras` or `.weights.h5` file)
cost nothing. The file keeps its whole sha256 in `artifact_files` (W&B digests, `artifacts
get` checks it); `artifact_chunks` lists its chunks in order. Files under CHUNK_MIN are one
whole blob, as before.

Why fixed-size and aligned rather than content-defined (gear/FastCDC): Keras 3 writes a
`.keras` zip uncompressed (ZIP_STORED) and an HDF5 file with each variable at the same offset
from save to save, so unchanged variables stay on the same aligned chunks; measured on ten
saves of a model with a frozen half (docs/store.md), aligned 256 KiB chunks store within 3% of
the ideal (frozen bytes once) at hashlib's speed, where content-defined chunking could not do
better and costs a rolling hash per byte in Python.

The protocol is the blobs' one: chunks written durably first (local: a temporary name with the
writer's host and pid, fsync, rename, one fsync per folder; object store: an upload under the
final name), the chunk list registered with its version in one transaction (artifacts.register).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import os
import uuid
from typing import Any

from . import catalog as cat
from . import segments
from ..errors import BlackboxError, StoreDamageError
from ..formats.files import fsync_path

BLOB_DIR = "data/artifacts"
CHUNK_SIZE = 256 << 10
CHUNK_MIN = 1 << 20          # smaller files are one whole blob
BATCH = 64                   # chunks looked up in the catalog at once
_SEQ = itertools.count()


@dataclasses.dataclass(frozen=True)
class StoredFile:
    sha256: str                                    # of the whole file
    size: int
    new_bytes: int                                 # bytes this call added to the store
    chunks: tuple[tuple[str, int], ...] | None     # (chunk sha256, size) in order; None: whole


def blob_rel(sha256: str) -> str:
    """Where a blob (a whole small file or a chunk) lives in the data location."""
    return f"{BLOB_DIR}/{sha256[:2]}/{sha256}"


def temp_blob_path(data) -> str:
    """A new local temporary name in the blob folder, named after this host and process (so
    a dead writer's leftovers are known as such): `.a-<host>-<pid>-<seq>-<rand>.tmp`."""
    name = f".a-{segments._HOST_TAG}-{os.getpid()}-{next(_SEQ):06d}-{uuid.uuid4().hex[:6]}.tmp"
    folder = data.path(BLOB_DIR)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def known_chunks(catalog, shas) -> set[str]:
    """Which chunk sha256s a registered file already uses (their blobs are in place)."""
    shas = list(set(shas))
    if not shas:
        return set()
    c = cat.ArtifactChunkRow
    found: set[str] = set()
    for i in range(0, len(shas), 500):
        found |= catalog.read(lambda s, part=shas[i:i + 500]: set(s.scalars(
            cat.select(c.chunk_sha256).where(c.chunk_sha256.in_(part)).distinct())))
    return found


def plan(path: str) -> tuple[str, int, list[tuple[str, int]]]:
    """(whole sha256, size, [(chunk sha256, size)]) of a local file, reading it once."""
    whole, chunks, size = hashlib.sha256(), [], 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK_SIZE):
            whole.update(block)
            chunks.append((hashlib.sha256(block).hexdigest(), len(block)))
            size += len(block)
    return whole.hexdigest(), size, chunks


def new_chunk_bytes(catalog, chunks) -> int:
    """What storing these chunks would add to the store (known ones and repeats cost 0)."""
    known, seen, total = known_chunks(catalog, [c for c, _n in chunks]), set(), 0
    for sha, n in chunks:
        if sha not in known and sha not in seen:
            total += n
        seen.add(sha)
    return total


def store_chunks(store, path: str, planned) -> StoredFile:
    """Writes the chunks of local file `path` the store lacks, durably, before any catalog
    row names them (artifacts.register does, in one transaction). `planned` is plan(path);
    the file must not change meanwhile (the recorder's staged files are its own links or
    copies, checked by size and mtime; new chunks are not hashed twice: verify checks them).
    Returns the StoredFile to register."""
    sha, size, chunks = planned
    data, written, folders = store.data, 0, set()
    seen: set[str] = set()
    with open(path, "rb") as f:
        for start in range(0, len(chunks), BATCH):
            batch = chunks[start:start + BATCH]
            known = known_chunks(store.catalog, [c for c, _n in batch])
            for i, (csha, n) in enumerate(batch):
                if csha in known or csha in seen:
                    continue
                f.seek((start + i) * CHUNK_SIZE)
                block = f.read(n)
                if len(block) != n:
                    raise BlackboxError(f"artifact file {path} changed while it was stored; "
                                        f"not stored")
                rel = blob_rel(csha)
                if data.local:
                    folders.add(_put_local(store, rel, block))
                else:
                    data.write_new(rel, block)
                seen.add(csha)
                written += n
    for folder in folders:
        fsync_path(folder)
    return StoredFile(sha, size, written, tuple(chunks))


def _put_local(store, rel, block):
    """Writes one chunk under a temporary name of this process, fsyncs, renames (the folder's
    fsync is the caller's, once per folder)."""
    tmp = temp_blob_path(store.data)
    final = store.data.path(rel)
    try:
        with open(tmp, "xb") as o:
            o.write(block)
            o.flush()
            os.fsync(o.fileno())
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return os.path.dirname(final)


def chunk_lists(catalog, file_shas) -> dict[str, list[tuple[str, int]]]:
    """{file sha256: [(chunk sha256, size)] in order} of the chunked ones among `file_shas`."""
    file_shas = list(set(file_shas))
    c = cat.ArtifactChunkRow
    out: dict[str, list[tuple[str, int]]] = {}
    for i in range(0, len(file_shas), 500):
        rows = catalog.read(lambda s, part=file_shas[i:i + 500]: list(s.execute(
            cat.select(c.sha256, c.chunk_sha256, c.size).where(c.sha256.in_(part))
            .order_by(c.sha256, c.seq))))
        for fsha, csha, n in rows:
            out.setdefault(fsha, []).append((csha, n))
    return out


def add_rows(s, file_chunks) -> None:
    """Inside a register transaction: the chunk lists of files not listed yet."""
    if not file_chunks:
        return
    c = cat.ArtifactChunkRow
    have = set(s.scalars(cat.select(c.sha256).where(c.sha256.in_(list(file_chunks)))
                         .distinct()))
    rows = [dict(sha256=fsha, seq=i, chunk_sha256=csha, size=n)
            for fsha, chunks in file_chunks.items() if fsha not in have
            for i, (csha, n) in enumerate(chunks)]
    if rows:
        s.execute(cat.insert(c), rows)


def registered_chunk_blobs(catalog) -> dict[str, int]:
    """{blob rel path: size} of every chunk a registered file uses."""
    c = cat.ArtifactChunkRow
    return catalog.read(lambda s: {blob_rel(sha): n for sha, n in s.execute(
        cat.select(c.chunk_sha256, c.size).distinct())})


class ChunkReader(io.RawIOBase):
    """A chunked file read back as one binary stream (chunks opened one at a time)."""

    def __init__(self, store, sha256: str, chunks: list[tuple[str, int]]):
        super().__init__()
        self._store, self._sha, self._chunks = store, sha256, chunks
        self._i = 0
        self._cur: Any = None   # the open chunk's stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._i < len(self._chunks):
            if self._cur is None:
                csha = self._chunks[self._i][0]
                try:
                    self._cur = self._store.data.open_input(blob_rel(csha))
                except FileNotFoundError as e:
                    raise StoreDamageError(
                        f"store {self._store.root}: chunk {csha[:12]}… of artifact file "
                        f"{self._sha[:12]}… is missing; run `tfblackbox verify --store "
                        f"{self._store.root}`") from e
            got = self._cur.read(len(b))
            if got:
                b[:len(got)] = got
                return len(got)
            self._cur.close()
            self._cur, self._i = None, self._i + 1
        return 0

    def close(self) -> None:
        if self._cur is not None:
            self._cur.close()
            self._cur = None
        super().close()


__all__ = ["BLOB_DIR", "blob_rel", "temp_blob_path",
           "CHUNK_SIZE", "CHUNK_MIN", "StoredFile", "known_chunks", "plan", "new_chunk_bytes",
           "store_chunks", "chunk_lists", "add_rows", "registered_chunk_blobs", "ChunkReader"]
