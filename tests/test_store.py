"""The store on its own (no TensorFlow): create/open, refusals, damage, orphans, attempts."""

import math
import os
import sqlite3

import pyarrow as pa
import pytest

from tfblackbox.cli.main import main as cli
from helpers import scalars
from tfblackbox.schema.tables import TABLES
from tfblackbox.schema import (FORMAT_VERSION, NotAStoreError, RunNotFoundError, Store,
                               StoreDamageError, StoreVersionError, compact, verify)


@pytest.fixture
def store(store_dir):
    s = Store.create(store_dir)
    s.create_run("r1", config={"lr": 0.1}, project="p", name="first")
    return s


def test_create_then_open_reads_back_runs(store, store_dir):
    w, a = store.begin_attempt("r1")
    store.write_segment("r1", "scalars", scalars([0, 1, 2], a), w)
    again = Store.open(store_dir)
    [r] = again.runs()
    assert (r.run_id, r.project, r.name, r.status, r.config) == ("r1", "p", "first", "running",
                                                                {"lr": 0.1})
    assert again.scalars("r1")["value"].to_pylist() == [0.0, 1.0, 2.0]
    assert Store.create(store_dir).runs()[0].run_id == "r1"   # create on a store opens it


def test_a_directory_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "somefile.txt").write_text("x")
    with pytest.raises(NotAStoreError, match="no catalog.sqlite"):
        Store.open(str(tmp_path))
    with pytest.raises(NotAStoreError, match="not empty"):
        Store.create(str(tmp_path))
    with pytest.raises(NotAStoreError, match="no such directory"):
        Store.open(str(tmp_path / "missing"))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "catalog.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(NotAStoreError, match="catalog"):
        Store.open(str(tmp_path / "s"))


def test_a_store_from_a_newer_format_is_refused(store, store_dir):
    con = sqlite3.connect(os.path.join(store_dir, "catalog.sqlite"))
    con.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreVersionError,
                       match=rf"format version 99.*up to {FORMAT_VERSION}.*upgrade"):
        Store.open(store_dir)
    assert cli(["runs", "--store", store_dir]) == 2


def test_unwritable_store_path_fails_at_create(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotAStoreError, match="cannot create a store"):
        Store.create(str(tmp_path / "file" / "store"))


def test_nan_inf_and_odd_unicode_are_stored_faithfully(store):
    w, a = store.begin_attempt("r1")
    tag = "ünï/cødé ✓ 日本 \u202e\x01 🙂"
    store.write_segment("r1", "scalars", scalars([0, 1, 2, 3], a, tag=tag,
                                                  values=[math.nan, math.inf, -math.inf, -0.0]), w)
    t = store.scalars("r1")
    v = t["value"].to_pylist()
    assert math.isnan(v[0]) and v[1] == math.inf and v[2] == -math.inf
    assert math.copysign(1, v[3]) == -1
    assert set(t["tag"].to_pylist()) == {tag}


def test_latest_attempt_wins_from_its_first_step(store):
    w1, a1 = store.begin_attempt("r1")
    store.write_segment("r1", "scalars", scalars(list(range(0, 10)), a1), w1)
    w2, a2 = store.begin_attempt("r1")       # resumed from a checkpoint at step 6
    store.write_segment("r1", "scalars", scalars([6, 7, 8], a2, values=[60.0, 70.0, 80.0]), w2)
    t = store.scalars("r1")
    assert t["step"].to_pylist() == list(range(0, 9))
    assert t["value"].to_pylist() == [0, 1, 2, 3, 4, 5, 60, 70, 80]
    assert t["attempt"].to_pylist() == [a1] * 6 + [a2] * 3
    assert store.scalars("r1", latest_only=False).num_rows == 13
    assert store.scalars("r1", steps=(7, None))["value"].to_pylist() == [70, 80]
    compact(store, "r1")                      # compaction keeps the attempts apart
    assert store.scalars("r1")["value"].to_pylist() == [0, 1, 2, 3, 4, 5, 60, 70, 80]


def test_unknown_run_is_a_clear_error(store):
    with pytest.raises(RunNotFoundError, match="'nope' is not in store.*r1"):
        store.scalars("nope")


def test_truncated_segment_is_reported_by_read_and_verify(store, store_dir, capsys):
    w, a = store.begin_attempt("r1")
    seg = store.write_segment("r1", "scalars", scalars(list(range(100)), a), w)
    path = os.path.join(store_dir, seg.path)
    with open(path, "r+b") as f:
        f.truncate(seg.size_bytes // 2)
    with pytest.raises(StoreDamageError, match=os.path.basename(path)):
        store.scalars("r1")
    assert cli(["verify", "--store", store_dir]) == 1
    assert os.path.basename(path) in capsys.readouterr().err
    os.remove(path)
    report = verify(store)
    assert not report.ok and "missing" in report.damaged[0][1]


def test_verify_passes_and_removes_orphans(store, store_dir, capsys):
    w, a = store.begin_attempt("r1")
    store.write_segment("r1", "scalars", scalars([0, 1], a), w)
    folder = os.path.join(store_dir, "data", "scalars", "run_id=r1")
    # a temp file of a dead writer, and a renamed-but-unregistered file (crash between the two)
    dead_tmp = os.path.join(folder, ".1-00000000-999999-000001-abcdef.parquet.tmp")
    unregistered = os.path.join(folder, "1-00000000-999999-000002-abcdef.parquet")
    for p in (dead_tmp, unregistered):
        with open(p, "wb") as f:
            f.write(b"partial")
        os.utime(p, (1, 1))   # old: past the grace period
    young = os.path.join(folder, "1-00000000-999999-000003-abcdef.parquet")
    with open(young, "wb") as f:
        f.write(b"in flight")
    assert cli(["verify", "--store", store_dir]) == 0
    out = capsys.readouterr().out
    assert "2 orphan(s) removed" in out and "left alone" in out
    assert not os.path.exists(dead_tmp) and not os.path.exists(unregistered)
    assert os.path.exists(young)
    assert cli(["verify", "--store", store_dir, "--grace", "0"]) == 0
    assert not os.path.exists(young)
    assert store.scalars("r1").num_rows == 2


def test_compaction_swaps_segments_and_keeps_every_row(store, store_dir):
    w, a = store.begin_attempt("r1")
    for i in range(5):
        store.write_segment("r1", "scalars", scalars([i * 2, i * 2 + 1], a), w)
    before = store.scalars("r1")
    assert compact(store, "r1") == {("r1", "scalars"): (5, 1)}
    [seg] = store.segments("r1")
    assert store.scalars("r1").equals(before)
    assert sorted(os.listdir(os.path.dirname(os.path.join(store_dir, seg.path)))) == [
        os.path.basename(seg.path)]
    assert verify(store).ok


def test_compaction_leaves_segments_of_a_mib_or_more_as_they_are(store):
    """What compaction is for is many tiny flushes; rewriting a dump step's segments of
    MBs cost a sixth of a DumpHook run's CPU at its finish."""
    import numpy as np
    w, a = store.begin_attempt("r1")
    rng = np.random.default_rng(0)
    for i in range(3):
        rows = [dict(step=i, wall_time=1.0 * i, tag="t", attempt=a, file="f", offset=2 * i + k,
                     index=2 * i + k, what="summary", length=700_000,
                     record=rng.bytes(700_000))   # incompressible: ~1.4 MB a file
                for k in range(2)]
        store.write_segment("r1", "tfevents_records", pa.Table.from_pylist(
            rows, schema=TABLES["tfevents_records"]), w)
        store.write_segment("r1", "scalars", scalars([i], a), w)
    big = sorted(g.path for g in store.segments("r1", "tfevents_records"))
    assert all(g.size_bytes >= 1 << 20 for g in store.segments("r1", "tfevents_records"))
    assert compact(store, "r1") == {("r1", "scalars"): (3, 1)}
    assert sorted(g.path for g in store.segments("r1", "tfevents_records")) == big
    assert store.read("r1", "tfevents_records").num_rows == 6


def test_segments_are_cast_to_the_schema_constant(store):
    w, a = store.begin_attempt("r1")
    loose = pa.table({"step": pa.array([1], pa.int32()), "wall_time": [1.0], "tag": ["x"],
                      "attempt": pa.array([a], pa.int64()), "value": pa.array([1], pa.int8())})
    store.write_segment("r1", "scalars", loose, w)
    from tfblackbox.schema import SCALARS
    assert store.scalars("r1").schema == SCALARS
    with pytest.raises((pa.ArrowInvalid, KeyError, ValueError)):
        store.write_segment("r1", "scalars", pa.table({"step": [1]}), w)


CREATE_CHILD = """
import sys, time
from tfblackbox.schema import Store
print("go", flush=True)
Store.create(sys.argv[1])
print("done", flush=True)
time.sleep(60)
"""


@pytest.mark.long
def test_a_kill_at_any_instant_of_store_creation_leaves_a_usable_path(tmp_path):
    """SIGKILL at random instants of Store.create (after the imports): the next create on the
    same path always works, and the store opens and verifies."""
    import random
    import signal
    import subprocess
    import sys
    import time
    rng = random.Random(7)
    done = 0
    for i in range(24):
        path = str(tmp_path / f"s{i}")
        child = subprocess.Popen([sys.executable, "-c", CREATE_CHILD, path],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0, 0.06))
        child.send_signal(signal.SIGKILL)
        child.wait()
        s = Store.create(path)            # finishes what the killed process began
        s.create_run("r")
        assert [r.run_id for r in Store.open(path).runs()] == ["r"]
        assert verify(s).ok
        assert not [n for n in os.listdir(path) if n.startswith(".catalog")]
        done += os.path.exists(os.path.join(path, "data"))
    assert done == 24


def test_a_store_half_made_by_an_older_version_is_finished(tmp_path):
    """tfblackbox 0.1 created the tables, then the version in a second transaction."""
    path = tmp_path / "s"
    (path / "data").mkdir(parents=True)
    from tfblackbox.schema.store import catalog as cat
    c = cat.Catalog("sqlite:///" + str(path / "catalog.sqlite"))
    cat.Base.metadata.create_all(c.engine)
    c.dispose()
    s = Store.create(str(path))
    s.create_run("r")
    assert Store.open(str(path)).run("r").status == "running"


def test_concurrent_creates_of_one_path_share_one_catalog(tmp_path):
    import subprocess
    import sys
    path = str(tmp_path / "s")
    code = ("import sys; from tfblackbox.schema import Store; s = Store.create(sys.argv[1]); "
            "s.create_run(sys.argv[2])")
    procs = [subprocess.Popen([sys.executable, "-c", code, path, f"r{i}"]) for i in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert sorted(r.run_id for r in Store.open(path).runs()) == ["r0", "r1", "r2", "r3"]


def test_a_store_on_read_only_media_can_be_read(small_fs, capsys):
    """A store carried on a disk mounted read-only (a USB disk, a data diode's far side):
    runs, show, reads and a dry-run replay all work."""
    import subprocess
    fs = small_fs("8m")
    path = str(fs / "store")
    s = Store.create(path)
    s.create_run("r1")
    w, a = s.begin_attempt("r1")
    s.write_segment("r1", "scalars", scalars([0, 1, 2], a), w)
    s.finish_run("r1")
    s.close()
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    ro = Store.open(path)
    assert [r.run_id for r in ro.runs()] == ["r1"]
    assert ro.scalars("r1")["value"].to_pylist() == [0.0, 1.0, 2.0]
    assert cli(["runs", "--store", path]) == 0
    assert cli(["show", "r1", "--store", path]) == 0
    assert cli(["replay", "--store", path, "--to", "wandb", "--dry-run"]) == 0
    assert "r1" in capsys.readouterr().out


def test_no_catalog_transaction_is_open_while_a_file_is_written(store, store_dir):
    """SQLite takes one writer at a time, so a transaction held over a segment's or a
    compaction's file I/O would block every other writer of the store for that long. Another
    connection writes the catalog from inside each file write; it must get through."""
    import contextlib
    import threading
    other = Store.open(store_dir, access="write")
    w, a = store.begin_attempt("r1")
    got_through = []

    def write_catalog_meanwhile():
        t = threading.Thread(target=other.create_run, args=(f"meanwhile-{len(got_through)}",))
        t.start()
        t.join(10)              # a held write lock would keep it waiting (busy timeout)
        got_through.append(not t.is_alive())
        t.join()

    real_new_file, real_write_new = store.data.new_file, store.data.write_new

    @contextlib.contextmanager
    def new_file(rel):
        with real_new_file(rel) as sink:
            write_catalog_meanwhile()
            yield sink

    def write_new(rel, data):
        write_catalog_meanwhile()
        real_write_new(rel, data)
    store.data.new_file, store.data.write_new = new_file, write_new
    for i in range(3):
        store.write_segment("r1", "scalars", scalars([i], a), w)
    assert compact(store, "r1") == {("r1", "scalars"): (3, 1)}
    assert len(got_through) >= 4 and all(got_through), got_through
    assert len([r for r in other.runs() if r.run_id.startswith("meanwhile-")]) == len(
        got_through)
    assert verify(store).ok
