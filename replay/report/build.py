"""`tfblackbox report --store DIR --out report.html [--run ID ...]`: one self-contained HTML
page of the runs (config, tags, status, duration, size; each run's summary as W&B would hold
it and its last console lines), every scalar tag as an interactive chart with the runs
overlaid (smoothing, log scale), histograms over steps, the latest media of each tag (TF
summaries and wandb objects given to recorder.log), other tensors, and what the debug dumps
hold. It opens with no network: plotly.js comes from the plotly package and is inlined, long
runs are downsampled (downsample.py). The page is written under a temporary name and renamed
into place.
"""

import math
import os
import time

from tfblackbox.schema import BlackboxError, Store

from tfblackbox.cli.exits import EXIT_OK, print_json
from . import console, data, page, summary, system_section, wandb_media


def build(store, run_ids=None, title=None):
    """The page's HTML for the chosen runs (default: all) and a dict of what it holds."""
    records = [store.run(r) for r in dict.fromkeys(run_ids)] if run_ids else store.runs()
    if not records:
        raise BlackboxError(f"store {store.root} holds no runs: nothing to report")
    runs = [data.run_info(store, r) for r in records]
    scalars, histograms, media, tensors, debug = {}, [], {}, {}, {}
    budget = data.Budget()
    for r, info in zip(records, runs):
        stats, last_hist = {}, {}
        for tag, series in data.scalar_series(store, r.run_id).items():
            stats[tag] = series.pop("stats")
            scalars.setdefault(tag, {})[r.run_id] = series
        for tag, h in data.histogram_maps(store, r.run_id).items():
            histograms.append(dict(h, run_id=r.run_id, tag=tag))
            last_hist[tag] = h["steps"][-1]
        media[r.run_id] = (data.latest_media(store, r.run_id, budget) +
                           wandb_media.latest_objects(store, r.run_id, budget))
        tensors[r.run_id] = data.tensor_summary(store, r.run_id)
        debug[r.run_id] = data.debug_summary(store, r.run_id)
        info["summary"] = summary.run_summary(store, r.run_id, stats, last_hist,
                                              media[r.run_id])
        info["console"] = console.last_lines(store, r.run_id)
    for groups in media.values():   # NaN is no JSON
        for g in groups:
            for item in g["items"]:
                if "curve" in item:
                    item["curve"] = _finite(item["curve"])
    title = title or f"tfblackbox report: {os.path.basename(store.root)}"
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    html = page.render(title, runs, scalars, histograms, media, tensors, debug, generated,
                       system=system_section.section(store, records))
    facts = {"runs": [r["run_id"] for r in runs], "scalar_tags": len(scalars),
             "points": {tag: sum(len(s["steps"]) for s in per.values())
                        for tag, per in scalars.items()},
             "histograms": len(histograms),
             "media": sum(len(g["items"]) for gs in media.values() for g in gs)}
    return html, facts


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def write(path, html):
    """Writes the page whole or not at all."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise BlackboxError(f"--out {full} is a directory; expected the path of the HTML file "
                            f"to write (e.g. {os.path.join(full, 'report.html')})")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise BlackboxError(f"--out {full}: its directory {folder} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(full)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(html)
        os.replace(tmp, full)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise BlackboxError(f"cannot write --out {full}: {e.strerror or e}") from e
    return full


def main(store_path, out, runs=(), as_json=False):
    t0 = time.perf_counter()
    store = Store.open(store_path)   # a reader: changes nothing
    html, facts = build(store, runs)
    path = write(out, html)
    facts.update(out=path, bytes=os.path.getsize(path), seconds=time.perf_counter() - t0)
    if as_json:
        print_json(facts)
    else:
        print(f"report of {len(facts['runs'])} run(s), {facts['scalar_tags']} scalar "
              f"tag(s): {path} ({facts['bytes'] / 1e6:.1f} MB, "
              f"{facts['seconds']:.1f} s); open it in a browser, no network needed")
    return EXIT_OK
