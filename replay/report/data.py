"""What the report shows, read from the store into plain, JSON-ready structures.

Scalars: per tag, per run, the downsampled (step, value) points (downsample.py) with the
wall times of the kept points. Histograms: per run and tag, up to HIST_STEPS recorded steps
redistributed onto one common grid of HIST_BINS bins (a heatmap of counts over steps).
Media: the latest step's images, audio, text and pr-curves per run and tag (within a byte
budget: a page must open). Other tensors: per tag, plugin, dtype, shape, count. Debug dumps:
per run, what DumpHook (or import-dumps) recorded.
"""

import base64
import collections
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tfblackbox.schema.store.records import run_state

from .downsample import BUCKETS, minmax

HIST_STEPS = 100
HIST_BINS = 60
MEDIA_BUDGET = 4 << 20       # bytes of media embedded in one page
MEDIA_ITEM_MAX = 1 << 20     # a single image or clip larger than this is named, not embedded
TEXT_MAX = 20_000            # characters of one text shown


def run_info(store, record):
    end = record.ended_at or record.heartbeat_at
    return {"run_id": record.run_id, "name": record.name or record.run_id,
            "project": record.project, "status": run_state(record), "group": record.group,
            "started": _iso(record.started_at), "ended": _iso(record.ended_at),
            "duration_s": (end - record.started_at) if end and record.started_at else None,
            "tags": list(record.tags or []), "notes": record.notes, "host": record.host,
            "config": record.config, "exit_code": record.exit_code,
            "size_bytes": store.size_bytes(record.run_id)}


def _iso(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else None


# -- scalars -----------------------------------------------------------------------------------

def scalar_series(store, run_id, buckets=BUCKETS):
    """{tag: {"steps", "values", "walls", "count", "nonfinite", "stats"}} of one run (the
    stats, of every row, are for the summary and stay out of the page's JSON)."""
    t = store.read(run_id, "scalars", columns=["step", "wall_time", "tag", "value"])
    out = {}
    if t.num_rows == 0:
        return out
    tags = t["tag"].combine_chunks().dictionary_encode()
    codes = tags.indices.to_numpy(zero_copy_only=False)
    steps = t["step"].to_numpy()
    values = t["value"].to_numpy()
    walls = t["wall_time"].to_numpy()
    for code, name in enumerate(tags.dictionary.to_pylist()):
        idx = np.flatnonzero(codes == code)   # rows are in step order: so are a tag's
        if not len(idx):
            continue
        s, v, w = steps[idx], values[idx], walls[idx]
        ks, kv = minmax(s, v, buckets)
        kw = np.interp(ks, s, w) if len(ks) else ks
        out[name] = {"steps": ks.tolist(), "values": kv.tolist(),
                     "walls": np.round(kw, 3).tolist(), "count": int(len(idx)),
                     "nonfinite": int((~np.isfinite(v)).sum()), "stats": _stats(s, v)}
    return out


def _stats(steps, values):
    """What the run's summary needs of a tag (summary.py): every value counts, NaN too."""
    with np.errstate(invalid="ignore"):
        return {"first": float(values[0]), "last": float(values[-1]),
                "min": float(np.min(values)), "max": float(np.max(values)),
                "mean": float(np.mean(values)), "last_step": int(steps[-1])}


# -- histograms --------------------------------------------------------------------------------

def histogram_maps(store, run_id):
    """{tag: {"steps", "bins" (centres), "counts" [bins][steps]}} of one run."""
    t = store.read(run_id, "histograms", columns=["step", "tag", "bucket_limits",
                                                  "bucket_counts", "bucket_lefts", "min", "max"])
    out = {}
    if t.num_rows == 0:
        return out
    for tag in sorted(set(t["tag"].to_pylist())):
        rows = t.filter(pc.equal(t["tag"], tag))
        n = rows.num_rows
        pick = np.unique(np.linspace(0, n - 1, min(n, HIST_STEPS)).round().astype(int))
        rows = rows.take(pa.array(pick)).to_pylist()
        edges = [_edges(r) for r in rows]
        lo = min((e[0][0] for e in edges if len(e[0])), default=0.0)
        hi = max((e[1][-1] for e in edges if len(e[1])), default=1.0)
        if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
            lo, hi = (lo, lo + 1.0) if np.isfinite(lo) else (0.0, 1.0)
        grid = np.linspace(lo, hi, HIST_BINS + 1)
        counts = np.column_stack([_regrid(left, right, c, grid) for left, right, c in edges])
        out[tag] = {"steps": [r["step"] for r in rows],
                    "bins": ((grid[:-1] + grid[1:]) / 2).round(6).tolist(),
                    "counts": counts.round(3).tolist()}
    return out


def _edges(row):
    """(lefts, rights, counts) of one histogram row, finite edges only."""
    right = np.asarray(row["bucket_limits"] or [], np.float64)
    counts = np.asarray(row["bucket_counts"] or [], np.float64)
    if row["bucket_lefts"] is not None:
        left = np.asarray(row["bucket_lefts"], np.float64)
    else:   # a HistogramProto: each bucket starts where the previous ended, the first at min
        left = np.r_[row["min"] if row["min"] is not None else (right[0] if len(right) else 0),
                     right[:-1]]
        right = np.minimum(right, row["max"]) if row["max"] is not None else right
        left = np.maximum(left, row["min"]) if row["min"] is not None else left
    ok = np.isfinite(left) & np.isfinite(right) & (counts > 0)
    return left[ok], right[ok], counts[ok]


def _regrid(left, right, counts, grid):
    """Counts spread uniformly over each bucket, summed per grid bin."""
    out = np.zeros(len(grid) - 1)
    for a, b, c in zip(left, right, counts):
        if b <= a:
            i = min(max(np.searchsorted(grid, a, "right") - 1, 0), len(out) - 1)
            out[i] += c
            continue
        overlap = np.clip(np.minimum(grid[1:], b) - np.maximum(grid[:-1], a), 0, None)
        out += c * overlap / (b - a)
    return out


# -- media, tensors, dumps ---------------------------------------------------------------------

class Budget:
    def __init__(self, limit=MEDIA_BUDGET):
        self.left = limit

    def take(self, n):
        if n > MEDIA_ITEM_MAX or n > self.left:
            return False
        self.left -= n
        return True


def latest_media(store, run_id, budget):
    """[{tag, kind, step, items: [...]}] of the latest step of each media tag."""
    t = store.read(run_id, "media", columns=["step", "tag", "kind", "index", "content_type",
                                             "data", "width", "height", "sample_rate"])
    if t.num_rows == 0:
        return []
    latest = {}
    tags, steps = t["tag"].to_pylist(), t["step"].to_pylist()
    for i, (tag, step) in enumerate(zip(tags, steps)):
        if tag not in latest or step > latest[tag][0]:
            latest[tag] = (step, [i])
        elif step == latest[tag][0]:
            latest[tag][1].append(i)
    out = []
    for tag in sorted(latest):
        step, idx = latest[tag]
        rows = t.take(pa.array(idx)).to_pylist()
        rows.sort(key=lambda r: r["index"] or 0)
        out.append({"tag": tag, "kind": rows[0]["kind"], "step": step,
                    "items": [_media_item(r, budget) for r in rows]})
    return out


def _media_item(r, budget):
    kind, data = r["kind"], r["data"] or b""
    if kind in ("image", "audio"):
        item = {"content_type": r["content_type"], "bytes": len(data), "width": r["width"],
                "height": r["height"], "sample_rate": r["sample_rate"]}
        if budget.take(len(data)):
            item["src"] = (f"data:{r['content_type']};base64,"
                           f"{base64.b64encode(data).decode()}")
        return item
    if kind == "pr_curve":
        return {"curve": json.loads(data)}
    text = data.decode("utf-8", "replace")
    if r["content_type"] == "application/json":
        text = "\n".join(_flat_text(json.loads(text)))
    return {"text": text[:TEXT_MAX], "truncated": len(text) > TEXT_MAX}


def _flat_text(value):
    if isinstance(value, list):
        return [x for v in value for x in _flat_text(v)]
    return [str(value)]


def tensor_summary(store, run_id):
    t = store.read(run_id, "tensors", columns=["step", "tag", "dtype", "shape", "plugin_name"])
    groups = collections.OrderedDict()
    for r in t.to_pylist():
        g = groups.setdefault(r["tag"], {"tag": r["tag"], "plugin": r["plugin_name"],
                                         "dtype": r["dtype"], "shape": r["shape"], "count": 0})
        g["count"] += 1
        g["last_step"] = r["step"]
    return list(groups.values())


def debug_summary(store, run_id):
    runs = store.read(run_id, "tfdbg_v1_runs", columns=["step", "status", "devices",
                                                     "tensor_count", "tensor_bytes"])
    if runs.num_rows == 0:
        return None
    nodes = store.read(run_id, "tfdbg_v1_tensors", columns=["node_name", "debug_op"])
    by_node = collections.Counter(nodes["node_name"].to_pylist())
    steps = runs["step"].to_pylist()
    return {"session_runs": runs.num_rows, "first_step": min(steps), "last_step": max(steps),
            "tensors": int(pc.sum(runs["tensor_count"]).as_py() or 0),
            "bytes": int(pc.sum(runs["tensor_bytes"]).as_py() or 0),
            "devices": sorted({d for ds in runs["devices"].to_pylist() for d in ds or ()}),
            "statuses": dict(collections.Counter(runs["status"].to_pylist())),
            "debug_ops": dict(collections.Counter(nodes["debug_op"].to_pylist())),
            "top_nodes": by_node.most_common(10),
            "graphs": store.read(run_id, "tfdbg_v1_graphs", columns=["step"]).num_rows}
