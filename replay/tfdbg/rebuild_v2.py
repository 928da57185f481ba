"""`replay --to debug-dump`, tfdbg v2 part: rebuild the dump roots DebugDataReader reads (no
TensorFlow).

One `tfdbg2_<tfdbg run id>/` per tfdbg run of a recorded run (DebugDataReader reads one run
per dump root; every host's file set of that run goes in it, as TF wrote them), with the
original file names and every record byte for byte. Each root is built under a hidden
temporary name and renamed into place. File names are data: one that is not a tfdbg v2 file
name, or a run id that would not make a plain directory name, is refused and reported.

Filters (the v1 options, applied where they mean something in v2):
  --steps A:B   executions whose index in the `.execution` file is in [A, B), and the graph
                execution traces that ran within them: a trace belongs to the first execution
                recorded at or after it (a tf.function's execution is written when it returns)
  --node REGEX  traces whose op name, executions whose op type match (re.search)
Source files, stack frames and graphs are always written whole (traces and executions point
into them). A trace whose op creation is not in the graphs file (a process killed between
TF's writes) is left out and reported, so DebugDataReader can open the root.
"""

import bisect
import os
import re
import shutil

from tfblackbox.schema import BlackboxError
from tfblackbox.schema.formats import tfdbg_v2
from tfblackbox.schema.codecs.tfdbg_v2_restore import dump_roots, fetch_blobs, file_chunks

from ..out_dirs import put_in_place

DIR_PREFIX = "tfdbg2_"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def rebuild_run(store, run_id, target, steps=None, node_re=None):
    """Writes the run's v2 dump roots into `target`; returns what it did."""
    report = {"run_id": run_id, "target": target, "dump_roots": [], "records": 0,
              "rejected": [], "warnings": []}
    roots = dump_roots(store, run_id)
    if not roots:
        return report
    blobs = fetch_blobs(store, run_id, {r["blob"] for root in roots for r in root.rows()
                                        if r["blob"]})
    os.makedirs(target, exist_ok=True)
    for root in roots:
        if not _SAFE.match(root.key):
            report["rejected"].append(f"tfdbg run {root.key!r}: not usable as a directory name")
            continue
        name = DIR_PREFIX + root.key
        keep = _selection(root, steps, node_re, report)
        written = _build(target, name, root, blobs, keep, report)
        report["records"] += written
        report["dump_roots"].append({"dir": name, "tfdbg_run_id": root.tfdbg_run_id,
                                     "hosts": root.hosts, "files": len(root.files),
                                     "records": written})
    return report


def _selection(root, steps, node_re, report):
    """{id(row)} of the execution and trace rows to write; None: write every row."""
    executions = list(root.rows(what="execution"))
    traces = list(root.rows(what="graph_execution_trace"))
    created = {(r["graph_id"], r["op_name"]) for r in root.rows(what="graph_op_creation")}
    orphans = [t for t in traces if (t["graph_id"], t["op_name"]) not in created]
    if orphans:
        report["warnings"].append(
            f"{DIR_PREFIX}{root.key}: {len(orphans)} graph execution trace(s) left out (first: "
            f"{orphans[0]['op_name']!r}, record {orphans[0]['index']} of "
            f"{orphans[0]['file']}): their ops' creation is not in the graphs file")
    if steps is None and node_re is None and not orphans:
        return None
    lo, hi = steps if steps is not None else (None, None)

    def in_steps(i):
        return (lo is None or i >= lo) and (hi is None or i < hi)

    walls = sorted(r["wall_time"] for r in executions)
    keep = {id(r) for r in executions
            if in_steps(r["index"]) and (node_re is None or node_re.search(r["op_type"] or ""))}
    orphan_ids = {id(t) for t in orphans}
    for t in traces:
        if id(t) in orphan_ids:
            continue
        if steps is not None and not in_steps(bisect.bisect_left(walls, t["wall_time"])):
            continue
        if node_re is not None and not node_re.search(t["op_name"] or ""):
            continue
        keep.add(id(t))
    return keep


def _build(target, name, root, blobs, keep, report):
    tmp = os.path.join(target, f".{name}.incomplete-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    written = 0
    try:
        for fname, rows in sorted(root.files.items()):
            parsed = tfdbg_v2.parse_name(fname)
            if parsed is None or fname != os.path.basename(fname) or "\0" in fname:
                report["rejected"].append(f"{name}: file name {fname!r}")
                continue
            if keep is not None and parsed.kind in tfdbg_v2.EXECUTION_KINDS:
                rows = [r for r in rows if r["what"] in ("file", "unframed") or id(r) in keep]
            problems = []
            with open(os.path.join(tmp, fname), "xb") as f:   # never two rows for one file
                for what, chunk in file_chunks(rows, blobs, problems):
                    f.write(chunk)
                    written += what == "record"
            report["warnings"].extend(f"{name}: {p}" for p in problems)
        final = os.path.join(target, name)
        if os.path.lexists(final) and (not os.path.isdir(final) or os.path.islink(final)):
            raise BlackboxError(f"{final} exists and is not a dump root directory; not replaced")
        put_in_place(tmp, final)
        return written
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

