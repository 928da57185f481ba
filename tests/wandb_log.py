"""A small reader of W&B's offline transaction log (`run-<id>.wandb`), for tests.

wandb >= 0.30 ships no Python reader. The format (DESIGN §5): a 7-byte header (`:W&B`, uint16
LE 0xBEE1, version byte 0), then the LevelDB log format: 32 KiB blocks (counted from the start of
the file, header included) of chunks, each a 7-byte header -- crc32 (LE, of the type byte then the
payload), length (uint16 LE), type (FULL=1, FIRST=2, MIDDLE=3, LAST=4) -- and its payload; a block
with fewer than 7 bytes left is zero-padded. Each record is a serialized
`wandb_internal_pb2.Record`. A truncated last record (a killed writer) is ignored.
"""

import base64
import glob
import hashlib
import json
import os
import struct
import zlib

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}


class WandbLogError(Exception):
    pass


def read_payloads(path):
    """The raw record payloads of one .wandb file, in order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER:
        raise WandbLogError(f"{path}: {len(data)} bytes, shorter than the 7-byte header")
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise WandbLogError(f"{path}: bad header {data[:HEADER]!r}; expected b':W&B' 0xBEE1 0")
    pos, pending = HEADER, None
    while True:
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left   # zero padding at the end of a block
        if pos + HEADER > len(data):
            break
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            break         # preallocated zeros past the last record
        body = data[pos + HEADER:pos + HEADER + length]
        if len(body) < length:
            break         # a truncated last chunk
        if zlib.crc32(body, _TYPE_CRC.get(kind, 0)) != crc:
            raise WandbLogError(f"{path}: crc mismatch in the chunk at byte {pos}")
        pos += HEADER + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = bytearray(body)
        elif kind == MIDDLE and pending is not None:
            pending += body
        elif kind == LAST and pending is not None:
            pending += body
            yield bytes(pending)
            pending = None
        else:
            raise WandbLogError(f"{path}: unexpected chunk type {kind} at byte {pos}")


def read_records(path):
    """The `Record` protos of one .wandb file."""
    from wandb.proto import wandb_internal_pb2
    for payload in read_payloads(path):
        yield wandb_internal_pb2.Record.FromString(payload)


def _item_key(item):
    return "/".join(item.nested_key) if item.nested_key else item.key


def _put(out, item):
    """Stores an item; a `nested_key` [tag, field] (a media object's fields) nests."""
    value = json.loads(item.value_json)
    if not item.nested_key:
        out[item.key] = value
        return
    *parents, last = item.nested_key
    for p in parents:
        out = out.setdefault(p, {})
    out[last] = value


def history(path):
    """Every history row of a .wandb file as a dict {key: decoded value_json}; media objects
    (logged as one item per field) come back as one dict per key."""
    rows = []
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "history":
            row = {}
            for item in rec.history.item:
                _put(row, item)
            rows.append(row)
    return rows


def summary(path):
    """The summary updates of a file merged in order: {key: value}."""
    out = {}
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "summary":
            for item in rec.summary.update:
                _put(out, item)
            for item in rec.summary.remove:
                out.pop(_item_key(item), None)
    return out


def run_record(path):
    """The first `run` record of the file (id, config, tags, name, ...)."""
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "run":
            return rec.run
    return None


def config(path):
    """The run's config as {key: value}, merged from the run record and config updates."""
    out = {}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        items = (rec.run.config.update if kind == "run" else
                 rec.config.update if kind == "config" else [])
        for item in items:
            value = json.loads(item.value_json)
            if isinstance(value, dict) and set(value) == {"value", "desc"}:
                value = value["value"]
            out[_item_key(item)] = value
    out.pop("_wandb", None)
    return out


def exit_code(path):
    """The exit code of the run's `exit` record, or None when the file has none."""
    code = None
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "exit":
            code = rec.exit.exit_code
    return code


def run_files(wandb_dir):
    """Every run-*.wandb file under a directory, however deep."""
    return sorted(glob.glob(os.path.join(wandb_dir, "**", "run-*.wandb"), recursive=True))


def artifacts(wandb_dir):
    """{W&B run id: [(name, sorted aliases, [bytes of each file])]} of the artifact records of
    every run file under wandb_dir, in file order; each file read where `wandb sync` uploads
    it from (its manifest entry's local_path), checked against the entry's MD5 digest."""
    out = {}
    for f in run_files(str(wandb_dir)):
        run_id = run_record(f).run_id
        for rec in read_records(f):
            if rec.WhichOneof("record_type") != "artifact":
                continue
            art, blobs = rec.artifact, []
            for e in art.manifest.contents:
                with open(e.local_path, "rb") as fh:
                    data = fh.read()
                if base64.b64encode(hashlib.md5(data).digest()).decode() != e.digest:
                    raise WandbLogError(f"{e.local_path}: not the MD5 of its manifest entry")
                blobs.append(data)
            out.setdefault(run_id, []).append((art.name, sorted(art.aliases), blobs))
    return out
