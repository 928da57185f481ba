"""tfblackbox.recorder: the capture side, running inside the training process.

    from tfblackbox import recorder
    run = recorder.init(store="./bbx", project="mnist", config={"lr": 0.1})
    hooks = [recorder.SummaryHook(steps_per_log=100), recorder.DumpHook(every_n_steps=1000)]
    ...
    recorder.finish()

The hooks need TensorFlow; they are imported on first use so `init` stays cheap.
"""

import importlib.util as _ilu

if _ilu.find_spec("tensorflow") is None:
    raise ImportError(
        "tfblackbox.recorder needs TensorFlow, which is not installed in this environment: "
        "pip install 'tfblackbox[tf]' (or your own tensorflow / tensorflow-cpu build)")

from .run import Run, active_run, finish, init  # noqa: E402

_LAZY = {"SummaryHook": ".tf1.summary_hook", "DumpHook": ".tf1.dump_hook"}


def flush(timeout=None):
    """Blocks until everything the active run recorded so far is in the store (with tfdbg v2
    recording on, what TF's circular buffers hold is written out and recorded first)."""
    run = active_run()
    if run is not None:
        from .tf2 import debug_v2
        debug_v2.flush(run, timeout)
        run.flush(timeout)


def enable_dump_debug_info(tensor_debug_mode="NO_TENSOR", circular_buffer_size=1000,
                           op_regex=None, tensor_dtypes=None, *, max_bytes=None):
    """tf.debugging.experimental.enable_dump_debug_info, recorded into the active run (or a
    new one) instead of a dump root: every DebugEvent record TF writes goes into the store,
    and `replay --to debug-dump` rebuilds the dump root for DebugDataReader. `max_bytes`
    bounds the record bytes recorded (one warning, then recording stops; training goes on).
    Returns TF's DebugEventsWriter, as TF does. Imports TensorFlow."""
    from .tf2 import debug_v2
    from .run import get_or_start_run
    return debug_v2.enable(get_or_start_run(), tensor_debug_mode, circular_buffer_size,
                           op_regex, tensor_dtypes, max_bytes)


def disable_dump_debug_info():
    """Stops tfdbg v2 recording (call it on the thread that enabled it); everything TF wrote,
    its circular buffers included, is recorded. Returns what was recorded, or None."""
    run = active_run()
    if run is None:
        return None
    from .tf2 import debug_v2
    return debug_v2.disable(run)


def watch_tensorboard(logdir, run=None):
    """Records every tfevents file under `logdir` (now and as they appear) into `run` (default:
    the active run, or a new one), as `init(sync_tensorboard=True)` does for the logdirs that
    tf.summary writers open."""
    from .tf2.tfevents_tail import tail_for
    from .run import get_or_start_run
    tail_for(run if run is not None else get_or_start_run()).watch(logdir)


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


import importlib  # noqa: E402

__all__ = ["init", "finish", "flush", "active_run", "Run", "SummaryHook", "DumpHook",
           "watch_tensorboard", "enable_dump_debug_info", "disable_dump_debug_info"]
