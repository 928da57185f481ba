"""Run: the recording side of one training run; `init`/`finish` mirror wandb's.

A run lives in a store; each process that records into it (first start, every resume) is an
attempt with its own Writer. Status is running until `finish`; a process that dies leaves it
running, and `tfblackbox runs` shows it so with its last heartbeat.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from tfblackbox.schema import BlackboxError, Store, WriterError, compact
from tfblackbox.schema.errors import RunExistsError
from tfblackbox.schema.store.opening import default_store
from tfblackbox.schema.store.records import new_run_id, valid_run_id

from . import environment, multiworker
from .logging_api import RunLogging
from .system.recording import STATS_INTERVAL, SystemRecorder
from .writer import Writer

log = logging.getLogger("tfblackbox")

# finish() merges a table's small segments when it has this many: a short run's few files
# cost a reader nothing, and merging them re-encoded every row once more (tools/bench_hooks:
# ~15 ms of CPU per 3 000 histograms, a tenth of SummaryHook's whole overhead there)
FINISH_COMPACT_MIN_SEGMENTS = 8
RESUME_MODES = ("allow", "must", "never", None)
_WHY = {"memory": "dropped past max_unwritten_bytes", "finish": "unwritten at finish"}
CONSOLE_MODES = ("auto", "wrap", "off")

_active = None
_lock = threading.Lock()


class Run(RunLogging):
    def __init__(self, store, record, writer_id, attempt, writer_options):
        self.compact_on_finish = writer_options.pop("compact_on_finish", True)
        console = writer_options.pop("console", "off")
        system = writer_options.pop("system", {})
        self.store = store
        self.record = record
        self.run_id = record.run_id
        self.writer_id, self.attempt = writer_id, attempt
        self.writer = Writer(store, self.run_id, writer_id, attempt, **writer_options)
        self.finished = False
        self.max_artifact_bytes: int | None = None   # init's; the artifact writer's bound
        self.exit_error = None       # the exception a `with` block ended with
        self._finish_callbacks = []   # fn(timeout): run at finish, before the writer closes
        self._start_logging(console)   # log(), summary, config, console (logging_api.py)
        # environment, files, system metrics (recorder/system/): stopped at finish before
        # the writer closes, with a last sample
        self.system = SystemRecorder(self, system.get("stats_interval", STATS_INTERVAL),
                                     system.get("save_code", False))
        self._finish_callbacks.append(self.system.finish)

    @property
    def name(self):
        return self.record.name

    def submit(self, job, nbytes=0, block=False):
        """Queues a decode job for the writer. Never raises: the recorder must not take the
        training down. A writer failure is logged (once per failure) and recorded in the
        catalog; returns False if the job was not queued. `block`: wait while the queue is
        full instead of applying on_full (never from the training thread)."""
        try:
            return self.writer.submit(job, nbytes, block)
        except WriterError as e:
            self._report(e)
            try:
                return self.writer.submit(job, nbytes, block)
            except WriterError:
                return False

    def _report(self, err):
        log.error("tfblackbox: run %s: %s (training goes on)", self.run_id, err)

    def flush(self, timeout: float | None = None) -> None:
        """Blocks until everything recorded so far is in registered segments."""
        self._flush_logging()
        artifacts = getattr(self, "_artifact_recorder", None)
        if artifacts is not None:   # versions logged so far: stored and registered
            artifacts.flush(timeout)
        self.writer.flush(timeout)

    def add_finish_callback(self, fn):
        """`fn(timeout)` runs at finish before the writer closes (the tfevents tail drains)."""
        self._finish_callbacks.append(fn)

    def note_start_step(self, step):
        """The global step this attempt starts from; earlier attempts' rows from here on are
        superseded by this one's."""
        self.store.note_writer(self.writer_id, first_step=int(step))

    def finish(self, exit_code: int = 0, timeout: float | None = None) -> None:
        """Flushes, closes the writer and marks the run finished (0) or failed (non-zero).

        Never raises (as wandb's finish): every step is tried even when one before it failed
        (a full disk, a store that vanished), so the run is marked whenever the catalog can be
        written at all; a step that failed is logged at ERROR and recorded on the attempt, and
        the rows that could not be stored are counted in the catalog (`losses`, reason
        "finish"). `recorder.flush()` before finish raises WriterError for those who check."""
        if self.finished:
            return
        self.finished = True
        errors = []
        for what, fn in [("committing the last logged row", self._finish_logging)] + [
                ("a finish step", lambda fn=fn: fn(timeout)) for fn in self._finish_callbacks]:
            try:
                fn()
            except Exception as e:   # what it would have added is missing; the rest is kept
                errors.append((what, e))
        try:
            self.writer.close(timeout)
        except Exception as e:
            errors.append(("writing the last rows", e))
        self.writer.give_up()   # rows still held are lost: counted with the attempt's end
        if self.writer.dropped_jobs:
            log.warning("tfblackbox: run %s: %d recorded item(s) were dropped because the writer "
                        "queue was full (on_full='drop')", self.run_id, self.writer.dropped_jobs)
        steps = [("recording the attempt's end", lambda: self._with_reserve(self._end_attempt)),
                 ("marking the run", lambda: self._with_reserve(
                     lambda: self.store.finish_run(self.run_id, exit_code)))]
        if self.compact_on_finish:
            steps.insert(1, ("compacting", self._compact))
        for what, step in steps:
            try:
                step()
            except Exception as e:
                errors.append((what, e))
        try:
            self.record = self.store.run(self.run_id)
        except Exception:
            pass
        self._report_finish(errors)

    def _report_finish(self, errors):
        """Logs at ERROR what finish could not do and what the attempt lost; the script goes
        on. The first error is recorded on the attempt (when the catalog takes it: the
        writer's own record of a failure may have found the disk full)."""
        lost = ", ".join(f"{rows} {table} rows ({_WHY[why]})" for (table, why), (rows, *_r)
                         in sorted(self.writer.losses().items()))
        if lost:
            log.error("tfblackbox: run %s: not stored: %s; counted in the catalog (`tfblackbox "
                      "show %s`)", self.run_id, lost, self.run_id)
        for what, e in errors:
            log.error("tfblackbox: run %s: finish failed while %s: %s: %s (the script goes on)",
                      self.run_id, what, type(e).__name__, e)
        if errors:
            what, e = errors[0]
            try:
                self.store.note_writer(self.writer_id, error=f"finish: {what}: {e!r}")
            except Exception:
                pass

    def _with_reserve(self, write):
        try:
            write()
        except BlackboxError:
            # a full disk: the reserve kept since init makes room for the last catalog writes
            if not self.store.release_reserve():
                raise
            write()

    def _end_attempt(self):
        if self.record.tf_version is None and environment.tf_version():   # imported after init
            self.store.note_run(self.run_id, tf_version=environment.tf_version())
        self.store.note_writer(self.writer_id, dropped_rows=self.writer.dropped_jobs)
        losses = dict(self.writer.losses())
        artifacts = getattr(self, "_artifact_recorder", None)
        if artifacts is not None:   # versions skipped or failed (a full disk refused them then)
            losses.update(artifacts.losses())
        self.store.note_losses(self.run_id, self.writer_id, losses)
        self.store.end_attempt(self.writer_id)

    def _compact(self):
        try:   # many small flush segments -> one file per table; a failure loses nothing
            compact(self.store, self.run_id, min_segments=FINISH_COMPACT_MIN_SEGMENTS)
        except Exception as e:
            log.warning("tfblackbox: run %s: compaction at finish failed (the store stays "
                        "valid; run `tfblackbox compact`): %s", self.run_id, e)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.exit_error = exc
        if _active is self:
            finish(exit_code=0 if exc_type is None else 1)
        else:
            self.finish(exit_code=0 if exc_type is None else 1)

    def __repr__(self):
        return f"<tfblackbox Run {self.run_id} in {self.store.root}>"


def init(store: str | os.PathLike | None = None, project: str | None = None,
         name: str | None = None, config: Any = None, tags: Sequence[str] | None = None,
         notes: str | None = None, group: str | None = None, run_id: str | None = None,
         resume: bool | str | None = None, catalog_url: str | None = None,
         sync_tensorboard: bool = False, data: str | None = None, console: str = "auto",
         job_type: str | None = None, save_code: bool = False,
         stats_interval: float = STATS_INTERVAL, max_artifact_bytes: int | None = None,
         **writer_options: Any) -> Run:
    """Starts (or resumes) a run and makes it the active one; returns the Run.

    store: a directory (SQLite catalog in it) or a SQLAlchemy URL
    ("postgresql+psycopg://user@host:5432/db"); default $TFBLACKBOX_STORE, else
    ./tfblackbox-store. data: where a new store keeps its Parquet files (a directory or a
    pyarrow URI such as "s3://bucket/prefix"; default $TFBLACKBOX_DATA, else the store
    directory), recorded in the catalog.

    Under TF_CONFIG each task records its own run `<run>-<type><index>` in group `<run>`
    (multiworker.py); with no run_id given, a restarted task continues its run.

    sync_tensorboard=True records everything tf.summary writes (wandb's name): every logdir
    a summary writer opens is tailed (recorder/tf2/), without importing TensorFlow here.

    resume: None or "never" refuse an existing run_id; "allow" continues it if it exists;
    "must" requires it to exist (True means "allow"). console: "auto" (or "wrap") records
    stdout/stderr, "off" does not. job_type: wandb's (replayed as the W&B run's job type).
    save_code=True keeps the main program and the git diff, as wandb's save_code. The
    environment and requirements.txt are recorded always; system metrics every
    `stats_interval` seconds (wandb's 15; 0: none) and at finish. Writer options: flush_rows,
    flush_secs, flush_bytes, max_queue_bytes, on_full ("drop" or "block"),
    max_unwritten_bytes (memory for rows the store could not take yet, default 256 MiB; past
    it bulk rows are dropped, counted), compact_on_finish (default True).
    max_artifact_bytes: the most bytes this attempt's artifact versions (log_artifact,
    ModelCheckpoint, CheckpointHook) add to the store; past it versions are skipped with one
    warning and counted in the catalog (losses, table "artifacts", reason "max_bytes").
    """
    global _active
    _check_writer_options(writer_options)   # before anything is written to the store
    if console not in CONSOLE_MODES:
        raise BlackboxError(f"console={console!r}; expected one of {', '.join(CONSOLE_MODES)}")
    _check_system_options(job_type, stats_interval)
    if max_artifact_bytes is not None and (isinstance(max_artifact_bytes, bool) or not
                                           isinstance(max_artifact_bytes, int) or
                                           max_artifact_bytes < 0):
        raise ValueError(f"max_artifact_bytes={max_artifact_bytes!r}; expected a number of "
                         f"bytes (or None: no limit)")
    if resume is True:
        resume = "allow"
    if resume is False:
        resume = None
    if resume not in RESUME_MODES:
        raise BlackboxError(f"resume={resume!r}; expected one of 'allow', 'must', 'never', None")
    task = multiworker.current_task()
    if task is not None:
        run_id, task_name, group, derived = multiworker.task_run(task, run_id, name, group,
                                                                 project)
        name = task_name or name
        if derived and resume is None:
            resume = "allow"
    if run_id is not None and not valid_run_id(run_id):
        raise BlackboxError(f"run_id {run_id!r} is not valid: use 1-64 letters, digits, '_', "
                            f"'-' or '.', starting with a letter or digit")
    if config is not None and not isinstance(config, dict):
        config = _config_to_dict(config)
    with _lock:
        if _active is not None and not _active.finished:
            log.warning("tfblackbox: init() while run %s is active: finishing it first",
                        _active.run_id)
            _finish_locked(0)
        path = store or default_store()
        the_store = Store.create(path, catalog_url,
                                 data if data is not None else os.environ.get("TFBLACKBOX_DATA"))
        facts = environment.describe()
        exists = run_id is not None and the_store.has_run(run_id)
        if exists and resume in (None, "never"):
            raise BlackboxError(f"run {run_id!r} already exists in store {the_store.root}; pass "
                                f"resume='allow' or resume='must' to continue it")
        if not exists and resume == "must":
            raise BlackboxError(f"resume='must' but run {run_id!r} is not in store "
                                f"{the_store.root}")
        fields = dict(project=project, name=name, notes=notes, group=group, **facts)
        record = None
        if not exists:
            try:
                record = the_store.create_run(run_id or new_run_id(), config=config, tags=tags,
                                              **fields)
            except RunExistsError:
                if resume != "allow":   # another process created it since has_run() above
                    raise
        if record is None:
            record = the_store.reopen_run(run_id, config=config, tags=tags, **fields)
        writer_id, attempt = the_store.begin_attempt(record.run_id, facts["host"], facts["pid"])
        the_store.keep_reserve()
        _active = Run(the_store, record, writer_id, attempt,
                      dict(writer_options, console=console,
                           system=dict(stats_interval=stats_interval, save_code=save_code)))
        _active.max_artifact_bytes = max_artifact_bytes
        _active.system.start(job_type)
        _install_exit_handlers()
        if sync_tensorboard:
            from .tf2 import tensorboard_patch
            tensorboard_patch.enable(_active)
        return _active


WRITER_OPTIONS = ("flush_rows", "flush_secs", "flush_bytes", "max_queue_bytes", "on_full",
                  "max_unwritten_bytes", "compact_on_finish")


def _check_writer_options(options):
    unknown = sorted(set(options) - set(WRITER_OPTIONS))
    if unknown:
        raise TypeError(f"init() got unknown option(s) {', '.join(unknown)}; writer options are "
                        f"{', '.join(WRITER_OPTIONS)}")
    if options.get("on_full", "drop") not in ("drop", "block"):
        raise ValueError(f"on_full={options['on_full']!r}; expected 'drop' or 'block'")
    for name in ("flush_rows", "flush_secs", "flush_bytes", "max_queue_bytes",
                 "max_unwritten_bytes"):
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            raise ValueError(f"{name}={value!r}; expected a positive number")


def _check_system_options(job_type, stats_interval):
    if job_type is not None and not isinstance(job_type, str):
        raise BlackboxError(f"job_type={job_type!r}; expected a string (wandb's job_type)")
    if (isinstance(stats_interval, bool) or not isinstance(stats_interval, (int, float))
            or not stats_interval >= 0):
        raise ValueError(f"stats_interval={stats_interval!r}; expected seconds between system "
                         f"metrics samples (0: none)")


def _config_to_dict(config):
    for attr in ("as_dict", "_asdict", "to_dict"):
        if hasattr(config, attr):
            return dict(getattr(config, attr)())
    if hasattr(config, "__dict__"):
        return {k: v for k, v in vars(config).items() if not k.startswith("_")}
    raise BlackboxError(f"config must be a dict (or namespace), got {type(config).__name__}")


def active_run() -> Run | None:
    return _active if _active is not None and not _active.finished else None


def get_or_start_run() -> Run:
    """The active run, or a new one with defaults (store from TFBLACKBOX_STORE)."""
    run = active_run()
    return run if run is not None else init()


def finish(exit_code: int = 0, timeout: float | None = None) -> None:
    with _lock:
        _finish_locked(exit_code, timeout)


def _finish_locked(exit_code, timeout=None):
    global _active
    run, _active = _active, None
    if run is not None:
        run.finish(exit_code, timeout)


_exit_state = {"installed": False, "exception": False}


def _install_exit_handlers():
    if _exit_state["installed"]:
        return
    _exit_state["installed"] = True
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        _exit_state["exception"] = True
        _exit_state["error"] = exc
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    atexit.register(_at_exit)


def note_exit_code(code):
    """The process is leaving with this code (a signal's 128+n): the run is marked with it."""
    _exit_state["code"] = code


def exit_error(run):
    """The exception the run (`with` block) or the process is ending with, if known."""
    return getattr(run, "exit_error", None) or _exit_state.get("error")


def _at_exit():
    code = _exit_state.get("code") or (1 if _exit_state["exception"] else 0)
    try:
        finish(exit_code=code, timeout=60)
    except Exception as e:
        log.error("tfblackbox: could not finish the run at exit: %s", e)
