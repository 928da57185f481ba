"""A run's rows that came from no captured tfevents file -> Events, window by window of steps.

One Event per (step, wall time) with every value of that step, as SummarySaverHook writes a
merged summary; media rows of one step and tag that were one plugin tensor (images, audio)
become that tensor again. Rows a captured summary record accounts for (same attempt, step,
wall time, under the file's directory) are left out: the mirrored files hold them.
wandb.Images given to recorder.log (`wandb_objects`) become the images plugin's tensor, as
tf.summary.image writes it: one value per key and step holding every image of a logged list.
"""

import collections
import json

from tfblackbox.schema.errors import StoreDamageError

from tfblackbox.schema.store.windows import step_windows

from . import events as ev

_TABLES = ("scalars", "histograms", "media", "tensors", "wandb_objects")
WINDOW_ROWS = 10_000   # rows read at once: the export's memory plateau


class Covered:
    """Which decoded rows the captured files hold (mirror.summary_keys)."""

    def __init__(self, keys):
        self.keys = keys

    def __call__(self, attempt, step, wall, tag):
        spaces = self.keys.get((attempt, step, wall))
        if not spaces:
            return False
        return "" in spaces or any(tag.startswith(ns + "/") for ns in spaces)


def run_events(store, run_id, lo, hi, covered, scalar_forms, counts):
    """Yields (step, wall_time, Event bytes) of steps lo <= step < hi in order; fills
    `scalar_forms` ({tag: "simple" | "double"}, kept across replays) and `counts`."""
    for a, b in step_windows(store, run_id, _TABLES, WINDOW_ROWS, lo, hi):
        yield from _window(store, run_id, a, b, covered, scalar_forms, counts)


def _window(store, run_id, lo, hi, covered, scalar_forms, counts):
    values = []   # (step, wall, order, value bytes)
    order = 0
    for table in _TABLES:
        t = store.read(run_id, table, steps=(lo, hi))
        if t.num_rows == 0:
            continue
        if table == "scalars":
            order = _scalars(t, covered, scalar_forms, values, order, counts)
            continue
        if table == "wandb_objects":   # recorder.log's: no captured file holds them
            order = _wandb_images(t.to_pylist(), values, order, counts)
            continue
        rows = [r for r in t.to_pylist() if not (covered.keys and covered(
            r["attempt"], r["step"], r["wall_time"], r["tag"]))]
        if table == "media":
            order = _media(rows, values, order, counts)
        else:
            for r in rows:
                body = ev.histogram(r["tag"], r) if table == "histograms" else \
                    ev.other_tensor(r["tag"], r)
                values.append((r["step"], r["wall_time"], order, body))
                order += 1
            counts[table] += len(rows)
    values.sort(key=lambda v: (v[0], v[1], v[2]))
    i = 0
    while i < len(values):
        step, wall = values[i][0], values[i][1]
        j = i
        while j < len(values) and values[j][0] == step and values[j][1] == wall:
            j += 1
        yield step, wall, ev.event(wall, step, summary=b"".join(v[3] for v in values[i:j]))
        counts["events"] += 1
        i = j


def _scalars(t, covered, forms, values, order, counts):
    steps, walls = t["step"].to_pylist(), t["wall_time"].to_pylist()
    tags, vals, attempts = t["tag"].to_pylist(), t["value"].to_pylist(), t["attempt"].to_pylist()
    keep = range(len(steps))
    if covered.keys:
        keep = [i for i in keep if not covered(attempts[i], steps[i], walls[i], tags[i])]
    by_tag = collections.defaultdict(list)
    for i in keep:
        by_tag[tags[i]].append(i)
    for tag, idx in by_tag.items():
        exact = ev.float32_exact([vals[i] for i in idx])
        if tag not in forms:
            forms[tag] = "simple" if exact else "double"
        make = ev.simple_scalar if forms[tag] == "simple" and exact else ev.double_scalar
        for i in idx:
            values.append((steps[i], walls[i], order + i, make(tag, vals[i])))
        counts["scalars"] += len(idx)
    return order + len(steps)


def _media(rows, values, order, counts):
    groups = collections.OrderedDict()   # tensor-form images/audio of one step and tag
    for r in rows:
        kind = r["kind"]
        if kind == "image" and r["colorspace"] is None or kind == "audio" and \
                r["sample_rate"] is None:
            groups.setdefault((r["step"], r["wall_time"], r["tag"], kind), []).append(r)
            continue
        make = {"image": ev.image, "audio": ev.audio, "text": ev.text,
                "pr_curve": ev.pr_curve}.get(kind)
        if make is None:
            raise StoreDamageError(f"media row of kind {kind!r} (tag {r['tag']!r}, step "
                                   f"{r['step']}); expected image, audio, text or pr_curve")
        values.append((r["step"], r["wall_time"], order, make(r["tag"], r)))
        order += 1
    for (step, wall, tag, kind), group in groups.items():
        group.sort(key=lambda r: r["index"] or 0)
        make = ev.image_tensor if kind == "image" else ev.audio_tensor
        values.append((step, wall, order, make(tag, group)))
        order += 1
    counts["media"] += len(rows)
    return order


def _wandb_images(rows, values, order, counts):
    """Each key's wandb.Images of one step -> one images-plugin value; other wandb types
    (Audio, Video, Html, Table, Histogram) and images that are references are left out."""
    groups = collections.OrderedDict()
    for r in rows:
        if r["wandb_type"] != "Image":
            continue
        meta = json.loads(r["meta_json"])
        if meta.get("file") is None:
            continue
        groups.setdefault((r["step"], r["wall_time"], r["tag"]), []).append(
            (r["index"] or 0, {"width": meta.get("width"), "height": meta.get("height"),
                               "data": r["files"][meta["file"]], "plugin_content": None}))
    for (step, wall, tag), items in groups.items():
        items.sort(key=lambda item: item[0])
        values.append((step, wall, order, ev.image_tensor(tag, [i for _n, i in items])))
        order += 1
        counts["media"] += len(items)
    return order


def graph_events(store, run_id, lo, hi):
    """(step, wall_time, Event) of each distinct partition graph DumpHook recorded."""
    t = store.read(run_id, "tfdbg_v1_graphs", steps=(lo, hi),
                   columns=["step", "event_wall_time", "wall_time", "graph_def"])
    out = []
    for step, ewall, wall, graph in zip(*(t[c].to_pylist() for c in t.column_names)):
        w = ewall if ewall is not None else wall
        out.append((step, w, ev.event(w, step, graph_def=graph)))
    return out
