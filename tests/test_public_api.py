"""The public API is annotated (tools/lint type-checks the package against these annotations):
every export of tfblackbox.recorder, the hooks and the Keras callback, Store's methods, and
the command line's entry points name the types of all their parameters and their result."""

import inspect

import pytest

from tfblackbox import recorder
from tfblackbox.cli import main as cli
from tfblackbox.schema import Store

STORE_METHODS = ["create", "open", "upgrade", "close", "runs", "run", "has_run", "writers",
                 "segments", "read", "scalars", "histograms", "media", "tensors", "size_bytes",
                 "artifacts", "open_artifact_file", "local_artifact_path", "put_artifact_file",
                 "register_artifact", "to_pandas"]

# classes whose module imports TensorFlow (and Keras): checked apart
HOOKS_AND_CALLBACKS = ("SummaryHook", "DumpHook", "MetricsLogger", "ModelCheckpoint",
                       "CheckpointHook")


def _public_callables():
    found = []
    for name in recorder.__all__:
        if name in HOOKS_AND_CALLBACKS + ("Run", "Histogram"):
            continue
        found.append((f"recorder.{name}", getattr(recorder, name)))
    found += [("recorder.Run.flush", recorder.Run.flush),
              ("recorder.Run.finish", recorder.Run.finish)]
    found += [(f"Store.{m}", getattr(Store, m)) for m in STORE_METHODS]
    found += [("cli.main", cli.main), ("cli.replay_main", cli.replay_main)]
    return found


def _unannotated(fn):
    sig = inspect.signature(fn)
    missing = [p.name for p in sig.parameters.values()
               if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("name,fn", _public_callables(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_public_function_is_annotated(name, fn):
    assert _unannotated(fn) == [], name


@pytest.mark.parametrize("name", HOOKS_AND_CALLBACKS)
def test_hooks_and_callback_are_annotated(name):
    cls = getattr(recorder, name)      # imports TensorFlow (and Keras)
    assert _unannotated(cls.__init__) == [], name
