"""wandb media objects logged with `recorder.log` (the `wandb_objects` table): the latest step
of each key, shaped as data.latest_media's groups so the page shows them beside the TF media.

wandb.Image (PNG, JPEG, GIF, ...) is shown as an image, wandb.Audio as a player, wandb.Video as
a GIF or a video player, each with its caption, within the page's media budget; a Table, Html
or Histogram is named (the W&B replay shows it).
"""

import base64
import json

_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
          "bmp": "image/bmp", "webp": "image/webp", "svg": "image/svg+xml",
          "wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac",
          "mp4": "video/mp4", "webm": "video/webm", "ogg": "video/ogg"}
_KINDS = {"Image": "image", "Audio": "audio", "Video": "video"}


def latest_objects(store, run_id, budget):
    """[{tag, kind, step, wandb_type, items}] of the latest step of each key."""
    if not store.segments(run_id, "wandb_objects"):
        return []
    t = store.read(run_id, "wandb_objects", columns=["step", "tag", "index", "wandb_type",
                                                     "meta_json", "files"])
    latest = {}
    for i, (tag, step) in enumerate(zip(t["tag"].to_pylist(), t["step"].to_pylist())):
        if tag not in latest or step > latest[tag][0]:
            latest[tag] = (step, [i])
        elif step == latest[tag][0]:
            latest[tag][1].append(i)
    out = []
    for tag in sorted(latest):
        step, idx = latest[tag]
        rows = [t.slice(i, 1).to_pylist()[0] for i in idx]
        rows.sort(key=lambda r: r["index"] or 0)
        wandb_type = rows[0]["wandb_type"]
        out.append({"tag": tag, "kind": _KINDS.get(wandb_type, "note"), "step": step,
                    "wandb_type": wandb_type, "source": "recorder.log",
                    "items": [_item(r, budget) for r in rows]})
    return out


def _item(row, budget):
    meta = json.loads(row["meta_json"])
    kind = _KINDS.get(meta["type"])
    if kind is None:
        return {"text": _described(meta), "truncated": False}
    ext = (meta.get("format") if kind == "image" else None) or meta.get("ext") or ""
    content_type = _TYPES.get(ext.lower().lstrip("."), "application/octet-stream")
    item = {"content_type": content_type, "width": meta.get("width"),
            "height": meta.get("height"), "sample_rate": meta.get("sample_rate"),
            "caption": meta.get("caption"), "bytes": 0}
    if meta.get("file") is None:
        item["reference"] = meta.get("reference")
        return item
    blob = (row["files"] or [])[meta["file"]]
    item["bytes"] = len(blob)
    if content_type.startswith("image/") and kind == "video":
        item["as_image"] = True   # a GIF video: an <img> plays it
    if budget.take(len(blob)):
        item["src"] = f"data:{content_type};base64,{base64.b64encode(blob).decode()}"
    return item


def _described(meta):
    kind = meta["type"]
    if kind == "Table":
        return (f"wandb.Table: {len(meta.get('columns') or [])} column(s), "
                f"{len(meta.get('data') or [])} row(s) (replay --to wandb shows it)")
    if kind == "Histogram":
        return f"wandb.Histogram: {len(meta.get('values') or [])} bin(s)"
    return f"wandb.{kind} (replay --to wandb shows it)"

