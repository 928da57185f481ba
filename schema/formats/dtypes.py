"""TensorFlow's DataType enum, named as `tf.DType.name` names it ("float32", "string",
"float32_ref"): the one dtype vocabulary of the store (tensors and tfdbg_v1_tensors alike)."""

# types.proto DataType values 1..33; a reference type is the value + 100 ("<name>_ref")
_NAMES = ("float32", "float64", "int32", "uint8", "int16", "int8", "string", "complex64",
          "int64", "bool", "qint8", "quint8", "qint32", "bfloat16", "qint16", "quint16",
          "uint16", "complex128", "float16", "resource", "variant", "uint32", "uint64",
          "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz",
          "float8_e5m2fnuz", "int4", "uint4", "int2", "uint2", "float4_e2m1fn")
_ENUM_NAMES = ("DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_UINT8", "DT_INT16", "DT_INT8",
               "DT_STRING", "DT_COMPLEX64", "DT_INT64", "DT_BOOL", "DT_QINT8", "DT_QUINT8",
               "DT_QINT32", "DT_BFLOAT16", "DT_QINT16", "DT_QUINT16", "DT_UINT16",
               "DT_COMPLEX128", "DT_HALF", "DT_RESOURCE", "DT_VARIANT", "DT_UINT32",
               "DT_UINT64", "DT_FLOAT8_E5M2", "DT_FLOAT8_E4M3FN", "DT_FLOAT8_E4M3FNUZ",
               "DT_FLOAT8_E4M3B11FNUZ", "DT_FLOAT8_E5M2FNUZ", "DT_INT4", "DT_UINT4",
               "DT_INT2", "DT_UINT2", "DT_FLOAT4_E2M1FN")
_BY_ENUM_NAME = {e: n for e, n in zip(_ENUM_NAMES, _NAMES)}
_BY_ENUM_NAME.update({e + "_REF": n + "_ref" for e, n in zip(_ENUM_NAMES, _NAMES)})


def name(enum):
    """The store's name of a DataType enum value; unknown values stay visible as dtype<N>."""
    base = enum % 100
    text = _NAMES[base - 1] if 1 <= base <= len(_NAMES) else f"dtype{base}"
    return text + "_ref" if enum > 100 else text


def from_enum_name(enum_name):
    """"DT_FLOAT" -> "float32" (store format 1 kept these names in the tensors table); a
    name that is not a DT_* name is returned as it is."""
    return _BY_ENUM_NAME.get(enum_name, enum_name)
