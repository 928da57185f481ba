"""tfdbg v2 with real TensorFlow, judged by TF's own files and DebugDataReader.

The differential: the same training (a Keras fit, a custom tf.function loop) run once under
TF's own `enable_dump_debug_info` into a directory and once under
`recorder.enable_dump_debug_info`. The recorded child keeps the files TF wrote for it
(TFBLACKBOX_KEEP_STAGING=1), so the rebuild is compared with them byte for byte and
through DebugDataReader (everything equal, ids and wall times included); against the other
process's own dump root, what two processes can share is compared (tfdbg_v2_files.py):
every record with wall times and uuids taken out, and what DebugDataReader returns.
"""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tfdbg_v2_files as h
import no_tensorflow
from tfblackbox.cli.main import main as cli, replay_main
from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tfblackbox.schema import Store
from tfblackbox.schema.formats import tfrecord

STEPS = 8


def _pair(base, workload, mode, *extra):
    """TF's own dump root and the recorder's store of the same training."""
    plain, store = base / "plain", base / "store"
    h.run_script(workload, plain, "--mode", mode, "--steps", STEPS, *extra)
    proc = h.run_script(workload, base / "unused", "--store", store, "--mode", mode, "--steps",
                        STEPS, *extra, TFBLACKBOX_KEEP_STAGING="1")
    assert "run dbg" in proc.stdout and "done" in proc.stdout
    assert not (base / "unused").exists()
    return {"plain": plain, "store": str(store), "staging": keep_staged(proc, base / "staged"),
            "stderr": proc.stderr}


def keep_staged(proc, where):
    """The files TF wrote for the recorder, moved off tmpfs (the next session on the machine
    removes a dead process's staging dir)."""
    staged = h.staging_of(proc)
    shutil.copytree(staged, where)
    shutil.rmtree(staged)
    return str(where)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    made = {}

    def get(name, workload, mode, *extra):
        if name not in made:
            made[name] = _pair(tmp_path_factory.mktemp(name), workload, mode, *extra)
        return made[name]

    return get


@pytest.fixture
def keras_full(dumps):
    # a buffer larger than the run: tf.data's threads interleave their traces differently in
    # each process, so TF's last-1000 window would not hold the same traces
    return dumps("keras_full", "keras", "FULL_TENSOR", "--buffer", "100000")


@pytest.fixture
def keras_curt(dumps):
    return dumps("keras_curt", "keras", "CURT_HEALTH", "--buffer", "100000")


@pytest.fixture
def loop_health(dumps):
    return dumps("loop_health", "loop", "FULL_HEALTH")


@pytest.fixture
def loop_small_buffer(dumps):
    return dumps("loop_small_buffer", "loop", "NO_TENSOR", "--buffer", "50")


def rebuild(store, out, *extra, capsys=None):
    if capsys is not None:
        capsys.readouterr()   # what earlier commands printed
    code = replay_main(["--store", str(store), "--to", "debug-dump", "--out", str(out),
                        "--json", *extra])
    report = json.loads(capsys.readouterr().out) if capsys is not None else None
    return code, report


def the_root(out):
    [root] = [p for p in os.listdir(out) if p.startswith("tfdbg2_")]
    return os.path.join(out, root)


def check_against_staging(d, tmp_path, capsys):
    """The rebuild is the staging files byte for byte, and reads the same to DebugDataReader."""
    out = tmp_path / "out"
    code, report = rebuild(d["store"], out, capsys=capsys)
    assert code == EXIT_OK, report
    root = the_root(out)
    assert h.tree(root) == h.tree(d["staging"])
    assert sorted(os.listdir(out)) == [os.path.basename(root)]   # nothing else, no temp dirs
    rebuilt = h.reader_view(root)
    assert rebuilt == h.reader_view(d["staging"])
    assert os.path.basename(root) == "tfdbg2_" + rebuilt["tfdbg_run_id"]
    return root, rebuilt


def check_against_tf(d, root, ordered_traces):
    """What two processes of the same training can share: every record but wall times and
    uuids, and what DebugDataReader returns but ids, wall times and the run id."""
    mine, theirs = h.normalized(root), h.normalized(d["plain"])
    for kind in theirs:
        if kind == "graph_execution_traces" and not ordered_traces:
            assert collections.Counter(mine[kind]) == collections.Counter(theirs[kind]), kind
        else:
            assert mine[kind] == theirs[kind], kind
    a, b = h.reader_view(root), h.reader_view(d["plain"])
    assert a["tfdbg_run_id"] != b["tfdbg_run_id"]
    assert a["source_files"] == b["source_files"]
    assert [o[:2] for o in a["ops"]] == [o[:2] for o in b["ops"]]
    assert [(e[0], e[3], e[4], e[7]) for e in a["executions"]] == \
        [(e[0], e[3], e[4], e[7]) for e in b["executions"]]
    assert a["execution_values"] == b["execution_values"]
    traces_a = [t[:3] + (t[5], t[6], v) for t, v in zip(a["traces"], a["trace_values"])]
    traces_b = [t[:3] + (t[5], t[6], v) for t, v in zip(b["traces"], b["trace_values"])]
    if ordered_traces:
        assert traces_a == traces_b
    else:
        assert collections.Counter(map(repr, traces_a)) == collections.Counter(map(repr, traces_b))
    for side, v in (("rebuilt", a), ("TF's own", b)):   # for the record (pytest -s)
        print(f"\n  {side:8} {v['tfdbg_run_id']}: {len(v['executions'])} executions, "
              f"{len(v['traces'])} traces, {len(v['ops'])} op creations, {len(v['graphs'])} "
              f"outermost graphs, {len(v['stack_frames'])} stack frames, "
              f"{len(v['source_files'])} source files", end="")
    return a, b


def test_keras_fit_full_tensor(keras_full, tmp_path, capsys):
    root, rebuilt = check_against_staging(keras_full, tmp_path, capsys)
    a, b = check_against_tf(keras_full, root, ordered_traces=False)
    # FULL_TENSOR: the traced tensors' values, not just their count
    values = [v for v in a["trace_values"] if v and v[0][1] != ()]
    assert len(a["traces"]) > 1000 and len(values) > 500
    assert {e[0] for e in a["executions"]} >= {"OptionalHasValue", "OptionalGetValue"}
    assert sum(1 for e in a["executions"] if e[0].startswith("__inference_")) == STEPS


def test_keras_fit_curt_health(keras_curt, tmp_path, capsys):
    root, rebuilt = check_against_staging(keras_curt, tmp_path, capsys)
    check_against_tf(keras_curt, root, ordered_traces=False)
    assert {t[5] for t in rebuilt["traces"]} == {2}   # CURT_HEALTH
    # the decoded columns are DebugDataReader's values: [tensor id, NaN/Inf flag]
    store = Store.open(keras_curt["store"])
    rows = store.read("dbg", "tfdbg_v2_records", latest_only=False).to_pylist()
    traces = [r for r in rows if r["what"] == "graph_execution_trace"]
    got = [(r["op_name"], r["output_slot"], tuple(r["debug_values"])) for r in traces]
    want = [(t[1], t[2], t[6]) for t in rebuilt["traces"]]
    assert got == want and all(len(v) == 2 for _o, _s, v in got)
    assert [r["nonfinite"] for r in traces] == [int(v[1]) for _o, _s, v in got]
    # Keras' sparse cross-entropy fills a NaN constant (for out-of-range labels): CURT_HEALTH
    # flags exactly those, every step
    flagged = {r["op_name"].rsplit("/", 1)[-1] for r in traces if r["nonfinite"]}
    assert flagged == {"Const", "BroadcastTo"}
    assert sum(1 for r in traces if r["nonfinite"]) == 2 * STEPS


def test_loop_full_health_finds_the_nan_and_inf(loop_health, tmp_path, capsys):
    root, rebuilt = check_against_staging(loop_health, tmp_path, capsys)
    a, b = check_against_tf(loop_health, root, ordered_traces=True)
    store = Store.open(loop_health["store"])
    rows = store.read("dbg", "tfdbg_v2_records", latest_only=False).to_pylist()
    traces = [r for r in rows if r["what"] == "graph_execution_trace"]
    assert [tuple(r["debug_values"]) for r in traces] == [t[6] for t in rebuilt["traces"]]
    op_type = {(r["graph_id"], r["op_name"]): r["op_type"] for r in rows
               if r["what"] == "graph_op_creation"}
    # FULL_HEALTH: [id, device, dtype, rank, size, -Inf, +Inf, NaN, <0, 0, >0]
    assert [r["nonfinite"] for r in traces] == [int(sum(r["debug_values"][5:8])) for r in traces]
    bad = [r for r in traces if r["nonfinite"]]
    # log([1, 0, -1]) = [0, -inf, nan]; the sparse cross-entropy's NaN fill for bad labels
    # (a constant, broadcast to the batch) is there every step too
    found = collections.Counter((op_type[r["graph_id"], r["op_name"]], r["nonfinite"])
                                for r in bad)
    assert found == {("Log", 2): STEPS, ("Const", 1): STEPS, ("BroadcastTo", 32): STEPS}
    capsys.readouterr()
    assert cli(["show", "dbg", "--store", loop_health["store"], "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)["tfdbg_v2"]["dump_roots"][0]
    assert info["modes"] == {"FULL_HEALTH": len(a["executions"]) + len(a["traces"])}
    assert info["executions"] == len(a["executions"]) and info["traces"] == len(a["traces"])
    assert info["nonfinite"]["traces"] == len(bad) > 0
    assert info["nonfinite"]["executions"] == STEPS   # the function returns the log too
    assert cli(["show", "dbg", "--store", loop_health["store"]]) == EXIT_OK
    text = capsys.readouterr().out
    assert "NaN/Inf in 8 execution(s)" in text and "tfdbg v2 tfdbg2_" in text


def test_a_small_circular_buffer_keeps_what_tf_keeps(loop_small_buffer, tmp_path, capsys):
    root, rebuilt = check_against_staging(loop_small_buffer, tmp_path, capsys)
    a, b = check_against_tf(loop_small_buffer, root, ordered_traces=True)
    assert len(a["traces"]) == 50 and len(a["executions"]) <= 50


def test_every_tensor_debug_mode_in_one_run(tmp_path, capsys):
    store = tmp_path / "store"
    proc = h.run_script("modes", tmp_path / "unused", "--store", store)
    sessions = [line.split() for line in proc.stdout.splitlines() if line.startswith("mode ")]
    assert [s[1] for s in sessions] == ["NO_TENSOR", "CURT_HEALTH", "CONCISE_HEALTH",
                                        "FULL_HEALTH", "SHAPE", "FULL_TENSOR"]
    assert "again True" in proc.stdout and "refused True" in proc.stdout
    code, report = rebuild(store, tmp_path / "out", capsys=capsys)
    assert code == EXIT_OK
    roots = report["runs"][0]["dump_roots"]
    # one dump root per session: DebugDataReader reads one tfdbg run per root
    assert sorted(r["tfdbg_run_id"] for r in roots) == sorted(s[2] for s in sessions)
    for _mode_word, mode, run_id, _records in sessions:
        view = h.reader_view(tmp_path / "out" / f"tfdbg2_{run_id}")
        assert view["tfdbg_run_id"] == run_id
        modes = {e[3] for e in view["executions"]} | {t[5] for t in view["traces"]}
        from tensorflow.core.protobuf import debug_event_pb2
        assert modes == {debug_event_pb2.TensorDebugMode.Value(mode)}
        assert [e[0] for e in view["executions"]][-1] == "Sqrt"
    s = Store.open(str(store))
    blobs = s.read("dbg", "tfdbg_v2_blobs", latest_only=False)["sha256"].to_pylist()
    assert len(blobs) == len(set(blobs)) > 10     # six snapshots of the sources, stored once
    sources = [r for r in s.read("dbg", "tfdbg_v2_records", latest_only=False).to_pylist()
               if r["what"] == "source_file"]
    assert len({r["blob"] for r in sources if r["blob"]}) == len(blobs)
    assert len(sources) > 5 * len(blobs)


# -- import-dumps ---------------------------------------------------------------------------

def test_import_a_tf_dump_root_and_rebuild_it(keras_full, tmp_path, capsys):
    plain = str(keras_full["plain"])
    fresh = str(tmp_path / "fresh")
    assert cli(["import-dumps", plain, "--store", fresh, "--run", "old", "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "tfdbg v2" and result["warnings"] == []
    code, _r = rebuild(fresh, tmp_path / "back", "--run", "old", capsys=capsys)
    assert code == EXIT_OK
    root = the_root(tmp_path / "back")
    assert h.tree(root) == h.tree(plain)
    assert h.reader_view(root) == h.reader_view(plain)
    # into the recorder's store: the same sources were recorded there, none is stored again
    shared = str(tmp_path / "shared")
    shutil.copytree(keras_full["store"], shared)
    before = Store.open(shared).read("dbg", "tfdbg_v2_blobs", latest_only=False).num_rows
    assert cli(["import-dumps", plain, "--store", shared, "--run", "tf"]) == EXIT_OK
    assert "imported 6 tfdbg v2 file(s)" in capsys.readouterr().out
    s = Store.open(shared)
    assert not s.segments("tf", "tfdbg_v2_blobs")
    assert before > 100
    code, _r = rebuild(shared, tmp_path / "both", capsys=capsys)
    assert code == EXIT_OK
    assert h.tree(the_root(tmp_path / "both" / "tf")) == h.tree(plain)
    assert h.tree(the_root(tmp_path / "both" / "dbg")) == h.tree(keras_full["staging"])
    # imported again into the same run: one root, the latest attempt's files; compaction
    # merges both attempts' segments and the rebuild is the same
    assert cli(["import-dumps", plain, "--store", shared, "--run", "tf"]) == EXIT_OK
    assert cli(["compact", "--store", shared, "--run", "tf"]) == EXIT_OK
    assert len(Store.open(shared).segments("tf", "tfdbg_v2_records")) == 1
    code, report = rebuild(shared, tmp_path / "again", "--run", "tf", capsys=capsys)
    assert code == EXIT_OK and len(report["runs"][0]["dump_roots"]) == 1
    assert h.tree(the_root(tmp_path / "again")) == h.tree(plain)


def test_import_a_truncated_file_keeps_its_bytes(keras_curt, tmp_path, capsys):
    src = tmp_path / "cut"
    shutil.copytree(keras_curt["plain"], src)
    path = h.files(src)["execution"]
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 7)                  # the last record loses its end
    store = str(tmp_path / "store")
    assert cli(["import-dumps", str(src), "--store", store, "--run", "cut"]) == EXIT_OK
    err = capsys.readouterr().err
    assert os.path.basename(path) in err and "incomplete record" in err
    code, _r = rebuild(store, tmp_path / "out", capsys=capsys)
    assert code == EXIT_OK
    root = the_root(tmp_path / "out")
    assert h.tree(root) == h.tree(src)
    view = h.reader_view(root)        # DebugDataReader reads past a half-written record
    assert len(view["executions"]) == len(h.reader_view(keras_curt["plain"])["executions"]) - 1
    assert cli(["show", "cut", "--store", store]) == EXIT_OK
    assert "bytes after a last complete record" in capsys.readouterr().out


def test_import_refuses_what_it_cannot_keep_whole(keras_full, keras_curt, tmp_path, capsys):
    store = str(tmp_path / "store")

    def refused(root, *expected):
        assert cli(["import-dumps", str(root), "--store", store]) == EXIT_USAGE
        err = capsys.readouterr().err
        for e in expected:
            assert e in err, err
        return err

    corrupt = tmp_path / "corrupt"
    shutil.copytree(keras_full["plain"], corrupt)
    graphs = h.files(corrupt)["graphs"]
    with open(graphs, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    refused(corrupt, os.path.basename(graphs), "corrupt TFRecord at byte offset",
            "nothing imported")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    refused(foreign, "not a tfdbg dump", "notes.txt")
    stray = tmp_path / "stray"
    shutil.copytree(keras_curt["plain"], stray)
    (stray / "README").write_text("x")
    refused(stray, "README", "not a tfdbg v2 DebugEvent file")
    refused(tmp_path / "missing", "not a directory")
    two = tmp_path / "two"
    two.mkdir()
    for d in (keras_full["plain"], keras_curt["plain"]):
        for name in os.listdir(d):
            shutil.copy(os.path.join(d, name), two / name)
    from tensorflow.python.debug.lib import debug_events_reader
    with pytest.raises(ValueError, match="multiple .* tfdbg2 runs"):   # the anchor's fault
        debug_events_reader.DebugDataReader(str(two))
    ids = [h.reader_view(d)["tfdbg_run_id"] for d in (keras_full["plain"], keras_curt["plain"])]
    refused(two, "2 tfdbg runs", *ids)
    assert not os.path.exists(os.path.join(store, "data", "tfdbg_v2_records"))


def test_two_hosts_of_one_tfdbg_run_stay_one_root(keras_curt, tmp_path, capsys):
    """A distributed job's dump root: a file set per host, one tfdbg run id."""
    multi = tmp_path / "multi"
    shutil.copytree(keras_curt["plain"], multi)
    paths = h.files(keras_curt["plain"])
    host = os.path.basename(paths["metadata"]).split(".")[2]
    for path in paths.values():
        name = os.path.basename(path)
        shutil.copy(path, multi / name.replace(f".{host}.", ".worker-1.example.com."))
    store = str(tmp_path / "store")
    assert cli(["import-dumps", str(multi), "--store", store, "--run", "multi"]) == EXIT_OK
    code, report = rebuild(store, tmp_path / "out", capsys=capsys)
    assert code == EXIT_OK and len(report["runs"][0]["dump_roots"]) == 1
    assert report["runs"][0]["dump_roots"][0]["hosts"] == sorted([host, "worker-1.example.com"])
    root = the_root(tmp_path / "out")
    assert h.tree(root) == h.tree(multi)
    one, two = h.reader_view(keras_curt["plain"]), h.reader_view(root)
    assert len(two["traces"]) == 2 * len(one["traces"])   # every host's traces


# -- the recorder under stress ----------------------------------------------------------------

def test_sigkill_mid_run_leaves_a_store_that_verifies_and_a_readable_rebuild(tmp_path, capsys):
    from tfblackbox.recorder import scratch
    from tfblackbox.recorder.tf2 import staging
    store_dir = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, h.SCRIPT, "loop", str(tmp_path / "unused"),
                             "--store", str(store_dir), "--forever", "--flush-every", "3",
                             "--flush-secs", "0.3", "--mode", "CURT_HEALTH"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=h.child_env())
    flushed, staged = 0, None
    try:
        deadline = time.time() + 120
        for line in proc.stdout:
            if line.startswith("staging "):
                staged = line.split(" ", 1)[1].strip()
            if line.startswith("flushed "):
                flushed = int(line.split()[1])
                if flushed >= 15:
                    break
            assert time.time() < deadline, "the child never flushed"
        while time.time() < deadline:   # until the writer registered executions
            s = Store.open(str(store_dir), clean_orphans=False)
            rows = s.read("dbg", "tfdbg_v2_records", columns=["what"], latest_only=False)
            if rows["what"].to_pylist().count("execution") >= 9:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert cli(["verify", "--store", str(store_dir)]) == EXIT_OK
    capsys.readouterr()
    code, report = rebuild(store_dir, tmp_path / "out", capsys=capsys)
    assert code == EXIT_OK, report
    # the graphs a trace names were handed to the store before it: none is left out
    assert report["runs"][0]["warnings"] == []
    view = h.reader_view(the_root(tmp_path / "out"))   # DebugDataReader opens it
    functions = [e for e in view["executions"] if e[0].startswith("__inference_train_step")]
    assert len(functions) >= 9 and len(view["traces"]) > 0
    assert all(t[0] for t in view["traces"])           # every trace's op is in the graphs
    # the killed process's staging dir is removed by the next session on the machine
    assert staged and os.path.isdir(staged)
    scratch.remove_stale(os.path.dirname(staged), staging.PREFIX)
    assert not os.path.exists(staged)


def test_exit_without_finish_flushes_tf_and_records_everything(tmp_path, capsys):
    store = tmp_path / "store"
    proc = h.run_script("loop", tmp_path / "unused", "--store", store, "--mode", "SHAPE",
                        "--no-finish", TFBLACKBOX_KEEP_STAGING="1")
    staged = keep_staged(proc, tmp_path / "staged")
    assert Store.open(str(store)).run("dbg").status == "finished"
    code, _r = rebuild(store, tmp_path / "out", capsys=capsys)
    assert code == EXIT_OK
    root = the_root(tmp_path / "out")
    assert h.tree(root) == h.tree(staged)
    view = h.reader_view(root)
    assert sum(1 for e in view["executions"] if e[0].startswith("__inference_")) == STEPS


def test_no_circular_buffer_and_a_finish_from_another_thread(tmp_path, capsys):
    """circular_buffer_size=-1: TF writes every event as it comes, all are kept. A finish on
    another thread than the one that enabled: everything TF wrote is recorded, and the
    recorder says TF's dumping stays on there (TF's state is per thread)."""
    store = tmp_path / "store"
    proc = h.run_script("loop", tmp_path / "unused", "--store", store, "--buffer", "-1",
                        "--steps", 60, "--finish-thread", TFBLACKBOX_KEEP_STAGING="1")
    staged = keep_staged(proc, tmp_path / "staged")
    assert "stays on in MainThread" in proc.stderr and "finisher" in proc.stderr
    code, _r = rebuild(store, tmp_path / "out", capsys=capsys)
    assert code == EXIT_OK
    root = the_root(tmp_path / "out")
    assert h.tree(root) == h.tree(staged)
    view = h.reader_view(root)
    assert sum(1 for e in view["executions"] if e[0].startswith("__inference_")) == 60
    assert len(view["traces"]) > 1000      # more than a circular buffer of 1000 would hold


def test_max_bytes_stops_recording_with_one_warning(tmp_path, capsys):
    store = tmp_path / "store"
    budget = 400_000
    proc = h.run_script("loop", tmp_path / "unused", "--store", store, "--mode",
                        "FULL_TENSOR", "--max-bytes", budget, "--steps", 20)
    assert "done" in proc.stdout
    assert proc.stderr.count("max_bytes=400000 is reached") == 1
    s = Store.open(str(store))
    rows = s.read("dbg", "tfdbg_v2_records", columns=["what", "length"],
                  latest_only=False).to_pylist()
    recorded = sum(r["length"] for r in rows if r["what"] not in ("file", "unframed"))
    assert 0 < recorded <= budget
    assert not os.path.exists(h.staging_of(proc))   # removed at finish
    code, _r = rebuild(store, tmp_path / "out", capsys=capsys)
    assert code == EXIT_OK
    h.reader_view(the_root(tmp_path / "out"))        # what was kept still opens


# -- filters, safety, no TensorFlow -------------------------------------------------------------

def test_steps_and_node_filters(keras_full, tmp_path, capsys):
    full = h.reader_view(keras_full["staging"])
    steps = [i for i, e in enumerate(full["executions"]) if e[0].startswith("__inference_")]
    a, b = steps[2], steps[5]    # from the 3rd training step's execution to the 5th's
    code, _r = rebuild(keras_full["store"], tmp_path / "steps", "--steps", f"{a}:{b}",
                       capsys=capsys)
    assert code == EXIT_OK
    part = h.reader_view(the_root(tmp_path / "steps"))
    assert part["executions"] == full["executions"][a:b]
    assert part["ops"] == full["ops"] and part["source_files"] == full["source_files"]
    walls = [e[1] for e in full["executions"]]
    lo, hi = walls[a - 1], walls[b - 1]
    kept = [t for t in full["traces"] if lo < t[4] <= hi]
    assert part["traces"] == kept and kept
    # a trace's window is the function execution that ran it (tf.data's map function runs
    # on its own threads, outside any execution: those few land in a neighbour's window)
    ran = sum(1 for t in part["traces"]
              if full["executions"][walls.index(min(w for w in walls if w >= t[4]))][2]
              in t[3])
    assert ran >= 0.9 * len(part["traces"])
    code, _r = rebuild(keras_full["store"], tmp_path / "node", "--node", "MatMul",
                       capsys=capsys)
    assert code == EXIT_OK
    node = h.reader_view(the_root(tmp_path / "node"))
    assert node["traces"] == [t for t in full["traces"] if "MatMul" in t[1]] and node["traces"]
    assert node["executions"] == [e for e in full["executions"] if "MatMul" in e[0]]


def test_rebuild_refuses_names_that_leave_out_and_a_non_empty_out(keras_curt, tmp_path,
                                                                   capsys):
    store = str(tmp_path / "store")
    shutil.copytree(keras_curt["store"], store)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _r = rebuild(store, out)
    assert code == EXIT_USAGE and "not empty" in capsys.readouterr().err
    # a store whose recorded names would leave OUT (written by hand, as a damaged store)
    from tfblackbox.schema.codecs.rows import ColumnBuffers
    from tfblackbox.schema.codecs.tfdbg_v2_rows import file_row
    s = Store.open(store, access="write")
    buffers = ColumnBuffers(1)
    for session, name in (("x", "tfdbg_events.1.h/../../../evil.metadata"),
                          ("../../y", "tfdbg_events.1.h.metadata")):
        buffers.add_table("tfdbg_v2_records", file_row(type("Src", (), {
            "name": name, "host": "h", "kind": "metadata", "session": session})()))
    s.write_segment("dbg", "tfdbg_v2_records", buffers.take()["tfdbg_v2_records"])
    code, report = rebuild(store, out, "--force", capsys=capsys)
    assert code == EXIT_FAILED
    rejected = report["runs"][0]["rejected"]
    assert len(rejected) == 2 and "evil" in rejected[1] + rejected[0]
    assert any("'../../y'" in r for r in rejected)
    roots = [d["dir"] for d in report["runs"][0]["dump_roots"]]
    assert sorted(os.listdir(out)) == sorted(["keep.txt"] + roots) and "tfdbg2_x" in roots
    assert os.listdir(out / "tfdbg2_x") == []
    assert not list(tmp_path.glob("**/evil*")) and not list(tmp_path.glob("**/y"))


def test_show_and_rebuild_need_no_tensorflow(keras_curt, tmp_path):
    extra, attempts = no_tensorflow.shim(tmp_path)
    env = h.child_env(**extra)
    base = [sys.executable, "-m", "tfblackbox.cli.main"]
    show = subprocess.run(base + ["show", "dbg", "--store", keras_curt["store"], "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert show.returncode == EXIT_OK, show.stderr
    info = json.loads(show.stdout)["tfdbg_v2"]["dump_roots"][0]
    assert info["modes"] == {"CURT_HEALTH": info["executions"] + info["traces"]}
    assert info["executions"] > STEPS and info["nonfinite"]["traces"] == 2 * STEPS
    back = subprocess.run(base + ["replay", "--store", keras_curt["store"], "--to",
                                  "debug-dump", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert back.returncode == EXIT_OK, back.stderr
    assert h.tree(the_root(tmp_path / "out")) == h.tree(keras_curt["staging"])
    assert not attempts.exists(), attempts.read_text()
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True)
    assert probe.returncode != 0 and attempts.exists()   # the shim does block TensorFlow


# -- the store's rules, without TensorFlow ------------------------------------------------------

def test_a_resumed_attempts_debug_records_do_not_hide_earlier_rows(store_dir):
    """tfdbg v2 rows are numbered within their file, not by training step: they must not
    become the attempt's first step (which would hide every earlier attempt's rows)."""
    from tfblackbox.recorder import run as run_mod
    from tfblackbox.schema.codecs.tfdbg_v2_rows import BlobIndex, FileSource, add_rows
    run = run_mod.init(store=store_dir, run_id="r")
    for step in range(10):
        run.submit(lambda b, s=step: b.add_scalar(s, float(s), "loss", float(s)))
    run_mod.finish()
    run = run_mod.init(store=store_dir, run_id="r", resume="allow")
    run.submit(lambda b, s=5: b.add_scalar(s, 5.5, "loss", 50.0))
    event = b"\x09" + np.float64(1.0).tobytes() + b"\x4a\x05\x0a\x03Add"   # an Execution
    src = FileSource("tfdbg_events.1700000000.h.execution", "abcd1234")
    run.submit(lambda b: add_rows(b, src, [(0, 0, event)], BlobIndex(run.store)))
    run_mod.finish()
    store = Store.open(store_dir)
    assert [w.first_step for w in store.writers("r")] == [0, 5]
    got = store.scalars("r")
    assert got["step"].to_pylist() == list(range(5)) + [5]
    assert got["value"].to_pylist()[-1] == 50.0
    [row] = store.read("r", "tfdbg_v2_records", latest_only=False).to_pylist()
    assert (row["what"], row["op_type"], row["record"]) == ("execution", "Add", event)


def test_init_flush_finish_do_not_import_tensorflow(store_dir):
    code = ("import sys; from tfblackbox import recorder; "
            f"recorder.init(store={store_dir!r}); recorder.flush(); "
            "recorder.disable_dump_debug_info(); recorder.finish(); "
            "assert 'tensorflow' not in sys.modules, 'imported'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=h.child_env(), timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_enable_refuses_a_dump_root_and_a_bad_budget(store_dir):
    from tfblackbox import recorder
    from tfblackbox.schema import BlackboxError
    recorder.init(store=store_dir)
    with pytest.raises(BlackboxError, match="takes no dump_root"):
        recorder.enable_dump_debug_info("/tmp/my-tfdbg-dumps")
    with pytest.raises(BlackboxError, match="max_bytes=0"):
        recorder.enable_dump_debug_info("NO_TENSOR", max_bytes=0)


def test_record_order_survives_a_corrupt_and_a_half_written_file(tmp_path, monkeypatch):
    """The tail in-process on hand-made files (no TF): a corrupt record stops a file with a
    warning and its rest is kept unframed; a half-written last record too, at the end."""
    monkeypatch.setenv("TFBLACKBOX_KEEP_STAGING", "1")   # to compare with the files after
    from tfblackbox.recorder import run as run_mod
    from tfblackbox.recorder.tf2.tfdbg_v2_tail import TfdbgV2Tail
    from tfblackbox.schema.codecs.tfdbg_v2_restore import dump_roots, file_chunks
    root = tmp_path / "staging"
    root.mkdir()
    meta = b"\x1a\x0a\x1a\x08abcd1234"                          # DebugMetadata(run id)
    execs = [b"\x09" + np.float64(i).tobytes() + b"\x4a\x04\x0a\x02Op" for i in range(5)]
    good = b"".join(tfrecord.frame(e) for e in execs)
    names = {k: f"tfdbg_events.1700000000.host.{k}" for k in ("metadata", "execution", "graphs")}
    (root / names["metadata"]).write_bytes(tfrecord.frame(meta))
    bad = bytearray(good)
    bad[len(tfrecord.frame(execs[0])) + 14] ^= 0xFF           # record 1's data
    (root / names["execution"]).write_bytes(bytes(bad))
    (root / names["graphs"]).write_bytes(good + tfrecord.frame(execs[0])[:-3])
    run = run_mod.init(store=str(tmp_path / "store"), run_id="t")
    tail = TfdbgV2Tail(run, str(root), "abcd1234", poll_secs=60)
    tail.poll()
    assert tail.drain(timeout=30)
    run_mod.finish()
    [dump] = dump_roots(Store.open(str(tmp_path / "store")), "t")
    assert dump.tfdbg_run_id == "abcd1234"
    for kind, name in names.items():
        data = b"".join(c for _w, c in file_chunks(dump.files[name], {}))
        assert data == (root / name).read_bytes(), kind
    whats = [r["what"] for r in dump.files[names["execution"]]]
    assert whats == ["file", "execution", "unframed"]


def test_recorded_bytes_are_given_back_to_tmpfs(tmp_path):
    from tfblackbox.recorder.tf2 import staging
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    path = os.path.join(staging.make_dir(), "tfdbg_events.1700000000.h.graphs")
    try:
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20))
        before = os.stat(path).st_blocks
        punch = staging.HolePuncher()
        punch.free(path, (1 << 20) - 1000)
        st = os.stat(path)
        assert st.st_size == 1 << 20 and st.st_blocks < before / 100
        with open(path, "rb") as f:
            data = f.read()
        assert data[:(1 << 20) - 1000] == bytes((1 << 20) - 1000)
    finally:
        shutil.rmtree(os.path.dirname(path))
