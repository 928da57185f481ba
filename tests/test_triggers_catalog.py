"""The catalog side of black-box mode (issue 17): each trigger that fired is a `triggers` row
(format 4), recorded once even when the commit's answer is lost, shown by `tfblackbox show`
and carried along by `tfblackbox merge` with its attempt's writer id remapped."""

import contextlib
import dataclasses
import datetime
import json
import logging
import socket
import threading
import time

import numpy as np
import pytest

from tfblackbox.cli.main import main as cli
from tfblackbox.schema import RunNotFoundError, Store, TriggerRecord
from tfblackbox.schema.store.triggers import TRIGGER_KINDS
from helpers import scalars

NAN_REASON = "NaN or Inf in 'log:0' (DebugIdentity) at step 12"


def run_with_attempts(store, run_id, attempts=2, host="h"):
    store.create_run(run_id, project="p", host=host)
    writers = [store.begin_attempt(run_id, host, 100 + i)[0] for i in range(attempts)]
    return writers


def when(ts):
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def test_triggers_are_recorded_and_read_back_in_order(tmp_path):
    store = Store.create(str(tmp_path / "s"))
    w1, w2 = run_with_attempts(store, "r")
    run_with_attempts(store, "other", attempts=1)
    t0 = time.time()
    a = store.record_trigger("r", w2, "nan", NAN_REASON, step=np.int64(12), first_step=3,
                             last_step=np.int64(12), steps_written=10)
    t1 = time.time()
    b = store.record_trigger("r", w1, "exception", "ValueError: bad batch\n  in step()",
                             fired_at=1000.25)
    c = store.record_trigger("r", None, "callable", "user check", step=0, steps_written=0)
    store.record_trigger("other", None, "signal", "SIGTERM", step=4)
    assert a < b < c
    got = Store.open(str(tmp_path / "s")).triggers("r")
    assert [t.trigger_id for t in got] == [a, b, c]
    first = got[0]
    assert isinstance(first, TriggerRecord)
    assert (first.run_id, first.writer_id, first.step, first.kind, first.reason,
            first.first_step, first.last_step, first.steps_written) == (
        "r", w2, 12, "nan", NAN_REASON, 3, 12, 10)
    assert type(first.step) is int and t0 <= first.fired_at <= t1
    assert got[1] == TriggerRecord(b, "r", w1, None, "exception",
                                   "ValueError: bad batch\n  in step()", 1000.25, None, None, 0)
    assert (got[2].writer_id, got[2].step, got[2].kind) == (None, 0, "callable")
    assert [t.kind for t in store.triggers("other")] == ["signal"]
    assert store.triggers("no-such-run") == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.kind = "spike"


def test_bad_triggers_are_refused_naming_the_value_and_nothing_is_written(tmp_path):
    store = Store.create(str(tmp_path / "s"))
    [w] = run_with_attempts(store, "r", attempts=1)
    [other_w] = run_with_attempts(store, "o", attempts=1)
    with pytest.raises(ValueError, match=r"trigger kind 'NaN' is unknown; expected one of "
                                         r"nan, exception, signal, spike, callable"):
        store.record_trigger("r", w, "NaN", NAN_REASON)
    with pytest.raises(ValueError, match=r"step='12' is not an integer"):
        store.record_trigger("r", w, "nan", NAN_REASON, step="12")
    with pytest.raises(ValueError, match=r"first_step=9 is after last_step=3"):
        store.record_trigger("r", w, "spike", "x", first_step=9, last_step=3, steps_written=2)
    with pytest.raises(ValueError, match=r"steps_written=-1"):
        store.record_trigger("r", w, "spike", "x", steps_written=-1)
    with pytest.raises(ValueError, match=r"reason None is not a string"):
        store.record_trigger("r", w, "spike", None)
    with pytest.raises(ValueError, match=rf"writer_id {other_w} is not an attempt of run 'r'.*"
                                         r"one of run 'o'"):
        store.record_trigger("r", other_w, "signal", "SIGINT")
    with pytest.raises(ValueError, match=r"writer_id 999 is not an attempt of run 'r'"):
        store.record_trigger("r", 999, "signal", "SIGINT")
    with pytest.raises(RunNotFoundError, match=r"run 'ghost' is not in store.*signal trigger"):
        store.record_trigger("ghost", None, "signal", "SIGINT")
    assert store.triggers("r") == [] and store.triggers("o") == []
    assert set(TRIGGER_KINDS) == {"nan", "exception", "signal", "spike", "callable"}


def test_show_lists_a_runs_triggers_and_says_nothing_of_none(tmp_path, capsys):
    root = str(tmp_path / "s")
    store = Store.create(root)
    w1, w2 = run_with_attempts(store, "r")
    store.write_segment("r", "scalars", scalars([0, 1, 2], 1), w1)
    store.record_trigger("r", w2, "nan", NAN_REASON, step=12, fired_at=1700000000.0,
                         first_step=3, last_step=12, steps_written=10)
    store.record_trigger("r", None, "exception", "RuntimeError: out of memory\nwhile stepping",
                         fired_at=1700000100.0)
    [q] = run_with_attempts(store, "quiet", attempts=1)
    store.write_segment("quiet", "scalars", scalars([0], 1), q)

    assert cli(["show", "r", "--store", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  trigger "))
    assert lines[start - 1].startswith("  attempt 2: pid 101")
    assert lines[start:start + 3] == [
        f"  trigger nan at step 12 (attempt 2): fired {when(1700000000.0)}, wrote 10 step(s) "
        f"3..12: {NAN_REASON}",
        f"  trigger exception: fired {when(1700000100.0)}, wrote no steps: RuntimeError: out "
        f"of memory",
        "      while stepping"]
    assert lines[start + 3].startswith("  size ")

    assert cli(["show", "r", "--store", root, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["triggers"]
    assert [(t["kind"], t["step"], t["writer_id"], t["first_step"], t["last_step"],
             t["steps_written"], t["fired_at"], t["reason"]) for t in shown] == [
        ("nan", 12, w2, 3, 12, 10, 1700000000.0, NAN_REASON),
        ("exception", None, None, None, None, 0, 1700000100.0,
         "RuntimeError: out of memory\nwhile stepping")]

    assert cli(["show", "quiet", "--store", root]) == 0
    out = capsys.readouterr().out
    assert "attempt 1" in out and "trigger" not in out
    assert cli(["show", "quiet", "--store", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["triggers"] == []


def test_merge_carries_triggers_with_writer_ids_remapped_and_only_once(tmp_path, capsys):
    a = Store.create(str(tmp_path / "a"))
    run_with_attempts(a, "first", attempts=1, host="ha")          # takes dest writer id 1
    b = Store.create(str(tmp_path / "b"))
    b1, b2 = run_with_attempts(b, "r", host="hb")                 # source writer ids 1 and 2
    b.write_segment("r", "scalars", scalars([0, 1], 2), b2)
    b.record_trigger("r", b2, "spike", "loss 40.0 > 10 x its mean 3.1", step=1,
                     fired_at=50.5, first_step=0, last_step=1, steps_written=2)
    b.record_trigger("r", None, "signal", "SIGTERM", fired_at=60.0)
    dst = str(tmp_path / "dst")
    assert cli(["merge", a.root, b.root, "--into", dst, "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)["sources"]
    assert [r["triggers_copied"] for r in reports] == [0, 2]
    d = Store.open(dst)
    attempt_of = {w.writer_id: w.attempt for w in d.writers("r")}
    assert 1 not in attempt_of                                    # the ids did shift
    got = d.triggers("r")
    assert [(attempt_of.get(t.writer_id), t.kind, t.step, t.fired_at, t.first_step,
             t.last_step, t.steps_written, t.reason) for t in got] == [
        (2, "spike", 1, 50.5, 0, 1, 2, "loss 40.0 > 10 x its mean 3.1"),
        (None, "signal", None, 60.0, None, None, 0, "SIGTERM")]
    assert got[1].writer_id is None and d.triggers("first") == []

    assert cli(["merge", b.root, "--into", dst]) == 0             # again: nothing new
    assert "0 trigger(s)" in capsys.readouterr().out
    assert len(d.triggers("r")) == 2
    b.record_trigger("r", b1, "nan", NAN_REASON, step=12, fired_at=70.0)
    assert cli(["merge", b.root, "--into", dst, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"][0]["triggers_copied"] == 1
    [new] = [t for t in d.triggers("r") if t.kind == "nan"]
    assert attempt_of[new.writer_id] == 1 and len(d.triggers("r")) == 3


class CommitAnswerLost:
    """A TCP proxy to the PostgreSQL server that, once armed, passes the client's COMMIT on
    and then cuts the connection before the server's answer gets back: the transaction
    committed, and the client saw its connection drop (what a failover or a network cut at
    the wrong moment does)."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed, self.cut = False, 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            state = {"eat": False}
            threading.Thread(target=self._pump, args=(client, server, state, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, state, False),
                             daemon=True).start()

    def _pump(self, src, dst, state, upward):
        try:
            while chunk := src.recv(65536):
                if upward and self.armed and chunk.startswith(b"Q") and b"COMMIT\0" in chunk:
                    self.armed, state["eat"] = False, True
                elif not upward and state["eat"]:
                    self.cut += 1       # the COMMIT's answer: dropped, and the line with it
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()


@contextlib.contextmanager
def behind_a_lost_commit_answer(postgres, pg_url, tmp_path):
    """(proxy, store): a store whose PostgreSQL connection goes through CommitAnswerLost,
    which the caller arms."""
    proxy = CommitAnswerLost(postgres.port)
    try:
        url = pg_url.replace(f":{postgres.port}/", f":{proxy.port}/")
        store = Store.create(url, data=str(tmp_path / "d"))
        yield proxy, store
        store.close()
    finally:
        proxy.close()


def test_a_trigger_whose_commit_answer_was_lost_is_recorded_once(postgres, pg_url, tmp_path,
                                                                 caplog):
    with behind_a_lost_commit_answer(postgres, pg_url, tmp_path) as (proxy, store):
        [w] = run_with_attempts(store, "r", attempts=1)
        proxy.armed = True
        with caplog.at_level(logging.WARNING, logger="tfblackbox"):
            trigger_id = store.record_trigger("r", w, "nan", NAN_REASON, step=12,
                                              first_step=3, last_step=12, steps_written=10)
        assert proxy.cut == 1 and not proxy.armed
        assert "connection lost" in caplog.text
        db = pg_url.rsplit("/", 1)[1]
        assert postgres.sql("SELECT trigger_id, kind, step FROM triggers", db) == [
            (trigger_id, "nan", 12)]
        assert [t.trigger_id for t in store.triggers("r")] == [trigger_id]
