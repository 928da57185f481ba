"""Lossless encoding of dumped tensors against earlier dumps of the same watch (store format 3).

Consecutive dumped steps mostly hold the same weights and activations, a little changed. So a
tfdbg_v1_tensors row keeps the dump Event without its `tensor_content` payload (`event`, with
`content_at` the offset where the payload goes back in) and the payload as words of the
tensor's width w (8 for float64/int64, 4 for float32/int32, 2 for float16, else 1), encoded
(`codec`) and split into w byte planes (byte-stream split: the sign/exponent bytes of floats,
and the high bytes of small residuals, sit together) in `content`:

  key frame  ("w<w>o0")   the words as they are
  delta      ("w<w>o<k>") the words minus a prediction from the k (1..3) previous dumps of the
                          same chain (k=1: the last value; 2: linear; 3: quadratic
                          extrapolation), zigzagged; all in wrapping integer arithmetic on the
                          bit patterns, so exact on every machine, NaN included

Parquet then compresses `content` with zstd (segments.py).

A chain is the dumps of one (attempt, device, watch key, occurrence within the session.run)
with one payload size and steps that do not decrease; a key frame starts one every KEY_EVERY
dumps, so reading one step decodes at most KEY_EVERY rows of each chain. Rows carry
`chain_run`/`chain_step` (the run dir and step of their key frame: which rows a reader needs)
and `chain_pos` (0 at the key frame). A row with a null `codec` holds its Event whole
(string tensors, rows of format 2).

Measured on tools/bench_dump's 58-tensor graph (200 dumped steps, 65.5 MB of Events, zstd
level 2): raw 32.0 MB; byte planes alone 26.9; previous value, XOR 22.2, subtraction 19.1;
linear 15.2; quadratic 14.4 with chains of 16 dumps, 13.4 of 32. Parquet's own byte-stream
split on list<int32> words was 1.5% smaller but its list levels cost ~11 ns a word (0.8 s
of writer CPU for 70 M words, against 0.3 s for splitting each row here); zstd levels 1-3
came out alike on the planes.
"""

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ..errors import StoreDamageError
from ..formats import native
from ..formats.wire import span
from .rows import binary_array
from .tfdbg_v1_words import _INT, _joined, _stored, _transpose_into
from .word_buffers import WordBuffers

KEY_EVERY = 32          # dumps per chain between key frames: what one step's read may decode
MAX_ORDER = 3
HISTORY_BYTES = 256 << 20   # payload bytes kept for predictions (x3); past it, key frames only

_WIDTH = {"float64": 8, "int64": 8, "uint64": 8, "complex128": 8,
          "float32": 4, "int32": 4, "uint32": 4, "complex64": 4, "qint32": 4,
          "float16": 2, "bfloat16": 2, "int16": 2, "uint16": 2, "qint16": 2, "quint16": 2}
_WIDTH.update({name + "_ref": w for name, w in list(_WIDTH.items())})   # ref variables


def content_span(event):
    """(start, end) of Event.summary.value[0].tensor.tensor_content's payload, or None."""
    at = span(event, 0, len(event), 5)
    at = at and span(event, at[0], at[1], 1)
    at = at and span(event, at[0], at[1], 8)
    return at and span(event, at[0], at[1], 4)


def occurrences(keys):
    """For each (group, order) key, its rank among the keys of its group: the occurrence of a
    watch within one session.run (a loop dumps a node once per iteration)."""
    ranked = sorted(range(len(keys)), key=lambda i: keys[i])
    out, last, n = [0] * len(keys), None, 0
    for i in ranked:
        group = keys[i][0]
        n = n + 1 if group == last else 0
        out[i], last = n, group
    return out


def canonical_key(t):
    """The order in which an Encoder wants a session.run's tensors (TensorFile-like): by
    device, watch and time, so the same chains come in the same order run after run."""
    return (t.device_dir, t.node_name, t.output_slot, t.debug_op,
            *_order_key(t.timestamp, t.ext_timestamp))


def _order_key(timestamp, ext_timestamp):
    ext = ext_timestamp or ""
    return timestamp, int(ext.split("-", 1)[1]) if "-" in ext else 0


def parse_codec(codec):
    try:
        w, order = codec[1:].split("o")
        w, order = int(w), int(order)
        if codec[0] == "w" and w in _INT and 0 <= order <= MAX_ORDER:
            return w, order
    except ValueError:
        pass
    raise StoreDamageError(f"tfdbg_v1_tensors codec {codec!r} is unknown; expected "
                           f"w<width>o<order> (a newer tfblackbox wrote it?)")


# -- encoding (the recorder's ingest, import-dumps) ---------------------------------------------

class Encoder:
    """Keeps the last MAX_ORDER payloads of every chain of one attempt. encode() is called
    with each session.run's tensors in the order they are stored, into an EncodedRows that
    may collect several runs (their Arrow columns are built once). forget() after rows were
    not stored (a dropped job): later rows must not refer to them."""

    def __init__(self, key_every=KEY_EVERY, history_bytes=HISTORY_BYTES):
        self.key_every, self.history_bytes = key_every, history_bytes
        self._chains = {}     # chain -> [[words...], step, key run, key step, position]
        self._groups = {}     # width -> (the chains of the last call, its arrays)
        self._buffers = WordBuffers()
        self._contents = WordBuffers()   # content columns' data, once Arrow let go of them
        self._last = None     # the last call's layout (_Layout), for the next call's fast path

    def forget(self):
        self._chains, self._groups, self._last = {}, {}, None
        self._buffers.clear()
        self._contents.clear()

    def encode(self, out, step, run_key, tensors, tags, devices):
        """Appends the rows of one session.run's `tensors` (TensorFile-like: data, dtype,
        content, timestamp, ext_timestamp; sorted by canonical_key) to `out`."""
        if self._repeat(out, step, tensors, tags, devices):
            return
        self._last = None
        base = out.n
        occ, last, k = [0] * len(tensors), None, 0
        for i, watch in enumerate(zip(devices, tags)):   # sorted: repeats are adjacent
            k = k + 1 if watch == last else 0
            occ[i], last = k, watch
        by_width = {}
        chains, room, every = self._chains, self.history_bytes, self.key_every
        events, at, codecs, runs = out.events, out.at, out.codecs, out.runs
        csteps, cpos = out.csteps, out.cpos
        for i, t in enumerate(tensors):
            data = t.data
            start, end = t.content or content_span(data) or (0, 0)
            if start == end:
                events.append(data)
                at.append(None), codecs.append(None), runs.append(None)
                csteps.append(None), cpos.append(None)
                continue
            w = _WIDTH.get(t.dtype, 1)
            if (end - start) % w:
                w = 1
            chain = (devices[i], tags[i], occ[i], w, end - start)
            state = chains.get(chain)
            if state is None or state[1] > step or state[4] + 1 >= every:
                history, key_run, key_step, pos = [], run_key, step, 0
                if room < end - start:
                    history = None        # no room to remember it: key frames only
                state = None
            else:
                history, _s, key_run, key_step, pos = state
                pos += 1
            if history is None:
                chains.pop(chain, None)
            elif state is None:
                room -= end - start
                chains[chain] = state = [history, step, key_run, key_step, pos]
            else:   # one dump further: the chain's list updated, not made again (a list a
                room -= end - start   # tensor a step fed the collector's full collections)
                state[1], state[4] = step, pos
            order = min(len(history or ()), MAX_ORDER)
            rows = by_width.get(w)
            if rows is None:
                rows = by_width[w] = _WidthRows([], [], [], [], [], [])
            # parallel lists, not a tuple a tensor: each tuple (it holds the chain's state)
            # lived through the step and fed the collector's full collections
            rows.row.append(i), rows.start.append(start), rows.end.append(end)
            rows.order.append(order), rows.state.append(state), rows.chain.append(chain)
            events.append(b"".join((data[:start], data[end:])))   # data: bytes or a memoryview
            at.append(start), codecs.append(_CODECS[w][order]), runs.append(key_run)
            csteps.append(key_step), cpos.append(pos)
        # the content column's data buffer of this run, laid out row by row: each width's
        # planes are written in place (no row-sized pieces copied together afterwards)
        lengths = np.zeros(len(tensors), np.int64)
        for rows in by_width.values():
            lengths[rows.row] = np.subtract(rows.end, rows.start)
        offsets = np.zeros(len(tensors) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # pooled: page faults writing a fresh 25 MB buffer a step were ~3% of DumpHook's
        # CPU samples (perf, 2 509 tensors)
        data = self._contents.take(int(offsets[-1]))
        for w, rows in by_width.items():
            self._encode_width(w, rows, tensors, data, offsets)
        valid = [codec is not None for codec in codecs[base:]]
        out.content.append(_content_column(data, offsets, valid))
        out.n += len(tensors)
        self._last = _layout(tensors, tags, devices, by_width, offsets, valid, at[base:],
                             codecs[base:], runs[base:], csteps[base:])

    def _repeat(self, out, step, tensors, tags, devices):
        """encode() of a run laid out as the last one (the same watches, dtypes and content
        spans, in the same order) whose chains all go one dump further at the top order:
        every row's chain, width, order, codec and place are the last call's, so only the
        contents, the events and the positions are new. DumpHook's steady state: deciding
        row by row was ~2/3 of encode()'s Python at 2 509 tensors. Returns False, having
        changed nothing, where any row needs deciding."""
        last = self._last
        if last is None or tags != last.tags or devices != last.devices or [
                t.dtype for t in tensors] != last.dtypes or [
                t.content for t in tensors] != last.spans:
            return False
        every = self.key_every - 1
        states = last.states
        for state in states:
            if state[1] > step or state[4] >= every:   # a new chain or a key frame is due
                return False
        for state in states:
            state[1] = step
            state[4] += 1
        events = out.events
        for t, (start, end) in zip(tensors, last.spans):
            data = t.data
            events.append(b"".join((data[:start], data[end:])) if start != end else data)
        out.at += last.at
        out.codecs += last.codecs
        out.runs += last.runs
        out.csteps += last.csteps
        out.cpos += [state and state[4] for state in last.row_states]
        offsets = last.offsets
        data = self._contents.take(int(offsets[-1]))
        for w, rows in last.by_width.items():
            self._encode_width(w, rows, tensors, data, offsets)
        out.content.append(_content_column(data, offsets, last.valid))
        out.n += len(tensors)
        return True

    def _encode_width(self, w, rows, tensors, data, offsets):
        """The content (stored words as byte planes) of every row of width w in one go,
        written into `data` at the rows' `offsets`; updates their histories. In the steady
        state (the same chains as last time, each one dump further) the predictions come
        from the previous calls' arrays whole, with no per-row copies. The compiled
        codec_planes does the arithmetic and the planes in one pass; the numpy below is its
        twin."""
        sizes = np.subtract(rows.end, rows.start) // w
        nat = native.module()
        if nat is not None:   # the rows' data whole and their spans: no slice object a row
            views = [tensors[r].data for r in rows.row]
            spans = np.empty((len(views), 2), np.int64)
            spans[:, 0], spans[:, 1] = rows.start, rows.end
        else:
            views = [memoryview(tensors[r].data)[a:b]
                     for r, a, b in zip(rows.row, rows.start, rows.end)]
        # an array of an earlier step no history refers to any more (word_buffers.py)
        gathered = self._buffers.take(int(sizes.sum()) * w) if nat is not None else None
        cur = (gathered.view(_INT[w]) if nat is not None
               else np.frombuffer(b"".join(views), _INT[w]))
        orders, states = rows.order, rows.state
        signature = [state is not None and chain for state, chain in zip(states, rows.chain)]
        last = self._groups.get(w)
        group = [] if last is None or last[0] != signature or 0 in orders else last[1]
        top = max(orders)
        steady = top == 0 or (len(group) >= top and orders.count(top) == len(orders))
        if top == 0:
            hist = [None, None, None]
        elif steady:
            hist = (group[::-1] + [None, None])[:3]
        else:
            hist = [_joined([st[0][-k] if st and len(st[0]) >= k else None
                             for st in states], sizes, w) for k in (1, 2, 3)[:top]]
            hist += [None] * (3 - len(hist))
        places = offsets[rows.row]
        if nat is not None:   # gathers the views into cur as it goes
            nat.codec_planes(views, *hist[:top], *[None] * (3 - top), bytes(orders), w,
                             gathered, data, places, spans)
        else:
            _transpose_into(_stored(cur, hist, orders, sizes, top, steady, w), sizes, w, data,
                            places)
        at = 0
        for state, size in zip(states, sizes.tolist()):
            history = state and state[0]
            if history is not None:
                history.append(cur[at:at + size])
                if len(history) > MAX_ORDER:
                    del history[0]
            at += size
        self._groups[w] = (signature, (group + [cur])[-MAX_ORDER:])


def _layout(tensors, tags, devices, by_width, offsets, valid, at, codecs, runs, csteps):
    """The _Layout of an encode() call, or None where a next call could not repeat it: a
    content span unknown (files), a row's chain not remembered, an order below the top."""
    spans = [t.content for t in tensors]
    if None in spans:
        return None
    row_states = [None] * len(tensors)
    for rows in by_width.values():
        if None in rows.state or any(order != MAX_ORDER for order in rows.order):
            return None
        for row, state in zip(rows.row, rows.state):
            row_states[row] = state
    return _Layout(tags, devices, [t.dtype for t in tensors], spans, by_width, offsets, valid,
                   at, codecs, runs, csteps, row_states,
                   [state for state in row_states if state is not None])


class _Layout(NamedTuple):
    """What an encode() call decided row by row, kept for the next call (Encoder._repeat)."""
    tags: list
    devices: list
    dtypes: list
    spans: list       # each tensor's content span as given (t.content)
    by_width: dict    # width -> _WidthRows
    offsets: object   # the content column's offsets (numpy int64)
    valid: list       # rows with a codec
    at: list
    codecs: list
    runs: list
    csteps: list
    row_states: list  # each row's chain state (None: no content)
    states: list      # the chains' states


class _WidthRows(NamedTuple):
    """The rows of one width in an encode() call, as parallel lists."""
    row: list      # position in the run's tensors
    start: list    # content span in the tensor's data
    end: list
    order: list    # prediction order
    state: list    # the chain's state list, None when it is not remembered
    chain: list    # the chain's key


class EncodedRows:
    """The format-3 columns of the rows encode() appended, built into Arrow once."""

    def __init__(self):
        self.n = 0
        self.events, self.at, self.codecs, self.runs, self.csteps, self.cpos = (
            [], [], [], [], [], [])
        self.content = []   # a binary column a run (encode() call)

    def columns(self):
        return {"event": binary_array(self.events),
                "content_at": pa.array(self.at, pa.int32()),
                "codec": pa.array(self.codecs, pa.string()),
                "content": _one_column(self.content),
                "chain_run": pa.array(self.runs, pa.string()),
                "chain_step": pa.array(self.csteps, pa.int64()),
                "chain_pos": pa.array(self.cpos, pa.int32())}


_CODECS = {w: [f"w{w}o{order}" for order in range(MAX_ORDER + 1)] for w in _INT}
OFFSETS_LIMIT = 1 << 31   # a binary column's int32 offsets


def _one_column(parts):
    """The runs' content columns as one (chunked where there are several)."""
    if len(parts) == 1:
        return parts[0]
    return pa.chunked_array([c for p in parts for c in (
        p.chunks if isinstance(p, pa.ChunkedArray) else [p])], pa.binary())


def _content_column(data, offsets, valid):
    """One run's content as a binary column over `data` (nulls where no codec applies)."""
    if offsets[-1] >= OFFSETS_LIMIT:   # past int32 offsets: pyarrow cuts them into chunks
        return binary_array([bytes(data[a:b]) if v else None
                             for a, b, v in zip(offsets[:-1], offsets[1:], valid)])
    valid = np.array(valid, bool)
    bitmap = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.binary(), len(valid), [
        bitmap, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)],
        null_count=int((~valid).sum()))
