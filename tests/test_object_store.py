"""Parquet segments on an object store: a real S3-compatible server (moto's server mode,
started by the tests, tests/servers.py) through pyarrow's S3 filesystem. The segment
protocol, reads by the catalog alone, verify, orphans, compaction, the format-2 migration's
rewrite, and credentials kept out of the catalog."""

import os
import shutil
import sqlite3
import time

import pyarrow.fs as pafs
import pytest

import wandb_log
from tfblackbox.cli.main import main as cli, replay_main
from tfblackbox.schema import CatalogError, Store, compact, verify
from tfblackbox.schema.store.maintenance import remove_orphans

from test_migrations import make_format1_store
from helpers import scalars


def objects(s3, data_uri):
    """Keys below the store's prefix (relative), as the S3 server lists them."""
    prefix = data_uri.split("://", 1)[1].split("?", 1)[0]
    infos = s3.filesystem().get_file_info(pafs.FileSelector(prefix, recursive=True,
                                                            allow_not_found=True))
    return sorted(i.path[len(prefix) + 1:] for i in infos if i.type == pafs.FileType.File)


def test_segments_live_on_s3_and_readers_need_only_the_catalog_url(s3, s3_data, pg_url,
                                                                    capsys):
    store = Store.create(pg_url, data=s3_data)
    assert not store.data.local
    store.create_run("r")
    w, a = store.begin_attempt("r")
    segs = [store.write_segment("r", "scalars", scalars([i * 2, i * 2 + 1], a), w)
            for i in range(5)]
    assert objects(s3, s3_data) == sorted(g.path for g in segs)   # no temp objects left
    reader = Store.open(pg_url)
    assert reader.scalars("r")["step"].to_pylist() == list(range(10))
    assert reader.scalars("r", steps=(3, 6))["step"].to_pylist() == [3, 4, 5]
    assert verify(reader).ok and verify(reader).checked == 5
    assert compact(Store.open(pg_url, access="write"), "r") == {("r", "scalars"): (5, 1)}
    [merged] = reader.segments("r")
    assert objects(s3, s3_data) == [merged.path]                  # old objects deleted
    assert Store.open(pg_url).scalars("r")["value"].to_pylist() == [float(s) for s in range(10)]
    assert cli(["verify", "--store", pg_url]) == 0
    assert "1 segment(s) checked, 0 damaged" in capsys.readouterr().out


def test_damage_and_orphans_on_s3(s3, s3_data, pg_url):
    store = Store.create(pg_url, data=s3_data)
    store.create_run("r")
    w, a = store.begin_attempt("r")
    good = store.write_segment("r", "scalars", scalars([0, 1], a), w)
    bad = store.write_segment("r", "scalars", scalars([2, 3], a), w)
    fs = s3.filesystem()
    base = s3_data.split("://", 1)[1].split("?", 1)[0]
    with fs.open_output_stream(f"{base}/{bad.path}") as f:     # rewritten behind our back
        f.write(b"not parquet at all")
    report = verify(store)
    assert [(p.rsplit("/", 1)[1], r.split(" ")[0]) for p, r in report.damaged] == [
        (bad.path.rsplit("/", 1)[1], "size")]
    fs.delete_file(f"{base}/{bad.path}")
    assert "missing" in verify(store).damaged[0][1]
    # an object a killed writer uploaded but never registered: an orphan after the grace
    orphan = f"data/scalars/run_id=r/w-{good.path.rsplit('-', 4)[1]}-999999-000001-abcdef.parquet"
    with fs.open_output_stream(f"{base}/{orphan}") as f:
        f.write(b"x")
    removed, in_flight = remove_orphans(store)                  # young: left alone
    assert removed == [] and [p.rsplit("/", 1)[1] for p in in_flight] == [orphan.rsplit("/", 1)[1]]
    assert orphan in objects(s3, s3_data)
    time.sleep(1.1)
    report = verify(store, grace_secs=1.0)
    assert [p.rsplit("/", 1)[1] for p in report.orphans_removed] == [orphan.rsplit("/", 1)[1]]
    assert orphan not in objects(s3, s3_data) and good.path in objects(s3, s3_data)
    # a segment whose registration fails leaves no object behind
    before = objects(s3, s3_data)
    with pytest.raises(CatalogError):
        store.write_segment("no-such-run", "scalars", scalars([0], 1))
    assert objects(s3, s3_data) == before


def test_a_sqlite_store_with_data_on_s3_records_the_uri_without_credentials(s3, s3_data,
                                                                             tmp_path):
    bucket_path = s3_data.split("://", 1)[1]
    with_keys = f"s3://testing:testing@{bucket_path}"            # keys in the URI given
    root = str(tmp_path / "s")
    store = Store.create(root, data=with_keys)
    store.create_run("r")
    w, a = store.begin_attempt("r")
    seg = store.write_segment("r", "scalars", scalars([5], a), w)
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    [(recorded,)] = con.execute("SELECT value FROM meta WHERE key = 'data_uri'").fetchall()
    assert recorded == s3_data and "testing" not in recorded
    assert not os.listdir(os.path.join(root, "data"))            # nothing local
    assert seg.path in objects(s3, s3_data)
    assert Store.open(root).scalars("r")["step"].to_pylist() == [5]


def test_the_recorder_writes_to_s3_through_a_postgresql_catalog(s3, s3_data, pg_url, tmp_path):
    from tfblackbox import recorder
    run = recorder.init(store=pg_url, data=s3_data, run_id="r", flush_rows=100)
    for step in range(1000):
        run.submit(lambda b, s=step: b.add_scalar(s, 1.0 + s, "loss", s * 0.5))
    run.flush()
    assert len(run.store.segments("r")) >= 5
    recorder.finish()                                   # compacts on S3 at finish
    store = Store.open(pg_url)
    # the scalars compacted into one file (the run's environment and system samples have theirs)
    assert [g.path[:23] for g in store.segments("r", table="scalars")] == [
        "data/scalars/run_id=r/c"]
    t = store.scalars("r")
    assert t["step"].to_pylist() == list(range(1000))
    assert t["value"].to_pylist() == [s * 0.5 for s in range(1000)]
    assert objects(s3, s3_data) == sorted(g.path for g in store.segments("r"))
    # the W&B replay reads it by the catalog URL alone
    assert replay_main(["--store", pg_url, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                        str(tmp_path / "wandb"), "--no-progress"]) == 0
    [f] = wandb_log.run_files(str(tmp_path / "wandb"))
    history = wandb_log.history(f)
    assert [(r["_step"], r["loss"]) for r in history] == [(s, s * 0.5) for s in range(1000)]


def test_the_format2_upgrade_rewrites_segments_on_s3(s3, s3_data, tmp_path):
    """A format-1 store whose data was moved to S3: the upgrade writes the new tensors object
    before its transaction, swaps the entry, then deletes the old object."""
    root = str(tmp_path / "store")
    old = make_format1_store(root)
    fs = s3.filesystem()
    base = s3_data.split("://", 1)[1].split("?", 1)[0]
    for folder, _dirs, names in os.walk(os.path.join(root, "data")):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), root)
            with open(os.path.join(folder, name), "rb") as f, \
                    fs.open_output_stream(f"{base}/{rel}") as out:
                out.write(f.read())
    shutil.rmtree(os.path.join(root, "data"))
    os.makedirs(os.path.join(root, "data"))
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    con.execute("INSERT INTO meta VALUES ('data_uri', ?)", (s3_data,))
    con.commit()
    con.close()
    store = Store.open(root, access="write")        # a writer upgrades (readers refuse)
    assert store.tensors("r")["dtype"].to_pylist() == ["float32", "string_ref"]
    assert store.scalars("r")["step"].to_pylist() == list(range(10))
    keys = objects(s3, s3_data)
    assert old not in keys and len(keys) == 2
    assert verify(store).ok
