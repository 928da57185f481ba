"""`tfblackbox merge SRC... --into DST`: stores of several hosts into one. Idempotent by
segment content hash (also after either side compacted), safe to rerun after a SIGKILL,
attempts and cursors kept, conflicting run ids refused."""

import json
import os
import shutil
import subprocess
import sys


from tfblackbox.cli.main import main as cli
from tfblackbox.cli.exits import EXIT_OK, EXIT_USAGE
from tfblackbox.schema import Store, compact, verify
from helpers import scalars


def host_store(root, run_id, attempts=((0, 10), (6, 12)), segments_per_attempt=3):
    """A store as one host leaves it: a run with attempts (the second resumed from an older
    checkpoint), several segments each, and a replay cursor."""
    store = Store.create(root)
    store.create_run(run_id, config={"lr": 0.1}, project="p", name=run_id, host=f"h-{run_id}")
    for lo, hi in attempts:
        w, a = store.begin_attempt(run_id, f"h-{run_id}", 100 + lo)
        steps = list(range(lo, hi))
        for part in range(segments_per_attempt):
            chunk = steps[part::segments_per_attempt]
            if chunk:
                store.write_segment(run_id, "scalars", scalars(sorted(chunk), a, offset=a / 10), w)
    store.set_cursor(run_id, "wandb:/p", 7, {"chunks": 1})
    store.finish_run(run_id)
    return store


def rows(store, run_id, **kw):
    t = store.scalars(run_id, **kw)
    return sorted(zip(*(t[c].to_pylist() for c in ("step", "attempt", "value"))))


def merge(*argv):
    return cli(["merge", *argv])


def test_merge_brings_runs_attempts_and_cursors_together_once(tmp_path, capsys):
    a = host_store(str(tmp_path / "a"), "run-a")
    b = host_store(str(tmp_path / "b"), "run-b", attempts=((0, 5),))
    dst = str(tmp_path / "dst")
    assert merge(a.root, b.root, "--into", dst, "--json") == EXIT_OK
    [ra, rb] = json.loads(capsys.readouterr().out)["sources"]
    assert (ra["runs_added"], ra["attempts_added"], ra["segments_copied"]) == (1, 2, 6)
    assert (rb["runs_added"], rb["attempts_added"], rb["segments_copied"]) == (1, 1, 3)
    d = Store.open(dst, access="write")
    assert [r.run_id for r in d.runs()] == ["run-a", "run-b"]
    for src, run_id in ((a, "run-a"), (b, "run-b")):
        assert rows(d, run_id) == rows(src, run_id)                # latest attempt wins alike
        assert rows(d, run_id, latest_only=False) == rows(src, run_id, latest_only=False)
        assert [(w.attempt, w.first_step, w.pid) for w in d.writers(run_id)] == [
            (w.attempt, w.first_step, w.pid) for w in src.writers(run_id)]
        assert d.get_cursor(run_id, "wandb:/p") == (7, {"chunks": 1})
        assert d.run(run_id).status == "finished" and d.run(run_id).config == {"lr": 0.1}
    assert verify(d).ok
    # again: nothing added; and again after the destination compacted its copies
    assert merge(a.root, b.root, "--into", dst, "--json") == EXIT_OK
    again = json.loads(capsys.readouterr().out)["sources"]
    assert [(r["segments_copied"], r["segments_skipped"], r["runs_added"]) for r in again] == [
        (0, 6, 0), (0, 3, 0)]
    compact(d)
    assert merge(a.root, b.root, "--into", dst) == EXIT_OK
    assert "0 segment(s) copied" in capsys.readouterr().out
    assert rows(d, "run-a", latest_only=False) == rows(a, "run-a", latest_only=False)


def test_a_source_that_went_on_recording_and_compacted_adds_only_its_new_rows(tmp_path, capsys):
    a = host_store(str(tmp_path / "a"), "run-a", attempts=((0, 10),))
    dst = str(tmp_path / "dst")
    assert merge(a.root, "--into", dst) == EXIT_OK
    w, att = a.begin_attempt("run-a", "h-run-a", 999)              # a third attempt later on
    a.write_segment("run-a", "scalars", scalars([10, 11, 12], att), w)
    compact(a)                                                     # every old hash is gone
    assert merge(a.root, "--into", dst) == EXIT_OK
    capsys.readouterr()
    d = Store.open(dst)
    assert rows(d, "run-a", latest_only=False) == rows(a, "run-a", latest_only=False)
    assert len(rows(d, "run-a", latest_only=False)) == 13
    assert merge(a.root, "--into", dst, "--json") == EXIT_OK      # and still idempotent
    assert json.loads(capsys.readouterr().out)["sources"][0]["segments_copied"] == 0


def test_a_merge_killed_midway_is_finished_by_running_it_again(tmp_path):
    a = host_store(str(tmp_path / "a"), "run-a", segments_per_attempt=4)
    dst = str(tmp_path / "dst")
    env = dict(os.environ, TFBLACKBOX_TEST_KILL_AT="merge-copied:5")
    proc = subprocess.run([sys.executable, "-m", "tfblackbox.cli.main", "merge", a.root,
                           "--into", dst], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    d = Store.open(dst)
    assert len(d.segments("run-a")) == 4                           # 4 registered, the 5th not
    assert len(list(d.data.files())) == 5
    assert merge(a.root, "--into", dst) == EXIT_OK
    d = Store.open(dst, access="write")                           # the orphan goes (dead writer)
    assert rows(d, "run-a", latest_only=False) == rows(a, "run-a", latest_only=False)
    assert len(d.segments("run-a")) == 8 and len(list(d.data.files())) == 8
    assert verify(d).ok


def test_conflicting_run_ids_are_refused_and_nothing_is_merged(tmp_path, capsys):
    a = host_store(str(tmp_path / "a"), "run-a")
    other = host_store(str(tmp_path / "other"), "run-a")           # same id, another run
    dst = str(tmp_path / "dst")
    assert merge(a.root, other.root, "--into", dst) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'run-a' names two different runs" in err and other.root in err
    assert Store.open(dst).runs() == []
    # copies of one store that each recorded an attempt 3 of the run: refused as well
    shutil.copytree(a.root, str(tmp_path / "copy"))
    copy = Store.open(str(tmp_path / "copy"), access="write")
    a.begin_attempt("run-a", "h-run-a", 1)
    copy.begin_attempt("run-a", "h-run-a", 2)
    assert merge(a.root, copy.root, "--into", dst) == EXIT_USAGE
    assert "attempt 3 is a different process" in capsys.readouterr().err
    assert merge(a.root, "--into", a.root) == EXIT_USAGE                 # not into itself


def test_merge_into_a_postgresql_store_with_data_on_s3(tmp_path, pg_url, s3_data, capsys):
    a = host_store(str(tmp_path / "a"), "run-a")
    b = host_store(str(tmp_path / "b"), "run-b")
    assert merge(a.root, b.root, "--into", pg_url, "--data", s3_data) == EXIT_OK
    assert merge(a.root, b.root, "--into", pg_url) == EXIT_OK          # data from the catalog
    capsys.readouterr()
    d = Store.open(pg_url)
    assert not d.data.local
    assert rows(d, "run-a") == rows(a, "run-a") and rows(d, "run-b") == rows(b, "run-b")
    assert len(d.segments()) == 12 and verify(d).ok
