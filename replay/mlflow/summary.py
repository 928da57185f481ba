"""What `replay --to mlflow` says: the dry run's count of what would be pushed (nothing
written) and the summary printed at the end (text, or --json)."""

from tfblackbox.schema.store.records import run_state
from tfblackbox.schema.store.windows import settled_step

from tfblackbox.cli.exits import print_json
from . import artifacts, content, system
from .tracking import destination, run_name


def experiment_of(opts, record):
    return opts.experiment or record.project or "tfblackbox"


def dry_run(store, record, opts):
    exp = experiment_of(opts, record)
    dest = destination(opts.tracking_uri, exp)
    step, state = store.get_cursor(record.run_id, dest)
    limit = settled_step(store, record)
    lo = None if step is None else step + 1
    hi = None if limit is None else limit + 1
    steps = points = hist = media = 0
    first = last = None
    for a, b in content.windows_of(store, record.run_id, lo, hi):
        w = content.load_window(store, record.run_id, a, b)
        if w is None:
            continue
        steps += w.steps
        points += len(w.keys)
        hist += len(w.hist["step"])
        media += len(w.media["step"])
        first = w.lo if first is None else first
        last = w.hi
    samples = system.new_samples(store, record.run_id, state.get("system") or {})
    versions = artifacts.todo(store, record.run_id, state) if opts.artifacts else []
    return {"run_id": record.run_id, "experiment": exp, "destination": dest,
            "mlflow_run_id": state.get("mlflow_run_id"), "state": run_state(record),
            "cursor": step, "pending": state.get("pending"), "would_push_steps": steps,
            "would_push_points": points, "first_step": first, "last_step": last,
            "histograms": hist, "media": media, "system_samples": len(samples),
            "params": len(content.flatten(record.config)), "name": run_name(record),
            "artifact_versions": artifacts.counts(versions)}


def print_summary(opts, summary):
    if opts.json:
        print_json(summary)
        return
    if summary["dry_run"]:
        for r in summary["runs"]:
            span = (f"steps {r['first_step']}..{r['last_step']}" if r["would_push_steps"]
                    else "nothing new")
            print(f"run {r['run_id']} -> MLflow experiment {r['experiment']!r} "
                  f"({r['state']}): would push {r['would_push_steps']} step(s), "
                  f"{r['would_push_points']} point(s), {span}; {r['histograms']} histogram(s), "
                  f"{r['media']} media, {r['system_samples']} system sample(s), "
                  f"{r['params']} param(s), {r['artifact_versions']['versions']} artifact "
                  f"version(s) ({r['artifact_versions']['files']} file(s)); cursor {r['cursor']}")
        print("dry run: nothing was written")
        return
    for r in summary["runs"]:
        if (r["ok"] and not r["pushed_steps"] and not r["system_samples"]
                and not r["artifacts"]["versions"]):
            pushed = r["cursor_after"]
            what = (f"up to date (steps up to {pushed} pushed)" if pushed is not None
                    else "up to date (no steps to push)")
            if r["state"] == "running":
                what = (f"still recording; steps up to {pushed} pushed, up to "
                        f"{r['recorded_step']} recorded; replay again later, or with --follow")
            print(f"run {r['run_id']}: {what}")
