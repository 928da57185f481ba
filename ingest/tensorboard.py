"""`tfblackbox import-tfevents LOGDIR --store DIR [--run ID] [--project P] [--name N]`.

Every event file under LOGDIR (a file whose name holds "tfevents", as TensorBoard reads them)
goes into the store losslessly, the way the TF2 capture keeps what it tails
(schema/codecs/tfevents_decode.py, with the TF-free summary decoder): each record as a
`tfevents_records` row, so `replay --to tensorboard` writes the files back byte for byte,
and its summary values as scalars, histograms, media and tensors rows, so `replay --to
wandb` and the report show them. No TensorFlow.

Runs: as TensorBoard sees them, each directory holding event files is a run (named by its
path below LOGDIR; its id is that name plus a hash of the directory's real path, so importing
the same logdir again finds the same runs); with --run, all of them go into that one run, the
tags of a subdirectory's files prefixed with its path ("train/epoch_loss"), as the capture does.
The run starts at the first event's wall time and ends at the last one's.

Idempotent and incremental: a file is read from where the store's complete records of it
end, so importing again adds nothing, and a file that grew adds its new records. Rows are
written in groups of segments registered in one transaction each (records and their decoded
rows together), so a killed import resumes cleanly. A truncated last record (a writer still
writing, or killed) is kept as unframed bytes and read again, complete, by a later import; a
corrupt record is reported, the records before it are imported and the bytes from it on are
kept unframed (exit 1).
"""

import concurrent.futures
import hashlib
import logging
import os
import re
import socket
import sys

from tfblackbox.schema import BlackboxError, Store
from tfblackbox.schema.store.group_encoder import GroupEncoder
from tfblackbox.schema.formats import tfevents, tfrecord
from tfblackbox.schema.store.records import valid_run_id
from tfblackbox.schema.codecs.rows import ColumnBuffers
from tfblackbox.schema.codecs.tfevents_columns import decode_next
from tfblackbox.schema.codecs.tfevents_decode import FileSource, add_unframed
from tfblackbox.schema.codecs.tfevents_restore import RAW_TABLE

from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK, print_json
from tfblackbox.schema.kill_points import kill_point

log = logging.getLogger("tfblackbox")

# record bytes decoded at once (a row group of each table's segment). 4 MB since the
# decoder writes histograms as segments keep them: each chunk costs the decoding and every
# column's encoding a fixed share, and the encoding left after the last chunk is now short;
# medians of eight at 15.7 MB: 1 MB 111 ms, 2 MB 86, 4 MB 78, 8 MB 80, 16 MB 86 (at 7.9 MB,
# 2 MB 59.5 ms, 4 MB 56). Payload bytes or rows buffered before a segment group is written
# (the environment overrides them for tests that kill an import between groups)
CHUNK_BYTES = int(os.environ.get("TFBLACKBOX_IMPORT_CHUNK_BYTES", 4 << 20))
FLUSH_BYTES = 64 << 20
FLUSH_ROWS = int(os.environ.get("TFBLACKBOX_IMPORT_FLUSH_ROWS", 500_000))


def find_event_files(logdir):
    """{directory below logdir ("." for itself): [event file names]}, sorted."""
    if not os.path.isdir(logdir):
        what = "does not exist" if not os.path.exists(logdir) else "is not a directory"
        raise BlackboxError(f"logdir {logdir} {what}; expected a directory of tfevents files")
    found = {}
    for folder, dirs, names in os.walk(logdir):
        dirs.sort()
        names = sorted(n for n in names if "tfevents" in n and not n.startswith(".")
                       and os.path.isfile(os.path.join(folder, n)))
        if names:
            found[os.path.relpath(folder, logdir).replace(os.sep, "/")] = names
    if not found:
        raise BlackboxError(f"logdir {logdir} holds no event files (files whose name contains "
                            f"'tfevents', as TensorBoard reads them); nothing imported")
    return found


def plan_runs(logdir, found, run_id=None, name=None):
    """[(run_id, run name, [(path, file name in the run, namespace)])]."""
    logdir = os.path.abspath(logdir)
    base = os.path.basename(logdir.rstrip(os.sep)) or "logdir"
    if run_id is not None:
        files = [(os.path.normpath(os.path.join(logdir, d, n)), n if d == "." else f"{d}/{n}",
                  "" if d == "." else d) for d, names in found.items() for n in names]
        return [(run_id, name or base, files)]
    runs = []
    for d, names in found.items():
        rel = base if d == "." else d
        run_name = rel if name is None else name if len(found) == 1 else f"{name}/{rel}"
        real = os.path.realpath(os.path.join(logdir, d))
        rid = derived_run_id(run_name, real)
        runs.append((rid, run_name, [(os.path.normpath(os.path.join(logdir, d, n)), n, "")
                                     for n in names]))
    return runs


def derived_run_id(name, real_path):
    """The name made safe plus a hash of the directory: the same logdir, the same run."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:48].replace("..", ".")
    rid = f"{slug or 'run'}-{hashlib.sha1(real_path.encode()).hexdigest()[:8]}"
    return rid if valid_run_id(rid) else f"run-{hashlib.sha1(real_path.encode()).hexdigest()[:8]}"


# -- where each file was imported up to ------------------------------------------------------

def imported_points(store, run_id):
    """{file: (offset, index, step, wall_time, end of all bytes kept)} to go on from: after the
    last complete record whose decoded rows are all in the store."""
    from tfblackbox.schema.codecs.tfevents_restore import _latest, cut_key, decoded_payloads
    if not store.has_run(run_id):
        return {}
    rows = store.read(run_id, RAW_TABLE, columns=["file", "offset", "index", "length", "what",
                                                  "attempt", "step", "wall_time", "cuts"],
                      latest_only=False).to_pylist()
    found = decoded_payloads(store, run_id, rows, keys_only=True)
    points, stopped = {}, set()
    for rec in _latest(rows):
        name = rec["file"]
        if name in stopped:
            continue
        if rec["what"] == "unframed":
            p = points.get(name, (0, 0, rec["step"], rec["wall_time"], 0))
            points[name] = p[:4] + (rec["offset"] + rec["length"],)
            continue
        if any(cut_key(rec, c) not in found for c in rec["cuts"] or ()):
            stopped.add(name)
            continue
        end = rec["offset"] + tfrecord.HEADER + rec["length"] + tfrecord.FOOTER
        points[name] = (end, rec["index"] + 1, rec["step"], rec["wall_time"], end)
    return points


# -- one run ---------------------------------------------------------------------------------

class _Import:
    """Buffers of one import attempt, written as one segment group per flush. Each decoded
    chunk's rows go to the group's encoder threads at once (group_encoder.py), so Parquet
    encoding runs while the next chunk is decoded."""

    def __init__(self, store, run_id, attempt, writer_id):
        self.store, self.run_id, self.writer_id = store, run_id, writer_id
        self.buffers = ColumnBuffers(attempt)
        self.group = None
        self.nbytes = self.rows = self.segments = self.records = 0
        self.before_write = self.check = lambda: None

    def hand_over(self):
        """Passes the rows decoded so far to the group's encoders."""
        self.check()          # a begin that failed stops the import now, not at its end
        if not self.buffers.rows:
            return
        self.rows += self.buffers.rows
        if self.group is None:
            self.group = GroupEncoder(self.store.data, self.store.catalog, self.run_id,
                                      self.writer_id)
        self.group.add(self.buffers.take())

    def flush(self, also=None):
        """Writes the group; `also(session)` joins its transaction (or has one of its own)."""
        self.hand_over()
        self.before_write()   # the attempt is in the catalog
        if self.group is not None:
            group, self.group = self.group, None
            self.segments += len(group.write(also))
            kill_point("import-flush")
        elif also is not None:
            self.store.catalog.transact(also)
        self.nbytes = self.rows = 0

    def maybe_flush(self):
        self.hand_over()
        if self.nbytes >= FLUSH_BYTES or self.rows >= FLUSH_ROWS:
            self.flush()

    def close(self):
        if self.group is not None:
            self.group.close()


class _Begun:
    """The import's attempt, begun in the catalog. A new run's first attempt is 1, so its
    begin (a durable commit, ~9 ms here) runs on a thread while the decoding starts; it is
    joined before anything is written (writer_id())."""

    def __init__(self, store, run_id, create):
        args = (run_id, socket.gethostname(), os.getpid())
        self._run_id, self._future, self._writer = run_id, None, None
        if create is None:
            self._writer, self.attempt = store.begin_attempt(*args)
            return
        self.attempt = 1
        pool = concurrent.futures.ThreadPoolExecutor(1, "tfblackbox-import-begin")
        self._future = pool.submit(store.begin_attempt, *args, create=create)
        pool.shutdown(wait=False)

    def writer_id(self):
        if self._writer is None:
            writer, attempt = self._future.result()   # raises what the begin raised
            if attempt != self.attempt:   # the run was created here: cannot happen
                raise BlackboxError(f"run {self._run_id!r}: its import began attempt "
                                    f"{attempt}, not {self.attempt}")
            self._writer = writer
        return self._writer

    def check(self):
        """Raises what the begin raised, if it is over; does not wait."""
        if self._future is not None and self._future.done():
            self.writer_id()

    def began(self):
        """Whether the begin committed (its writer is to be ended); waits for it."""
        if self._writer is None:
            concurrent.futures.wait([self._future])
            return self._future.exception() is None
        return True


def _first_wall_time(path):
    try:
        for _off, data in tfrecord.RecordReader(path).read(1 << 16)[:1]:
            return tfevents.parse_event(data).wall_time
    except (tfrecord.CorruptRecordError, tfevents.EventFormatError, OSError):
        pass
    return None


def _pending(files, points):
    """The files with bytes the store does not hold yet: [(path, name, namespace, point)]."""
    todo = []
    for path, name, namespace in files:
        point = points.get(name)
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise BlackboxError(f"cannot read event file {path}: {e.strerror or e}") from e
        if point is not None and size < point[4]:
            raise BlackboxError(
                f"event file {path} is {size} bytes long, but {point[4]} bytes of it were "
                f"imported into this run before: it was truncated or replaced; import it into "
                f"another run (--run)")
        if point is None or size > point[4]:
            todo.append((path, name, namespace, point))
    return todo


def import_run(store, run_id, run_name, files, project=None, logdir=None):
    """Imports what is new in `files` into run `run_id`; returns its result dict."""
    created = not store.has_run(run_id)
    points = {} if created else imported_points(store, run_id)
    todo = _pending(files, points)
    result = {"run_id": run_id, "name": run_name, "files": len(files), "new_files": 0,
              "records": 0, "bytes": 0, "segments": 0, "problems": [], "corrupt": False}
    if not todo:
        return result
    create = None
    if created:
        walls = [w for w in (_first_wall_time(p) for p, *_ in files) if w]
        create = dict(name=run_name, project=project, tags=["import-tfevents"],
                      notes=f"imported from {os.path.abspath(logdir or '.')}",
                      host=socket.gethostname(), pid=os.getpid(),
                      command=" ".join(sys.argv), started_at=min(walls, default=None))
    # the run's creation joins the attempt's begin, and the attempt's end (with the run's
    # finish) the last segment group: an import of one flush commits twice, not five times
    begun = _Begun(store, run_id, create)
    out = _Import(store, run_id, begun.attempt, None)   # see segments.write_group: no first_step
    out.before_write, out.check = begun.writer_id, begun.check
    record = None if created else store.run(run_id)
    last_wall, ended = None, False
    try:
        for path, name, namespace, point in todo:
            result["new_files"] += point is None
            last_wall = _import_file(out, path, name, namespace, point, result) or last_wall
        finish = None
        if created or "import-tfevents" in record.tags:   # a recorded run keeps its own end
            ends = [t for t in (last_wall, record.ended_at if record else None) if t]
            finish = (run_id, 0, max(ends, default=None))
        out.flush(also=store.attempt_end(begun.writer_id(), finish))
        ended = True
    finally:
        out.close()
        if not ended and begun.began():
            store.end_attempt(begun.writer_id())
    result["segments"] = out.segments
    return result


def _import_file(out, path, name, namespace, point, result):
    """Reads one file from `point` on into out's buffers; returns the last wall time seen."""
    src = FileSource(os.path.abspath(path), name, namespace)
    offset, index = (point[0], point[1]) if point else (0, 0)
    if point:
        src.last_step, src.last_wall = point[2], point[3]
        _learn_metadata(src, path, offset)
    reader = tfrecord.RecordReader(path, offset, index)
    corrupt = None
    while True:
        try:
            count, n = decode_next(src, reader, out.buffers, CHUNK_BYTES)
        except tfrecord.CorruptRecordError as e:
            corrupt = e
            break
        if not count:
            break
        result["records"] += count
        result["bytes"] += n
        out.nbytes += n
        out.maybe_flush()
    rest_at = corrupt.offset if corrupt else reader.offset
    size = os.path.getsize(path)
    if rest_at < size:
        with open(path, "rb") as f:
            f.seek(rest_at)
            rest = f.read()
        add_unframed(src, rest_at, rest, out.buffers)
        result["bytes"] += len(rest)
        if corrupt:
            msg = f"{corrupt}; its last {len(rest)} bytes are kept unframed"
            result["corrupt"] = True
        else:
            msg = (f"{path} ends with {len(rest)} bytes of an incomplete record (a writer "
                   f"still writing, or killed?); they are kept unframed and read again by a "
                   f"later import once complete")
        result["problems"].append(msg)
        log.warning("tfblackbox: %s", msg)
    return src.last_wall


def _learn_metadata(src, path, end):
    """TF1's FileWriter writes a tag's plugin metadata only on its first value in a file: the
    records before where this import goes on are read for it."""
    reader = tfrecord.RecordReader(path)
    while reader.offset < end:
        batch = reader.read(min(CHUNK_BYTES, end - reader.offset))
        if not batch:
            return
        for _off, data in batch:
            try:
                ev = tfevents.parse_event(data)
            except tfevents.EventFormatError:
                continue
            for v in ev.values:
                if v.metadata is not None:
                    src.metadata[v.tag] = bytes(data[v.metadata[0]:v.metadata[1]])


# -- command line ----------------------------------------------------------------------------

def import_logdir(store, logdir, run_id=None, project=None, name=None):
    if run_id is not None and not valid_run_id(run_id):
        raise BlackboxError(f"--run {run_id!r} is not a valid run id (1-64 letters, digits, "
                            f"'_', '-' or '.', starting with a letter or digit)")
    found = find_event_files(logdir)
    return [import_run(store, rid, rname, files, project, logdir)
            for rid, rname, files in plan_runs(logdir, found, run_id, name)]


def main(store_path, logdir, run_id=None, project=None, name=None, as_json=False):
    store = Store.create(store_path)
    results = import_logdir(store, logdir, run_id, project, name)
    if as_json:
        print_json({"store": store.root, "logdir": os.path.abspath(logdir),
                    "runs": results})
    else:
        for r in results:
            what = (f"{r['records']} record(s), {r['bytes']:,} bytes from {r['files']} file(s)"
                    if r["records"] or r["bytes"] else "nothing new")
            print(f"run {r['run_id']} ({r['name']}): imported {what}")
            for p in r["problems"]:
                print(f"  warning: {p}", file=sys.stderr)
    return EXIT_FAILED if any(r["corrupt"] for r in results) else EXIT_OK
