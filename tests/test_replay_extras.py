"""Summary, define_metric, config and console lines across replay chunks: each goes to W&B
exactly once (define_metric again in every chunk, as each chunk is a resumed run), a chunk may
hold only them, and a replay killed after publishing a chunk is settled without duplicates."""

import json
import os
import subprocess
import sys
import textwrap

import wandb_log
from tfblackbox.cli.main import replay_main
from tfblackbox.cli.exits import EXIT_OK

RECORD = textwrap.dedent("""
    import sys
    from tfblackbox import recorder
    store, attempt = sys.argv[1], int(sys.argv[2])
    run = recorder.init(store=store, run_id="chunks", resume="allow", config={"a": attempt})
    if attempt == 1:
        recorder.define_metric("loss", summary="min")
    print(f"attempt {attempt} starts")
    if attempt < 3:                      # the third attempt logs nothing: only extras
        for i in range(3):
            recorder.log({"loss": 1.0 / (attempt * 10 + i)})
            print(f"attempt {attempt} step {run.step}")
    run.summary[f"seen_{attempt}"] = attempt
    run.config.update({f"c{attempt}": attempt})
    print(f"attempt {attempt} ends", file=sys.stderr)
    recorder.finish()
""")


def record(tmp_path, attempt):
    script = tmp_path / "record.py"
    script.write_text(RECORD)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "store"), str(attempt)],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 0, done.stderr


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_SILENT="true", **extra)
    return env


def replay(tmp_path):
    return replay_main(["--store", str(tmp_path / "store"), "--to", "wandb", "--mode",
                        "offline", "--wandb-dir", str(tmp_path / "wandb"), "--no-progress"])


def chunk_files(wandb_dir):
    return sorted({os.path.realpath(f) for f in wandb_log.run_files(str(wandb_dir))})


def records(path, kind):
    return [getattr(r, kind) for r in wandb_log.read_records(path)
            if r.WhichOneof("record_type") == kind]


def console_lines(files):
    return [r.line for f in files for r in records(f, "output_raw")]


EXPECTED_LINES = ["attempt 1 starts\n", "attempt 1 step 1\n", "attempt 1 step 2\n",
                  "attempt 1 step 3\n", "attempt 1 ends\n",
                  "attempt 2 starts\n", "attempt 2 step 4\n", "attempt 2 step 5\n",
                  "attempt 2 step 6\n", "attempt 2 ends\n",
                  "attempt 3 starts\n", "attempt 3 ends\n"]


def test_extras_go_once_across_chunks_and_a_chunk_may_hold_only_them(tmp_path):
    record(tmp_path, 1)
    assert replay(tmp_path) == EXIT_OK
    record(tmp_path, 2)
    assert replay(tmp_path) == EXIT_OK
    record(tmp_path, 3)                    # no history rows: a chunk of extras only
    assert replay(tmp_path) == EXIT_OK
    assert replay(tmp_path) == EXIT_OK     # up to date: nothing new
    files = chunk_files(tmp_path / "wandb")
    assert len(files) == 3
    assert console_lines(files) == EXPECTED_LINES
    steps = [[r["_step"] for r in wandb_log.history(f)] for f in files]
    assert steps == [[0, 1, 2], [3, 4, 5], []]
    # define_metric is issued again in every chunk (each is a resumed W&B run)
    assert [[m.name for m in records(f, "metric")] for f in files] == [["loss"]] * 3
    summaries = [wandb_log.summary(f) for f in files]
    assert summaries[0]["seen_1"] == 1 and "seen_1" not in summaries[1]
    assert summaries[1]["seen_2"] == 2 and summaries[2]["seen_3"] == 3
    assert summaries[1]["loss"] == {"min": 1.0 / 22}
    assert wandb_log.config(files[2]) == {"a": 3, "c1": 1, "c2": 2, "c3": 3}


def test_a_replay_killed_after_publishing_is_settled_without_duplicates(tmp_path):
    record(tmp_path, 1)
    record(tmp_path, 2)
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store",
           str(tmp_path / "store"), "--to", "wandb", "--mode", "offline", "--wandb-dir",
           str(tmp_path / "wandb"), "--no-progress", "--json"]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            env=_env(TFBLACKBOX_TEST_KILL_AT="publish"))
    assert killed.returncode == -9
    assert len(chunk_files(tmp_path / "wandb")) == 1      # published, cursor not yet moved
    record(tmp_path, 3)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == EXIT_OK, done.stderr
    result = json.loads(done.stdout)["runs"][0]
    assert result["pushed_steps"] == 0 and result["cursor_after"] == 5
    files = chunk_files(tmp_path / "wandb")
    assert len(files) == 2
    assert console_lines(files) == EXPECTED_LINES          # attempt 3's lines once, no repeats
    assert [r["_step"] for f in files for r in wandb_log.history(f)] == [0, 1, 2, 3, 4, 5]
