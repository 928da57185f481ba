"""Writer-thread jobs of `recorder.log`: a committed row, an event, a console line -> rows.

A job is built on the caller's thread from already checked values (values.py) and appends rows
to the writer's buffers on the writer thread. Scalars of one row go in with one add_many.
"""

from .values import HIST, JSON, SCALAR_KINDS, WANDB


def row_job(step, wall, floats, row, events):
    """(job, payload bytes) writing one history row at `step`: its plain floats ({key: value})
    and other values ({key: (kind, payload)}), and the value_type events that go with it
    ([(seq, kind, tag, value_json)])."""
    tags, values = list(floats), list(floats.values())
    others = []
    nbytes = 0
    for key, (kind, payload) in row.items():
        if kind in SCALAR_KINDS:
            tags.append(key)
            values.append(float(payload))
        else:
            others.append((key, kind, payload))
            nbytes += _size(kind, payload)

    def job(buffers):
        n = len(tags)
        if n:
            buffers.add_many("scalars", n, step=[step] * n, wall_time=[wall] * n, tag=tags,
                             value=values)
        for key, kind, payload in others:
            if kind == JSON:
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

    return job, nbytes + 16 * len(tags)


def event_job(step, wall, seq, kind, tag, value_json):
    def job(buffers):
        buffers.add("run_events", step=step, wall_time=wall, tag=tag, seq=seq, kind=kind,
                    value_json=value_json)
    return job


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
