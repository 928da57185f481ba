"""Issue 23, the writer's side of a full disk (no TensorFlow): when space returns the metric
tables are written before bulk ones, bulk tables leave the disk's last 1% (at least 4 MiB)
to the metrics and write what fits of what they hold; the memory held for unwritten rows
stays within max_unwritten_bytes, bulk rows past it go oldest first and metric rows last,
every drop counted per table in the catalog; a dumped step goes whole, with the rows encoded
against it (held.py)."""

import os

import pyarrow as pa
import pytest

from tfblackbox import recorder
from tfblackbox.recorder.held import Held
from tfblackbox.recorder.writer import Writer
from tfblackbox.schema import Store, WriterError, verify
from tfblackbox.schema.tables import schema_of

MiB = 1 << 20


def add_scalars(steps):
    def job(buffers):
        for s in steps:
            buffers.add("scalars", step=s, wall_time=float(s), tag="loss", value=float(s))
    return job


def add_tensor(step, nbytes):
    """One `tensors` row (a bulk table: media and kept tensors) of random, incompressible
    bytes."""
    data = os.urandom(nbytes)

    def job(buffers):
        buffers.add("tensors", step=step, wall_time=float(step), tag="blob", dtype="string",
                    shape=[], plugin_name="", tensor=data)
    return job


def submit(w, job, nbytes=0):
    """As Run.submit does: a write failure raised by the writer's next call is reported
    (here: ignored) and the job queued all the same."""
    try:
        return w.submit(job, nbytes)
    except WriterError:
        return w.submit(job, nbytes)


def writer_on(fs, **options):
    store = Store.create(str(fs / "store"))
    store.create_run("r")
    wid, attempt = store.begin_attempt("r")
    return store, Writer(store, "r", wid, attempt, flush_secs=3600, **options)


def fill(fs):
    from conftest import fill as fill_fs
    return fill_fs(fs, leave=0)


def stored(store, table):
    return sorted(set(store.read("r", table, columns=["step"])["step"].to_pylist()))


def test_metrics_first_then_what_fits_of_the_bulk_above_the_headroom(small_fs):
    fs = small_fs("16m")
    store, w = writer_on(fs)
    filler = fill(fs)
    for step in (0, 1):                      # two flushes' worth of bulk, 2 MiB each, held
        submit(w, add_tensor(step, 2 * MiB), 2 * MiB)
        submit(w, add_scalars(range(step * 100, step * 100 + 100)))
        with pytest.raises(WriterError, match="No space left"):
            w.flush()
    assert w.unwritten_rows() == 202
    size = os.path.getsize(filler)
    os.truncate(filler, size - 7 * MiB)      # 7 MiB come back: 4 MiB stay free for metrics
    submit(w, add_scalars(range(200, 300)))
    with pytest.raises(WriterError, match="bulk tables leave the last"):
        w.flush()
    assert stored(store, "scalars") == list(range(300))   # every metric row, first
    assert stored(store, "tensors") == [0]                 # the older 2 MiB fit, not both
    free = store.free_space()[0]
    assert free >= 4 * MiB, free
    w.close()   # at the end the metrics are in: bulk may use all but the last MiB
    assert stored(store, "tensors") == [0, 1] and w.losses() == {}
    assert verify(store).ok


def test_past_the_bound_bulk_goes_oldest_first_metrics_last_and_counted(small_fs):
    fs = small_fs("8m")
    store, w = writer_on(fs, max_unwritten_bytes=3 * MiB)
    filler = fill(fs)
    peak = 0
    for step in range(10):
        submit(w, add_tensor(step, MiB // 2), MiB // 2)
        submit(w, add_scalars([step]))
        with pytest.raises(WriterError):
            w.flush()
        peak = max(peak, w.held_bytes())
    assert peak <= 3 * MiB
    lost = w.losses()
    [(key, (rows, nbytes, first, last))] = lost.items()
    assert key == ("tensors", "memory") and (first, last) == (0, rows - 1)
    assert rows >= 4 and nbytes >= rows * MiB // 2           # the oldest went
    os.remove(filler)
    w.close()
    assert stored(store, "scalars") == list(range(10))      # no metric row lost
    assert stored(store, "tensors") == list(range(rows, 10))  # the newest were kept
    [x] = store.losses("r")
    assert (x.table, x.reason, x.rows, x.first_step, x.last_step) == (
        "tensors", "memory", rows, 0, rows - 1)


def test_metric_rows_go_last_when_nothing_else_is_left(small_fs):
    fs = small_fs("4m")
    store, w = writer_on(fs, max_unwritten_bytes=64 << 10)
    fill(fs)
    submit(w, add_tensor(0, 32 << 10), 32 << 10)
    for k in range(40):                        # 40 x 100 scalar rows: ~160 KB of Arrow
        submit(w, add_scalars(range(k * 100, k * 100 + 100)))
    with pytest.raises(WriterError):
        w.flush()
    lost = w.losses()
    assert lost[("tensors", "memory")][0] == 1                # the bulk row first
    rows, _b, first, last = lost[("scalars", "memory")]      # then the oldest metrics
    assert first == 0 and last == rows - 1 and rows < 4000
    assert w.held_bytes() <= 64 << 10


def test_every_table_has_a_tier():
    """A new table (system metrics, artifacts) must say whether it is written first and
    dropped last (schema/tables/__init__.py TIERS)."""
    from tfblackbox.schema.tables import METRICS, TABLES, TIERS
    assert set(TIERS) == set(TABLES)
    assert [t for t in TIERS if TIERS[t] == METRICS] == [
        "scalars", "histograms", "log_values", "console", "run_events", "system_metrics"]


def test_init_takes_max_unwritten_bytes_and_refuses_a_bad_one(tmp_path):
    with pytest.raises(ValueError, match="max_unwritten_bytes=0"):
        recorder.init(store=str(tmp_path / "s"), max_unwritten_bytes=0)
    run = recorder.init(store=str(tmp_path / "s"), max_unwritten_bytes=5 * MiB)
    assert run.writer.max_unwritten_bytes == 5 * MiB
    recorder.finish()


# -- dumped steps and their chains (held.py alone) ---------------------------------------------

def dump_tensors(step, chain_run, chain_pos, watches=("a", "b")):
    """One dumped step's tfdbg_v1_tensors rows: one per watch, encoded in chain `chain_run`."""
    schema = schema_of("tfdbg_v1_tensors")
    rows = [dict(step=step, wall_time=float(step), tag=f"{w}:0:DebugIdentity", attempt=1,
                 run_key=f"r{step}", device="cpu", node_name=w, output_slot=0,
                 debug_op="DebugIdentity", timestamp=step, dtype="float32", shape=[4],
                 event=b"e", content_at=0, codec="w4o1", content=b"\0" * 1000,
                 chain_run=chain_run, chain_step=0, chain_pos=chain_pos) for w in watches]
    return pa.Table.from_pylist(rows, schema=schema)


def dump_run(step):
    schema = schema_of("tfdbg_v1_runs")
    return pa.Table.from_pylist([dict(step=step, wall_time=float(step), tag=f"r{step}",
                                      attempt=1, run_key=f"r{step}", tensor_count=2)],
                                schema=schema)


def keys(held, name):
    return sorted(set(held.peek(name)["run_key"].to_pylist()))


def test_a_dropped_dumped_step_takes_its_chain_and_run_rows_along():
    h = Held()
    # steps 0-2 in chain r0 (key frame at step 0), step 3 starts chain r3
    for step, chain, pos in ((0, "r0", 0), (1, "r0", 1), (2, "r0", 2), (3, "r3", 0)):
        h.add("tfdbg_v1_tensors", dump_tensors(step, chain, pos))
        h.add("tfdbg_v1_runs", dump_run(step))
    h.add("scalars", pa.Table.from_pylist(
        [dict(step=0, wall_time=0.0, tag="x", attempt=1, value=1.0)],
        schema=schema_of("scalars")))
    # a step's run row waits while its tensors are held
    assert h.chunk("tfdbg_v1_runs") == (0, None)
    dropped = h.shed(h.nbytes - 1)          # one piece must go: the oldest dump
    assert dropped == {"tfdbg_v1_tensors", "tfdbg_v1_runs"}
    assert keys(h, "tfdbg_v1_tensors") == ["r3"]            # r1, r2: encoded against r0
    assert keys(h, "tfdbg_v1_runs") == ["r3"]
    assert "scalars" in h
    # rows arriving later in a dropped chain, and their step's run row, go at once
    late = h.admit("tfdbg_v1_tensors", pa.concat_tables([dump_tensors(4, "r0", 3),
                                                      dump_tensors(5, "r5", 0)]))
    assert sorted(set(late["run_key"].to_pylist())) == ["r5"]
    h.add("tfdbg_v1_runs", dump_run(4))
    assert keys(h, "tfdbg_v1_runs") == ["r3"]
    lost = {k: v[:1] + v[2:] for k, v in h.lost.items()}
    assert lost == {("tfdbg_v1_tensors", "memory"): [8, 0, 4],
                    ("tfdbg_v1_runs", "memory"): [4, 0, 4]}
    # once its tensors are written, a step's run row is ready
    n, _t = h.chunk("tfdbg_v1_tensors")
    h.written("tfdbg_v1_tensors", n)
    assert keys(h, "tfdbg_v1_runs") == ["r3"] and h.chunk("tfdbg_v1_runs")[0] == 1
    h.give_up()
    assert not h and h.nbytes == 0 and h.lost[("scalars", "finish")][0] == 1


def test_holding_means_a_write_left_rows_not_while_one_is_writing(small_fs):
    """The dump ingest makes every dump a key frame while holding() (a dropped dump then
    takes no later one with it). A normal write stages its rows with the held ones: seen
    then, 6 of 40 steps of tools/bench_dump came out as key frames (~10% more bytes)."""
    fs = small_fs("16m")
    store, w = writer_on(fs)
    seen = []
    real = w._write_held

    def watching(name, final):   # on the writer's thread, in the middle of each write
        seen.append(w.holding())
        return real(name, final)
    w._write_held = watching
    submit(w, add_scalars(range(10)))
    w.flush()
    assert seen and not any(seen) and not w.holding()
    filler = fill(fs)
    submit(w, add_tensor(1, MiB), MiB)
    with pytest.raises(WriterError, match="disk nearly full"):
        w.flush()
    assert w.holding()                       # the tensor row is held: the disk is full
    os.remove(filler)
    w.flush()
    assert not w.holding() and stored(store, "tensors") == [1]
    w.close()
