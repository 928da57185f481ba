"""The tfdbg_v1_tensors encoding (schema/tfdbg_v1_codec.py): lossless byte for byte on awkward data,
a single step read back through its chain, a damaged chain reported, not guessed. Rows go
through a real store (Parquet segments, the catalog) as DumpHook's writer puts them there."""

import struct

import numpy as np
import pytest

from tfblackbox.schema import Store
from tfblackbox.schema.codecs import rows, tfdbg_v1_codec, tfdbg_v1_decode, tfdbg_v1_rows
from tfblackbox.schema.formats import native, tfdbg_v1_layout as layout
from tfblackbox.schema.formats.wire import encode_varint, length_delimited

DEVICE = "/job:localhost/replica:0/task:0/device:CPU:0"
DTYPES = {"float32": 1, "float64": 2, "int32": 3, "int64": 9, "bool": 10, "float16": 19,
          "string": 7}


def event(wall, node, dtype, shape, content=None, strings=None):
    """A dump Event as tfdbg writes it: wall_time, summary.value[0] with tag, node_name and
    the tensor (dtype, shape, tensor_content or string_val)."""
    dims = b"".join(length_delimited(2, b"\x08" + encode_varint(d)) for d in shape)
    tensor = b"\x08" + encode_varint(DTYPES[dtype]) + length_delimited(2, dims)
    if content is not None:
        tensor += length_delimited(4, content)
    for s in strings or ():
        tensor += length_delimited(8, s)
    value = (length_delimited(1, node.encode()) +
             length_delimited(7, f"{node}:0:DebugIdentity".encode()) + length_delimited(8, tensor))
    return b"\x09" + struct.pack("<d", wall) + length_delimited(5, length_delimited(1, value))


def tensors_of_step(step, rng, micros):
    """One session.run's dumps: weights drifting step by step, noise, specials (NaN, inf,
    -0.0, denormals, int extremes), a node dumped 3 times (a loop), sizes that change, a
    float16, bools, a string and an empty tensor."""
    w = (np.linspace(-1, 1, 300, dtype=np.float32) * (1 + 0.001 * step)).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, -1e-40, 3.4e38, step],
                       np.float32)
    ints = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, -step, step * 7], np.int64)
    out = [("dense/kernel/read", "float32", [300], w.tobytes()),
           ("noise", "float32", [64], rng.standard_normal(64).astype(np.float32).tobytes()),
           ("special", "float32", [8], special.tobytes()),
           ("ints", "int64", [4], ints.tobytes()),
           ("half", "float16", [10], (np.arange(10) * step).astype(np.float16).tobytes()),
           ("flags", "bool", [5], bytes([step % 2, 1, 0, 1, step % 3 == 0])),
           ("grow", "float64", [step % 3 + 1], np.arange(step % 3 + 1, dtype=np.float64)
            .tobytes()),
           ("odd", "int32", [3], b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"),  # 11 bytes
           ("empty", "float32", [0], None)]
    files = []
    for node, dtype, shape, content in out:
        data = event(micros, node, dtype, shape, content)
        files.append(layout.TensorFile(layout.device_dir(DEVICE), node, 0, "DebugIdentity",
                                       micros, str(micros), data))
    for k in range(3):     # a loop body dumped once per iteration, in the same microsecond
        data = event(micros + 1, "loop/body", "float32", [4],
                     np.full(4, k + step, np.float32).tobytes())
        files.append(layout.TensorFile(layout.device_dir(DEVICE), "loop/body", 0,
                                       "DebugIdentity", micros + 1,
                                       f"{micros + 1}-{k}" if k else str(micros + 1), data))
    files.append(layout.TensorFile(layout.device_dir(DEVICE), "words", 0, "DebugIdentity",
                                   micros + 2, str(micros + 2),
                                   event(micros + 2, "words", "string", [2],
                                         strings=[b"a", str(step).encode()])))
    rng.shuffle(files)     # the capture's order is the threads' order, not the watches'
    return files


def record(tmp_path, steps, key_every=4):
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r")
    writer, attempt = store.begin_attempt("r")
    encoder = tfdbg_v1_codec.Encoder(key_every=key_every)
    rng = np.random.default_rng(3)
    originals = {}
    for step in steps:
        run_key = f"run_{1000 + step}_{step}"
        files = tensors_of_step(step, rng, 1_700_000_000_000_000 + 10 * step)
        for t in files:
            originals[(run_key, t.node_name, t.ext_timestamp)] = t.data
        buffers = rows.ColumnBuffers(attempt)
        buffers.add_table("tfdbg_v1_tensors", tfdbg_v1_rows.debug_tensor_table(
            step, run_key, files, layout.device_name_from_dir, encoder))
        for name, table in buffers.take().items():   # a segment per step, as small flushes do
            store.write_segment("r", name, table, writer)
    return store, originals


def decoded(store, steps=None):
    got = {}
    for r in tfdbg_v1_decode.read_debug_tensors(store, "r", steps, [
            "step", "run_key", "node_name", "timestamp", "ext_timestamp", "event", "codec"]):
        ext = r["ext_timestamp"] or str(r["timestamp"])
        got[(r["run_key"], r["node_name"], ext)] = r["event"]
    return got


@pytest.fixture(params=["compiled", "pure"])
def codec_path(request, monkeypatch):
    """Each test below once with the compiled codec_planes and once with its numpy twin."""
    if request.param == "compiled" and not native.available():
        pytest.fail("the compiled extension is not built (pip install -e . with a C compiler)")
    monkeypatch.setenv("TFBLACKBOX_PURE_PYTHON", "1" if request.param == "pure" else "0")
    return request.param


def test_every_event_comes_back_byte_for_byte(tmp_path, codec_path):
    steps = list(range(11))
    store, originals = record(tmp_path, steps)
    table = store.read("r", "tfdbg_v1_tensors", columns=["codec", "chain_pos", "step"])
    codecs = set(table["codec"].to_pylist())
    # key frames, first-, second- and third-order deltas of widths 1, 2, 4 and 8; strings
    # and the empty tensor kept whole
    assert {"w4o0", "w4o1", "w4o2", "w4o3", "w8o3", "w2o3", "w1o3", None} <= codecs
    assert max(p for p in table["chain_pos"].to_pylist() if p is not None) == 3   # key_every=4
    got = decoded(store)
    assert got.keys() == originals.keys()
    for key, data in originals.items():
        assert got[key] == data, key


@pytest.mark.parametrize("step", [0, 3, 4, 6, 10])
def test_a_single_step_reads_back_through_its_chain(tmp_path, step, codec_path):
    store, originals = record(tmp_path, list(range(11)))
    got = decoded(store, (step, step + 1))
    want = {k: v for k, v in originals.items() if k[0].endswith(f"_{step}")}
    assert got == want


def test_drifting_weights_leave_small_residuals(tmp_path):
    store, originals = record(tmp_path, list(range(40)), key_every=tfdbg_v1_codec.KEY_EVERY)
    raw = store.read("r", "tfdbg_v1_tensors", columns=["content", "chain_pos", "node_name"])
    drifting = [v for k, v in originals.items() if k[1] == "dense/kernel/read"]
    # content: the int32 words in 4 byte planes
    stored = [(np.frombuffer(c, np.uint8).reshape(4, -1).T.copy().view(np.int32).ravel(), p)
              for c, p, n in zip(raw["content"].to_pylist(), raw["chain_pos"].to_pylist(),
                                 raw["node_name"].to_pylist()) if n == "dense/kernel/read"]
    assert len(stored) == len(drifting) == 40
    # a key frame holds the float bits (large); a quadratic prediction of values scaled a
    # little more each step leaves a few low bits, except where a value crosses a power of 2
    deltas = np.abs(np.array([w for w, p in stored if p >= 3], np.int64))
    keys = np.abs(np.array([w for w, p in stored if p == 0], np.int64))
    assert np.quantile(deltas, 0.9) < 1 << 8 and np.median(keys) > 1 << 28


def test_a_step_decreasing_or_repeated_starts_a_new_chain(tmp_path):
    """Two threads' runs at one step, and a step lower than the last (a resumed loop): every
    row still decodes, and a chain's steps never go down."""
    steps = [0, 1, 2, 2, 1, 3, 4]
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r")
    writer, attempt = store.begin_attempt("r")
    encoder = tfdbg_v1_codec.Encoder(key_every=8)
    rng = np.random.default_rng(5)
    originals = {}
    buffers = rows.ColumnBuffers(attempt)
    for n, step in enumerate(steps):
        run_key = f"run_{2000 + n}_{n}"
        files = tensors_of_step(step, rng, 1_700_000_000_000_000 + 10 * n)
        originals.update({(run_key, t.node_name, t.ext_timestamp): t.data for t in files})
        buffers.add_table("tfdbg_v1_tensors", tfdbg_v1_rows.debug_tensor_table(
            step, run_key, files, layout.device_name_from_dir, encoder))
    for name, table in buffers.take().items():
        store.write_segment("r", name, table, writer)
    assert decoded(store) == originals
    assert decoded(store, (1, 2)) == {k: v for k, v in originals.items()
                                      if k[0] in ("run_2001_1", "run_2004_4")}


def test_a_missing_link_is_reported_not_guessed(tmp_path):
    store, originals = record(tmp_path, list(range(6)), key_every=8)
    rows_ = tfdbg_v1_decode.read_debug_tensors(store, "r")
    # lose step 2's rows: steps 3.. of each chain cannot be rebuilt, 0 and 1 still can
    kept = [r for r in rows_ if r["step"] != 2]
    raw = store.read("r", "tfdbg_v1_tensors").to_pylist()
    raw = [r for r in raw if r["step"] != 2]
    events = tfdbg_v1_decode.decode_events(raw)
    damaged = set()
    for r, e in zip(raw, events):
        ext = r["ext_timestamp"] or str(r["timestamp"])
        key = (r["run_key"], r["node_name"], ext)
        if r["codec"] is None or r["step"] < 2:
            assert e == originals[key]
        elif isinstance(e, tfdbg_v1_codec.StoreDamageError):    # never a wrong value
            assert "not in the store" in str(e) and r["tag"] in str(e)
            damaged.add(r["node_name"])
        else:      # a chain that did not pass through step 2 ("grow" changes size)
            assert e == originals[key] and r["node_name"] == "grow"
    assert {"dense/kernel/read", "noise", "loop/body", "ints", "half"} <= damaged
    assert len(kept) < len(rows_)


def _encoded_steps(monkeypatch, pure, steps):
    """The tfdbg_v1_tensors tables of `steps` through one Encoder, on one path; a 6 MB tensor
    at step 2 takes the joins past rows.JOIN_IN_NUMPY."""
    monkeypatch.setenv("TFBLACKBOX_PURE_PYTHON", "1" if pure else "0")
    encoder, rng, tables = tfdbg_v1_codec.Encoder(key_every=4), np.random.default_rng(3), []
    big = np.random.default_rng(5).standard_normal(1_500_000).astype(np.float32)
    for i, step in enumerate(steps):
        micros = 1_700_000_000_000_000 + 10 * i
        files = tensors_of_step(step, rng, micros)
        if step == 2:
            files.append(layout.TensorFile(
                layout.device_dir(DEVICE), "big", 0, "DebugIdentity", micros + 3,
                str(micros + 3), event(micros + 3, "big", "float32", [big.size],
                                       (big * (1 + i)).tobytes())))
        tables.append(tfdbg_v1_rows.debug_tensor_table(
            step, f"run_{i}_{step}", files, layout.device_name_from_dir, encoder))
    return tables


def test_the_compiled_codec_stores_what_its_numpy_twin_stores(monkeypatch):
    """Same rows, byte for byte: key frames, the steady state (every chain one dump further),
    mixed orders after a step goes back or a size changes, widths 1 to 8."""
    if not native.available():
        pytest.fail("the compiled extension is not built (pip install -e . with a C compiler)")
    steps = list(range(8)) + [3, 3, 9, 10, 11, 12, 2]
    compiled = _encoded_steps(monkeypatch, False, steps)
    pure = _encoded_steps(monkeypatch, True, steps)
    # a run's content past int32 offsets goes through binary_array (here: past 1 KB)
    monkeypatch.setattr(tfdbg_v1_codec, "OFFSETS_LIMIT", 1000)
    split = _encoded_steps(monkeypatch, False, steps)
    codecs = set()
    for c, p, s in zip(compiled, pure, split):
        assert c.equals(p) and s.equals(c)
        codecs |= set(c["codec"].to_pylist())
    assert {"w4o0", "w4o1", "w4o2", "w4o3", "w8o3", "w2o3", "w1o3"} <= codecs


def test_codec_planes_refuses_what_does_not_add_up():
    nat = native.module() if native.available() else None
    if nat is None:
        pytest.fail("the compiled extension is not built (pip install -e . with a C compiler)")
    words = [b"\x01\x00\x00\x00" * 3, b"\x02\x00\x00\x00"]
    h1 = np.zeros(16, np.uint8)
    cur, out = np.empty(16, np.uint8), np.full(20, 9, np.uint8)
    at = np.array([0, 16], np.int64)    # row 1 after a 4-byte gap (another width's row)
    nat.codec_planes(words, h1, None, None, bytes([1, 0]), 4, cur, out, at)
    # row 0: 1 - 0 zigzagged is 2, in 4 planes of 3 bytes; row 1 (order 0): its word as is
    assert out.tolist() == [2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0] + [9] * 4 + [2, 0, 0, 0]
    assert cur.view(np.int32).tolist() == [1, 1, 1, 2]
    for args, message in [
            ((words, None, None, None, bytes([1, 0]), 4, cur, out, at), "order-1 row needs"),
            ((words, h1, None, None, bytes([1]), 4, cur, out, at), "not an order, a place"),
            ((words, h1, None, None, bytes([1, 0]), 4, cur, out, at[:1]),
             r"a place \(and a span\) a row"),
            ((words, h1, None, None, bytes([1, 0]), 3, cur, out, at), "bad width"),
            ((words, h1, None, None, bytes([1, 4]), 4, cur, out, at), "row 1 has 4 bytes"),
            ((words, h1, None, None, bytes([1, 0]), 8, cur, out, at), "row 0 has 12 bytes"),
            ((words, h1, None, None, bytes([1, 0]), 4, cur, out, at + 2), "row 1's place 18"),
            ((words, h1, None, None, bytes([1, 0]), 4, cur[:8], out, at), "as long as the rows"),
            ((words, h1[:8], None, None, bytes([1, 0]), 4, cur, out, at), "history is not")]:
        with pytest.raises(ValueError, match=message):
            nat.codec_planes(*args)
    # with spans, each row is its view's [start:end]: the same planes, no slices made
    whole = [b"\xff" * 4 + words[0] + b"\xee", b"\xdd" * 2 + words[1]]
    spans = np.array([[4, 16], [2, 6]], np.int64)
    out2, cur2 = np.full(20, 9, np.uint8), np.empty(16, np.uint8)
    nat.codec_planes(whole, h1, None, None, bytes([1, 0]), 4, cur2, out2, at, spans)
    assert out2.tolist() == out.tolist() and cur2.tolist() == cur.tolist()
    for bad, message in [(np.array([[4, 18], [2, 6]], np.int64), "row 0's span 4..18"),
                         (np.array([[4, 16], [3, 2]], np.int64), "row 1's span 3..2"),
                         (np.array([[4, 16]], np.int64), r"\(and a span\) a row")]:
        with pytest.raises(ValueError, match=message):
            nat.codec_planes(whole, h1, None, None, bytes([1, 0]), 4, cur2, out2, at, bad)


def test_a_word_array_is_used_again_only_once_nothing_refers_to_it():
    from tfblackbox.schema.codecs.word_buffers import MAX_FREE, POOLED, SPARES, WordBuffers
    pool = WordBuffers()
    big = POOLED * 4
    first = pool.take(big)
    history = first.view(np.int32)[4:8]           # a chain's history: a view of a view
    del first
    second = pool.take(big)
    assert not np.shares_memory(second, history)  # still referred to: a new array
    address = history.base.ctypes.data
    del history
    third = pool.take(big)                        # the first array, free again
    assert third.ctypes.data == address
    assert pool.take(POOLED).nbytes == POOLED     # another size: a new one
    held = [pool.take(big) for _ in range(SPARES + 1)]   # 5 lent at once
    del second, third, held
    pool.take(POOLED * 2)
    # as many of a size as were lent at once
    assert sum(a.nbytes == big for a in pool._free) == SPARES + 3
    for n in range(MAX_FREE + 2):
        pool.take(POOLED * (10 + n))
    pool.take(POOLED * 2)
    assert len(pool._free) <= MAX_FREE


def test_a_burst_of_buffers_handed_back_is_kept_for_the_next_burst():
    """The writer hands content buffers back several at once: each is used again, none is
    made afresh (keeping two made the rest of every burst new arrays, 20 of 80 in a
    tools/bench_dump run)."""
    from tfblackbox.schema.codecs.word_buffers import POOLED, SPARES, WordBuffers
    pool = WordBuffers()
    big = POOLED * 4
    burst = [pool.take(big) for _ in range(SPARES + 3)]
    addresses = {a.ctypes.data for a in burst}
    for _round in range(3):
        del burst
        burst = [pool.take(big) for _ in range(SPARES + 3)]
        assert {a.ctypes.data for a in burst} == addresses
    del burst
    pool.take(POOLED)
    assert len(pool._free) == SPARES + 3        # idle: what the busiest moment needed


def test_a_steps_arrays_of_several_sizes_each_come_back():
    """A step takes one array a width (22 MB of floats, 34 kB of int64s, ...): the small ones
    must not push the large one out of the spares (it was made afresh every step)."""
    from tfblackbox.schema.codecs.word_buffers import POOLED, WordBuffers
    pool = WordBuffers()
    sizes = [POOLED * 8, POOLED, POOLED * 2, 16]
    addresses = None
    for _step in range(4):
        arrays = [pool.take(n) for n in sizes]
        got = [a.ctypes.data for a in arrays[:3]]
        if addresses is not None:
            assert got == addresses               # every pooled size: last step's array
        addresses = got
        del arrays


def test_a_content_buffer_arrow_still_holds_is_not_handed_out():
    import pyarrow as pa
    from tfblackbox.schema.codecs.word_buffers import POOLED, WordBuffers
    pool = WordBuffers()
    data = pool.take(POOLED)
    data[:] = 7
    column = pa.Array.from_buffers(pa.binary(), 1, [
        None, pa.py_buffer(np.array([0, POOLED], np.int32)), pa.py_buffer(data)])
    del data
    again = pool.take(POOLED)                     # the writer has not stored the rows yet
    again[:] = 1
    assert column[0].as_py() == bytes([7]) * POOLED
    address = np.frombuffer(column.buffers()[2], np.uint8).ctypes.data
    del column
    assert pool.take(POOLED).ctypes.data == address


def _steady_tensors(step, micros, shape_of_kernel=300):
    """One run as the in-memory capture gives it (content spans known): the same watches,
    dtypes and sizes every step (widths 1, 2, 4 and 8, an empty tensor, a string, a loop
    node dumped three times), the values drifting; `shape_of_kernel` changes one size."""
    w = (np.linspace(-1, 1, shape_of_kernel, dtype=np.float32) * (1 + 0.01 * step))
    out = [("dense/kernel/read", "float32", [shape_of_kernel], w.astype(np.float32).tobytes()),
           ("ints", "int64", [4], np.array([-step, step * 7, 3, 2 ** 60], np.int64).tobytes()),
           ("half", "float16", [10], (np.arange(10) * step).astype(np.float16).tobytes()),
           ("flags", "bool", [5], bytes([step % 2, 1, 0, 1, step % 3 == 0])),
           ("empty", "float32", [0], None)]
    files = []
    for node, dtype, shape, content in out:
        files.append((node, micros, str(micros), event(micros, node, dtype, shape, content)))
    for k in range(3):
        files.append(("loop/body", micros + 1, f"{micros + 1}-{k}" if k else str(micros + 1),
                      event(micros + 1, "loop/body", "float32", [4],
                            np.full(4, k + step, np.float32).tobytes())))
    files.append(("words", micros + 2, str(micros + 2), event(
        micros + 2, "words", "string", [2], strings=[b"a", str(step).encode()])))
    dtypes = {"dense/kernel/read": "float32", "ints": "int64", "half": "float16",
              "flags": "bool", "empty": "float32", "loop/body": "float32", "words": "string"}
    return [layout.TensorFile(layout.device_dir(DEVICE), node, 0, "DebugIdentity", ts, ext,
                              data, DEVICE, dtypes[node], None,
                              tfdbg_v1_codec.content_span(data) or (0, 0))
            for node, ts, ext, data in files]


def test_a_run_laid_out_as_the_last_is_encoded_as_the_row_by_row_path_would(codec_path):
    """Encoder's repeat of the last run's layout (DumpHook's steady state) gives the very rows
    deciding each row gives: through key frames (key_every), a step going back, a size that
    changes and comes back, a forget()."""
    steps = list(range(14)) + [5, 6, 7, 8, 9] + list(range(20, 30))
    kernel = {16: 200, 17: 200}             # two runs with another size, then the old one
    tables, repeated = {}, {}
    for fast in (True, False):
        encoder = tfdbg_v1_codec.Encoder(key_every=8)
        if not fast:
            encoder._repeat = lambda *args: False
        else:
            real = encoder._repeat

            def counted(*args, real=real):
                took = real(*args)
                repeated[len(repeated)] = took
                return took
            encoder._repeat = counted
        out = []
        for i, step in enumerate(steps):
            if i == 24:
                encoder.forget()
            files = _steady_tensors(step, 1_700_000_000_000_000 + 10 * i, kernel.get(i, 300))
            out.append(tfdbg_v1_rows.debug_tensor_table(
                step, f"run_{i}_{step}", files, layout.device_name_from_dir, encoder))
        tables[fast] = out
    for i, (fast, slow) in enumerate(zip(tables[True], tables[False])):
        assert fast.equals(slow), i
    took = [repeated[i] for i in range(len(steps))]
    # decided row by row: the first four runs (a key frame, then orders 1-3), each key frame
    # (every 8th dump of a chain) and the three runs after it, the step going back (run 14),
    # the size changing and coming back (16, 18), forget() (24); repeated in between
    assert took == [False] * 4 + [True] * 4 + [False] * 4 + [True] * 2 + [False] * 6 + [
        True] * 2 + [False] * 6 + [True]
    repeated_codecs = tables[True][6]["codec"].to_pylist()   # a repeated run: every width
    assert set(repeated_codecs) == {"w4o3", "w8o3", "w2o3", "w1o3", None}
