#!/usr/bin/env python3
"""The reliability suite (issue 15) in one command; prints one table and exits 1 if any case
failed. Run it through `tools/reliability`, which finds or makes the project's environment.

    tools/reliability [--quick] [--only GROUP ...] [--json OUT] [--seed N] [--keep]

Groups: kill -9 of training (store creation, flush, finish, anywhere) and of each replay, disk
full, read-only mid-run, bad input, concurrent writers (tests/reliability_cases.py). Needs root
for the tmpfs of the disk-full cases (they report "not run" otherwise). Full run ~10 minutes on
2 cores, --quick ~4.
"""

import argparse
import datetime
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("WANDB_SILENT", "true")


def table(results):
    """Rows (name, cases, held, failed, not run, max lost) per group and, indented, per kind."""
    groups = {}
    for r in results:
        groups.setdefault(r.group, {}).setdefault(r.kind, []).append(r)
    rows = []
    for group, kinds in groups.items():
        rows.append(_row(group, [r for rs in kinds.values() for r in rs]))
        if len(kinds) > 1:
            rows += [_row("  " + kind, rs) for kind, rs in kinds.items()]
    rows.append(_row("TOTAL", results))
    return rows


def _row(name, rs):
    lost = [r.lost_secs for r in rs if r.lost_secs is not None]
    return {"name": name, "cases": len(rs), "held": sum(r.held is True for r in rs),
            "failed": sum(r.held is False for r in rs),
            "not_run": sum(r.held is None for r in rs),
            "max_lost_secs": round(max(lost), 3) if lost else None}


def render(rows):
    head = ("GROUP / CASE", "CASES", "HELD", "FAILED", "NOT RUN", "MAX ROWS LOST (s of training)")
    body = [(r["name"], r["cases"], r["held"], r["failed"], r["not_run"],
             "-" if r["max_lost_secs"] is None else f"{r['max_lost_secs']:.2f}") for r in rows]
    width = max(len(str(x[0])) for x in [head] + body)
    lines = [f"{head[0]:<{width}}  " + "  ".join(f"{h:>7}" for h in head[1:5]) + f"  {head[5]}"]
    for x in body:
        if x[0] == "TOTAL":
            lines.append("-" * len(lines[0]))
        lines.append(f"{x[0]:<{width}}  " + "  ".join(f"{v:>7}" for v in x[1:5]) + f"  {x[5]:>8}")
    return "\n".join(lines)


def main(argv=None):
    from reliability_cases import GROUPS, Workspace, run_groups
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer instants and variants (~4 min)")
    p.add_argument("--only", action="append", choices=list(GROUPS), metavar="GROUP",
                   help=f"run only this group (repeatable): {', '.join(GROUPS)}")
    p.add_argument("--json", metavar="OUT", help="also write the table and every case as JSON")
    p.add_argument("--seed", type=int, default=None, help="seed of the kill instants")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--workdir", metavar="DIR", default=None,
                   help="where the work directory is made (default: the system's temp dir)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    ws = Workspace(keep=args.keep, parent=args.workdir)
    started, t0 = datetime.datetime.now().isoformat(timespec="seconds"), time.monotonic()
    print(f"reliability suite: seed {seed}, {'quick' if args.quick else 'full'}, work dir "
          f"{ws.root}", file=sys.stderr)

    def report(r):
        state = {True: "held", False: "FAILED", None: "not run"}[r.held]
        print(f"  [{r.group}] {r.case}: {state} ({r.secs:.1f} s)"
              + (f" -- {r.detail[:200]}" if r.held is not True and r.detail else ""),
              file=sys.stderr, flush=True)

    try:
        results = list(run_groups(args.only, args.quick, seed, ws, report))
    finally:
        if not args.keep:
            ws.remove()
    secs = time.monotonic() - t0
    rows = table(results)
    print()
    print(render(rows))
    failed = [r for r in results if r.held is False]
    for title, rs in (("Failed", failed), ("Not run", [r for r in results if r.held is None])):
        if rs:
            print(f"\n{title}:")
            for r in rs:
                print(f"  {r.group}/{r.case}: {r.detail[:600]}")
    print(f"\nseed {seed}; {len(results)} cases in {secs / 60:.1f} min"
          f"{'; work dir kept: ' + ws.root if args.keep else ''}")
    if args.json:
        out = os.path.join(os.environ.get("RELIABILITY_CWD", os.getcwd()), args.json)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump({"started": started, "seed": seed, "quick": args.quick,
                       "groups": args.only or list(GROUPS), "secs": round(secs, 1),
                       "table": rows, "cases": [r.to_dict() for r in results]}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
