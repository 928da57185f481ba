"""tfdbg v2 into the store: `recorder.enable_dump_debug_info` / `disable_dump_debug_info`.

A session calls TF's own `enable_dump_debug_info` with a dump root the recorder owns (a fresh
staging dir, staging.py), so TF instruments and writes exactly as it would for the user, and
a tail thread (tfdbg_v2_tail.py) moves the records into the store as they reach the files.
TF keeps the newest `circular_buffer_size` executions and graph execution traces in memory
and writes them only when flushed; the recorder flushes them (the non-execution files first,
so the graphs a trace names are on file before it) on `recorder.flush()`, at `finish` and at
interpreter exit, then reads the files to their end.

TF's dumping state is per thread: the session is disabled with TF's own
`disable_dump_debug_info` on the thread that enabled it; finishing on another thread flushes
and records everything, but TF's instrumentation stays on there (logged) and later output is
not recorded. TensorFlow is imported by `enable` only.
"""

import atexit
import logging
import threading
import weakref

from tfblackbox.schema import BlackboxError
from tfblackbox.schema.codecs.tfdbg_v2_rows import BlobIndex

from . import staging
from .tfdbg_v2_tail import TfdbgV2Tail

log = logging.getLogger("tfblackbox")

MODES = ("NO_TENSOR", "CURT_HEALTH", "CONCISE_HEALTH", "FULL_HEALTH", "SHAPE", "FULL_TENSOR")

_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # run -> its active _Session
_finishing: weakref.WeakSet = weakref.WeakSet()   # runs whose finish closes their session
# run -> the BlobIndex its sessions share
_blobs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class _Session:
    """One enable_dump_debug_info ... disable: a staging dir, TF's writer, the tail."""

    def __init__(self, run, mode, buffer_size, op_regex, tensor_dtypes, max_bytes, blobs):
        from tensorflow.python.debug.lib import dumping_callback
        self._tf = dumping_callback
        self.run = run
        self.settings = (mode, buffer_size)
        self.dump_root = staging.make_dir()
        self.thread = threading.current_thread()
        self.closed = False           # TF's writer for our root is closed
        self._drained = False         # close() ran
        self.left_enabled = False
        self._tf_lock = threading.Lock()     # TF's flush and close never run at once
        try:
            self.writer = dumping_callback.enable_dump_debug_info(
                self.dump_root, tensor_debug_mode=mode, circular_buffer_size=buffer_size,
                op_regex=op_regex, tensor_dtypes=tensor_dtypes)
        except BaseException:
            staging.remove(self.dump_root)
            raise
        self.tfdbg_run_id = dumping_callback._state.dumping_callback.tfdbg_run_id
        self.tail = TfdbgV2Tail(run, self.dump_root, self.tfdbg_run_id, max_bytes, blobs=blobs)
        # registered after TF's own atexit disable, so it runs first: TF's Close() would
        # flush the buffers, but our close must see the writer still open to do it itself
        atexit.register(self._at_exit)
        log.info("tfblackbox: run %s: tfdbg v2 (%s) recorded through %s", run.run_id, mode,
                 self.dump_root)

    @property
    def budget_exhausted(self):
        return self.tail.budget_exhausted

    def _tf_open(self):
        """Whether TF's writer for our root may be flushed: a flush after TF's Close() would
        start a new file set."""
        if self.closed:
            return False
        if threading.current_thread() is self.thread:
            state = getattr(self._tf._state, "dumping_callback", None)
            if state is None or state.dump_root != self.dump_root:
                self.closed = True   # disabled through TF directly: its Close() flushed
                return False
        return True

    def _flush_tf(self):
        self.writer.FlushNonExecutionFiles()
        self.writer.FlushExecutionFiles()

    def flush(self, timeout=None):
        """Writes what TF holds in memory to its files and hands all of it to the writer."""
        with self._tf_lock:
            if self._tf_open():
                try:
                    self._flush_tf()
                except Exception as e:
                    log.warning("tfblackbox: could not flush TF's tfdbg v2 buffers (%s: %s)",
                                type(e).__name__, e)
        self.tail.catch_up(timeout)

    def close(self, timeout=None):
        """Flushes and disables TF's dumping, records everything, removes the staging dir."""
        with self._tf_lock:
            if self._drained:
                return
            self._drained = True
            if self._tf_open():
                self.closed = True
                try:
                    self._close_tf()
                except Exception as e:
                    log.warning("tfblackbox: disabling TF's tfdbg v2 dumping failed (%s: %s); "
                                "what its files hold is recorded", type(e).__name__, e)
            self.closed = True
        atexit.unregister(self._at_exit)
        self.tail.drain(timeout)
        if not self.left_enabled:
            staging.remove(self.dump_root)

    def _close_tf(self):
        if threading.current_thread() is self.thread:
            self._tf.disable_dump_debug_info()     # TF's Close(): flushes every file
            return
        self._flush_tf()
        self.left_enabled = True
        log.warning("tfblackbox: run %s: tfdbg v2 was enabled in thread %s and is finished from "
                    "thread %s: TF's dumping stays on in %s and what it writes from now on is "
                    "not recorded (call recorder.disable_dump_debug_info() there)",
                    self.run.run_id, self.thread.name, threading.current_thread().name,
                    self.thread.name)

    def _at_exit(self):
        try:
            self.close(timeout=60)
        except Exception as e:
            log.error("tfblackbox: recording tfdbg v2 at exit failed: %s", e)

    def stats(self):
        return {"tfdbg_run_id": self.tfdbg_run_id, "dump_root": self.dump_root,
                "records": self.tail.records, "bytes": self.tail.recorded_bytes,
                "budget_exhausted": self.tail.budget_exhausted}


def enable(run, tensor_debug_mode="NO_TENSOR", circular_buffer_size=1000, op_regex=None,
           tensor_dtypes=None, max_bytes=None):
    """Starts recording tfdbg v2 into `run`; returns TF's DebugEventsWriter (as TF does)."""
    if tensor_debug_mode not in MODES:
        hint = (" (recorder.enable_dump_debug_info takes no dump_root: it records into the "
                "active run's store)") if isinstance(tensor_debug_mode, str) and (
                    "/" in tensor_debug_mode or "\\" in tensor_debug_mode) else ""
        raise BlackboxError(f"tensor_debug_mode={tensor_debug_mode!r}; expected one of "
                            f"{', '.join(MODES)}{hint}")
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes <= 0):
        raise BlackboxError(f"max_bytes={max_bytes!r}; expected a positive number of bytes "
                            f"or None")
    with _lock:
        session = _sessions.get(run)
        if session is not None and session.settings != (tensor_debug_mode, circular_buffer_size):
            if session._tf_open():
                raise BlackboxError(
                    f"tfdbg v2 is already being recorded into run {run.run_id} with "
                    f"tensor_debug_mode={session.settings[0]!r}, circular_buffer_size="
                    f"{session.settings[1]}; call recorder.disable_dump_debug_info() first")
        if session is not None and session._tf_open():
            return session.writer   # TF's enable with the same settings is idempotent too
    if session is not None:         # disabled through TF directly: record what it wrote
        _close(run)
    with _lock:
        blobs = _blobs.setdefault(run, BlobIndex(run.store))
        session = _sessions[run] = _Session(run, tensor_debug_mode, circular_buffer_size,
                                            op_regex, tensor_dtypes, max_bytes, blobs)
        if run not in _finishing:
            _finishing.add(run)
            ref = weakref.ref(run)    # the callback must not keep the run alive
            run.add_finish_callback(lambda timeout=None: _close(ref(), timeout))
        return session.writer


def disable(run, timeout=None):
    """Disables TF's dumping and records everything it wrote; returns the session's stats."""
    return _close(run, timeout)


def _close(run, timeout=None):
    with _lock:
        session = _sessions.pop(run, None) if run is not None else None
    if session is None:
        return None
    session.close(timeout)
    return session.stats()


def flush(run, timeout=None):
    """Flushes TF's buffers of the run's session into its files and hands them to the writer."""
    with _lock:
        session = _sessions.get(run)
    if session is not None:
        session.flush(timeout)


def session_of(run):
    """The run's active session (tests and tools: its dump_root, tfdbg_run_id, stats())."""
    return _sessions.get(run)
