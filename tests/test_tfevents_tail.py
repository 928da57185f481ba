"""The tfevents tail on files TF's FileWriter wrote: plugin metadata given only on a tag's
first value, and bad input (corrupt and truncated files, a file that grows after a newer one
appeared, a logdir that disappears) -> a warning naming the file, everything readable kept,
and the files still come back byte for byte."""

import logging
import os
import shutil
import socket
import time
import types

import tf2_files
from tfblackbox import recorder
from tfblackbox.recorder.tf2.tfevents_owner import process_started
from tfblackbox.recorder.tf2.tfevents_tail import TfeventsTail, tail_for
from tfblackbox.schema import Store
from tfblackbox.schema.formats import tfevents, tfrecord
from tfblackbox.schema.codecs.tfevents_restore import write_logdir


def filewriter_logdir(logdir, steps=6):
    """TF1's FileWriter: scalar, histogram and text plugin summaries (TensorBoard's *_pb),
    whose metadata the writer keeps only on each tag's first value."""
    import numpy as np
    import tensorflow as tf
    from tensorboard.plugins.histogram.summary_v2 import histogram_pb
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    from tensorboard.plugins.text.summary_v2 import text_pb
    writer = tf.compat.v1.summary.FileWriter(str(logdir))
    rng = np.random.default_rng(1)
    for step in range(steps):
        writer.add_summary(scalar_pb("loss", 1.0 / (step + 1)).SerializeToString(), step)
        writer.add_summary(histogram_pb("w", rng.normal(size=100), buckets=12).SerializeToString(),
                           step)
        writer.add_summary(text_pb("note", f"step {step}: ok").SerializeToString(), step)
    writer.close()
    [path] = tf2_files.event_files(logdir)
    return path


def test_a_tags_metadata_given_only_on_its_first_value_is_applied_to_the_rest(graph, tmp_path):
    logdir = tmp_path / "logs"
    path = filewriter_logdir(logdir)
    with_md = {}
    for _off, data in tfrecord.read_records(path):
        for v in tfevents.parse_event(data).values:
            with_md.setdefault(v.tag, []).append(v.metadata is not None)
    assert with_md == {t: [True] + [False] * 5 for t in ("loss", "w", "note")}

    run = recorder.init(store=str(tmp_path / "store"), run_id="fw")
    recorder.watch_tensorboard(logdir)
    recorder.finish()
    store = Store.open(str(tmp_path / "store"))
    assert store.scalars("fw")["tag"].to_pylist() == ["loss"] * 6
    assert store.histograms("fw").num_rows == 6
    text = store.media("fw")
    assert text["kind"].to_pylist() == ["text"] * 6
    assert text["data"].to_pylist() == [f"step {s}: ok".encode() for s in range(6)]
    assert store.tensors("fw").num_rows == 0
    [out] = write_logdir(store, run.run_id, tmp_path / "out")
    assert open(out, "rb").read() == open(path, "rb").read()


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "tfblackbox" and r.levelno >= logging.WARNING]


def test_bad_input_is_warned_about_kept_and_recording_goes_on(graph, tmp_path, caplog):
    material = filewriter_logdir(tmp_path / "material")
    data = open(material, "rb").read()
    records = tfrecord.read_records(material)
    logdir = tmp_path / "logs"
    name = os.path.basename(material)
    files = {}

    def put(sub, content, fname=name):
        os.makedirs(logdir / sub, exist_ok=True)
        files[f"{sub}/{fname}"] = logdir / sub / fname
        (logdir / sub / fname).write_bytes(content)

    corrupt = bytearray(data)
    bad_off, bad = records[5]
    corrupt[bad_off + tfrecord.HEADER + len(bad) // 2] ^= 0x01
    put("corrupt", bytes(corrupt))
    put("truncated", data[:records[-1][0] + 7])
    older, newer = "events.out.tfevents.100.host", "events.out.tfevents.200.host"
    put("rotated", data[:records[8][0]], older)
    put("rotated", data, newer)
    gone = tmp_path / "gone"
    shutil.copytree(tmp_path / "material", gone)

    caplog.set_level(logging.INFO, logger="tfblackbox")
    run = recorder.init(store=str(tmp_path / "store"), run_id="bad")
    recorder.watch_tensorboard(logdir)
    recorder.watch_tensorboard(gone)
    tail = tail_for(run)
    tail.poll()
    shutil.rmtree(gone)
    with open(files[f"rotated/{older}"], "ab") as f:   # the older file grows after rotation
        f.write(data[records[8][0]:])
    tail.poll()
    recorder.flush()    # the recorder is still working
    recorder.finish()   # and finishes cleanly

    warned = "\n".join(_warnings(caplog))
    assert f"{files['corrupt/' + name]}: corrupt TFRecord at byte offset {bad_off}" in warned
    assert f"{files['truncated/' + name]} ends with 7 bytes of an incomplete record" in warned
    assert f"{files['rotated/' + older]} grew after the newer event file {newer}" in warned
    assert f"logdir {gone} disappeared" in warned

    store = Store.open(str(tmp_path / "store"))
    out = tmp_path / "out"
    written = write_logdir(store, "bad", out)
    back = {os.path.relpath(p, out): open(p, "rb").read() for p in written}
    # every file comes back as it was, the damaged ones included (their rest kept unframed)
    for rel, path in files.items():
        assert back[rel] == path.read_bytes(), rel
    assert back[f"gone/{name}"] == data   # what was read before the logdir vanished
    raw = store.read("bad", "tfevents_records").to_pylist()
    assert [r["offset"] for r in raw if r["what"] == "unframed"] == sorted(
        [bad_off, records[-1][0]])
    # the corrupt file's records before the damage were decoded as usual
    assert sum(t == "corrupt/loss" for t in store.scalars("bad")["tag"].to_pylist()) == 2


def test_learned_logdirs_and_their_tag_namespaces(tmp_path):
    class FakeRun:   # the tail needs a run only to submit jobs; none are submitted here
        run_id, attempt, writer = "x", 1, None

    tail = TfeventsTail(FakeRun())
    tail.start = lambda: None
    base = tmp_path / "tb"
    assert tail.watch(base / "train", learned=True)            # Keras: watched from the parent
    assert not tail.watch(base / "validation", learned=True)   # covered by it
    assert not tail.watch(base / "train" / "plugins")
    assert tail.watch(tmp_path / "other")                      # a second tree: its own prefix
    assert [(r.path, r.prefix) for r in tail.roots] == [(str(base), ""),
                                                        (str(tmp_path / "other"), "other")]
    for sub in ("train", "validation"):
        os.makedirs(base / sub)
        (base / sub / "events.out.tfevents.1.h").write_bytes(b"")
    os.makedirs(tmp_path / "other")
    (tmp_path / "other" / "events.out.tfevents.2.h").write_bytes(b"")
    (tmp_path / "other" / "notes.txt").write_bytes(b"")
    tail._scan()
    assert sorted((f.src.file, f.src.tag("loss")) for f in tail.files.values()) == [
        ("other/events.out.tfevents.2.h", "other/loss"),
        ("train/events.out.tfevents.1.h", "train/loss"),
        ("validation/events.out.tfevents.1.h", "validation/loss")]


def test_a_learned_logdir_gives_only_the_runs_files_a_named_one_every_file(tmp_path, caplog):
    """sync_tensorboard in a reused log_dir: of the files there at the first look, only
    those this process wrote or created since the run began; any file that appears later;
    and watch_tensorboard on the same logdir takes the rest too."""
    began = time.time()

    class FakeRun:   # the tail needs a run only to submit jobs; none are submitted here
        run_id, attempt, writer = "x", 1, None
        record = types.SimpleNamespace(started_at=began)

    tail = TfeventsTail(FakeRun())
    tail.start = lambda: None
    host, pid, started = socket.gethostname(), os.getpid(), int(process_started())
    names = {"earlier run": f"events.out.tfevents.{int(began) - 100}.{host}.{pid + 1}.0.v2",
             "earlier TF1 run": f"events.out.tfevents.{int(began) - 100}.{host}",
             "pid reused": f"events.out.tfevents.{started - 100}.{host}.{pid}.0.v2",
             "this process, before init": f"events.out.tfevents.{started}.{host}.{pid}.1.v2",
             "since the run began": f"events.out.tfevents.{int(began)}.elsewhere.7.0.v2",
             "no time, old": "old.tfevents", "no time, new": "new.tfevents"}
    logs = tmp_path / "logs"
    os.makedirs(logs / "train")
    for name in names.values():
        (logs / "train" / name).write_bytes(b"")
    os.utime(logs / "train" / "old.tfevents", (began - 100, began - 100))

    def found():
        return sorted(os.path.basename(f.path) for f in tail.files.values())

    caplog.set_level(logging.INFO, logger="tfblackbox")
    assert tail.watch(logs / "train", learned=True)
    tail._scan()
    assert found() == sorted(names[k] for k in ("this process, before init",
                                                "since the run began", "no time, new"))
    said = [r.getMessage() for r in caplog.records if "earlier run's" in r.getMessage()]
    assert len(said) == 1 and f"4 event file(s) under {logs}" in said[0]
    (logs / "validation").mkdir()
    (logs / "validation" / "events.out.tfevents.1.later").write_bytes(b"")
    tail._scan()   # appeared after the first look: the run's, whatever its name says
    assert "events.out.tfevents.1.later" in found()
    assert not tail.watch(logs)   # covered by the learned root, and now read whole
    tail._scan()
    assert found() == sorted([*names.values(), "events.out.tfevents.1.later"])


def test_the_patch_is_on_while_the_run_records_and_off_after(tmp_path):
    import tensorflow as tf   # imported before init: the patch goes on at once
    assert tf.summary.create_file_writer
    from tensorflow.python.ops import gen_summary_ops
    original = gen_summary_ops.create_summary_file_writer
    recorder.init(store=str(tmp_path / "store"), sync_tensorboard=True)
    assert gen_summary_ops.create_summary_file_writer.__wrapped__ is original
    recorder.finish()
    assert gen_summary_ops.create_summary_file_writer is original


def test_more_records_than_the_writer_queue_holds_are_all_recorded(tmp_path):
    """Records come in faster than the writer's queue takes them: the tail waits for its
    jobs (a quarter of the queue) and leaves the rest in the file until there is room."""
    import tensorflow as tf
    from tensorboard.plugins.text.summary_v2 import text_pb
    logdir = tmp_path / "logs"
    os.makedirs(logdir)
    events = []
    for step in range(60):   # ~6 MB of 100 KB texts
        ev = tf.compat.v1.Event(wall_time=1000.0 + step, step=step)
        ev.summary.ParseFromString(text_pb("big", f"{step:04d}" * 25_000).SerializeToString())
        events.append(ev.SerializeToString())
    path = logdir / "events.out.tfevents.1.host"
    tfrecord.write_records(path, events)
    run = recorder.init(store=str(tmp_path / "store"), run_id="q", max_queue_bytes=4 << 20)
    recorder.watch_tensorboard(logdir)
    recorder.finish()
    assert run.writer.dropped_jobs == 0
    store = Store.open(str(tmp_path / "store"))
    assert store.media("q")["step"].to_pylist() == list(range(60))
    [out] = write_logdir(store, "q", tmp_path / "out")
    assert open(out, "rb").read() == path.read_bytes()
