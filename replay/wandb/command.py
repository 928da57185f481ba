"""`replay --to wandb`: the command. Which runs, the credentials an online replay needs, the
runs pushed one after another or by --jobs worker processes, --follow's loop, the summary.
One run's chunk is push.py's.

Exit codes: 0 every selected run replayed (or already up to date), 1 some run's replay did not
complete, 2 bad input (raised as BlackboxError: unknown run, empty store, no credentials).
"""

import dataclasses
import os

from tfblackbox.schema import BlackboxError, Store

from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK
from .. import parallel
from .naming import destination
from .printout import dry_run, print_summary
from .push import Target, new_result, push_run

FOLLOW_POLL_SECS = float(os.environ.get("TFBLACKBOX_FOLLOW_POLL_SECS", "10"))


@dataclasses.dataclass(frozen=True)
class WandbReplay:
    """What `replay --to wandb` was asked to do (the CLI builds it from its arguments)."""
    store: str
    runs: tuple = ()                 # run ids; empty: every run
    project: str | None = None       # default: each run's own project
    entity: str | None = None
    mode: str = "online"             # online | offline
    wandb_dir: str = "./wandb"       # offline run dirs are published here
    dry_run: bool = False
    follow: bool = False
    json: bool = False
    progress: bool = True
    jobs: int = 1                    # runs pushed at once, each by a worker process
    artifacts: bool = True           # False: --no-artifacts


# -- entry point ----------------------------------------------------------------------------

def main(opts):
    # a reader that writes its cursors only (a dry run: nothing at all)
    store = Store.open(opts.store, access="read" if opts.dry_run else "replay")
    records = select_runs(store, opts.runs)
    if opts.dry_run:
        report = [dry_run(store, r, opts) for r in records]
        print_summary(opts, {"dry_run": True, "mode": opts.mode, "runs": report})
        return EXIT_OK
    if opts.mode == "online":
        require_credentials()
    from .offline_dir import OfflineDir
    results = {r.run_id: new_result(store, r, opts) for r in records}
    task_opts = dataclasses.replace(opts, progress=False)
    with OfflineDir(opts.wandb_dir) as odir:   # with --jobs: the lock and cleanup stay here
        interrupted = parallel.replay_runs(
            store, records, results, opts, "wandb",
            push_one=lambda r: push_run(Target(store, store.run(r.run_id), opts, odir,
                                               destination(opts, r)), results[r.run_id]),
            task=lambda r: (task_opts, r.run_id), work=work, poll=FOLLOW_POLL_SECS)
    summary = {"dry_run": False, "mode": opts.mode, "runs": list(results.values()),
               "interrupted": interrupted}
    if opts.mode == "offline":
        summary["wandb_dir"] = os.path.abspath(opts.wandb_dir)
        summary["sync_command"] = sync_command(opts.wandb_dir)
    print_summary(opts, summary)
    return EXIT_OK if all(r["ok"] for r in results.values()) else EXIT_FAILED


_WORKER_STORES: dict[str, Store] = {}   # a worker's open stores
WORKER_PRELOAD = parallel.PRELOAD["wandb"]   # what the fork server of the workers imports


def work(task, result):
    """One run's chunk in a worker process of --jobs (replay/parallel.py): the store opened
    once per worker; the --wandb-dir used without its lock, which the parent holds."""
    opts, run_id = task
    from .offline_dir import OfflineDir
    store = _WORKER_STORES.get(opts.store)
    if store is None:
        store = _WORKER_STORES[opts.store] = Store.open(opts.store, access="replay")
    record = store.run(run_id)
    push_run(Target(store, record, opts, OfflineDir(opts.wandb_dir), destination(opts, record)),
             result)
    return result


def select_runs(store, run_ids):
    if run_ids:
        return [store.run(r) for r in dict.fromkeys(run_ids)]   # unknown id: RunNotFoundError
    records = store.runs()
    if not records:
        raise BlackboxError(f"store {store.root} holds no runs: nothing to replay (runs are "
                            f"recorded with recorder.init(store=...))")
    return records


def sync_command(wandb_dir):
    return f"wandb sync {os.path.join(wandb_dir, 'offline-run-*')}"


def require_credentials():
    """Online mode needs a W&B API key; say so before anything is written."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    import wandb
    base_url = wandb.Settings().base_url
    try:
        from wandb.sdk.lib.wbauth import wbnetrc
        if wbnetrc.read_netrc_auth(host=base_url):
            return
    except ImportError:
        import netrc
        from urllib.parse import urlsplit
        try:
            if netrc.netrc().authenticators(urlsplit(base_url).netloc):
                return
        except (OSError, netrc.NetrcParseError):
            pass
    except Exception as e:
        raise BlackboxError(f"W&B credentials for {base_url} cannot be read: {e}") from e
    raise BlackboxError(
        f"--mode online needs W&B credentials for {base_url}, and none were found (no "
        f"WANDB_API_KEY, no entry in ~/.netrc): run `wandb login`, or replay with "
        f"--mode offline and upload later with `wandb sync`")
