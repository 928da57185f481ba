"""A run's files (requirements.txt, the saved program, git diffs) -> `file_blobs` rows, once
per sha256 across the whole store, and back (schema/tables/system.py).

`FileIndex` knows the hashes every run's `file_blobs` segments hold (read once) plus those
added through it since; `blob_table` makes the rows of the contents the store lacks. The run
names each file in a `run_events` row of kind "file" ({"path", "sha256", "size"}), which the
recorder queues in the same writer job as the blob, so both land in the same flush.
"""

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import StoreDamageError
from ..tables.system import FILE_BLOBS, FILES_TABLE


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class FileIndex:
    """The sha256 of every file blob in the store, read on first use, plus the ones added
    through this index since (in buffers that may not be written yet)."""

    def __init__(self, store):
        self.store = store
        self._known = None

    def _load(self):
        known = set()
        for run_id in sorted({g.run_id for g in self.store.segments(None, FILES_TABLE)}):
            t = self.store.read(run_id, FILES_TABLE, columns=["sha256"], latest_only=False)
            known.update(t["sha256"].to_pylist())
        return known

    def __contains__(self, sha):
        if self._known is None:
            self._known = self._load()
        return sha in self._known

    def add(self, sha):
        if self._known is None:
            self._known = self._load()
        self._known.add(sha)


def file_ref(path, data):
    """The run_events payload naming a file: {"path", "sha256", "size"}."""
    return {"path": path, "sha256": sha256(data), "size": len(data)}


def blob_table(files, index, wall_time):
    """The `file_blobs` rows (a pa.Table without `attempt`) of those of `files` [(path, bytes)]
    whose content the store lacks, or None; each is added to `index`."""
    rows = {}
    for path, data in files:
        sha = sha256(data)
        if sha not in index and sha not in rows:
            rows[sha] = (path, bytes(data))
    for sha in rows:
        index.add(sha)
    if not rows:
        return None
    shas = list(rows)
    n = len(shas)
    return pa.Table.from_arrays([
        pa.array([0] * n, pa.int64()), pa.array([wall_time] * n, pa.float64()),
        pa.array([rows[s][0] for s in shas], pa.string()), pa.array(shas, pa.string()),
        pa.array([len(rows[s][1]) for s in shas], pa.int64()),
        pa.array([rows[s][1] for s in shas], pa.binary())],
        names=[f.name for f in FILE_BLOBS if f.name != "attempt"])


def read_blobs(store, shas):
    """{sha256: bytes} of the given hashes, from whichever run of the store holds them; each
    is checked against its hash. A hash no run holds is left out."""
    wanted, found = set(shas), {}
    if not wanted:
        return found
    for run_id in sorted({g.run_id for g in store.segments(None, FILES_TABLE)}):
        t = store.read(run_id, FILES_TABLE, columns=["sha256", "data"], latest_only=False)
        t = t.filter(pc.is_in(t["sha256"], pa.array(sorted(wanted - set(found)))))
        for sha, data in zip(t["sha256"].to_pylist(), t["data"].to_pylist()):
            if sha256(data) != sha:
                raise StoreDamageError(f"store {store.root}: file blob {sha} of run {run_id} "
                                       f"does not match its sha256; run `tfblackbox verify`")
            found[sha] = data
        if len(found) == len(wanted):
            break
    return found
