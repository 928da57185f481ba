"""tfblackbox.recorder: the capture side, running inside the training process.

    from tfblackbox import recorder
    run = recorder.init(store="./bbx", project="mnist", config={"lr": 0.1})
    hooks = [recorder.SummaryHook(steps_per_log=100), recorder.DumpHook(every_n_steps=1000)]
    model.fit(..., callbacks=[recorder.MetricsLogger(log_freq="batch")])     # Keras 3
    model.fit(..., callbacks=[recorder.ModelCheckpoint("model.keras")])      # checkpoints
    recorder.log_artifact("saved_model_dir", type="model")                   # wandb's
    recorder.save("outputs/*.txt")                                           # run files
    recorder.log({"eval/acc": 0.91})                                          # wandb.log
    ...
    recorder.finish()

`init`, `log`, `define_metric`, `flush` and `finish` need no TensorFlow (a JAX or plain Python
loop can use them). The hooks and callbacks need it; they are imported on first use, and say
clearly when TensorFlow is missing.
"""

from __future__ import annotations

import importlib
import importlib.util as _ilu
from typing import Any

from .run import Run, active_run, finish, get_or_start_run, init
from .values import Histogram
from .artifacts import log_artifact
from .saved_files import save

# name -> (module, what it needs)
_LAZY = {"SummaryHook": (".tf1.summary_hook", "tensorflow"),
         "DumpHook": (".tf1.dump_hook", "tensorflow"),
         "MetricsLogger": (".tf2.metrics_logger", "keras"),
         "ModelCheckpoint": (".tf2.model_checkpoint", "keras"),
         "CheckpointHook": (".tf1.checkpoint_hook", "tensorflow")}

TF_MISSING = ("tfblackbox.recorder.{name} needs TensorFlow, which is not installed in this "
              "environment: pip install 'tfblackbox[tf]' (or your own tensorflow / "
              "tensorflow-cpu build); recorder.init/log/finish work without it")


def require_tensorflow(name: str, modules: tuple[str, ...] = ("tensorflow",)) -> None:
    """Raises ImportError with the install hint if TensorFlow (or Keras) cannot be found."""
    for module in modules:
        try:
            found = _ilu.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ImportError(TF_MISSING.format(name=name))


def flush(timeout: float | None = None) -> None:
    """Blocks until everything the active run recorded so far is in the store (with tfdbg v2
    recording on, what TF's circular buffers hold is written out and recorded first)."""
    run = active_run()
    if run is not None:
        from .tf2 import tfdbg_v2
        tfdbg_v2.flush(run, timeout)
        run.flush(timeout)


def enable_dump_debug_info(tensor_debug_mode: str = "NO_TENSOR", circular_buffer_size: int = 1000,
                           op_regex: str | None = None, tensor_dtypes: Any = None, *,
                           max_bytes: int | None = None) -> Any:
    """tf.debugging.experimental.enable_dump_debug_info, recorded into the active run (or a
    new one) instead of a dump root: every DebugEvent record TF writes goes into the store,
    and `replay --to debug-dump` rebuilds the dump root for DebugDataReader. `max_bytes`
    bounds the record bytes recorded (one warning, then recording stops; training goes on).
    Returns TF's DebugEventsWriter, as TF does. Imports TensorFlow."""
    from .tf2 import tfdbg_v2
    from .run import get_or_start_run
    return tfdbg_v2.enable(get_or_start_run(), tensor_debug_mode, circular_buffer_size,
                           op_regex, tensor_dtypes, max_bytes)


def disable_dump_debug_info() -> dict | None:
    """Stops tfdbg v2 recording (call it on the thread that enabled it); everything TF wrote,
    its circular buffers included, is recorded. Returns what was recorded, or None."""
    run = active_run()
    if run is None:
        return None
    from .tf2 import tfdbg_v2
    return tfdbg_v2.disable(run)


def watch_tensorboard(logdir: str, run: Run | None = None) -> None:
    """Records every tfevents file under `logdir` (now and as they appear) into `run` (default:
    the active run, or a new one), as `init(sync_tensorboard=True)` does for the logdirs that
    tf.summary writers open."""
    from .tf2.tfevents_tail import tail_for
    tail_for(run if run is not None else get_or_start_run()).watch(logdir)


def log(data: dict[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """wandb.log for the active run (a run with defaults is started if there is none)."""
    get_or_start_run().log(data, step=step, commit=commit)


def define_metric(name: str, step_metric: str | None = None, step_sync: bool | None = None,
                  hidden: bool | None = None, summary: str | None = None,
                  overwrite: bool | None = None) -> Any:
    """wandb.define_metric for the active run."""
    return get_or_start_run().define_metric(name, step_metric=step_metric, step_sync=step_sync,
                                            hidden=hidden, summary=summary, overwrite=overwrite)


def __getattr__(name):
    if name in _LAZY:
        module, needs = _LAZY[name]
        require_tensorflow(name, ("tensorflow",) if needs == "tensorflow" else
                           ("tensorflow", "keras"))
        return getattr(importlib.import_module(module, __name__), name)
    if name in ("summary", "config"):   # wandb.summary / wandb.config of the active run
        run = active_run()
        if run is None:
            raise AttributeError(f"recorder.{name}: no active run (call recorder.init first)")
        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["init", "finish", "flush", "log", "define_metric", "active_run", "Run", "Histogram",
           "SummaryHook", "DumpHook", "MetricsLogger", "ModelCheckpoint", "CheckpointHook",
           "log_artifact", "save", "watch_tensorboard",
           "enable_dump_debug_info", "disable_dump_debug_info"]
