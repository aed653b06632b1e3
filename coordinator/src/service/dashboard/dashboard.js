// The testgrid dashboard: the grid's workers and sessions, and a live timeline of a session
// (one row per worker slot, one bar per test attempt), read from the coordinator's JSON API and
// its server-sent events. Plain JS, no build step. Everything shown is set as text, never as
// markup: names and paths come from users.
"use strict";

const TOKEN_KEY = "testgrid-token";
const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let stopView = () => {};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") Object.assign(node.style, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

class NeedsToken extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  if (response.status === 401) throw new NeedsToken((await response.json()).error);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${(await response.text()).slice(0, 200)}`);
  return response.json();
}

function showLogin(why) {
  stopView();
  const form = document.getElementById("login").content.firstElementChild.cloneNode(true);
  if (why) form.prepend(el("p", { class: "error" }, why));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, form.elements.token.value.trim());
    route();
  });
  main.replaceChildren(form);
}

function ago(ms) {
  if (ms < 1000) return `${ms} ms ago`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s ago`;
  return `${Math.round(ms / 60000)} min ago`;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

function span(ms) {
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

const COLOURS = ["passed", "failed", "flaky", "timed_out", "lost", "error", "cancelled"];

function progress(totals) {
  const bar = el("div", { class: "progress", title: "" });
  const done = COLOURS.reduce((n, k) => n + (totals[k] || 0), 0);
  for (const k of COLOURS) {
    if (!totals[k]) continue;
    bar.append(el("span", { style: { width: `${(100 * totals[k]) / Math.max(totals.total, 1)}%`, background: `var(--${k})` } }));
  }
  bar.title = `${done} of ${totals.total} done`;
  return bar;
}

// The overview: workers and sessions, polled.
function overview() {
  let timer = 0;
  let stopped = false;
  const render = async () => {
    try {
      const [{ workers }, { sessions }] = await Promise.all([api("/api/v1/workers"), api("/api/v1/sessions")]);
      const now = Date.now();
      const workerRows = workers.map((w) =>
        el("tr", { class: "worker" },
          el("td", {}, w.name),
          el("td", {}, w.labels.pool || "default"),
          el("td", { class: `state ${w.state}` }, w.state),
          el("td", { class: "num" }, `${Math.min(w.held, w.slots)} / ${w.slots}`),
          el("td", { class: "tests" }, w.running.join(", ") || "-"),
          el("td", {}, ago(w.last_seen_ms_ago))));
      const sessionRows = sessions.map((s) => {
        const t = s.totals;
        const done = COLOURS.reduce((n, k) => n + (t[k] || 0), 0);
        let eta = "-";
        if (s.state === "running" && done > 0) {
          const rate = done / Math.max(now - s.created_ms, 1);
          eta = `~${span((t.total - done) / rate)}`;
        }
        const link = el("a", { href: `#/session/${s.id}` }, s.name || s.id);
        return el("tr", { class: "session" },
          el("td", {}, link),
          el("td", {}, s.owner || "-"),
          el("td", { class: `state ${s.state}` }, s.state),
          el("td", {}, progress(t)),
          el("td", { class: "num" }, `${t.passed} passed, ${t.failed + t.timed_out + t.lost + t.error} failed, ${t.flaky} flaky`),
          el("td", { class: "num" }, s.state === "running" ? eta : span((s.finished_ms || now) - s.created_ms)));
      });
      if (stopped) return;
      main.replaceChildren(
        el("h2", {}, `Workers (${workers.length})`),
        el("table", {}, el("thead", {}, el("tr", {}, ...["name", "pool", "state", "slots busy", "running", "last heartbeat"].map((h) => el("th", {}, h)))), el("tbody", {}, ...workerRows)),
        el("h2", {}, `Sessions (${sessions.length})`),
        el("table", {}, el("thead", {}, el("tr", {}, ...["session", "owner", "state", "progress", "outcomes", "ETA / took"].map((h) => el("th", {}, h)))), el("tbody", {}, ...sessionRows)));
      statusLine.textContent = `updated ${clock(now)}`;
    } catch (e) {
      if (e instanceof NeedsToken) return showLogin(e.message);
      statusLine.textContent = `cannot reach the grid: ${e.message}`;
    }
    if (!stopped) timer = setTimeout(render, 2000);
  };
  render();
  return () => { stopped = true; clearTimeout(timer); };
}

// A session's events, followed live: reconnects after the next sequence number it has.
function follow(id, onEvent, onError) {
  let next = 1;
  let finished = false;
  let stopped = false;
  const controller = new AbortController();
  const run = async () => {
    while (!stopped && !finished) {
      try {
        const response = await fetch(`/api/v1/sessions/${encodeURIComponent(id)}/events?from=${next}`, { headers: headers(), signal: controller.signal });
        if (response.status === 401) throw new NeedsToken((await response.json()).error);
        if (!response.ok) throw new Error(`${response.status} ${(await response.text()).slice(0, 200)}`);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
            if (!data || block.split("\n").some((l) => l === "event: error" || l === "event:error")) continue;
            const event = JSON.parse(data);
            next = event.seq + 1;
            if (event.kind === "finished") finished = true;
            onEvent(event);
          }
        }
      } catch (e) {
        if (stopped) return;
        if (e instanceof NeedsToken) return showLogin(e.message);
        onError(e);
      }
      if (!finished && !stopped) await new Promise((r) => setTimeout(r, 1000));
    }
  };
  run();
  return () => { stopped = true; controller.abort(); };
}

function median(values) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// One session's live timeline.
function sessionView(id) {
  const model = { name: id, paths: [], attempts: new Map(), totals: null, cancelled: null, t0: 0, last: 0, done: 0 };
  const title = el("h2", {}, `Session ${id}`);
  const summary = el("div", { class: "summary" });
  const timeline = el("div", { class: "timeline", id: "timeline" });
  const legend = el("div", { class: "legend" },
    ...[...COLOURS, "requeued", "running"].map((k) => el("span", {}, el("i", { style: { background: `var(--${k})` } }), k.replace("_", " "))),
    el("span", {}, el("i", { style: { boxShadow: "0 0 0 2px #fab005" } }), "straggler"),
    el("span", {}, "a white edge: a retry or later attempt"));
  main.replaceChildren(el("p", {}, el("a", { href: "#/" }, "← grid")), title, summary, legend, timeline);

  const open = (test) => [...model.attempts.values()].filter((a) => a.test === test && a.end === null);
  const onEvent = (e) => {
    model.last = Math.max(model.last, e.time_ms);
    switch (e.kind) {
      case "created":
        model.name = e.name; model.paths = e.paths; model.t0 = e.time_ms; break;
      case "test_started":
        model.attempts.set(`${e.test}/${e.attempt}`, { test: e.test, attempt: e.attempt, worker: e.worker, start: e.time_ms, end: null, outcome: null, final: false });
        break;
      case "test_finished": {
        const a = model.attempts.get(`${e.test}/${e.attempt}`);
        if (a) { a.end = e.time_ms; a.outcome = e.final ? e.outcome : e.attempt_outcome; a.final = e.final; a.ms = e.duration_ms; }
        if (e.final) model.done += 1;
        break;
      }
      case "test_requeued":
        for (const a of open(e.test)) { a.end = e.time_ms; a.outcome = "requeued"; a.reason = e.reason; }
        break;
      case "cancelled": model.cancelled = e.reason; break;
      case "finished": model.totals = e.totals; break;
    }
    schedule();
  };
  let pending = false;
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); } };

  const draw = () => {
    const now = model.totals ? model.last : Math.max(Date.now(), model.last);
    const attempts = [...model.attempts.values()].sort((a, b) => a.start - b.start || a.test - b.test);
    const finishedMs = attempts.filter((a) => a.end !== null && a.outcome !== "requeued").map((a) => a.end - a.start);
    const typical = median(finishedMs);
    const lateAfter = Math.max(2 * typical, typical + 1000);
    // Lanes: a worker's attempts packed into the fewest rows that never overlap (its slots).
    const lanes = new Map();
    for (const a of attempts) {
      const rows = lanes.get(a.worker) || [];
      let row = rows.findIndex((endsAt) => endsAt !== null && endsAt <= a.start);
      if (row < 0) { row = rows.length; rows.push(null); }
      rows[row] = a.end;
      a.lane = row;
      lanes.set(a.worker, rows);
    }
    const total = model.paths.length;
    const remaining = total - model.done;
    const slots = [...lanes.values()].reduce((n, rows) => n + rows.length, 0);
    let predicted = null;
    if (!model.totals && remaining > 0 && typical > 0 && slots > 0) predicted = now + (remaining * typical) / slots;
    const end = Math.max(now, predicted || 0, model.t0 + 1000);
    const width = Math.max(end - model.t0, 1);
    const pct = (t) => `${(100 * (t - model.t0)) / width}%`;

    const rows = [];
    for (const [worker, laneRows] of [...lanes.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      laneRows.forEach((_, i) => {
        const track = el("div", { class: "track" });
        for (const a of attempts.filter((x) => x.worker === worker && x.lane === i)) {
          const stop = a.end === null ? now : a.end;
          const classes = ["bar", a.end === null ? "running" : `o-${a.outcome}`];
          if (a.attempt > 1) classes.push("retry");
          if (typical > 0 && stop - a.start > lateAfter && finishedMs.length >= 3) classes.push("straggler");
          const path = model.paths[a.test] || `#${a.test}`;
          const state = a.end === null ? "running" : a.outcome;
          const bar = el("div", {
            class: classes.join(" "),
            "data-test": path, "data-attempt": a.attempt, "data-outcome": state,
            title: `${path}\nattempt ${a.attempt} on ${worker}: ${state}, ${span(stop - a.start)}${a.reason ? `\n${a.reason}` : ""}`,
            style: { left: pct(a.start), width: `calc(${pct(stop)} - ${pct(a.start)})` },
          }, el("span", {}, a.attempt > 1 ? `${path} ↻${a.attempt}` : path));
          track.append(bar);
        }
        rows.push(el("div", { class: "lane" }, el("div", { class: "label" }, `${worker} · slot ${i + 1}`), track));
      });
    }
    const marks = [];
    if (predicted) {
      const line = el("div", { class: "predicted", style: { left: `calc(12rem + (100% - 12rem) * ${(predicted - model.t0) / width})` } }, el("span", {}, `predicted finish ${clock(predicted)}`));
      marks.push(line);
    }
    const axis = el("div", { class: "lane axis" }, el("div", { class: "label" }, ""), el("div", { class: "track" },
      ...[0, 0.25, 0.5, 0.75, 1].map((f) => el("span", { style: { left: `${100 * f}%` } }, span(f * width)))));
    timeline.replaceChildren(...rows, axis, ...marks);
    const requeued = attempts.filter((a) => a.outcome === "requeued").length;
    const retried = attempts.filter((a) => a.attempt > 1).length;
    const state = model.totals ? (model.cancelled ? "cancelled" : "finished") : "running";
    title.textContent = `${model.name}`;
    const t = model.totals;
    summary.replaceChildren(
      el("span", {}, "state ", el("b", { class: `state ${state}` }, state)),
      el("span", {}, el("b", {}, `${model.done} / ${total}`), " tests done"),
      el("span", {}, el("b", {}, attempts.length), " attempts"),
      el("span", {}, el("b", {}, requeued), " requeued"),
      el("span", {}, el("b", {}, retried), " retries"),
      el("span", {}, t ? `${t.passed} passed, ${t.failed + t.timed_out + t.lost + t.error} failed, ${t.flaky} flaky` : predicted ? `predicted finish ${clock(predicted)}` : ""),
      el("span", {}, `ran ${span(now - model.t0)}`));
    timeline.dataset.done = model.totals ? "true" : "false";
  };
  const ticker = setInterval(() => { if (!model.totals) schedule(); }, 1000);
  const stop = follow(id, onEvent, (e) => { statusLine.textContent = `lost the event stream (${e.message}); reconnecting`; });
  return () => { clearInterval(ticker); stop(); };
}

async function route() {
  stopView();
  const hash = location.hash.replace(/^#/, "");
  const match = hash.match(/^\/session\/([0-9a-fA-F-]{36})$/);
  try {
    const who = await api("/api/v1/whoami");
    document.getElementById("who").textContent = who.open ? "open grid" : `${who.name} (${who.role})`;
  } catch (e) {
    if (e instanceof NeedsToken) return showLogin(e.message);
    statusLine.textContent = `cannot reach the grid: ${e.message}`;
  }
  stopView = match ? sessionView(match[1]) : overview();
}

window.addEventListener("hashchange", route);
route();
