"""A run's summary as W&B holds it after `replay --to wandb`, computed from the store.

W&B's summary keeps, for every history key, the last value logged (media and histograms as a
description of the last one); `define_metric(name, summary="min,max,mean,first,last")` turns
a number's entry into {op: value} over every value logged (NaN spreads, as in wandb-core),
`summary="none"` leaves the key out; an exact name's definition wins over a glob (`name*`),
of globs the first defined, and the ops of repeated definitions add up. `run.summary[k] = v`
sets k until a value of k is logged at that step or later (the recorder records it at the
step of the row being built, which is committed after it), and from then on k holds its
last logged value, aggregates or not; `del run.summary[k]` removes k until a value is
logged again. A Keras model's parameter counts are there as `model/<name>/parameters`, as the
replay puts them. These are the rules wandb 0.31 follows (tests/test_report.py holds the
result equal to wandb's own summary of the same calls).

Each entry: {"key", "value" (plain JSON-ready Python, or {"_type": ...} for media), "step"}.
"""

import json
import math

_TF_MEDIA_TYPE = {"image": "image-file", "audio": "audio-file", "text": "text",
                  "pr_curve": "pr_curve"}
_WANDB_TYPE = {"Image": "image-file", "Audio": "audio-file", "Video": "video-file",
               "Html": "html-file", "Table": "table-file", "Histogram": "histogram"}


def run_summary(store, run_id, scalar_stats, histograms, media):
    """Entries sorted by key. scalar_stats: {tag: stats of data.scalar_series}; histograms:
    {tag: last step}; media: [{tag, kind, step, items}] (TF media and wandb objects)."""
    events = _events(store, run_id)
    history = {}   # key -> (step, value) of its last logged value, whatever the table

    def logged(key, step, value):
        if key not in history or step >= history[key][0]:
            history[key] = (step, value)

    for tag, s in scalar_stats.items():
        logged(tag, s["last_step"], _number(s["last"], events["types"].get(tag)))
    for tag, step in histograms.items():
        logged(tag, step, {"_type": "histogram"})
    for g in media:
        logged(g["tag"], g["step"], _media_value(g))
    for tag, (step, value) in _log_values(store, run_id).items():
        logged(tag, step, value)

    out = {}
    explicit = {key for _s, kind, key, _v in events["summary"] if kind == "summary"}
    for key, (step, value) in history.items():
        ops = _ops(key, events["metrics"])
        if ops and "none" in ops:
            continue
        if ops and key in scalar_stats and step == scalar_stats[key]["last_step"] and \
                key not in explicit:
            value = _aggregate(scalar_stats[key], ops, events["types"].get(key))
        out[key] = (step, value)
    for step, kind, key, value in events["summary"]:
        if key in history and history[key][0] >= step:
            continue   # a value logged at or after this step overrides it, as in W&B
        if kind == "summary_remove":
            out.pop(key, None)
        else:
            out[key] = (step, value)
    return [{"key": k, "value": v, "step": s} for k, (s, v) in sorted(out.items())]


def _events(store, run_id):
    """summary updates (in order), define_metric summary ops and the int/bool type of
    logged numbers, from the run_events table (every attempt's, as the replay applies them)."""
    found = {"summary": [], "metrics": [], "types": {}}
    if not store.segments(run_id, "run_events"):
        return found
    cols = ["step", "attempt", "seq", "kind", "tag", "value_json"]
    t = store.read(run_id, "run_events", columns=cols, latest_only=False)
    rows = sorted(zip(*(t[c].to_pylist() for c in cols)), key=lambda r: r[:3])
    for step, _attempt, _seq, kind, tag, text in rows:
        if kind in ("summary", "summary_remove"):
            found["summary"].append((step, kind, tag, json.loads(text)))
        elif kind == "model":
            info = json.loads(text)
            for key in ("parameters", "trainable_parameters"):
                if info.get(key) is not None:
                    found["summary"].append((step, "summary", f"model/{tag}/{key}", info[key]))
        elif kind == "define_metric":
            ops = (json.loads(text).get("summary") or "").lower()
            if ops:
                found["metrics"].append((tag, [op for op in ops.split(",") if op]))
        elif kind == "value_type":
            found["types"][tag] = json.loads(text)
    return found


def _ops(key, metrics):
    """The summary ops defined for a key: an exact name's (all its definitions), else the
    first matching glob's; None when none applies."""
    exact = [op for name, ops in metrics if name == key for op in ops]
    if exact:
        return set(exact)
    for name, _ops in metrics:
        if name.endswith("*") and key.startswith(name[:-1]):
            return {op for n, ops in metrics if n == name for op in ops}
    return None


def _aggregate(stats, ops, kind):
    out = {}
    for op in sorted(ops):
        if op in ("last", "copy"):
            out["last"] = _number(stats["last"], kind)
        elif op in ("min", "max", "first"):
            out[op] = _number(stats[op], kind)
        elif op == "mean":
            out[op] = stats["mean"]
    return out


def _number(v, kind):
    if kind == "int" and math.isfinite(v):
        return int(v)
    if kind == "bool":
        return bool(v)
    return v


def _media_value(group):
    kind = group.get("wandb_type")
    item = group["items"][0] if group["items"] else {}
    if kind is not None:
        value = {"_type": _WANDB_TYPE.get(kind, kind)}
    else:
        gif = (item.get("content_type") or "") == "image/gif"
        value = {"_type": "video-file" if gif else _TF_MEDIA_TYPE.get(group["kind"],
                                                                     group["kind"])}
    for k in ("width", "height"):
        if item.get(k):
            value[k] = item[k]
    if len(group["items"]) > 1:
        value["count"] = len(group["items"])
        if value["_type"] == "image-file":
            value["_type"] = "images/separated"   # a list of images, as wandb describes it
    return value


def _log_values(store, run_id):
    """{tag: (last step, value)} of logged strings, lists, dicts and None."""
    if not store.segments(run_id, "log_values"):
        return {}
    t = store.read(run_id, "log_values", columns=["step", "tag", "value_json"])
    out = {}
    for step, tag, text in zip(*(t[c].to_pylist() for c in ("step", "tag", "value_json"))):
        out[tag] = (step, json.loads(text))
    return out
