"""What `tfblackbox show` says about a run's tfdbg v2 capture (no TensorFlow): per dump root
its hosts, tensor debug modes, executions and graph execution traces with their most frequent
op types, graphs, and the NaN / Inf the health modes found, from the decoded columns."""

import collections

from tfblackbox.schema.codecs.tfdbg_v2_restore import dump_roots
from tfblackbox.schema.tables.tfdbg_v2 import TFDBG_V2_RECORDS

TOP = 5            # op types listed per kind
FIRST_BAD = 5      # NaN/Inf findings listed
_COLUMNS = [f.name for f in TFDBG_V2_RECORDS if f.name not in ("record", "debug_values")]


def describe(store, run_id):
    """{"dump_roots": [...]} of a run's tfdbg v2 records, or None when it has none."""
    roots = dump_roots(store, run_id, columns=_COLUMNS)
    if not roots:
        return None
    return {"dump_roots": [_describe_root(root) for root in roots]}


def _describe_root(root):
    count = collections.Counter(r["what"] for r in root.rows())
    op_type = {(r["graph_id"], r["op_name"]): r["op_type"]
               for r in root.rows(what="graph_op_creation")}
    executions = list(root.rows(what="execution"))
    traces = list(root.rows(what="graph_execution_trace"))
    modes = collections.Counter(r["tensor_debug_mode"] for r in executions + traces
                                if r["tensor_debug_mode"])
    sources = list(root.rows(what="source_file"))
    bad = [("execution", r["index"], r["op_type"], r["nonfinite"]) for r in executions
           if r["nonfinite"]]
    bad += [("trace", r["index"], r["op_name"], r["nonfinite"]) for r in traces
            if r["nonfinite"]]
    health = any(m in ("CURT_HEALTH", "CONCISE_HEALTH", "FULL_HEALTH") for m in modes)
    return {
        "dir": f"tfdbg2_{root.key}", "tfdbg_run_id": root.tfdbg_run_id, "hosts": root.hosts,
        "attempts": sorted(root.attempts), "files": len(root.files),
        "record_bytes": sum(r["length"] for r in root.rows() if r["what"] != "file"),
        "modes": dict(modes), "executions": len(executions), "traces": len(traces),
        "graphs": count["debugged_graph"], "op_creations": count["graph_op_creation"],
        "stack_frames": count["stack_frame_with_id"], "source_files": len(sources),
        "source_bytes": sum(r["length"] for r in sources),
        "unframed_bytes": sum(r["length"] for r in root.rows(what="unframed")),
        "top_executions": collections.Counter(r["op_type"] for r in executions).most_common(TOP),
        "top_traced_ops": collections.Counter(
            op_type.get((r["graph_id"], r["op_name"]), "?") for r in traces).most_common(TOP),
        "nonfinite": None if not health else {
            "executions": sum(1 for b in bad if b[0] == "execution"),
            "traces": sum(1 for b in bad if b[0] == "trace"),
            "first": [dict(zip(("kind", "index", "op", "count"), b))
                      for b in sorted(bad, key=lambda b: (b[0] != "execution", b[1]))[:FIRST_BAD]],
        },
    }


def lines(info):
    """The text `show` prints for describe()'s result."""
    out = []
    for d in info["dump_roots"]:
        modes = ", ".join(f"{m} {n}" for m, n in sorted(d["modes"].items())) or "-"
        out.append(f"  tfdbg v2 {d['dir']}: host {', '.join(d['hosts'])}, attempt "
                   f"{', '.join(map(str, d['attempts']))}, {d['files']} files, "
                   f"{_mb(d['record_bytes'])} of records; modes: {modes}")
        out.append(f"    executions {d['executions']}{_top(d['top_executions'])}")
        out.append(f"    graph execution traces {d['traces']}{_top(d['top_traced_ops'])}")
        out.append(f"    graphs {d['graphs']}, op creations {d['op_creations']}, stack frames "
                   f"{d['stack_frames']}, source files {d['source_files']} "
                   f"({_mb(d['source_bytes'])}, their lines stored once per content)")
        if d["unframed_bytes"]:
            out.append(f"    {d['unframed_bytes']} bytes after a last complete record (kept as "
                       f"they were)")
        bad = d["nonfinite"]
        if bad is None:
            continue
        if not bad["executions"] and not bad["traces"]:
            out.append("    NaN/Inf: none found")
            continue
        first = "; ".join(f"{b['kind']} {b['index']} {b['op']} ({b['count']})"
                          for b in bad["first"])
        out.append(f"    NaN/Inf in {bad['executions']} execution(s), {bad['traces']} "
                   f"trace(s); first: {first}")
    return out


def _top(counts):
    return f" (most: {', '.join(f'{k} {n}' for k, n in counts)})" if counts else ""


def _mb(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
