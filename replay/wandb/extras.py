"""What a W&B run gets besides history rows: define_metric, summary, config, console output,
Keras model records, and the int/bool types of logged numbers (run_events and console tables).

`Extras.load` reads them for one chunk. Events and console lines are applied in the order they
were recorded, each before the history row of its step (they were recorded while that row was
being built), and the ones after the chunk's last row at the end of the chunk. Only what was
recorded up to the chunk's settled limit is loaded, so nothing is applied before a row that
came earlier. What a chunk applied is kept as `{attempt: last seq}` in the cursor state
(`state["extras"]`), so a later chunk applies only what is new; define_metric calls are issued
again at the start of every chunk (each chunk is a resumed W&B run). Config updates are merged
into the config the chunk's run starts with.
"""

import bisect
import json
import sys

APPLIED = ("summary", "summary_remove", "define_metric", "model")   # applied once, in order


class Extras:
    def __init__(self, items, metrics_before, config, types, types_at, progress):
        self.items = items                 # [(step, attempt, seq, kind, tag, payload)] to apply
        self.metrics_before = metrics_before   # define_metric args applied by earlier chunks
        self.config_updates = config
        self.types = types                 # tag -> ([steps], [kinds]) for non-float tags
        self.types_at = types_at           # (step, tag) -> kind (backwards-step rows)
        self.progress = dict(progress)     # str(attempt) -> last seq applied
        self._next = 0
        self.warnings = []

    @classmethod
    def load(cls, store, run_id, state, limit):
        """The extras of steps <= limit (None: all) for a chunk, given the cursor state."""
        progress = dict((state or {}).get("extras") or {})
        cols = ["step", "attempt", "seq", "kind", "tag", "value_json"]
        # summary, config, define_metric: every attempt's, in order (an attempt's last ones sit
        # at the step the next attempt starts from); value types: those of the rows readers
        # keep, i.e. without an earlier attempt's at steps a later one recorded again
        events = [e for e in _rows(store, run_id, "run_events", cols, limit, latest_only=False)
                  if not e[3].startswith("value_type")]
        events += [e for e in _rows(store, run_id, "run_events", cols, limit, latest_only=True)
                   if e[3].startswith("value_type")]
        console = _rows(store, run_id, "console", ["step", "attempt", "seq", "tag", "text",
                                                   "wall_time"], limit, latest_only=False)
        items, before, config, typed, types_at = [], [], [], {}, {}
        for step, attempt, seq, kind, tag, text in events:
            done = seq <= progress.get(str(attempt), -1)
            if kind == "value_type":
                typed.setdefault(tag, []).append((step, attempt, seq, json.loads(text)))
            elif kind == "value_type_at":
                types_at[(step, tag)] = json.loads(text)
            elif kind == "config":
                config.append((tag, json.loads(text)))
            elif kind == "define_metric" and done:
                before.append((tag, json.loads(text)))
            elif kind in APPLIED and not done:
                items.append((step, attempt, seq, kind, tag, text))
        for step, attempt, seq, stream, text, wall in console:
            if seq > progress.get(str(attempt), -1):
                items.append((step, attempt, seq, "console", stream, (text, wall)))
        items.sort(key=lambda it: it[:3])
        types = {}
        for tag, changes in typed.items():
            changes.sort()
            if any(k != "float" for *_r, k in changes):
                types[tag] = ([c[0] for c in changes], [c[3] for c in changes])
        return cls(items, before, config, types, types_at, progress)

    # -- what the chunk needs before wandb.init -------------------------------------------

    def config(self, base):
        merged = dict(base or {})
        for key, value in self.config_updates:
            merged[key] = value
        return merged

    @property
    def has_console(self):
        return any(it[3] == "console" for it in self.items)

    @property
    def pending(self):
        return bool(self.items)

    def counts(self):
        """What a chunk would apply: {kind: n} (console lines under "console")."""
        out = {}
        for item in self.items:
            out[item[3]] = out.get(item[3], 0) + 1
        return out

    # -- applying -------------------------------------------------------------------------

    def start(self, run):
        for name, args in self.metrics_before:
            self._apply(run, "define_metric", name, args)

    def before(self, run, step):
        """Applies what was recorded before the row of `step` was committed."""
        items = self.items
        while self._next < len(items) and items[self._next][0] <= step:
            self._apply_item(run, items[self._next])
            self._next += 1

    def finish(self, run):
        self.before(run, float("inf"))

    def _apply_item(self, run, item):
        step, attempt, seq, kind, tag, payload = item
        if kind == "console":
            self._console(run, tag, *payload)
        else:
            self._apply(run, kind, tag, json.loads(payload))
        key = str(attempt)
        self.progress[key] = max(self.progress.get(key, -1), seq)

    def _apply(self, run, kind, tag, value):
        try:
            if kind == "summary":
                run.summary[tag] = value
            elif kind == "summary_remove":
                if tag in run.summary.keys():
                    del run.summary[tag]
            elif kind == "define_metric":
                run.define_metric(tag, **value)
            elif kind == "model":
                model_summary(run, tag, value)
        except Exception as e:   # one bad record must not stop the run's replay
            msg = f"{kind} {tag!r} could not be applied ({type(e).__name__}: {e}); skipped"
            self.warnings.append(msg)
            print(f"warning: run {run.id}: {msg}", file=sys.stderr)

    def _console(self, run, stream, text, wall):
        from wandb.proto import wandb_internal_pb2 as pb
        kind = pb.OutputRawRecord.OutputType
        record = pb.OutputRawRecord(output_type=kind.STDERR if stream == "stderr" else
                                    kind.STDOUT, line=text)
        record.timestamp.FromNanoseconds(int(wall * 1e9))
        run._interface._publish_output_raw(record)   # wandb's own console path, our timestamp

    # -- int and bool values ----------------------------------------------------------------

    def convert(self, row, step):
        """Numbers logged as int or bool become int or bool again (the scalars table keeps
        float64): W&B shows 3 and true as wandb.log sent them."""
        types, at = self.types, self.types_at
        if not types and not at:
            return row
        for tag, value in row.items():
            if type(value) is not float:
                continue
            kind = at.get((step, tag))
            if kind is None and tag in types:
                steps, kinds = types[tag]
                i = bisect.bisect_right(steps, step) - 1
                kind = kinds[i] if i >= 0 else None
            if kind == "int":
                row[tag] = int(value)
            elif kind == "bool":
                row[tag] = bool(value)
        return row


def model_summary(run, name, info):
    """A Keras model's parameter counts go into the W&B summary under model/<name>/."""
    for key in ("parameters", "trainable_parameters"):
        if info.get(key) is not None:
            run.summary[f"model/{name}/{key}"] = info[key]


def _rows(store, run_id, table, columns, limit, latest_only):
    if not store.segments(run_id, table):
        return []
    t = store.read(run_id, table, columns=columns, latest_only=latest_only,
                   steps=None if limit is None else (None, limit + 1))
    return list(zip(*(t.column(c).to_pylist() for c in columns)))
