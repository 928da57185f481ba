"""wandb's own media objects passed to `recorder.log`, kept so that a replay rebuilds them.

Only used when the training process imported wandb itself. `snapshot(obj)` takes, on the
caller's thread (wandb deletes its temporary media files at exit), what rebuilds the object:
a JSON-ready dict of its arguments (`meta`, files referred to by their position) and the bytes
of its files. replay/wandb/objects.py does the reverse. Supported: Image (caption, format,
size, grouping, classes, boxes, masks), Audio, Html, Video, Table (cells plain values or these
objects) and Histogram; any other wandb type raises Unloggable naming it.
"""

import json
import os
import sys

from .values import WANDB, Unloggable, describe, plain

MAX_FILE_BYTES = 256 << 20


def encode(value):
    """(WANDB, (is a list, snapshots)) for a wandb media object or a list of them; None
    otherwise (values.encode then takes it). Only when the user already imported wandb: the
    recorder never imports it for this."""
    if sys.modules.get("wandb") is None:
        return None
    if is_wandb_value(value):
        return WANDB, (False, [snapshot(value)])
    if isinstance(value, (list, tuple)) and value and all(is_wandb_value(v) for v in value):
        return WANDB, (True, [snapshot(v) for v in value])
    return None


def is_wandb_value(value):
    import wandb
    return isinstance(value, wandb.sdk.data_types.base_types.wb_value.WBValue)


def snapshot(obj):
    """(type name, meta JSON text, [file bytes]) of a wandb object."""
    files = []
    meta = _meta(obj, files)
    return meta["type"], json.dumps(meta), files


def _meta(obj, files):
    import wandb
    if isinstance(obj, wandb.Histogram):
        return {"type": "Histogram", "values": plain(list(obj.histogram)),
                "bins": plain(list(obj.bins))}
    if isinstance(obj, wandb.Image):
        return _image(obj, files)
    if isinstance(obj, wandb.Audio):
        return dict(_media(obj, files, "Audio"), sample_rate=getattr(obj, "_sample_rate", None))
    if isinstance(obj, wandb.Html):
        return _media(obj, files, "Html")
    if isinstance(obj, wandb.Video):
        return dict(_media(obj, files, "Video"), format=getattr(obj, "_format", None),
                    width=getattr(obj, "_width", None), height=getattr(obj, "_height", None))
    if isinstance(obj, wandb.Table):
        return _table(obj, files)
    raise Unloggable(f"a {describe(obj)}: tfblackbox records wandb.Image, Audio, Html, Video, "
                     f"Table and Histogram; log this one with wandb itself, or as one of those")


def _file(obj, files):
    """Appends the bytes of the object's file; returns its position (None: a reference)."""
    path = getattr(obj, "_path", None)
    if path is None:
        raise Unloggable(f"a {describe(obj)} that has no file")
    if "://" in str(path):
        return None
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise Unloggable(f"a {describe(obj)} whose file {path} has {size} bytes, more "
                             f"than {MAX_FILE_BYTES}")
        with open(path, "rb") as f:
            files.append(f.read())
    except OSError as e:
        raise Unloggable(f"a {describe(obj)} whose file {path} cannot be read ({e})") from e
    return len(files) - 1


def _media(obj, files, kind):
    index = _file(obj, files)
    out = {"type": kind, "file": index, "caption": getattr(obj, "_caption", None),
           "ext": (getattr(obj, "_extension", None) or os.path.splitext(obj._path)[1]).lstrip(".")}
    if index is None:
        out["reference"] = str(obj._path)
    return out


def _image(obj, files):
    out = dict(_media(obj, files, "Image"), format=getattr(obj, "format", None),
               width=getattr(obj, "_width", None), height=getattr(obj, "_height", None),
               grouping=getattr(obj, "_grouping", None))
    classes = getattr(obj, "_classes", None)
    if classes is not None:
        out["classes"] = plain(list(classes._class_set))
    boxes = getattr(obj, "_boxes", None) or {}
    if boxes:
        out["boxes"] = {k: {"box_data": plain(list(b._val)),
                            "class_labels": _labels(getattr(b, "_class_labels", None))}
                        for k, b in boxes.items()}
    masks = getattr(obj, "_masks", None) or {}
    if masks:
        out["masks"] = {}
        for k, m in masks.items():
            labels = getattr(m, "_val", {}).get("class_labels")
            out["masks"][k] = {"file": _file(m, files), "class_labels": _labels(labels),
                               "ext": getattr(m, "_extension", None)}
    return out


def _labels(labels):
    """Class labels {int: name} as JSON ({"1": name}); None stays None."""
    return None if labels is None else {str(c): n for c, n in labels.items()}


def _table(obj, files):
    rows = []
    for row in obj.data:
        cells = []
        for cell in row:
            if is_wandb_value(cell):
                cells.append({"__wandb__": _meta(cell, files)})
            else:
                cells.append(plain(cell))
        rows.append(cells)
    return {"type": "Table", "columns": plain(list(obj.columns)), "data": rows}
