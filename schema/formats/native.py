"""The compiled twin of the per-record paths (_native.c, built by `pip install` when a C
compiler is there), or None: then the pure-Python paths run, and a one-line notice says so
once, at first use. TFBLACKBOX_PURE_PYTHON=1 forces the pure paths (tests and benches run
both); it is read at every call, so a test can switch it.

What it covers, each with its pure twin (the spec: the tests hold them to the same rows):
frame() <- tfrecord.RecordReader's loop, decode_events() <- tfevents_decode's per-step kinds
(a scalar or histogram tensor, simple_value, Events without a summary) and their raw rows,
summary_values() <- summary_decode's simple_value / histo fast path. Anything else stops it,
and the pure path decodes that record or value. codec_planes() <- the dump codec's numpy
residuals and byte planes (codecs/tfdbg_v1_codec.py).
"""

import logging
import os

log = logging.getLogger("tfblackbox")

ABI = 4                 # _native.h's TFBB_NATIVE_ABI: the build these sources call
_module = None
_state = "untried"      # "untried", "loaded", "missing"


def module():
    """The extension module, or None for the pure-Python paths."""
    global _module, _state
    if os.environ.get("TFBLACKBOX_PURE_PYTHON") == "1":
        return None
    if _state == "untried":
        try:
            import numpy as np

            from . import _native
            if getattr(_native, "ABI", 1) != ABI:
                raise ImportError(f"the build there is of other sources: ABI "
                                  f"{getattr(_native, 'ABI', 1)}, these need {ABI}")
            _native.setup(np.frombuffer)
            _module, _state = _native, "loaded"
        except ImportError as e:
            _state = "missing"
            log.warning("tfblackbox: the compiled decoder (tfblackbox.schema.formats._native) "
                        "is not built (%s); tfevents and summaries are decoded in pure Python, "
                        "slower (reinstall with a C compiler to build it)", e)
    return _module


def available():
    """Whether the extension loads (regardless of TFBLACKBOX_PURE_PYTHON)."""
    try:
        from . import _native
    except ImportError:
        return False
    return getattr(_native, "ABI", 1) == ABI
