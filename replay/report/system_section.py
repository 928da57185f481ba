"""The report's System section: per run, what recorder/system/ recorded of the machine (the
environment of each attempt, the run's files) and its system metrics: per key the samples,
smallest, mean, largest and last value, with a small inline SVG of the values over time.
Plain HTML (no script): it adds no chart to app.js's and nothing to the page's data."""

import html
import math

from tfblackbox.schema.codecs import system_read

e = html.escape
SPARK_W, SPARK_H = 160, 24


def section(store, records):
    """The section's HTML for the runs (records), or a note when none has system data."""
    parts = []
    for r in records:
        envs = system_read.environments(store, r.run_id)
        files = system_read.files(store, r.run_id)
        samples = system_read.samples(store, r.run_id)
        if not (envs or files or samples):
            continue
        label = f"{r.name} ({r.run_id})" if r.name and r.name != r.run_id else r.run_id
        parts.append(f"<h3 class=system-run>{e(label)}</h3>")
        for attempt, env in envs:
            parts.append(f"<p class=note>attempt {attempt}: {e(_env_text(env))}</p>")
        if files:
            parts.append("<p class=note>files: " + ", ".join(
                f"{e(ref['path'])} ({ref['size']:,} bytes)" for _a, ref in files) + "</p>")
        if samples:
            parts.append(_metrics_table(samples))
    if not parts:
        return "<p class=note>no system metrics or environment recorded</p>"
    return "<div id=system>" + "\n".join(parts) + "</div>"


def _env_text(env):
    bits = [env.get("os"), env.get("python"), f"host {env.get('host')}",
            f"{env.get('cpu_count', '?')} cores ({env.get('cpu_count_logical', '?')} logical)"]
    if env.get("memory"):
        bits.append(f"{env['memory']['total'] / 2 ** 30:.1f} GiB memory")
    if env.get("gpu_count"):
        bits.append(f"{env['gpu_count']} x {env.get('gpu_type')} (CUDA "
                    f"{env.get('cuda_version', '?')})")
    bits.append(f"program {env.get('program')}")
    return ", ".join(str(b) for b in bits if b)


def _metrics_table(samples):
    keys = sorted({k for s in samples for k in s.values})
    rows = ["<table class=system-metrics><tr><th>key</th><th>samples</th><th>min</th>"
            "<th>mean</th><th>max</th><th>last</th><th>over time</th></tr>"]
    t0, t1 = samples[0].wall_time, samples[-1].wall_time
    for key in keys:
        points = [(s.wall_time, s.values[key]) for s in samples
                  if key in s.values and math.isfinite(s.values[key])]
        if not points:
            continue
        values = [v for _t, v in points]
        rows.append(f"<tr><td>{e(key)}</td><td>{len(values)}</td>" + "".join(
            f"<td>{v:.4g}</td>" for v in (min(values), sum(values) / len(values), max(values),
                                         values[-1])) + f"<td>{_spark(points, t0, t1)}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _spark(points, t0, t1):
    lo, hi = min(v for _t, v in points), max(v for _t, v in points)
    span_t, span_v = (t1 - t0) or 1.0, (hi - lo) or 1.0
    xy = " ".join(f"{(t - t0) / span_t * SPARK_W:.1f},{SPARK_H - (v - lo) / span_v * SPARK_H:.1f}"
                  for t, v in points)
    return (f"<svg width={SPARK_W} height={SPARK_H} viewBox='0 0 {SPARK_W} {SPARK_H}'>"
            f"<polyline fill=none stroke=currentColor points='{xy}'/></svg>")
