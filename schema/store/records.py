"""Plain records that cross the schema boundary (ORM rows never do), and the rules about
runs every side shares: what a run id may be, and when a running run counts as dead."""

import dataclasses
import json
import re
import secrets
import string
import time

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STALE_SECS = 600.0    # a run still 'running' with no heartbeat for this long has died


def new_run_id():
    """8 random lowercase letters and digits, as wandb's run ids."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def valid_run_id(run_id):
    """1-64 letters, digits, '_', '-' or '.', starting with a letter or digit (so it is a safe
    directory name too)."""
    return bool(RUN_ID_RE.match(str(run_id))) and ".." not in str(run_id)


# a run recorded by one task of a multi-worker job (TF_CONFIG) is named <run>-<type><index>
TASK_RE = re.compile(r"-(chief|master|worker|ps|evaluator)(\d+)$")
TASK_RANK = {"chief": 0, "master": 0, "worker": 1, "evaluator": 2, "ps": 3}


def task_of(record):
    """(task type, index) of a run one task of a multi-worker group recorded, else None."""
    m = TASK_RE.search(record.run_id) if record.group else None
    return (m.group(1), int(m.group(2))) if m else None


def task_order(records):
    """Records (in start order) with each multi-worker group's runs together where its first
    run started: the chief's (or master's) first, then workers, evaluators and parameter
    servers by index. Other runs keep their place."""
    first = {}
    for i, r in enumerate(records):
        if task_of(r) is not None:
            first.setdefault(r.group, i)

    def key(item):
        i, r = item
        task = task_of(r)
        if task is None:
            return (i, -1, 0)
        return (first[r.group], TASK_RANK[task[0]], task[1])
    return [r for _i, r in sorted(enumerate(records), key=key)]


def run_state(record, now=None):
    """'finished', 'failed', 'running', or 'died' (running with no heartbeat for STALE_SECS)."""
    if record.status != "running":
        return record.status
    beat = record.heartbeat_at or record.started_at or 0
    return "died" if (now or time.time()) - beat > STALE_SECS else "running"


@dataclasses.dataclass(frozen=True)
class RunRecord:
    run_id: str
    project: str | None
    name: str | None
    group: str | None
    notes: str | None
    status: str
    exit_code: int | None
    config: dict
    tags: list
    host: str | None
    pid: int | None
    command: str | None
    python_version: str | None
    tf_version: str | None
    tfblackbox_version: str | None
    git_commit: str | None
    started_at: float
    ended_at: float | None
    heartbeat_at: float | None

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class WriterRecord:
    writer_id: int
    run_id: str
    attempt: int
    host: str | None
    pid: int | None
    started_at: float
    ended_at: float | None
    first_step: int | None
    dropped_rows: int
    error: str | None


def run_record(row):
    return RunRecord(
        run_id=row.run_id, project=row.project, name=row.name, group=row.group,
        notes=row.notes, status=row.status, exit_code=row.exit_code,
        config=json.loads(row.config_json or "{}"), tags=json.loads(row.tags_json or "[]"),
        host=row.host, pid=row.pid, command=row.command, python_version=row.python_version,
        tf_version=row.tf_version, tfblackbox_version=row.tfblackbox_version,
        git_commit=row.git_commit, started_at=row.started_at, ended_at=row.ended_at,
        heartbeat_at=row.heartbeat_at)


def writer_record(row):
    return WriterRecord(row.writer_id, row.run_id, row.attempt, row.host, row.pid,
                        row.started_at, row.ended_at, row.first_step, row.dropped_rows or 0,
                        row.error)


@dataclasses.dataclass(frozen=True)
class TriggerRecord:
    """A black-box trigger that fired: `kind` (TRIGGER_KINDS in triggers.py), why (`reason`),
    the step it fired at, when, and the dumped steps it wrote (first..last, how many)."""
    trigger_id: int
    run_id: str
    writer_id: int | None
    step: int | None
    kind: str
    reason: str
    fired_at: float
    first_step: int | None
    last_step: int | None
    steps_written: int

    def to_dict(self):
        return dataclasses.asdict(self)


def trigger_record(row):
    return TriggerRecord(row.trigger_id, row.run_id, row.writer_id, row.step, row.kind,
                         row.reason, row.fired_at, row.first_step, row.last_step,
                         row.steps_written or 0)


@dataclasses.dataclass(frozen=True)
class LossRecord:
    """Rows attempt `attempt` (writer `writer_id`) of a run recorded that never reached the
    store: of table `table`, for `reason` ("memory": dropped past max_unwritten_bytes;
    "finish": still unwritten when the attempt ended), how many, their bytes in memory and
    the steps they spanned."""
    run_id: str
    writer_id: int
    attempt: int | None
    table: str
    reason: str
    rows: int
    bytes: int
    first_step: int | None
    last_step: int | None
    updated_at: float

    def to_dict(self):
        return dataclasses.asdict(self)


def loss_record(row, attempt=None):
    return LossRecord(row.run_id, row.writer_id, attempt, row.table_name, row.reason,
                      row.rows or 0, row.bytes or 0, row.first_step, row.last_step,
                      row.updated_at)
