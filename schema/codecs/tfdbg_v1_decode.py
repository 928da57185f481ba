"""Reading tfdbg_v1_tensors rows back: the dump Event bytes of each row, decoded against the
rows of its chain (the encoding is tfdbg_v1_codec.py's; every reader comes here)."""

import numpy as np

from ..errors import StoreDamageError
from ..tables.tfdbg_v1 import TFDBG_V1_TENSORS
from .tfdbg_v1_codec import MAX_ORDER, _order_key, occurrences, parse_codec
from .tfdbg_v1_words import _INT, _predict, _unzigzag


def decode_events(rows):
    """The dump Event bytes of each row (dicts with attempt, run_key, step, device, tag,
    timestamp, ext_timestamp, event and the format-3 columns), in row order. A row whose
    chain is incomplete in `rows` gets a StoreDamageError instead of bytes, naming what is
    missing; the other rows decode."""
    out = [None] * len(rows)
    coded = [i for i, r in enumerate(rows) if r.get("codec") is not None]
    for i, r in enumerate(rows):
        if r.get("codec") is None:
            out[i] = r["event"]
    occ = occurrences([((rows[i]["attempt"], rows[i]["run_key"], rows[i]["device"],
                         rows[i]["tag"]), _order_key(rows[i]["timestamp"],
                                                     rows[i]["ext_timestamp"]))
                       for i in coded])
    chains = {}
    for i, o in zip(coded, occ):
        r = rows[i]
        w, _order = parse_codec(r["codec"])
        chains.setdefault((r["attempt"], r["device"], r["tag"], o, w, r["chain_run"]),
                          []).append(i)
    for (_a, _d, _t, _o, w, _run), members in chains.items():
        members.sort(key=lambda i: rows[i]["chain_pos"])
        history, expect = [], 0
        for i in members:
            r = rows[i]
            _w, order = parse_codec(r["codec"])
            if r["chain_pos"] != expect or len(history) < order:
                out[i] = StoreDamageError(
                    f"debug tensor {r['tag']} of {r['run_key']} (step {r['step']}) is encoded "
                    f"against dump {r['chain_pos'] - 1} of its chain from {r['chain_run']} "
                    f"(step {r['chain_step']}), which is not in the store")
                history, expect = [], -1    # the rest of this chain cannot be decoded
                continue
            stored = _stored_words(r, w)
            words = stored if order == 0 else _unzigzag(stored, w) + _predict(
                *(history[::-1] + [None, None])[:3], order)
            words = words.astype(_INT[w], copy=False)
            history = (history + [words])[-MAX_ORDER:]
            expect += 1
            event, at = r["event"], r["content_at"]
            out[i] = event[:at] + words.tobytes() + event[at:]
    return out


def _stored_words(row, w):
    data = row["content"]
    if data is None or len(data) % w:
        raise StoreDamageError(f"debug tensor {row['tag']} of {row['run_key']}: codec "
                               f"{row['codec']} but {0 if data is None else len(data)} bytes "
                               f"of content")
    planes = np.frombuffer(data, np.uint8)
    return planes.reshape(w, -1).T.copy().view(_INT[w]).reshape(-1) if w > 1 else (
        planes.view(np.int8))


CODEC_COLUMNS = ["attempt", "run_key", "step", "device", "tag", "timestamp", "ext_timestamp",
                 "event", "content_at", "content", "codec", "chain_run", "chain_step",
                 "chain_pos"]


def read_debug_tensors(store, run_id, steps=None, columns=None):
    """A run's tfdbg_v1_tensors rows (dicts, sorted by step) with `event` decoded back to the
    Event bytes TF wrote, or a StoreDamageError where its chain is incomplete. With `steps`,
    the key frames and deltas before the range that its rows need are read too (at most
    KEY_EVERY dumps of each chain) and left out of the result."""
    wanted = list(columns) if columns is not None else TFDBG_V1_TENSORS.names
    cols = list(dict.fromkeys(wanted + CODEC_COLUMNS))
    rows = store.read(run_id, "tfdbg_v1_tensors", steps=steps, columns=cols).to_pylist()
    lo = steps[0] if steps is not None else None
    first = min((r["chain_step"] for r in rows if r["codec"] is not None), default=None)
    before = []
    if lo is not None and first is not None and first < lo:
        before = store.read(run_id, "tfdbg_v1_tensors", steps=(first, lo),
                            columns=cols).to_pylist()
    events = decode_events(before + rows)[len(before):]
    extra = [c for c in cols if c not in wanted]
    for r, event in zip(rows, events):
        r["event"] = event
        for c in extra:
            del r[c]
    return rows

