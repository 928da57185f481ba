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
    with open(path, "rb") as f:
        data = f.read()
    if data[:HEADER] != FILE_HEADER:
        raise BlackboxError(f"{path} is not a W&B transaction log: it starts with "
                            f"{data[:HEADER]!r}, expected {FILE_HEADER!r}")
    out, pos, pending = [], HEADER, None
    while True:
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
        if pos + HEADER > len(data):
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
            out.append(body)
        elif kind == FIRST:
            pending = bytearray(body)
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending += body
            if kind == LAST:
                out.append(bytes(pending))
                pending = None
        else:
            raise BlackboxError(f"{path}: unexpected chunk type {kind} at byte {pos}")
    return out


def encode(payloads):
    """The bytes of a .wandb file holding `payloads` (the LevelDB log framing)."""
    out = bytearray(FILE_HEADER)
    for payload in payloads:
        first = True
        rest = memoryview(payload)
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < HEADER:
                out += b"\0" * left
                left = BLOCK
            room = left - HEADER
            piece, rest = rest[:room], rest[room:]
            last = len(rest) == 0
            kind = (FULL if last else FIRST) if first else (LAST if last else MIDDLE)
            out += struct.pack("<IHB", zlib.crc32(piece, _TYPE_CRC[kind]), len(piece), kind)
            out += piece
            first = False
            if last:
                break
    return bytes(out)


def rewrite(path, records):
    """Replaces the file with `records` (Record protos), through a temporary file and a
    rename, so a kill leaves either the old or the new file."""
    tmp = f"{path}.tfblackbox-tmp"
    with open(tmp, "wb") as f:
        f.write(encode([r.SerializeToString() for r in records]))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def wait_complete(path, timeout=60.0):
    """The records of a run's log once wandb-core has written it whole. `run.finish()` returns
    before wandb-core closes the run's stream (`inform_finish` is sent without waiting), and its
    writer buffers records; the exit record is the last one it writes, so the log is whole
    once it ends with the exit record and stops growing."""
    from wandb.proto import wandb_internal_pb2 as pb
    deadline = time.monotonic() + timeout
    size = -1
    while True:
        now = os.path.getsize(path) if os.path.exists(path) else -1
        if now == size and now > HEADER:
            payloads = read_payloads(path)
            if payloads:
                last = pb.Record.FromString(payloads[-1])
                if last.WhichOneof("record_type") == "exit":
                    return [pb.Record.FromString(p) for p in payloads]
        if time.monotonic() > deadline:
            raise BlackboxError(f"wandb did not finish writing {path} within {timeout:.0f} s "
                                f"(no exit record at its end)")
        size = now
        time.sleep(0.05)


def read_records(path):
    from wandb.proto import wandb_internal_pb2 as pb
    return [pb.Record.FromString(p) for p in read_payloads(path)]
