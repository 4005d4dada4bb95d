// The layer activity page: polls /api/layers about every 2 s, draws the trainer's latest per-LoRA-module report
// as a layers x module types heatmap, and from the trainer's bounded history of reports (status/
// layer_history.jsonl, summarised by the server) charts the largest modules' update norm over the adapter's whole
// life and a modules x jobs heatmap of how far each job moved each module. Names come from the home: set with
// textContent only.
// window.__layers exposes the state and the chart for the browser test and for debugging.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var TOP = 5;
  var COLORS = ["rgb(31, 119, 180)", "rgb(255, 127, 14)", "rgb(44, 160, 44)", "rgb(214, 39, 40)",
    "rgb(148, 103, 189)", "rgb(140, 86, 75)", "rgb(227, 119, 194)", "rgb(23, 190, 207)"];

  var state = {
    metric: "delta_norm",
    doc: null,                   // the latest report
    lifeNames: [],
    perJob: null, cell: null,
    polls: 0, errors: 0, inFlight: false
  };
  var charts = { life: null };
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

  // --- the adapter's life ------------------------------------------------------------------------------
  // The update norm of the modules that are largest now, at every report of the history, against the optimizer
  // steps of the adapter's life (each job's steps follow the previous job's).
  function drawLifeChart(history) {
    var life = (history && history.life) || { x: [], series: {} };
    var names = Object.keys(life.series);
    var data = [life.x.slice()].concat(names.map(function (n) { return life.series[n]; }));
    for (var i = 1; i < data[0].length; i++) if (data[0][i] <= data[0][i - 1]) data[0][i] = data[0][i - 1] + 1e-6;
    var el = $("chart-life");
    if (!charts.life || names.join("\n") !== state.lifeNames.join("\n")) {
      if (charts.life) charts.life.destroy();
      state.lifeNames = names;
      charts.life = new uPlot({
        width: Math.max(200, el.clientWidth || 600), height: 260,
        scales: { x: { time: false } },
        axes: [{ label: "optimizer steps over the adapter's life" },
          { size: 70, values: function (u, vals) { return vals.map(fmtNum); } }],
        series: [{ label: "step" }].concat(names.map(function (n, i) {
          return { label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
            value: function (u, v) { return fmtNum(v); } };
        }))
      }, data, el);
      window.__layers.charts.life = charts.life;
    } else {
      charts.life.setData(data);
    }
  }

  // Modules (rows, model order) x jobs (columns, oldest left): how far the job moved the module's update norm.
  function drawJobHeatmap(history) {
    var per = (history && history.per_job) || { jobs: [], modules: [], change: [] };
    var canvas = $("job-heatmap");
    var rows = per.modules.length, cols = per.jobs.length;
    state.perJob = per;
    var cw = Math.max(4, Math.min(24, Math.floor(((canvas.parentNode.clientWidth || 800) - 10) / Math.max(1, cols))));
    var ch = rows > 80 ? 3 : rows > 30 ? 6 : 12;
    canvas.width = Math.max(1, cols * cw);
    canvas.height = Math.max(1, rows * ch);
    state.cell = { w: cw, h: ch };
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    var max = 0;
    per.change.forEach(function (col) { col.forEach(function (v) { if (isNum(v) && v > max) max = v; }); });
    $("job-scale-max").textContent = fmtNum(max);
    per.change.forEach(function (col, j) {
      col.forEach(function (v, i) {
        if (!isNum(v)) return;
        ctx.fillStyle = colour(max > 0 ? Math.sqrt(v / max) : 0);
        ctx.fillRect(j * cw, i * ch, cw - (cw > 6 ? 1 : 0), ch - (ch > 4 ? 1 : 0));
      });
    });
    $("job-heatmap-info").textContent = cols ? cols + " jobs × " + rows + " modules (last " + cols + " jobs)" : "";
  }

  function describeCell(ev) {
    var per = state.perJob, c = state.cell;
    if (!per || !c) return;
    var rect = ev.target.getBoundingClientRect();
    var j = Math.floor((ev.clientX - rect.left) / c.w), i = Math.floor((ev.clientY - rect.top) / c.h);
    if (j < 0 || j >= per.jobs.length || i < 0 || i >= per.modules.length) return;
    $("job-heatmap-hover").textContent = per.jobs[j] + " · " + per.modules[i] + " · moved " +
      fmtNum(per.change[j][i]);
  }

  function drawRanked(history) {
    var ol = $("ranked");
    var ranked = (history && history.ranked) || [];
    ol.replaceChildren.apply(ol, ranked.map(function (r) {
      var li = document.createElement("li");
      li.textContent = r.name + " · moved " + fmtNum(r.total_change) + " in all";
      return li;
    }));
  }

  function showHistory(history) {
    var n = history ? history.reports : 0;
    var empty = $("empty-history");
    empty.hidden = n > 0;
    empty.textContent = n > 0 ? "" : "No report history yet: the trainer appends every layer report " +
      "(every layer_stats_steps optimizer steps, config.json) to status/layer_history.jsonl while a job trains.";
    drawLifeChart(history);
    drawJobHeatmap(history);
    drawRanked(history);
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
      showHistory(view.history);
      return;
    }
    empty.hidden = true;
    state.doc = doc;
    $("report").textContent = "job " + (doc.job_id || "–") + " · step " + (isNum(doc.step) ? doc.step : "–") +
      (isNum(doc.previous_step) ? " (Δ since step " + doc.previous_step + ")" : "") +
      " · " + (doc.modules || []).length + " modules";
    $("updated").textContent = isNum(doc.updated_at) ? "report written " + new Date(doc.updated_at * 1000).toISOString()
      : "–";
    drawHeatmap();
    drawTopList(view.summary);
    showHistory(view.history);
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
      if (charts.life) charts.life.setSize({ width: Math.max(200, $("chart-life").clientWidth || 600), height: 260 });
    });
    $("job-heatmap").addEventListener("mousemove", describeCell);
    poll();
    setInterval(poll, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
