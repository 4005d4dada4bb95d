// The layer activity page: polls /api/layers about every 2 s, draws the trainer's latest per-LoRA-module report
// as a layers x module types heatmap, and keeps its own history of the reports it has seen (keyed by step) to
// chart the top changers over time with uPlot. Names come from the home: set with textContent only.
// window.__layers exposes the state and the chart for the browser test and for debugging.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var TOP = 5;
  var MAX_REPORTS = 1000;        // steps kept in the page's history
  var COLORS = ["rgb(31, 119, 180)", "rgb(255, 127, 14)", "rgb(44, 160, 44)", "rgb(214, 39, 40)",
    "rgb(148, 103, 189)"];

  var state = {
    metric: "delta_norm",
    doc: null,                   // the latest report
    job: null,                   // a new job starts a new history
    steps: [],                   // report steps seen, ascending
    deltas: {},                  // step -> {module name: delta_norm}
    topNames: [],
    polls: 0, errors: 0, inFlight: false
  };
  var charts = { top: null };
  window.__layers = { state: state, charts: charts };

  function $(id) { return document.getElementById(id); }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmtNum(v) {
    if (!isNum(v)) return "–";
    if (v !== 0 && (Math.abs(v) < 1e-2 || Math.abs(v) >= 1e4)) return v.toExponential(2);
    return v.toFixed(3);
  }

  // A sequential colour ramp (light yellow -> orange -> dark brown), t in [0, 1].
  var RAMP = [[255, 255, 229], [254, 153, 41], [102, 37, 6]];
  function colour(t) {
    t = Math.max(0, Math.min(1, t));
    var seg = t < 0.5 ? 0 : 1, f = t < 0.5 ? t * 2 : (t - 0.5) * 2;
    var a = RAMP[seg], b = RAMP[seg + 1];
    return "rgb(" + [0, 1, 2].map(function (i) { return Math.round(a[i] + (b[i] - a[i]) * f); }).join(", ") + ")";
  }

  function showMessage(text, isError) {
    var el = $("message");
    el.hidden = !text;
    el.textContent = text || "";
    el.className = "message" + (isError ? " error" : "");
  }

  // --- heatmap ------------------------------------------------------------------------------------------
  function div(cls, text) {
    var d = document.createElement("div");
    d.className = cls;
    if (text !== undefined) d.textContent = text;
    return d;
  }

  function drawHeatmap() {
    var box = $("heatmap");
    var doc = state.doc;
    var rows = doc ? (doc.modules || []) : [];
    var types = [], layers = [], byKey = {};
    rows.forEach(function (r) {
      if (types.indexOf(r.module) < 0) types.push(r.module);
      var layer = isNum(r.layer) ? r.layer : "other";
      if (layers.indexOf(layer) < 0) layers.push(layer);
      byKey[layer + "|" + r.module] = r;
    });
    layers.sort(function (a, b) { return (isNum(a) ? a : Infinity) - (isNum(b) ? b : Infinity); });
    var values = rows.map(function (r) { return r[state.metric]; }).filter(isNum);
    var max = values.length ? Math.max.apply(null, values) : 0;
    $("scale-max").textContent = fmtNum(max);

    box.style.gridTemplateColumns = "auto repeat(" + Math.max(1, types.length) + ", minmax(44px, 1fr))";
    var cells = [div("head", "layer")];
    types.forEach(function (t) { cells.push(div("head", t)); });
    layers.forEach(function (layer) {
      cells.push(div("rowhead", String(layer)));
      types.forEach(function (t) {
        var r = byKey[layer + "|" + t];
        var cell = div("cell");
        if (r) {
          var v = r[state.metric];
          cell.dataset.name = r.name;
          if (isNum(v)) {
            cell.className = "cell filled";
            // sqrt spreads the small values that a few large modules would otherwise wash out
            cell.style.backgroundColor = colour(max > 0 ? Math.sqrt(v / max) : 0);
          }
          cell.title = r.name + "\nupdate_norm " + fmtNum(r.update_norm) + "\ndelta_norm " + fmtNum(r.delta_norm) +
            "\ngrad_norm " + fmtNum(r.grad_norm);
        }
        cells.push(cell);
      });
    });
    box.replaceChildren.apply(box, cells);
  }

  function drawTopList(summary) {
    var ol = $("top");
    var top = (summary && summary.top) || [];
    ol.replaceChildren.apply(ol, top.map(function (r) {
      var li = document.createElement("li");
      li.textContent = r.name + " · Δ " + fmtNum(r.delta_norm) + " · ‖W‖ " + fmtNum(r.update_norm);
      return li;
    }));
  }

  // --- top changers over time ---------------------------------------------------------------------------
  function remember(doc) {
    if (!isNum(doc.step)) return;
    if (doc.job_id !== state.job) {  // another job trains another adapter: its history starts over
      state.job = doc.job_id;
      state.steps = [];
      state.deltas = {};
    }
    var entry = {};
    (doc.modules || []).forEach(function (r) { if (isNum(r.delta_norm)) entry[r.name] = r.delta_norm; });
    if (!(doc.step in state.deltas)) {
      state.steps.push(doc.step);
      state.steps.sort(function (a, b) { return a - b; });
    }
    state.deltas[doc.step] = entry;
    while (state.steps.length > MAX_REPORTS) delete state.deltas[state.steps.shift()];
  }

  // The top changers of the latest report, charted over every report the page has seen.
  function drawTopChart() {
    var latest = state.steps.length ? state.deltas[state.steps[state.steps.length - 1]] : {};
    var names = Object.keys(latest).sort(function (a, b) { return latest[b] - latest[a]; }).slice(0, TOP);
    var data = [state.steps.slice()].concat(names.map(function (n) {
      return state.steps.map(function (s) { var v = state.deltas[s][n]; return isNum(v) ? v : null; });
    }));
    var el = $("chart-top");
    if (!charts.top || names.join("\n") !== state.topNames.join("\n")) {
      if (charts.top) charts.top.destroy();
      state.topNames = names;
      charts.top = new uPlot({
        width: Math.max(200, el.clientWidth || 600), height: 260,
        scales: { x: { time: false } },
        axes: [{ label: "step" }, { size: 70, values: function (u, vals) { return vals.map(fmtNum); } }],
        series: [{ label: "step" }].concat(names.map(function (n, i) {
          return { label: n, stroke: COLORS[i % COLORS.length], width: 2, points: { show: true, size: 5 },
            spanGaps: true, value: function (u, v) { return fmtNum(v); } };
        }))
      }, data, el);
      window.__layers.charts.top = charts.top;
    } else {
      charts.top.setData(data);
    }
  }

  // --- data ---------------------------------------------------------------------------------------------
  function show(view) {
    var doc = view.activity;
    var empty = $("empty");
    if (!doc) {
      empty.hidden = false;
      empty.textContent = (view.daemon_running ? "No layer activity report yet: the trainer writes one every "
        + "layer_stats_steps optimizer steps (config.json) while a job trains."
        : "No daemon is running and there is no layer activity report (status/layer_activity.json) yet.");
      $("report").textContent = "no report";
      state.doc = null;
      drawHeatmap();
      drawTopList(null);
      return;
    }
    empty.hidden = true;
    state.doc = doc;
    $("report").textContent = "job " + (doc.job_id || "–") + " · step " + (isNum(doc.step) ? doc.step : "–") +
      (isNum(doc.previous_step) ? " (Δ since step " + doc.previous_step + ")" : "") +
      " · " + (doc.modules || []).length + " modules";
    $("updated").textContent = isNum(doc.updated_at) ? "report written " + new Date(doc.updated_at * 1000).toISOString()
      : "–";
    remember(doc);
    drawHeatmap();
    drawTopList(view.summary);
    drawTopChart();
  }

  function poll() {
    if (state.inFlight) return;
    state.inFlight = true;
    fetch("/api/layers", { cache: "no-store", headers: { "Accept": "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error("/api/layers: HTTP " + r.status);
      return r.json();
    }).then(function (view) {
      show(view);
      if (state.errors) showMessage("");
      state.errors = 0;
    }, function (e) {
      state.errors++;
      showMessage("The monitor did not answer (" + e.message + "); retrying.", true);
    }).then(function () {
      state.polls++;
      state.inFlight = false;
    });
  }

  function init() {
    var select = $("metric");
    select.addEventListener("change", function () {
      state.metric = select.value;
      drawHeatmap();
    });
    window.addEventListener("resize", function () {
      if (charts.top) charts.top.setSize({ width: Math.max(200, $("chart-top").clientWidth || 600), height: 260 });
    });
    poll();
    setInterval(poll, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
