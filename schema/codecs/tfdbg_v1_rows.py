"""The rows of tfdbg v1 dumps: tfdbg_v1_tensors (one per dumped tensor), tfdbg_v1_runs (one per
session.run) and tfdbg_v1_graphs (one per distinct partition graph)."""

import numpy as np
import pyarrow as pa

from ..tables.tfdbg_v1 import TFDBG_V1_TENSORS
from ..formats import tfdbg_v1
from .rows import binary_array, int64_lists
from .tfdbg_v1_codec import EncodedRows, canonical_key

DEBUG_TENSOR_COLUMNS = ["step", "wall_time", "tag", "run_key", "device", "node_name",
                        "output_slot", "debug_op", "timestamp", "ext_timestamp", "dtype",
                        "shape", "event", "content_at", "codec", "content", "chain_run",
                        "chain_step", "chain_pos"]


_CODEC_FIELDS = [TFDBG_V1_TENSORS.field(name) for name in DEBUG_TENSOR_COLUMNS[13:]]


def debug_tensor_table(step, run_key, tensors, device_of, encoder=None):
    """The tfdbg_v1_tensors rows of one session.run as a pa.Table (no attempt column: the
    buffers add it), from TensorFile-like objects; built in one go because converting the
    Event bytes value by value cost as much as reading the files. `device_of(device_dir)`
    gives the device name. dtype and shape come from the object when it knows them (the
    in-memory capture), else from the Event. With a dump_codec.Encoder the tensor contents
    are encoded against the encoder's earlier runs (this run must then be stored, or the
    encoder told to forget()); without one the Events are kept whole."""
    return debug_tensor_runs([(step, run_key, tensors)], device_of, encoder)


def debug_tensor_runs(runs, device_of, encoder=None):
    """debug_tensor_table of several session.runs, [(step, run_key, tensors)], in one table
    (the recorder ingests what queued up together: Arrow's fixed costs paid once)."""
    coded = None
    if encoder is not None:
        coded = EncodedRows()
    tags, devices, nodes, slots, ops, stamps, exts, dtypes, shapes = (
        [], [], [], [], [], [], [], [], [])
    steps, keys, datas = [], [], []
    for step, run_key, tensors in runs:
        if coded is not None:
            tensors = sorted(tensors, key=canonical_key)
        first = len(tags)
        for t in tensors:
            if t.dtype is None:      # the files capture: from the Event
                t.dtype, t.shape = tfdbg_v1.tensor_info(t.data)
        # column by column, not nine appends a tensor, and a device's name once a run
        run_nodes = [t.node_name for t in tensors]
        run_slots = [t.output_slot for t in tensors]
        run_ops = [t.debug_op for t in tensors]
        tags += [f"{n}:{k}:{o}" for n, k, o in zip(run_nodes, run_slots, run_ops)]
        dirs = [t.device_dir for t in tensors]
        names = {d: device_of(d) for d in set(dirs)}
        devices += [names[d] for d in dirs]
        nodes += run_nodes
        slots += run_slots
        ops += run_ops
        stamps += [t.timestamp for t in tensors]
        exts += [None if t.ext_timestamp == str(t.timestamp) else t.ext_timestamp
                 for t in tensors]
        dtypes += [t.dtype for t in tensors]
        shapes += [t.shape for t in tensors]
        steps.append((step, len(tensors)))
        keys.append((run_key, len(tensors)))
        if coded is not None:
            encoder.encode(coded, step, run_key, tensors, tags[first:], devices[first:])
        else:
            datas.extend(t.data for t in tensors)
    n = len(tags)
    stamps = np.array(stamps, np.int64)
    if coded is None:
        events = binary_array(datas)
        codec_columns = [pa.nulls(n, f.type) for f in _CODEC_FIELDS]
    else:
        columns = coded.columns()
        events = columns["event"]
        codec_columns = [columns[f.name] for f in _CODEC_FIELDS]
    return pa.Table.from_arrays([
        pa.array(np.repeat([s for s, _n in steps], [k for _s, k in steps]).astype(np.int64)),
        pa.array(stamps / 1e6), pa.array(tags, pa.string()),
        pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(len(keys), dtype=np.int32), [k for _r, k in keys])),
            pa.array([r for r, _k in keys], pa.string())).cast(pa.string()),
        pa.array(devices, pa.string()), pa.array(nodes, pa.string()),
        pa.array(slots, pa.int32()), pa.array(ops, pa.string()), pa.array(stamps),
        pa.array(exts, pa.string()), pa.array(dtypes, pa.string()),
        int64_lists(shapes), events, *codec_columns,
    ], names=DEBUG_TENSOR_COLUMNS)


def debug_run_row(step, wall_time, run_key, session_run, status, source, core_metadata_name,
                  core_metadata, fetches_info, feed_keys_info, devices, graphs, tensors):
    """The tfdbg_v1_runs row of one session.run. `graphs`: (device, graph hash, timestamp
    micros, Event wall time, raw Event bytes or None) per device that ran one, in device-dir
    order; raw bytes only where the graph file would not be rebuilt byte for byte."""
    raws = [g[4] for g in graphs]
    return dict(
        step=step, wall_time=wall_time, tag=run_key, run_key=run_key, session_run=session_run,
        status=status, source=source, core_metadata_name=core_metadata_name,
        core_metadata=core_metadata, fetches_info=fetches_info, feed_keys_info=feed_keys_info,
        devices=devices, graph_devices=[g[0] for g in graphs],
        graph_hashes=[g[1] for g in graphs], graph_timestamps=[g[2] for g in graphs],
        graph_wall_times=[g[3] for g in graphs],
        graph_events=raws if any(r is not None for r in raws) else None,
        tensor_count=len(tensors), tensor_bytes=sum(len(t.data) for t in tensors))


def debug_graph_row(step, device, graph_hash, timestamp, event_wall_time, graph_def):
    """A tfdbg_v1_graphs row: one distinct partition graph of one device."""
    return dict(step=step, wall_time=timestamp / 1e6, tag=device, device=device,
                graph_hash=graph_hash, timestamp=timestamp, event_wall_time=event_wall_time,
                graph_def=graph_def)
