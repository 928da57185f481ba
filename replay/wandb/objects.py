"""wandb objects recorded by `recorder.log` (recorder/wandb_values.py) -> wandb objects again.

Each stored object is its arguments as JSON (`meta`) plus the bytes of its files; the files are
written to the replay's scratch folder (which wandb then moves into the run), and the object is
built from them with the same caption, format, size, sample rate, boxes and masks, so the W&B
row holds what wandb.log would have written for the original. Images are built without PIL
(media.py's stored image).
"""

import json
import os

from .media import stored_image_class


def rebuild(meta_json, files, factory):
    return _build(json.loads(meta_json), files or [], factory)


def _build(meta, files, factory):
    import wandb
    kind = meta["type"]
    if kind == "Histogram":
        return wandb.Histogram(np_histogram=(meta["values"], meta["bins"]))
    if kind == "Table":
        rows = [[_build(c["__wandb__"], files, factory) if isinstance(c, dict) and
                 "__wandb__" in c else c for c in row] for row in meta["data"]]
        return wandb.Table(columns=meta["columns"], data=rows)
    path = _file(meta, files, factory)
    if kind == "Image":
        return _image(meta, files, factory, path)
    if kind == "Audio":
        audio = wandb.Audio(path, sample_rate=meta.get("sample_rate"), caption=meta.get("caption"))
        audio._is_tmp = "reference" not in meta
        return audio
    if kind == "Html":
        with open(path, encoding="utf-8") as f:
            return wandb.Html(f.read(), inject=False)   # the stored page is already injected
    if kind == "Video":
        video = wandb.Video(path, caption=meta.get("caption"), format=meta.get("format"))
        video._is_tmp = "reference" not in meta
        video._width, video._height = meta.get("width"), meta.get("height")
        return video
    raise ValueError(f"stored wandb object of unknown type {kind!r}")


def _file(meta, files, factory):
    """The path of the object's file: its bytes written to the scratch folder (a reference
    such as s3://... stays a reference)."""
    if meta.get("file") is None:
        return meta["reference"]
    ext = meta.get("ext") or "bin"
    return factory._file(files[meta["file"]], os.path.basename(ext))


def _image(meta, files, factory, path):
    import wandb
    if meta.get("file") is None:
        image = wandb.Image(path, caption=meta.get("caption"))
    else:
        image = stored_image_class()(path, meta.get("format") or meta.get("ext"),
                                     meta.get("width"), meta.get("height"))
        image._caption = meta.get("caption")
    boxes = {k: wandb.data_types.BoundingBoxes2D(
        {"box_data": v["box_data"], **({"class_labels": _labels(v["class_labels"])}
                                       if v.get("class_labels") is not None else {})}, k)
        for k, v in (meta.get("boxes") or {}).items()}
    masks = {}
    for k, m in (meta.get("masks") or {}).items():
        ext = m.get("ext") or ".mask.png"
        path = _file(dict(m, ext=ext.lstrip(".")), files, factory)
        mask = wandb.data_types.ImageMask({"path": path}, k)
        mask._set_file(path, is_tmp=True, extension=ext)   # wandb's own ".mask.png"
        mask._key = k
        if m.get("class_labels") is not None:
            mask._val = {"class_labels": _labels(m["class_labels"])}
        masks[k] = mask
    image._set_initialization_meta(grouping=meta.get("grouping"), caption=meta.get("caption"),
                                   classes=meta.get("classes"), boxes=boxes or None,
                                   masks=masks or None)
    return image


def _labels(labels):
    return {int(c): n for c, n in labels.items()}
