"""`tfblackbox runs|show|verify|compact|merge|upgrade`: look at and look after stores (no
TensorFlow). `runs` and `show` are readers: they change nothing in the store."""

import datetime
import sys
import time


from tfblackbox.schema import Store, TABLES, compact as compact_store, verify as verify_store
from tfblackbox.schema.tables import STEPLESS
from tfblackbox.schema.store.maintenance import ORPHAN_GRACE_SECS
from tfblackbox.schema.store.records import run_state

from .exits import EXIT_FAILED, EXIT_OK, print_json

MAX_TAGS_SHOWN = 30   # show folds a table with more tags into one line (--json has them all)


def _when(ts):
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _status(r, now=None):
    if run_state(r, now) != "died":
        return r.status
    idle = (now or time.time()) - (r.heartbeat_at or r.started_at)
    return f"running (no heartbeat for {idle / 60:.0f} min)"


def runs(store_path, as_json=False):
    store = Store.open(store_path)   # readers change nothing
    records = store.runs()
    if as_json:
        print_json([r.to_dict() | {"size_bytes": store.size_bytes(r.run_id)} for r in records])
        return EXIT_OK
    if not records:
        print(f"no runs in {store.root}")
        return EXIT_OK
    grouped = any(r.group for r in records)
    rows = [("RUN", "PROJECT", "NAME") + (("GROUP",) if grouped else ()) +
            ("STATUS", "STARTED", "SIZE")]
    for r in records:
        rows.append((r.run_id, r.project or "-", r.name or "-") +
                    ((r.group or "-",) if grouped else ()) +
                    (_status(r), _when(r.started_at), human_size(store.size_bytes(r.run_id))))
    _table(rows)
    return EXIT_OK


def describe_run(store, run_id):
    """Per table and tag: rows, step range; plus kinds for media, sizes and attempts."""
    r = store.run(run_id)
    out = {"run": r.to_dict(), "size_bytes": store.size_bytes(run_id), "tables": {},
           "attempts": [w.__dict__ for w in store.writers(run_id)],
           "triggers": [t.to_dict() for t in store.triggers(run_id)],
           "losses": [x.to_dict() for x in store.losses(run_id)]}
    for name in TABLES:
        segs = store.segments(run_id, name)
        if not segs:
            continue
        kinds = name in ("media", "run_events")   # run_events: summary, model, define_metric..
        cols = ["step", "tag"] + (["kind"] if kinds else [])
        t = store.read(run_id, name, columns=cols, latest_only=name not in STEPLESS)
        tags = {}
        if t.num_rows:
            keys = ["tag", "kind"] if kinds else ["tag"]
            g = t.group_by(keys).aggregate([("step", "min"), ("step", "max"), ("step", "count")])
            for row in g.to_pylist():
                tags[row["tag"]] = {"rows": row["step_count"], "first_step": row["step_min"],
                                    "last_step": row["step_max"],
                                    **({"kind": row["kind"]} if "kind" in row else {})}
        out["tables"][name] = {"rows": t.num_rows, "segments": len(segs),
                               "bytes": sum(s.size_bytes for s in segs), "tags": tags}
    from . import system_show
    out.update(system_show.describe(store, run_id))   # environment, files, system metrics
    if "tfdbg_v2_records" in out["tables"]:
        from tfblackbox.replay.tfdbg import summary_v2
        out["tfdbg_v2"] = summary_v2.describe(store, run_id)
    return out


def show(store_path, run_id, as_json=False):
    store = Store.open(store_path)   # readers change nothing
    info = describe_run(store, run_id)
    if as_json:
        print_json(info)
        return EXIT_OK
    r = store.run(run_id)
    print(f"run {r.run_id}  project={r.project or '-'}  name={r.name or '-'}  "
          f"status={_status(r)}")
    print(f"  started {_when(r.started_at)}  ended {_when(r.ended_at)}  host={r.host}  "
          f"git={r.git_commit or '-'}  tf={r.tf_version or '-'}")
    print(f"  config {r.config}  tags {r.tags}")
    for w in info["attempts"]:
        extra = f"  dropped={w['dropped_rows']}" if w["dropped_rows"] else ""
        extra += f"  error={w['error']}" if w["error"] else ""
        print(f"  attempt {w['attempt']}: pid {w['pid']} from step {w['first_step']}{extra}")
        for x in info["losses"]:
            if x["writer_id"] == w["writer_id"]:
                print(_loss_line(x))
    attempts = {w["writer_id"]: w["attempt"] for w in info["attempts"]}
    for t in info["triggers"]:
        print(_trigger_line(t, attempts.get(t["writer_id"])))
    from . import system_show
    for line in system_show.lines(info):
        print(line)
    print(f"  size {human_size(info['size_bytes'])}")
    rows = [("TABLE", "TAG", "KIND", "ROWS", "STEPS")]
    for name, t in info["tables"].items():
        tags = sorted(t["tags"].items())
        if len(tags) > MAX_TAGS_SHOWN:   # debug dumps: one line per table (--json has them all)
            steps = [d["first_step"] for _t, d in tags] + [d["last_step"] for _t, d in tags]
            rows.append((name, f"({len(tags)} tags)", "-", str(t["rows"]),
                         f"{min(steps)}..{max(steps)}"))
            continue
        for tag, d in tags:
            rows.append((name, tag, d.get("kind", "-"), str(d["rows"]),
                         f"{d['first_step']}..{d['last_step']}"))
    _table(rows)
    if info.get("tfdbg_v2"):
        from tfblackbox.replay.tfdbg import summary_v2
        print("\n".join(summary_v2.lines(info["tfdbg_v2"])))
    return EXIT_OK


_LOSS_REASONS = {"memory": "dropped past max_unwritten_bytes while the store could not take "
                           "them", "finish": "still unwritten when the attempt ended"}


def _loss_line(x):
    """Rows of one table an attempt recorded but could not store, and why."""
    steps = f", steps {x['first_step']}..{x['last_step']}" if x["first_step"] is not None else ""
    return (f"    lost {x['rows']} {x['table']} rows ({human_size(x['bytes'])}{steps}): "
            f"{_LOSS_REASONS.get(x['reason'], x['reason'])}")


def _trigger_line(t, attempt):
    """One black-box trigger: kind, step, when, the dumped steps it wrote, then why."""
    at = f" at step {t['step']}" if t["step"] is not None else ""
    by = f" (attempt {attempt})" if attempt is not None else ""
    lo, hi = ("?" if v is None else v for v in (t["first_step"], t["last_step"]))
    wrote = f"wrote {t['steps_written']} step(s) {lo}..{hi}" if t["steps_written"] else (
        "wrote no steps")
    reason = t["reason"].replace("\n", "\n      ")   # a multi-line reason stays indented
    return f"  trigger {t['kind']}{at}{by}: fired {_when(t['fired_at'])}, {wrote}: {reason}"


def verify(store_path, grace=None, as_json=False):
    # a writer (it may upgrade), whose orphan removal is verify_store's, with --grace
    store = Store.open(store_path, access="write", clean_orphans=False)
    grace = ORPHAN_GRACE_SECS if grace is None else grace
    report = verify_store(store, fix=True, grace_secs=grace)
    if as_json:
        print_json(report.to_dict())
    else:
        for path, reason in report.damaged:
            print(f"DAMAGED {path}: {reason}", file=sys.stderr)
        for path in report.orphans_removed:
            print(f"removed orphan {path}")
        for path in report.in_flight:
            print(f"left alone (a live writer's file in flight) {path}")
        blobs = f" and {report.blobs_checked} artifact blob(s)" if report.blobs_checked else ""
        print(f"{report.checked} segment(s){blobs} checked, {len(report.damaged)} damaged, "
              f"{len(report.orphans_removed)} orphan(s) removed")
    return EXIT_OK if report.ok else EXIT_FAILED


def upgrade(store_path, as_json=False):
    """Brings an older store to this format, keeping its catalog as it was (a SQLite store);
    a store at this format is left alone."""
    done = Store.upgrade(store_path)
    done["upgraded"] = done["format_before"] != done["format_after"]
    if as_json:
        print_json(done)
    elif not done["upgraded"]:
        print(f"store {done['store']} is at format {done['format_after']}: nothing to upgrade")
    else:
        kept = (f"; the catalog as it was is kept in {done['backup']}" if done["backup"] else
                "; a server catalog keeps no backup (it upgrades in one transaction)")
        print(f"store {done['store']} upgraded from format {done['format_before']} to "
              f"{done['format_after']}{kept}")
    return EXIT_OK


def compact(store_path, run_id=None, as_json=False):
    store = Store.open(store_path, access="write")
    done = compact_store(store, run_id=run_id)
    if as_json:
        print_json([{"run_id": r, "table": t, "segments_before": a, "segments_after": b}
                    for (r, t), (a, b) in done.items()])
    else:
        for (r, t), (a, b) in done.items():
            print(f"{r} {t}: {a} segments -> {b}")
        if not done:
            print("nothing to compact")
    return EXIT_OK


def merge(sources, into, data=None, as_json=False):
    from tfblackbox.schema.store.merge import merge as merge_stores
    sources = [Store.open(s) for s in sources]   # read, never changed
    dest = Store.create(into, data=data)
    reports = merge_stores(sources, dest)
    if as_json:
        print_json({"into": dest.root, "sources": reports})
        return EXIT_OK
    for r in reports:
        print(f"{r['source']}: {r['runs_added']} run(s) added, {r['runs_present']} already "
              f"there; {r['attempts_added']} attempt(s) added; {r['segments_copied']} "
              f"segment(s) copied ({r['rows_copied']} rows, {human_size(r['bytes_copied'])}), "
              f"{r['segments_skipped']} already there; {r['cursors_copied']} cursor(s), "
              f"{r['triggers_copied']} trigger(s)")
    print(f"merged into {dest.root}")
    return EXIT_OK


def human_size(n):
    """Bytes as people read them (B, KiB, MiB, GiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


