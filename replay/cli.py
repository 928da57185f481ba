"""Command line: `tfblackbox runs|show|verify|compact|replay|import-dumps` and `replay`.

`main(argv=None)` returns the exit code, so tests call it directly; the codes are in
exits.py: 0 success, 1 damage found or a replay that did not complete, 2 bad usage or input.
"""

import argparse
import os
import sys

from .exits import EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for


def _store_arg(p):
    p.add_argument("--store", default=None,
                   help="store directory (default: $TFBLACKBOX_STORE or ./tfblackbox-store)")


def _add_replay_arguments(p):
    _store_arg(p)
    p.add_argument("--to", required=True, choices=["wandb", "debug-dump"],
                   help="destination")
    p.add_argument("--run", action="append", dest="runs", metavar="ID",
                   help="run id to replay (repeatable; default: every run with rows not yet pushed)")
    p.add_argument("--json", action="store_true", help="print a JSON result summary")
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
    d = p.add_argument_group("--to debug-dump")
    d.add_argument("--out", help="directory to rebuild the tfdbg dump dirs in")
    d.add_argument("--steps", help="A:B, the global steps (tfdbg v2: execution indices) to "
                                   "rebuild (A <= step < B)")
    d.add_argument("--node", help="regex: only nodes whose name matches (re.search; tfdbg v2: "
                                  "trace op names, execution op types)")
    d.add_argument("--force", action="store_true", help="write into a non-empty --out")


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
                   help="seconds an unregistered file of a live writer is left alone (default 3600)")
    p = sub.add_parser("compact", help="merge small segments into large ones")
    _store_arg(p)
    p.add_argument("--run", dest="run_id")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("replay", help="push recorded runs to W&B or rebuild tfdbg dump dirs")
    _add_replay_arguments(p)
    p = sub.add_parser("import-dumps", help="ingest an existing tfdbg dump: a DumpingDebugHook "
                                            "session root (v1) or an enable_dump_debug_info "
                                            "dump root (v2)")
    p.add_argument("session_root", metavar="ROOT")
    _store_arg(p)
    p.add_argument("--run", dest="run_id", help="run id to record into (default: a new run)")
    p.add_argument("--json", action="store_true")
    return parser


def _arrow_pool():
    """Before pyarrow is imported: its default pool (mimalloc) keeps the pages of every window
    a replay reads, so memory grew with the run (tools/bench_replay --memory-rows); malloc
    gives them back. A user's own setting wins."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def main(argv=None):
    _arrow_pool()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    return _dispatch(args)


def replay_main(argv=None):
    """The `replay` console script: `replay --store DIR --to wandb ...`."""
    _arrow_pool()
    parser = argparse.ArgumentParser(prog="replay",
                                     description="push recorded runs to W&B or tfdbg dump dirs")
    _add_replay_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    args.command = "replay"
    return _dispatch(args)


def _dispatch(args):
    from tfblackbox.schema import BlackboxError
    if getattr(args, "store", None) is None:
        args.store = os.environ.get("TFBLACKBOX_STORE", "./tfblackbox-store")
    try:
        if args.command in ("runs", "show", "verify", "compact"):
            from . import store_tools
            return getattr(store_tools, args.command)(args)
        if args.command == "replay":
            if args.to == "wandb":
                from .wandb import push
                return push.main(args)
            from .tfdbg import debug_dump
            return debug_dump.main(args)
        if args.command == "import-dumps":
            from .tfdbg import import_dumps
            return import_dumps.main(args)
    except BlackboxError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code_for(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
