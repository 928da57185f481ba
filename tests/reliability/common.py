"""What every reliability case shares: the result record, child processes that report what they
did line by line, the CLI run as a user runs it, and the checks of a store after an accident.

A child (tests/reliability/worker.py) prints one event per line, `NAME TIME ARGS...`: "step 12
<t>" after step 12 ran, "flushed 12 <t>" once everything up to step 12 is in the store, and so
on. The parent compares those lines with what the store holds, so a lost row is counted in
seconds of training, not guessed.
"""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from helpers import child_env

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "worker.py")
# Root ignores permission bits; a child run through this prefix is root without the
# capabilities that let it (DAC override, DAC read search, fowner), so a file of mode 0444 is
# read-only to it. (Running it as `nobody` does not work here: this environment's Python lives
# under /root, mode 0700.)
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
                "--inh-caps", "-dac_override,-dac_read_search,-fowner", "--"]


@dataclasses.dataclass
class Result:
    """One case: held is True/False, or None when the case could not run (reason in detail)."""
    group: str
    case: str
    held: bool | None
    detail: str = ""
    lost_secs: float | None = None    # training seconds whose rows are not in the store
    secs: float = 0.0                 # how long the case took

    @property
    def kind(self):
        """The case without its instance number: "init#3" -> "init"."""
        return self.case.split("#")[0]

    def to_dict(self):
        return dataclasses.asdict(self)


class Checks:
    """Collects failed conditions of one case; `result()` makes its Result."""

    def __init__(self, group, case):
        self.group, self.case = group, case
        self.failures, self.notes = [], []
        self.lost_secs = None
        self.t0 = time.monotonic()

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)
        return ok

    def note(self, what):
        self.notes.append(what)

    def result(self):
        detail = "; ".join(self.failures + self.notes)
        return Result(self.group, self.case, not self.failures, detail, self.lost_secs,
                      time.monotonic() - self.t0)


def not_run(group, case, reason):
    return Result(group, case, None, reason)


def guarded(group, case, fn, *args, **kw):
    """Runs a case function; an exception in the case's own code is a failed case naming it."""
    t0 = time.monotonic()
    try:
        return fn(*args, **kw)
    except Exception as e:   # the suite reports every case, whatever one of them raises
        import traceback
        tail = traceback.format_exc().strip().splitlines()[-3:]
        return Result(group, case, False, f"the case raised {type(e).__name__}: {e} "
                      f"({' | '.join(tail)})", None, time.monotonic() - t0)


# -- environment ------------------------------------------------------------------------------



def cli_command():
    """The `tfblackbox` console script of this environment, as a user types it."""
    exe = os.path.join(os.path.dirname(sys.executable), "tfblackbox")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "tfblackbox.cli.main"]


def cli(*args, env=None, unprivileged=False, timeout=300):
    """Runs `tfblackbox ARGS`; returns the CompletedProcess."""
    argv = (UNPRIVILEGED if unprivileged else []) + cli_command() + [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=env or child_env())


def has_traceback(text):
    return "Traceback (most recent call last)" in (text or "")


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


# TensorFlow's C++ log lines (absl format) and their preamble: noise in a child's stderr
_TF_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable the "
                       r"following instructions)")


def error_line(text):
    """The exception line of a traceback (its type and message), else the text's tail
    without TensorFlow's log lines."""
    if has_traceback(text):
        for line in reversed((text or "").splitlines()):
            if _EXC_LINE.match(line.strip()):
                return tail(line, 400)
    rest = tail("\n".join(ln for ln in (text or "").splitlines() if not _TF_NOISE.match(ln)))
    return rest or "(no error message)"


def tail(text, n=300):
    text = (text or "").strip().replace("\n", " | ")
    return text if len(text) <= n else "..." + text[-n:]


def make_dir(path, mode=0o755):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    return path


class Workspace:
    """A case's directories under one root that any user can traverse."""

    def __init__(self, root=None, keep=False, parent=None):
        self.root = root or tempfile.mkdtemp(prefix="tfbbx-reliability-", dir=parent)
        self.keep = keep
        os.chmod(self.root, 0o755)
        self._n = 0
        self._cache = {}
        self._lock = threading.Lock()

    def new(self, name):
        with self._lock:
            self._n += 1
            n = self._n
        return make_dir(os.path.join(self.root, f"{n:03d}-{name}"))

    def cached(self, key, build):
        """A setup shared by the cases of a group (a recorded store), built on first use."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def discard(self, path):
        """Removes a finished case's directory (thousands of dump files) unless kept."""
        if not self.keep:
            shutil.rmtree(path, ignore_errors=True)

    def remove(self):
        shutil.rmtree(self.root, ignore_errors=True)


# -- child processes ------------------------------------------------------------------------------

@dataclasses.dataclass
class Event:
    name: str
    t: float           # the child's time.time() when it printed the line
    args: list
    received: float    # this process's time.monotonic() when the line arrived


class Child:
    """A child process whose stdout lines are events, read on a thread as they come."""

    def __init__(self, argv, workdir, env=None, unprivileged=False, name="child"):
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self._stderr = open(self.stderr_path, "w")
        self.events, self._cond = [], threading.Condition()
        self.started = time.monotonic()
        self.proc = subprocess.Popen((UNPRIVILEGED if unprivileged else []) + argv,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, env=env or child_env(),
                                     start_new_session=True, cwd=workdir)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def worker(cls, workdir, *args, env=None, unprivileged=False, name="worker"):
        return cls([sys.executable, WORKER, *map(str, args)], workdir, env=env,
                   unprivileged=unprivileged, name=name)

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) < 2:
                continue
            try:
                event = Event(parts[0], float(parts[1]), parts[2:], time.monotonic())
            except ValueError:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, name, pred=None, timeout=120):
        """The first event `name` (matching pred(event)); None if the child ended or the
        time ran out first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.name == name and (pred is None or pred(e)):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.05))

    def send(self, line):
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def kill(self):
        """SIGKILL to the child itself (what `kill -9 PID` does). Returns True if it was
        still running."""
        alive = self.proc.poll() is None
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(60)
        return alive

    def sweep(self):
        """Kills what the child left running in its session (wandb-core): only processes
        this case started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout=300):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self._reader.join(10)
        self.sweep()
        return code

    def close(self):
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(10)
        self.sweep()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._stderr.close()

    def stderr(self):
        if not self._stderr.closed:
            self._stderr.flush()
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def all(self, name):
        with self._cond:
            return [e for e in self.events if e.name == name]

    def last(self, name):
        found = self.all(name)
        return found[-1] if found else None


def exit_text(code):
    if code is None:
        return "did not end"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


# -- the store after an accident --------------------------------------------------------------

def open_store(path):
    """(Store, None) or (None, "why not")."""
    from tfblackbox.schema import Store
    try:
        return Store.open(path), None
    except Exception as e:
        return None, f"Store.open raised {type(e).__name__}: {e}"


def steps_in(store, run_id, table="scalars", tag=None, latest_only=True):
    t = store.read(run_id, table, columns=["step", "tag"], latest_only=latest_only)
    if tag is not None:
        return [s for s, g in zip(t["step"].to_pylist(), t["tag"].to_pylist()) if g == tag]
    return t["step"].to_pylist()


def verify_cli(c, store_path, what="verify"):
    """`tfblackbox verify` exits 0 with no traceback."""
    p = cli("verify", "--store", store_path)
    return c.check(p.returncode == 0 and not has_traceback(p.stderr),
                   f"{what}: `tfblackbox verify` gave {exit_text(p.returncode)}: "
                   f"{error_line(p.stderr or p.stdout)}")


def reinit(c, store_path, run_id):
    """A new training process's `recorder.init(resume="allow")` on the same path works."""
    code = ("import sys; from tfblackbox import recorder\n"
            "r = recorder.init(store=sys.argv[1], run_id=sys.argv[2], resume='allow')\n"
            "print('attempt', r.attempt); recorder.finish()\n")
    p = subprocess.run([sys.executable, "-c", code, store_path, run_id], capture_output=True,
                       text=True, timeout=120, env=child_env())
    return c.check(p.returncode == 0, f"recorder.init(resume='allow') on the same path: "
                   f"{exit_text(p.returncode)}: {error_line(p.stderr)}")


def lost_training_secs(child, stored_steps):
    """Seconds of training whose rows are not stored: from the last step up to which every
    completed step is stored, to the last completed step. 0 when nothing is missing."""
    done = {int(e.args[0]): e.t for e in child.all("step")}
    if not done:
        return 0.0, []
    stored = set(stored_steps)
    missing = sorted(s for s in done if s not in stored)
    if not missing:
        return 0.0, []
    first_missing = missing[0]
    start = done.get(first_missing - 1)
    if start is None:   # nothing before it stored: count from the first step's start
        begun = child.last("train-start")
        start = begun.t if begun else done[first_missing]
    return max(done.values()) - start, missing


def flushed_step(child):
    """The last step every row of which the child saw flushed (-1 if none)."""
    e = child.last("flushed")
    return int(e.args[0]) if e else -1


def spans(steps):
    """[0, 1, 2, 5, 6] -> "0-2,5-6" for short details."""
    out, steps = [], sorted(steps)
    i = 0
    while i < len(steps):
        j = i
        while j + 1 < len(steps) and steps[j + 1] == steps[j] + 1:
            j += 1
        out.append(str(steps[i]) if i == j else f"{steps[i]}-{steps[j]}")
        i = j + 1
    text = ",".join(out) or "none"
    return text if len(text) < 80 else text[:77] + "..."
