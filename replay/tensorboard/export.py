"""`replay --to tensorboard --out LOGDIR [--run ID ...]`: runs as TensorBoard logdirs, without
TensorFlow, incrementally.

Each run gets `LOGDIR/<name>-<run id>/` (the name made safe for a path). In it:
- the event files captured from tfevents (TF2 capture, import-tfevents) at their recorded
  paths, byte for byte (mirror.py);
- the rows that came from no such file (TF1 hooks, recorder.log), as Events in files of our
  own (generate.py, events.py): one new file per replay that has new steps, named
  `events.out.tfevents.<time>.tfblackbox.<n>` so it sorts after the files before it, written
  under a name TensorBoard does not read and renamed into place when complete; plus, once,
  the run's config as hparams and DumpHook's partition graphs.

A cursor per (run, LOGDIR) in the catalog keeps the last step written to our files and the
committed bytes of each mirrored file, so a second replay writes nothing and a run still
recording gets only what is new (up to the steps whose segments have settled, as for W&B).
A new file is named in the cursor as pending before its rename; the next replay commits it if
the rename happened, so a kill at any point neither loses steps nor writes them twice. One
replay at a time per LOGDIR (a lock file); temporary files of a killed replay are removed.
"""

import contextlib
import heapq
import os
import re
import sys

from tfblackbox.schema import BlackboxError, ReplayError, Store
from tfblackbox.schema.kill_points import kill_point
from tfblackbox.schema.store.windows import settled_step

from .. import out_dirs
from tfblackbox.cli.exits import EXIT_OK, print_json
from . import events as ev
from . import generate, mirror
from .chunks import settle, write_chunk
from .system import export_system

LOCK_FILE = ".tfblackbox.lock"


def destination(out):
    return f"tensorboard:{os.path.realpath(out)}"


def run_dir_name(record):
    """`<name>-<run id>` (the id alone when it starts with the name), safe as one path
    component."""
    name = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", record.name or "").strip("._")[:80]
    return record.run_id if not name or record.run_id.startswith(name) else \
        f"{name}-{record.run_id}"


def main(store_path, out, runs=(), as_json=False, jobs=1):
    if not out:
        raise BlackboxError("--to tensorboard needs --out LOGDIR (the directory to write the "
                            "runs' event files into)")
    store = Store.open(store_path, access="replay")   # reads; writes its cursors only
    records = _select(store, runs)
    out = out_dirs.prepare(out, "--out")
    with _locked(out):
        if jobs > 1:   # runs written by worker processes (replay/parallel.py); the lock is ours
            from .. import parallel
            done = {r.run_id: {"run_id": r.run_id, "events": 0} for r in records}
            parallel.run_jobs(jobs, [(r.run_id, (store_path, out, r.run_id))
                                     for r in parallel.longest_first(store, records)],
                              work, done, progress=not as_json,
                              preload=parallel.PRELOAD["tensorboard"])
            failed = [r for r in done.values() if r.get("ok") is False]
            if failed:
                raise ReplayError("; ".join(f"run {r['run_id']}: {r['error']}"
                                              for r in failed))
            results = [done[r.run_id] for r in records]
        else:
            results = [export_run(store, store.run(r.run_id), out) for r in records]
    summary = {"logdir": out, "runs": results,
               "open_command": f"tensorboard --logdir {out}"}
    if as_json:
        print_json(summary)
    else:
        for r in results:
            span = (f"steps {r['first_step']}..{r['last_step']}" if r["events"]
                    else "no new steps")
            if r.get("hparams"):
                span += "; the config as hparams"
            if r.get("system_samples"):
                span += f"; {r['system_samples']} system metrics sample(s) in system/"
            print(f"run {r['run_id']}: {r['events']} event(s) ({span}), "
                  f"{r['mirrored_bytes']:,} byte(s) of captured event files -> {r['dir']}")
            for p in r["problems"]:
                print(f"  warning: {p}", file=sys.stderr)
        print(f"open with:  {summary['open_command']}")
    return EXIT_OK


_WORKER_STORES: dict[str, Store] = {}   # a worker's open stores


def work(task, _result):
    """One run written by a worker process of --jobs; the store opened once per worker."""
    store_path, out, run_id = task
    store = _WORKER_STORES.get(store_path)
    if store is None:
        store = _WORKER_STORES[store_path] = Store.open(store_path, access="replay")
    return export_run(store, store.run(run_id), out)


def _select(store, run_ids):
    if run_ids:
        return [store.run(r) for r in dict.fromkeys(run_ids)]
    records = store.runs()
    if not records:
        raise BlackboxError(f"store {store.root} holds no runs: nothing to replay")
    return records


@contextlib.contextmanager
def _locked(out):
    import fcntl
    with open(os.path.join(out, LOCK_FILE), "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise BlackboxError(f"another replay is writing into {out} (its lock {LOCK_FILE} "
                                f"is held); wait for it to end") from e
        yield


def export_run(store, record, out):
    dest = destination(out)
    step, state = store.get_cursor(record.run_id, dest)
    state.setdefault("dir", run_dir_name(record))
    run_dir = os.path.join(out, state["dir"])
    os.makedirs(run_dir, exist_ok=True)
    mirror.clear_temps(run_dir)
    step, state = settle(store, record.run_id, dest, run_dir, step, state)
    result = {"run_id": record.run_id, "dir": run_dir, "events": 0, "first_step": None,
              "last_step": None, "mirrored_files": 0, "mirrored_bytes": 0, "problems": [],
              "counts": {"scalars": 0, "histograms": 0, "media": 0, "tensors": 0,
                         "graphs": 0, "events": 0}}
    files = mirror.raw_rows(store, record.run_id)
    committed = state.setdefault("files", {})
    for name in sorted(files):   # appends before new files: see the module docstring
        end, n = mirror.mirror_file(store, record.run_id, run_dir, name, files[name],
                                    committed.get(name, 0), result["problems"])
        if n or end != committed.get(name, 0):
            committed[name] = end
            store.set_cursor(record.run_id, dest, step, state)
            result["mirrored_files"] += 1
            result["mirrored_bytes"] += n
            kill_point("mirrored")
    limit = settled_step(store, record)
    lo = None if step is None else step + 1
    hi = None if limit is None else limit + 1
    covered = generate.Covered(mirror.summary_keys(files))
    stream = _chunk_events(store, record, lo, hi, covered, state, result)
    chunk = write_chunk(store, record.run_id, dest, run_dir, step, state, stream)
    if chunk is not None:
        result.update(first_step=chunk["lo"], last_step=chunk["hi"], events=chunk["events"],
                      file=chunk["file"], hparams=chunk["hparams"])
    # system metrics as system/<key> scalars, a TensorBoard run of their own (system.py)
    result["system_samples"] = export_system(store, record, run_dir, dest)
    return result


def _chunk_events(store, record, lo, hi, covered, state, result):
    counts = result["counts"]
    forms = state.setdefault("scalar_forms", {})
    rows = generate.run_events(store, record.run_id, lo, hi, covered, forms, counts)
    graphs = generate.graph_events(store, record.run_id, lo, hi)
    counts["graphs"] = len(graphs)
    counts["events"] += len(graphs)
    head = []
    if not state.get("hparams") and record.config and not _has_hparams(store, record.run_id):
        head = [(None, record.started_at, ev.event(
            record.started_at, 0, summary=ev.hparams_session_start(record.config,
                                                                    record.started_at)))]
    key = lambda e: (e[0] if e[0] is not None else -2 ** 63, e[1])   # noqa: E731
    return iter(head), heapq.merge(rows, graphs, key=key)


def _has_hparams(store, run_id):
    t = store.read(run_id, "tensors", columns=["plugin_name"], latest_only=False)
    return "hparams" in set(t["plugin_name"].to_pylist())
