"""The compiled part: schema/formats/_native.c (the CPython C API, nothing else to build it
with). Everything else about the package is in pyproject.toml. `optional=True`: without a C
compiler the install still succeeds and the pure-Python twins run
(schema/formats/native.py says so once)."""

import os
import sys

from setuptools import Extension, setup

_ARGS = [] if sys.platform == "win32" else ["-O2", "-std=c11", "-fvisibility=hidden"]

setup(ext_modules=[] if os.environ.get("TFBLACKBOX_NO_NATIVE") == "1" else [Extension(
    "tfblackbox.schema.formats._native", ["schema/formats/_native.c"], optional=True,
    extra_compile_args=_ARGS)])
