"""Runs as tables for notebooks and files: `Store.to_pandas` and `tfblackbox export`.

The shapes are tbparse's (`SummaryReader(logdir, extra_columns=...)`), with the run id where
tbparse has the event file's directory:

- scalars, long: one row per value, columns `run, step, tag, value, wall_time`;
- scalars, pivoted: one row per run and step, `run, step` and one column per tag (NaN where
  a tag has no value at that step); the wall times are in the long shape;
- histograms, long: `run, step, tag, counts, limits, max, min, num, sum, sum_squares,
  wall_time`, `counts` and `limits` numpy arrays as tbparse gives them: a TF1 HistogramProto's
  right edges and counts as recorded; a histogram-plugin tensor (tf.summary.histogram) as
  tbparse's `tensor_to_histogram` makes it (the first left edge, then the right edges; a 0
  count first; min and max the outer edges, num the count, sum and sum_squares NaN);
- histograms, pivoted: `run, step` and `<tag>/counts`, `<tag>/limits` per tag;
- any other table: its columns as the store keeps them, with `run` first (no pivot).

Everything is built as pyarrow tables (`table_of`), so `export` needs no pandas; pandas (the
`pandas` extra) is imported only by `to_pandas`. Rows are the ones readers see (the latest
attempt's at a step a resumed run re-did).
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import MissingExtraError

LONG_SCALARS = ["run", "step", "tag", "value", "wall_time"]
HIST_STATS = ["max", "min", "num", "sum", "sum_squares"]
LONG_HISTOGRAMS = ["run", "step", "tag", "counts", "limits"] + HIST_STATS + ["wall_time"]


def run_ids(store, runs):
    """The run ids asked for: None -> every run of the store, a str -> that one."""
    if runs is None:
        return [r.run_id for r in store.runs()]
    if isinstance(runs, str):
        runs = [runs]
    ids = list(dict.fromkeys(runs))
    for r in ids:
        store.run(r)   # RunNotFoundError naming the store's runs
    return ids


def table_of(store, runs=None, table="scalars", pivot=False):
    """The pyarrow.Table of `to_pandas` (below); histogram arrays as list columns."""
    ids = run_ids(store, runs)
    if table == "scalars":
        long = pa.concat_tables([_scalars(store, r) for r in ids]) if ids else _empty_scalars()
        return _pivot_scalars(long) if pivot else long
    if table == "histograms":
        long = (pa.concat_tables([_histograms(store, r) for r in ids]) if ids
                else _histograms_table([], {}))
        return _pivot_histograms(long) if pivot else long
    if pivot:
        raise ValueError(f"pivot=True is for table='scalars' or 'histograms', not {table!r}")
    parts = []
    for r in ids:
        t = store.read(r, table)
        parts.append(t.add_column(0, "run", pa.array([r] * t.num_rows, pa.string())))
    if not parts:
        from ..tables import schema_of
        schema = schema_of(table)
        return pa.schema([pa.field("run", pa.string())] + list(schema)).empty_table()
    return pa.concat_tables(parts)


def to_pandas(store, runs=None, table="scalars", pivot=False):
    """`Store.to_pandas(runs=None, table="scalars", pivot=False)`: the runs (None: all; a run
    id; a list) as a pandas DataFrame in the shapes of the module docstring."""
    try:
        import pandas  # noqa: F401
    except ImportError as e:
        raise MissingExtraError(
            "Store.to_pandas needs pandas, which is not installed: pip install "
            "'tfblackbox[pandas]' (or pandas itself); tfblackbox export --format csv|parquet "
            "writes the same tables without it") from e
    t = table_of(store, runs, table, pivot)
    df = t.to_pandas()
    for name, typ in zip(t.column_names, t.schema.types):
        if pa.types.is_list(typ):   # tbparse's cells are numpy arrays; pyarrow's are too, but
            df[name] = [None if v is None else np.asarray(v, dtype=np.float64)
                        for v in df[name]]
    return df


# -- scalars ------------------------------------------------------------------------------

def _empty_scalars():
    return pa.table({"run": pa.array([], pa.string()), "step": pa.array([], pa.int64()),
                     "tag": pa.array([], pa.string()), "value": pa.array([], pa.float64()),
                     "wall_time": pa.array([], pa.float64())})


def _scalars(store, run_id):
    t = store.scalars(run_id, columns=["step", "tag", "value", "wall_time"])
    # tbparse's order: by tag, then step (it reads one tag's series after another)
    t = t.take(pc.sort_indices(t, [("tag", "ascending"), ("step", "ascending")]))
    return t.add_column(0, "run", pa.array([run_id] * t.num_rows, pa.string()))


def _pivot_scalars(long):
    """One row per (run, step), one float64 column per tag; the last value wins where a tag
    has several at one step."""
    runs = long["run"].to_pylist()
    steps = long["step"].to_numpy()
    tags = long["tag"].to_pylist()
    values = long["value"].to_numpy(zero_copy_only=False)
    keys = _row_keys(runs, steps)
    index = {k: i for i, k in enumerate(keys)}
    columns = {}
    for tag in sorted(set(tags)):
        columns[tag] = np.full(len(keys), np.nan)
    for run, step, tag, value in zip(runs, steps.tolist(), tags, values.tolist()):
        columns[tag][index[(run, step)]] = value
    out = {"run": pa.array([k[0] for k in keys], pa.string()),
           "step": pa.array([k[1] for k in keys], pa.int64())}
    for tag, col in columns.items():
        out[tag] = pa.array(col, pa.float64())
    return pa.table(out)


def _row_keys(runs, steps):
    """(run, step) pairs, runs in the order given, steps ascending within a run."""
    order = {r: i for i, r in enumerate(dict.fromkeys(runs))}
    return sorted(set(zip(runs, steps.tolist())), key=lambda k: (order[k[0]], k[1]))


# -- histograms ---------------------------------------------------------------------------

_HIST_COLS = ["step", "wall_time", "tag", "num", "min", "max", "sum", "sum_squares",
              "bucket_limits", "bucket_counts", "bucket_lefts", "source"]


def _histograms(store, run_id):
    t = store.histograms(run_id, columns=_HIST_COLS)
    t = t.take(pc.sort_indices(t, [("tag", "ascending"), ("step", "ascending")]))
    cols = {c: t[c].to_pylist() for c in _HIST_COLS}
    out = {k: [] for k in ("counts", "limits") + tuple(HIST_STATS)}
    for i in range(t.num_rows):
        limits, counts = cols["bucket_limits"][i] or [], cols["bucket_counts"][i] or []
        lefts = cols["bucket_lefts"][i]
        if cols["source"][i] == "tensor" and lefts:
            # tbparse's tensor_to_histogram: [left0] + right edges, [0] + counts
            limits, counts = [lefts[0]] + list(limits), [0.0] + list(counts)
            stats = {"min": limits[0], "max": limits[-1], "num": float(sum(counts)),
                     "sum": float("nan"), "sum_squares": float("nan")}
        else:
            stats = {k: cols[k][i] for k in HIST_STATS}
        out["limits"].append(limits)
        out["counts"].append(counts)
        for k in HIST_STATS:
            out[k].append(stats[k])
    base = {"run": [run_id] * t.num_rows, "step": cols["step"], "tag": cols["tag"],
            "wall_time": cols["wall_time"]}
    return _histograms_table(base, out)


def _histograms_table(base, out):
    lst = pa.list_(pa.float64())
    return pa.table({
        "run": pa.array(base.get("run", []), pa.string()),
        "step": pa.array(base.get("step", []), pa.int64()),
        "tag": pa.array(base.get("tag", []), pa.string()),
        "counts": pa.array(out.get("counts", []), lst),
        "limits": pa.array(out.get("limits", []), lst),
        **{k: pa.array(out.get(k, []), pa.float64()) for k in HIST_STATS},
        "wall_time": pa.array(base.get("wall_time", []), pa.float64())})


def _pivot_histograms(long):
    runs, steps = long["run"].to_pylist(), long["step"].to_numpy()
    tags = long["tag"].to_pylist()
    keys = _row_keys(runs, steps)
    index = {k: i for i, k in enumerate(keys)}
    counts, limits = long["counts"].to_pylist(), long["limits"].to_pylist()
    out = {"run": pa.array([k[0] for k in keys], pa.string()),
           "step": pa.array([k[1] for k in keys], pa.int64())}
    for tag in sorted(set(tags)):
        c, lim = [None] * len(keys), [None] * len(keys)
        for j, t in enumerate(tags):
            if t == tag:
                i = index[(runs[j], int(steps[j]))]
                c[i], lim[i] = counts[j], limits[j]
        out[f"{tag}/counts"] = pa.array(c, pa.list_(pa.float64()))
        out[f"{tag}/limits"] = pa.array(lim, pa.list_(pa.float64()))
    return pa.table(out)


# -- files --------------------------------------------------------------------------------

def write(table, path, fmt):
    """Writes a table as CSV (list cells as space-separated numbers) or Parquet, under a
    temporary name renamed into place."""
    import os
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.incomplete")
    if fmt == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(table, tmp)
    elif fmt == "csv":
        import pyarrow.csv as pcsv
        for i, typ in enumerate(table.schema.types):
            if pa.types.is_list(typ):
                cells = [None if v is None else " ".join(repr(float(x)) for x in v)
                         for v in table.column(i).to_pylist()]
                table = table.set_column(i, table.schema.names[i], pa.array(cells, pa.string()))
        pcsv.write_csv(table, tmp)
    else:
        raise ValueError(f"format {fmt!r}: expected csv or parquet")
    os.replace(tmp, path)
