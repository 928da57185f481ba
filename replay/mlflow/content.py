"""What an MLflow run gets from a recorded run: params, tags, status and times (from the run
record), metric points and artifacts (from the store's tables, a window of steps at a time).

- Params: the config (and `run.config` updates) flattened with `.` (`opt.m`); values as MLflow
  writes them (`str`), cut to MLflow's MAX_PARAM_VAL_LENGTH (6000) with the cut named in a
  warning; the whole config is the artifact `tfblackbox/config.json` either way.
- Tags: `mlflow.runName`, `mlflow.note.content` (notes), `mlflow.source.git.commit`,
  `tfblackbox.run_id` (how the run is found again), `.group`, `.project`, `.host`,
  `.status`, `.exit_code`, `.tags` (the labels, comma-separated), and one tag per label with
  an empty value (MLflow's tags are key/value; its UI shows the label).
- Metrics: every scalar (NaN and infinities as MLflow keeps them) with the recorded step and
  the wall time in ms.
- Artifacts: histograms as `histograms/<tag>/steps_<lo>-<hi>.json` (one file per tag and
  window); images where MLflow's `log_image(key=tag, step=...)` puts them
  (`images/<tag>+step+<s>+timestamp+<ms>+<id>.png` and its `+compressed` twin, which
  MLflow's image panel shows; the twin is the same bytes), audio, text and pr-curves as
  `audio|text|pr_curves/<tag>/step_<s>[_<i>].<ext>`, the console as `console.log`.
  Names depend only on the rows, so a window pushed again rewrites the same files.
"""

import dataclasses
import hashlib
import json
import os
import re
import uuid

from tfblackbox.schema.store import windows

WINDOW_ROWS = 10_000
TABLES = ("scalars", "histograms", "media")
_MEDIA_COLS = ["step", "wall_time", "tag", "kind", "index", "content_type", "data"]
_HIST_COLS = ["step", "wall_time", "tag", "num", "min", "max", "sum", "sum_squares",
              "bucket_limits", "bucket_counts", "bucket_lefts", "source"]
_EXT = {"image/png": "png", "image/gif": "gif", "image/jpeg": "jpg", "audio/wav": "wav",
        "audio/x-wav": "wav", "text/plain": "txt", "application/json": "json"}
_NS = uuid.UUID("6f1c4c52-1d2b-4a8e-9a57-1b0c9e7f2a10")


def ms(seconds):
    return int(round(seconds * 1000))


# -- params and tags ------------------------------------------------------------------------

def flatten(config, prefix=""):
    """{"opt": {"m": 0.9}} -> {"opt.m": 0.9}; other values as they are."""
    out = {}
    for k, v in (config or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def params_of(config, max_len, max_key=250):
    """[(key, value text)] and {key: warning} for values cut to MLflow's limit (or keys too
    long to be params)."""
    params, warnings = [], {}
    for key, value in flatten(config).items():
        text = value if isinstance(value, str) else json.dumps(value) \
            if isinstance(value, (list, tuple, bool)) or value is None else str(value)
        if len(key) > max_key:
            warnings[key] = (f"config key {key[:60]!r}... is longer than MLflow's {max_key} "
                             f"characters for a param name: left out (it is in "
                             f"tfblackbox/config.json)")
            continue
        if len(text) > max_len:
            warnings[key] = (f"param {key!r}: its value ({len(text)} characters) is longer "
                             f"than MLflow's limit of {max_len} (MAX_PARAM_VAL_LENGTH): cut "
                             f"to {max_len}; the whole value is in tfblackbox/config.json")
            text = text[:max_len]
        params.append((key, text))
    return params, warnings


_TAG_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def tags_of(record, status):
    tags = {"tfblackbox.run_id": record.run_id, "mlflow.runName": record.name or record.run_id,
            "tfblackbox.status": status}
    if record.notes:
        tags["mlflow.note.content"] = record.notes
    if record.git_commit:
        tags["mlflow.source.git.commit"] = record.git_commit
    for key, value in (("tfblackbox.group", record.group), ("tfblackbox.project", record.project),
                       ("tfblackbox.host", record.host)):
        if value:
            tags[key] = str(value)
    if record.exit_code is not None:
        tags["tfblackbox.exit_code"] = str(record.exit_code)
    if record.tags:
        tags["tfblackbox.tags"] = ", ".join(map(str, record.tags))
        for label in record.tags:
            key = _TAG_KEY.sub("_", str(label))[:250]
            if key and key not in tags:
                tags[key] = ""
    return tags


def status_of(record, state):
    """(MLflow status, end time in ms or None) of a run in state `state` (run_state)."""
    if state == "running":
        return "RUNNING", None
    end = record.ended_at or record.heartbeat_at or record.started_at
    return ("FINISHED" if state == "finished" else "FAILED"), ms(end)


# -- metric names ---------------------------------------------------------------------------

_BAD_NAME = re.compile(r"[^A-Za-z0-9_\-. :/]")
_NAMES: dict[str, str] = {}   # tag -> MLflow metric name


def metric_key(tag):
    """The tag as an MLflow metric name: itself when MLflow takes it (alphanumerics, `_ - . :
    /` and spaces, a path that normalizes to itself, at most 250 characters), else its
    refused characters as `_` plus a hash of the tag, so two tags never share a name."""
    key = _NAMES.get(tag)
    if key is None:
        import posixpath
        norm = posixpath.normpath(tag) if tag else ""
        if (tag and len(tag) <= 250 and not _BAD_NAME.search(tag) and norm == tag
                and not norm.startswith(("..", "/")) and norm != "."):
            key = tag
        else:
            clean = "/".join(p for p in _BAD_NAME.sub("_", tag).split("/")
                             if p not in ("", ".", "..")) or "_"
            digest = hashlib.sha1(tag.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            key = f"{clean[:230]}_{digest}"
        _NAMES[tag] = key
    return key


def renamed(tags):
    """Warnings for the tags logged under another name."""
    return [f"metric {t!r} is logged as {metric_key(t)!r}: MLflow's names take only letters, "
            f"digits, '_', '-', '.', ':', '/' and spaces" for t in tags if metric_key(t) != t]


# -- a window of steps ----------------------------------------------------------------------

@dataclasses.dataclass
class Window:
    lo: int                  # first and last step with rows
    hi: int
    steps: int               # distinct steps
    keys: list               # metric points: parallel lists
    values: list
    stamps: list
    at: list
    hist: dict               # histograms columns
    media: dict              # media columns
    tags: set = dataclasses.field(default_factory=set)   # the scalar tags as recorded

    def metrics(self, skip=None):
        """mlflow Metric objects of the window, less the (key, step) pairs in `skip`."""
        from mlflow.entities import Metric
        if skip:
            return [Metric(k, v, t, s) for k, v, t, s in zip(self.keys, self.values,
                                                              self.stamps, self.at)
                    if (k, s) not in skip]
        return [Metric(k, v, t, s) for k, v, t, s in zip(self.keys, self.values, self.stamps,
                                                          self.at)]

    @property
    def has_artifacts(self):
        return bool(self.hist["step"]) or bool(self.media["step"])


def windows_of(store, run_id, lo=None, hi=None, window_rows=None):
    """[(a, b)] step ranges of about WINDOW_ROWS rows (schema/store/windows.py)."""
    return windows.step_windows(store, run_id, TABLES, window_rows or WINDOW_ROWS, lo, hi)


def load_window(store, run_id, a, b):
    """The rows of steps a <= step < b, or None when there are none."""
    sc = store.scalars(run_id, steps=(a, b), columns=["step", "wall_time", "tag", "value"])
    h = store.histograms(run_id, steps=(a, b), columns=_HIST_COLS)
    m = store.media(run_id, steps=(a, b), columns=_MEDIA_COLS)
    if sc.num_rows + h.num_rows + m.num_rows == 0:
        return None
    at = sc["step"].to_pylist()
    stamps = [ms(w) for w in sc["wall_time"].to_pylist()]
    hist = {c: h[c].to_pylist() for c in _HIST_COLS}
    media = {c: m[c].to_pylist() for c in _MEDIA_COLS}
    all_steps = set(at) | set(hist["step"]) | set(media["step"])
    tags = sc["tag"].to_pylist()
    return Window(min(all_steps), max(all_steps), len(all_steps), [metric_key(t) for t in tags],
                  sc["value"].to_pylist(), stamps, at, hist, media, set(tags))


# -- artifacts ------------------------------------------------------------------------------

def safe_path(tag):
    """A tag as a relative artifact path: its `/` levels kept, other characters MLflow or a
    file system would refuse replaced, no empty, `.` or `..` part."""
    parts = [re.sub(r"[^A-Za-z0-9_\-. ]", "_", p).strip() for p in str(tag).split("/")]
    parts = [p if p not in ("", ".", "..") else "_" for p in parts]
    return "/".join(parts) or "_"


def write_window_artifacts(window, run_id, root):
    """Writes the window's histograms and media under `root`; returns how many files of
    each kind."""
    counts = {"histograms": 0, "images": 0, "media": 0}
    h = window.hist
    per_tag = {}
    for i, tag in enumerate(h["tag"]):
        per_tag.setdefault(tag, []).append(i)
    for tag, idx in per_tag.items():
        lo, hi = h["step"][idx[0]], h["step"][idx[-1]]
        rows = [{"step": h["step"][i], "wall_time": h["wall_time"][i],
                 **{k: h[k][i] for k in ("num", "min", "max", "sum", "sum_squares",
                                         "bucket_limits", "bucket_counts", "bucket_lefts",
                                         "source")}} for i in idx]
        path = os.path.join(root, "histograms", safe_path(tag), f"steps_{lo}-{hi}.json")
        _write(path, json.dumps(rows, allow_nan=True).encode())
        counts["histograms"] += 1
    m = window.media
    for i, kind in enumerate(m["kind"]):
        step, tag, index = m["step"][i], m["tag"][i], m["index"][i] or 0
        data = m["data"][i] or b""
        ext = _EXT.get(m["content_type"][i] or "", "bin")
        if kind == "image":
            key = safe_path(tag).replace("/", "~")
            stamp = ms(m["wall_time"][i])
            ident = uuid.uuid5(_NS, f"{run_id}/{tag}/{step}/{index}")
            base = f"{key}+step+{step}+timestamp+{stamp}+{ident}"
            _write(os.path.join(root, "images", f"{base}.{ext}"), data)
            _write(os.path.join(root, "images", f"{base}+compressed.webp"), data)
            counts["images"] += 1
            continue
        folder = {"audio": "audio", "text": "text", "pr_curve": "pr_curves"}.get(kind, kind)
        name = f"step_{step}" + (f"_{index}" if index else "") + f".{ext}"
        _write(os.path.join(root, folder, safe_path(tag), name), data)
        counts["media"] += 1
    return counts


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def console_text(store, run_id, limit=None):
    """The recorded console (stdout and stderr lines in the order written), or None."""
    if not store.segments(run_id, "console"):
        return None
    t = store.read(run_id, "console", columns=["step", "attempt", "seq", "text"],
                   latest_only=False)
    rows = sorted(zip(t["attempt"].to_pylist(), t["seq"].to_pylist(), t["step"].to_pylist(),
                      t["text"].to_pylist()))
    return "".join(text or "" for _a, _s, step, text in rows
                   if limit is None or step <= limit)


def config_updates(store, run_id):
    """The run.config updates recorded (key, value), in order."""
    if not store.segments(run_id, "run_events"):
        return []
    t = store.read(run_id, "run_events", columns=["attempt", "seq", "kind", "tag",
                                                  "value_json"], latest_only=False)
    rows = sorted(zip(t["attempt"].to_pylist(), t["seq"].to_pylist(), t["kind"].to_pylist(),
                      t["tag"].to_pylist(), t["value_json"].to_pylist()))
    return [(tag, json.loads(v)) for _a, _s, kind, tag, v in rows if kind == "config"]
