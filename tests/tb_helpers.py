"""Helpers for the TensorBoard and report tests: TensorBoard's own readers, a real
`tensorboard` server, headless Chromium, and a TF1 training recorded beside SummarySaverHook."""

import glob
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from servers import free_port, stop

CHROMIUM = "/usr/bin/chromium"


# -- TensorBoard's readers -----------------------------------------------------------------------

def accumulator(path):
    """TensorBoard's legacy EventAccumulator over a run directory, loaded."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(str(path), size_guidance={k: 0 for k in (
        ea.SCALARS, ea.IMAGES, ea.AUDIO, ea.HISTOGRAMS, ea.TENSORS, ea.COMPRESSED_HISTOGRAMS)})
    acc.Reload()
    return acc


def plugin_accumulator(path):
    """The accumulator TensorBoard's server uses: every value migrated to plugin tensors
    (data_compat), as the dashboards see them."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    acc = pea.EventAccumulator(str(path), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return acc


def tensor_views(path, step_shift=0):
    """{tag: (plugin name, [(step, value as a list)])} as TensorBoard's server sees a run."""
    from tensorboard.util import tensor_util
    acc = plugin_accumulator(path)
    out = {}
    for tag in acc.Tags()["tensors"]:
        meta = acc.summary_metadata.get(tag)
        plugin = meta.plugin_data.plugin_name if meta is not None else None
        values = [(e.step + step_shift, _plain(tensor_util.make_ndarray(e.tensor_proto)))
                  for e in acc.Tensors(tag)]
        out[tag] = (plugin, values)
    return out


def _plain(arr):
    import math
    flat = arr.tolist() if hasattr(arr, "tolist") else arr

    def norm(v):
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        return [norm(x) for x in v] if isinstance(v, list) else v
    return norm(flat)


def blob_sequences(logdir, plugin):
    """{run: {tag: [(step, wall_time, [blob bytes])]}} of a plugin's blob sequences (images,
    audio) as TensorBoard's server reads them: its multiplexer and data provider."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    multiplexer = pem.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    ctx = context.RequestContext()
    found = provider.read_blob_sequences(ctx, experiment_id="", plugin_name=plugin,
                                         downsample=10_000)
    return {run: {tag: [(d.step, d.wall_time, [provider.read_blob(ctx, blob_key=b.blob_key)
                                                for b in d.values]) for d in data]
                  for tag, data in tags.items()}
            for run, tags in found.items()}


def event_files(path):
    return sorted(glob.glob(os.path.join(str(path), "**", "*tfevents*"), recursive=True))


# -- a real TensorBoard server ---------------------------------------------------------------------

class TensorBoardServer:
    """`tensorboard --logdir LOGDIR --host 127.0.0.1 --port P`, stopped on exit."""

    def __init__(self, logdir, *extra):
        self.port = free_port()
        exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
        self.proc = subprocess.Popen(
            [exe, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(self.port),
             "--reload_interval", "1", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def get(self, route, **params):
        url = f"http://127.0.0.1:{self.port}{route}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def wait_for(self, fn, timeout=120):
        """Polls fn() (which may raise while the server starts) until it returns truthy."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tensorboard exited {self.proc.returncode}:\n"
                                     f"{self.proc.stdout.read()[-3000:]}")
            try:
                got = fn()
                if got:
                    return got
            except Exception as e:   # not up yet, or the run not loaded yet
                last = e
            time.sleep(0.5)
        raise AssertionError(f"tensorboard did not answer in {timeout} s (last: {last!r})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        stop(self.proc, 20)
        self.proc.stdout.close()


# -- headless Chromium -----------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-default-apps",
                  "--host-resolver-rules=MAP * ~NOTFOUND",   # any name lookup fails
                  "--enable-logging=stderr", "--v=0"]


def chromium(page, profile, *args, timeout=120):
    """Runs headless Chromium on a local page; returns (stdout, the page's console lines)."""
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args,
                           f"file://{os.path.abspath(page)}"],
                          capture_output=True, text=True, timeout=timeout)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console, proc


# -- a TF1 training recorded by SummaryHook beside SummarySaverHook -----------------------------

STEPS = 8


def train_tf1(base):
    """SummaryHook and SummarySaverHook on the same summary op (every kind, every step), plus
    DumpHook every 4 steps; returns the run id. Runs in the calling process (graph mode)."""
    import tensorflow as tf
    from tfblackbox import recorder
    from tfgraphs import build_all_kinds
    tf.compat.v1.disable_eager_execution()
    with tf.Graph().as_default():
        train_op = build_all_kinds(tf)
        op = tf.compat.v1.summary.merge_all()
        run = recorder.init(store=str(base / "store"), project="p", name="tf1 hooks",
                            config={"lr": 0.05, "opt": {"name": "sgd", "nesterov": False}})
        hooks = [tf.compat.v1.train.SummarySaverHook(save_steps=1, output_dir=str(base / "tb"),
                                                     summary_op=op),
                 recorder.SummaryHook(summary_op=op, steps_per_log=1),
                 recorder.DumpHook(every_n_steps=4, capture="files")]
        with tf.compat.v1.train.MonitoredTrainingSession(hooks=hooks) as sess:
            for _ in range(STEPS):
                sess.run(train_op)
        recorder.finish()
    return run.run_id
