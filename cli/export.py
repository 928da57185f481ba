"""`tfblackbox export --run ID --format csv|parquet --out PATH [--long] [--table T]`: one run's
history as a file, in the shapes of Store.to_pandas (schema/codecs/frames.py): by default
pivoted (a row per step, a column per tag, as W&B's and MLflow's history()), `--long` one row
per value. Needs pyarrow only (no pandas). The file is written under a temporary name and
renamed into place."""

import os

from .exits import EXIT_OK, print_json


def add_parser(sub, store_arg):
    p = sub.add_parser("export", help="one run's history as a CSV or Parquet file")
    store_arg(p)
    p.add_argument("--run", required=True, dest="run_id", metavar="ID")
    p.add_argument("--format", required=True, choices=["csv", "parquet"])
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    p.add_argument("--long", action="store_true",
                   help="one row per value (run, step, tag, value, wall_time) instead of a row "
                        "per step with a column per tag")
    p.add_argument("--table", default="scalars", choices=["scalars", "histograms"],
                   help="what to export (default scalars)")
    p.add_argument("--json", action="store_true")


def main(store_path, run_id, fmt, out, long=False, table="scalars", as_json=False):
    # imported here, not when the parser is built (cli/artifacts.py says why)
    from tfblackbox.schema import BlackboxError, Store
    from tfblackbox.schema.codecs import frames
    store = Store.open(store_path)
    store.run(run_id)   # unknown run: RunNotFoundError naming the runs, before any file
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise BlackboxError(f"--out {out}: its directory {parent} does not exist")
    if os.path.isdir(out):
        raise BlackboxError(f"--out {out} is a directory; expected a file path")
    t = frames.table_of(store, run_id, table, pivot=not long)
    frames.write(t, out, fmt)
    result = {"run_id": run_id, "out": os.path.abspath(out), "format": fmt, "table": table,
              "shape": "long" if long else "pivoted", "rows": t.num_rows,
              "columns": t.column_names}
    if as_json:
        print_json(result)
    else:
        print(f"run {run_id}: {t.num_rows} row(s) x {len(t.column_names)} column(s) "
              f"({result['shape']} {table}) -> {result['out']}")
    return EXIT_OK
