"""TFRecord framing, as TensorFlow's `RecordWriter` writes it (tfevents, tfdbg v2 files).

A record is: uint64 LE length, uint32 LE masked crc32c of those 8 bytes, the data, uint32 LE
masked crc32c of the data. The checksums are functions of the data, so writing the same data
again with `frame` reproduces a file byte for byte.

`RecordReader` reads a file that may still be growing: it stops quietly at a half-written last
record and remembers where to resume (`offset`), like TensorBoard's RawEventFileLoader; a bad
checksum on a record that is complete is damage, raised as CorruptRecordError naming the file
and the offset. CRCs are google-crc32c's C implementation; the framing loop is compiled
(native.py: _native.frame) when the extension is built.
"""

import array
import os
import struct

import google_crc32c

from ..errors import BlackboxError
from . import native

HEADER = 12            # length (8) + its masked crc (4)
FOOTER = 4             # masked crc of the data
READ_BYTES = 16 << 20  # bytes read from a file per call (more when one record is larger)
_MASK_DELTA = 0xA282EAD8
_LEN = struct.Struct("<QI")
_CRC = struct.Struct("<I")


class CorruptRecordError(BlackboxError):
    """A complete record whose checksum does not match: the file is damaged at `offset`."""

    def __init__(self, path, offset, what):
        super().__init__(f"{path}: corrupt TFRecord at byte offset {offset}: {what}; the "
                         f"records before it are intact, nothing after it can be framed")
        self.path, self.offset = path, offset


def masked_crc(data):
    """TFRecord's masked crc32c of `data` (bytes)."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data):
    """One record's bytes as written to a file: header, data, footer."""
    data = bytes(data)
    length = struct.pack("<Q", len(data))
    return length + _CRC.pack(masked_crc(length)) + data + _CRC.pack(masked_crc(data))


class RecordReader:
    """Reads the complete records of one file from `offset` on, call after call.

    `read()` returns [(offset, data)] of the records complete so far and advances `offset`
    past them (`index` counts them); the bytes of a record not yet complete stay unread and
    `partial` says how many there were. A damaged record raises CorruptRecordError once the
    good records before it were returned (`offset` stays at it); a file that shrank below
    `offset` raises FileShrankError."""

    def __init__(self, path, offset=0, index=0):
        self.path = path
        self.offset = offset
        self.index = index
        self.partial = 0

    def read(self, max_bytes=READ_BYTES):
        buf, base, found = self._read(max_bytes, _scanner(), [], len)
        return [(base + p, data) for p, data in found]

    def read_spans(self, max_bytes=READ_BYTES):
        """read() without a bytes object a record: (buf, offset of buf in the file, int64
        positions in buf of the complete records' headers, as bytes), for decoders of whole
        chunks (codecs/tfevents_columns.py)."""
        return self._read(max_bytes, _span_scanner(), b"", lambda spans: len(spans) // 8)

    def _read(self, max_bytes, scan, out, count):
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < self.offset:
                raise FileShrankError(self.path, size, self.offset)
            f.seek(self.offset)
            buf, pos, base = f.read(min(max_bytes, size - self.offset)), 0, self.offset
            while True:
                found, pos, status, need = scan(buf, pos)
                out += found
                self.offset = base + pos
                self.index += count(found)
                if status == _BAD_LENGTH:
                    if out:
                        break   # hand out the good records first; the next call raises
                    raise CorruptRecordError(self.path, self.offset,
                                             "the length's checksum does not match")
                if status == _BAD_DATA:
                    if out:
                        break
                    raise CorruptRecordError(self.path, self.offset,
                                             f"the data's checksum does not match (a record "
                                             f"of {need - HEADER - FOOTER} bytes)")
                if not need or out or self.offset + need > size:
                    break   # the rest is for the next call, or not written yet
                buf += f.read(need - len(buf))   # one record larger than max_bytes
                if len(buf) < need:
                    break
            self.partial = size - self.offset
        return buf, base, out

    def __iter__(self):
        """Every complete record from `offset` to the end of the file as it is now."""
        while True:
            batch = self.read()
            if not batch:
                return
            yield from batch


_BAD_LENGTH, _BAD_DATA = 1, 2


def _scanner():
    """frame(buf, pos) -> ([(pos, data)], pos after them, status, need): the compiled one,
    or its pure twin below."""
    nat = native.module()
    return _frame if nat is None else nat.frame


def _span_scanner():
    nat = native.module()
    return _frame_spans if nat is None else nat.frame_spans


def _frame_spans(buf, pos):
    """_frame with the records' positions as int64 bytes instead of their data."""
    found, pos, status, need = _frame(buf, pos)
    return array.array("q", [p for p, _data in found]).tobytes(), pos, status, need


def _frame(buf, pos):
    """The records framed in buf from pos on, and why it stopped: status 0 (need: the whole
    size of a record not all in buf, 0 when its header is not), _BAD_LENGTH or _BAD_DATA
    (need: the record's size) at the returned pos."""
    out = []
    while len(buf) - pos >= HEADER:
        length, lcrc = _LEN.unpack_from(buf, pos)
        if masked_crc(buf[pos:pos + 8]) != lcrc:
            return out, pos, _BAD_LENGTH, 0
        need = HEADER + length + FOOTER
        if len(buf) - pos < need:
            return out, pos, 0, need
        data = buf[pos + HEADER:pos + HEADER + length]
        (dcrc,) = _CRC.unpack_from(buf, pos + HEADER + length)
        if masked_crc(data) != dcrc:
            return out, pos, _BAD_DATA, need
        out.append((pos, data))
        pos += need
    return out, pos, 0, 0


class FileShrankError(BlackboxError):
    """A file being read is now shorter than what was already read from it."""

    def __init__(self, path, size, offset):
        super().__init__(f"{path} is now {size} bytes long but {offset} bytes of it were "
                         f"read already: it was truncated or replaced")
        self.path, self.size, self.offset = path, size, offset


def read_records(path):
    """[(offset, data)] of every complete record in a file (a half-written tail is left out)."""
    return list(RecordReader(path))


class RecordWriter:
    """Writes records with TFRecord framing to a binary file object."""

    def __init__(self, fileobj):
        self.file = fileobj

    def write(self, data):
        self.file.write(frame(data))


def write_records(path, records):
    """Writes `records` (bytes each) to a new file at `path`."""
    with open(path, "wb") as f:
        writer = RecordWriter(f)
        for data in records:
            writer.write(data)
