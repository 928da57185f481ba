"""From `recorder.log` to the writer: the ordered outbox of rows and events, and the rows
they become on the writer thread (one add_many for the scalars of every row drained at once).
"""

import threading

from .values import HIST, JSON, SCALAR_KINDS, WANDB

ROW, EVENT = "row", "event"


class Outbox:
    """Rows and events on their way to the writer, in the order they were made.

    The first item after a drain queues a drain job with the writer; the items that follow
    join it until it runs (the writer takes its queue every 50 ms), so a log() call costs an
    append rather than a job, and the writer turns many rows into columns at once. Every
    DRAIN_ITEMS items another drain job is queued, which keeps the writer queue's byte count
    close to what waits. If the writer queue refuses the job (on_full="drop"), the items wait
    for the next put, flush or finish; past MAX_ITEMS they are dropped and counted."""

    DRAIN_ITEMS = 1000
    MAX_ITEMS = 100_000

    def __init__(self, submit, on_drop):
        self._submit, self._on_drop = submit, on_drop
        self._lock = threading.Lock()   # never held while submitting: the writer drains
        self._items = []
        self._bytes = 0
        self._queued = False

    def put(self, item, nbytes):
        with self._lock:
            self._items.append(item)
            self._bytes += nbytes
            if self._queued and len(self._items) % self.DRAIN_ITEMS:
                return
            self._queued = True
            nbytes, self._bytes = self._bytes, 0
        self._send(nbytes)

    def resend(self):
        """Queues a drain for items that wait without one (flush, finish)."""
        with self._lock:
            if not self._items or self._queued:
                return
            self._queued = True
            nbytes, self._bytes = self._bytes, 0
        self._send(nbytes)

    def _send(self, nbytes):
        if self._submit(self._drain, nbytes):
            return
        with self._lock:
            self._queued = False
            dropped = self._items if len(self._items) > self.MAX_ITEMS else None
            if dropped is not None:
                self._items = []
        if dropped is not None:
            self._on_drop(len(dropped))

    def pending(self):
        return len(self._items)

    def _drain(self, buffers):
        with self._lock:
            items, self._items = self._items, []
            self._queued = False
        write(buffers, items)


def row_item(step, wall, floats, row, events):
    """A history row: plain floats {key: value}, other values {key: (kind, payload)}, and
    its value_type events [(seq, kind, tag, value_json)]; with its size in bytes."""
    nbytes = 16 * (len(floats) + len(row))
    for kind, payload in row.values():
        if kind not in SCALAR_KINDS:
            nbytes += _size(kind, payload)
    return (ROW, step, wall, floats, row, events), nbytes


def event_item(step, wall, seq, kind, tag, value_json):
    return (EVENT, step, wall, seq, kind, tag, value_json), len(value_json) + 64


def write(buffers, items):
    """Appends the items' rows to the writer's buffers (on the writer thread)."""
    steps, walls, tags, values = [], [], [], []
    for item in items:
        if item[0] == EVENT:
            _e, step, wall, seq, kind, tag, value_json = item
            buffers.add("run_events", step=step, wall_time=wall, tag=tag, seq=seq, kind=kind,
                        value_json=value_json)
            continue
        _r, step, wall, floats, row, events = item
        n = len(floats)
        if n:
            tags.extend(floats)
            values.extend(floats.values())
            steps.extend([step] * n)
            walls.extend([wall] * n)
        for key, (kind, payload) in row.items():
            if kind in SCALAR_KINDS:
                tags.append(key)
                values.append(float(payload))
                steps.append(step)
                walls.append(wall)
            elif kind == JSON:
                buffers.add("log_values", step=step, wall_time=wall, tag=key, value_json=payload)
            elif kind == HIST:
                counts, edges, num, lo, hi, total, squares = payload
                buffers.add("histograms", step=step, wall_time=wall, tag=key, num=num, min=lo,
                            max=hi, sum=total, sum_squares=squares, bucket_limits=edges[1:],
                            bucket_counts=counts, bucket_lefts=edges[:-1], source="log")
            elif kind == WANDB:   # a list of objects keeps their positions; one object: None
                is_list, objects = payload
                for i, (wandb_type, meta, files) in enumerate(objects):
                    buffers.add("wandb_objects", step=step, wall_time=wall, tag=key,
                                index=i if is_list else None, wandb_type=wandb_type,
                                meta_json=meta, files=files)
        for seq, kind, tag, value_json in events:
            buffers.add("run_events", step=step, wall_time=wall, tag=tag, seq=seq, kind=kind,
                        value_json=value_json)
    if tags:
        buffers.add_many("scalars", len(tags), step=steps, wall_time=walls, tag=tags,
                         value=values)


def console_job(step, wall, seq, stream, text):
    def job(buffers):
        buffers.add("console", step=step, wall_time=wall, tag=stream, seq=seq, text=text)
    return job


def _size(kind, payload):
    if kind == JSON:
        return len(payload)
    if kind == HIST:
        return 24 * len(payload[0])
    if kind == WANDB:
        return sum(len(meta) + sum(len(f) for f in files) for _t, meta, files in payload[1])
    return 8
