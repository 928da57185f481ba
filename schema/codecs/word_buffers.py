"""The dump codec's word arrays, used again once nothing refers to them.

Each dumped step gathers its tensors' words into one array (tfdbg_v1_codec.Encoder), kept
for the next steps' predictions: the last MAX_ORDER arrays whole, and every chain's history
as views into them. A fresh 25 MB array a step cost 50-100 ms of the kernel's page faults
and huge-page compaction on this VM (codec_planes itself: 10-12 ms); handing back an array
no view or history holds any more cut that to nothing. Whether one is held is read from its
reference count: numpy gives every view of it (slices of slices too) a reference to it.
The content columns' data (tfdbg_v1_codec.Encoder.encode) comes from a pool of its own: Arrow
refers to it, through the buffer protocol, until the writer stored the rows.

Of each size the pool keeps as many free arrays as were ever lent at once (at least SPARES):
the writer hands content buffers back in bursts, and keeping only two made every burst's
rest go back to the allocator, to be made afresh at the next steps (tools/bench_dump at
2 509 tensors: 20 of 80 takes made a fresh 22.9 MB array with two kept, none after the first
steps with the peak kept). Idle, the pool holds what the busiest moment needed.
"""

import sys

import numpy as np

SPARES = 2      # free arrays of one size kept at least (a step's words of one width)
MAX_FREE = 8    # free arrays kept in all (the oldest go first)
POOLED = 1 << 18  # smaller arrays come from malloc's heap, whose pages are mapped already


class WordBuffers:
    def __init__(self):
        self._lent = []     # arrays handed out, maybe still referred to
        self._free = []     # arrays nothing else refers to
        self._peak = {}     # size -> the most arrays of that size lent at once

    def take(self, nbytes):
        """A uint8 array of `nbytes` (contents undefined)."""
        if nbytes < POOLED:
            return np.empty(nbytes, np.uint8)
        self._collect()
        for i, a in enumerate(self._free):
            if a.nbytes == nbytes:
                array = self._free.pop(i)
                break
        else:
            array = np.empty(nbytes, np.uint8)
        self._lent.append(array)
        lent = sum(1 for a in self._lent if a.nbytes == nbytes)
        if lent > self._peak.get(nbytes, 0):
            self._peak[nbytes] = lent
        return array

    def _collect(self):
        held = []
        for a in self._lent:
            # references: _lent's, the loop's `a`, getrefcount's argument
            (held if sys.getrefcount(a) > 3 else self._free).append(a)
        self._lent = held
        # the newest of each size, as many as were lent at once (steps take arrays of several
        # sizes: one per width)
        keep, count = [], {}
        for a in reversed(self._free):
            spares = max(SPARES, self._peak.get(a.nbytes, 0))
            if count.get(a.nbytes, 0) < spares and len(keep) < MAX_FREE:
                count[a.nbytes] = count.get(a.nbytes, 0) + 1
                keep.append(a)
        self._free = keep[::-1]   # the rest go back to the allocator

    def clear(self):
        self._lent, self._free, self._peak = [], [], {}
