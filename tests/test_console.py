"""Console capture: a process prints to stdout and stderr (print, partial writes, a tqdm bar,
unicode, ANSI colours) with wandb (offline, its default console capture) and the recorder both
recording; its terminal still gets everything, and the replayed run's output.log is the one
wandb wrote itself."""

import os
import subprocess
import sys
import textwrap

import wandb_log
from tfblackbox.cli.main import replay_main
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.schema import Store

PRINTER = textwrap.dedent("""
    import sys, time
    import wandb
    from tqdm import tqdm
    from tfblackbox import recorder

    wrun = wandb.init(mode="offline", dir=sys.argv[1], project="c",
                      settings=wandb.Settings(silent=True))      # console="auto": wrap
    recorder.init(store=sys.argv[2], run_id="console", project="c")   # console="auto"
    print("line one")
    print("to stderr", file=sys.stderr)
    sys.stdout.write("partial ")
    sys.stderr.write("err between\\n")
    sys.stdout.write("rest\\n")
    for _ in tqdm(range(4), file=sys.stderr, disable=False, mininterval=0, ascii=True):
        time.sleep(0.01)
    print("unicode \\u00e9 \\u2713", "\\x1b[31mred\\x1b[0m")
    recorder.log({"x": 1})
    print("many", "parts", sep="\\n")
    sys.stdout.write("no newline at the end")
    sys.stdout.flush()
    recorder.finish()
    wrun.finish()
""")


def test_console_is_recorded_and_replayed_as_output_log(tmp_path):
    script = tmp_path / "printer.py"
    script.write_text(PRINTER)
    store = str(tmp_path / "store")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env["WANDB_SILENT"] = "true"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "direct"), store],
                          capture_output=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    # bytes: text mode would turn tqdm's "\r" into "\n"
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    # the process's own terminal got everything
    assert done.stdout == ("line one\npartial rest\nunicode \u00e9 \u2713 \x1b[31mred\x1b[0m\n"
                           "many\nparts\nno newline at the end")
    assert "to stderr\nerr between\n" in done.stderr and "4/4" in done.stderr

    rows = Store.open(store).read("console", "console").to_pylist()
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    by_stream = {s: "".join(r["text"] for r in rows if r["tag"] == s)
                 for s in ("stdout", "stderr")}
    assert by_stream["stdout"] == done.stdout               # every character, in order
    assert by_stream["stderr"] == done.stderr
    assert {"line one\n", "partial ", "rest\n", "many\n", "parts\n"} <= {r["text"] for r in rows}
    assert all(r["wall_time"] > 0 for r in rows)

    wdir = tmp_path / "replayed"
    assert replay_main(["--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                        str(wdir), "--no-progress"]) == EXIT_OK
    [direct] = {os.path.realpath(f) for f in wandb_log.run_files(str(tmp_path / "direct"))}
    [replayed] = {os.path.realpath(f) for f in wandb_log.run_files(str(wdir))}
    want = open(os.path.join(os.path.dirname(direct), "files", "output.log"), "rb").read()
    got = open(os.path.join(os.path.dirname(replayed), "files", "output.log"), "rb").read()
    assert got.startswith(b"line one\nto stderr\npartial rest\nerr between\n") and b"4/4" in got
    assert got == want
    # in the transaction log the console is output_raw records (wandb-core writes output.log
    # from them): wandb's are the raw writes, ours whole lines; per stream they are the same text
    raws = {f: [r.output_raw for r in wandb_log.read_records(f)
                if r.WhichOneof("record_type") == "output_raw"] for f in (direct, replayed)}
    for stream in (0, 1):   # STDOUT, STDERR
        texts = ["".join(r.line for r in raws[f] if r.output_type == stream)
                 for f in (direct, replayed)]
        assert texts[0] == texts[1] and texts[0]
    raw = [r.output_raw for r in wandb_log.read_records(replayed)
           if r.WhichOneof("record_type") == "output_raw"]
    assert [r.line for r in raw] == [r["text"] for r in rows]
    assert [round(r.timestamp.ToNanoseconds() / 1e9, 3) for r in raw] == \
        [round(r["wall_time"], 3) for r in rows]     # the recorded times, not the replay's
