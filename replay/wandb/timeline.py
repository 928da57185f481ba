"""Which W&B history rows a chunk pushes, in which order, at which W&B step.

A run's history has two kinds of rows:
- *logged* rows: what `recorder.log`, `MetricsLogger` and the TF1 hooks recorded, one row per
  recorder step, all tags of the step together (rows.py), as wandb.log and WandbHook log;
- *synced* rows: what the recorder read from tfevents files (`sync_tensorboard`, or
  `import-tfevents`), pushed as wandb-core's own sync_tensorboard pushes them
  (core/internal/tensorboard: tensorboard.go, emitter.go, tfeventconverter.go): per logdir
  (an event file's directory, the tags' namespace), consecutive events with the same step
  make one row of their own, with `global_step` (the event step) and `_timestamp` (the wall
  time of the group's last event); wandb-core issues no define_metric for them. A decoded row
  belongs to an event when it has the event's step and wall time and the tag is under the
  event file's namespace (tfevents_records keeps every event's step, wall time and file).

W&B has one step, `_step`: wandb-core gives a synced row the next step when it reads it, so a
`log()` without a step that comes after it moves on by one. The replay puts the rows in time
order (a logged row at its wall time, when it was committed; a synced row at its
`_timestamp`; each logdir's rows and the logged rows keep their own order), and numbers them
the same way: a synced row takes the next W&B step, a logged row at recorder step s takes s
plus the number of synced rows before it (never less than the next W&B step). Without synced
rows `_step` is the recorder step, as before.

So that a replay of a run still recording (`--follow`, or any replay before the end) pushes a
prefix of what a one-shot replay of the finished run pushes, a chunk of a live run pushes only
rows earlier than a horizon that no later row can come before:
- logged rows: up to the last recorder step of the flushes whose segments are all registered
  (plan_chunk), as before (a flush holds whole steps);
- each logdir's events reach the store in file order, up to TensorFlow's writer flush (every
  120 s or 10 events by default): nothing earlier than the last event read from a logdir can
  still come from it, and after TB_LAG_SECS of silence nothing earlier than that either; a
  logdir's last group is held back until an event with another step follows it.
A row that still arrives behind what was pushed (a writer that flushes more rarely, clocks
that jump) is not lost: a synced row is pushed with the next W&B step and reported as late; a
logged row at a step already pushed (log() with a step that went backwards, which W&B itself
drops) is reported as refused. Both are counted with their tags in the replay's result.
"""

import dataclasses
import heapq
import math
import os
import posixpath
import time

from tfblackbox.schema.store.records import run_state
from tfblackbox.schema.store.windows import SETTLE_SECS

TB_LAG_SECS = float(os.environ.get("TFBLACKBOX_TB_LAG_SECS", "130"))
LIVE_SETTLE_SECS = 2 * SETTLE_SECS   # a live run's step is pushed once registered this long
_RAW = ["step", "wall_time", "tag", "file", "index", "what"]
_NOT_EVENTS = ("unparsed", "unframed")


@dataclasses.dataclass
class Group:
    """One synced row: consecutive events of a logdir with the same step."""
    dir: str
    pos: tuple            # (file, index) of its first record: its place in the logdir's stream
    end: tuple            # (file, index) of its last record
    step: int
    t: float              # wall time of its last record: its _timestamp and its place
    stamp: float          # among all rows (a logged row's is when it was committed)
    events: list          # (step, wall_time) of its summaries
    tags: list            # their (first) tags


class Synced:
    """A run's tfevents records as wandb-core's sync_tensorboard groups them into rows."""

    def __init__(self, raw, settled=None):
        """raw: tfevents_records columns (_RAW) of every registered record; settled: {file:
        highest index} of the records registered long enough ago (None: the run ended)."""
        streams = {}
        for step, wall, tag, file, index, what in zip(*(raw[c] for c in _RAW)):
            if what not in _NOT_EVENTS:
                streams.setdefault(posixpath.dirname(file), []).append(
                    (file, index, step, wall, tag, what))
        self.dirs = {}        # logdir -> its groups that make rows, in stream order
        self.tails = {}       # logdir -> (position, wall time) of its last settled record
        self.firsts = {}      # logdir -> wall time of its first record
        self._ns = {}         # (step, wall) -> logdirs with a summary event there
        self._group = {}      # (logdir, step, wall) -> Group
        for d, recs in streams.items():
            recs.sort(key=lambda r: (r[0], r[1]))
            groups, cur = [], None
            for file, index, step, wall, tag, what in recs:
                if cur is None or step != cur.step:
                    cur = Group(d, (file, index), (file, index), step, wall, wall, [], [])
                    groups.append(cur)
                cur.end, cur.t, cur.stamp = (file, index), wall, wall
                if what == "summary":
                    cur.events.append((step, wall))
                    cur.tags.append(tag)
                    self._ns.setdefault((step, wall), set()).add(d)
                    self._group.setdefault((d, step, wall), cur)
            self.dirs[d] = [g for g in groups if g.events]
            self.firsts[d] = recs[0][3]
            if settled is not None:
                done = [r for r in recs if r[1] <= settled.get(r[0], -1)]
                if done:
                    self.tails[d] = ((done[-1][0], done[-1][1]), done[-1][3])
        self.settled = settled

    def __bool__(self):
        return bool(self._ns)

    def _dir_of(self, step, wall, tag):
        dirs = self._ns.get((step, wall))
        if not dirs:
            return None
        for d in sorted(dirs, key=len, reverse=True):
            if not d or tag.startswith(d + "/"):
                return d
        return None

    def is_synced(self, step, wall, tag):
        return self._dir_of(step, wall, tag) is not None

    def group_of(self, step, wall, tag):
        d = self._dir_of(step, wall, tag)
        return None if d is None else self._group.get((d, step, wall))

    def complete(self, group):
        """Whether a group can get no more events (a later event of its logdir is settled)."""
        if self.settled is None:
            return True
        tail = self.tails.get(group.dir)
        return tail is not None and group.end < tail[0]

    def horizon(self, known):
        """No synced row can still come earlier than this (module doc); `known`: a time the
        store's whole flushes reach, on the recorder's clock."""
        if self.settled is None:
            return math.inf
        out = math.inf
        for d in self.dirs.keys() | self.firsts.keys():
            tail = self.tails.get(d)
            wall = tail[1] if tail is not None else self.firsts[d]
            out = min(out, max(wall, known - TB_LAG_SECS))
        return out


def raw_records(store, run_id):
    """_RAW columns of every tfevents record registered now."""
    if not store.segments(run_id, "tfevents_records"):
        return {c: [] for c in _RAW}
    raw = store.read(run_id, "tfevents_records", columns=_RAW)
    return {c: raw[c].to_pylist() for c in _RAW}


def load_synced(store, record, now, running):
    raw = raw_records(store, record.run_id)
    if not raw["step"]:
        return Synced(raw)
    settled = None
    if running:   # records registered by then: their flushes' decoded rows were by now - SETTLE
        t = store.read(record.run_id, "tfevents_records", columns=["file", "index"],
                       registered=(None, now - LIVE_SETTLE_SECS))
        settled = {}
        for f, i in zip(t["file"].to_pylist(), t["index"].to_pylist()):
            if i > settled.get(f, -1):
                settled[f] = i
    return Synced(raw, settled)


# -- the plan of one chunk --------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """What one chunk pushes: `slots` in push order, each ("log", recorder step, t) or
    ("sync", Group, t); `limit`: the recorder step up to which console lines and run events
    are applied (None: all); `late`/`refused`: rows reported (module doc)."""
    slots: list
    sizes: dict           # logged step -> its stored rows (a synced row: its events)
    limit: int | None
    synced: Synced
    until: float | None   # rows are read from segments registered by then (None: all)
    late: list
    refused: list
    pending: bool         # rows exist that this chunk leaves for a later one
    seen: float | None
    # a live run's segments registered by `until`, listed before they were read: while all of
    # them are there, the plan's rows are where it saw them (plan_rows.py)
    window: frozenset | None = None

    @property
    def logged(self):
        return sum(1 for s in self.slots if s[0] == "log")

    @property
    def synced_rows(self):
        return len(self.slots) - self.logged


def plan_chunk(store, record, cursor, wstate, now=None):
    """The plan of the next chunk of a run, given its cursor (last recorder step pushed) and
    the W&B state of the cursor (`state["wandb"]`, see push.py)."""
    now = time.time() if now is None else now
    running = run_state(record, now) == "running"
    synced = load_synced(store, record, now, running)
    lo = None if cursor is None else cursor + 1
    # Of a live run, only segments registered SETTLE_SECS ago are read (until): a flush
    # registers its tables one after another, and a decoded tfevents row whose raw record is
    # not registered yet would look like a logged row. A step up to the last logged step of
    # the segments registered 2 * SETTLE_SECS ago has all its rows in those (a flush holds
    # whole steps).
    until = now - SETTLE_SECS if running else None
    window = None
    if running:   # listed before the rows are read: a compaction in between shows as a gap
        window = frozenset(g.segment_id for g in store.segments(record.run_id)
                           if g.created_at <= until)
    sizes = {}                              # logged step -> stored rows (batching)
    walls = _logged_walls(synced, store, record.run_id, lo, until, sizes)
    steps = sorted(walls)
    h, last = math.inf, None
    if running:
        settled = _logged_walls(synced, store, record.run_id, lo, now - LIVE_SETTLE_SECS)
        last = max(settled, default=-math.inf)
        known = [g.created_at for g in store.segments(record.run_id)
                 if g.created_at <= now - LIVE_SETTLE_SECS]
        h = synced.horizon(max(known, default=-math.inf) - SETTLE_SECS)
    progress = {d: tuple(p) for d, p in (wstate.get("dirs") or {}).items()}
    queues = {d: [g for g in gs if tuple(progress.get(d, ("", -2))) < g.pos]
              for d, gs in synced.dirs.items()}
    # the first row of each kind that must wait bounds everything after it
    first_blocked = None
    for s in steps:
        if running and (walls[s] >= h or s > last):
            first_blocked = s
            h = min(h, walls[s])
            break
    for q in queues.values():
        for g in q:
            if not synced.complete(g) or g.t >= h:
                h = min(h, g.t)
                break
    slots = []
    heap = [(walls[steps[0]], 0, "", 0)] if steps and walls[steps[0]] < h else []
    for d, q in queues.items():
        if q and synced.complete(q[0]) and q[0].t < h:
            heap.append((q[0].t, 1, d, 0))
    heapq.heapify(heap)
    while heap:
        t, kind, d, i = heapq.heappop(heap)
        if kind == 0:
            slots.append(("log", steps[i], t))
            nxt = i + 1
            if nxt < len(steps) and walls[steps[nxt]] < h and steps[nxt] != first_blocked:
                heapq.heappush(heap, (walls[steps[nxt]], 0, "", nxt))
        else:
            g = queues[d][i]
            slots.append(("sync", g, t))
            nxt = i + 1
            q = queues[d]
            if nxt < len(q) and synced.complete(q[nxt]) and q[nxt].t < h:
                heapq.heappush(heap, (q[nxt].t, 1, d, nxt))
    n_logged = sum(1 for slot in slots if slot[0] == "log")
    if not running:
        limit = None
    elif n_logged < len(steps):
        limit = steps[n_logged] - 1   # up to the first logged row that waits
    else:
        limit = _extras_limit(store, record.run_id, now, cursor)
    last_t = wstate.get("t")
    late = [slot for slot in slots if slot[0] == "sync" and last_t is not None and
            slot[2] < last_t]
    refused = _refused(store, record.run_id, synced, cursor, wstate, until)
    pending = n_logged < len(steps) or len(slots) - n_logged < sum(map(len, queues.values()))
    return Plan(slots, sizes, limit, synced, until, late, refused, pending, now, window)


_KEY_TABLES = ("scalars", "histograms", "media", "tensors", "log_values", "wandb_objects")


def _logged_walls(synced, store, run_id, lo, until, sizes=None):
    """{recorder step: earliest wall time} of the logged rows at steps >= lo in segments
    registered by `until` (None: all); `sizes` (a dict) gets each step's number of stored
    rows. Without tfevents rows this is Arrow's group-by, so a long run's keys are not
    turned into Python objects."""
    walls = {}
    for table in _KEY_TABLES:
        if not store.segments(run_id, table):
            continue
        t = store.read(run_id, table, columns=["step", "wall_time", "tag"], steps=(lo, None),
                       registered=(None, until))
        if not t.num_rows:
            continue
        if not synced:
            agg = t.group_by("step").aggregate([("wall_time", "min"), ("wall_time", "count")])
            for s, w, n in zip(*(agg[c].to_pylist() for c in
                                 ("step", "wall_time_min", "wall_time_count"))):
                if w < walls.get(s, math.inf):
                    walls[s] = w
                if sizes is not None:
                    sizes[s] = sizes.get(s, 0) + n
            continue
        for s, w, tag in zip(*(t[c].to_pylist() for c in ("step", "wall_time", "tag"))):
            if synced.is_synced(s, w, tag):
                continue
            if w < walls.get(s, math.inf):
                walls[s] = w
            if sizes is not None:
                sizes[s] = sizes.get(s, 0) + 1
    return walls


def _extras_limit(store, run_id, now, cursor):
    """Of a live run with no new logged rows: the recorder step up to which its console lines
    and run events are all in (their own segments' steps are recorder steps)."""
    cutoff = now - SETTLE_SECS
    steps = [g.max_step for table in ("console", "run_events")
             for g in store.segments(run_id, table)
             if g.max_step is not None and g.created_at <= cutoff]
    return max(steps + ([cursor] if cursor is not None else []), default=-1)


def _refused(store, run_id, synced, cursor, wstate, until):
    """Logged rows at recorder steps already pushed that came after they were (module doc):
    [(step, tag, wall)]. Rows reach the store in the order they were logged, so these are
    the rows at those steps logged after the last row pushed (wstate "wall"); only segments
    registered since shortly before the last chunk looked (wstate "seen") can hold them."""
    wall = wstate.get("wall")
    if cursor is None or wall is None:
        return []
    after = wstate.get("seen")
    out = []
    for table in ("scalars", "histograms", "media", "log_values", "wandb_objects"):
        if not store.segments(run_id, table):
            continue
        t = store.read(run_id, table, columns=["step", "wall_time", "tag"],
                       steps=(None, cursor + 1),
                       registered=(None if after is None else after - 2 * SETTLE_SECS, until))
        for s, w, tag in zip(*(t[c].to_pylist() for c in ("step", "wall_time", "tag"))):
            if w > wall and not (synced and synced.is_synced(s, w, tag)):
                out.append((s, tag, w))
    return out
