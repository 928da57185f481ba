"""The report's HTML: one file, everything inline (plotly.js from the plotly package, the
page's style and script, the data as JSON), so it opens with no network.

The runs table, the media, tensors and debug-dump sections are HTML made here (escaped);
charts are drawn in the browser by app.js from the JSON data.
"""

import html
import json
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
e = html.escape


def _inline_js(text):
    """Text safe inside <script>: no "</script" can end it early."""
    return text.replace("</", "<\\/")


def plotly_js():
    from plotly.offline import get_plotlyjs
    return get_plotlyjs()


def _asset(name):
    with open(os.path.join(_HERE, name), encoding="utf-8") as f:
        return f.read()


def render(title, runs, scalars, histograms, media, tensors, debug, generated, system=""):
    """The whole page. runs: data.run_info dicts in order; scalars: {tag: {run_id: series}};
    histograms: [{run_id, tag, steps, bins, counts}]; media, tensors, debug: {run_id: ...}."""
    for i, r in enumerate(runs):
        r["color"] = COLORS[i % len(COLORS)]
        r["label"] = f"{r['name']} ({r['run_id']})" if r["name"] != r["run_id"] else r["run_id"]
    pr_curves, media_html = _media_html(runs, media)
    payload = {"runs": [{k: r[k] for k in ("run_id", "color", "label")} for r in runs],
               "scalars": scalars, "histograms": histograms, "pr_curves": pr_curves}
    body = [f"<h1>{e(title)}</h1>",
            f"<p class=note>{len(runs)} run(s); generated {e(generated)} by tfblackbox report. "
            f"Scalar curves are downsampled to the smallest and largest value per step "
            f"bucket (at most 2000 points a run); smoothing is TensorBoard's (0.6 by default, none "
            f"for series of fewer than 20 points), a single point is a marker.</p>",
            "<h2>Runs</h2>", _runs_table(runs), _run_panels(runs),
            "<h2>Scalars</h2>", _controls(),
            "<div class=charts id=scalar-charts></div>" if scalars else
            "<p class=note>no scalars</p>",
            "<h2>Histograms</h2>",
            "<div class=charts id=histogram-charts></div>" if histograms else
            "<p class=note>no histograms</p>",
            "<h2>Media (latest step of each tag)</h2>", media_html,
            "<h2>Other tensors</h2>", _tensors_html(runs, tensors),
            "<h2>Debug dumps</h2>", _debug_html(runs, debug),
            "<h2>System</h2>", system or "<p class=note>no system metrics</p>",
            "<div id=tfbb-status>loading charts...</div>"]
    if not scalars:
        body.append("<div id=scalar-charts hidden></div>")
    if not histograms:
        body.append("<div id=histogram-charts hidden></div>")
    return "\n".join([
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{e(title)}</title>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<style>{_asset('style.css')}</style>",
        # errors of any script below end up in the status line (and in the tests)
        "<script>window.__tfbbErrors = []; window.addEventListener('error', function (ev) "
        "{ window.__tfbbErrors.push(String(ev.message)); }); (function () { var o = "
        "console.error; console.error = function () { window.__tfbbErrors.push("
        "Array.prototype.join.call(arguments, ' ')); o.apply(console, arguments); }; })();"
        "</script>",
        f"<script>{_inline_js(plotly_js())}</script>",
        "</head><body>", *body,
        f"<script id=tfbb-data type=application/json>{_inline_js(_json(payload))}</script>",
        f"<script>{_inline_js(_asset('app.js'))}</script>",
        "</body></html>"])


def _json(obj):
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)


def _controls():
    return ("<div class=controls><label>smoothing <input id=smoothing type=range min=0 "
            "max=0.99 step=0.01 value=0.6> <span id=smoothing-value>0.60</span></label>"
            "<span class=note id=smoothing-note>series of fewer than 20 points are drawn as "
            "they are until the slider moves</span>"
            "<label><input id=logscale type=checkbox> log scale</label>"
            "<label>x axis <select id=xaxis><option value=step>step</option>"
            "<option value=relative>relative time (h)</option><option value=wall>wall time"
            "</option></select></label></div>")


def _exit_note(code):
    return "" if code in (None, 0) else f" (exit {code})"


def _duration(s):
    if s is None:
        return ""
    s = int(s)
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s" if s >= 3600 else \
        f"{s // 60}m {s % 60:02d}s"


def human_bytes(n):
    """1023 B, 45.3 KiB, 12.0 MiB: as `tfblackbox runs` and `show` print sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _runs_table(runs):
    rows = ["<table><tr><th>run</th><th>id</th><th>project</th><th>status</th><th>started"
            "</th><th>duration</th><th>tags</th><th>host</th><th>size</th><th>config</th></tr>"]
    for r in runs:
        config = json.dumps(r["config"], indent=1, sort_keys=True, default=str)
        rows.append(
            f"<tr><td><span class=swatch style='background:{r['color']}'></span>"
            f"{e(r['name'])}</td><td>{e(r['run_id'])}</td><td>{e(r['project'] or '')}</td>"
            f"<td>{e(r['status'])}{_exit_note(r['exit_code'])}</td>"
            f"<td>{e(r['started'] or '')}</td><td>{_duration(r['duration_s'])}</td>"
            f"<td>{e(', '.join(r['tags']))}</td><td>{e(r['host'] or '')}</td>"
            f"<td class=size title='{r['size_bytes']:,} bytes'>"
            f"{human_bytes(r['size_bytes'])}</td>"
            f"<td><details><summary>{len(r['config'])} key(s)</summary><pre>{e(config)}"
            f"</pre></details>{'<br>' + e(r['notes']) if r['notes'] else ''}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _run_panels(runs):
    """Per run: its summary (a table, as W&B would hold it) and its last console lines."""
    out = []
    for r in runs:
        out.append(f"<div class=run-panel data-run='{e(r['run_id'])}'><h3><span class=swatch "
                   f"style='background:{r['color']}'></span>{e(r['label'])}</h3>")
        entries = r.get("summary") or []
        if entries:
            rows = "".join(f"<tr><td>{e(x['key'])}</td><td>{e(_summary_text(x['value']))}</td>"
                           f"<td>{x['step']}</td></tr>" for x in entries)
            out.append(f"<details class=summary open><summary>summary: {len(entries)} key(s), "
                       f"as W&B holds them after the replay</summary><table class=summary-table>"
                       f"<tr><th>key</th><th>value</th><th>step</th></tr>{rows}</table>"
                       f"</details>")
        else:
            out.append("<p class=note>summary: nothing logged</p>")
        con = r.get("console")
        if con:
            text = "".join(f"<span class=stderr>{e(t)}</span>\n" if s == "stderr" else
                           f"{e(t)}\n" for s, t in con["lines"])
            shown = len(con["lines"])
            head = (f"console: the last {shown} of {con['total']:,} lines" if shown <
                    con["total"] else f"console: {shown} line(s)")
            out.append(f"<details class=console><summary>{head} (stderr in red)</summary>"
                       f"<pre>{text}</pre></details>")
        else:
            out.append("<p class=note>console: none recorded</p>")
        out.append("</div>")
    return "\n".join(out)


_OPS = ("first", "min", "max", "mean", "last")


def _summary_text(v):
    """A summary value as W&B's run overview shows it, in words."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "NaN" if v != v else f"{v:.6g}"
    if isinstance(v, str):
        return v if len(v) <= 300 else v[:300] + "\u2026"
    if isinstance(v, dict) and "_type" in v:
        size = f" {v['width']}\u00d7{v['height']}" if v.get("width") and v.get("height") else ""
        many = f"{v['count']} \u00d7 " if v.get("count") else ""
        return f"{many}{v['_type']}{size}"
    if isinstance(v, dict) and v and set(v) <= set(_OPS):   # define_metric's summary ops
        return " \u00b7 ".join(f"{op} {_summary_text(v[op])}" for op in _OPS if op in v)
    text = json.dumps(v, default=str)
    return text if len(text) <= 300 else text[:300] + "\u2026"


def _media_html(runs, media):
    pr_curves, out = [], []
    for r in runs:
        groups = media.get(r["run_id"]) or []
        if not groups:
            continue
        out.append(f"<h3>{e(r['label'])}</h3><div class=media>")
        for g in groups:
            parts = []
            for i, item in enumerate(g["items"]):
                parts.append(_item_html(r, g, i, item, pr_curves))
            what = f"wandb.{g['wandb_type']}, recorder.log" if g.get("wandb_type") else g["kind"]
            out.append(f"<figure>{''.join(parts)}<figcaption>{e(g['tag'])} \u2014 {e(what)}, "
                       f"step {g['step']}</figcaption></figure>")
        out.append("</div>")
    return pr_curves, "\n".join(out) or "<p class=note>no media</p>"


def _item_html(run, group, i, item, pr_curves):
    kind = group["kind"]
    if kind == "pr_curve":
        div = f"pr-{len(pr_curves)}"
        pr_curves.append({"div": div, "run_id": run["run_id"], "tag": group["tag"],
                          "curve": item["curve"]})
        return f"<div id={div} class=pr-chart style='width:420px'></div>"
    if kind in ("image", "audio", "video"):
        caption = (f"<div class=caption>{e(item['caption'])}</div>" if item.get("caption")
                   else "")
        if "reference" in item:
            return f"<p class=note>a reference: {e(str(item['reference']))}</p>{caption}"
        if "src" not in item:
            return (f"<p class=note>{item['content_type']}, {item['bytes']:,} bytes: not "
                    f"embedded (over the page's media budget)</p>{caption}")
        if kind == "image" or item.get("as_image"):
            return (f"<div class=item><img alt='{e(group['tag'])}' src='{item['src']}' "
                    f"title='{item['width']}x{item['height']}'>{caption}</div>")
        if kind == "video":
            return f"<div class=item><video controls src='{item['src']}'></video>{caption}</div>"
        rate = f"<br><span class=note>{item['sample_rate']:g} Hz</span>" if \
            item.get("sample_rate") else ""
        return f"<div class=item><audio controls src='{item['src']}'></audio>{rate}{caption}</div>"
    more = "<p class=note>(truncated)</p>" if item.get("truncated") else ""
    return f"<pre>{e(item['text'])}</pre>{more}"


def _tensors_html(runs, tensors):
    rows = []
    for r in runs:
        for t in tensors.get(r["run_id"]) or []:
            rows.append(f"<tr><td>{e(r['label'])}</td><td>{e(t['tag'])}</td>"
                        f"<td>{e(t['plugin'] or '')}</td><td>{e(str(t['dtype']))}</td>"
                        f"<td>{e(str(t['shape']))}</td><td>{t['count']}</td>"
                        f"<td>{t['last_step']}</td></tr>")
    if not rows:
        return "<p class=note>none</p>"
    return ("<table><tr><th>run</th><th>tag</th><th>plugin</th><th>dtype</th><th>shape</th>"
            "<th>rows</th><th>last step</th></tr>" + "".join(rows) + "</table>")


def _debug_html(runs, debug):
    out = []
    for r in runs:
        d = debug.get(r["run_id"])
        if not d:
            continue
        nodes = ", ".join(f"{e(n)} ({c})" for n, c in d["top_nodes"])
        out.append(
            f"<h3>{e(r['label'])}</h3><table>"
            f"<tr><th>dumped session.runs</th><td>{d['session_runs']} (steps {d['first_step']}"
            f"..{d['last_step']}; {e(json.dumps(d['statuses']))})</td></tr>"
            f"<tr><th>tensors</th><td>{d['tensors']:,} ({human_bytes(d['bytes'])})</td></tr>"
            f"<tr><th>debug ops</th><td>{e(json.dumps(d['debug_ops']))}</td></tr>"
            f"<tr><th>devices</th><td>{e(', '.join(d['devices']))}</td></tr>"
            f"<tr><th>partition graphs</th><td>{d['graphs']}</td></tr>"
            f"<tr><th>most dumped nodes</th><td>{nodes}</td></tr>"
            f"<tr><th>rebuild</th><td><code>replay --to debug-dump --run {e(r['run_id'])} "
            f"--out DIR --steps {d['first_step']}:{d['first_step'] + 1}</code></td></tr>"
            f"</table>")
    return "\n".join(out) or "<p class=note>none</p>"
