// Live updates: the overview's numbers, the jobs list and a job's page follow the
// event store through the dashboard's events feed (server-sent events at data-live,
// the API's stream for the session cookie). The overview reads its numbers again from
// data-source when events arrive; without EventSource, or when the feed fails for
// good, it polls data-source every few seconds instead. A job's page reads itself
// again on each event of the job and puts in the parts (data-part) that changed; the
// overview puts in its charts (#charts) the same way, at most every few seconds.
"use strict";

(function () {
  const STATES = {
    "task-enqueued": "QUEUED", "task-scheduled": "SCHEDULED", "task-started": "STARTED",
    "task-succeeded": "SUCCEEDED", "task-failed": "FAILED", "task-retried": "RETRYING",
    "task-dead": "DEAD", "task-cancelled": "CANCELLED", "task-expired": "EXPIRED",
  };

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

  // Many events in a burst make one call of `run`, `wait` ms after the first.
  function debounced(run, wait) {
    let pending = false;
    return function () {
      if (pending) return;
      pending = true;
      setTimeout(async function () { pending = false; await run(); }, wait);
    };
  }

  // Calls onEvent with each event of the feed at `url`; onLost when it ends for good;
  // onOpen (if given) each time it opens, events before then being missed.
  function feed(url, onEvent, onLost, onOpen) {
    if (!url || typeof EventSource !== "function") {
      onLost();
      return function () {};
    }
    const source = new EventSource(url, { withCredentials: true });
    source.onmessage = function (message) {
      text("live-state", " · live");
      try {
        onEvent(JSON.parse(message.data));
      } catch (error) {
        // A message that is not an event (none is sent) changes nothing.
      }
    };
    source.onopen = function () {
      text("live-state", " · live");
      if (onOpen) onOpen();
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        text("live-state", " · live updates paused (reload to resume)");
        onLost();
      } else {
        text("live-state", " · reconnecting…");
      }
    };
    return function stop() { source.close(); };
  }

  function overview(root) {
    const url = root.dataset.source;
    const base = root.dataset.base || "";
    const every = Math.max(1, Number(root.dataset.every) || 3) * 1000;
    const COLUMNS = [["ready", "Ready"], ["scheduled", "Scheduled"], ["running", "Running"], ["dead", "Dead"]];

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
    }

    // Reads the numbers once; true while the session lasts.
    async function refresh() {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.status === 401) {
          text("live-state", " · session ended: reload to log in");
          return false;
        }
        if (response.ok) show(await response.json());
        else text("live-state", " · live updates paused (" + response.status + ")");
      } catch (error) {
        text("live-state", " · live updates paused (server unreachable)");
      }
      return true;
    }

    let timer = null;
    // Many events in a burst make one read, at most one a second; the charts (a minute
    // a bar) are drawn again at most every five seconds.
    const numbers = debounced(refresh, 1000);
    const charts = debounced(async function () {
      try { await reread(["charts"]); } catch (error) { /* the numbers say it */ }
    }, 5000);
    function soon() { numbers(); charts(); }
    function poll() {
      timer = setTimeout(async function () { if (await refresh()) poll(); }, every);
    }
    const stop = feed(root.dataset.live, soon, poll);
    window.addEventListener("pagehide", function () { stop(); clearTimeout(timer); });
  }

  function jobs(table) {
    const base = table.dataset.base || "";
    const wanted = { state: table.dataset.state, task: table.dataset.task, queue: table.dataset.queue };
    const body = document.getElementById("job-rows");

    function matches(event, state) {
      return (!wanted.state || wanted.state === state) &&
        (!wanted.task || wanted.task === event.task) &&
        (!wanted.queue || wanted.queue === event.queue);
    }

    function newRow(event, state) {
      const tr = document.createElement("tr");
      tr.dataset.job = event.id;
      tr.tabIndex = 0;
      const th = document.createElement("th");
      th.scope = "row";
      const link = document.createElement("a");
      link.href = base + "/jobs/" + encodeURIComponent(event.id);
      const code = document.createElement("code");
      code.textContent = event.id;
      link.appendChild(code);
      th.appendChild(link);
      tr.appendChild(th);
      const values = [["Task", event.task || ""], ["Queue", event.queue || ""]];
      for (const [label, value] of values) {
        const td = cell(value, false);
        td.dataset.label = label;
        tr.appendChild(td);
      }
      const stateCell = cell("", false);
      stateCell.dataset.label = "State";
      stateCell.dataset.field = "state";
      tr.appendChild(stateCell);
      setState(tr, state);
      const attempts = cell(event.attempt || 0, true);
      attempts.dataset.label = "Attempts";
      tr.appendChild(attempts);
      const sent = cell(new Date(event.time * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC", false);
      sent.dataset.label = "Sent";
      tr.appendChild(sent);
      const error = cell("", false);
      error.dataset.label = "Error";
      error.className = "error-text";
      tr.appendChild(error);
      return tr;
    }

    function setState(tr, state) {
      const target = tr.querySelector("[data-field=state]");
      if (!target) return;
      const span = document.createElement("span");
      span.className = "state " + state.toLowerCase();
      span.textContent = state;
      target.replaceChildren(span);
    }

    function onEvent(event) {
      const state = STATES[event.type];
      if (!state || !event.id) return;
      const existing = Array.from(body.rows).find((tr) => tr.dataset.job === event.id);
      if (existing) {
        setState(existing, state);
        return;
      }
      if (!matches(event, state)) return;
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      body.insertBefore(newRow(event, state), body.firstChild);
      while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
    }

    const stop = feed(table.dataset.live, onEvent, function () {});
    window.addEventListener("pagehide", stop);
  }

  // Reads the page again and puts in each element of ids whose markup changed:
  // {fresh: the new document}, {ended: true} (the session ended) or {status}.
  async function reread(ids) {
    const response = await fetch(window.location.pathname, {
      credentials: "same-origin", headers: { Accept: "text/html" },
    });
    if (response.status === 401 || response.redirected) return { ended: true };
    if (!response.ok) return { status: response.status };
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const id of ids) {
      const now = document.getElementById(id);
      const next = fresh.getElementById(id);
      if (now && next && next.innerHTML !== now.innerHTML) now.replaceWith(document.importNode(next, true));
    }
    return { fresh: fresh };
  }

  function jobPage(root) {
    let stop = function () {};
    let timer = null;
    let done = false;

    function finish(note) {
      done = true;
      stop();
      clearTimeout(timer);
      text("live-state", note);
    }

    // Reads the page again and puts in each part whose markup changed.
    async function refresh() {
      if (done) return;
      try {
        const parts = Array.from(root.querySelectorAll("[data-part]"), (part) => part.id);
        const read = await reread(parts);
        if (read.ended) {
          finish(" · session ended: reload to log in");
          return;
        }
        if (!read.fresh) {
          text("live-state", " · live updates paused (" + read.status + ")");
          return;
        }
        const after = read.fresh.getElementById("job");
        if (after && !after.dataset.live) finish(" · finished");
      } catch (error) {
        text("live-state", " · live updates paused (server unreachable)");
      }
    }

    const soon = debounced(refresh, 500);
    function poll() {
      timer = setTimeout(async function () { await refresh(); if (!done) poll(); }, 3000);
    }
    stop = feed(root.dataset.live, soon, poll, soon);
    window.addEventListener("pagehide", function () { stop(); clearTimeout(timer); });
  }

  const root = document.getElementById("overview");
  if (root) overview(root);
  const table = document.getElementById("jobs");
  if (table && table.dataset.live) jobs(table);
  const job = document.getElementById("job");
  if (job && job.dataset.live) jobPage(job);
})();
