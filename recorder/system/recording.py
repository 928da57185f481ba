"""The run's system recorder: at `init` a background thread records the environment and the
run's files, then samples the system metrics every `stats_interval` seconds (wandb's 15 by
default; 0: no samples) and once more at `finish`; a black-box trigger records a sample of
its own (`sample_now`).

Everything goes to the writer as jobs (`run.submit`): the environment, job type and file
references as `run_events` rows, file contents as `file_blobs` rows (once per sha256 across
the store), samples as `system_metrics` rows. Nothing here may take the training down: a
psutil call that raises stops the sampling, logged once; an NVML failure stops the GPU part,
logged once; a part of the environment that cannot be gathered is left out, logged once.
"""

import json
import logging
import os
import threading
import time

from tfblackbox.schema.codecs.run_files import FileIndex, blob_table, file_ref
from tfblackbox.schema.tables.system import FILES_TABLE, METRICS_TABLE

from . import facts
from .files import run_files

log = logging.getLogger("tfblackbox")

STATS_INTERVAL = 15.0     # seconds, wandb's default sampling interval
FINISH_WAIT = 30.0        # seconds finish() waits for the environment probe at most
PID_ENV = "TFBLACKBOX_STATS_PID"   # the process to sample (wandb's x_stats_pid); default: this


class SystemRecorder:
    def __init__(self, run, stats_interval=STATS_INTERVAL, save_code=False):
        self.run = run
        self.interval = float(stats_interval)
        self.save_code = save_code
        self.started_at = time.time()
        self.writer_id = facts.new_writer_id()
        self.samples = 0
        self.latest = None            # (wall_time, {key: value}) of the last sample
        self.stopped = None           # why sampling stopped, if it did
        self._sampler = None
        self._nvml = None
        self._lock = threading.Lock()   # one sample at a time
        self._stop = threading.Event()
        self.probed = threading.Event()   # the environment probe is over (recorded or not)
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"tfblackbox-system-{run.run_id}")

    def start(self, job_type=None):
        if job_type is not None:
            self._event("job_type", "", job_type)
        self._thread.start()
        return self

    # -- the thread ---------------------------------------------------------------------

    def _main(self):
        try:
            self._record_environment()
        except Exception as e:   # never take the training down
            log.warning("tfblackbox: run %s: the environment could not be recorded: %s: %s",
                        self.run.run_id, type(e).__name__, e)
        finally:
            self.probed.set()
        if self.interval <= 0 or self._sampler is None:
            return
        # as wandb's monitor: a sample at the start, then one every interval
        while not self._stop.is_set() and self._take("interval"):
            if self._stop.wait(self.interval):
                return

    def _record_environment(self):
        env = facts.process_facts(self.started_at)
        psutil = self._start_psutil()
        if psutil is not None:
            env.update(self._part("the machine's facts", facts.machine_facts, psutil) or {})
        self._start_nvml()
        if self._nvml is not None:
            env.update(self._part("the GPUs' facts", self._nvml.facts) or {})
        env["writer_id"] = self.writer_id
        files = self._part("the run's files", run_files, self.save_code, env) or []
        self._submit_files(files)
        self._event("environment", "", env)

    def _part(self, what, fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            log.warning("tfblackbox: run %s: %s could not be recorded: %s: %s",
                        self.run.run_id, what, type(e).__name__, e)
            if what == "the GPUs' facts":
                self._stop_gpu(e)
            return None

    def _start_psutil(self):
        try:
            import psutil
            from .sampler import Sampler
            pid = int(os.environ.get(PID_ENV) or os.getpid())
            self._sampler = Sampler(pid)
            return psutil
        except Exception as e:
            self._stop_sampling(e)
            try:
                import psutil
                return psutil
            except ImportError:
                return None

    def _start_nvml(self):
        from .nvml import open_nvml
        try:
            self._nvml = open_nvml()
        except Exception as e:
            self._stop_gpu(e)

    # -- samples --------------------------------------------------------------------------

    def _take(self, reason):
        """Takes and records one sample; False once sampling has stopped."""
        with self._lock:
            if self._sampler is None:
                return False
            wall = time.time()
            try:
                values = self._sampler.sample()
            except Exception as e:
                self._stop_sampling(e)
                return False
            if self._nvml is not None:
                try:
                    values.update(self._nvml.sample(self._sampler.proc.pid))
                except Exception as e:
                    self._stop_gpu(e)
            self.latest = (wall, values)
            seq, self.samples = self.samples, self.samples + 1
        step = self.run.step
        self.run.submit(lambda b: _add_sample(b, seq, wall, step, reason, values),
                        nbytes=64 * len(values), block=self._may_wait(reason))
        return True

    def sample_now(self, reason):
        """A sample recorded now, tagged with `reason` (a black-box trigger); waits at most a
        second for a sample under way. Returns (wall time, values) or None."""
        if self._sampler is None or not self._lock.acquire(timeout=1.0):
            return self.latest
        self._lock.release()
        self._take(reason)
        return self.latest

    def _stop_sampling(self, err):
        self._sampler = None
        self.stopped = f"{type(err).__name__}: {err}"
        log.warning("tfblackbox: run %s: system metrics stop after %d sample(s): %s "
                    "(training goes on)", self.run.run_id, self.samples, self.stopped)

    def _stop_gpu(self, err):
        nvml, self._nvml = self._nvml, None
        log.warning("tfblackbox: run %s: GPU metrics stop after %d sample(s): %s: %s "
                    "(training goes on)", self.run.run_id, self.samples, type(err).__name__,
                    err)
        if nvml is not None:
            nvml.close()

    # -- finish -----------------------------------------------------------------------------

    def finish(self, timeout=None):
        """Stops the thread and takes the last sample (called before the writer closes)."""
        self._stop.set()
        self._thread.join(FINISH_WAIT if timeout is None else min(timeout, FINISH_WAIT))
        if self._thread.is_alive():
            log.warning("tfblackbox: run %s: the environment probe did not end in time; its "
                        "facts are not recorded", self.run.run_id)
            return
        if self.interval > 0:
            self._take("finish")
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None

    # -- writes -----------------------------------------------------------------------------

    def _may_wait(self, reason=None):
        """This thread and finish wait for room in a full queue (on_full='drop' is for the
        training thread: the environment and samples are not dropped); a trigger's sample,
        taken on the training thread, is not waited for."""
        return threading.current_thread() is self._thread or reason == "finish"

    def _event(self, kind, tag, value):
        seq, step, wall = next(self.run._seq), self.run.step, time.time()
        text = json.dumps(value, sort_keys=True)
        self.run.submit(lambda b: b.add("run_events", step=step, wall_time=wall, tag=tag,
                                        seq=seq, kind=kind, value_json=text),
                        nbytes=len(text), block=self._may_wait())

    def record_files(self, files):
        """Records more of the run's files [(path in the W&B files dir, bytes)] (recorder.save):
        their blobs once per sha256, a "file" event each."""
        self._submit_files(files, block=False)

    def _submit_files(self, files, block=True):
        if not files:
            return
        index = FileIndex(self.run.store)   # reads the store's hashes once
        wall = time.time()
        table = blob_table(files, index, wall)
        if table is not None:
            self.run.submit(lambda b: b.add_table(FILES_TABLE, table),
                            nbytes=sum(len(d) for _p, d in files), block=block)
        for path, data in files:
            self._event("file", path, file_ref(path, data))


def _add_sample(buffers, seq, wall, step, reason, values):
    for key, value in values.items():
        buffers.add(METRICS_TABLE, step=seq, wall_time=wall, tag=key, value=value,
                    train_step=step, reason=reason)

