"""Command line: `tfblackbox runs|show|verify|compact|merge|upgrade|replay|report|import-dumps|
import-tfevents|export` and `replay`.

`main(argv=None)` returns the exit code, so tests call it directly; the codes are in
exits.py: 0 success, 1 damage found or a replay that did not complete, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Sequence
import sys

from .exits import EXIT_CLOSED_STDOUT, EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for


def _store_arg(p):
    p.add_argument("--store", default=None,
                   help="store directory or catalog URL (postgresql+psycopg://user@host/db; "
                        "default: $TFBLACKBOX_STORE or ./tfblackbox-store)")


def _add_replay_arguments(p):
    _store_arg(p)
    p.add_argument("--to", required=True,
                   choices=["wandb", "debug-dump", "tensorboard", "mlflow"], help="destination")
    p.add_argument("--run", action="append", dest="runs", metavar="ID",
                   help="run id to replay (repeatable; default: every run with rows not yet "
                        "pushed)")
    p.add_argument("--json", action="store_true", help="print a JSON result summary")
    p.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                   help="--to wandb|mlflow|tensorboard: replay N runs at once, each in a worker "
                        "process of its own (default 1)")
    from .replay_mlflow import add_arguments
    add_arguments(p)
    w = p.add_argument_group("--to wandb")
    w.add_argument("--project", help="W&B project (default: the run's project)")
    w.add_argument("--entity", help="W&B entity")
    w.add_argument("--mode", choices=["online", "offline"], default="online")
    w.add_argument("--wandb-dir", default="./wandb",
                   help="where offline run dirs are written (default ./wandb)")
    w.add_argument("--dry-run", action="store_true", help="say what would be pushed; write nothing")
    w.add_argument("--follow", action="store_true",
                   help="keep pushing a run that is still recording until it finishes or Ctrl-C")
    w.add_argument("--no-progress", action="store_true", help="no progress bars")
    w.add_argument("--no-artifacts", action="store_true",
                   help="log no artifact versions (a later replay without it logs them)")
    d = p.add_argument_group("--to debug-dump, --to tensorboard")
    d.add_argument("--out", help="directory to rebuild the tfdbg dumps in, or the TensorBoard "
                                 "logdir to write (one subdirectory per run)")
    d.add_argument("--steps", help="A:B, the global steps (tfdbg v2: execution indices) to "
                                   "rebuild (A <= step < B)")
    d.add_argument("--node", help="regex: only nodes whose name matches (re.search; tfdbg v2: "
                                  "trace op names, execution op types)")
    d.add_argument("--force", action="store_true", help="write into a non-empty --out")


def _jobs(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of processes >= 1")
    return n


def build_parser():
    parser = argparse.ArgumentParser(prog="tfblackbox", description="tfblackbox store tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("runs", help="list the runs in a store")
    _store_arg(p)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="tags, kinds, step ranges, row counts and size of a run")
    p.add_argument("run_id")
    _store_arg(p)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("verify", help="check every segment; remove orphan files")
    _store_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds an unregistered file of a live writer is left alone "
                        "(default 3600)")
    p = sub.add_parser("upgrade", help="bring a store of an older format to this version's "
                                       "format, keeping a copy of its catalog")
    _store_arg(p)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("compact", help="merge small segments into large ones")
    _store_arg(p)
    p.add_argument("--run", dest="run_id")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("merge", help="merge the runs of several stores into one")
    p.add_argument("sources", nargs="+", metavar="SRC", help="store directory or catalog URL")
    p.add_argument("--into", required=True, metavar="DST",
                   help="the store to merge into (a directory, made if absent, or a catalog URL)")
    p.add_argument("--data", metavar="URI",
                   help="where a new DST keeps its data files (a directory or s3://...)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("replay", help="push recorded runs to W&B, rebuild tfdbg dump dirs or "
                                      "write a TensorBoard logdir")
    _add_replay_arguments(p)
    p = sub.add_parser("report", help="one self-contained HTML page of runs, curves and media")
    _store_arg(p)
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--run", action="append", dest="runs", metavar="ID",
                   help="run id to show (repeatable; default: every run)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("import-tfevents", help="ingest a TensorBoard logdir's event files")
    p.add_argument("logdir")
    _store_arg(p)
    p.add_argument("--run", dest="run_id",
                   help="put every file into this run (default: one run per directory)")
    p.add_argument("--project", help="project of the new runs")
    p.add_argument("--name", help="name of the new run(s) (default: the directory's path)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("import-dumps", help="ingest an existing tfdbg dump: a DumpingDebugHook "
                                            "session root (v1) or an enable_dump_debug_info "
                                            "dump root (v2)")
    p.add_argument("session_root", metavar="ROOT")
    _store_arg(p)
    p.add_argument("--run", dest="run_id", help="run id to record into (default: a new run)")
    p.add_argument("--json", action="store_true")
    from . import artifacts, export
    export.add_parser(sub, _store_arg)
    artifacts.add_parser(sub, _store_arg)
    return parser


def _arrow_pool():
    """Before pyarrow is imported: its default pool (mimalloc) keeps the pages of every window
    a replay reads, so memory grew with the run (tools/bench_replay --memory-rows); malloc
    gives them back. A user's own setting wins."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory():
    """For a command that makes and drops large buffers one chunk after another
    (import-tfevents): glibc's malloc then keeps what was freed for the next chunk instead of
    handing it back to the kernel, whose fresh pages cost a fault each (~3 us on a virtual
    machine). By default a freed buffer above the mmap threshold is unmapped and the next one
    faults anew: 7 500 faults in tools/bench_tensorboard's 7.9 MB import, 6 600 with this, and
    59 -> 52 ms (medians of ten alternating runs). Process-wide, so only for this process's own
    commands, never in a training process. False where malloc is not glibc's."""
    import ctypes
    import platform
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    return _quiet_on_closed_stdout(_main, argv)


def replay_main(argv: Sequence[str] | None = None) -> int:
    """The `replay` console script: `replay --store DIR --to wandb ...`."""
    return _quiet_on_closed_stdout(_replay_main, argv)


def _main(argv):
    _arrow_pool()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    return _dispatch(args)


def _replay_main(argv):
    _arrow_pool()
    parser = argparse.ArgumentParser(prog="replay",
                                     description="push recorded runs to W&B, tfdbg dump dirs "
                                                 "or a TensorBoard logdir")
    _add_replay_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    args.command = "replay"
    return _dispatch(args)


def _quiet_on_closed_stdout(command, argv):
    """Runs the command; if its reader went away (`tfblackbox show RUN | head -1`), ends
    quietly with 141, what a shell reports for a program SIGPIPE ended, as `git log | head`
    does: no traceback, and under `set -o pipefail` the pipeline still says the output was cut
    short. A command that failed anyway keeps its own code. As Python's documentation of
    SIGPIPE advises, stdout is pointed at /dev/null so that the interpreter's last flush at
    exit does not fail again ("Exception ignored ... BrokenPipeError")."""
    code = None
    try:
        code = command(argv)
        sys.stdout.flush()   # inside: a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass   # a stdout with no file descriptor (a test's capture) has nothing to flush
        return code or EXIT_CLOSED_STDOUT


def _dispatch(args):
    """Turns the parsed arguments into plain options for the domain function and maps its
    errors to exit codes (exits.py)."""
    if args.command == "replay" and args.jobs > 1 and not args.dry_run:
        # before this process imports the store's modules: the workers' fork server imports
        # theirs meanwhile, on the other core (replay/parallel.py)
        from tfblackbox.replay import parallel
        parallel.start_early(args.to)
    from tfblackbox.schema import BlackboxError
    from tfblackbox.schema.store.opening import default_store
    store = getattr(args, "store", None) or default_store()
    try:
        return _run(args, store)
    except BlackboxError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code_for(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args, store):
    if args.command in ("runs", "show", "verify", "compact", "upgrade"):
        from . import store_tools
        if args.command == "upgrade":
            return store_tools.upgrade(store, as_json=args.json)
        if args.command == "runs":
            return store_tools.runs(store, as_json=args.json)
        if args.command == "show":
            return store_tools.show(store, args.run_id, as_json=args.json)
        if args.command == "verify":
            return store_tools.verify(store, grace=args.grace, as_json=args.json)
        return store_tools.compact(store, run_id=args.run_id, as_json=args.json)
    if args.command == "merge":
        from . import store_tools
        return store_tools.merge(args.sources, args.into, data=args.data, as_json=args.json)
    if args.command == "replay" and args.to == "wandb":
        from tfblackbox.replay.wandb import command
        return command.main(command.WandbReplay(
            store=store, runs=tuple(args.runs or ()), project=args.project,
            entity=args.entity, mode=args.mode, wandb_dir=args.wandb_dir, dry_run=args.dry_run,
            follow=args.follow, json=args.json, progress=not args.no_progress, jobs=args.jobs,
            artifacts=not args.no_artifacts))
    if args.command == "replay" and args.to == "tensorboard":
        from tfblackbox.replay.tensorboard import export
        return export.main(store, args.out, runs=tuple(args.runs or ()), as_json=args.json,
                           jobs=args.jobs)
    if args.command == "replay" and args.to == "mlflow":
        from .replay_mlflow import replay
        return replay(args, store)
    if args.command == "replay":
        from tfblackbox.replay.tfdbg import debug_dump
        return debug_dump.main(debug_dump.DumpReplay(
            store=store, out=args.out, runs=tuple(args.runs or ()), steps=args.steps,
            node=args.node, force=args.force, json=args.json))
    if args.command == "import-tfevents":
        _keep_freed_memory()
        from tfblackbox.ingest import tensorboard
        return tensorboard.main(store, args.logdir, run_id=args.run_id, project=args.project,
                                  name=args.name, as_json=args.json)
    if args.command == "report":
        from tfblackbox.replay.report import build
        return build.main(store, args.out, runs=tuple(args.runs or ()), as_json=args.json)
    if args.command == "artifacts":
        from . import artifacts
        return artifacts.main(store, args.action, args.ref, run_id=args.run_id, out=args.out,
                              as_json=args.json)
    if args.command == "export":
        from . import export
        return export.main(store, args.run_id, args.format, args.out, long=args.long,
                           table=args.table, as_json=args.json)
    if args.command == "import-dumps":
        from tfblackbox.ingest import tfdbg
        return tfdbg.main(store, args.session_root, run_id=args.run_id,
                                 as_json=args.json)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
