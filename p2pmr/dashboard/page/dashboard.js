// The p2pmr dashboard: one status document and the job's events, pushed by
// the master over server-sent events (see protocols/status.md).
"use strict";

const ROW = 9, GAP = 8, LEFT = 140, DRAWN = 5000;
const attempts = new Map();   // "phase/task/attempt" -> {peer, phase, start, end, kind}
const lanes = [];             // peers, in the order they first took a task
let seen = 0, last = null, ended = false, firstTime = null, lastTime = null;

const $ = (id) => document.getElementById(id);
const text = (id, value) => { const e = $(id); if (e) e.textContent = value; };

function bytes(n) {
  if (n == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(s) {
  if (s == null) return "—";
  s = Math.round(s);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

function renderPhase(name, p) {
  for (const k of ["complete", "total", "running", "failed", "reused"]) {
    text(`${name}-${k}`, k === "running" ? p.in_progress : p[k]);
  }
  const bar = $(name).querySelector(".bar");
  const pct = (n) => (p.total ? (100 * n) / p.total : 0) + "%";
  bar.querySelector(".reused").style.width = pct(p.reused);
  bar.querySelector(".done").style.width = pct(p.complete - p.reused);
  bar.querySelector(".running").style.width = pct(p.in_progress);
}

function renderStatus(doc) {
  last = doc;
  text("name", doc.name || "");
  const state = $("state");
  state.textContent = doc.state;
  state.className = "badge " + doc.state;
  text("job", doc.job || "(being planned)");
  text("input", doc.input || "—");
  text("output", doc.output || "—");
  text("elapsed", duration(doc.elapsed));
  renderPhase("map", doc.map);
  renderPhase("reduce", doc.reduce);
  const t = doc.throughput || {};
  text("speed", t.tasks_per_second != null
    ? `${t.tasks_per_second.toFixed(2)} ${t.phase} tasks/s` +
      (t.bytes_per_second ? `, ${bytes(t.bytes_per_second)}/s` : "")
    : "—");
  const running = doc.live && !["done", "failed"].includes(doc.state);
  text("eta", running && t.eta_seconds != null ? duration(t.eta_seconds) : "—");
  const loc = doc.locality || {};
  const held = loc.held_splits || 0;
  text("local", held ? `${loc.ran_on_holder} of ${held} held splits` : "—");
  text("moved", loc.bytes_moved != null ? bytes(loc.bytes_moved) : "—");
  renderPeers(doc.peers || []);
  renderFailures(doc.failures || []);
}

function renderPeers(peers) {
  const body = $("peers").querySelector("tbody");
  body.replaceChildren(...peers.map((p) => {
    const row = document.createElement("tr");
    if (p.excluded) row.className = "excluded";
    const state = p.excluded ? `excluded: ${p.excluded_reason || ""}` : p.online ? "online" : "offline";
    const cells = [p.id.slice(0, 6) + "…" + p.id.slice(-6), p.completed, p.failed, p.running,
      p.window ?? "—", p.last_contact != null ? `${p.last_contact.toFixed(1)}s ago` : "—", state];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      row.appendChild(td);
    }
    row.firstChild.title = p.id;
    return row;
  }));
}

function renderFailures(failures) {
  const box = $("failures");
  if (!failures.length) { box.innerHTML = '<p class="none">none</p>'; return; }
  box.replaceChildren(...failures.map((f) => {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `${f.phase} task ${f.task} on ${(f.peer || "").slice(-6)} (${f.code}): ${f.reason}`;
    details.appendChild(summary);
    if (f.traceback) {
      const pre = document.createElement("pre");
      pre.textContent = f.traceback;
      details.appendChild(pre);
    }
    return details;
  }));
}

function addEvents(events) {
  for (const e of events) {
    seen = Math.max(seen, e.seq);
    firstTime = firstTime == null ? e.time : Math.min(firstTime, e.time);
    lastTime = lastTime == null ? e.time : Math.max(lastTime, e.time);
    if (e.task == null || e.attempt == null) continue;
    const key = `${e.phase}/${e.task}/${e.attempt}`;
    let a = attempts.get(key);
    if (e.kind === "assigned" || !a) {
      a = a || { peer: e.peer, phase: e.phase, task: e.task, start: e.time, end: null,
        kind: "running" };
      attempts.set(key, a);
      if (e.peer && !lanes.includes(e.peer)) lanes.push(e.peer);
    }
    if (e.kind === "running") a.start = e.time;
    if (["completed", "answered", "failed", "cancelled"].includes(e.kind)) {
      a.end = e.time;
      a.kind = e.kind;
    }
  }
  drawStream();
}

// A lane per peer, with a row per task it ran at once (as Dask's task
// stream has a row per thread): an attempt takes the first row free when it starts.
function layout(list, now) {
  const rows = new Map();   // peer -> end time of each row
  const placed = [];
  for (const a of [...list].sort((p, q) => p.start - q.start)) {
    const ends = rows.get(a.peer) || [];
    rows.set(a.peer, ends);
    let row = ends.findIndex((end) => end <= a.start);
    if (row < 0) { row = ends.length; ends.push(0); }
    ends[row] = a.end ?? now;
    placed.push([a, row]);
  }
  let y = 0;
  const top = new Map();
  for (const peer of lanes) {
    top.set(peer, y);
    y += Math.max(1, (rows.get(peer) || []).length) * ROW + GAP;
  }
  return { placed, top, height: y };
}

function drawStream() {
  const svg = $("stream");
  const width = Math.max(svg.clientWidth || 800, 400);
  const t0 = firstTime ?? 0;
  const now = ended || !last ? lastTime ?? t0 : Math.max(lastTime ?? t0, Date.now() / 1000);
  const span = Math.max(now - t0, 1);
  const x = (t) => LEFT + ((t - t0) / span) * (width - LEFT - 10);
  const ns = "http://www.w3.org/2000/svg";
  const { placed, top, height } = layout([...attempts.values()].slice(-DRAWN), now);
  const parts = [];
  for (const peer of lanes) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 4);
    label.setAttribute("y", top.get(peer) + 12);
    label.textContent = "…" + peer.slice(-10);
    parts.push(label);
  }
  for (const [a, row] of placed) {
    if (!top.has(a.peer)) continue;
    const rect = document.createElementNS(ns, "rect");
    const end = a.end ?? now;
    rect.setAttribute("x", x(a.start));
    rect.setAttribute("y", top.get(a.peer) + row * ROW + 1);
    rect.setAttribute("width", Math.max(1.5, x(end) - x(a.start) - 1));
    rect.setAttribute("height", ROW - 2);
    const color = a.kind === "failed" ? "#dc2626"
      : a.kind === "cancelled" || a.kind === "answered" ? "#aaa"
      : a.phase === "reduce" ? "#16a34a" : "#3b82f6";
    rect.setAttribute("fill", color);
    if (a.end == null) rect.setAttribute("fill-opacity", "0.45");
    rect.setAttribute("class", `attempt ${a.kind} ${a.phase}`);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${a.phase} task ${a.task}: ${a.kind}, ${(end - a.start).toFixed(2)}s`;
    rect.appendChild(title);
    parts.push(rect);
  }
  svg.setAttribute("height", Math.max(40, height + 4));
  svg.replaceChildren(...parts);
}

function connect() {
  const source = new EventSource(`/api/stream?since=${seen}`);
  source.addEventListener("status", (m) => {
    text("connection", "live");
    renderStatus(JSON.parse(m.data));
  });
  source.addEventListener("events", (m) => addEvents(JSON.parse(m.data)));
  source.addEventListener("end", () => {
    ended = true;
    source.close();
    text("connection", last && last.live ? "the job has ended" : "a finished job, from its files");
    drawStream();
  });
  source.onerror = () => {
    if (ended) return;
    source.close();
    text("connection", "the master is not answering (it may have exited); retrying…");
    setTimeout(connect, 2000);
  };
}

setInterval(() => { if (!ended && last) drawStream(); }, 1000);
connect();
