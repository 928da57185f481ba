"""tfdbg v2 DebugEvent files back from a store, byte for byte (no TensorFlow).

A run's `tfdbg_v2_records` rows are grouped into dump roots by their session: DebugDataReader reads
one tfdbg run per dump root, so each tfdbg run id (one per `enable_dump_debug_info` session, with
every host that wrote under it) is one root. The same file recorded by several attempts (a dump
root imported twice) comes from the latest. A source-file record gets its lines back from
`tfdbg_v2_blobs`, found in whichever run of the store holds them, and is checked against the crc its
file carried.
"""

import collections
import dataclasses

import pyarrow.compute as pc

from ..errors import StoreDamageError
from ..formats import tfdbg_v2, tfrecord
from ..tables.tfdbg_v2 import BLOBS_TABLE, RECORDS_TABLE


@dataclasses.dataclass
class DumpRoot:
    key: str                 # the session: the tfdbg run id (else the file set's name)
    tfdbg_run_id: str        # None when no metadata record was recorded
    files: dict              # file name -> [row dicts] in file order ("file" row first)
    attempts: list           # attempts its files came from

    @property
    def hosts(self):
        return sorted({tfdbg_v2.parse_name(n).host for n in self.files})

    def rows(self, what=None, kind=None):
        """Rows of every file, file after file; only DebugEvents `what` / files `kind`."""
        for name in sorted(self.files):
            for r in self.files[name]:
                if (what is None or r["what"] == what) and (kind is None or r["kind"] == kind):
                    yield r


def read_rows(store, run_id, columns=None):
    """The run's tfdbg_v2_records rows (every attempt's) as dicts."""
    if not store.segments(run_id, RECORDS_TABLE):
        return []
    return store.read(run_id, RECORDS_TABLE, columns=columns, latest_only=False).to_pylist()


def dump_roots(store, run_id, columns=None):
    """The run's dump roots (DumpRoot), ordered by their first record's wall time."""
    return group_rows(read_rows(store, run_id, columns))


def group_rows(rows):
    by_file = collections.defaultdict(list)          # (session, attempt, file) -> rows
    for r in rows:
        by_file[r["session"], r["attempt"], r["file"]].append(r)
    latest = {}                                      # (session, file) -> attempt
    for session, attempt, name in by_file:
        if latest.get((session, name), -1) < attempt:
            latest[session, name] = attempt
    roots = {}
    for (session, name), attempt in sorted(latest.items()):
        root = roots.setdefault(session, DumpRoot(session, None, {}, []))
        root.files[name] = _in_order(by_file[session, attempt, name])
        if attempt not in root.attempts:
            root.attempts.append(attempt)
    for root in roots.values():
        ids = {r["tfdbg_run_id"] for r in root.rows(what="debug_metadata") if r["tfdbg_run_id"]}
        root.tfdbg_run_id = ids.pop() if len(ids) == 1 else None
    return sorted(roots.values(), key=_started)


def _in_order(rows):
    """One file's rows by index; a row stored twice (a retried segment) is written once, two
    different rows at one place are damage."""
    unique = {}
    for r in rows:
        key = (r["index"], r["what"] == "file")
        kept = unique.setdefault(key, r)
        if (kept["offset"], kept["length"]) != (r["offset"], r["length"]):
            raise StoreDamageError(f"{r['file']} (attempt {r['attempt']}): two different "
                                   f"records are stored as record {r['index']} (at byte "
                                   f"{kept['offset']} and {r['offset']})")
    return sorted(unique.values(), key=lambda r: r["index"])


def _started(root):
    walls = [r["wall_time"] for r in root.rows(what="debug_metadata")]
    return (min(walls) if walls else float("inf"), root.key)


def fetch_blobs(store, run_id, shas):
    """{sha256: bytes} of the wanted blobs: the run's own first, then any other run's."""
    wanted, found = set(shas), {}
    if not wanted:
        return found
    runs = sorted({g.run_id for g in store.segments(None, BLOBS_TABLE)},
                  key=lambda r: (r != run_id, r))
    for rid in runs:
        hashes = store.read(rid, BLOBS_TABLE, columns=["sha256"], latest_only=False)["sha256"]
        if not wanted.intersection(hashes.to_pylist()):
            continue
        t = store.read(rid, BLOBS_TABLE, columns=["sha256", "data"], latest_only=False)
        t = t.filter(pc.is_in(t["sha256"], value_set=_array(wanted)))
        for sha, data in zip(t["sha256"].to_pylist(), t["data"].to_pylist()):
            found.setdefault(sha, data)
        wanted -= set(found)
        if not wanted:
            break
    return found


def _array(values):
    import pyarrow as pa
    return pa.array(sorted(values), pa.string())


def record_bytes(row, blobs):
    """The original bytes of one record row, or None when the blob it names is not in
    `blobs` (its segment was lost to a kill -9). StoreDamageError when the bytes put back do
    not give the crc the file carried."""
    if not row["blob"]:
        return row["record"]
    lines = blobs.get(row["blob"])
    if lines is None:
        return None
    at, rec = row["blob_at"], row["record"]
    data = rec[:at] + lines + rec[at:]
    if len(data) != row["length"] or tfrecord.masked_crc(data) != row["crc"]:
        raise StoreDamageError(f"record {row['index']} of {row['file']}: its source-file "
                               f"blob {row['blob'][:12]}... does not restore the bytes whose "
                               f"crc the file carried")
    return data


def file_chunks(rows, blobs, problems=None):
    """(what, bytes) of one file, piece by piece: ("record", the framed record) or
    ("unframed", bytes as they were). The file ends before a record whose blob is missing;
    that is appended to `problems`."""
    for r in rows:
        if r["what"] == "file":
            continue
        if r["what"] == "unframed":
            yield "unframed", r["record"]
            continue
        data = record_bytes(r, blobs)
        if data is None:
            if problems is not None:
                problems.append(f"{r['file']}: ends before record {r['index']}: the source "
                                f"file lines it names ({r['blob'][:12]}...) are not in the store")
            return
        yield "record", tfrecord.frame(data)
