"""The tfevents capture: what the run's record tail (record_tail.py) reads under the watched
logdirs, and how their records become rows.

Every poll the tail walks each watched logdir and picks up new event files (rotations, new
writers, subdirectories); their records are decoded on the writer thread
(tfevents_decode.py) into the usual tables, and kept raw. Tags get the file's directory
below the logdir (and, for a second unrelated logdir, its path below the common parent). A
resumed attempt goes on in each file where the store's records of earlier attempts end.

Which files: a logdir named by `watch_tensorboard` is read whole. A logdir learned from a
writer (sync_tensorboard) may be reused, holding earlier runs' files: the files already
there when the tail first looks at it are recorded only if they are the run's
(tfevents_owner.py: written by this process, or created since the run began) or an earlier
attempt of the run recorded part of them; every file that appears after that first look is
the run's.

Bad input never stops training (record_tail.py); this capture adds two warnings, each
logged once naming the logdir or file: a logdir that disappears (what was read stays; it is
tailed again if it comes back), and a file that grows after a newer one appeared in its
directory (TensorBoard no longer reads it; its records are kept).
"""

import logging
import os
import threading
import weakref

from tfblackbox.schema.codecs.tfevents_columns import SpanChunk
from tfblackbox.schema.codecs.tfevents_decode import FileSource, add_unframed, decode_records
from tfblackbox.schema.formats import native
from tfblackbox.schema.codecs.tfevents_restore import read_points

from .record_tail import JOB_BYTES, POLL_SECS, RecordTail
from .tfevents_owner import is_the_runs

log = logging.getLogger("tfblackbox")

KERAS_DIRS = ("train", "validation")   # keras.callbacks.TensorBoard's writers' subdirs


class _Root:
    def __init__(self, path, prefix, learned):
        self.path, self.prefix = path, prefix
        self.learned = learned          # from a writer (sync_tensorboard): its files sorted
        self.looked = False             # the first look (a learned root's files sorted) done
        self.seen = self.gone = False


class TfeventsTail(RecordTail):
    what, thread_name = "tfevents", "tfevents"

    def __init__(self, run, poll_secs=POLL_SECS):
        super().__init__(run, poll_secs)
        self.roots = []
        self._roots_lock = threading.Lock()
        self._resume = None
        self._had_records = set()      # paths of the files that gave records
        self._whole = []               # paths watch_tensorboard named: every file recorded
        self._skipped = set()          # paths of files under learned logdirs not the run's
        record = getattr(run, "record", None)
        self._since = getattr(record, "started_at", None)   # when the run began

    # -- what to watch ------------------------------------------------------------------------

    def watch(self, logdir, learned=False):
        """Watches `logdir` (and its subdirectories). A logdir learned from a writer and named
        like a Keras TensorBoard writer's (train/, validation/) is watched from its parent, so
        their tags become "train/..." and "validation/...". Every file under a logdir that is
        not `learned` is recorded, also where a learned logdir covers it. True if `logdir`
        is a new root (not under one watched already)."""
        path = os.path.abspath(os.fspath(logdir))
        if learned and os.path.basename(path) in KERAS_DIRS:
            path = os.path.dirname(path)
        with self._roots_lock:
            if not learned and not any(_under(path, p) for p in self._whole):
                self._whole.append(path)
                self._skipped = {p for p in self._skipped if not _under(p, path)}
            if any(_under(path, r.path) for r in self.roots):
                self.wake()
                return False
            prefix = ""
            if self.roots:   # tags of a second logdir must not collide with the first's
                common = os.path.commonpath([self.roots[0].path, path])
                rel = os.path.relpath(path, common)
                prefix = "" if rel == "." else rel.replace(os.sep, "/")
            self.roots.append(_Root(path, prefix, learned))
        log.info("tfblackbox: run %s: watching tfevents under %s%s", self.run.run_id, path,
                 f" (tags under {prefix}/)" if prefix else "")
        self.start()
        self.wake()
        return True

    # -- the capture's part of a poll -----------------------------------------------------------

    def new_files(self):
        with self._roots_lock:
            roots = list(self.roots)
        for root in roots:
            first_look, root.looked = not root.looked, True
            if not os.path.isdir(root.path):
                if root.seen and not root.gone:
                    log.warning("tfblackbox: logdir %s disappeared; what was read from it is "
                                "recorded, and it is watched in case it comes back", root.path)
                root.gone = True
                continue
            if root.gone:
                log.warning("tfblackbox: logdir %s is back; tailing it again", root.path)
            root.seen, root.gone = True, False
            skipped = []
            for dirpath, _dirs, names in os.walk(root.path):
                for name in names:
                    path = os.path.join(dirpath, name)
                    if "tfevents" not in name or path in self.files or path in self._skipped:
                        continue
                    resume = self._resume_point(path)
                    if first_look and root.learned and not self._the_runs(path, resume):
                        skipped.append(path)
                        continue
                    yield path, self._source(path, root, dirpath, name), resume
            if skipped:
                self._skip(root, skipped)

    def _the_runs(self, path, resume):
        """Whether a file found at the first look at a learned logdir is the run's."""
        with self._roots_lock:
            whole = any(_under(path, p) for p in self._whole)
        return (whole or self._since is None or resume != (0, 0)
                or is_the_runs(path, self._since))

    def _skip(self, root, paths):
        with self._roots_lock:
            self._skipped.update(p for p in paths if not any(_under(p, w) for w in self._whole))
        log.info("tfblackbox: run %s: %d event file(s) under %s are an earlier run's (made "
                 "before this run began, not by this process) and are not recorded (%s%s); "
                 "recorder.watch_tensorboard(%r) would record them", self.run.run_id,
                 len(paths), root.path, os.path.relpath(paths[0], root.path),
                 ", ..." if len(paths) > 1 else "", root.path)

    def _source(self, path, root, dirpath, name):
        rel = os.path.relpath(dirpath, root.path)
        parts = [p for p in (root.prefix, "" if rel == "." else rel.replace(os.sep, "/")) if p]
        namespace = "/".join(parts)
        return FileSource(path, f"{namespace}/{name}" if namespace else name, namespace)

    def _resume_point(self, path):
        """(offset, index) an earlier attempt of this run read the file up to, else (0, 0)."""
        if self._resume is None:
            self._resume = {}
            if getattr(self.run, "attempt", 1) > 1:
                try:
                    self._resume = read_points(self.run.store, self.run.run_id)
                except Exception as e:
                    log.warning("tfblackbox: could not read which tfevents records earlier "
                                "attempts recorded (%s); files are read from the start", e)
        return self._resume.get(path, (0, 0))

    def gained(self, f):
        """Warns when a file that was read before grows after a newer one had records."""
        grew = f.path in self._had_records
        self._had_records.add(f.path)
        folder, name = os.path.split(f.path)
        newer = [g for g in self._had_records
                 if os.path.dirname(g) == folder and os.path.basename(g) > name]
        if grew and newer:
            f.warn_once("rotation", "%s grew after the newer event file %s appeared in its "
                        "directory; its new records are recorded, but TensorBoard reads "
                        "only the newest file of a directory and will not show them",
                        f.path, os.path.basename(min(newer)))

    def read_chunks(self, f):
        """With the compiled decoder, the records framed in place (read_spans) and cut into
        SpanChunks that decode_chunk decodes whole on the writer thread: no bytes object a
        record on the tail's thread, nor a Python row on the writer's."""
        if native.module() is None:
            return super().read_chunks(f)
        first = f.reader.index
        buf, base, spans = f.reader.read_spans()
        return [(f, c, c.nbytes) for c in SpanChunk.split(buf, base, spans, first, JOB_BYTES)]

    def rows(self, src, records, buffers):
        if isinstance(records, SpanChunk):
            records.decode_into(src, buffers)
        else:
            decode_records(src, records, buffers)

    def unframed(self, src, offset, index, data, buffers):
        add_unframed(src, offset, data, buffers)


def _under(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


_tails: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_tails_lock = threading.Lock()


def tail_for(run):
    """The run's tail, made (and drained at the run's finish) on first use."""
    with _tails_lock:
        tail = _tails.get(run)
        if tail is None:
            tail = _tails[run] = TfeventsTail(run)
            run.add_finish_callback(tail.drain)
        return tail
