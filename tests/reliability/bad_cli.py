"""Bad input to the command line: each kind must end with a clear error (exit 2 for bad usage or
input, 1 for damage `verify` finds) whose message names the offending value, and never with a
traceback. The commands run as a user runs them (the `tfblackbox` console script)."""

import os
import shutil
import sqlite3

from .common import cli, error_line, exit_text, has_traceback, make_dir, tail

GROUP = "bad-input"


def expect_cli(c, args, needles, codes=(2,), env=None, unprivileged=False):
    p = cli(*args, env=env, unprivileged=unprivileged)
    text = p.stderr + p.stdout
    if has_traceback(p.stderr):
        c.check(False, f"a traceback ({exit_text(p.returncode)}): {error_line(p.stderr)}")
        return p
    c.check(p.returncode in codes, f"{exit_text(p.returncode)}, expected exit "
            f"{' or '.join(map(str, codes))}: {tail(text, 200)}")
    missing = [n for n in needles if n not in text]
    c.check(not missing, f"the message does not name {missing}: {tail(text, 200)}")
    return p


def good_store(ws):
    """A finished store with one run "good" (scalars in two segments)."""
    def build():
        from tfblackbox import recorder
        path = os.path.join(ws.new("bad-input-good-store"), "store")
        run = recorder.init(store=path, run_id="good", compact_on_finish=False)
        for lo in (0, 10):
            run.submit(lambda b, lo=lo: [b.add_scalar(i, float(i), "x", 1.0)
                                         for i in range(lo, lo + 10)])
            run.flush()
        recorder.finish()
        return path
    return ws.cached("bad-input-good-store", build)


def store_copy(ws, d):
    dst = os.path.join(d, "store")
    shutil.copytree(good_store(ws), dst)
    return dst


def first_segment(store):
    from tfblackbox.schema import Store
    s = Store.open(store)
    try:
        return os.path.join(store, s.segments("good")[0].path)
    finally:
        s.close()


def dump_session_root(ws, d):
    """A tfdbg session root (DumpingDebugHook's layout), rebuilt from recorded dumps."""
    from .kill_replay_dumps import recorded
    _store, ref, *_ = recorded(ws)
    root = os.path.join(d, "session-root")
    shutil.copytree(ref, root)
    return root


# -- the cases: (name, fn(c, ws, d)) ------------------------------------------------------------

def store_is_a_file(c, ws, d):
    path = os.path.join(d, "afile")
    open(path, "w").write("not a store")
    expect_cli(c, ["runs", "--store", path], [path])


def store_not_a_store(c, ws, d):
    make_dir(os.path.join(d, "photos"))
    open(os.path.join(d, "photos", "cat.jpg"), "w").write("x")
    expect_cli(c, ["runs", "--store", os.path.join(d, "photos")], ["catalog.sqlite"])


def store_missing(c, ws, d):
    path = os.path.join(d, "no", "such", "store")
    expect_cli(c, ["verify", "--store", path], [path])


def newer_format(c, ws, d):
    store = store_copy(ws, d)
    with sqlite3.connect(os.path.join(store, "catalog.sqlite")) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    expect_cli(c, ["runs", "--store", store], ["99"])


def garbage_catalog(c, ws, d):
    store = store_copy(ws, d)
    for x in ("", "-wal", "-shm"):
        if os.path.exists(os.path.join(store, "catalog.sqlite" + x)):
            os.remove(os.path.join(store, "catalog.sqlite" + x))
    open(os.path.join(store, "catalog.sqlite"), "wb").write(os.urandom(8192))
    expect_cli(c, ["runs", "--store", store], ["catalog.sqlite"])


def empty_catalog(c, ws, d):
    store = make_dir(os.path.join(d, "store"))
    open(os.path.join(store, "catalog.sqlite"), "wb").close()
    expect_cli(c, ["runs", "--store", store], [store])


def truncated_segment_verify(c, ws, d):
    store = store_copy(ws, d)
    seg = first_segment(store)
    os.truncate(seg, os.path.getsize(seg) // 2)
    expect_cli(c, ["verify", "--store", store], [os.path.basename(seg)], codes=(1,))


def truncated_segment_show(c, ws, d):
    store = store_copy(ws, d)
    seg = first_segment(store)
    os.truncate(seg, os.path.getsize(seg) // 2)
    expect_cli(c, ["show", "good", "--store", store], [os.path.basename(seg)], codes=(1, 2))


def deleted_segment_verify(c, ws, d):
    store = store_copy(ws, d)
    seg = first_segment(store)
    os.remove(seg)
    expect_cli(c, ["verify", "--store", store], [os.path.basename(seg)], codes=(1,))


def deleted_segment_replay(c, ws, d):
    store = store_copy(ws, d)
    seg = first_segment(store)
    os.remove(seg)
    expect_cli(c, ["replay", "--store", store, "--to", "wandb", "--mode", "offline",
                   "--wandb-dir", os.path.join(d, "wandb"), "--no-progress"],
               [os.path.basename(seg)], codes=(1, 2))


def unknown_run_show(c, ws, d):
    expect_cli(c, ["show", "nosuchrun", "--store", good_store(ws)], ["nosuchrun"])


def unknown_run_replay(c, ws, d):
    expect_cli(c, ["replay", "--store", good_store(ws), "--to", "wandb", "--mode", "offline",
                   "--wandb-dir", os.path.join(d, "wandb"), "--run", "nosuchrun"], ["nosuchrun"])


def empty_store_replay(c, ws, d):
    from tfblackbox.schema import Store
    store = os.path.join(d, "empty")
    Store.create(store).close()
    expect_cli(c, ["replay", "--store", store, "--to", "wandb", "--mode", "offline",
                   "--wandb-dir", os.path.join(d, "wandb")], ["no runs"])


def _dump_replay(ws, d, *extra, out=None):
    from .kill_replay_dumps import recorded
    store = recorded(ws)[0]   # with dumps, so that a replay gets as far as writing
    return ["replay", "--store", store, "--to", "debug-dump",
            "--out", out or os.path.join(d, "out"), *extra]


def bad_steps(c, ws, d):
    expect_cli(c, _dump_replay(ws, d, "--steps", "a:b"), ["a:b"])


def bad_node_regex(c, ws, d):
    expect_cli(c, _dump_replay(ws, d, "--node", "(unclosed"), ["(unclosed"])


def out_dangling_link(c, ws, d):
    link = os.path.join(d, "out-link")
    os.symlink(os.path.join(d, "gone", "away"), link)
    expect_cli(c, _dump_replay(ws, d, out=link), [link])


def out_is_a_file(c, ws, d):
    path = os.path.join(d, "out-file")
    open(path, "w").write("x")
    expect_cli(c, _dump_replay(ws, d, out=path), [path])


def out_unwritable(c, ws, d):
    out = make_dir(os.path.join(d, "out-ro"), mode=0o555)
    expect_cli(c, _dump_replay(ws, d, out=out), [out], unprivileged=True)


def _wandb_replay(ws, wdir):
    return ["replay", "--store", good_store(ws), "--to", "wandb", "--mode", "offline",
            "--wandb-dir", wdir, "--no-progress"]


def wandb_dir_is_a_file(c, ws, d):
    path = os.path.join(d, "wandb-file")
    open(path, "w").write("x")
    expect_cli(c, _wandb_replay(ws, path), [path])


def wandb_dir_dangling_link(c, ws, d):
    link = os.path.join(d, "wandb-link")
    os.symlink(os.path.join(d, "gone", "away"), link)
    expect_cli(c, _wandb_replay(ws, link), [link])


def wandb_dir_unwritable(c, ws, d):
    wdir = make_dir(os.path.join(d, "wandb-ro"), mode=0o555)
    expect_cli(c, _wandb_replay(ws, wdir), [wdir], unprivileged=True)


def replay_to_bogus(c, ws, d):
    expect_cli(c, ["replay", "--store", good_store(ws), "--to", "bogus"], ["bogus"])


def missing_out(c, ws, d):
    expect_cli(c, ["replay", "--store", good_store(ws), "--to", "debug-dump"], ["--out"])


def online_without_credentials(c, ws, d):
    from .common import child_env
    home = make_dir(os.path.join(d, "home"))
    env = {k: v for k, v in child_env(HOME=home).items()
           if k not in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_IDENTITY_TOKEN_FILE")}
    expect_cli(c, ["replay", "--store", good_store(ws), "--to", "wandb", "--mode", "online",
                   "--wandb-dir", os.path.join(d, "wandb")], ["credentials"], env=env)


def import_not_a_session_root(c, ws, d):
    root = make_dir(os.path.join(d, "not-a-root"))
    make_dir(os.path.join(root, "checkpoints"))
    expect_cli(c, ["import-dumps", root, "--store", os.path.join(d, "store")], ["checkpoints"])


def import_stray_file(c, ws, d):
    root = dump_session_root(ws, d)
    open(os.path.join(root, "README.txt"), "w").write("stray")
    expect_cli(c, ["import-dumps", root, "--store", os.path.join(d, "store")], ["README.txt"])


def import_missing_root(c, ws, d):
    root = os.path.join(d, "no-such-root")
    expect_cli(c, ["import-dumps", root, "--store", os.path.join(d, "store")], [root])


def grace_not_a_number(c, ws, d):
    expect_cli(c, ["verify", "--store", good_store(ws), "--grace", "soon"], ["soon"])


def show_without_run(c, ws, d):
    expect_cli(c, ["show", "--store", good_store(ws)], ["run_id"])


CASES = [
    ("cli-store-is-a-file", store_is_a_file),
    ("cli-store-not-a-store", store_not_a_store),
    ("cli-store-missing", store_missing),
    ("cli-store-newer-format", newer_format),
    ("cli-catalog-garbage", garbage_catalog),
    ("cli-catalog-empty-file", empty_catalog),
    ("cli-segment-truncated-verify", truncated_segment_verify),
    ("cli-segment-truncated-show", truncated_segment_show),
    ("cli-segment-deleted-verify", deleted_segment_verify),
    ("cli-segment-deleted-replay", deleted_segment_replay),
    ("cli-unknown-run-show", unknown_run_show),
    ("cli-unknown-run-replay", unknown_run_replay),
    ("cli-empty-store-replay", empty_store_replay),
    ("cli-bad-steps", bad_steps),
    ("cli-bad-node-regex", bad_node_regex),
    ("cli-out-dangling-symlink", out_dangling_link),
    ("cli-out-is-a-file", out_is_a_file),
    ("cli-out-unwritable", out_unwritable),
    ("cli-wandb-dir-is-a-file", wandb_dir_is_a_file),
    ("cli-wandb-dir-dangling-symlink", wandb_dir_dangling_link),
    ("cli-wandb-dir-unwritable", wandb_dir_unwritable),
    ("cli-replay-to-bogus", replay_to_bogus),
    ("cli-debug-dump-without-out", missing_out),
    ("cli-online-without-credentials", online_without_credentials),
    ("cli-import-dumps-not-a-session-root", import_not_a_session_root),
    ("cli-import-dumps-stray-file", import_stray_file),
    ("cli-import-dumps-missing-root", import_missing_root),
    ("cli-verify-grace-not-a-number", grace_not_a_number),
    ("cli-show-without-run", show_without_run),
]
