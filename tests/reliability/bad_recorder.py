"""Bad input on the recording side. Arguments of init and the hooks must raise a BlackboxError,
ValueError or TypeError naming the value (and leave nothing half made behind); bad Summaries
fed through SummaryHook in a real training process must be kept or reported clearly while the
training goes on and exits 0, with every good value stored."""

import math
import os
import shutil
import sqlite3

from .common import Child, error_line, exit_text, make_dir, open_store, spans

GROUP = "bad-input"


def _clear_types():
    from tfblackbox.schema import BlackboxError
    return (BlackboxError, ValueError, TypeError)


def expect_raise(c, fn, needles):
    """fn() raises a clear error naming each needle."""
    from tfblackbox import recorder
    try:
        fn()
    except _clear_types() as e:
        missing = [n for n in needles if n not in str(e)]
        c.check(not missing, f"{type(e).__name__} does not name {missing}: {e}")
        return e
    except Exception as e:   # a foreign error type: not the project's family
        c.check(False, f"raised {type(e).__module__}.{type(e).__name__}, not a BlackboxError, "
                       f"ValueError or TypeError: {e}")
        return e
    finally:
        if recorder.active_run() is not None:
            recorder.finish()
    c.check(False, "no error was raised")
    return None


def _init(store, **kw):
    from tfblackbox import recorder
    return lambda: recorder.init(store=store, **kw)


def nothing_left_running(c, store):
    """A refused init leaves no run behind that would stay 'running' for ever."""
    if not os.path.exists(os.path.join(store, "catalog.sqlite")):
        return
    s, err = open_store(store)
    if s is None:
        return
    try:
        left = [r.run_id for r in s.runs() if r.status == "running"]
    finally:
        s.close()
    c.check(not left, f"the refused init left run(s) {left} 'running' in the store")


# -- init and hook arguments: (name, fn(c, ws, d)) -----------------------------------------------

def init_store_is_a_file(c, ws, d):
    path = os.path.join(d, "afile")
    open(path, "w").write("x")
    expect_raise(c, _init(path), [path])


def init_non_store_dir(c, ws, d):
    path = make_dir(os.path.join(d, "photos"))
    open(os.path.join(path, "cat.jpg"), "w").write("x")
    expect_raise(c, _init(path), [path])


def init_newer_format(c, ws, d):
    from .bad_cli import good_store
    store = os.path.join(d, "store")
    shutil.copytree(good_store(ws), store)
    with sqlite3.connect(os.path.join(store, "catalog.sqlite")) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    expect_raise(c, _init(store, run_id="good", resume="allow"), ["99"])


def init_bad_run_id(c, ws, d):
    expect_raise(c, _init(os.path.join(d, "store"), run_id="../escape"), ["'../escape'"])


def init_bad_resume(c, ws, d):
    expect_raise(c, _init(os.path.join(d, "store"), resume="sometimes"), ["'sometimes'"])


def init_config_not_a_dict(c, ws, d):
    expect_raise(c, _init(os.path.join(d, "store"), config=42), ["int"])


def init_bad_on_full(c, ws, d):
    store = os.path.join(d, "store")
    expect_raise(c, _init(store, on_full="sometimes"), ["'sometimes'"])
    nothing_left_running(c, store)


def init_bad_catalog_url(c, ws, d):
    store = os.path.join(d, "store")
    expect_raise(c, _init(store, catalog_url="nosuchdb://x/y"), ["nosuchdb://x/y"])


def _hook(name, **kw):
    def make():
        from tfblackbox import recorder
        return getattr(recorder, name)(**kw)
    return make


def summary_steps_per_log_0(c, ws, d):
    expect_raise(c, _hook("SummaryHook", steps_per_log=0), ["steps_per_log=0"])


def dump_every_n_0(c, ws, d):
    expect_raise(c, _hook("DumpHook", every_n_steps=0), ["every_n_steps=0"])


def dump_max_bytes_negative(c, ws, d):
    expect_raise(c, _hook("DumpHook", max_bytes=-1), ["max_bytes=-1"])


def dump_bad_steps(c, ws, d):
    expect_raise(c, _hook("DumpHook", steps="5:x"), ["5:x"])


def dump_bad_capture(c, ws, d):
    expect_raise(c, _hook("DumpHook", capture="telepathy"), ["'telepathy'"])


def dump_watch_fn_not_callable(c, ws, d):
    expect_raise(c, _hook("DumpHook", watch_fn="all of them"), ["watch_fn"])


# -- bad Summaries in a training process -------------------------------------------------------

def _summary_child(c, d, kind):
    """Runs worker.py summary KIND; returns (store or None, the child)."""
    store = os.path.join(d, "store")
    child = Child.worker(d, "summary", store, kind)
    code = child.wait()
    child.close()
    c.check(code == 0, f"training: {exit_text(code)}: {error_line(child.stderr())}")
    c.check(len(child.all("step")) == 5, f"training ran {len(child.all('step'))} of 5 steps")
    s, err = open_store(store)
    c.check(s is not None, err or "")
    if s is not None:
        good = _rows(s, "scalars", "good/steady")
        c.check(sorted(good) == list(range(5)),
                f"the good summary of the same steps was stored for steps {spans(good)}")
    return s, child


def _rows(s, table, tag):
    t = s.read("bad", table)
    return {st: row for st, row in zip(t["step"].to_pylist(), t.to_pylist()) if row["tag"] == tag}


def _logged(child, *words):
    lines = [ln for ln in child.stderr().splitlines()
             if ln.startswith(("LOG WARNING", "LOG ERROR"))]
    return [ln for ln in lines if all(w in ln for w in words)]


def summary_non_utf8_tag(c, ws, d):
    s, child = _summary_child(c, d, "non-utf8-tag")
    if s is None:
        return
    with s:
        for tag in ("good/a", "good/b"):
            got = _rows(s, "scalars", tag)
            c.check(sorted(got) == list(range(5)), f"{tag}, logged beside the non-UTF-8 tag, "
                    f"was stored for steps {spans(got)} of 0-4")
        tags = set(s.read("bad", "scalars")["tag"].to_pylist())
        kept = [t for t in tags if t.startswith("bad/")]
        c.check(kept or _logged(child, "bad/"), "the value with the non-UTF-8 tag was neither "
                "stored nor reported naming its tag")


def summary_not_a_protobuf(c, ws, d):
    s, child = _summary_child(c, d, "not-a-protobuf")
    if s is not None:
        s.close()
    c.check(_logged(child), "bytes that are no Summary were not reported")


def summary_nan_inf(c, ws, d):
    s, child = _summary_child(c, d, "nan-inf")
    if s is None:
        return
    with s:
        for tag, ok in (("nan", math.isnan), ("pinf", lambda v: v == math.inf),
                        ("ninf", lambda v: v == -math.inf)):
            got = _rows(s, "scalars", tag)
            bad = [st for st, r in got.items() if not ok(r["value"])]
            c.check(len(got) == 5 and not bad, f"{tag}: {len(got)} rows of 5, changed at steps "
                                               f"{spans(bad)}")


def summary_huge_tag(c, ws, d):
    s, child = _summary_child(c, d, "huge-tag")
    if s is None:
        return
    with s:
        huge = _rows(s, "scalars", "h" * 200_000)
        c.check(len(huge) == 5 or _logged(child, "hhhhhhhh"), f"the 200 000-character tag: "
                f"{len(huge)} rows of 5 and no warning naming it")
        good = _rows(s, "scalars", "good/c")
        c.check(len(good) == 5, f"good/c beside it: {len(good)} rows of 5")


def summary_0d_string(c, ws, d):
    s, child = _summary_child(c, d, "0d-string-text")
    if s is None:
        return
    with s:
        got = _rows(s, "media", "note")
        data = {r["data"] for r in got.values()}
        c.check(len(got) == 5 and data == {b"hello 0-d"},
                f"the 0-d string text summary: {len(got)} rows of 5, data {sorted(data)[:2]}")


CASES = [
    ("init-store-is-a-file", init_store_is_a_file),
    ("init-non-store-dir", init_non_store_dir),
    ("init-store-newer-format", init_newer_format),
    ("init-bad-run-id", init_bad_run_id),
    ("init-bad-resume", init_bad_resume),
    ("init-config-not-a-dict", init_config_not_a_dict),
    ("init-bad-on-full", init_bad_on_full),
    ("init-bad-catalog-url", init_bad_catalog_url),
    ("summaryhook-steps-per-log-0", summary_steps_per_log_0),
    ("dumphook-every-n-steps-0", dump_every_n_0),
    ("dumphook-max-bytes-negative", dump_max_bytes_negative),
    ("dumphook-bad-steps-spec", dump_bad_steps),
    ("dumphook-bad-capture", dump_bad_capture),
    ("dumphook-watch-fn-not-callable", dump_watch_fn_not_callable),
    ("summary-non-utf8-tag", summary_non_utf8_tag),
    ("summary-not-a-protobuf", summary_not_a_protobuf),
    ("summary-nan-inf", summary_nan_inf),
    ("summary-huge-tag", summary_huge_tag),
    ("summary-0d-string-text", summary_0d_string),
]
