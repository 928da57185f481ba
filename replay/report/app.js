// The report's charts: plotly.js (inlined before this) draws the data in #tfbb-data.
// Scalars: one chart per tag, the runs overlaid; smoothing (TensorBoard's debiased EMA),
// log scale and the x axis apply to every chart. A series of fewer than SHORT points is drawn
// with its points marked and, until the slider moves, unsmoothed (an EMA bends a 4-point
// epoch curve far from its values); a single point is a marker; a chart of one value has it
// in the middle of its y axis. Each chart's title is HTML above the plot, clear of plotly's
// toolbar. When done, #tfbb-status carries the chart count, the points drawn per tag and any
// errors (the tests read them from the DOM).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tfbb-data").textContent);
  var status = document.getElementById("tfbb-status");
  var colors = {};
  data.runs.forEach(function (r) { colors[r.run_id] = r.color; });
  var names = {};
  data.runs.forEach(function (r) { names[r.run_id] = r.label; });
  var config = {responsive: true, displaylogo: false};
  var SHORT = 20;
  var sliderMoved = false;

  function ema(ys, weight) {
    // a constant series stays as it is (as TensorBoard does: no debiasing noise)
    if (!weight || ys.every(function (y) { return y === ys[0]; })) { return ys; }
    var last = 0, n = 0, out = [];
    for (var i = 0; i < ys.length; i++) {
      last = last * weight + (1 - weight) * ys[i];
      n += 1;
      out.push(last / (1 - Math.pow(weight, n)));
    }
    return out;
  }

  function xValues(series, mode) {
    if (mode === "step") { return series.steps; }
    if (mode === "relative") {
      var t0 = series.walls.length ? series.walls[0] : 0;
      return series.walls.map(function (w) { return (w - t0) / 3600; });
    }
    return series.walls.map(function (w) { return new Date(w * 1000); });
  }

  function controls() {
    return {
      smoothing: parseFloat(document.getElementById("smoothing").value),
      log: document.getElementById("logscale").checked,
      x: document.getElementById("xaxis").value
    };
  }

  var scalarDivs = [];

  // A chart whose values are all one value v: plotly's own range (v +- 1) shows 0.01 as 0;
  // this one centres v with half its size each side (+-1 for 0). Else null (plotly's).
  function flatRange(perRun) {
    var v = null;
    var runs = Object.keys(perRun);
    for (var i = 0; i < runs.length; i++) {
      var ys = perRun[runs[i]].values;
      for (var j = 0; j < ys.length; j++) {
        if (v === null) { v = ys[j]; } else if (ys[j] !== v) { return null; }
      }
    }
    if (v === null) { return null; }
    var d = v === 0 ? 1 : Math.abs(v) / 2;
    return [v - d, v + d];
  }

  function drawScalars() {
    var c = controls();
    document.getElementById("smoothing-value").textContent = c.smoothing.toFixed(2);
    var jobs = scalarDivs.map(function (div) {
      var perRun = data.scalars[div.dataset.tag];
      var traces = [];
      Object.keys(perRun).forEach(function (runId) {
        var s = perRun[runId];
        var x = xValues(s, c.x);
        var n = s.values.length;
        var weight = n > 1 && (sliderMoved || n >= SHORT) ? c.smoothing : 0;
        traces.push({x: x, y: s.values, type: "scatter",
                     mode: n === 1 ? "markers" : n < SHORT ? "lines+markers" : "lines",
                     name: names[runId], legendgroup: runId, showlegend: !weight,
                     line: {color: colors[runId], width: 1},
                     marker: {color: colors[runId], size: n === 1 ? 8 : 5},
                     opacity: weight ? 0.3 : 1, meta: "raw"});
        if (weight) {
          traces.push({x: x, y: ema(s.values, weight), type: "scatter", mode: "lines",
                       name: names[runId], legendgroup: runId,
                       line: {color: colors[runId], width: 2}, meta: "smoothed"});
        }
      });
      var layout = {height: 300, margin: {l: 55, r: 10, t: 28, b: 40}, showlegend: true,
                    legend: {orientation: "h", y: -0.25},
                    xaxis: {title: {text: {step: "step", relative: "hours", wall: ""}[c.x]}},
                    yaxis: {type: c.log ? "log" : "linear"}};
      var flat = flatRange(perRun);
      if (flat && !c.log) { layout.yaxis.range = flat; }
      return Plotly.react(div.plot, traces, layout, config).then(function (gd) {
        var n = 0;
        gd.data.forEach(function (t) { if (t.meta === "raw") { n += t.x.length; } });
        div.dataset.points = String(n);
      });
    });
    return Promise.all(jobs);
  }

  // <div class="chart ..."><div class=chart-title>title <span>what</span></div><div class=plot>
  function chartBox(box, kind, title, what) {
    var div = document.createElement("div");
    div.className = "chart " + kind;
    var head = document.createElement("div");
    head.className = "chart-title";
    head.textContent = title;
    if (what) {
      var span = document.createElement("span");
      span.className = "chart-what";
      span.textContent = what;
      head.appendChild(span);
    }
    div.plot = document.createElement("div");
    div.plot.className = "plot";
    div.appendChild(head);
    div.appendChild(div.plot);
    box.appendChild(div);
    return div;
  }

  function scalarCharts() {
    var box = document.getElementById("scalar-charts");
    Object.keys(data.scalars).sort().forEach(function (tag) {
      var skipped = 0;
      Object.keys(data.scalars[tag]).forEach(function (runId) {
        skipped += data.scalars[tag][runId].nonfinite;
      });
      var div = chartBox(box, "scalar-chart", tag,
                         skipped ? skipped + " NaN/inf not drawn" : "");
      div.dataset.tag = tag;
      scalarDivs.push(div);
    });
    function redraw(ev) {
      if (ev.target.id === "smoothing") { sliderMoved = true; }
      return drawScalars();
    }
    ["smoothing", "logscale", "xaxis"].forEach(function (id) {
      document.getElementById(id).addEventListener("input", redraw);
      document.getElementById(id).addEventListener("change", redraw);
    });
    return drawScalars();
  }

  function histogramCharts() {
    var box = document.getElementById("histogram-charts");
    return Promise.all(data.histograms.map(function (h) {
      var div = chartBox(box, "histogram-chart", h.tag, names[h.run_id]);
      div.dataset.tag = h.tag;
      return Plotly.newPlot(div.plot, [{z: h.counts, x: h.steps, y: h.bins, type: "heatmap",
                                        colorscale: "YlOrRd", reversescale: true,
                                        colorbar: {title: {text: "count"}}}],
                            {height: 300, margin: {l: 55, r: 10, t: 28, b: 40},
                             xaxis: {title: {text: "step"}}, yaxis: {title: {text: "value"}}},
                            config);
    }));
  }

  function prCharts() {
    return Promise.all(data.pr_curves.map(function (p) {
      var div = document.getElementById(p.div);
      return Plotly.newPlot(div, [{x: p.curve.recall, y: p.curve.precision, type: "scatter",
                                   mode: "lines+markers", line: {color: colors[p.run_id]}}],
                            {height: 260, margin: {l: 50, r: 10, t: 10, b: 40},
                             xaxis: {title: {text: "recall"}, range: [0, 1]},
                             yaxis: {title: {text: "precision"}, range: [0, 1.05]}},
                            config);
    }));
  }

  function finish(error) {
    if (error) { window.__tfbbErrors.push(String(error && error.stack || error)); }
    var points = {};
    scalarDivs.forEach(function (d) { points[d.dataset.tag] = Number(d.dataset.points || 0); });
    status.dataset.charts = String(scalarDivs.length);
    status.dataset.histograms = String(data.histograms.length);
    status.dataset.points = JSON.stringify(points);
    status.dataset.errors = JSON.stringify(window.__tfbbErrors);
    status.dataset.done = "1";
    status.textContent = scalarDivs.length + " scalar chart(s) drawn" +
      (window.__tfbbErrors.length ? "; errors: " + window.__tfbbErrors.join("; ") : "");
  }

  try {
    Promise.all([scalarCharts(), histogramCharts(), prCharts()])
      .then(function () { finish(null); }, finish);
  } catch (e) {
    finish(e);
  }
})();
