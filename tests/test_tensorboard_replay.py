"""replay --to tensorboard, read back by TensorBoard itself: its EventAccumulators (the legacy
one and the one its server uses) and a real `tensorboard` server over HTTP. A TF1 run is
compared with SummarySaverHook's own files of the same summaries; a TF2 capture comes back
byte for byte; a second replay writes nothing; a SIGKILL at any point of a replay leaves no
file TensorBoard would misread, and the next replay completes it with every step once."""

import os
import subprocess
import sys

import pytest

import tb_helpers
import tf2_files
from tfblackbox.cli.main import main as cli_main, replay_main
from tfblackbox.cli.exits import EXIT_OK, EXIT_USAGE
from tfblackbox.schema import Store
from tfblackbox.schema.formats import tfrecord
from tfblackbox.schema.codecs.rows import ColumnBuffers


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    """(base dir, run id, the replayed run's directory)."""
    base = tmp_path_factory.mktemp("tf1")
    run_id = tb_helpers.train_tf1(base)
    out = base / "logdir"
    assert replay_main(["--store", str(base / "store"), "--to", "tensorboard", "--out",
                        str(out)]) == EXIT_OK
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    assert run_dir.name == f"tf1_hooks-{run_id}"   # readable: the run's name and id
    return base, run_id, run_dir


def test_tf1_run_shows_what_summarysaverhooks_files_show(tf1):
    """Every tag, step and value as TensorBoard's server sees them (all kinds migrated to
    plugin tensors), against SummarySaverHook's files of the same session (its steps are
    one later: see tests/test_summary_hook.py)."""
    base, run_id, run_dir = tf1
    ours = tb_helpers.tensor_views(run_dir, step_shift=1)
    theirs = tb_helpers.tensor_views(base / "tb")
    assert set(ours) - set(theirs) == {"_hparams_/session_start_info"}   # the run's config
    assert set(theirs) <= set(ours)
    # the run's graph: SummarySaverHook's FileWriter writes the whole graph; the replay
    # writes DumpHook's partition graph (the store keeps no other)
    assert ours.pop("__run_graph__")[1] and theirs.pop("__run_graph__")[1]
    kinds = {}
    for tag, (plugin, values) in theirs.items():
        assert ours[tag][0] == plugin, tag
        assert ours[tag][1] == values, tag
        kinds[plugin] = kinds.get(plugin, 0) + 1
    assert kinds == {"scalars": 5, "histograms": 3, "images": 3, "audio": 1, "text": 1,
                     "pr_curves": 1, "": 1}
    assert len(theirs["loss"][1]) == tb_helpers.STEPS


def test_tf1_run_in_the_legacy_accumulator(tf1):
    """TensorBoard's EventAccumulator: the same scalars, histograms, image (PNG and GIF) and
    audio bytes as SummarySaverHook's files; wall times are the recorded ones; the config is
    an hparams session and DumpHook's partition graph is the run's graph."""
    base, run_id, run_dir = tf1
    ours, theirs = tb_helpers.accumulator(run_dir), tb_helpers.accumulator(base / "tb")
    store = Store.open(str(base / "store"))
    for kind in ("histograms", "images", "audio"):
        assert sorted(ours.Tags()[kind]) == sorted(theirs.Tags()[kind]), kind
    # a scalars-plugin tensor is a scalar row in the store, which keeps the value, not the
    # form: it comes back as a simple_value (the server shows both the same, test above)
    assert set(ours.Tags()["scalars"]) == set(theirs.Tags()["scalars"]) | {"v2scalar"}
    assert "v2scalar" in theirs.Tags()["tensors"]
    walls = {(r["step"], r["tag"]): r["wall_time"] for r in store.scalars(run_id).to_pylist()}
    for tag in theirs.Tags()["scalars"]:
        a, b = ours.Scalars(tag), theirs.Scalars(tag)
        assert [(e.step + 1, _nan(e.value)) for e in a] == [(e.step, _nan(e.value)) for e in b]
        assert [e.wall_time for e in a] == [walls[e.step, tag] for e in a]
    for tag in ours.Tags()["histograms"]:
        assert [(e.step + 1, e.histogram_value) for e in ours.Histograms(tag)] == \
            [(e.step, e.histogram_value) for e in theirs.Histograms(tag)]
    gif = 0
    for tag in ours.Tags()["images"]:
        a, b = ours.Images(tag), theirs.Images(tag)
        assert [(e.step + 1, e.encoded_image_string, e.width, e.height) for e in a] == \
            [(e.step, e.encoded_image_string, e.width, e.height) for e in b]
        gif += sum(e.encoded_image_string.startswith(b"GIF8") for e in a)
    assert gif == tb_helpers.STEPS
    [clip] = ours.Tags()["audio"]
    assert [(e.step + 1, e.encoded_audio_string, e.content_type, e.sample_rate,
             e.length_frames) for e in ours.Audio(clip)] == \
        [(e.step, e.encoded_audio_string, e.content_type, e.sample_rate, e.length_frames)
         for e in theirs.Audio(clip)]
    assert ours.Tags()["graph"]
    from tensorboard.plugins.hparams import plugin_data_pb2
    meta = tb_helpers.plugin_accumulator(run_dir).SummaryMetadata("_hparams_/session_start_info")
    start = plugin_data_pb2.HParamsPluginData.FromString(meta.plugin_data.content)
    assert dict(start.session_start_info.hparams)["lr"].number_value == 0.05
    assert start.session_start_info.hparams["opt.name"].string_value == "sgd"
    assert start.session_start_info.hparams["opt.nesterov"].bool_value is False


def _nan(v):
    return "nan" if v != v else v


def test_a_tensorboard_server_serves_the_scalars(tf1):
    base, run_id, run_dir = tf1
    store = Store.open(str(base / "store"))
    want = [[r["wall_time"], r["step"], r["value"]] for r in store.scalars(run_id).to_pylist()
            if r["tag"] == "loss"]
    with tb_helpers.TensorBoardServer(run_dir.parent) as tb:
        runs = tb.wait_for(lambda: run_dir.name in tb.get("/data/runs") and tb.get("/data/runs"))
        got = tb.wait_for(lambda: tb.get("/data/plugin/scalars/scalars", run=run_dir.name,
                                         tag="loss"))
        tags = tb.get("/data/plugin/scalars/tags")
    assert run_dir.name in runs
    assert [[w, s, pytest.approx(v, rel=1e-6)] for w, s, v in want] == got
    assert set(tags[run_dir.name]) >= {"loss", "v2scalar"}


def _training_files(paths):
    """Event files less the system metrics' own TensorBoard run (<run dir>/system/)."""
    return [p for p in paths if os.path.basename(os.path.dirname(p)) != "system"]


def test_a_tf2_capture_comes_back_byte_for_byte(tmp_path):
    logdir = tmp_path / "logs"
    tf2_files.run_script("loop", logdir, "--store", tmp_path / "store")
    out = tmp_path / "out"
    assert replay_main(["--store", str(tmp_path / "store"), "--to", "tensorboard",
                        "--out", str(out)]) == EXIT_OK
    [src] = tf2_files.event_files(logdir)
    [dst] = _training_files(tf2_files.event_files(out / "tf2"))
    assert os.path.basename(dst) == os.path.basename(src)
    assert open(dst, "rb").read() == open(src, "rb").read()
    assert tb_helpers.tensor_views(out / "tf2") == tb_helpers.tensor_views(logdir)
    # nothing of the capture is written twice as generated events
    assert _training_files(tb_helpers.event_files(out)) == [dst]


def test_recorder_log_images_reach_the_images_plugin(tmp_path):
    """wandb.Images given to recorder.log: TensorBoard's images plugin shows each key at the
    step it was logged, with the PNG bytes wandb wrote (a list: every image, in order)."""
    import io

    import numpy as np
    import wandb
    from PIL import Image

    from tfblackbox import recorder
    run = recorder.init(store=str(tmp_path / "store"), run_id="pictures", name="pictures",
                        console="off")
    logged = {}   # step -> the arrays logged under "picture" and "pair"
    for i in range(3):
        run.log({"loss": 1.0 / (i + 1)})
        a = (np.mgrid[0:8, 0:10, 0:3].sum(0) * (20 + 10 * i)).astype(np.uint8)   # 8 x 10
        logged[run.step] = (a, 255 - a)
        run.log({"picture": wandb.Image(a, caption=f"at {i}"),
                 "pair": [wandb.Image(a), wandb.Image(255 - a)],
                 "page": wandb.Html("<p>not an image</p>")})
    recorder.finish()
    out = tmp_path / "logdir"
    assert replay_main(["--store", str(tmp_path / "store"), "--to", "tensorboard", "--out",
                        str(out)]) == EXIT_OK
    [(run_dir, tags)] = tb_helpers.blob_sequences(out, "images").items()
    assert run_dir == "pictures" and sorted(tags) == ["pair", "picture"]
    rows = Store.open(str(tmp_path / "store")).read("pictures", "wandb_objects").to_pylist()
    for tag, n in (("picture", 1), ("pair", 2)):
        mine = sorted((r for r in rows if r["tag"] == tag),
                      key=lambda r: (r["step"], r["index"] or 0))
        want = [(step, mine[k * n]["wall_time"], [b"10", b"8"] + [r["files"][0] for r in
                                                                   mine[k * n:(k + 1) * n]])
                for k, step in enumerate(sorted(logged))]
        assert tags[tag] == want, tag
        for step, _wall, blobs in tags[tag]:   # the pixels are the ones logged
            pixels = [np.asarray(Image.open(io.BytesIO(b))) for b in blobs[2:]]
            assert all((p == a).all() for p, a in zip(pixels, logged[step][:n]))


# -- incremental, idempotent, kill-safe ------------------------------------------------------

def synthetic_run(store_dir, run_id, steps, tags=("loss", "acc"), finish=True):
    """Rows of a run as an importer writes them (no TensorFlow): a scalar per tag and step."""
    store = Store.create(store_dir)
    if not store.has_run(run_id):
        store.create_run(run_id, name="synthetic", config={"lr": 0.5})
    writer_id, attempt = store.begin_attempt(run_id)
    buf = ColumnBuffers(attempt)
    for s in steps:
        for i, tag in enumerate(tags):
            buf.add_scalar(s, 1000.0 + s, tag, 1.0 / (s + 1) + i)
    store.write_segment(run_id, "scalars", buf.take()["scalars"], writer_id)
    store.end_attempt(writer_id)
    if finish:
        store.finish_run(run_id, 0)
    return store


def _steps_by_tag(run_dir):
    """{tag: steps} of the scalars, as TensorBoard's server reads them."""
    return {tag: [s for s, _v in values] for tag, (plugin, values) in
            tb_helpers.tensor_views(run_dir).items() if plugin == "scalars"}


def _replay(store_dir, out, kill_at=None):
    env = dict(os.environ)
    if kill_at:
        env["TFBLACKBOX_TEST_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-c", "import sys; from tfblackbox.cli.main import replay_main; "
         "sys.exit(replay_main(sys.argv[1:]))", "--store", str(store_dir), "--to",
         "tensorboard", "--out", str(out)], env=env, capture_output=True, text=True)


def _files_state(out):
    return {p: (os.path.getsize(p), os.path.getmtime(p)) for p in
            sorted(str(x) for x in out.rglob("*") if x.is_file())}


def _no_half_files(out, killed=False):
    """Every event file TensorBoard would read holds whole, intact records only; a killed
    replay's temporary file (a name TensorBoard does not read) is gone after the next one."""
    for path in tb_helpers.event_files(out):
        reader = tfrecord.RecordReader(path)
        list(reader)   # raises on a corrupt record
        assert reader.partial == 0, path
    temps = list(out.rglob(".tfblackbox-*.tmp"))
    assert not temps or killed and all("tfevents" not in p.name for p in temps)


def test_a_second_replay_writes_nothing_and_new_steps_go_to_a_new_file(tmp_path):
    store_dir, out = tmp_path / "store", tmp_path / "out"
    synthetic_run(store_dir, "r1", range(0, 50))
    args = ["--store", str(store_dir), "--to", "tensorboard", "--out", str(out)]
    assert replay_main(args) == EXIT_OK
    before = _files_state(out)
    assert replay_main(args) == EXIT_OK
    assert _files_state(out) == before
    synthetic_run(store_dir, "r1", range(50, 80))
    assert replay_main(args) == EXIT_OK
    run_dir = out / "synthetic-r1"
    files = tb_helpers.event_files(run_dir)
    assert len(files) == 2 and files[1] > files[0]   # names sort in the order written
    assert _steps_by_tag(run_dir) == {"loss": list(range(80)), "acc": list(range(80))}
    # not float32 values: float64 scalar tensors, exact
    plugin, values = tb_helpers.tensor_views(run_dir)["acc"]
    assert [v for _s, v in values] == [1.0 / (s + 1) + 1 for s in range(80)]


@pytest.mark.parametrize("kill_at", ["temp", "pending", "renamed"])
def test_a_killed_replay_of_new_steps_loses_none_and_writes_none_twice(tmp_path, kill_at):
    store_dir, out = tmp_path / "store", tmp_path / "out"
    synthetic_run(store_dir, "r1", range(0, 30))
    assert _replay(store_dir, out).returncode == 0
    synthetic_run(store_dir, "r1", range(30, 60))
    proc = _replay(store_dir, out, kill_at)
    assert proc.returncode == -9, proc.stderr
    _no_half_files(out, killed=True)   # TensorBoard sees whole records, steps at most once
    seen = _steps_by_tag(out / "synthetic-r1")
    assert seen["loss"] == sorted(set(seen["loss"])) and seen["loss"][:30] == list(range(30))
    assert _replay(store_dir, out).returncode == 0
    _no_half_files(out)
    assert _steps_by_tag(out / "synthetic-r1") == {"loss": list(range(60)),
                                                   "acc": list(range(60))}


def _tb_written_file(path, steps):
    """An event file written by TensorBoard's own writer (no TF): scalars and an image."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    w = EventFileWriter(str(path))
    for s in steps:
        v = [summary_pb2.Summary.Value(tag="x", simple_value=float(s)),
             summary_pb2.Summary.Value(tag="pic", image=summary_pb2.Summary.Image(
                 height=1, width=1, colorspace=1, encoded_image_string=b"\x89PNG" + bytes(60)))]
        w.add_event(event_pb2.Event(wall_time=100.0 + s, step=s,
                                    summary=summary_pb2.Summary(value=v)))
    w.close()
    [f] = tb_helpers.event_files(path)
    return f


@pytest.mark.parametrize("kill_at", ["append", "mirrored"])
def test_a_killed_replay_of_a_grown_captured_file(tmp_path, kill_at):
    """An imported file that grew (half of it, then all of it, imported): the killed replay
    leaves the mirror a prefix of the true file, the next one completes it byte for byte."""
    src = _tb_written_file(tmp_path / "writer", range(40))
    data = open(src, "rb").read()
    records = tfrecord.read_records(src)
    logdir = tmp_path / "logs"
    logdir.mkdir()
    live = logdir / os.path.basename(src)
    cut = records[20][0] + 7   # mid-record: its first bytes are kept unframed for now
    live.write_bytes(data[:cut])
    store_dir, out = tmp_path / "store", tmp_path / "out"
    imp = ["import-tfevents", str(logdir), "--store", str(store_dir), "--run", "cap"]
    assert cli_main(imp) == EXIT_OK
    assert _replay(store_dir, out).returncode == 0
    mirror = out / "logs-cap" / os.path.basename(src)
    assert mirror.read_bytes() == data[:cut]   # the file as it was, half record included
    live.write_bytes(data)
    assert cli_main(imp) == EXIT_OK
    proc = _replay(store_dir, out, kill_at)
    assert proc.returncode == -9, proc.stderr
    assert data.startswith(mirror.read_bytes())
    assert _replay(store_dir, out).returncode == 0
    assert mirror.read_bytes() == data
    assert _training_files(tb_helpers.event_files(out)) == [str(mirror)]
    assert _steps_by_tag(mirror.parent) == {"x": list(range(40))}
    before = _files_state(out)
    assert _replay(store_dir, out).returncode == 0 and _files_state(out) == before


def test_bad_out_and_unknown_run(tmp_path, capsys):
    store_dir = tmp_path / "store"
    synthetic_run(store_dir, "r1", range(3))
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = ["--store", str(store_dir), "--to", "tensorboard"]
    assert replay_main(args + ["--out", str(afile)]) == EXIT_USAGE
    assert "exists and is not a directory" in capsys.readouterr().err
    assert replay_main(args) == EXIT_USAGE
    assert "needs --out" in capsys.readouterr().err
    assert replay_main(args + ["--out", str(tmp_path / "o"), "--run", "nope"]) == EXIT_USAGE
    assert "'nope' is not in store" in capsys.readouterr().err


def test_replay_to_tensorboard_imports_no_tensorflow(tmp_path):
    store_dir = tmp_path / "store"
    synthetic_run(store_dir, "r1", range(3))
    code = ("import sys; from tfblackbox.cli.main import replay_main; "
            f"assert replay_main(['--store', {str(store_dir)!r}, '--to', 'tensorboard', "
            f"'--out', {str(tmp_path / 'o')!r}]) == 0; "
            "assert 'tensorflow' not in sys.modules and 'tensorboard' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
