// Tiergate's dashboard: fetches /dashboard/data and draws each chart as inline SVG. No framework, no build step,
// nothing loaded from elsewhere. `window.tiergateDashboard` exposes the state for the browser test.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const HEIGHT = 220;
  const MARGIN = { top: 10, right: 14, bottom: 26, left: 62 };
  const COLORS = {
    total: "#374151",
    local: "#0f9d8a",
    frontier: "#7b61ff",
    unrouted: "#d9534f",
    escalated: "#f59e0b",
    spend: "#7b61ff",
    counterfactual: "#9ca3af",
  };
  const TIER_KEYS = ["local", "frontier"];

  const state = { loads: 0, renders: 0, errors: [], data: null, timer: null, inFlight: false };
  window.tiergateDashboard = state;

  // --- formatting ---------------------------------------------------------------------------------------------

  function usd(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const abs = Math.abs(value);
    const digits = abs === 0 ? 2 : abs >= 100 ? 0 : abs >= 1 ? 2 : abs >= 0.01 ? 4 : 6;
    return (value < 0 ? "−$" : "$") + abs.toFixed(digits);
  }
  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? (value / 1000).toFixed(value >= 10000 ? 0 : 1) + " s" : Math.round(value) + " ms";
  }
  function pct(value) {
    return value === null || value === undefined ? "–" : (value * 100).toFixed(value < 0.1 ? 1 : 0) + "%";
  }
  function count(value) {
    return value >= 10000 ? (value / 1000).toFixed(0) + "k" : String(value);
  }
  function num(text) {
    return text === null || text === undefined ? null : Number(text);
  }
  function timeLabel(date, stepSeconds) {
    const hm = String(date.getHours()).padStart(2, "0") + ":" + String(date.getMinutes()).padStart(2, "0");
    if (stepSeconds < 3600) return hm;
    const md = String(date.getMonth() + 1).padStart(2, "0") + "-" + String(date.getDate()).padStart(2, "0");
    return stepSeconds >= 43200 ? md : md + " " + hm;
  }

  // --- SVG helpers --------------------------------------------------------------------------------------------

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }
  function titled(node, text) {
    el("title", {}, node).textContent = text;
    return node;
  }
  function prepare(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const width = Math.max(svg.clientWidth || svg.parentNode.clientWidth || 600, 240);
    svg.setAttribute("viewBox", "0 0 " + width + " " + HEIGHT);
    svg.dataset.points = "0";
    return { width, plotW: width - MARGIN.left - MARGIN.right, plotH: HEIGHT - MARGIN.top - MARGIN.bottom };
  }
  function empty(svg, box, text) {
    el("text", { class: "empty", x: box.width / 2, y: HEIGHT / 2, "text-anchor": "middle" }, svg).textContent = text;
  }
  // An axis from 0 in about four steps of 1, 2, 2.5 or 5 times a power of ten (whole steps for counts).
  function scale(max, whole) {
    const raw = max > 0 ? max / 4 : 1;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const multiples = whole && power < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
    let step = multiples.map((m) => m * power).find((s) => s >= raw * (1 - 1e-9));
    if (whole) step = Math.max(1, Math.round(step));
    return { step, top: Math.max(step, Math.ceil(max / step - 1e-9) * step) };
  }
  function yAxis(svg, box, axis, format) {
    const g = el("g", { class: "axis" }, svg);
    for (let value = 0; value <= axis.top + axis.step / 2; value += axis.step) {
      const y = MARGIN.top + box.plotH - (box.plotH * value) / axis.top;
      el("line", { class: "grid-line", x1: MARGIN.left, x2: MARGIN.left + box.plotW, y1: y, y2: y }, g);
      const label = el("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end" }, g);
      label.textContent = format(value);
    }
  }
  function xAxis(svg, box, buckets, stepSeconds, xOf) {
    const g = el("g", { class: "axis" }, svg);
    const ticks = Math.min(6, buckets.length);
    for (let i = 0; i < ticks; i++) {
      const index = Math.round((i * (buckets.length - 1)) / Math.max(ticks - 1, 1));
      const label = el("text", { x: xOf(index), y: HEIGHT - 8, "text-anchor": "middle" }, g);
      label.textContent = timeLabel(buckets[index], stepSeconds);
    }
  }
  function legend(id, entries) {
    const box = document.getElementById(id);
    box.textContent = "";
    for (const entry of entries) {
      const key = document.createElement("span");
      key.className = "key";
      const swatch = document.createElement("span");
      swatch.className = "swatch" + (entry.dashed ? " dashed" : "");
      swatch.style.background = entry.color;
      swatch.style.color = entry.color;
      key.appendChild(swatch);
      key.appendChild(document.createTextNode(entry.name));
      box.appendChild(key);
    }
  }

  // --- charts -------------------------------------------------------------------------------------------------

  // Lines over the buckets; a null value breaks the line; every known value also gets a dot, so that a single
  // bucket with data still shows.
  function lineChart(svg, buckets, stepSeconds, lines, format, emptyText) {
    const box = prepare(svg);
    const known = lines.flatMap((line) => line.values.filter((v) => v !== null && v !== undefined));
    if (!known.length) {
      empty(svg, box, emptyText || "No data in this range");
      return 0;
    }
    const axis = scale(Math.max(...known), false);
    const xOf = (i) => MARGIN.left + (buckets.length > 1 ? (box.plotW * i) / (buckets.length - 1) : box.plotW / 2);
    const yOf = (v) => MARGIN.top + box.plotH - (box.plotH * v) / axis.top;
    yAxis(svg, box, axis, format);
    xAxis(svg, box, buckets, stepSeconds, xOf);
    let points = 0;
    for (const line of lines) {
      let d = "";
      let pen = false;
      line.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        d += (pen ? "L" : "M") + xOf(i).toFixed(1) + " " + yOf(v).toFixed(1);
        pen = true;
      });
      if (d) el("path", { class: "series" + (line.dashed ? " dashed" : ""), d, stroke: line.color }, svg);
      line.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        points++;
        // A running total gets a dot only where it moves, not on every flat bucket.
        if (line.cumulative && i > 0 && v === line.values[i - 1]) return;
        const dot = el("circle", { class: "point", cx: xOf(i), cy: yOf(v), r: 3, fill: line.color }, svg);
        titled(dot, line.name + " · " + timeLabel(buckets[i], stepSeconds) + " · " + format(v));
      });
    }
    svg.dataset.points = String(points);
    return points;
  }

  function stackedBars(svg, buckets, stepSeconds, stacks) {
    const box = prepare(svg);
    const totals = buckets.map((_, i) => stacks.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    if (!totals.some((t) => t > 0)) {
      empty(svg, box, "No requests in this range");
      return 0;
    }
    const axis = scale(Math.max(...totals), true);
    const max = axis.top;
    const slot = box.plotW / buckets.length;
    const barW = Math.max(1, slot * 0.75);
    const xOf = (i) => MARGIN.left + slot * i + slot / 2;
    yAxis(svg, box, axis, (v) => count(Math.round(v)));
    xAxis(svg, box, buckets, stepSeconds, xOf);
    let bars = 0;
    buckets.forEach((bucket, i) => {
      let base = 0;
      for (const stack of stacks) {
        const v = stack.values[i] || 0;
        if (!v) continue;
        const h = (box.plotH * v) / max;
        const y = MARGIN.top + box.plotH - ((box.plotH * base) / max) - h;
        const rect = el("rect", { x: xOf(i) - barW / 2, y, width: barW, height: h, fill: stack.color }, svg);
        titled(rect, stack.name + " · " + timeLabel(bucket, stepSeconds) + " · " + v);
        base += v;
        bars++;
      }
    });
    svg.dataset.points = String(bars);
    return bars;
  }

  function ruleBars(svg, rules) {
    const box = prepare(svg);
    const parts = [
      ["local", "answered locally", COLORS.local],
      ["frontier", "sent to frontier by the rule", COLORS.frontier],
      ["escalated_after_local", "escalated after a local attempt", COLORS.escalated],
      ["unrouted", "failed before a tier", COLORS.unrouted],
    ];
    const shown = rules.slice(0, 8);
    if (!shown.length) {
      empty(svg, box, "No requests in this range");
      return 0;
    }
    const labelW = 130;
    const rowH = Math.min(26, (HEIGHT - 10) / shown.length);
    const max = Math.max(...shown.map((r) => r.requests), 1);
    const plotW = box.width - labelW - 60;
    let bars = 0;
    shown.forEach((rule, row) => {
      const y = 4 + row * rowH;
      const name = el("text", { class: "bar-label", x: labelW - 8, y: y + rowH * 0.62, "text-anchor": "end" }, svg);
      name.textContent = rule.rule.length > 20 ? rule.rule.slice(0, 19) + "…" : rule.rule;
      let x = labelW;
      for (const [key, label, color] of parts) {
        const v = rule[key] || 0;
        if (!v) continue;
        const w = (plotW * v) / max;
        const rect = el("rect", { x, y: y + 3, width: Math.max(w, 1), height: rowH - 6, fill: color }, svg);
        titled(rect, rule.rule + " · " + label + " · " + v);
        x += w;
        bars++;
      }
      const note = el("text", { class: "bar-label", x: x + 6, y: y + rowH * 0.62 }, svg);
      note.textContent = rule.requests + (rule.escalation_rate !== null ? " · " + pct(rule.escalation_rate) : "");
    });
    svg.dataset.points = String(bars);
    return bars;
  }

  // --- the page -----------------------------------------------------------------------------------------------

  function setText(id, text) {
    document.getElementById(id).textContent = text;
  }

  function cumulative(values) {
    let sum = 0;
    return values.map((v) => (sum += v || 0));
  }

  function render(data) {
    const ts = data.timeseries;
    const buckets = ts.buckets.map((iso) => new Date(iso));
    const step = ts.step_s;
    const series = ts.series;
    const tiers = Object.keys(series).filter((k) => k !== "total");
    const total = data.by_tier.total;

    setText("tile-requests", count(total.requests));
    setText("tile-per-success", usd(num(total.spend_per_success_usd)));
    setText("tile-successes", total.successes + " successes (" + ts.metric + ")");
    setText("tile-spend", usd(num(total.spend_usd)));
    setText("tile-savings", usd(num(total.savings_usd)));
    setText("tile-counterfactual", "all-frontier: " + usd(num(total.counterfactual_usd)));
    setText("tile-escalation", pct(total.escalation_rate));
    setText("tile-escalated", total.escalated_after_local + " after a local attempt");
    setText("tile-p95", ms(total.latency_p95_ms));
    setText("tile-p50", "p50 " + ms(total.latency_p50_ms));

    const perSuccess = ["total", ...TIER_KEYS].map((key) => ({
      name: key,
      color: COLORS[key],
      values: series[key].spend_per_success_usd.map(num),
    }));
    legend("legend-per-success", perSuccess);
    const drawn = lineChart(document.getElementById("chart-per-success"), buckets, step, perSuccess, usd,
      "No successful outcomes in this range");
    document.getElementById("hint-per-success").hidden = drawn > 0;

    const spendLines = [
      { name: "spend", color: COLORS.spend, cumulative: true, values: cumulative(series.total.spend_usd.map(num)) },
      {
        name: "all-frontier cost", color: COLORS.counterfactual, dashed: true, cumulative: true,
        values: cumulative(series.total.counterfactual_usd.map(num)),
      },
    ];
    const anySpend = series.total.requests.some((n) => n > 0);
    legend("legend-spend", spendLines);
    lineChart(document.getElementById("chart-spend"), buckets, step, anySpend ? spendLines : [], usd,
      "No requests in this range");

    const stacks = tiers.map((key) => ({ name: key, color: COLORS[key] || COLORS.total, values: series[key].requests }));
    legend("legend-volume", stacks);
    stackedBars(document.getElementById("chart-volume"), buckets, step, stacks);

    const escalation = [
      { name: "frontier share of routed requests", color: COLORS.frontier, values: series.total.escalation_rate },
    ];
    legend("legend-escalation", escalation);
    lineChart(document.getElementById("chart-escalation"), buckets, step, escalation, pct);

    legend("legend-rules", [
      { name: "local", color: COLORS.local },
      { name: "frontier by rule", color: COLORS.frontier },
      { name: "escalated after local", color: COLORS.escalated },
      { name: "failed", color: COLORS.unrouted },
    ]);
    ruleBars(document.getElementById("chart-rules"), data.by_rule);

    const latency = [];
    const ttft = [];
    for (const key of TIER_KEYS) {
      latency.push({ name: key + " p50", color: COLORS[key], values: series[key].latency_p50_ms });
      latency.push({ name: key + " p95", color: COLORS[key], dashed: true, values: series[key].latency_p95_ms });
      ttft.push({ name: key + " p50", color: COLORS[key], values: series[key].ttft_p50_ms });
      ttft.push({ name: key + " p95", color: COLORS[key], dashed: true, values: series[key].ttft_p95_ms });
    }
    legend("legend-latency", latency);
    lineChart(document.getElementById("chart-latency"), buckets, step, latency, ms);
    legend("legend-ttft", ttft);
    const ttftDrawn = lineChart(document.getElementById("chart-ttft"), buckets, step, ttft, ms,
      "No streamed requests in this range");
    document.getElementById("hint-ttft").hidden = ttftDrawn > 0;

    renderRules(data.rules);
    renderModels(data.models, data.by_model.groups);
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function renderRules(rules) {
    const loaded = new Date(rules.loaded_at);
    setText("rules-summary",
      "version " + rules.version + " · " + rules.rules + " rules, then the score threshold " + rules.threshold +
      " · loaded " + loaded.toLocaleString() + " · " + rules.reloads + " reloads, " + rules.failures +
      " refused · " + rules.path);
    const problem = document.getElementById("rules-error");
    problem.hidden = !rules.last_error;
    problem.textContent = rules.last_error ? "Latest reload refused (the rules above stay): " + rules.last_error : "";
    const body = document.querySelector("#rules-table tbody");
    body.textContent = "";
    rules.list.forEach((rule, i) => {
      const row = document.createElement("tr");
      cell(row, String(i + 1));
      cell(row, rule.name);
      const action = cell(row, "");
      const badge = document.createElement("span");
      badge.className = "badge " + rule.action;
      badge.textContent = rule.action + (rule.model ? " · " + rule.model : "");
      action.appendChild(badge);
      cell(row, rule.fallback ? "yes" : "no");
      cell(row, rule.enforce ? "yes" : "no");
      cell(row, rule.description || "");
      body.appendChild(row);
    });
  }

  function renderModels(models, groups) {
    const byModel = Object.fromEntries(groups.map((g) => [g.group, g]));
    const body = document.querySelector("#models-table tbody");
    body.textContent = "";
    for (const model of models) {
      const row = document.createElement("tr");
      cell(row, model.name);
      cell(row, model.tier);
      cell(row, model.ready ? "yes" : "no");
      cell(row, String(model.queue_depth), "num");
      const stats = byModel[model.name];
      cell(row, stats ? String(stats.requests) : "0", "num");
      cell(row, stats ? usd(num(stats.spend_usd)) : "–", "num");
      cell(row, stats ? ms(stats.latency_p50_ms) : "–", "num");
      cell(row, stats ? ms(stats.latency_p95_ms) : "–", "num");
      body.appendChild(row);
    }
  }

  // --- loading and refreshing ---------------------------------------------------------------------------------

  const rangeSelect = () => document.getElementById("range");
  const refreshSelect = () => document.getElementById("refresh");

  async function load() {
    if (state.inFlight) return;
    state.inFlight = true;
    const problem = document.getElementById("problem");
    try {
      const response = await fetch("dashboard/data?range=" + encodeURIComponent(rangeSelect().value), {
        headers: { accept: "application/json", ...window.tiergateAuth.headers() },
      });
      const body = await response.json();
      if (response.status === 401 || response.status === 403) window.tiergateAuth.ask(body, load);
      if (!response.ok) throw new Error((body.error && body.error.message) || "HTTP " + response.status);
      state.data = body;
      state.loads++;
      render(body);
      state.renders++;
      problem.hidden = true;
      setText("updated", "updated " + new Date().toLocaleTimeString());
    } catch (error) {
      state.errors.push(String(error));
      problem.hidden = false;
      problem.textContent = "Could not load the dashboard's data: " + error.message;
    } finally {
      state.inFlight = false;
    }
  }

  function schedule() {
    if (state.timer !== null) clearInterval(state.timer);
    state.timer = null;
    const seconds = Number(refreshSelect().value);
    if (seconds > 0) state.timer = setInterval(load, seconds * 1000);
  }

  // The URL keeps the choices (?range=6h&refresh=5), so a reload or a shared link shows the same view.
  function remember() {
    const params = new URLSearchParams(location.search);
    params.set("range", rangeSelect().value);
    params.set("refresh", refreshSelect().value);
    history.replaceState(null, "", location.pathname + "?" + params.toString());
  }

  function choose(select, value) {
    if (value === null) return;
    if (![...select.options].some((o) => o.value === value)) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = value + " s";
      select.appendChild(option);
    }
    select.value = value;
  }

  function start() {
    const params = new URLSearchParams(location.search);
    if (params.get("range") && [...rangeSelect().options].some((o) => o.value === params.get("range"))) {
      rangeSelect().value = params.get("range");
    }
    const refresh = params.get("refresh");
    if (refresh !== null && /^\d{1,4}$/.test(refresh)) choose(refreshSelect(), refresh);
    rangeSelect().addEventListener("change", () => {
      remember();
      load();
    });
    refreshSelect().addEventListener("change", () => {
      remember();
      schedule();
    });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => state.data && render(state.data), 150);
    });
    schedule();
    load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
