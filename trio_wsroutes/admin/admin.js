// The trio_wsroutes admin page: one WebSocket to the server's live route, tables kept
// up to date from its snapshots. Text only goes into the page through textContent, so
// topic names, paths and user ids are never read as HTML.
"use strict";
(() => {
  const livePath = document.body.dataset.live;
  const byId = (id) => document.getElementById(id);
  const CLOSE_REASON = "closed from the admin page";
  const CONFIRM_MS = 4000;
  const HISTORY_COUNTED = 1000; // the server counts kept publications up to this

  let socket = null;
  let attempt = 0;
  let nextId = 1;
  const waiting = new Map(); // request id -> {resolve, reject}
  const confirming = new Map(); // connection id -> timer of its "Confirm" state

  // -- formatting ----------------------------------------------------------------------

  const integer = new Intl.NumberFormat();
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  function rate(value) {
    return value >= 100 ? integer.format(Math.round(value)) : decimal.format(value);
  }

  function bytes(value) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${unit ? decimal.format(value) : integer.format(value)} ${units[unit]}`;
  }

  function latency(seconds) {
    if (seconds === null || seconds === undefined) return "\u2013";
    if (seconds < 0.001) return `${decimal.format(seconds * 1e6)} \u00b5s`;
    if (seconds < 1) return `${decimal.format(seconds * 1e3)} ms`;
    return `${decimal.format(seconds)} s`;
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  // -- rendering -----------------------------------------------------------------------

  let toastTimer = 0;
  function toast(text, isError) {
    const box = byId("toast");
    box.textContent = text;
    box.className = isError ? "toast error" : "toast";
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  function setStatus(state, detail) {
    const status = byId("status");
    status.className = `status ${state}`;
    status.textContent = detail ? `${state} (${detail})` : state;
  }

  function columnLabels(table) {
    return Array.from(table.tHead.rows[0].cells, (cell) => cell.textContent.trim());
  }

  // Rows are kept by key and only their text changes, so a button keeps its state
  // (and a click is never lost to a re-render).
  function renderRows(table, rows, key, cells, onCreate) {
    const tbody = table.tBodies[0];
    const labels = columnLabels(table);
    const existing = new Map();
    for (const tr of Array.from(tbody.rows)) existing.set(tr.dataset.key, tr);
    const seen = new Set();
    rows.forEach((row, index) => {
      const rowKey = key(row);
      seen.add(rowKey);
      let tr = existing.get(rowKey);
      const values = cells(row);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.key = rowKey;
        values.forEach(([name], column) => {
          const td = document.createElement("td");
          td.className = name;
          td.dataset.label = labels[column] || "";
          tr.appendChild(td);
        });
        if (onCreate) onCreate(tr, row);
      }
      values.forEach(([name, text], column) => {
        const td = tr.cells[column];
        if (td.textContent !== text) td.textContent = text;
        if (td.className !== name) td.className = name;
      });
      if (tbody.rows[index] !== tr) tbody.insertBefore(tr, tbody.rows[index] || null);
    });
    for (const [rowKey, tr] of existing) if (!seen.has(rowKey)) tr.remove();
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.dataset.key = "";
      const td = document.createElement("td");
      td.className = "empty";
      td.colSpan = labels.length;
      td.textContent = table.dataset.empty || "Nothing yet";
      tr.appendChild(td);
      tbody.replaceChildren(tr);
    }
  }

  function renderTotals(totals) {
    byId("t-connections").textContent = integer.format(totals.connections);
    byId("t-in").textContent = rate(totals.messages_in_per_second);
    byId("t-out").textContent = rate(totals.messages_out_per_second);
    byId("t-deliveries").textContent = rate(totals.deliveries_per_second);
    byId("t-publishes").textContent = rate(totals.publishes_per_second);
    byId("t-queued").textContent = bytes(totals.queued_bytes);
    const bar = byId("t-memory-bar");
    byId("t-memory").textContent = bytes(totals.memory_used);
    if (totals.memory_limit === null) {
      byId("t-memory-limit").textContent = "no limit";
      bar.style.width = "0";
    } else {
      const share = Math.min(1, totals.memory_used / Math.max(1, totals.memory_limit));
      const percent = share * 100;
      byId("t-memory-limit").textContent =
        `of ${bytes(totals.memory_limit)} (${percent < 1 && percent > 0 ? "<1" : Math.round(percent)}%)`;
      bar.style.width = `${percent.toFixed(1)}%`;
      bar.className = share > 0.8 ? "high" : "";
    }
  }

  function closeButton(tr, row) {
    const td = document.createElement("td");
    td.className = "action";
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Close";
    button.title = "Close this connection (code 1008)";
    button.addEventListener("click", () => askToClose(row.id, button));
    td.appendChild(button);
    tr.appendChild(td);
  }

  function askToClose(id, button) {
    if (!confirming.has(id)) {
      button.textContent = "Confirm?";
      button.classList.add("confirm");
      confirming.set(id, setTimeout(() => {
        confirming.delete(id);
        button.textContent = "Close";
        button.classList.remove("confirm");
      }, CONFIRM_MS));
      return;
    }
    clearTimeout(confirming.get(id));
    confirming.delete(id);
    button.disabled = true;
    button.textContent = "Closing\u2026";
    request("close_connection", { id, reason: CLOSE_REASON }).then(
      () => toast(`Closed connection ${id.slice(0, 8)}`),
      (error) => {
        button.disabled = false;
        button.textContent = "Close";
        button.classList.remove("confirm");
        toast(error.message, true);
      },
    );
  }

  function render(snapshot) {
    renderTotals(snapshot.totals);
    renderRows(byId("routes"), snapshot.routes, (r) => r.route, (r) => [
      ["mono", r.route],
      ["num open", integer.format(r.connections)],
      ["num in-rate", rate(r.messages_in_per_second)],
      ["num out-rate", rate(r.messages_out_per_second)],
      ["num deliveries-rate", rate(r.deliveries_per_second)],
      ["num in", integer.format(r.messages_in)],
      ["num out", integer.format(r.messages_out)],
      [r.errors ? "num hot" : "num", integer.format(r.errors)],
    ]);
    renderRows(byId("handlers"), snapshot.handlers, (h) => `${h.route} ${h.type}`, (h) => [
      ["mono", h.route],
      ["mono", h.type],
      ["num", integer.format(h.count)],
      ["num", latency(h.p50)],
      ["num", latency(h.p99)],
      [h.timeouts ? "num hot" : "num", integer.format(h.timeouts)],
    ]);
    const topics = snapshot.totals.topics;
    byId("topics-note").textContent = topics > snapshot.topics.length
      ? `the ${snapshot.topics.length} busiest of ${integer.format(topics)}`
      : "";
    renderRows(byId("topics"), snapshot.topics, (t) => t.topic, (t) => [
      ["mono clip", t.topic],
      ["num subscribers", integer.format(t.subscribers)],
      ["num", t.history === null ? "\u2013"
        : `${integer.format(t.history)}${t.history >= HISTORY_COUNTED ? "+" : ""}`],
    ]);
    renderRows(byId("connections"), snapshot.connections, (c) => c.id, (c) => [
      ["mono", c.id.slice(0, 12)],
      ["mono", c.route],
      ["mono clip", c.path],
      ["clip user", c.user === null ? "\u2013" : c.user],
      [c.queued_bytes >= 1048576 ? "num hot" : "num queued", bytes(c.queued_bytes)],
      ["num", duration(c.connected_seconds)],
      ["num", integer.format(c.topics)],
    ], closeButton);
    byId("updated").textContent =
      `Updated ${new Date(snapshot.time * 1000).toLocaleTimeString()}`;
  }

  // -- the live route ------------------------------------------------------------------

  function request(type, data) {
    return new Promise((resolve, reject) => {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        reject(new Error("Not connected"));
        return;
      }
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      socket.send(JSON.stringify({ type, data, id }));
    });
  }

  function receive(message) {
    const answered = message.id !== undefined ? waiting.get(message.id) : undefined;
    if (answered) waiting.delete(message.id);
    if (message.type === "admin_snapshot") {
      render(message.data);
      if (answered) answered.resolve(message.data);
    } else if (message.type === "admin_hello") {
      const who = message.data.user === null ? "signed in" : `signed in as ${message.data.user}`;
      byId("who").textContent = `${who} \u00b7 trio_wsroutes ${message.data.version}`;
    } else if (message.type === "ack") {
      if (answered) answered.resolve(null);
    } else if (message.type === "error") {
      const error = new Error(`${message.error} (${message.code})`);
      if (answered) answered.reject(error);
      else toast(error.message, true);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    setStatus("connecting");
    socket = new WebSocket(`${scheme}//${location.host}${livePath}${location.search}`);
    socket.addEventListener("open", () => {
      attempt = 0;
      setStatus("live");
    });
    socket.addEventListener("message", (event) => {
      try {
        receive(JSON.parse(event.data));
      } catch (error) {
        toast(`Could not show an update: ${error.message}`, true);
      }
    });
    socket.addEventListener("close", (event) => {
      for (const { reject } of waiting.values()) reject(new Error("Connection lost"));
      waiting.clear();
      attempt += 1;
      const delay = Math.min(10000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
      setStatus("disconnected", event.code === 1006 ? "retrying" : `code ${event.code}`);
      setTimeout(connect, delay);
    });
  }

  for (const [id, text] of [
    ["routes", "No routes"],
    ["handlers", "No handlers"],
    ["topics", "No subscriptions"],
    ["connections", "No connections"],
  ]) byId(id).dataset.empty = text;
  connect();
})();
