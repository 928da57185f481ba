"""The last lines a run printed (the `console` table: stdout and stderr, one row per line), as
a terminal would show them: a `\\r` progress bar keeps only its last state, colour codes
(ANSI escapes) are dropped. Every attempt's lines, in the order they were written."""

import re

LAST_LINES = 100
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def last_lines(store, run_id, n=LAST_LINES):
    """{"lines": [(stream, text)] (the last n), "total": lines in all} or None (no console)."""
    if not store.segments(run_id, "console"):
        return None
    cols = ["attempt", "seq", "tag", "text"]
    t = store.read(run_id, "console", columns=cols, latest_only=False)
    if t.num_rows == 0:
        return None
    rows = sorted(zip(*(t[c].to_pylist() for c in cols)), key=lambda r: r[:2])
    lines, open_line = [], None   # open_line: the stream whose line has no "\n" yet
    for _attempt, _seq, stream, text in rows:
        parts = text.split("\n")
        if open_line == stream and lines:
            lines[-1] = (stream, lines[-1][1] + parts[0])
            parts = parts[1:]
        lines.extend((stream, p) for p in parts)
        open_line = stream
        if text.endswith("\n"):
            lines.pop()   # the empty text after the last "\n"
            open_line = None
    shown = [(s, _as_shown(text)) for s, text in lines]
    return {"lines": shown[-n:], "total": len(shown)}


def _as_shown(line):
    """What a terminal leaves of a line: the text after its last carriage return."""
    line = _ANSI.sub("", line)
    if "\r" in line.rstrip("\r"):
        line = line.rstrip("\r").rsplit("\r", 1)[1]
    return line.rstrip("\r")
