"""`replay --to debug-dump`: rebuild the tfdbg dumps a store holds (no TensorFlow).

    replay --store DIR --to debug-dump --out OUT [--run ID] [--steps A:B] [--node REGEX] [--force]

Per run, whatever it recorded: tfdbg v1 session.run dirs `run_<micros>_<n>/` for DebugDumpDir
(rebuild_v1.py; --steps are global steps) and tfdbg v2 dump roots `tfdbg2_<tfdbg run id>/`
for DebugDataReader (rebuild_v2.py; --steps are execution indices). With one run they go
straight into OUT, with several into OUT/<run_id>/. Nothing is written outside OUT, a
non-empty OUT is refused without --force, and every dir is built under a temporary name and
renamed into place. A name refused as unsafe is reported and makes the exit code 1.
"""

import dataclasses
import os
import re
import sys

from tfblackbox.schema import BlackboxError, Store
from tfblackbox.schema.store.records import valid_run_id

from .. import out_dirs
from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_json
from . import rebuild_v1, rebuild_v2

V1_TABLE, V2_TABLE = "tfdbg_v1_runs", "tfdbg_v2_records"


def parse_steps(text):
    if not text:
        return None
    m = re.match(r"^\s*(-?\d*)\s*:\s*(-?\d*)\s*$", text)
    if not m:
        raise BlackboxError(f"--steps {text!r}: expected A:B (A <= step < B; either may be empty)")
    lo, hi = (int(x) if x else None for x in m.groups())
    return lo, hi


@dataclasses.dataclass(frozen=True)
class DumpReplay:
    """What `replay --to debug-dump` was asked to do (the CLI builds it)."""
    store: str
    out: str | None
    runs: tuple = ()          # run ids; empty: every run with recorded dumps
    steps: str | None = None  # "A:B": global steps (v1), execution indices (v2)
    node: str | None = None   # regex on node names (v1), op names / types (v2)
    force: bool = False       # write into a non-empty --out
    json: bool = False


def main(opts):
    if not opts.out:
        print("error: --to debug-dump needs --out DIR", file=sys.stderr)
        return EXIT_USAGE
    steps = parse_steps(opts.steps)
    try:
        node_re = re.compile(opts.node) if opts.node else None
    except re.error as e:
        raise BlackboxError(f"--node {opts.node!r} is not a valid regular expression: {e}") from e
    store = Store.open(opts.store)   # a reader: changes nothing
    run_ids = list(opts.runs) if opts.runs else [
        r.run_id for r in store.runs()
        if store.segments(r.run_id, V1_TABLE) or store.segments(r.run_id, V2_TABLE)]
    for run_id in run_ids:
        store.run(run_id)   # a clear error for an unknown run
        if not valid_run_id(run_id):
            raise BlackboxError(f"run id {run_id!r} cannot be used as a directory name")
    out = out_dirs.prepare(opts.out, "--out", empty=not opts.force)
    report = {"out": out, "runs": []}
    for run_id in run_ids:
        target = out if len(run_ids) == 1 else os.path.join(out, run_id)
        report["runs"].append(rebuild(store, run_id, target, steps, node_re))
    rejected = sum(len(r["rejected"]) for r in report["runs"])
    if opts.json:
        print_json(report)
    else:
        _print(report)
    return EXIT_FAILED if rejected else EXIT_OK


def rebuild(store, run_id, target, steps=None, node_re=None):
    """Both layouts of one run into `target`; one report."""
    v1 = rebuild_v1.rebuild_run(store, run_id, target, steps, node_re)
    v2 = rebuild_v2.rebuild_run(store, run_id, target, steps, node_re)
    return {"run_id": run_id, "target": target, "dirs": v1["dirs"], "tensors": v1["tensors"],
            "dump_roots": v2["dump_roots"], "records": v2["records"],
            "rejected": v1["rejected"] + v2["rejected"],
            "warnings": v1["warnings"] + v2["warnings"]}


def _print(report):
    for r in report["runs"]:
        if r["dirs"] or not r["dump_roots"]:
            print(f"run {r['run_id']}: {len(r['dirs'])} session.run dir(s), {r['tensors']} "
                  f"tensor(s) into {r['target']}")
        for d in r["dump_roots"]:
            print(f"run {r['run_id']}: tfdbg v2 dump root {os.path.join(r['target'], d['dir'])}"
                  f" ({d['files']} files, {d['records']} records, host "
                  f"{', '.join(d['hosts'])})")
        for what in r["warnings"]:
            print(f"  warning: {what}", file=sys.stderr)
        for what in r["rejected"]:
            print(f"  refused: {what}", file=sys.stderr)
    if not any(r["dirs"] or r["dump_roots"] for r in report["runs"]):
        print("no recorded debug dumps matched", file=sys.stderr)
