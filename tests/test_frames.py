"""Store.to_pandas and `tfblackbox export` against tbparse on the same logdir: a logdir written
by real tf.summary (TF2's writer and TF1's FileWriter, in a child process), imported with
import-tfevents, read both ways: equal values, steps and wall times, in tbparse's shapes."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tfblackbox.cli.exits import EXIT_OK, EXIT_USAGE
from tfblackbox.cli.main import main
from tfblackbox.schema import Store

WRITE = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    logdir = sys.argv[1]
    rng = np.random.default_rng(7)
    w = tf.summary.create_file_writer(os.path.join(logdir, "tf2run"))
    with w.as_default():
        for s in range(0, 40, 2):
            tf.summary.scalar("loss", 1.0 / (s + 1), step=s)
            tf.summary.scalar("acc", 0.5 + s * 0.01, step=s)
            if s % 4 == 0:
                tf.summary.histogram("w", rng.normal(size=200), step=s, buckets=7)
        tf.summary.scalar("loss", float("nan"), step=40)
        tf.summary.scalar("acc", float("inf"), step=40)
    w.close()
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None])
        tf.compat.v1.summary.scalar("avg", tf.reduce_mean(x))
        tf.compat.v1.summary.scalar("first", x[0])
        tf.compat.v1.summary.histogram("x", x)
        merged = tf.compat.v1.summary.merge_all()
        fw = tf.compat.v1.summary.FileWriter(os.path.join(logdir, "tf1run"))
        with tf.compat.v1.Session() as sess:
            for s in range(12):
                fw.add_summary(sess.run(merged, {x: rng.normal(size=64)}), s * 10)
        fw.close()
""")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    logdir, store = str(root / "logs"), str(root / "store")
    script = root / "write.py"
    script.write_text(WRITE)
    subprocess.run([sys.executable, str(script), logdir], check=True, timeout=300,
                   capture_output=True)
    assert main(["import-tfevents", logdir, "--store", store]) == EXIT_OK
    s = Store.open(store)
    runs = {r.name: r.run_id for r in s.runs()}
    assert set(runs) == {"tf1run", "tf2run"}
    return logdir, store, runs


def tbparse(logdir, **kw):
    from tbparse import SummaryReader
    return SummaryReader(logdir, extra_columns={"wall_time", "dir_name", "min", "max", "num",
                                                "sum", "sum_squares"}, **kw)


def same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_long_scalars_equal_tbparse(imported):
    logdir, store, runs = imported
    df = Store.open(store).to_pandas()
    assert list(df.columns) == ["run", "step", "tag", "value", "wall_time"]
    # TF1 simple_values: tbparse's scalars
    ref = tbparse(logdir).scalars
    ref = ref[ref.dir_name == "tf1run"]
    ours = df[df.run == runs["tf1run"]]
    assert len(ours) == len(ref) == 24
    assert list(ours.tag) == list(ref.tag) and list(ours.step) == list(ref.step)
    assert list(ours.value) == list(ref.value)
    assert list(ours.wall_time) == list(ref.wall_time)
    # TF2 scalars come as tensors in tbparse (float32, NaN and inf kept)
    t = tbparse(logdir).tensors
    t = t[(t.dir_name == "tf2run") & t.tag.isin(["acc", "loss"])]
    ours = df[df.run == runs["tf2run"]]
    assert len(ours) == len(t) == 42
    assert list(ours.tag) == list(t.tag) and list(ours.step) == list(t.step)
    assert all(same(float(np.float32(a)), float(b)) for a, b in zip(ours.value, t.value))
    assert list(ours.wall_time) == list(t.wall_time)
    assert math.isnan(ours[(ours.tag == "loss") & (ours.step == 40)].value.iloc[0])
    assert ours[(ours.tag == "acc") & (ours.step == 40)].value.iloc[0] == math.inf


def test_pivoted_scalars_equal_tbparse(imported):
    logdir, store, runs = imported
    df = Store.open(store).to_pandas(runs=runs["tf1run"], pivot=True)
    ref = tbparse(logdir, pivot=True).scalars
    ref = ref[ref.dir_name == "tf1run"]
    assert list(df.columns) == ["run", "step", "avg", "first"]
    assert list(df.step) == list(ref.step) == [s * 10 for s in range(12)]
    for tag in ("avg", "first"):
        assert list(df[tag]) == list(ref[tag])
    # a column per tag, a row per run and step, NaN where a tag has no value
    both = Store.open(store).to_pandas(pivot=True)
    assert len(both) == 12 + 21
    tf2 = both[both.run == runs["tf2run"]]
    assert list(tf2.step) == list(range(0, 41, 2))
    assert tf2["first"].isna().all() and tf2["acc"].notna().all()


def test_histograms_as_tbparse_shapes_them(imported):
    logdir, store, runs = imported
    df = Store.open(store).to_pandas(table="histograms")
    assert list(df.columns) == ["run", "step", "tag", "counts", "limits", "max", "min", "num",
                                "sum", "sum_squares", "wall_time"]
    # TF1 HistogramProto: tbparse's histograms frame
    ref = tbparse(logdir).histograms
    ref = ref[ref.dir_name == "tf1run"].reset_index(drop=True)
    ours = df[df.run == runs["tf1run"]].reset_index(drop=True)
    assert len(ours) == len(ref) == 12
    assert list(ours.step) == list(ref.step) and list(ours.wall_time) == list(ref.wall_time)
    for i in range(12):
        np.testing.assert_array_equal(ours.counts[i], ref.counts[i])
        np.testing.assert_array_equal(ours.limits[i], ref.limits[i])
        for k in ("max", "min", "num", "sum", "sum_squares"):
            assert ours[k][i] == ref[k][i], k
    # TF2 histogram tensors: tbparse's tensor_to_histogram
    from tbparse import SummaryReader
    t = tbparse(logdir).tensors
    t = t[(t.dir_name == "tf2run") & (t.tag == "w")].reset_index(drop=True)
    ours = df[df.run == runs["tf2run"]].reset_index(drop=True)
    assert len(ours) == len(t) == 10
    assert list(ours.step) == list(t.step) and list(ours.wall_time) == list(t.wall_time)
    for i in range(10):
        h = SummaryReader.tensor_to_histogram(t.value[i])
        np.testing.assert_allclose(ours.counts[i], h["counts"], rtol=0, atol=0)
        np.testing.assert_allclose(ours.limits[i], h["limits"], rtol=1e-15)
        assert ours["num"][i] == h["num"] and math.isnan(ours["sum"][i])
    piv = Store.open(store).to_pandas(runs=runs["tf1run"], table="histograms", pivot=True)
    assert list(piv.columns) == ["run", "step", "x/counts", "x/limits"]
    ref = tbparse(logdir, pivot=True).histograms
    ref = ref[ref.dir_name == "tf1run"].reset_index(drop=True)
    np.testing.assert_array_equal(piv["x/counts"][3], ref["x/counts"][3])


def test_export_csv_and_parquet(imported, tmp_path, capsys):
    logdir, store, runs = imported
    run = runs["tf1run"]
    expected = Store.open(store).to_pandas(runs=run, pivot=True)
    out = tmp_path / "h.parquet"
    assert main(["export", "--store", store, "--run", run, "--format", "parquet", "--out",
                 str(out)]) == EXIT_OK
    back = pq.read_table(out).to_pandas()
    assert list(back.columns) == list(expected.columns)
    assert back.equals(expected)
    out = tmp_path / "h.csv"
    assert main(["export", "--store", store, "--run", run, "--format", "csv", "--out",
                 str(out)]) == EXIT_OK
    back = pcsv.read_csv(out).to_pandas()
    assert list(back.step) == list(expected.step)
    assert list(back["avg"]) == list(expected["avg"])
    long = tmp_path / "long.csv"
    assert main(["export", "--store", store, "--run", run, "--format", "csv", "--long",
                 "--out", str(long)]) == EXIT_OK
    back = pcsv.read_csv(long).to_pandas()
    assert list(back.columns) == ["run", "step", "tag", "value", "wall_time"]
    assert list(back.wall_time) == list(Store.open(store).to_pandas(runs=run).wall_time)
    capsys.readouterr()
    assert main(["export", "--store", store, "--run", "nope", "--format", "csv", "--out",
                 str(tmp_path / "x.csv")]) == EXIT_USAGE
    assert "nope" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.csv")


def test_to_pandas_without_pandas_names_the_extra(imported):
    _logdir, store, _runs = imported
    code = ("import sys\n"
            "class NoPandas:\n"          # as if pandas were not installed
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'pandas':\n"
            "            raise ImportError('No module named pandas')\n"
            "sys.meta_path.insert(0, NoPandas())\n"
            "from tfblackbox.schema import Store\n"
            "try:\n"
            f"    Store.open({store!r}).to_pandas()\n"
            "except ImportError as e:\n"
            "    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("MissingExtraError") and "tfblackbox[pandas]" in out
