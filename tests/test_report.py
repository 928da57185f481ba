"""tfblackbox report, opened in headless Chromium (Debian's chromium) with no network: no
console errors, one chart per scalar tag holding the downsampled number of points, media
and debug dumps shown; a screenshot kept as a test artifact. A recorder.log run (recorded
beside wandb itself, report_script.py): single points drawn as markers, short series not
smoothed, the size in human units, chart titles clear of plotly's toolbar, the run's summary
equal to wandb's own, its last console lines, and its wandb.Images in the media section."""

import base64
import collections
import glob
import html
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import report_script
import tb_helpers
import wandb_log
from tfblackbox.cli.main import main as cli_main
from tfblackbox.cli.exits import EXIT_OK, EXIT_USAGE
from tfblackbox.replay.report import page as report_page
from tfblackbox.schema import Store
from tfblackbox.schema.codecs.rows import ColumnBuffers

LONG_STEPS = 300_000

pytestmark = pytest.mark.chromium


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
    s = S.open(str(tmp_path / "store"), access="write")
    s.create_run("r", name="r")
    assert cli_main(["report", "--store", str(tmp_path / "store"), "--out",
                     str(tmp_path)]) == EXIT_USAGE
    assert "is a directory" in capsys.readouterr().err
    assert cli_main(["report", "--store", str(tmp_path / "store"), "--out",
                     str(tmp_path / "no" / "such" / "r.html")]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err


# -- a recorder.log run, recorded beside wandb (report_script.py) -----------------------------

SCRIPT = os.path.join(os.path.dirname(__file__), "report_script.py")


@pytest.fixture(scope="module")
def media_report(tmp_path_factory):
    base = tmp_path_factory.mktemp("media-report")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    done = subprocess.run([sys.executable, SCRIPT, str(base / "wandb"), str(base / "store")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = base / "report.html"
    assert cli_main(["report", "--store", str(base / "store"), "--out", str(out)]) == EXIT_OK
    wandb_file, = glob.glob(str(base / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    return base, out, wandb_file


def _dom(base, page, name):
    dom, console, proc = tb_helpers.chromium(page, base / name, "--dump-dom",
                                             "--virtual-time-budget=20000")
    assert console == [], console
    m = re.search(r'<div id="tfbb-status"([^>]*)>', dom)
    assert m, proc.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))
    assert attrs["done"] == "1" and json.loads(html.unescape(attrs["errors"])) == []
    return dom


def _chart(dom, tag):
    """The DOM of the scalar chart of `tag` (up to the next chart)."""
    start = dom.index(f'data-tag="{html.escape(tag)}"')
    end = dom.find('class="chart ', start)
    return dom[start:end if end > 0 else len(dom)]


def _summary_rows(dom):
    table = re.search(r'<table class="summary-table">(.*?)</table>', dom, re.S).group(1)
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(\d+)</td></tr>", table, re.S)
    return {html.unescape(k): html.unescape(v) for k, v, _step in rows}


def test_single_points_are_markers(media_report):
    base, page, _wandb = media_report
    dom = _dom(base, page, "profile-points")
    # one value: plotly draws a marker (a "point" path); a line of one point draws nothing
    for tag in ("eval/acc", "count", "flag"):
        assert _chart(dom, tag).count('class="point"') == 1, tag


def test_a_chart_of_one_value_is_centred_on_it(media_report):
    base, page, _wandb = media_report
    dom = _dom(base, page, "profile-flat")
    ticks = lambda tag: [float(t.replace("\u2212", "-")) for t in re.findall(   # noqa: E731
        r'class="ytick"><text[^>]*>([^<]*)</text>', _chart(dom, tag))]   # plotly's minus
    # a learning rate of 0.01 all along: plotly's own axis (-1..1) read as 0
    assert 0.01 in ticks("batch/lr") and min(ticks("batch/lr")) > 0
    assert 3.0 in ticks("count") and min(ticks("count")) >= 1.5 and max(ticks("count")) <= 4.5


def test_short_series_are_not_smoothed_by_default(media_report):
    base, page, _wandb = media_report
    dom = _dom(base, page, "profile-smoothing")
    # 4 epochs, 5 val/acc values: drawn as they are, one trace (no smoothed one over them)
    for tag, n in (("epoch/loss", 4), ("val/acc", 5)):
        chart = _chart(dom, tag)
        assert chart.count('class="trace scatter') == 1, tag
        assert chart.count('class="point"') == n, tag
    # 30 batch losses: the raw trace and TensorBoard's smoothing over it; the slider is kept
    assert _chart(dom, "batch/loss").count('class="trace scatter') == 2
    assert re.search(r'<input id="smoothing"[^>]*value="0.6"', dom)


def test_the_size_column_is_true(media_report):
    base, page, _wandb = media_report
    dom = _dom(base, page, "profile-size")
    size = Store.open(str(base / "store")).size_bytes("media-run")
    assert 1024 < size < 1 << 20
    runs = re.search(r"<h2>Runs</h2>\s*<table>(.*?)</table>", dom, re.S).group(1)
    head = re.findall(r"<th>([^<]*)</th>", runs)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", runs.split("</tr>")[1], re.S)
    assert cells[head.index("size")] == f"{size / 1024:.1f} KiB"   # as `tfblackbox runs` says
    assert f'title="{size:,} bytes"' in runs


def test_the_run_summary_is_what_wandb_holds(media_report):
    base, page, wandb_file = media_report
    dom = _dom(base, page, "profile-summary")
    want = {k: v for k, v in wandb_log.summary(wandb_file).items() if not k.startswith("_")}
    got = _summary_rows(dom)
    assert set(got) == set(want)   # "hidden_metric" (summary="none") and "note" (deleted) out
    assert got == {k: report_page._summary_text(v) for k, v in want.items()}
    # what those rows say, spelled out: define_metric's ops, an explicit summary that a later
    # logged value overrode, types, media, a histogram
    assert got["epoch/loss"] == "min 0.333333 \u00b7 last 0.55"
    assert got["val/acc"] == "0.6" and got["best_acc"] == "0.93"
    assert got["flag"] == "true" and got["count"] == "3" and got["status"] == "done"
    assert got["samples"] == "image-file 16\u00d712"
    assert got["grid"] == "2 \u00d7 images/separated 16\u00d712"
    assert got[report_script.HIST_TAG] == "histogram"


def test_the_last_console_lines_fold_away(media_report):
    base, page, _wandb = media_report
    dom = _dom(base, page, "profile-console")
    m = re.search(r'<details class="console">\s*<summary>([^<]*)</summary>\s*<pre>(.*?)</pre>',
                  dom, re.S)
    assert m, "no closed <details> of console lines"
    assert m.group(1).startswith("console: the last 100 of 157 lines")
    lines = html.unescape(re.sub(r"<[^>]+>", "", m.group(2))).split("\n")
    assert lines[:2] == ["line 053", "line 054"] and lines[-1] == ""
    assert lines[-4:-1] == ["something went wrong (a warning)", "progress 3/3", "coloured end"]
    assert '<span class="stderr">something went wrong' in m.group(2)


def test_recorder_log_images_are_in_the_media_section(media_report):
    base, page, _wandb = media_report
    dom = _dom(base, page, "profile-media")
    objects = Store.open(str(base / "store")).read("media-run", "wandb_objects").to_pylist()
    last = max(r["step"] for r in objects)
    for tag, n in (("samples", 1), ("grid", 2)):
        mine = sorted((r for r in objects if r["tag"] == tag and r["step"] == last),
                      key=lambda r: r["index"] or 0)
        assert len(mine) == n
        fig = re.search(rf"<figure>((?:(?!</figure>).)*){tag} \u2014 wandb.Image, "
                        rf"recorder.log, step {last}</figcaption></figure>", dom, re.S)
        assert fig, tag
        srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', fig.group(1))
        assert [base64.b64decode(x) for x in srcs] == [r["files"][0] for r in mine]
    assert "gradient at 2" in dom and "gradient at 1" not in dom   # the latest step, captioned


MEASURE = """<script>
(function () {
  function box(el) { var r = el.getBoundingClientRect();
                     return {l: r.left, r: r.right, t: r.top, b: r.bottom}; }
  function check() {
    var status = document.getElementById("tfbb-status");
    if (status.dataset.done !== "1") { return setTimeout(check, 50); }
    var out = [];
    document.querySelectorAll(".chart").forEach(function (chart) {
      var bar = chart.querySelector(".modebar");
      var title = chart.querySelector(".chart-title") || chart.querySelector(".gtitle");
      var c = box(chart), m = bar && box(bar), t = title && box(title);
      out.push({tag: chart.dataset.tag || (title && title.textContent),
                title: title ? title.textContent : null,
                overlap: !!(m && t && t.l < m.r && m.l < t.r && t.t < m.b && m.t < t.b),
                inside: !!(t && t.l >= c.l - 1 && t.r <= c.r + 1)});
    });
    document.body.dataset.titles = JSON.stringify(out);
  }
  check();
})();
</script>"""


def _with_script(base, page, script, name):
    """The DOM of a copy of the page with a script of the test's run after the page's."""
    copy = base / f"{name}.html"
    copy.write_text(page.read_text().replace("</body>", script + "</body>"))
    return _dom(base, copy, f"profile-{name}")


def test_chart_titles_are_whole_and_clear_of_the_toolbar(media_report):
    base, page, _wandb = media_report
    dom = _with_script(base, page, MEASURE, "titles")
    titles = json.loads(html.unescape(re.search(r'<body[^>]*data-titles="([^"]*)"', dom)
                                      .group(1)))
    hist = [t for t in titles if report_script.HIST_TAG in (t["title"] or "")]
    assert len(hist) == 1 and len(titles) == 10   # 9 scalar tags, 1 histogram
    for t in titles:
        assert t["title"] and not t["overlap"] and t["inside"], t


MOVE_SLIDER = """<script>
(function () {
  function move() {
    if (document.getElementById("tfbb-status").dataset.done !== "1") {
      return setTimeout(move, 50);
    }
    var slider = document.getElementById("smoothing");
    slider.value = "0.5";
    slider.dispatchEvent(new Event("input"));
    setTimeout(function () { document.body.dataset.moved = "1"; }, 500);
  }
  move();
})();
</script>"""


def test_a_moved_slider_smooths_short_series_too(media_report):
    base, page, _wandb = media_report
    dom = _with_script(base, page, MOVE_SLIDER, "slider")
    assert 'data-moved="1"' in dom
    assert '<span id="smoothing-value">0.50</span>' in dom
    for tag in ("epoch/loss", "val/acc", "batch/loss"):   # raw + smoothed, whatever the length
        assert _chart(dom, tag).count('class="trace scatter') == 2, tag
    assert _chart(dom, "eval/acc").count('class="trace scatter') == 1   # a point stays a point


def test_a_screenshot_of_the_media_report(media_report, capsys):
    base, page, _wandb = media_report
    shot = base / "media-report.png"
    _out, console, proc = tb_helpers.chromium(page, base / "profile-media-shot",
                                              f"--screenshot={shot}", "--window-size=1400,3000",
                                              "--virtual-time-budget=20000",
                                              "--hide-scrollbars")
    assert console == []
    assert shot.exists() and shot.stat().st_size > 50_000, proc.stderr[-2000:]
    with capsys.disabled():
        print(f"\nscreenshot of the recorder.log run's report (a test artifact): {shot}")
