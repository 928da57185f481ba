"""What `replay --to wandb` says: the dry run's per-run report and the printed summary."""

from tfblackbox.schema.store.records import run_state

from tfblackbox.cli.exits import print_json
from .artifacts import Artifacts
from .extras import Extras
from .naming import destination, project_of, wandb_run_id
from .plan_rows import iter_batches
from .timeline import LIVE_SETTLE_SECS, plan_chunk


# -- dry run --------------------------------------------------------------------------------

def dry_run(store, record, opts):
    dest = destination(opts, record)
    step, state = store.get_cursor(record.run_id, dest)
    pending = state.get("pending")
    status = run_state(record)
    plan = plan_chunk(store, record, step, state.get("wandb") or {})
    counts = tags = None
    for _part, log_rows, sync_rows in iter_batches(store, record.run_id, plan):
        for rows in (log_rows, sync_rows):
            if rows is not None:
                counts, tags = _add_counts(counts, rows.counts), _add_tags(tags, rows.tags)
    extras = Extras.load(store, record.run_id, state, plan.limit).counts()
    artifacts = Artifacts.load(store, record.run_id, wandb_run_id(record.run_id), state,
                               opts.artifacts).counts()
    logged = [s[1] for s in plan.slots if s[0] == "log"]
    return {"run_id": record.run_id, "wandb_id": wandb_run_id(record.run_id),
            "project": project_of(opts, record), "entity": opts.entity, "destination": dest,
            "state": status, "cursor": step, "pending_chunk": pending, "extras": extras,
            "artifacts": artifacts,
            "would_push_steps": len(plan.slots), "synced_rows": plan.synced_rows,
            "first_step": logged[0] if logged else None,
            "last_step": logged[-1] if logged else None,
            "held_back_after_step": plan.limit,
            "late_rows": _rows_report((s[1].tags[0] for s in plan.late)),
            "refused_rows": _rows_report(tag for _s, tag, _w in plan.refused),
            "rows": counts or _add_counts(None, None), "tags": tags or _add_tags(None, None),
            "name": record.name, "config": record.config, "wandb_tags": record.tags}


def _rows_report(tags):
    tags = list(tags)
    return {"count": len(tags), "tags": sorted(set(tags))}


def _add_counts(total, counts):
    total = total or {"scalars": 0, "histograms": 0, "media": 0, "tensors_not_pushed": 0,
                      "media_by_kind": {}}
    for k, v in (counts or {}).items():
        if k == "media_by_kind":
            for kind, m in v.items():
                total[k][kind] = total[k].get(kind, 0) + m
        else:
            total[k] = total.get(k, 0) + v
    return total


def _add_tags(total, tags):
    total = total or {"scalars": [], "histograms": [], "media": []}
    for k, v in (tags or {}).items():
        total[k] = sorted(set(total.get(k, [])) | set(v))
    return total


def print_summary(opts, summary):
    if opts.json:
        print_json(summary)
        return
    if summary["dry_run"]:
        for r in summary["runs"]:
            span = (f"recorder steps {r['first_step']}..{r['last_step']}"
                    if r["first_step"] is not None else "no logged rows")
            if r["synced_rows"]:
                span += f", {r['synced_rows']} row(s) from tfevents"
            if not r["would_push_steps"]:
                span = "nothing new"
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["rows"]["media_by_kind"].items()))
            print(f"run {r['run_id']} -> W&B {r['project']}/{r['wandb_id']} ({r['state']}): "
                  f"would push {r['would_push_steps']} row(s), {span}; cursor {r['cursor']}")
            for kind in ("late", "refused"):
                if r[f"{kind}_rows"]["count"]:
                    print(f"  {kind} rows: {r[f'{kind}_rows']['count']} "
                          f"({', '.join(r[f'{kind}_rows']['tags'])})")
            print(f"  rows: scalars {r['rows']['scalars']}, histograms {r['rows']['histograms']}"
                  f", media {r['rows']['media']}{' (' + kinds + ')' if kinds else ''}; "
                  f"tensors not pushed {r['rows']['tensors_not_pushed']}")
            if r["extras"]:
                print("  also: " + ", ".join(f"{k} {v}" for k, v in sorted(r["extras"].items())))
            if r["artifacts"]["versions"]:
                a = r["artifacts"]
                print(f"  artifacts: {a['versions']} version(s), {a['files']} file(s), "
                      f"{a['bytes']} bytes")
            for table, tags in r["tags"].items():
                if tags:
                    print(f"  {table} tags: {', '.join(tags)}")
        print("dry run: nothing was written")
        return
    for r in summary["runs"]:
        if r["ok"] and not r["chunks"]:
            print(f"run {r['run_id']}: {nothing_to_push(r, opts.follow)}")
    if summary["mode"] == "offline" and any(r["chunks"] for r in summary["runs"]):
        print(f"upload to W&B with:  {summary['sync_command']}")


def nothing_to_push(r, following=False):
    """What a run with nothing new to push is: up to date, or still recording (how far it
    has recorded and been pushed, and what brings the rest)."""
    pushed = r["cursor_after"]
    if r["state"] != "running":
        return (f"up to date (steps up to {pushed} pushed)" if pushed is not None else
                "up to date (it recorded no steps to push)")
    recorded, settled = r.get("recorded_step"), r.get("settled_step")
    if pushed is not None:
        newer = recorded is not None and recorded > pushed
        has = f"steps up to {pushed} pushed" + (
            f", up to {recorded} recorded, none newer settled yet" if newer else "")
    elif recorded is None:
        has = "nothing recorded yet"
    else:
        has = f"steps up to {recorded} recorded, none settled yet"
    if recorded is not None and settled is not None and settled < recorded:
        has += (f" (a step is pushed once its rows have been registered for "
                f"{LIVE_SETTLE_SECS:.0f} s)")
    follow = ("--follow stopped before the run finished: replay --follow again to go on"
              if following else
              "replay again later, or with --follow to keep pushing until it finishes")
    return f"still recording, nothing to push yet: {has}; {follow}"
