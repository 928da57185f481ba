"""The compiled part: schema/formats/_native*.c (the CPython C API, nothing else to build it
with). Everything else about the package is in pyproject.toml. `optional=True`: without a C
compiler the install still succeeds and the pure-Python twins run
(schema/formats/native.py says so once). TFBLACKBOX_NO_NATIVE=1 skips it."""

import os
import sys

from setuptools import Extension, setup

_DIR = "schema/formats"
# -ffp-contract=off: the histogram edges the decoder checks are computed as numpy computes them
_ARGS = [] if sys.platform == "win32" else ["-O2", "-std=c11", "-fvisibility=hidden",
                                             "-ffp-contract=off"]
_NATIVE = Extension(
    "tfblackbox.schema.formats._native",
    [f"{_DIR}/_native.c", f"{_DIR}/_native_wire.c", f"{_DIR}/_native_summary.c",
     f"{_DIR}/_native_events.c", f"{_DIR}/_native_chunk.c",
     f"{_DIR}/_native_codec.c", f"{_DIR}/_native_capture.c", f"{_DIR}/_native_slice.c"],
    depends=[f"{_DIR}/_native.h"], optional=True, extra_compile_args=_ARGS)

setup(ext_modules=[] if os.environ.get("TFBLACKBOX_NO_NATIVE") == "1" else [_NATIVE])
