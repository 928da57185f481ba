"""tfblackbox report, opened in headless Chromium (Debian's chromium) with no network: no
console errors, one chart per scalar tag holding the downsampled number of points, media
and debug dumps shown; a screenshot kept as a test artifact."""

import collections
import json
import math
import os
import re

import numpy as np
import pytest

import tb_helpers
from tfblackbox.cli.main import main as cli_main
from tfblackbox.cli.exits import EXIT_OK, EXIT_USAGE
from tfblackbox.schema import Store
from tfblackbox.schema.codecs.rows import ColumnBuffers

LONG_STEPS = 300_000

pytestmark = pytest.mark.skipif(not os.path.exists(tb_helpers.CHROMIUM),
                                reason="needs Debian's chromium (tools/test installs it)")


def _long_run(store_dir, rng):
    """A long run written as an importer writes rows: `loss` every step (a few NaN), `lr`
    every 7th step, `loss` also shared with the TF1 run's tag set (overlaid)."""
    store = Store.create(store_dir)
    store.create_run("long", name="long run", config={"steps": LONG_STEPS})
    writer_id, attempt = store.begin_attempt("long")
    buf = ColumnBuffers(attempt)
    steps = np.arange(LONG_STEPS)
    loss = np.exp(-steps / 1e5) + rng.normal(0, 0.05, LONG_STEPS)
    loss[[5, 77_777, 123_456]] = np.nan
    lr_steps = steps[::7]
    lr = 0.1 * 0.5 ** (lr_steps / 1e5) + rng.normal(0, 1e-4, len(lr_steps))
    buf.add_many("scalars", LONG_STEPS + len(lr_steps),
                 step=np.r_[steps, lr_steps].tolist(),
                 wall_time=(1e9 + np.r_[steps, lr_steps] * 0.01).tolist(),
                 tag=["loss"] * LONG_STEPS + ["lr"] * len(lr_steps),
                 value=np.r_[loss, lr].tolist())
    table = buf.take()["scalars"]
    table = table.take(np.argsort(table["step"].to_numpy(), kind="stable"))
    store.write_segment("long", "scalars", table, writer_id)
    store.end_attempt(writer_id)
    store.finish_run("long", 0)
    return {"loss": (steps, loss), "lr": (lr_steps, lr)}


def expected_points(steps, values, buckets=1000):
    """The report's downsampling, counted independently: per bucket of equal step span, the
    first smallest and the last largest finite value (one point for a bucket of one)."""
    pairs = [(int(s), float(v)) for s, v in zip(steps, values) if math.isfinite(v)]
    if len(pairs) <= 2 * buckets:
        return len(pairs)
    lo, hi = pairs[0][0], pairs[-1][0]
    sizes = collections.Counter((s - lo) * buckets // (hi - lo + 1) for s, _v in pairs)
    return sum(min(2, n) for n in sizes.values())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    tf1_run = tb_helpers.train_tf1(base)
    series = _long_run(str(base / "store"), np.random.default_rng(3))
    expected = collections.Counter()   # tag -> points drawn over both runs
    for tag, (steps, values) in series.items():
        expected[tag] += expected_points(steps, values)
    rows = Store.open(str(base / "store")).scalars(tf1_run).to_pylist()
    for tag in {r["tag"] for r in rows}:
        mine = [r for r in rows if r["tag"] == tag]
        expected[tag] += expected_points([r["step"] for r in mine], [r["value"] for r in mine])
    out = base / "report.html"
    assert cli_main(["report", "--store", str(base / "store"), "--out", str(out)]) == EXIT_OK
    return base, out, expected, tf1_run


def test_the_report_opens_in_chromium_with_every_chart_and_no_error(report):
    base, page, expected, tf1_run = report
    dom, console, proc = tb_helpers.chromium(page, base / "profile", "--dump-dom",
                                             "--virtual-time-budget=20000")
    assert console == [], console   # nothing logged: no error, no warning, no failed load
    m = re.search(r'<div id="tfbb-status"([^>]*)>', dom)
    assert m, proc.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))
    unescape = lambda s: s.replace("&quot;", '"').replace("&amp;", "&")   # noqa: E731
    assert attrs["done"] == "1"
    assert json.loads(unescape(attrs["errors"])) == []
    points = json.loads(unescape(attrs["points"]))
    assert int(attrs["charts"]) == len(points) == len(expected)   # one chart per scalar tag
    assert points == dict(expected)
    assert points["loss"] <= 2000 + 8 and points["loss"] > 1000   # long run downsampled
    assert len(re.findall(r'class="chart scalar-chart[ "]', dom)) == len(expected)
    assert int(attrs["histograms"]) == 3            # weights, noise, v2hist of the TF1 run
    assert dom.count("<img ") >= 3 and "data:image/gif;base64," in dom
    assert "<audio controls" in dom and "loss is" in dom   # audio, the text summary
    assert "dumped session.runs" in dom and f"--run {tf1_run}" in dom


def test_the_page_needs_no_network(report):
    _base, page, _expected, _run = report
    html = page.read_text()
    # every script and style is inline; nothing is fetched
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=", html)
    assert len(html) < 10 << 20


def test_a_screenshot_of_the_report(report, capsys):
    base, page, _expected, _run = report
    shot = base / "report.png"
    _out, console, proc = tb_helpers.chromium(page, base / "profile-shot",
                                              f"--screenshot={shot}", "--window-size=1400,2200",
                                              "--virtual-time-budget=20000",
                                              "--hide-scrollbars")
    assert console == []
    assert shot.exists() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    with capsys.disabled():   # shown in every test run, not only with -s
        print(f"\nreport screenshot (a test artifact): {shot}")


def test_bad_out_and_an_empty_store(tmp_path, capsys):
    Store.create(str(tmp_path / "store"))
    assert cli_main(["report", "--store", str(tmp_path / "store"), "--out",
                     str(tmp_path)]) == EXIT_USAGE
    assert "holds no runs" in capsys.readouterr().err
    from tfblackbox.schema import Store as S
    s = S.open(str(tmp_path / "store"))
    s.create_run("r", name="r")
    assert cli_main(["report", "--store", str(tmp_path / "store"), "--out",
                     str(tmp_path)]) == EXIT_USAGE
    assert "is a directory" in capsys.readouterr().err
    assert cli_main(["report", "--store", str(tmp_path / "store"), "--out",
                     str(tmp_path / "no" / "such" / "r.html")]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
