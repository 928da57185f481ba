"""The records of the in-memory capture (native/capture.cc): the buffer a take hands over
(Records) and its parsing into TensorFile objects (parse_records), whose data stay slices of it.

Record layout (little-endian; capture.cc's append_record): u32 length of the rest, u64 wall
time (us), i32 output slot, i32 dtype enum, u32 rank, u32 lengths of the device name, node
name, debug op and Event, u32 offset and length of the tensor_content payload in the Event;
then rank i64 dims, those three strings and the Event.
"""

import ctypes
import struct
import weakref

import numpy as np

from tfblackbox.schema.errors import DumpLayoutError
from tfblackbox.schema.formats import dtypes, native, tfdbg_v1_layout as layout


class Records:
    """One take()'s records, in capture.cc's buffer (no copy). parse_records' TensorFiles
    refer into it (their data is a slice, not a copy: 25 MB a step at 2 509
    tensors, whose copy took 10-17 ms a step in a micro-benchmark), so release() gives the
    buffer back to the capture only once nothing refers to it any more: at once if nothing
    does, else when the last slice goes (a finalizer on the array every slice keeps alive).

    In black-box mode (`held` > 0) the tensors' content is apart from the records, in the
    capture's arena: `view` is None until fill() copies it in, which only a step that a
    trigger writes needs. `size` counts the arena's chunks too (the memory the take holds)."""

    def __init__(self, lib, address, handle, size, held=0):
        self.size, self.held = size + held, held
        self._lib, self._handle = lib, handle
        self.view = None
        if held:
            self._finalizer = weakref.finalize(self, lib.tfbb_release, handle)
        else:
            self._wrap(address, size)

    def _wrap(self, address, size):
        base = np.frombuffer((ctypes.c_char * size).from_address(address), np.uint8)
        self._finalizer = weakref.finalize(base, self._lib.tfbb_release, self._handle)
        self.view = memoryview(base)

    def fill(self):
        """The records whole (the held content copied in, the arena's memory given back).
        Returns self."""
        if self.held and self._finalizer.alive:
            self._finalizer.detach()
            data = ctypes.c_void_p()
            n = self._lib.tfbb_fill(self._handle, ctypes.byref(data))
            if n < 0:
                self._finalizer = weakref.finalize(self, self._lib.tfbb_release, self._handle)
                raise MemoryError(f"cannot fill in a captured step's tensors (kept in "
                                  f"{self.held} bytes of the capture's arena): out of memory")
            self.held, self.size = 0, n   # the records whole; the arena's chunks went back
            self._wrap(data.value, n)
        return self

    def release(self):
        if self.view is not None:
            self.view.release()
            self.view = None   # the array goes with the last slice; its finalizer gives it back
        elif self.held:
            self._finalizer()  # nothing refers into it: the arena's memory goes back now

    @property
    def released(self):
        """Whether capture.cc has its buffer back."""
        return not self._finalizer.alive

    def __del__(self):
        self.release()


_HEAD = struct.Struct("<IQiiIIIIIII")


def parse_records(blob):
    """TensorFile objects (the device dir derived from the device name, as TF names it) of a
    take()'s records (bytes or a memoryview). Names repeated within them get TF's collision
    suffix (`<micros>-1`, ...), as the files of one run dir would. Their data is a slice of
    `blob` (Records: the capture's buffer stays theirs while they live): a memoryview, or
    from the compiled loop a RecordSlice, which the cycle collector does not follow. The compiled
    capture_records makes them where it can (2 509 records: ~8 ms in Python, 3-5 ms in C);
    a record it leaves (names not seen yet, an odd dtype, damage) is _parse_one's."""
    out, seen, i, end = [], {}, 0, len(blob)
    nat = native.module()
    while i < end:
        if nat is not None:
            i = nat.capture_records(blob, i, _NAMES, _DTYPES, layout.TensorFile, out, seen)
            if i >= end:
                break
        i = _parse_one(blob, i, end, out, seen)
    return out


def _parse_one(blob, i, end, out, seen):
    """The record at byte i -> out; returns where the next one starts."""
    names, unpack, head = _NAMES, _HEAD.unpack_from, _HEAD.size
    n, ts, slot, dtype, rank, ld, ln, lo, le, cat, clen = unpack(blob, i)
    j = i + head
    if i + 4 + n > end or j + 8 * rank + ld + ln + lo + le != i + 4 + n:
        raise DumpLayoutError(f"capture record at byte {i} of {end} is malformed")
    if clen and cat + clen > le:
        raise DumpLayoutError(f"capture record at byte {i}: tensor content {cat}+{clen} "
                              f"lies outside its {le}-byte Event")
    # a tuple of ints: the collector untracks it, so it is not among the objects whose
    # promotion sets off full collections (~0.2 s each in a TensorFlow process)
    dims = struct.unpack_from(f"<{rank}q", blob, j) if rank else ()
    j += 8 * rank
    # the strings repeat run after run: decoded (and the device dir derived) once
    raw = bytes(blob[j:j + ld + ln + lo])
    known = names.get((raw, ld, ln))
    if known is None:
        device = str(raw[:ld], "utf-8")
        known = names[(raw, ld, ln)] = (device, layout.device_dir(device),
                                        str(raw[ld:ld + ln], "utf-8"),
                                        str(raw[ld + ln:], "utf-8"))
    device, dev_dir, node, op = known
    data = blob[j + ld + ln + lo:i + 4 + n]   # of a memoryview: a slice, not a copy
    name = (dev_dir, node, slot, op, ts)
    k = seen.get(name, 0)
    seen[name] = k + 1
    out.append(layout.TensorFile(dev_dir, node, slot, op, ts, f"{ts}-{k}" if k else str(ts),
                                 data, device, dtypes.name(dtype), dims, (cat, cat + clen)))
    return i + 4 + n


_NAMES: dict = {}   # (device + node + op bytes, lengths) -> decoded names; bounded by the graph
_DTYPES = {enum: dtypes.name(enum) for enum in list(range(1, 34)) + list(range(101, 134))}
