// The trainingd monitor page: polls the monitor's JSON endpoints about once a second and draws with uPlot.
// Everything comes from this server (no CDN); text from the home (file names, reasons) is set with
// textContent only. window.__trainingd exposes the charts and counters for the browser test and for debugging.
(function () {
  "use strict";

  var POLL_MS = 1000;
  var SLOW_EVERY = 2;            // metrics, queue, jobs and system every 2nd poll
  var MAX_POINTS = 2000;         // per chart; the server downsamples the window to this many
  var SYSTEM_HISTORY = 180;      // samples of CPU/RAM/GPU (about 6 minutes)
  var JOBS_PAGE = 20;
  var AXIS_LABELS = { examples: "examples trained", tokens: "tokens trained", steps: "optimizer steps",
    time: "training time (idle gaps compressed)" };

  var token = (document.querySelector('meta[name="trainingd-token"]') || {}).content || "";

  var state = {
    axis: "examples",            // the x axis of the metrics charts: the adapter's life (see AXIS_LABELS)
    window: "all",               // all | job | jobs:N | 24h
    zoom: null,                  // [x_min, x_max] after a drag on a chart, null for the whole window
    metricsKey: null,            // what the last answer held (rows, window, zoom): unchanged means no redraw
    boundaries: [],              // where each file starts on the axis
    x: [], loss: [], lr: [], tps: [],
    evalX: [], evalLoss: [],
    jobsOffset: 0, jobsTotal: 0, jobs: [],
    sysX: [], cpu: [], ram: [], gpu: [],
    smoothing: 0.6,
    polls: 0, errors: 0, lastStatus: null, inFlight: false
  };
  var charts = {};
  window.__trainingd = { state: state, charts: charts, polls: 0 };

  function $(id) { return document.getElementById(id); }
  function setText(id, text) { $(id).textContent = text; }
  function isNum(v) { return typeof v === "number" && isFinite(v); }

  function fmtNum(v, digits) {
    if (!isNum(v)) return "–";
    if (v !== 0 && (Math.abs(v) < 1e-2 || Math.abs(v) >= 1e6)) return v.toExponential(2);
    return v.toFixed(digits === undefined ? 3 : digits);
  }
  function fmtDuration(s) {
    if (!isNum(s)) return "–";
    s = Math.max(0, Math.round(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + sec + "s";
    return sec + "s";
  }
  function fmtBytes(b) {
    if (!isNum(b)) return "–";
    var units = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return b.toFixed(i ? 1 : 0) + " " + units[i];
  }

  // TensorBoard's smoothing: ema_t = s*ema_{t-1} + (1-s)*x_t, divided by 1 - s^t so early values are not
  // pulled toward 0.
  function debiasedEma(values, s) {
    var out = new Array(values.length), last = 0, n = 0;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (!isNum(v)) { out[i] = null; continue; }
      n++;
      last = last * s + (1 - s) * v;
      out[i] = s === 0 ? v : last / (1 - Math.pow(s, n));
    }
    return out;
  }

  // --- charts -------------------------------------------------------------------------------------------
  function size(el) {
    return { width: Math.max(200, el.clientWidth || 400), height: 200 };
  }

  function fmtX(v) {
    if (!isNum(v)) return "";
    if (state.axis === "time") return fmtDuration(v);
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(0) + "k";
    return String(Math.round(v));
  }

  // Faint vertical lines where each file starts (state.boundaries), drawn under the series.
  function boundaryPlugin() {
    return { hooks: { drawClear: [function (u) {
      var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
      ctx.save();
      ctx.strokeStyle = "rgba(120, 120, 120, 0.35)";
      ctx.lineWidth = 1;
      ctx.setLineDash([3, 3]);
      state.boundaries.forEach(function (b) {
        if (!isNum(b.x) || b.x < u.scales.x.min || b.x > u.scales.x.max) return;
        var px = Math.round(u.valToPos(b.x, "x", true)) + 0.5;
        ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, top + height); ctx.stroke();
      });
      ctx.restore();
    }] } };
  }

  // A drag on any metrics chart zooms every one of them: the server sends that range at full resolution.
  function zoomPlugin() {
    return { hooks: { setSelect: [function (u) {
      if (u.select.width < 2) return;
      var lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
      u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
      setZoom([lo, hi]);
    }] } };
  }

  function makeChart(id, series, data, extra) {
    var el = $(id);
    var opts = Object.assign({
      width: size(el).width, height: size(el).height,
      scales: { x: { time: true } },
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      axes: [{}, { size: 60 }],
      series: [{}].concat(series)
    }, extra || {});
    return new uPlot(opts, data, el);
  }

  function metricsChart(id, series, yValues) {
    return makeChart(id, series, [[]].concat(series.map(function () { return []; })), {
      scales: { x: { time: false } },
      cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: "life" } },
      plugins: [boundaryPlugin(), zoomPlugin()],
      axes: [{ values: function (u, vals) { return vals.map(fmtX); } },
        yValues ? { size: 70, values: yValues } : { size: 60 }],
      series: [{ label: AXIS_LABELS[state.axis], value: function (u, v) { return fmtX(v); } }].concat(series)
    });
  }

  function initCharts() {
    charts.loss = metricsChart("chart-loss", [
      { label: "loss", stroke: "rgba(31, 119, 180, 0.35)", width: 1, points: { show: true, size: 3 } },
      { label: "smoothed", stroke: "rgb(31, 119, 180)", width: 2.5, spanGaps: true }
    ]);
    charts.lr = metricsChart("chart-lr", [{ label: "learning rate", stroke: "rgb(44, 160, 44)", width: 2,
      value: function (u, v) { return fmtNum(v); } }],
      function (u, vals) { return vals.map(function (v) { return fmtNum(v, 2); }); });
    charts.tps = metricsChart("chart-tps", [{ label: "tokens/s", stroke: "rgb(255, 127, 14)", width: 2 }]);
    charts.evalLoss = metricsChart("chart-eval", [{ label: "eval loss", stroke: "rgb(214, 39, 40)", width: 2,
      points: { show: true, size: 6 } }]);
    // Held-out evaluations (/api/eval): accuracy against examples trained, not time.
    charts.accuracy = makeChart("chart-accuracy", [
      { label: "exact match", stroke: "rgb(44, 160, 44)", width: 2, points: { show: true, size: 6 } },
      { label: "token accuracy", stroke: "rgb(23, 190, 207)", width: 1.5, dash: [4, 4], points: { show: true, size: 4 } }
    ], [[], [], []], { scales: { x: { time: false }, y: { range: [0, 1] } },
      axes: [{ label: "examples trained" }, { size: 60 }] });
    charts.system = makeChart("chart-system", [
      { label: "CPU %", stroke: "rgb(148, 103, 189)", width: 2 },
      { label: "RAM %", stroke: "rgb(140, 86, 75)", width: 2 },
      { label: "GPU %", stroke: "rgb(23, 190, 207)", width: 2, spanGaps: true }
    ], [[], [], [], []], { scales: { x: { time: true }, y: { range: [0, 100] } } });
    window.addEventListener("resize", function () {
      Object.keys(charts).forEach(function (k) {
        var c = charts[k];
        c.setSize(size(c.root.parentNode));
      });
    });
  }

  // A panel with nothing to draw says why and how to fill it, instead of showing empty axes.
  function explain(id, text) {
    var el = $(id);
    el.hidden = !text;
    el.textContent = text || "";
    var chart = el.nextElementSibling;  // the panel's chart: no empty axes under the explanation
    if (chart && chart.classList.contains("chart")) chart.style.display = text ? "none" : "";
  }

  function redrawMetrics() {
    var smooth = debiasedEma(state.loss, state.smoothing);
    charts.loss.setData([state.x, state.loss, smooth]);
    charts.lr.setData([state.x, state.lr]);
    charts.tps.setData([state.x, state.tps]);
    charts.evalLoss.setData([state.evalX, state.evalLoss]);
    var running = state.lastStatus && state.lastStatus.daemon_running;
    var none = state.x.length ? "" : (state.zoom ? "Nothing in the zoomed range: reset the zoom."
      : state.window === "all" ? "No training step yet: " + (running ? "drop a .jsonl file into inbox/ and "
        + "the chart fills as it trains." : "start the daemon (./start_all.sh) and drop a .jsonl file into inbox/.")
      : "No training step in this window: choose a wider one.");
    ["loss", "lr", "tps"].forEach(function (k) { explain("empty-" + k, none); });
    explain("empty-eval", state.evalX.length ? "" : "No held-out loss: set \u201ceval_fraction\u201d (e.g. 0.05) " +
      "in config.json to hold out that share of each file, with \u201ceval_steps\u201d for how often.");
    setText("axis-info", state.boundaries.length + (state.boundaries.length === 1 ? " file" : " files") +
      (state.zoom ? " · zoomed " + fmtX(state.zoom[0]) + "–" + fmtX(state.zoom[1]) : ""));
    $("btn-unzoom").hidden = !state.zoom;
  }

  // --- data ---------------------------------------------------------------------------------------------
  function getJSON(path) {
    return fetch(path, { cache: "no-store", headers: { "Accept": "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error(path + ": HTTP " + r.status);
      return r.json();
    });
  }

  function setMetrics(doc) {
    var key = [doc.rows, doc.axis, doc.window, doc.matched, JSON.stringify(state.zoom)].join("|");
    if (key === state.metricsKey) return false;
    state.metricsKey = key;
    ["x", "loss", "lr", "tps", "evalX", "evalLoss"].forEach(function (k) { state[k] = []; });
    state.boundaries = doc.boundaries || [];
    var lastX = -Infinity, lastEval = -Infinity;
    doc.points.forEach(function (p) {
      var x = p.x;
      if (!isNum(x)) return;
      if (isNum(p.eval_loss)) {
        if (x <= lastEval) x = lastEval + 1e-6;
        lastEval = x;
        state.evalX.push(x); state.evalLoss.push(p.eval_loss);
        return;
      }
      if (!isNum(p.loss) && !isNum(p.learning_rate) && !isNum(p.tokens_per_s)) return;
      if (x <= lastX) x = lastX + 1e-6;  // uPlot needs x strictly increasing
      lastX = x;
      state.x.push(x);
      state.loss.push(isNum(p.loss) ? p.loss : null);
      state.lr.push(isNum(p.learning_rate) ? p.learning_rate : null);
      state.tps.push(isNum(p.tokens_per_s) ? p.tokens_per_s : null);
    });
    return true;
  }

  function metricsPath() {
    var q = "axis=" + encodeURIComponent(state.axis) + "&window=" + encodeURIComponent(state.window) +
      "&max_points=" + MAX_POINTS;
    if (state.zoom) q += "&x_min=" + state.zoom[0] + "&x_max=" + state.zoom[1];
    return "/api/metrics?" + q;
  }

  function pollMetrics() {
    return getJSON(metricsPath()).then(function (doc) {
      if (setMetrics(doc) || state.metricsKey === null) redrawMetrics();
    });
  }

  function setZoom(range) {
    state.zoom = range;
    state.metricsKey = null;
    pollMetrics();
  }

  function showStatus(view) {
    state.lastStatus = view;
    var doc = view.status || {};
    var job = doc.job || {}, m = doc.metrics || {}, control = doc.control || {};
    var status = doc.status || (view.daemon_running ? "starting" : "no status");
    var shown = status;
    if (control.paused && status !== "paused" && status !== "stopped") shown = "pausing";
    if (!view.daemon_running && status !== "stopped" && doc.status) shown = status + " (daemon not running)";
    var badge = $("badge");
    badge.textContent = shown;
    badge.dataset.status = status;
    badge.className = "badge badge-" + status.replace(/[^a-z]/g, "");

    var stale = $("stale");
    if (view.stale) {
      stale.hidden = false;
      stale.textContent = view.daemon_running
        ? "Stale status: the daemon holds the lock but has not updated its status for " + fmtDuration(view.age_s) +
          " (hung?). Check logs/daemon.log."
        : "Stale status: it says \u201c" + status + "\u201d but no daemon is running (it stopped or crashed " +
          fmtDuration(view.age_s) + " ago). Start it again with ./start_all.sh.";
    } else if (!doc.status) {
      stale.hidden = false;
      stale.textContent = view.daemon_running ? "The daemon is starting: no status yet."
        : "No daemon is running in " + (view.home || "this home") + " and there is no status file yet.";
    } else {
      stale.hidden = true;
    }

    setText("model", (doc.model && doc.model.model_display_name) || doc.model_display_name || "");
    setText("current-file", job.file || doc.current_file || "–");
    setText("step", isNum(job.step) ? String(job.step) : "–");
    setText("total-steps", isNum(job.total_steps) ? String(job.total_steps) : "–");
    setText("epoch", isNum(job.epoch) ? String(job.epoch) : "–");
    var progress = isNum(job.progress) ? job.progress
      : (isNum(job.step) && isNum(job.total_steps) && job.total_steps > 0 ? job.step / job.total_steps : null);
    $("progress-bar").style.width = (isNum(progress) ? Math.min(100, progress * 100) : 0) + "%";
    setText("progress-text", isNum(progress) ? (progress * 100).toFixed(1) + "%" : "–");
    setText("eta", fmtDuration(m.eta_seconds));
    setText("tokens-per-s", fmtNum(m.tokens_per_s, 1));
    setText("loss", fmtNum(isNum(m.loss) ? m.loss : doc.loss, 4));
    setText("lr", fmtNum(m.learning_rate));
    setText("updated", doc.updated_at ? "status updated " + doc.updated_at : "no status file");
    showLevel(doc.auto_generate);
    $("btn-pause").disabled = !view.daemon_running || !!control.paused;
    $("btn-resume").disabled = !view.daemon_running || !control.paused;
    $("btn-skip").disabled = !view.daemon_running || !job.id;
  }

  // The auto-generated puzzles' level and why (the curriculum raises it with held-out exact match).
  function showLevel(ag) {
    var el = $("level");
    el.hidden = !(ag && ag.enabled && isNum(ag.level));
    if (el.hidden) return;
    var cur = ag.curriculum || {};
    el.textContent = "generated data: level " + ag.level + (cur.enabled ? " of " + cur.max_level : "") +
      (ag.level_reason ? " — " + ag.level_reason : "");
  }

  function jobItem(job, note) {
    var li = document.createElement("li");
    var name = document.createElement("span");
    name.className = "job-file";
    name.textContent = job.file || job.original_name || job.id;
    li.appendChild(name);
    var meta = document.createElement("span");
    meta.className = "job-meta " + job.state;
    meta.textContent = " " + (note || job.state);
    li.appendChild(meta);
    if (job.state === "failed" && job.reason) {
      var reason = document.createElement("div");
      reason.className = "reason";
      reason.textContent = job.reason;
      li.appendChild(reason);
    }
    return li;
  }

  function fillList(id, jobs, note, total) {
    var ul = $(id);
    ul.replaceChildren.apply(ul, jobs.map(function (j) { return jobItem(j, note && note(j)); }));
    if (!jobs.length) {
      var li = document.createElement("li");
      li.className = "muted";
      li.textContent = "none";
      ul.appendChild(li);
    } else if (total > jobs.length) {
      var more = document.createElement("li");
      more.className = "muted";
      more.textContent = "… and " + (total - jobs.length) + " more";
      ul.appendChild(more);
    }
  }

  function showQueue(doc) {
    var c = doc.counts, s = doc.states;
    ["high", "normal", "low"].forEach(function (p) { setText("q-" + p, String(c.pending[p])); });
    ["processing", "done", "failed"].forEach(function (k) { setText("q-" + k, String(c[k])); });
    var active = s.processing.jobs.concat(s.pending.jobs);
    fillList("queue-active", active, function (j) { return j.state === "processing" ? "running" : "pending · " + j.priority; },
      s.processing.total + s.pending.total);
    fillList("queue-failed", s.failed.jobs, null, s.failed.total);
    fillList("queue-done", s.done.jobs, null, s.done.total);
  }

  function showSystem(doc) {
    var cpu = doc.cpu || {}, mem = doc.memory || {}, disk = doc.disk || {}, procs = doc.processes || {};
    setText("cpu", isNum(cpu.percent) ? cpu.percent.toFixed(0) + "% of " + cpu.count : "–");
    setText("ram", isNum(mem.percent) ? mem.percent.toFixed(0) + "% (" + fmtBytes(mem.used_bytes) + ")" : "–");
    setText("disk", isNum(disk.free_bytes) ? fmtBytes(disk.free_bytes) + " free" : "–");
    setText("rss-daemon", fmtBytes((procs.daemon || {}).rss_bytes));
    setText("rss-trainer", fmtBytes((procs.trainer || {}).rss_bytes));
    var gpus = doc.gpus || [];
    var box = $("gpus");
    box.replaceChildren.apply(box, gpus.map(function (g) {
      var div = document.createElement("div");
      div.className = "row";
      div.textContent = "GPU " + g.index + " " + (g.name || "") + ": " +
        (isNum(g.util_percent) ? g.util_percent + "% busy, " : "") +
        fmtBytes(g.memory_used_bytes) + " / " + fmtBytes(g.memory_total_bytes) +
        (isNum(g.temperature_c) ? ", " + g.temperature_c + " °C" : "") +
        (isNum(g.power_w) ? ", " + g.power_w.toFixed(0) + " W" : "");
      return div;
    }));
    if (!gpus.length) {
      var none = document.createElement("div");
      none.className = "muted";
      none.textContent = "no GPU (or no NVML)";
      box.appendChild(none);
    }
    var utils = gpus.map(function (g) { return g.util_percent; }).filter(isNum);
    state.sysX.push(Date.now() / 1000);
    state.cpu.push(isNum(cpu.percent) ? cpu.percent : null);
    state.ram.push(isNum(mem.percent) ? mem.percent : null);
    state.gpu.push(utils.length ? utils.reduce(function (a, b) { return a + b; }, 0) / utils.length : null);
    ["sysX", "cpu", "ram", "gpu"].forEach(function (k) {
      if (state[k].length > SYSTEM_HISTORY) state[k].splice(0, state[k].length - SYSTEM_HISTORY);
    });
    charts.system.setData([state.sysX, state.cpu, state.ram, state.gpu]);
  }

  function showEval(doc) {
    var evals = (doc.evals || []).filter(function (e) { return isNum(e.trained_examples) && isNum(e.exact_match); });
    charts.accuracy.setData([evals.map(function (e) { return e.trained_examples; }),
      evals.map(function (e) { return e.exact_match; }),
      evals.map(function (e) { return isNum(e.token_accuracy) ? e.token_accuracy : null; })]);
    var last = evals[evals.length - 1];
    setText("eval-last", last ? "· last " + last.correct + "/" + last.total + " after " + last.trained_examples +
      " examples" : "");
    explain("empty-accuracy", evals.length ? "" : "No held-out evaluation yet: set \u201cevaluation\u201d: " +
      "{\u201cafter_each_job\u201d: true} in config.json (or run trainingd eval) to score the adapter on a fixed " +
      "held-out set after each file.");
  }

  // --- jobs table ---------------------------------------------------------------------------------------
  function fmtScore(s) {
    if (!s || !isNum(s.exact_match)) return "–";
    return s.exact_match.toFixed(2) + (isNum(s.correct) && isNum(s.total) ? " (" + s.correct + "/" + s.total + ")" : "");
  }

  function cell(text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function jobRow(j) {
    var tr = document.createElement("tr");
    tr.dataset.job = j.job_id || "";
    tr.className = "job-" + (j.state || "unknown");
    tr.appendChild(cell(j.finished_at ? j.finished_at.replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : "–",
      "nowrap"));
    var file = cell(j.file || j.job_id || "–", "job-file");
    if (j.reason) file.title = j.reason;
    tr.appendChild(file);
    tr.appendChild(cell(j.state === "failed" ? "failed" : (j.result || j.state || "–"), "job-meta " + j.state));
    var kept = isNum(j.kept) ? j.kept : j.examples;
    var dropped = (j.dropped_too_long || 0) + (j.no_trained_tokens || 0);
    tr.appendChild(cell(isNum(kept) ? kept + (dropped ? " / −" + dropped : "") : "–", "num"));
    tr.appendChild(cell(isNum(j.steps) ? String(j.steps) : "–", "num"));
    tr.appendChild(cell(fmtNum(j.loss, 4), "num"));
    tr.appendChild(cell(fmtScore(j.score_before) + " → " + fmtScore(j.score_after), "num nowrap"));
    var gate = j.gate;
    var decision = cell(gate ? (gate.decision || "–") : "off", "gate " + (gate ? "gate-" + gate.decision : "gate-off"));
    if (gate && gate.reason) {
      decision.title = gate.reason;
      var why = document.createElement("div");
      why.className = "reason";
      why.textContent = gate.reason;
      decision.appendChild(why);
    }
    tr.appendChild(decision);
    tr.appendChild(cell(fmtDuration(j.seconds), "num"));
    tr.appendChild(cell(fmtNum(j.tokens_per_s, 1), "num"));
    var links = document.createElement("td");
    if (j.job_id) {
      var a = document.createElement("a");
      a.href = "/api/lineage?job_id=" + encodeURIComponent(j.job_id);
      a.textContent = j.snapshot ? j.snapshot.name : "lineage";
      if (j.snapshot && j.snapshot.rejected) a.className = "rejected";
      links.appendChild(a);
    }
    tr.appendChild(links);
    return tr;
  }

  function showJobs(doc) {
    state.jobs = doc.jobs || [];
    state.jobsTotal = doc.total || 0;
    var body = $("jobs-body");
    body.replaceChildren.apply(body, state.jobs.map(jobRow));
    explain("empty-jobs", state.jobsTotal ? "" : "No finished job yet: each file that ends in done/ or failed/ " +
      "gets a row here.");
    var from = state.jobsTotal ? state.jobsOffset + 1 : 0, to = state.jobsOffset + state.jobs.length;
    setText("jobs-range", from + "–" + to + " of " + state.jobsTotal);
    $("jobs-newer").disabled = state.jobsOffset <= 0;
    $("jobs-older").disabled = to >= state.jobsTotal;
  }

  function pollJobs() {
    return getJSON("/api/jobs?offset=" + state.jobsOffset + "&limit=" + JOBS_PAGE).then(showJobs);
  }

  function showMessage(text, isError) {
    var el = $("message");
    el.hidden = !text;
    el.textContent = text || "";
    el.className = "message" + (isError ? " error" : "");
  }

  function poll() {
    if (state.inFlight) return;
    state.inFlight = true;
    var slow = state.polls % SLOW_EVERY === 0;
    var work = [getJSON("/api/status").then(showStatus)];
    if (slow) {
      work.push(pollMetrics());
      work.push(pollJobs());
      work.push(getJSON("/api/queue?limit=20").then(showQueue));
      work.push(getJSON("/api/system").then(showSystem));
      work.push(getJSON("/api/eval").then(showEval));
    }
    Promise.all(work).then(function () {
      if (state.errors) showMessage("");
      state.errors = 0;
    }, function (e) {
      state.errors++;
      showMessage("The monitor did not answer (" + e.message + "); retrying.", true);
    }).then(function () {
      state.polls++;
      window.__trainingd.polls = state.polls;
      state.inFlight = false;
    });
  }

  // --- control ------------------------------------------------------------------------------------------
  function control(action) {
    showMessage(action + "…");
    fetch("/api/control/" + action, { method: "POST", headers: { "X-Trainingd-Token": token } })
      .then(function (r) { return r.json().then(function (doc) { return { ok: r.ok, doc: doc }; }); })
      .then(function (res) {
        showMessage(res.ok ? action + " requested" : action + " refused: " + (res.doc.error || res.doc.message ||
          JSON.stringify(res.doc)), !res.ok);
        poll();
      }, function (e) { showMessage(action + " failed: " + e.message, true); });
  }

  function init() {
    initCharts();
    var slider = $("smoothing");
    slider.addEventListener("input", function () {
      state.smoothing = Math.min(0.999, Math.max(0, parseFloat(slider.value) || 0));
      setText("smoothing-value", state.smoothing.toFixed(2));
      redrawMetrics();
    });
    $("axis").addEventListener("change", function () {
      state.axis = $("axis").value;
      state.zoom = null;
      setZoom(null);
    });
    $("window").addEventListener("change", function () {
      state.window = $("window").value;
      setZoom(null);
    });
    $("btn-unzoom").addEventListener("click", function () { setZoom(null); });
    $("jobs-newer").addEventListener("click", function () {
      state.jobsOffset = Math.max(0, state.jobsOffset - JOBS_PAGE);
      pollJobs();
    });
    $("jobs-older").addEventListener("click", function () {
      state.jobsOffset += JOBS_PAGE;
      pollJobs();
    });
    $("btn-pause").addEventListener("click", function () { control("pause"); });
    $("btn-resume").addEventListener("click", function () { control("resume"); });
    $("btn-skip").addEventListener("click", function () {
      if (window.confirm("Skip the current file? Its changes to the adapter are discarded.")) control("skip");
    });
    poll();
    setInterval(poll, POLL_MS);
  }

  window.__trainingd.debiasedEma = debiasedEma;
  window.__trainingd.setZoom = setZoom;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
