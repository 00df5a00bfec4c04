// Live updates of the overview: its numbers are read again every few seconds from
// the JSON endpoint named by #overview's data-source. Only this file's `source`
// knows where updates come from: an EventSource feed can replace the polling there.
"use strict";

(function () {
  const root = document.getElementById("overview");
  if (!root) return;
  const url = root.dataset.source;
  const base = root.dataset.base || "";
  const every = Math.max(1, Number(root.dataset.every) || 3) * 1000;
  const COLUMNS = [["ready", "Ready"], ["scheduled", "Scheduled"], ["running", "Running"], ["dead", "Dead"]];

  function text(id, value) {
    const node = document.getElementById(id);
    if (node) node.textContent = String(value);
  }

  function cell(value, numeric) {
    const td = document.createElement("td");
    if (numeric) td.className = "num";
    td.textContent = String(value);
    return td;
  }

  function queueRow(queue, index) {
    const tr = document.createElement("tr");
    tr.dataset.queue = queue.name;
    const th = document.createElement("th");
    th.scope = "row";
    const link = document.createElement("a");
    link.href = base + "/queues#queue-" + (index + 1);
    link.textContent = queue.name;
    th.appendChild(link);
    tr.appendChild(th);
    for (const [field, label] of COLUMNS) {
      const td = cell(queue[field], true);
      td.dataset.field = field;
      td.dataset.label = label;
      tr.appendChild(td);
    }
    const state = cell(queue.paused ? "paused" : "active", false);
    state.dataset.field = "paused";
    state.dataset.label = "State";
    tr.appendChild(state);
    return tr;
  }

  function reasonRow(item) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = item.reason;
    tr.appendChild(th);
    tr.appendChild(cell(item.count, true));
    return tr;
  }

  function fill(id, rows, empty, columns) {
    const body = document.getElementById(id);
    if (!body) return;
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = cell(empty, false);
      td.colSpan = columns;
      tr.appendChild(td);
      rows = [tr];
    }
    body.replaceChildren(...rows);
  }

  function sum(queues, field) {
    return queues.reduce((total, q) => total + q[field], 0);
  }

  function show(data) {
    text("workers-online", data.workers.checked ? data.workers.online : "?");
    text("total-ready", sum(data.queues, "ready"));
    text("total-running", sum(data.queues, "running"));
    text("total-dead", sum(data.queues, "dead"));
    fill("depths", data.queues.map(queueRow), "No queues yet.", 6);
    fill("dead-reasons", data.dead_by_reason.map(reasonRow), "No dead letters.", 2);
    text("updated", new Date(data.time * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC");
    text("live-state", "");
  }

  // Calls `update` with each new overview; returns a function that stops.
  function source(update) {
    let timer = null;
    let stopped = false;
    async function poll() {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.status === 401) {
          text("live-state", " · session ended: reload to log in");
          return;
        }
        if (response.ok) update(await response.json());
        else text("live-state", " · live updates paused (" + response.status + ")");
      } catch (error) {
        text("live-state", " · live updates paused (server unreachable)");
      }
      if (!stopped) timer = setTimeout(poll, every);
    }
    timer = setTimeout(poll, every);
    return function stop() {
      stopped = true;
      clearTimeout(timer);
    };
  }

  const stop = source(show);
  window.addEventListener("pagehide", stop);
})();
