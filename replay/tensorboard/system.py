"""`replay --to tensorboard`: a run's system metrics samples (recorder/system/) as scalars
`system/<key>` in `LOGDIR/<run dir>/system/`, a TensorBoard run of its own, so its steps
(the samples' order in time, 0, 1, ...; samples are not training steps) never mix with the
training's in one event stream. Each sample is one Event at its recorded wall time.

It has its own cursor (destination `<tensorboard destination>#system`: the last sample
written) and writes as export.py writes the training's events: a new file per replay with
new samples, under a temporary name, named in the cursor as pending, then renamed.
"""

import os

from tfblackbox.schema.codecs import system_read

from . import events as ev
from .chunks import settle, write_chunk

SUBDIR = "system"


def export_system(store, record, run_dir, dest):
    """Writes the samples not written yet; returns how many were written."""
    samples = system_read.samples(store, record.run_id)
    if not samples:
        return 0
    out = os.path.join(run_dir, SUBDIR)
    os.makedirs(out, exist_ok=True)
    dest = f"{dest}#system"
    step, state = store.get_cursor(record.run_id, dest)
    step, state = settle(store, record.run_id, dest, out, step, state)
    start = 0 if step is None else step + 1
    body = ((i, s.wall_time, ev.event(s.wall_time, i, summary=b"".join(
        ev.simple_scalar(f"system/{key}", value) for key, value in sorted(s.values.items()))))
        for i, s in enumerate(samples) if i >= start)
    chunk = write_chunk(store, record.run_id, dest, out, step, state, (iter(()), body))
    return chunk["events"] if chunk else 0
