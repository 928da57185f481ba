"""Helpers for the tfevents tests: run tests/tf2_summary_script.py as a child, read event
files the three ways (tfblackbox's reader, TensorBoard's RawEventFileLoader, TF's
summary_iterator), compare Events with TF's own nondeterminism taken out."""

import glob
import os
import subprocess
import sys

from helpers import child_env

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "tf2_summary_script.py")




def run_script(*args, timeout=300, check=True):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=child_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"{SCRIPT} {args} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def event_files(logdir):
    return sorted(p for p in glob.glob(os.path.join(str(logdir), "**", "*tfevents*"),
                                       recursive=True) if os.path.isfile(p))


def relpath(path, logdir):
    return os.path.relpath(path, str(logdir)).replace(os.sep, "/")


def tensorboard_records(path):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    return list(RawEventFileLoader(path).Load())


def tf_events(path):
    import tensorflow as tf
    return list(tf.compat.v1.train.summary_iterator(path))


def normalized(event):
    """An Event with what TF itself does not write the same twice taken out: the wall time,
    the hparams session start time, and the order of nodes and of attr map entries inside
    graphs (trace_export's, graph_def Events'; compared as sorted nodes)."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.core.framework import graph_pb2
    event = type(event).FromString(event.SerializeToString())
    event.wall_time = 0
    graphs = []
    if event.graph_def:
        graphs.append(_nodes(graph_pb2.GraphDef.FromString(event.graph_def)))
        event.graph_def = b""
    for v in event.summary.value:
        plugin = v.metadata.plugin_data.plugin_name
        if plugin == "hparams":
            data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
            if data.HasField("session_start_info"):
                data.session_start_info.start_time_secs = 0
            # a map field: its entries serialize in any order unless asked not to
            v.metadata.plugin_data.content = data.SerializeToString(deterministic=True)
        elif plugin.startswith("graph_run_metadata"):
            meta = config_pb2.RunMetadata.FromString(v.tensor.string_val[0])
            graphs += [_nodes(g) for g in meta.partition_graphs]
            for f in meta.function_graphs:
                graphs += [_nodes(g) for g in (*f.partition_graphs, f.pre_optimization_graph,
                                               f.post_optimization_graph)]
            del v.tensor.string_val[:]
    return event, graphs


def _nodes(graph_def):
    """A GraphDef's nodes by name: grappler does not emit them in a fixed order."""
    return sorted((n.name, n.SerializeToString(deterministic=True)) for n in graph_def.node)
