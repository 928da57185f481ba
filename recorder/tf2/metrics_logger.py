"""recorder.MetricsLogger: a drop-in for wandb's WandbMetricsLogger (Keras 3) that records.

Same arguments, keys and step metrics as wandb 0.31's WandbMetricsLogger
(wandb/integration/keras/callbacks/metrics_logger.py), so that the replayed W&B run looks as
if it had logged: `epoch/<metric>`, `epoch/epoch` and `epoch/learning_rate` at every epoch end;
with log_freq "batch" or N, also `batch/<metric>`, `batch/batch_step` and
`batch/learning_rate` every N batches of an epoch (batch % N == 0), `batch/batch_step` counting
N per logged batch. Each is one `run.log` (one W&B step); define_metric makes `epoch/epoch` or
`batch/batch_step` the x-axis, as WandbMetricsLogger does. Epoch rows are written whatever N
is (Keras' TensorBoard callback loses them when N does not divide the last batch index).

Beyond it: `histogram_freq=N` logs a 64-bin histogram of every weight every N epochs
(`epoch/weights/<weight path>`, in the epoch row); each model's summary, JSON and parameter
counts are recorded once per run (run_events "model"). With log_freq="epoch" the callback is
`async_safe`, so Keras keeps dispatching batch ends asynchronously (WandbMetricsLogger's
batch hook turns that off even when it logs nothing).
"""

from __future__ import annotations

import io
import logging
import threading
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .. import run as run_mod
from ..values import Histogram, Unloggable

log = logging.getLogger("tfblackbox")


class MetricsLogger(keras.callbacks.Callback):
    def __init__(self, log_freq: str | int = "epoch", initial_global_step: int = 0,
                 histogram_freq: int = 0, run: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if log_freq == "batch":
            log_freq = 1
        if log_freq != "epoch" and (isinstance(log_freq, bool) or not isinstance(log_freq, int)
                                    or log_freq < 1):
            raise ValueError(f"log_freq={log_freq!r}; expected 'epoch', 'batch' or a positive "
                             f"number of batches")
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or \
                histogram_freq < 0:
            raise ValueError(f"histogram_freq={histogram_freq!r}; expected 0 (off) or a "
                             f"positive number of epochs")
        self._run = run if run is not None else run_mod.get_or_start_run()
        self.logging_batch_wise = isinstance(log_freq, int)
        self.log_freq = log_freq if self.logging_batch_wise else None
        self.histogram_freq = histogram_freq
        self.global_batch = 0
        self.global_step = initial_global_step
        self._step_lock = threading.Lock()
        self._lr_warned = False
        self._lr_key, self._lr_var = None, None
        self._models: set = set()
        # only batch logging needs the batch ends in order, on the training thread
        self.async_safe = not self.logging_batch_wise
        if self.logging_batch_wise:
            self._run.define_metric("batch/batch_step")
            self._run.define_metric("batch/*", step_metric="batch/batch_step")
        else:
            self._run.define_metric("epoch/epoch")
            self._run.define_metric("epoch/*", step_metric="epoch/epoch")

    def _get_lr(self):
        """The optimizer's current learning rate (a schedule's too), as WandbMetricsLogger
        reads it; None if it cannot be read (warned once)."""
        try:
            opt = self.model.optimizer
            current = getattr(opt, "_learning_rate", None)   # what Keras 3's property reads
            key = (id(opt), id(current))
            if key != self._lr_key or current is None:
                # a new optimizer, or a schedule set in place of a rate: look again
                self._lr_key, self._lr_var = key, _variable_of(opt.learning_rate)
            if self._lr_var is not None:
                # a Keras variable: one bare read op of its TF variable (its .numpy() and the
                # optimizer's property cost 4x more in a fit, measured)
                handle, dtype = self._lr_var
                return float(tf.raw_ops.ReadVariableOp(resource=handle,
                                                       dtype=dtype).numpy().item())
            lr = opt.learning_rate
            if isinstance(lr, (tf.Variable, tf.Tensor)) or (
                    hasattr(lr, "shape") and lr.shape == ()):
                return float(lr.numpy().item())
            return float(lr(step=self.global_step).numpy().item())
        except Exception as e:
            if not self._lr_warned:
                self._lr_warned = True
                log.warning("tfblackbox: MetricsLogger cannot read the learning rate (%s); it "
                            "is not logged", e)
            return None

    def on_train_begin(self, logs=None):
        if id(self.model) not in self._models:
            self._models.add(id(self.model))
            try:
                self._run.record_model(self.model.name, model_info(self.model))
            except Exception as e:   # a model record is a nicety; training goes on
                log.warning("tfblackbox: MetricsLogger could not record model %s: %s",
                            getattr(self.model, "name", "?"), e)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict() if logs is None else {f"epoch/{k}": v for k, v in logs.items()}
        logs["epoch/epoch"] = epoch
        lr = self._get_lr()
        if lr is not None:
            logs["epoch/learning_rate"] = lr
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            logs.update(self._weight_histograms())
        self._run.log(logs)

    def on_batch_end(self, batch, logs=None):
        with self._step_lock:
            self.global_step += 1
        if self.logging_batch_wise and batch % self.log_freq == 0:
            logs = {f"batch/{k}": v for k, v in logs.items()} if logs else {}
            logs["batch/batch_step"] = self.global_batch
            lr = self._get_lr()
            if lr is not None:
                logs["batch/learning_rate"] = lr
            self._run.log(logs)
            self.global_batch += self.log_freq

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs if logs else {})

    def _weight_histograms(self):
        out = {}
        for w in self.model.weights:
            name = f"epoch/weights/{getattr(w, 'path', None) or w.name}"
            try:
                out[name] = Histogram(np.asarray(w.numpy()), num_bins=64)
            except Unloggable as e:
                self._run._skip(f"histogram {name}", f"MetricsLogger: {name!r} is not "
                                                     f"recorded: it is {e}")
        return out


def _variable_of(lr):
    """(handle, dtype) of the TF variable under a scalar Keras variable, else None."""
    value = getattr(lr, "value", None)
    if isinstance(value, tf.Variable) and getattr(lr, "shape", None) == ():
        return value.handle, value.dtype
    return None


def model_info(model):
    """Name, class, parameter counts, summary text and JSON of a Keras model."""
    info = {"name": model.name, "class": type(model).__name__}
    try:
        info["parameters"] = int(model.count_params())
        info["trainable_parameters"] = int(sum(int(np.prod(w.shape))
                                               for w in model.trainable_weights))
    except Exception:   # not built yet
        pass
    lines = io.StringIO()
    try:
        model.summary(print_fn=lambda text, **_kw: lines.write(text + "\n"))
        info["summary"] = lines.getvalue()
    except Exception:
        pass
    try:
        info["json"] = model.to_json()
    except Exception:   # subclassed models without get_config
        pass
    return info
