"""A run's stored rows grouped into one W&B history row per TF step (no TensorFlow).

`load_rows` reads the four tables for a step range, converts the Arrow columns to Python once
and groups them by step: scalars become plain floats at once; histograms and media stay as row
indices and are turned into W&B objects only when their step is logged (`Rows.row`), so a
replay holds no W&B object longer than one step. Other tensors (raw TensorProto bytes) need
TensorFlow to decode and are counted, not pushed. Values of `recorder.log` join the rows too:
JSON values (log_values) as they were logged, wandb objects (wandb_objects) rebuilt on demand.

A replay reads them batch by batch, about WINDOW_ROWS stored rows at a time (timeline.py), so
its memory does not grow with the run; timeline.py also says which rows a chunk pushes.
"""

import collections
import dataclasses
import json


WINDOW_ROWS = 10_000  # rows read at once by a replay: its memory plateau
_MEDIA_COLS = ["step", "wall_time", "tag", "kind", "index", "content_type", "data", "width",
               "height", "sample_rate"]
_HIST_COLS = ["step", "wall_time", "tag", "bucket_limits", "bucket_counts", "bucket_lefts",
              "min", "max", "source"]
_OBJ_COLS = ["step", "wall_time", "tag", "index", "wandb_type", "meta_json", "files"]


@dataclasses.dataclass
class Rows:
    """History rows of one step range: `steps` ascending; `row(i, media)` builds row i."""
    steps: list
    wall_times: list       # per row: the earliest wall time of its values
    scalars: list          # per step: {key: float}
    lazy: list             # per step: [(key, table, index list)] or None
    hist: dict
    media: dict
    objects: dict          # wandb_objects columns
    counts: dict           # rows per table, media per kind, tensors skipped
    tags: dict             # table -> sorted tags
    latest: list | None = None   # per row: the latest wall time of its values

    def __len__(self):
        return len(self.steps)

    def row(self, i, factory):
        """The dict to log for step i: scalars, then histograms and media built on demand."""
        out = dict(self.scalars[i])
        out["_timestamp"] = self.wall_times[i]
        for key, table, idx in self.lazy[i] or ():
            out[key] = self._build(table, idx, factory)
        return out

    def _build(self, table, idx, factory):
        if table == "wandb_objects":
            from .objects import rebuild
            o = self.objects
            items = [rebuild(o["meta_json"][j], o["files"][j], factory) for j in idx]
            return items[0] if len(items) == 1 and o["index"][idx[0]] is None else items
        if table == "histograms":
            from .media import histogram, logged_histogram
            h = self.hist
            j = idx[0]
            if h["source"][j] == "log":   # an array given to recorder.log: wandb's own bins
                return logged_histogram(h["bucket_lefts"][j], h["bucket_limits"][j],
                                        h["bucket_counts"][j])
            return histogram(h["bucket_limits"][j], h["bucket_counts"][j], h["bucket_lefts"][j],
                             h["min"][j], h["max"][j])
        m = self.media
        items = [factory.make(m["kind"][j], m["data"][j], m["content_type"][j], m["width"][j],
                              m["height"][j], m["sample_rate"][j]) for j in idx]
        return items[0] if len(items) == 1 else items


def _columns(table, names):
    return {n: table.column(n).to_pylist() for n in names}


_KEYS = ["step", "wall_time", "tag"]


def read_tables(store, run_id, lo=None, hi=None, keys_only=False, registered=None):
    """The pushed tables' rows of steps lo <= step < hi (either None: open) as Python columns
    ({table: {column: list}}); `keys_only`: step, wall_time and tag alone; `registered`: as
    Store.read's."""
    rng = (lo, hi)

    def read(table, names):
        names = _KEYS if keys_only else names
        return _columns(store.read(run_id, table, steps=rng, columns=names,
                                   registered=registered), names)
    return {"scalars": read("scalars", _KEYS + ["value"]),
            "histograms": read("histograms", _HIST_COLS),
            "media": read("media", _MEDIA_COLS),
            "tensors": read("tensors", _KEYS),
            "log_values": read("log_values", _KEYS + ["value_json"]),
            "wandb_objects": read("wandb_objects", _OBJ_COLS)}


def load_rows(store, run_id, lo=None, hi=None, key=None):
    """Rows of steps lo <= step < hi (either None: open), grouped by step (module doc), or by
    `key(step, wall_time, tag)`: the row a stored row belongs to, None to leave it out."""
    return group_rows(read_tables(store, run_id, lo, hi), key)


def group_rows(cols, key=None):
    """The history rows of read_tables' columns, grouped by step or by `key` (load_rows)."""
    sc, hi_t, me, lv, ob = (cols["scalars"], cols["histograms"], cols["media"],
                            cols["log_values"], cols["wandb_objects"])
    if key is not None:
        sc, hi_t, me, lv, ob = (_keyed(c, key) for c in (sc, hi_t, me, lv, ob))
        tensors = _keyed(cols["tensors"], key)
    else:
        for c in (sc, hi_t, me, lv, ob):
            c["key"] = c["step"]
        tensors = cols["tensors"]
    n_tensors = len(tensors["step"])

    index = {}            # row key -> position in the lists below
    steps, walls, latest, scalars, lazy = [], [], [], [], []

    def slot(step, wall):
        i = index.get(step)
        if i is None:
            i = index[step] = len(steps)
            steps.append(step)
            walls.append(wall)
            latest.append(wall)
            scalars.append({})
            lazy.append(None)
        elif wall < walls[i]:
            walls[i] = wall
        elif wall > latest[i]:
            latest[i] = wall
        return i

    for step, wall, tag, value in zip(sc["key"], sc["wall_time"], sc["tag"], sc["value"]):
        scalars[slot(step, wall)][tag] = value
    taken = collections.defaultdict(set)   # step position -> keys used by lazy items

    def add_lazy(i, tag, table, idx, kind):
        key = tag
        if tag in scalars[i] or tag in taken[i]:
            key = f"{tag}/{kind}"
        taken[i].add(key)
        if lazy[i] is None:
            lazy[i] = []
        lazy[i].append((key, table, idx))

    for step, wall, tag, text in zip(lv["key"], lv["wall_time"], lv["tag"], lv["value_json"]):
        scalars[slot(step, wall)][tag] = json.loads(text)
    for j, (step, wall, tag) in enumerate(zip(hi_t["key"], hi_t["wall_time"], hi_t["tag"])):
        add_lazy(slot(step, wall), tag, "histograms", [j], "histogram")
    objects = {}          # (step, tag) -> wandb_objects row indices (a logged list: several)
    for j, (step, wall, tag) in enumerate(zip(ob["key"], ob["wall_time"], ob["tag"])):
        slot(step, wall)
        objects.setdefault((step, tag), []).append(j)
    for (step, tag), idx in objects.items():
        add_lazy(index[step], tag, "wandb_objects", idx, "object")
    groups = {}           # (step, tag, kind) -> media row indices, in recorded order
    for j, (step, wall, tag, kind) in enumerate(zip(me["key"], me["wall_time"], me["tag"],
                                                    me["kind"])):
        slot(step, wall)
        groups.setdefault((step, tag, kind), []).append(j)
    for (step, tag, kind), idx in groups.items():
        i = index[step]
        gif = any(me["content_type"][j] == "image/gif" for j in idx)
        if len(idx) > 1 and (kind != "image" or gif):
            idx = sorted(idx, key=lambda j: me["index"][j] or 0)
            for j in idx:   # several clips/texts/GIFs of one tag: one key each
                add_lazy(i, f"{tag}/{me['index'][j] or 0}", "media", [j], kind)
        else:
            add_lazy(i, tag, "media", sorted(idx, key=lambda j: me["index"][j] or 0), kind)

    order = sorted(range(len(steps)), key=steps.__getitem__)
    if order != list(range(len(steps))):
        steps, walls = [steps[i] for i in order], [walls[i] for i in order]
        scalars, lazy = [scalars[i] for i in order], [lazy[i] for i in order]
        latest = [latest[i] for i in order]
    counts = {"scalars": len(sc["step"]), "histograms": len(hi_t["step"]),
              "media": len(me["step"]), "tensors_not_pushed": n_tensors,
              "media_by_kind": dict(collections.Counter(me["kind"])),
              "log_values": len(lv["step"]), "wandb_objects": len(ob["step"])}
    tags = {"scalars": sorted(set(sc["tag"])), "histograms": sorted(set(hi_t["tag"])),
            "media": sorted(set(me["tag"])),
            "log_values": sorted(set(lv["tag"])), "wandb_objects": sorted(set(ob["tag"]))}
    return Rows(steps, walls, scalars, lazy, hi_t, me, ob, counts, tags, latest)


def _keyed(cols, key):
    """The rows of one table's columns that `key` keeps, with their row key as column "key"."""
    keys = [key(s, w, t) for s, w, t in zip(cols["step"], cols["wall_time"], cols["tag"])]
    if all(k is not None for k in keys):
        return dict(cols, key=keys)
    keep = [i for i, k in enumerate(keys) if k is not None]
    out = {n: [v[i] for i in keep] for n, v in cols.items()}
    out["key"] = [keys[i] for i in keep]
    return out
