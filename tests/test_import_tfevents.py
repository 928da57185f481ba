"""tfblackbox import-tfevents: logdirs written by TF's tf.summary, by SummarySaverHook and by
Keras' TensorBoard callback, compared record by record with the files and with what TF
itself parses from them; idempotent; a file that grew; bad input."""

import json
import os
import platform
import struct
import subprocess
import sys

import pytest

import tb_helpers
import tf2_files
from tfblackbox.cli.main import main as cli_main, replay_main
from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tfblackbox.schema import Store
from tfblackbox.schema.formats import tfrecord
from tfblackbox.schema.codecs.tfevents_restore import write_logdir


def _import(logdir, store_dir, *extra, capsys=None):
    code = cli_main(["import-tfevents", str(logdir), "--store", str(store_dir), "--json",
                     *extra])
    out = json.loads(capsys.readouterr().out) if capsys is not None else None
    return code, out


def _check_record_by_record(store, run_id, logdir, tmp_path):
    """Every record of every file is a raw row with its Event's step and wall time, and the
    files come back byte for byte."""
    import tensorflow as tf
    raw = store.read(run_id, "tfevents_records").to_pylist()
    # a later import's row of an offset supersedes an earlier one's (a record that was
    # incomplete then, kept unframed)
    by_key = {(r["file"], r["offset"]): r for r in sorted(raw, key=lambda r: r["attempt"])}
    assert all(r["what"] != "unframed" for r in by_key.values())
    n = 0
    for path in tf2_files.event_files(logdir):
        name = tf2_files.relpath(path, logdir)
        events = list(tf.compat.v1.train.summary_iterator(path))
        records = tfrecord.read_records(path)
        assert len(events) == len(records)
        for (off, data), event in zip(records, events):
            row = by_key[name, off]
            assert (row["step"], row["wall_time"], row["length"]) == (event.step,
                                                                       event.wall_time, len(data))
            n += 1
    assert n == len(by_key)
    out = tmp_path / "restored"
    write_logdir(store, run_id, out)
    for path in tf2_files.event_files(logdir):
        assert (out / tf2_files.relpath(path, logdir)).read_bytes() == open(path, "rb").read()


def test_a_tf_summary_logdir_imports_as_the_capture_records_it(tmp_path, capsys):
    """The same file through the TF2 capture (sync_tensorboard) and through import-tfevents:
    the same rows in every table."""
    logdir = tmp_path / "logs"
    tf2_files.run_script("loop", logdir, "--store", tmp_path / "captured")
    code, result = _import(logdir, tmp_path / "store", "--project", "imp", capsys=capsys)
    assert code == EXIT_OK
    [run] = result["runs"]
    assert run["run_id"].startswith("logs-") and run["records"] == 36
    store = Store.open(str(tmp_path / "store"))
    record = store.run(run["run_id"])
    [path] = tf2_files.event_files(logdir)
    first = tfrecord.read_records(path)[0][1]
    import tensorflow as tf
    assert record.started_at == tf.compat.v1.Event.FromString(first).wall_time
    assert record.project == "imp" and record.status == "finished"
    _check_record_by_record(store, run["run_id"], logdir, tmp_path)
    # tf.summary.histogram's edges are tf.linspace's: its segments keep their two ends alone
    # (store format 9), and the files came back byte for byte above all the same
    kept = [store.data.parquet_file(s.path).read()
            for s in store.segments(run["run_id"], "histograms")]
    assert kept and all(len(x) == 1 for t in kept for x in t["bucket_limits"].to_pylist())
    captured = Store.open(str(tmp_path / "captured"))
    for table in ("scalars", "histograms", "media", "tensors", "tfevents_records"):
        a = store.read(run["run_id"], table).drop_columns(["attempt"])
        b = captured.read("tf2", table).drop_columns(["attempt"])
        if table == "tfevents_records":
            a, b = a.drop_columns(["source"]), b.drop_columns(["source"])
        assert a.num_rows and a.equals(b), table
    # importing again adds nothing: no attempt, no segment
    segments = len(store.segments(run["run_id"]))
    code, again = _import(logdir, tmp_path / "store", capsys=capsys)
    assert code == EXIT_OK and again["runs"][0]["records"] == 0
    assert len(store.segments(run["run_id"])) == segments
    assert len(store.writers(run["run_id"])) == 1


def test_a_summarysaverhook_logdir_value_by_value(tmp_path, capsys):
    """SummarySaverHook's files (TF1 FileWriter: merged summaries, plugin metadata only on a
    tag's first value, a graph): every value TF parses is a row with the same content."""
    import tensorflow as tf
    run_id = tb_helpers.train_tf1(tmp_path)
    logdir = tmp_path / "tb"
    code, result = _import(logdir, tmp_path / "imported", "--name", "saver", capsys=capsys)
    assert code == EXIT_OK
    [run] = result["runs"]
    assert run["name"] == "saver"
    store = Store.open(str(tmp_path / "imported"))
    _check_record_by_record(store, run["run_id"], logdir, tmp_path)
    [path] = tf2_files.event_files(logdir)
    kinds = set()
    scalars = {(r["step"], r["tag"]): r["value"] for r in store.scalars(run["run_id"]).to_pylist()}
    media = {(r["step"], r["tag"], r["index"]): r for r in store.media(run["run_id"]).to_pylist()}
    hists = {(r["step"], r["tag"]): r for r in store.histograms(run["run_id"]).to_pylist()}
    tensors = {(r["step"], r["tag"]): r for r in store.tensors(run["run_id"]).to_pylist()}
    for event in tf.compat.v1.train.summary_iterator(path):
        for v in event.summary.value:
            key = (event.step, v.tag)
            kind = v.WhichOneof("value")
            if kind == "simple_value":
                got = scalars[key]
                assert got == v.simple_value or (got != got and v.simple_value != v.simple_value)
            elif kind == "image":
                assert media[key + (0,)]["data"] == v.image.encoded_image_string
            elif kind == "audio":
                assert media[key + (0,)]["data"] == v.audio.encoded_audio_string
            elif kind == "histo":
                assert hists[key]["bucket_counts"] == list(v.histo.bucket)
            elif v.tag == "note":
                assert media[key + (0,)]["data"] == tf.make_ndarray(v.tensor).item()
            elif v.tag == "matrix":
                assert tensors[key]["tensor"] == v.tensor.SerializeToString()
            kinds.add(kind)
    assert kinds == {"simple_value", "image", "audio", "histo", "tensor"}
    # the same rows as SummaryHook recorded in the training itself (its steps are one less)
    hook = Store.open(str(tmp_path / "store"))
    mine = {(r["step"] + 1, r["tag"]): r["value"] for r in hook.scalars(run_id).to_pylist()}
    assert {k: str(v) for k, v in mine.items()} == {k: str(v) for k, v in scalars.items()}


def test_keras_logdir_one_run_per_directory_or_all_in_one(tmp_path, capsys):
    logdir = tmp_path / "logs"
    tf2_files.run_script("keras", logdir, "--store", tmp_path / "captured")
    code, result = _import(logdir, tmp_path / "store", capsys=capsys)
    assert code == EXIT_OK
    assert sorted(r["name"] for r in result["runs"]) == ["train", "validation"]
    code, result = _import(logdir, tmp_path / "store", "--run", "keras", capsys=capsys)
    assert code == EXIT_OK
    store = Store.open(str(tmp_path / "store"))
    tags = set(store.scalars("keras")["tag"].to_pylist())
    assert {"train/epoch_loss", "validation/epoch_loss"} <= tags
    captured = Store.open(str(tmp_path / "captured"))
    assert tags == set(captured.scalars("tf2")["tag"].to_pylist())


def test_a_truncated_file_then_the_rest_of_it(tmp_path, capsys):
    logdir = tmp_path / "logs"
    tf2_files.run_script("loop", logdir)
    [path] = tf2_files.event_files(logdir)
    data = open(path, "rb").read()
    records = tfrecord.read_records(path)
    cut = records[10][0] + 30
    with open(path, "wb") as f:
        f.write(data[:cut])
    code, result = _import(logdir, tmp_path / "store", capsys=capsys)
    assert code == EXIT_OK
    [run] = result["runs"]
    assert run["records"] == 10 and "incomplete record" in run["problems"][0]
    store = Store.open(str(tmp_path / "store"))
    out = tmp_path / "restored1"
    write_logdir(store, run["run_id"], out)
    assert (out / os.path.basename(path)).read_bytes() == data[:cut]   # nothing lost
    with open(path, "wb") as f:
        f.write(data)
    code, result = _import(logdir, tmp_path / "store", capsys=capsys)
    assert code == EXIT_OK and result["runs"][0]["records"] == len(records) - 10
    _check_record_by_record(store, run["run_id"], logdir, tmp_path)


def test_a_corrupt_file_an_empty_logdir_and_a_tag_that_is_not_utf8(tmp_path, capsys):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    assert cli_main(["import-tfevents", str(logdir), "--store", str(tmp_path / "s")]) == \
        EXIT_USAGE
    assert "holds no event files" in capsys.readouterr().err
    assert cli_main(["import-tfevents", str(tmp_path / "nope"), "--store",
                     str(tmp_path / "s")]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
    # a hand-made file: a scalar whose tag is not UTF-8, then a record damaged in its data
    from tfblackbox.replay.tensorboard import events as ev
    value = b"\x0a\x07loss\xff\xfe!" + b"\x15" + struct.pack("<f", 2.5)
    good = [ev.event(1.0, 0) + b"\x1a\x0dbrain.Event:2",
            ev.event(2.0, 1, summary=b"\x0a" + bytes([len(value)]) + value),
            ev.event(3.0, 2, summary=ev.simple_scalar("x", 1.0))]
    damaged = bytearray(tfrecord.frame(ev.event(4.0, 3, summary=ev.simple_scalar("x", 2.0))))
    damaged[20] ^= 0xFF
    path = logdir / "events.out.tfevents.1.host"
    path.write_bytes(b"".join(tfrecord.frame(d) for d in good) + bytes(damaged) +
                     tfrecord.frame(good[2]))
    code = cli_main(["import-tfevents", str(logdir), "--store", str(tmp_path / "s"),
                     "--run", "odd"])
    captured = capsys.readouterr()
    assert code == EXIT_FAILED
    assert "corrupt TFRecord at byte offset" in captured.err and str(path) in captured.err
    store = Store.open(str(tmp_path / "s"))
    assert store.scalars("odd")["tag"].to_pylist() == ["loss\\xff\\xfe!", "x"]
    out = tmp_path / "tb"
    assert replay_main(["--store", str(tmp_path / "s"), "--to", "tensorboard", "--out",
                        str(out)]) == EXIT_OK
    # the replay gives the file back as it was, damage included, for TensorBoard to judge
    assert (out / "logs-odd" / path.name).read_bytes() == path.read_bytes()


def test_a_killed_import_resumes_without_losing_or_doubling_a_record(tmp_path):
    """Killed right after its first segment group (records and their decoded rows
    registered together), the next import goes on from there: every record once."""
    import subprocess
    import sys
    logdir = tmp_path / "logs"
    tf2_files.run_script("loop", logdir, "--steps", 12)
    env = dict(os.environ, TFBLACKBOX_TEST_KILL_AT="import-flush",
               TFBLACKBOX_IMPORT_CHUNK_BYTES="2000", TFBLACKBOX_IMPORT_FLUSH_ROWS="10")
    args = [sys.executable, "-m", "tfblackbox.cli.main", "import-tfevents", str(logdir),
            "--store", str(tmp_path / "store"), "--run", "k"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    store = Store.open(str(tmp_path / "store"))
    first = store.read("k", "tfevents_records").num_rows
    [path] = tf2_files.event_files(logdir)
    total = len(tfrecord.read_records(path))
    assert 0 < first < total
    env.pop("TFBLACKBOX_TEST_KILL_AT")
    subprocess.run(args, env=env, check=True, capture_output=True)
    raw = store.read("k", "tfevents_records").to_pylist()
    assert sorted(r["offset"] for r in raw) == [o for o, _d in tfrecord.read_records(path)]
    scalars = store.scalars("k").to_pylist()
    assert [r["step"] for r in scalars if r["tag"] == "loss"] == list(range(12))
    _check_record_by_record(store, "k", logdir, tmp_path)


def test_a_new_runs_begin_that_fails_stops_the_import_before_it_writes(tmp_path, monkeypatch):
    """A new run's attempt is begun on a thread while the decoding starts: when the catalog
    refuses it, the import raises that error, at the first chunk handed over rather than
    after every file, and leaves no run, attempt or segment behind."""
    from tfblackbox.ingest import tensorboard as importer
    from tfblackbox.schema.errors import CatalogError
    logdir = tmp_path / "logs"
    tf2_files.run_script("loop", logdir, "--steps", 12)
    monkeypatch.setattr(importer, "CHUNK_BYTES", 2000)
    store = Store.create(str(tmp_path / "store"))
    chunks = []
    decode = importer.decode_next

    def counted(*args):
        chunks.append(1)
        return decode(*args)

    def refused(self, *args, **kwargs):
        raise CatalogError("the catalog refused the write (test)")

    monkeypatch.setattr(importer, "decode_next", counted)
    importer.import_logdir(Store.create(str(tmp_path / "whole")), str(logdir), run_id="k")
    whole, chunks[:] = len(chunks), []
    monkeypatch.setattr(Store, "begin_attempt", refused)
    with pytest.raises(CatalogError, match="refused the write"):
        importer.import_logdir(store, str(logdir), run_id="k")
    assert not store.has_run("k")
    assert store.segments() == []
    assert 0 < len(chunks) < whole   # stopped before the end


_SECOND_BUFFER = r"""
import resource, sys
from tfblackbox.cli.main import _keep_freed_memory
if sys.argv[1] == "keep":
    assert _keep_freed_memory()
def faults():   # the minor page faults of making a 32 MB buffer (one chunk's read) and dropping it
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    data = b"\x01" * (32 << 20)   # written: calloc would leave fresh pages untouched
    del data
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(min(faults(), faults()))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                    reason="mallopt's parameters are glibc's")
def test_import_keeps_freed_buffers_for_the_next_chunk():
    """The import's process keeps a freed chunk's memory for the next one: a 32 MB buffer made
    again after the first was dropped faults almost no page in; with malloc's defaults each one
    is mapped anew and faults in all of its 8 192 pages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def second_buffer_faults(mode):
        out = subprocess.run([sys.executable, "-c", _SECOND_BUFFER, mode], env=env, text=True,
                             capture_output=True, check=True).stdout
        return int(out.split()[-1])
    assert second_buffer_faults("default") > 4000
    assert second_buffer_faults("keep") < 500
