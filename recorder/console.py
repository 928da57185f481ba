"""Console capture: what the training process writes to sys.stdout and sys.stderr, recorded.

As wandb's `console="wrap"` (its default, "auto"), the `write` method of the two stream
objects is wrapped: the original write runs first and its result is returned, so the terminal,
tqdm bars and print behave as before; then the text written is added to a per-stream line
buffer. A completed line (ending in "\\n", with any "\\r" progress updates in it) becomes one
console row with the time its first character was written; a partial line becomes a row when
the other stream is written to, when more is written to it PARTIAL_SECS after it began, at
`recorder.flush()` and at `finish`. So the rows, concatenated in order, are exactly what was
written, and a replay sends them as W&B's raw console records (wandb then writes the run's
output.log).
Output written by C++ code straight to the file descriptors (TensorFlow's own logging) is not
seen, as with wandb's wrap mode.
"""

import logging
import sys
import threading
import time

from .log_rows import console_job

log = logging.getLogger("tfblackbox")

STREAMS = ("stdout", "stderr")
PARTIAL_SECS = 2.0


class ConsoleCapture:
    def __init__(self, run):
        self.run = run
        self._lock = threading.Lock()
        self._local = threading.local()
        self._parts = {name: [] for name in STREAMS}
        self._since = {name: 0.0 for name in STREAMS}
        self._current = None
        self._held = []            # lines from the writer thread, submitted by another thread
        self._patched = []         # (stream object, previous instance write or None, ours)
        self.active = False
        self.lines = 0

    def start(self):
        self.active = True
        for name in STREAMS:
            stream = getattr(sys, name, None)
            if stream is None:
                continue
            try:
                self._patch(name, stream)
            except (AttributeError, TypeError) as e:
                log.warning("tfblackbox: sys.%s (%s) cannot be wrapped (%s); its output is not "
                            "recorded", name, type(stream).__name__, e)

    def _patch(self, name, stream):
        previous = vars(stream).get("write") if hasattr(stream, "__dict__") else None
        inner = stream.write

        def write(text, /):
            n = inner(text)
            if self.active:
                self._on_write(name, text, n)
            return n

        stream.write = write
        self._patched.append((stream, previous, write))

    def stop(self):
        """Emits what is buffered and unwraps the streams (or, if something else wrapped them
        on top of us since, leaves a pass-through)."""
        self.emit_partial()
        self.active = False
        for stream, previous, ours in self._patched:
            try:
                if vars(stream).get("write") is ours:
                    if previous is None:
                        del stream.write
                    else:
                        stream.write = previous
            except (AttributeError, TypeError):
                pass
        self._patched = []

    def _on_write(self, name, text, n):
        if getattr(self._local, "busy", False):
            return      # a warning printed while recording a line: not recorded again
        self._local.busy = True
        try:
            if isinstance(text, (bytes, bytearray)):
                text = bytes(text).decode("utf-8", "replace")
            if not isinstance(text, str) or not text:
                return
            if isinstance(n, int) and 0 <= n < len(text):
                text = text[:n]
            with self._lock:
                self._add(name, text, time.time())
        except Exception as e:   # never break the user's print
            log.debug("tfblackbox: console capture failed: %s", e)
        finally:
            self._local.busy = False

    def _add(self, name, text, now):
        if self._current not in (None, name) and self._parts[self._current]:
            self._emit_buffered(self._current)
        self._current = name
        parts = self._parts[name]
        if not parts:
            self._since[name] = now
        parts.append(text)
        if "\n" in text:
            whole = "".join(parts)
            parts.clear()
            cut = whole.rfind("\n") + 1
            for line in whole[:cut].split("\n")[:-1]:
                self._emit(name, line + "\n")
            if cut < len(whole):
                parts.append(whole[cut:])
                self._since[name] = now
        elif now - self._since[name] > PARTIAL_SECS:
            self._emit_buffered(name)

    def _emit_buffered(self, name):
        text = "".join(self._parts[name])
        self._parts[name].clear()
        self._emit(name, text)

    def _emit(self, name, text):
        """Called with the lock held: one console row."""
        if not text.isascii():   # Arrow strings must be valid UTF-8 (lone surrogates)
            text = text.encode("utf-8", "replace").decode("utf-8")
        run = self.run
        job = console_job(run.step, self._since[name], next(run._seq), name, text)
        self.lines += 1
        if threading.current_thread() is self._writer_thread():
            self._held.append((job, len(text)))   # the writer must not wait on its own queue
            return
        while self._held:
            run.submit(*self._held.pop(0))
        run.submit(job, len(text))

    def _writer_thread(self):
        return getattr(self.run.writer, "_thread", None)

    def emit_partial(self):
        with self._lock:
            for name in STREAMS:
                if self._parts[name]:
                    self._emit_buffered(name)
            if self._held and threading.current_thread() is not self._writer_thread():
                while self._held:
                    self.run.submit(*self._held.pop(0))
