"""TensorProto bytes -> numpy array, from the wire format (no TensorFlow), as TensorFlow's
`tensor_util.MakeNdarray` gives it for the dtypes summaries use.

TensorProto: dtype 1, tensor_shape 2 (dim 2: size 1), tensor_content 4, float_val 5,
double_val 6, int_val 7, string_val 8, scomplex_val 9, int64_val 10, bool_val 11,
dcomplex_val 12, half_val 13, uint32_val 16, uint64_val 17. Repeated numbers may be packed or
not. Fewer typed values than elements repeat the last one (MakeNdarray's rule); none at all
give zeros.
"""

import dataclasses
import struct

import numpy as np

from .wire import signed64, varint, walk_list

DT_STRING, DT_BFLOAT16 = 7, 14
NUMERIC = frozenset((1, 2, 3, 4, 5, 6, 9, 10, 14, 17, 19, 22, 23))   # as summaries._is_numeric

# dtype enum -> (numpy dtype of tensor_content, typed field, how that field is encoded)
_LAYOUT = {
    1: ("<f4", 5, "f4"), 2: ("<f8", 6, "f8"), 3: ("<i4", 7, "varint"), 4: ("u1", 7, "varint"),
    5: ("<i2", 7, "varint"), 6: ("i1", 7, "varint"), 8: ("<c8", 9, "f4"),
    9: ("<i8", 10, "varint"), 10: ("?", 11, "varint"), 17: ("<u2", 7, "varint"),
    18: ("<c16", 12, "f8"), 19: ("<f2", 13, "varint"), 22: ("<u4", 16, "varint"),
    23: ("<u8", 17, "varint"), DT_BFLOAT16: ("<u2", 13, "varint"),
}


@dataclasses.dataclass
class Tensor:
    dtype: int = 0
    shape: list = dataclasses.field(default_factory=list)
    unknown_rank: bool = False
    content: bytes | None = None
    fields: dict = dataclasses.field(default_factory=dict)   # field number -> [(wire, start, end)]
    data: bytes = b""


def parse(data, start=0, end=None):
    """The fields of the TensorProto in data[start:end] (spans, not copies)."""
    t = Tensor(data=data)
    for number, wire, payload, fend in walk_list(data, start, end):
        if number == 1 and wire == 0:
            t.dtype = varint(data, payload)[0]
        elif number == 2 and wire == 2:
            t.shape, t.unknown_rank = shape(data, payload, fend)
        elif number == 4 and wire == 2:
            t.content = data[payload:fend]
        else:
            t.fields.setdefault(number, []).append((wire, payload, fend))
    return t


def shape(data, start, end):
    """(dims, unknown rank) of the TensorShapeProto in data[start:end]."""
    dims, unknown = [], False
    for number, wire, payload, fend in walk_list(data, start, end):
        if number == 2 and wire == 2:
            size = 0
            for n, w, p, _e in walk_list(data, payload, fend):
                if n == 1 and w == 0:
                    size = signed64(varint(data, p)[0])
            dims.append(size)
        elif number == 3:
            unknown = True
    return dims, unknown


def to_ndarray(data, start=0, end=None):
    """The array a serialized TensorProto holds (strings as an object array of bytes).
    Raises ValueError for a dtype or layout it cannot turn into an array."""
    return ndarray(parse(data, start, end))


def ndarray(t):
    if t.unknown_rank or any(d < 0 for d in t.shape):
        raise ValueError(f"tensor of unknown shape {t.shape}")
    count = int(np.prod(t.shape, dtype=np.int64))
    if t.dtype == DT_STRING:
        values = [bytes(t.data[p:e]) for w, p, e in t.fields.get(8, ()) if w == 2]
        if len(values) < count:
            values += [values[-1] if values else b""] * (count - len(values))
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out.reshape(t.shape)
    layout = _LAYOUT.get(t.dtype)
    if layout is None:
        raise ValueError(f"tensor dtype {t.dtype} has no numpy form here")
    np_dtype, number, encoding = layout
    if t.content is not None:
        arr = np.frombuffer(t.content, np_dtype).copy()
    else:
        arr = _typed_values(t, number, encoding, np_dtype)
        if t.dtype in (8, 18):   # complex values come as (real, imag) pairs
            arr = arr.view(np_dtype) if len(arr) % 2 == 0 else arr[:0].view(np_dtype)
        if len(arr) == 0:
            arr = np.zeros(count, np_dtype)
        elif len(arr) < count:
            arr = np.concatenate([arr, np.repeat(arr[-1:], count - len(arr))])
    if t.dtype == DT_BFLOAT16:   # bfloat16: the high half of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    if arr.size != count:
        raise ValueError(f"tensor of shape {t.shape} holds {arr.size} values")
    return arr.reshape(t.shape)


def _typed_values(t, number, encoding, np_dtype):
    values = []
    for wire, p, e in t.fields.get(number, ()):
        if encoding == "varint":
            if wire == 2:
                i = p
                while i < e:
                    v, i = varint(t.data, i)
                    values.append(v)
            elif wire == 0:
                values.append(varint(t.data, p)[0])
        else:
            size = 4 if encoding == "f4" else 8
            fmt = "<f" if size == 4 else "<d"
            if wire == 2:
                values.extend(np.frombuffer(t.data, fmt, (e - p) // size, p).tolist())
            elif wire in (1, 5):
                values.append(struct.unpack_from(fmt, t.data, p)[0])
    if encoding == "varint":
        if np_dtype == "<f2":   # half_val: the bits in an int32 field
            return np.array(values, np.uint16).view(np.float16)
        if np_dtype == "<u8":
            return np.array(values, np.uint64)
        return np.array([signed64(v) for v in values], np.int64).astype(np_dtype)
    return np.array(values, "<f4" if encoding == "f4" else "<f8")
