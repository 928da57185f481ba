"""`tfblackbox import-dumps ROOT --store DIR [--run ID] [--json]`: archive an existing tfdbg
dump, v1 or v2, whichever ROOT is.

A tfdbg v2 dump root (`tfdbg_events.<seconds>.<host>.<kind>` files, as
`enable_dump_debug_info` writes them) goes to tfdbg_v2.py; a DumpingDebugHook session root
(`run_<micros>_<n>/` dirs) to tfdbg_v1.py. A directory that is neither, or both, is refused
naming what it holds.
"""

import os
import sys

from tfblackbox.schema import BlackboxError, Store
from tfblackbox.schema.formats import tfdbg_v1_layout as layout

from tfblackbox.cli.exits import EXIT_OK, print_json
from . import tfdbg_v1, tfdbg_v2


def kind_of(root):
    """"v2", "v1" (also for an empty directory: nothing to import) or a BlackboxError."""
    if not os.path.isdir(root):
        raise BlackboxError(f"{root} is not a directory (expected a tfdbg dump: a "
                            f"DumpingDebugHook session root or an enable_dump_debug_info "
                            f"dump root)")
    names = sorted(os.listdir(root))
    v1 = [n for n in names if layout.RUN_DIR_RE.match(n)]
    v2 = tfdbg_v2.is_dump_root(root)
    if v1 and v2:
        raise BlackboxError(f"{root} holds both tfdbg v1 run dirs ({v1[0]}, ...) and tfdbg v2 "
                            f"files; import each from a directory of its own")
    if v2:
        return "v2"
    if names and not v1:
        raise BlackboxError(f"{root} is not a tfdbg dump: expected run_<micros>_<n>/ dirs of "
                            f"DumpingDebugHook (v1) or tfdbg_events.<seconds>.<host>.<kind> "
                            f"files of enable_dump_debug_info (v2); found {names[0]!r}"
                            f"{f' and {len(names) - 1} more' if len(names) > 1 else ''}")
    return "v1"


def main(store_path, root, run_id=None, as_json=False):
    kind = kind_of(root)
    store = Store.create(store_path)
    if kind == "v2":
        result = tfdbg_v2.import_dump_root(store, root, run_id)
        for w in result["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
    else:
        result = tfdbg_v1.import_session_root(store, root, run_id)
    if as_json:
        print_json(result)
    elif kind == "v2":
        print(f"imported {result['files']} tfdbg v2 file(s), {result['records']} record(s) of "
              f"tfdbg run {', '.join(result['tfdbg_run_ids']) or '(unknown)'} from "
              f"{result['dump_root']} into run {result['run_id']} of {store.root}")
    else:
        print(f"imported {result['runs']} session.run dir(s), {result['tensors']} tensor(s) from "
              f"{result['session_root']} into run {result['run_id']} of {store.root}")
    return EXIT_OK
