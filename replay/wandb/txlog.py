"""W&B's transaction log (`run-<id>.wandb`), read and written record by record.

The format (DESIGN §5): a 7-byte header (`:W&B`, uint16 LE 0xBEE1, version byte 0), then the
LevelDB log format: 32 KiB blocks (counted from the start of the file, header included) of
chunks, each a 7-byte header -- crc32 (LE, of the type byte then the payload), length (uint16
LE), type (FULL=1, FIRST=2, MIDDLE=3, LAST=4) -- and its payload; a block with fewer than 7
bytes left is zero-padded. Each record is a serialized `wandb_internal_pb2.Record`.

The replay rewrites a chunk's log once wandb has finished it (times.py), before the chunk is
published; `wandb sync` reads the rewritten file as it reads any offline run.
"""

import os
import struct
import time
import zlib

from tfblackbox.schema import BlackboxError

BLOCK = 32 * 1024
HEADER = 7
FILE_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}


def read_payloads(path):
    """The record payloads of a .wandb file, in order (a truncated last record is left out)."""
    return list(iter_payloads(path))


def iter_payloads(path):
    """read_payloads, one at a time (the file is mapped, not read into memory)."""
    for payload, _end in _records_from(path, HEADER):
        yield payload


def _records_from(path, pos):
    """(payload, the byte offset after it) of each whole record from byte `pos` on, which is
    the file's header or the end of a record read before."""
    import mmap
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < HEADER:
            raise BlackboxError(f"{path} is not a W&B transaction log: it is shorter than "
                                f"its {HEADER}-byte header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:HEADER] != FILE_HEADER:
                raise BlackboxError(f"{path} is not a W&B transaction log: it starts with "
                                    f"{data[:HEADER]!r}, expected {FILE_HEADER!r}")
            yield from _chunks(path, data, pos)


def _chunks(path, data, pos):
    pending, size = None, len(data)
    while True:
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
        if pos + HEADER > size:
            break
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:
            break
        body = data[pos + HEADER:pos + HEADER + length]
        if len(body) < length:
            break
        if zlib.crc32(body, _TYPE_CRC.get(kind, 0)) != crc:
            raise BlackboxError(f"{path}: crc mismatch in the chunk at byte {pos}")
        pos += HEADER + length
        if kind == FULL:
            yield body, pos
        elif kind == FIRST:
            pending = bytearray(body)
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending += body
            if kind == LAST:
                yield bytes(pending), pos
                pending = None
        else:
            raise BlackboxError(f"{path}: unexpected chunk type {kind} at byte {pos}")


class Writer:
    """Writes records into a new .wandb file in the LevelDB log framing."""

    def __init__(self, f):
        self.f = f
        self.pos = len(FILE_HEADER)
        f.write(FILE_HEADER)

    def write(self, payload):
        first, rest = True, memoryview(payload)
        while True:
            left = BLOCK - self.pos % BLOCK
            if left < HEADER:
                self.f.write(b"\0" * left)
                self.pos += left
                left = BLOCK
            piece, rest = rest[:left - HEADER], rest[left - HEADER:]
            last = len(rest) == 0
            kind = (FULL if last else FIRST) if first else (LAST if last else MIDDLE)
            self.f.write(struct.pack("<IHB", zlib.crc32(piece, _TYPE_CRC[kind]), len(piece),
                                     kind))
            self.f.write(piece)
            self.pos += HEADER + len(piece)
            first = False
            if last:
                return


def encode(payloads):
    """The bytes of a .wandb file holding `payloads` (the LevelDB log framing)."""
    import io
    buf = io.BytesIO()
    w = Writer(buf)
    for payload in payloads:
        w.write(payload)
    return buf.getvalue()


def rewrite(path, records):
    """Replaces the file with `records` (Record protos, any iterable: it may read the file
    being replaced), through a temporary file and a rename, so a kill leaves either the old
    or the new file."""
    tmp = f"{path}.tfblackbox-tmp"
    with open(tmp, "wb") as f:
        w = Writer(f)
        for r in records:
            w.write(r.SerializeToString())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def wait_complete(path, timeout=60.0):
    """Returns once wandb-core has written a run's log whole. `run.finish()` returns before
    wandb-core closes the run's stream (`inform_finish` is sent without waiting), and its
    writer buffers records; the exit record is the last one it writes, so the log is whole
    once it ends with the exit record and stops growing. wandb-core gets there a few ms after
    finish() returns: the file is looked at after 1 ms, then at doubling intervals (up to
    50 ms), each look reading only the records written since the one before (a fixed 50 ms
    poll that read the whole log each time kept every chunk's worker idle 50-100 ms)."""
    from wandb.proto import wandb_internal_pb2 as pb
    deadline = time.monotonic() + timeout
    size, pos, last, delay = -1, HEADER, None, 0.001
    while True:
        now = os.path.getsize(path) if os.path.exists(path) else -1
        if now > pos:
            for record in _records_from(path, pos):
                last, pos = record   # the last whole record so far, and where it ends
        if now == size and last is not None and \
                pb.Record.FromString(last).WhichOneof("record_type") == "exit":
            return
        if time.monotonic() > deadline:
            raise BlackboxError(f"wandb did not finish writing {path} within {timeout:.0f} s "
                                f"(no exit record at its end)")
        size = now
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def read_records(path):
    return list(iter_records(path))


def iter_records(path):
    from wandb.proto import wandb_internal_pb2 as pb
    for p in iter_payloads(path):
        yield pb.Record.FromString(p)
