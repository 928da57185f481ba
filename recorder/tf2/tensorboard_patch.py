"""sync_tensorboard: learn every logdir tf.summary writes to, as wandb does.

`tf.summary.create_file_writer` (and so Keras' TensorBoard callback) creates its C++ writer
with `gen_summary_ops.create_summary_file_writer(writer, logdir, ...)`; the patch passes the
call on and hands the logdir to the run's tail (tfevents_tail.py). TensorFlow is not imported
for this: if it is not imported yet, a meta-path hook patches gen_summary_ops the moment its
import finishes. The writer handles seen are kept (weakly) so `finish` can flush the writers
still open before the tail drains: TF's writers keep up to 10 events (max_queue) or 2 minutes
(flush_millis) in memory. The original function is put back at finish.
"""

import importlib.abc
import logging
import sys
import threading
import weakref

from .tfevents_tail import tail_for

log = logging.getLogger("tfblackbox")

TARGET = "tensorflow.python.ops.gen_summary_ops"
_lock = threading.Lock()
FRAMES = 4        # how far up the writer object is looked for
_state: dict = {"run": None, "module": None, "original": None, "writers": [], "handles": [],
          "finder": None}


def enable(run):
    """Starts learning logdirs for `run` (replacing any earlier run's patch)."""
    with _lock:
        _disable_locked()
        _state["run"] = run
        _state["writers"], _state["handles"] = [], []
    run.add_finish_callback(lambda timeout=None: finish(run))   # before the tail drains
    tail_for(run)
    module = sys.modules.get(TARGET)
    if module is not None:
        _patch(module)
    else:
        finder = _PatchOnImport()
        _state["finder"] = finder
        sys.meta_path.insert(0, finder)


def finish(run):
    """Flushes TF's writers that are still open, then takes the patch off."""
    if _state["run"] is not run:
        return
    flush_writers()
    with _lock:
        _disable_locked()


def _disable_locked():
    module, original = _state["module"], _state["original"]
    if module is not None and getattr(module.create_summary_file_writer, "_tfblackbox", False):
        module.create_summary_file_writer = original
    finder = _state["finder"]
    if finder is not None and finder in sys.meta_path:
        sys.meta_path.remove(finder)
    _state.update(run=None, module=None, original=None, finder=None)


def _patch(module):
    with _lock:
        if _state["run"] is None or _state["module"] is not None:
            return
        original = module.create_summary_file_writer

        def create_summary_file_writer(*args, **kwargs):
            result = original(*args, **kwargs)
            try:
                _learn(args, kwargs)
            except Exception as e:   # never break the user's writer
                log.warning("tfblackbox: sync_tensorboard could not learn a writer's logdir "
                            "(%s: %s); pass it to recorder.watch_tensorboard()",
                            type(e).__name__, e)
            return result

        create_summary_file_writer._tfblackbox = True
        create_summary_file_writer.__wrapped__ = original
        module.create_summary_file_writer = create_summary_file_writer
        _state.update(module=module, original=original)


def _learn(args, kwargs):
    run = _state["run"]
    if run is None:
        return
    writer = kwargs.get("writer", args[0] if args else None)
    logdir = kwargs.get("logdir", args[1] if len(args) > 1 else None)
    value = _value(logdir)
    if value is None:
        log.warning("tfblackbox: sync_tensorboard: a summary writer's logdir is not known "
                    "until the graph runs (%r); pass it to recorder.watch_tensorboard()", logdir)
        return
    from tensorflow.python.framework import ops
    if isinstance(writer, ops.EagerTensor):   # a graph-mode handle is its session's to flush
        owner = _writer_object()
        if owner is not None:
            _state["writers"].append(weakref.ref(owner))
        else:
            _state["handles"].append(weakref.ref(writer))
    tail_for(run).watch(value, learned=True)


def _writer_object():
    """The tf.summary writer whose constructor is creating the resource: the `self` of a
    frame a little above the patched function (TF calls it from the writer's __init__)."""
    frame = None
    try:
        from tensorflow.python.ops import summary_ops_v2
        frame = sys._getframe(3)   # _writer_object <- _learn <- the patch <- TF
        for _ in range(FRAMES):
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            if isinstance(owner, summary_ops_v2.SummaryWriter):
                return owner
            frame = frame.f_back
        return None
    except Exception:   # TF laid out otherwise: the handle is kept instead
        return None
    finally:
        del frame


def _value(logdir):
    if isinstance(logdir, bytes):
        return logdir.decode()
    if isinstance(logdir, str):
        return logdir
    try:
        value = logdir.numpy()
    except Exception:
        from tensorflow.python.framework import tensor_util
        value = tensor_util.constant_value(logdir)
    if value is None:
        return None
    value = value.item() if hasattr(value, "item") else value
    return value.decode() if isinstance(value, bytes) else str(value)


def flush_writers():
    """Flushes every writer created while the patch was on and still open; returns how many.
    A writer that was closed or collected is skipped: its resource is gone (TF flushed it)."""
    writers = [w for w in (ref() for ref in _state["writers"]) if w is not None]
    handles = [h for h in (ref() for ref in _state["handles"]) if h is not None]
    flushed = 0
    for writer in writers:
        if getattr(writer, "_closed", False):
            continue
        try:
            writer.flush()
            flushed += 1
        except Exception as e:
            log.warning("tfblackbox: could not flush a TF summary writer (%s: %s); events it "
                        "still held may be missing", type(e).__name__, e)
    if not handles:
        return flushed
    try:
        import tensorflow as tf
        from tensorflow.python.framework import errors
        from tensorflow.python.ops import gen_summary_ops
    except Exception as e:
        log.warning("tfblackbox: cannot flush TF's summary writers (%s)", e)
        return flushed
    for handle in handles:
        try:
            with tf.device("cpu:0"):
                gen_summary_ops.flush_summary_writer(handle)
            flushed += 1
        except errors.NotFoundError:
            pass   # closed already: its file is complete
        except Exception as e:
            log.warning("tfblackbox: could not flush a TF summary writer (%s: %s); events it "
                        "still held may be missing", type(e).__name__, e)
    return flushed


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds gen_summary_ops through the other finders and patches it once it has loaded."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            _patch(module)
        except Exception as e:
            log.warning("tfblackbox: sync_tensorboard could not patch %s: %s", TARGET, e)

    def __getattr__(self, name):
        return getattr(self._loader, name)
