"""The in-memory dump capture: native/capture.cc, built once per TensorFlow install.

TF's debug ops call a C++ callback for `memcbk://KEY` debug URLs. capture.cc registers such
callbacks and appends, for every watched tensor, the exact Event bytes that tfdbg's file://
path would write (checked byte for byte by the self-test below) to a per-key buffer, which the
hook takes after each session.run. Against one file per tensor on tmpfs this cuts the debug
ops' cost on the training thread by more than half and leaves no files to read back.

The library is compiled with the C++ compiler (`$CXX`, else g++ or c++) and TensorFlow's own
compile and link flags (tf.sysconfig, as for custom ops) into a cache dir
(`$TFBLACKBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/tfblackbox` or ~/.cache/tfblackbox), keyed by
the source, TensorFlow build and flags. A fresh build is used only after a self-test in a child
process (a crash there cannot take the training down) has compared its Events with TF's own
files. When there is no compiler, or the build or self-test fails, DumpHook says why once and
captures through files instead; a `capture-*.failed` file in the cache dir remembers the
failure (remove it to try again).
"""

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading

from tfblackbox.schema.errors import NativeCaptureUnavailable
from tfblackbox.schema.codecs.tfdbg_v1_codec import content_span
from tfblackbox.schema.formats import tfdbg_v1 as proto

# the records a take hands over, and their parsing (callers have always found them here)
from .capture_records import _DTYPES, _NAMES, Records, parse_records  # noqa: F401

log = logging.getLogger("tfblackbox")

NATIVE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native")
# compiled together into one library; the header is hashed with them (a build is keyed by all)
SOURCES = [os.path.join(NATIVE_DIR, n) for n in ("capture.cc", "capture_arena.cc",
                                                  "capture_event.cc")]
HEADERS = [os.path.join(NATIVE_DIR, n) for n in ("capture_arena.h", "capture_event.h",
                                                  "capture_sink.h")]
ABI_VERSION = 10
BUILD_TIMEOUT = 600
MODES = ("auto", "memory", "files")


# The family's class under the name this module has always raised
NativeUnavailable = NativeCaptureUnavailable


def cache_dir():
    root = os.environ.get("TFBLACKBOX_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "tfblackbox")
    return root


def _flags(tf):
    lib_dir = tf.sysconfig.get_lib()
    cc = os.path.join(lib_dir, "libtensorflow_cc.so.2")
    if not os.path.exists(cc):
        raise NativeUnavailable(f"{cc} not found (DebugCallbackRegistry lives there)")
    compile_flags = list(tf.sysconfig.get_compile_flags())
    link_flags = list(tf.sysconfig.get_link_flags()) + ["-l:libtensorflow_cc.so.2",
                                                        f"-Wl,-rpath,{lib_dir}"]
    return compile_flags, link_flags


def library_path(tf):
    compile_flags, link_flags = _flags(tf)
    h = hashlib.sha256()
    for source in SOURCES + HEADERS:
        with open(source, "rb") as f:
            h.update(os.path.basename(source).encode() + b"\0" + f.read())
    for part in (tf.__version__, tf.sysconfig.get_lib(), platform.machine(), *compile_flags,
                 *link_flags):
        h.update(b"\0" + str(part).encode())
    return os.path.join(cache_dir(), f"capture-{h.hexdigest()[:16]}.so")


_lock = threading.Lock()
_loaded: dict = {}        # library path -> Native, or NativeUnavailable


def load(tf, mode="auto"):
    """The Native capture, or None (mode "files", or "auto" when it cannot be had: logged once).
    Mode "memory" raises NativeUnavailable instead of falling back."""
    if mode not in MODES:
        raise ValueError(f"capture={mode!r}; expected one of {', '.join(MODES)}")
    if mode == "files":
        return None
    with _lock:
        try:
            path = library_path(tf)
        except Exception as e:   # flags, an unreadable source: whatever it is, files will do
            path, result = "?", _unavailable(e)
        else:
            result = _loaded.get(path)
            if result is None:
                try:
                    result = Native(_build(path))
                except Exception as e:   # an unwritable cache dir, a failed build, ...
                    result = _unavailable(e)
                    log.warning("tfblackbox: DumpHook captures through files: the in-memory "
                                "capture is not available: %s", result)
                _loaded[path] = result
    if isinstance(result, NativeUnavailable):
        if mode == "memory":
            raise result
        return None
    return result


def _unavailable(e):
    return e if isinstance(e, NativeUnavailable) else NativeUnavailable(f"{type(e).__name__}: {e}")


def _build(path):
    if os.path.exists(path):
        return path
    failed = path[:-3] + ".failed"
    if os.path.exists(failed):
        with open(failed, errors="replace") as f:
            reason = f.read().strip().splitlines()[-1:] or ["(no reason kept)"]
        raise NativeUnavailable(f"an earlier build failed ({reason[0]}); remove {failed} to "
                                "try again")
    import tensorflow as tf
    compile_flags, link_flags = _flags(tf)
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise NativeUnavailable("no C++ compiler found (set CXX, or install g++)")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _remove_dead_builds(os.path.dirname(path))
    tmp = f"{path}.{os.getpid()}.tmp"
    log.warning("tfblackbox: building the in-memory dump capture for TensorFlow %s (once per "
                "install, ~30 s) into %s", tf.__version__, path)
    cmd = [compiler, "-O2", "-shared", "-fPIC", "-w", *compile_flags, *SOURCES, "-o", tmp,
           *link_flags]
    try:
        _run(cmd, "compiling capture.cc", failed)
        _run([sys.executable, "-c", "import sys; from tfblackbox.recorder.tf1 import "
              "native_capture as n; sys.exit(n.self_test(sys.argv[1]))", tmp],
             "its self-test", failed)
        os.replace(tmp, path)            # atomic: a concurrent build replaces it with its twin
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _remove_dead_builds(folder):
    """Half-built libraries of build processes that were killed (`capture-*.so.<pid>.tmp`)."""
    for name in os.listdir(folder):
        parts = name.split(".")
        if name.startswith("capture-") and name.endswith(".tmp") and len(parts) >= 4:
            try:
                os.kill(int(parts[-2]), 0)
            except ProcessLookupError:
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass
            except (ValueError, OSError):
                pass


def _run(cmd, what, failed):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
               TF_CPP_MIN_LOG_LEVEL="3")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        reason = f"{what}: {e}"
    else:
        if done.returncode == 0:
            return
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-15:]
        reason = f"{what} failed (exit {done.returncode}): " + " | ".join(tail)
    with open(failed, "w") as f:
        f.write(" ".join(map(str, cmd)) + "\n" + reason + "\n")
    raise NativeUnavailable(reason)


class Native:
    """ctypes face of capture.cc; keys are registered once and never unregistered (TF aborts
    the process when a memcbk URL has no callback, and a cached executor keeps its URLs)."""

    def __init__(self, path):
        try:
            lib = ctypes.CDLL(path)
            lib.tfbb_register.argtypes = [ctypes.c_char_p]
            lib.tfbb_take.restype = ctypes.c_int64
            lib.tfbb_take.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_int64)]
            lib.tfbb_release.argtypes = [ctypes.c_void_p]
            lib.tfbb_fill.restype = ctypes.c_int64
            lib.tfbb_fill.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
            lib.tfbb_hold.argtypes = [ctypes.c_char_p, ctypes.c_int]
            lib.tfbb_close.argtypes = [ctypes.c_char_p]
            lib.tfbb_test_fail_next.argtypes = [ctypes.c_char_p, ctypes.c_int64]
            lib.tfbb_test_fail_fill.argtypes = [ctypes.c_char_p, ctypes.c_int64]
            lib.tfbb_register_discard.argtypes = [ctypes.c_char_p]
            lib.tfbb_discarded.restype = ctypes.c_int64
            lib.tfbb_discarded.argtypes = [ctypes.c_char_p]
            if lib.tfbb_abi_version() != ABI_VERSION:
                raise NativeUnavailable(f"{path} is not capture ABI {ABI_VERSION}")
            # tfbb_take runs after every dumped session.run for a few microseconds and waits
            # on nothing that needs Python: called holding the GIL (PyDLL), so the training
            # thread does not hand the GIL to the ingest thread there and wait to get it back
            take = ctypes.PyDLL(path).tfbb_take
            take.restype, take.argtypes = lib.tfbb_take.restype, lib.tfbb_take.argtypes
        except (OSError, AttributeError) as e:
            raise NativeUnavailable(f"cannot load {path}: {e}") from e
        self.path, self._lib, self._take = path, lib, take

    def register(self, key, hold=False):
        """memcbk://KEY. With hold (black-box mode) a plain tensor's content is not copied:
        the take keeps TF's tensor until it is released, or filled in (Records.fill)."""
        self._lib.tfbb_register(key.encode())
        self._lib.tfbb_hold(key.encode(), int(bool(hold)))
        return "memcbk://" + key

    def take(self, key):
        """(Records or None, tensors that could not be captured, DebugIdentity float tensors
        holding NaN or +-Inf) since the last take."""
        data, handle, counts = ctypes.c_void_p(), ctypes.c_void_p(), (ctypes.c_int64 * 3)()
        n = self._take(key.encode(), ctypes.byref(data), ctypes.byref(handle), counts)
        held, failed, nonfinite = counts
        records = None
        if n > 0:
            records = Records(self._lib, data.value, handle.value, n, held)
        return records, failed, nonfinite

    def close(self, key):
        self._lib.tfbb_close(key.encode())

    def register_discard(self, key):
        """memcbk://KEY whose callback keeps nothing (the capture's floor, tools/bench_blackbox):
        it only counts the tensors, see discarded()."""
        self._lib.tfbb_register_discard(key.encode())
        return "memcbk://" + key

    def discarded(self, key):
        """Tensors handed to the discarding KEY so far."""
        return self._lib.tfbb_discarded(key.encode())

    def fail_next(self, key, n):
        """Tests only: the next n tensors of `key` take the out-of-memory path."""
        self._lib.tfbb_test_fail_next(key.encode(), n)

    def fail_fill(self, key, n):
        """Tests only: the next n fills of `key`'s held takes run out of memory."""
        self._lib.tfbb_test_fail_fill(key.encode(), n)


def self_test(lib_path):
    """Runs a graph with every watched tensor sent both to a file:// dir (TF's own writer) and
    to the library; each captured Event must equal TF's file byte for byte once the wall time
    is TF's. Returns 0 when it does (the exit status of the build's child process)."""
    import tempfile

    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.debug.lib import debug_utils
    native = Native(lib_path)
    # black-box mode: the content is held and filled in (the other mode only copies it at
    # once), and NaN/Inf are counted
    url = native.register("tfblackbox-self-test", hold=True)
    g = tf.Graph()
    with g.as_default():
        x = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4))
        v = tf.compat.v1.get_variable("v", initializer=[1.5, -2.0], use_resource=True)
        fetches = [tf.matmul(x, x, transpose_b=True), tf.constant(["a", "", "xyz"]),
                   tf.constant(7, tf.int64), tf.cast(x, tf.float16), x > 3.0,
                   tf.zeros([0, 2]), tf.constant(2.5, tf.float64),
                   tf.constant([1.0, np.inf]), tf.constant([np.nan, 0.5], tf.float16),
                   v.read_value()]          # its handle: a DT_RESOURCE tensor
        init = v.initializer
    with tempfile.TemporaryDirectory() as root, tf.compat.v1.Session(graph=g) as sess:
        sess.run(init)
        # a first run to the library alone: the checked run's plain tensors then take the
        # records built once per watch (capture.cc's Prebuilt), which must match TF's too
        warm = config_pb2.RunOptions()
        debug_utils.watch_graph(warm, g, debug_urls=[url])
        sess.run(fetches, options=warm)
        first, _f, _n = native.take("tfblackbox-self-test")
        if first is None:
            print("self-test: the first run captured nothing")
            return 1
        first.release()
        options = config_pb2.RunOptions()
        debug_utils.watch_graph(options, g, debug_urls=["file://" + root, url])
        sess.run(fetches, options=options)
        files = {}
        for folder, _dirs, names in os.walk(root):
            for name in names:
                with open(os.path.join(folder, name), "rb") as f:
                    files[(os.path.relpath(folder, root), name)] = f.read()
        taken, failed, nonfinite = native.take("tfblackbox-self-test")
        records = parse_records(taken.fill().view) if taken else []
        for t in records:   # slices of the capture's buffer: compared as bytes
            t.data = bytes(t.data)
        if failed or not records:
            print(f"self-test: {len(records)} tensors captured, {failed} failed")
            return 1
        from .blackbox import first_nonfinite
        expected = sum(1 for t in records if first_nonfinite([t]) is not None)
        if nonfinite != expected or expected < 2:
            print(f"self-test: {nonfinite} tensors with NaN/Inf counted, numpy finds {expected}")
            return 1
        if "resource" not in {t.dtype for t in records}:
            print("self-test: no resource handle was captured")
            return 1
        for t in records:
            folder = os.path.join(t.device_dir, *t.node_name.split("/")[:-1]) or "."
            base = f"{t.node_name.split('/')[-1]}_{t.output_slot}_{t.debug_op}_"
            theirs = [v for (d, n), v in files.items() if d == os.path.normpath(folder)
                      and n.startswith(base) and n[len(base):].replace("-", "").isdigit()]
            ours = [t.data[:1] + v[1:9] + t.data[9:] for v in theirs]   # TF's wall time
            if not any(a == b for a, b in zip(ours, theirs)):
                print(f"self-test: the Event of {t.node_name}:{t.output_slot} differs from TF's")
                return 1
            if proto.tensor_info(t.data) != (t.dtype, list(t.shape)):
                print(f"self-test: dtype/shape of {t.node_name} differ from its Event's")
                return 1
            if (t.content if t.content[1] > t.content[0] else None) != content_span(t.data):
                print(f"self-test: the content span of {t.node_name} differs from its Event's")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(self_test(sys.argv[1]))
