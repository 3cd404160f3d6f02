// Tiergate's session view: recent agent sessions from /dashboard/sessions, and one session's steps in order from
// /dashboard/sessions/{id} (click a row, or open the page with ?session=ID). `window.tiergateSessions` exposes the
// state for the browser test. Sends the admin key the page holds (auth.js) where there is one.
"use strict";

(function () {
  const state = { loads: 0, detailLoads: 0, errors: [], list: null, detail: null, selected: null, timer: null };
  window.tiergateSessions = state;

  function authHeaders() {
    return window.tiergateAuth ? window.tiergateAuth.headers() : {};
  }
  function usd(text) {
    if (text === null || text === undefined) return "–";
    const value = Number(text);
    const digits = value === 0 ? 2 : value >= 100 ? 0 : value >= 1 ? 2 : value >= 0.01 ? 4 : 6;
    return "$" + value.toFixed(digits);
  }
  function outcomeText(outcome) {
    if (!outcome) return "–";
    return outcome.success ? "success" : "failure";
  }
  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }
  function badge(td, text, className) {
    const span = document.createElement("span");
    span.className = "badge " + className;
    span.textContent = text;
    td.appendChild(span);
  }

  async function fetchJson(path, retry) {
    const response = await fetch(path, { headers: { accept: "application/json", ...authHeaders() } });
    const body = await response.json();
    if ((response.status === 401 || response.status === 403) && window.tiergateAuth) {
      window.tiergateAuth.ask(body, retry);
    }
    if (!response.ok) throw new Error((body.error && body.error.message) || "HTTP " + response.status);
    return body;
  }

  function renderList(data) {
    const body = document.querySelector("#sessions-table tbody");
    body.textContent = "";
    document.getElementById("sessions-empty").hidden = data.sessions.length > 0;
    for (const session of data.sessions) {
      const row = document.createElement("tr");
      row.className = "clickable" + (session.id === state.selected ? " selected" : "");
      row.dataset.session = session.id;
      cell(row, session.id);
      cell(row, session.task_id || "–");
      cell(row, String(session.steps), "num");
      cell(row, usd(session.spend_usd), "num");
      const outcome = cell(row, "");
      badge(outcome, outcomeText(session.outcome), session.outcome ? (session.outcome.success ? "success" : "failure") : "none");
      cell(row, new Date(session.last_seen).toLocaleString());
      row.addEventListener("click", () => select(session.id));
      body.appendChild(row);
    }
  }

  function renderDetail(data) {
    document.getElementById("session-detail").hidden = false;
    document.getElementById("session-title").textContent =
      "Session " + data.id + (data.task_id ? " · task " + data.task_id : "");
    document.getElementById("session-summary").textContent =
      data.steps.length + " steps · " + usd(data.spend_usd) + " · outcome: " + outcomeText(data.outcome) +
      (data.truncated ? " · only the first " + data.steps.length + " steps shown" : "");
    const body = document.querySelector("#session-steps tbody");
    body.textContent = "";
    for (const step of data.steps) {
      const row = document.createElement("tr");
      cell(row, String(step.step), "num");
      const tier = cell(row, "");
      if (step.tier) badge(tier, step.tier, step.tier);
      else tier.textContent = "–";
      cell(row, step.model || step.requested_model);
      cell(row, step.rule || "–");
      cell(row, step.escalated ? "yes" : "no");
      cell(row, usd(step.cost_usd), "num");
      cell(row, Math.round(step.latency_ms) + " ms", "num");
      cell(row, String(step.status), "num");
      body.appendChild(row);
    }
  }

  async function loadList() {
    try {
      state.list = await fetchJson("dashboard/sessions", loadList);
      state.loads++;
      renderList(state.list);
    } catch (error) {
      state.errors.push(String(error));
    }
  }

  async function select(id) {
    state.selected = id;
    const params = new URLSearchParams(location.search);
    params.set("session", id);
    history.replaceState(null, "", location.pathname + "?" + params.toString());
    for (const row of document.querySelectorAll("#sessions-table tbody tr")) {
      row.classList.toggle("selected", row.dataset.session === id);
    }
    try {
      state.detail = await fetchJson("dashboard/sessions/" + encodeURIComponent(id), () => select(id));
      state.detailLoads++;
      renderDetail(state.detail);
    } catch (error) {
      state.errors.push(String(error));
      document.getElementById("session-detail").hidden = false;
      document.getElementById("session-title").textContent = "Session " + id;
      document.getElementById("session-summary").textContent = "Could not load it: " + error.message;
      document.querySelector("#session-steps tbody").textContent = "";
    }
  }

  // Follows the page's refresh setting, so the list stays as fresh as the charts.
  function schedule() {
    if (state.timer !== null) clearInterval(state.timer);
    state.timer = null;
    const seconds = Number(document.getElementById("refresh").value);
    if (seconds > 0) {
      state.timer = setInterval(() => {
        loadList();
        if (state.selected) select(state.selected);
      }, seconds * 1000);
    }
  }

  function start() {
    document.getElementById("refresh").addEventListener("change", schedule);
    schedule();
    loadList();
    const wanted = new URLSearchParams(location.search).get("session");
    if (wanted) select(wanted);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
