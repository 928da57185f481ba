"""The protobuf wire format, just enough to read and write the fields the store needs
without TensorFlow (or its protos) and without copying large payloads."""

from tfblackbox.schema.errors import WireFormatError


def varint(buf, i):
    """(value, next index) of the base-128 varint at buf[i]."""
    result = shift = 0
    try:
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, i
            shift += 7
    except IndexError:
        raise WireFormatError(f"truncated varint at byte {i} of a {len(buf)}-byte "
                              f"message") from None


def signed64(v):
    """An int64 field's value (varints carry negatives as their two's complement)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def text(buf, start, end):
    """A string field's UTF-8 (bad bytes replaced: names and tags are data)."""
    return bytes(buf[start:end]).decode("utf-8", "replace")


def encode_varint(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def walk(buf, start=0, end=None):
    """Yields (field number, wire type, field start, payload start, field end) for each field
    of the message in buf[start:end], in place. No slices: dump Events carry the whole tensor,
    and copying it at each nesting level was most of the cost."""
    i, n = start, len(buf) if end is None else end
    while i < n:
        field = i
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        payload = i
        if wire == 0:
            _v, i = varint(buf, i)
        elif wire == 2:
            size, payload = varint(buf, i)
            i = payload + size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise WireFormatError(f"field {number} at byte {field} has wire type {wire}; "
                                  f"expected 0, 1, 2 or 5 (not a protobuf message?)")
        if i > n:
            raise WireFormatError(f"field {number} at byte {field} runs past the end of the "
                                  f"{n - start}-byte message (truncated)")
        yield number, wire, field, payload, i


def walk_list(buf, start=0, end=None):
    """[(field number, wire type, payload start, field end)] of the message in buf[start:end].
    walk()'s list form with one-byte keys and lengths inlined, for hot paths that visit every
    field (tfevents records: a dozen calls per record on the writer thread); walk() is for
    callers that need each field's start or stop where the bytes go bad."""
    out = []
    i, n = start, len(buf) if end is None else end
    while i < n:
        key = buf[i]
        if key < 0x80:
            i += 1
        else:
            key, i = varint(buf, i)
        wire = key & 7
        if wire == 2:
            size = buf[i]
            if size < 0x80:
                i += 1
            else:
                size, i = varint(buf, i)
            out.append((key >> 3, 2, i, i + size))
            i += size
        elif wire == 0:
            p = i
            while buf[i] >= 0x80:
                i += 1
            i += 1
            out.append((key >> 3, 0, p, i))
        elif wire == 1 or wire == 5:
            p = i
            i += 8 if wire == 1 else 4
            out.append((key >> 3, wire, p, i))
        else:
            raise WireFormatError(f"wire type {wire} at byte {i}; expected 0, 1, 2 or 5")
        if i > n:
            raise WireFormatError(f"a field runs past the end of the {n - start}-byte message "
                                  f"(truncated)")
    return out


def fields(buf):
    """Yields (field_number, wire_type, value) of one message; value is int or bytes."""
    for number, wire, _f, payload, end in walk(buf):
        yield number, wire, varint(buf, payload)[0] if wire == 0 else buf[payload:end]


def first(buf, number):
    """The value of the first field `number` of a message, or None."""
    for num, _wire, value in fields(buf):
        if num == number:
            return value
    return None


def span(buf, start, end, number):
    """The (start, end) span of the first length-delimited field `number` in buf[start:end].
    walk() inlined: this runs three times for every dumped tensor, and the generator made
    tensor_info ~40% slower."""
    i = start
    while i < end:
        key, i = varint(buf, i)
        wire = key & 7
        if wire == 2:
            size, i = varint(buf, i)
            if key >> 3 == number:
                if i + size > end:
                    raise WireFormatError(f"field {number} runs past the end of its message "
                                          f"(truncated)")
                return i, i + size
            i += size
        elif wire == 0:
            _v, i = varint(buf, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise WireFormatError(f"wire type {wire} at byte {i}; expected 0, 1, 2 or 5")
    return None


def length_delimited(number, payload):
    """One length-delimited field: key, length, payload."""
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload
