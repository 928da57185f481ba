"""The rows of a chunk's plan (timeline.py), read from the store batch by batch.

Each slot of the plan is read back with the segments the plan saw (a live run's, registered by
`plan.until`), grouped into W&B rows: a logged row by its recorder step, a synced row by its
tfevents group. A slot with stored rows that make no W&B values (tensors only) is passed; a
slot with no stored rows at all is looked for again if a segment of the plan's window is gone
(a compaction moved them), then a tfevents group is passed (its summaries may decode to
nothing) and a logged step is reported.
"""

import functools

from tfblackbox.schema.errors import ReplayError

from . import rows as _rows
from .rows import group_rows, read_tables
from .timeline import Synced, raw_records


def _parts(plan, batch):
    """The plan's slots in runs of about `batch` stored rows."""
    part, n = [], 0
    for slot in plan.slots:
        part.append(slot)
        n += plan.sizes.get(slot[1], 1) if slot[0] == "log" else len(slot[1].events)
        if n >= batch:
            yield part
            part, n = [], 0
    if part:
        yield part


def iter_batches(store, run_id, plan, batch=None):
    """Yields (slots, logged Rows, synced Rows) for the plan's slots, about `batch` stored rows
    (rows.WINDOW_ROWS) at a time, read together so that memory does not grow with the chunk
    (either Rows may be None; synced Rows are keyed by the slot's position in the batch).
    A slot whose stored rows make no W&B values (tensors only, e.g. Keras' model summary) is
    in neither.

    A live run's rows are read from the segments registered by `plan.until`, as the plan saw
    them. A compaction between the plan and the read (the run's finish compacts its segments,
    registering the merged files anew) takes planned rows out of that window: a part with a
    slot that has no stored rows, when a segment of the window is gone, is read again from
    every registered segment, the rows told apart by the tfevents records registered now.
    Without a gone segment nothing moved, and nothing is read past the window: a flush
    registers its tables one by one, and a decoded tfevents row registered ahead of its raw
    record would look logged. A logged step still without stored rows means the store lost
    them: the replay fails saying so (nothing is skipped for it); a tfevents group may hold
    summaries that decode to no row, and is passed."""
    synced = plan.synced
    moved = None
    for part in _parts(plan, batch or _rows.WINDOW_ROWS):
        read = _read_part(store, run_id, part, synced, (None, plan.until))
        if plan.until is not None and _missing(part, *read) and (
                moved or (moved := _window_moved(store, run_id, plan))):
            read = _read_part(store, run_id, part, synced, None,
                              Synced(raw_records(store, run_id)))
        # a tfevents group may hold summaries that decode to no row at all (W&B's own sync
        # gets nothing from them either): passed; a logged step always has rows
        lost = [slot for slot in _missing(part, *read) if slot[0] == "log"]
        if lost:
            raise ReplayError(
                f"run {run_id}: {len(lost)} logged step(s) this replay planned to push could "
                f"not be read back (step {lost[0][1]} first): the store changed while they "
                f"were pushed; the cursor stays, replay again (`tfblackbox verify --store "
                f"{store.root}` if this repeats)")
        yield part, read[0], read[2]


def _window_moved(store, run_id, plan):
    """Whether a segment of the plan's window is no longer registered (compacted, merged)."""
    if plan.window is None:   # not listed: assume it moved, and look
        return True
    return not plan.window <= {g.segment_id for g in store.segments(run_id)}


def _read_part(store, run_id, part, synced, registered, classify=None):
    """(logged Rows, their key, synced Rows, their key, {table: columns} read) of one part's
    slots; `classify`: the Synced view that tells a decoded tfevents row from a logged one
    (default: the plan's)."""
    classify = synced if classify is None else classify
    logged = [s[1] for s in part if s[0] == "log"]
    groups = {id(s[1]): n for n, s in enumerate(part) if s[0] == "sync"}
    log_rows = sync_rows = None
    cols = {}

    def log_key(s, w, tag):
        return None if classify and classify.is_synced(s, w, tag) else s
    sync_key = functools.partial(_group_key, synced, groups)
    if logged:
        cols["log"] = read_tables(store, run_id, logged[0], logged[-1] + 1,
                                  registered=registered)
        log_rows = group_rows(cols["log"], key=log_key)
    if groups:
        span = [e[0] for s in part if s[0] == "sync" for e in s[1].events]
        cols["sync"] = read_tables(store, run_id, min(span), max(span) + 1,
                                   registered=registered)
        sync_rows = group_rows(cols["sync"], sync_key)
    return log_rows, log_key, sync_rows, sync_key, cols


def _missing(part, log_rows, log_key, sync_rows, sync_key, cols):
    """The part's slots that have no stored rows at all (a slot with rows but no values, e.g.
    tensors only, is not missing)."""
    at_log = set(log_rows.steps) if log_rows else set()
    at_sync = set(sync_rows.steps) if sync_rows else set()
    empty = [(n, slot) for n, slot in enumerate(part)
             if (slot[1] not in at_log if slot[0] == "log" else n not in at_sync)]
    if not empty:
        return []

    def stored(which, key):   # the row keys of every table read, pushed or not
        return {key(s, w, t) for c in cols.get(which, {}).values()
                for s, w, t in zip(c["step"], c["wall_time"], c["tag"])}
    found = {"log": stored("log", log_key), "sync": stored("sync", sync_key)}
    return [slot for n, slot in empty
            if (slot[1] if slot[0] == "log" else n) not in found[slot[0]]]


def _group_key(synced, groups, step, wall, tag):
    g = synced.group_of(step, wall, tag)
    return None if g is None else groups.get(id(g))


def iter_rows(store, run_id, plan, batch=None):
    """Yields (slot, Rows, i) for each slot of the plan, in order; (slot, None, None) for a
    slot whose rows make no W&B values (it is passed, not pushed)."""
    for part, log_rows, sync_rows in iter_batches(store, run_id, plan, batch):
        at_log = {s: i for i, s in enumerate(log_rows.steps)} if log_rows else {}
        at_sync = {n: i for i, n in enumerate(sync_rows.steps)} if sync_rows else {}
        for n, slot in enumerate(part):
            i = at_log.get(slot[1]) if slot[0] == "log" else at_sync.get(n)
            yield slot, None if i is None else log_rows if slot[0] == "log" else sync_rows, i
