"""What `recorder.log` keeps of a value, by wandb.log's own rules (no TensorFlow, no wandb).

`encode(value)` returns (kind, payload):
    FLOAT, INT, BOOL  a number (Python, numpy, a 1-element array or tensor) -> the scalars table;
                      the kind is kept so a replay logs 3 as 3 and True as true, as wandb does
    JSON              a string, None, a list/tuple/dict of plain values, an array of at most 32
                      values (wandb.log sends these as a JSON list) -> the JSON text
    HIST              an array of more than 32 numbers -> a 32-bin histogram, as wandb.log
                      makes one (np.histogram(array, bins=32))
    WANDB             a wandb media object or a list of them: wandb_values.encode, which a
                      caller tries first
and raises Unloggable(reason) for anything else, the reason naming what was given and what
would have been taken.
"""

import json
import numbers

import numpy as np

from tfblackbox.schema.errors import BlackboxError

FLOAT, INT, BOOL, JSON, HIST, WANDB = "float", "int", "bool", "json", "hist", "wandb"
SCALAR_KINDS = (FLOAT, INT, BOOL)
MAX_LIST = 32      # wandb.log: an array of more values becomes a histogram
HIST_BINS = 32     # ... of this many bins (wandb.util.maybe_compress_history)
_EXACT_INT = 2 ** 53   # larger ints do not survive a float64 column: kept as JSON instead
_NUMERIC = "biuf"


class Unloggable(BlackboxError, ValueError):
    """A value recorder.log cannot keep; the message says what it was and what is taken."""


TAKES = ("a number, a numpy array or tensor, a string, None, a list or dict of those, or a "
         "wandb.Image/Audio/Html/Video/Table/Histogram")


def describe(value):
    t = type(value)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return name


class Histogram:
    """A histogram of an array whatever its size (recorder.log bins arrays of more than 32
    values only, as wandb.log): wandb.Histogram(values, num_bins) without wandb."""

    def __init__(self, values, num_bins=64):
        self.payload = histogram(np.asarray(values), bins=num_bins)


def encode(value):
    """(kind, payload) of one logged value; raises Unloggable."""
    t = type(value)
    if t is float:
        return FLOAT, value
    if t is Histogram:
        return HIST, value.payload
    if t is int:
        return (INT, value) if -_EXACT_INT <= value <= _EXACT_INT else (JSON, json.dumps(value))
    if t is bool:
        return BOOL, value
    if t is str:
        return JSON, json.dumps(value)
    return _encode_other(value)


def _encode_other(value):
    if value is None:
        return JSON, "null"
    if isinstance(value, np.generic):
        return _numpy_scalar(value)
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, bool):
        return BOOL, bool(value)
    if isinstance(value, numbers.Integral):
        return encode(int(value))
    if isinstance(value, numbers.Real):
        return FLOAT, float(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return JSON, json.dumps(bytes(value).decode("utf-8"))
        except UnicodeDecodeError:
            raise Unloggable("bytes that are not UTF-8 text (wandb.log sends bytes as text)") \
                from None
    if isinstance(value, str):
        return JSON, json.dumps(str(value))
    array = _as_array(value)
    if array is not None:
        return _array(array)
    if isinstance(value, (list, tuple, dict)):
        return JSON, json.dumps(plain(value))
    raise Unloggable(f"a value of type {describe(value)}; expected {TAKES}")


def _numpy_scalar(value):
    if isinstance(value, np.bool_):
        return BOOL, bool(value)
    if isinstance(value, np.integer):
        return encode(int(value))
    if isinstance(value, np.floating):
        return FLOAT, float(value)
    if isinstance(value, np.str_):
        return JSON, json.dumps(str(value))
    raise Unloggable(f"a numpy {value.dtype} scalar; expected a number")


def _array(a):
    if a.size == 1 and a.dtype.kind in _NUMERIC + "U":
        return encode(a.reshape(-1)[0])
    if a.size <= MAX_LIST:
        return JSON, json.dumps(plain(a))
    if a.dtype.kind not in "iuf":
        raise Unloggable(f"an array of {a.size} {a.dtype} values; an array of more than "
                         f"{MAX_LIST} values becomes a histogram, which needs numbers")
    return HIST, histogram(a)


def histogram(a, bins=HIST_BINS):
    """(counts, edges, num, min, max, sum, sum_squares) as wandb.Histogram(a, num_bins=bins)
    bins it; raises Unloggable for NaN or Inf, which np.histogram cannot bin."""
    flat = np.asarray(a).reshape(-1)
    with np.errstate(all="ignore"):
        finite = bool(np.isfinite(flat).all()) if flat.dtype.kind == "f" else True
    if not finite:
        raise Unloggable(f"an array of {flat.size} values with NaN or Inf, which cannot be "
                         f"binned into a histogram")
    counts, edges = np.histogram(flat, bins=bins)
    f64 = flat.astype(np.float64)
    return (counts.astype(np.float64), edges.astype(np.float64), float(flat.size),
            float(f64.min()), float(f64.max()), float(f64.sum()), float(np.dot(f64, f64)))


def _as_array(value):
    """A tensor's numpy value (TF eager tensors, Keras variables, torch, jax), else None."""
    numpy = getattr(value, "numpy", None)
    try:
        if callable(numpy):
            detach = getattr(value, "detach", None)   # torch: a tensor that requires grad
            return np.asarray((detach().cpu() if callable(detach) else value).numpy())
        if hasattr(value, "__array__") and not isinstance(value, (list, tuple, dict)):
            return np.asarray(value)
    except Exception as e:
        raise Unloggable(f"a {describe(value)} whose value could not be read ({e})") from e
    return None


def plain(value, depth=0):
    """A JSON-ready copy of a list/tuple/dict of plain values (numpy scalars and arrays of at
    most 32 values become numbers and lists, as wandb.log converts them)."""
    if depth > 32:
        raise Unloggable("a list or dict nested more than 32 levels deep")
    t = type(value)
    if value is None or t in (str, bool, int, float):
        return value
    if isinstance(value, np.generic):
        kind, payload = _numpy_scalar(value)
        return json.loads(payload) if kind == JSON else payload
    if isinstance(value, np.ndarray):
        if value.size > MAX_LIST:
            raise Unloggable(f"a list or dict holding an array of {value.size} values; log the "
                             f"array under its own key (it becomes a histogram)")
        if value.dtype.kind not in _NUMERIC + "U":
            raise Unloggable(f"a list or dict holding an array of dtype {value.dtype} (a "
                             f"ragged or object array)")
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise Unloggable(f"a dict with the non-string key {k!r}; keys must be strings")
            out[k] = plain(v, depth + 1)
        return out
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    array = _as_array(value)
    if array is not None:
        return plain(array, depth + 1)
    raise Unloggable(f"a list or dict holding a {describe(value)}; expected plain values "
                     f"(numbers, strings, None, lists, dicts)")


def json_value(value):
    """The JSON text of a summary or config value (plain values only); raises Unloggable."""
    kind, payload = encode(value)
    if kind in SCALAR_KINDS:
        return json.dumps(payload)   # NaN and Infinity as Python's json (and wandb) write them
    if kind == JSON:
        return payload
    raise Unloggable(f"a {describe(value)}: summary and config take plain values (numbers, "
                     f"strings, None, lists and dicts of them, arrays of at most {MAX_LIST})")
