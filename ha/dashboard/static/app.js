// Polycorn dashboard: render the state and events pushed over /api/stream (SSE).
// Everything from the cluster is inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const seen = new Set();  // event ids shown, so a reconnect never repeats one
const MAX_EVENTS = 300;
let lastState = null;
let lastStateAt = 0;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function cell(label, content, cls) {
  const td = el("td", null, cls);
  td.dataset.label = label;
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}

function workers(n) {
  if (!n.alive) return "-";
  let text = `${n.workers}/${n.workers_configured}/${n.max_workers}`;
  if (n.workers_target !== n.workers_configured) text += ` (target ${n.workers_target})`;
  return text;
}

function requests(n) {
  const r = n.requests || {status: "off"};
  const span = el("span", r.status === "ok" ? r.per_second.toFixed(1) : "n/a");
  span.title = r.status === "ok" ? `from ${n.metrics_address}/metrics`
    : r.status === "off" ? "this node advertises no metrics endpoint (--metrics-bind)"
    : `${r.status}: ${r.detail}`;
  return span;
}

function note(n, rollout) {
  const notes = [];
  if (n.dead_reason) notes.push(`declared dead at epoch ${n.declared_epoch}: ${n.dead_reason}`);
  if (n.lost_reason) notes.push(`master gone, not yet declared dead: ${n.lost_reason}`);
  if (n.extra_workers) notes.push(`+${n.extra_workers} for ${n.covering.join(", ")}`);
  if (rollout) {
    const step = rollout.nodes.find((r) => r.node_id === n.node_id);
    if (step && step.step !== "pending") notes.push(`rollout: ${step.step}`);
  }
  return notes.join("; ");
}

function nodeRow(n, state) {
  const tr = el("tr", null, n.alive ? "" : "dead");
  tr.dataset.node = n.node_id;
  const name = el("span", n.node_id);
  if (n.leader) { const star = el("span", " ★", "star"); star.title = "leader"; name.append(star); }
  const text = note(n, state.rollout);
  if (text) name.append(el("span", text, "note"));
  tr.append(cell("Node", name),
    cell("State", el("span", n.state, `badge ${n.state}`)),
    cell("Release", n.release || "-"),
    cell("Workers", workers(n), "num"),
    cell("Heartbeat", n.heartbeat_age === null ? "-" : `${n.heartbeat_age.toFixed(1)} s ago`, "num"),
    cell("Address", n.address || "-"),
    cell("Drained", n.drain_requested ? (n.state === "draining" ? "yes" : "requested") : "no"),
    cell("Req/s", requests(n), "num"),
    cell("Actions", actionButtons(n), "act"));
  return tr;
}

function actionButtons(n) {
  const box = el("span");
  if (!n.alive) return box;
  const verb = n.drain_requested ? "undrain" : "drain";
  const b = el("button", verb === "drain" ? "Drain" : "Undrain", verb === "drain" ? "danger" : "");
  b.type = "button";
  b.dataset.verb = verb;
  b.dataset.node = n.node_id;
  box.append(b);
  return box;
}

function renderRollout(r) {
  $("rollout").hidden = !r;
  if (!r) return;
  $("rollout-id").textContent = r.id;
  $("rollout-progress").max = Math.max(1, r.total);
  $("rollout-progress").value = r.done + 0.5 * r.upgrading.length;  // half-way while upgrading
  $("rollout-line").textContent = r.line;
  const list = $("rollout-nodes");
  list.replaceChildren(...r.nodes.map((n) => el("li", `${n.node_id}: ${n.step}`)));
  $("abort").hidden = !(lastState && lastState.actions);
}

function render(state) {
  lastState = state;
  lastStateAt = Date.now();
  document.body.classList.toggle("actions", !!state.actions);
  $("actions").hidden = !state.actions;
  $("cluster").textContent = state.cluster;
  document.title = `Polycorn ${state.cluster}`;
  $("leader").textContent = state.leader || "none";
  $("epoch").textContent = state.epoch ?? "-";
  const alive = state.nodes.filter((n) => n.alive).length;
  $("alive").textContent = `${alive} of ${state.nodes.length}`;
  $("redis").textContent = state.redis;
  $("error").hidden = !state.error;
  $("error").textContent = state.error
    ? `Redis unreadable: ${state.error} (showing the state read ${state.read_age ?? "?"} s ago)` : "";
  $("nodes").tBodies[0].replaceChildren(...state.nodes.map((n) => nodeRow(n, state)));
  renderRollout(state.rollout);
}

function eventKind(kind) {
  if (/dead|failed|rolled_back|rejected|short|gone|aborted|stepped_down/.test(kind)) return "bad";
  if (/ready|done|promoted|elected|rejoined|returned/.test(kind)) return "good";
  return "";
}

function addEvent(e, fresh) {
  if (seen.has(e.id)) return;
  seen.add(e.id);
  const li = el("li", null, fresh ? "fresh" : "");
  li.dataset.id = e.id;
  li.dataset.event = e.event;
  const when = new Date(e.time_ms);
  li.append(el("time", `${when.toLocaleTimeString()}.${String(e.time_ms % 1000).padStart(3, "0")} `),
    el("span", e.event, `kind ${eventKind(e.event)}`),
    document.createTextNode(e.line.slice(e.line.indexOf(e.event) + e.event.length)));
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) {  // a page left open for days stays small
    seen.delete(list.lastElementChild.dataset.id);
    list.lastElementChild.remove();
  }
}

function connect() {
  const link = $("link");
  const source = new EventSource("/api/stream");
  let first = true;
  source.addEventListener("open", () => { link.textContent = "live"; link.className = "link live"; });
  source.addEventListener("state", (m) => render(JSON.parse(m.data)));
  source.addEventListener("cluster", (m) => addEvent(JSON.parse(m.data), !first));
  source.addEventListener("state", () => { first = false; }, {once: true});
  source.addEventListener("error", () => { link.textContent = "reconnecting…"; link.className = "link down"; });
}

// The stream sends a state about every second; say so when it stops coming.
setInterval(() => {
  if (lastState && Date.now() - lastStateAt > 5000) {
    $("link").textContent = `no news for ${Math.round((Date.now() - lastStateAt) / 1000)} s`;
    $("link").className = "link down";
  }
}, 1000);

// -- actions (only shown when the server allows them) ---------------------------------

async function act(verb, body) {
  const out = $("action-result");
  const token = $("token").value.trim();
  sessionStorage.setItem("polycorn-token", token);
  out.className = "";
  out.textContent = `${verb}…`;
  try {
    const reply = await fetch(`/api/actions/${verb}`, {
      method: "POST", credentials: "omit",
      headers: {"Content-Type": "application/json", "Authorization": `Bearer ${token}`},
      body: JSON.stringify(body)});
    const data = await reply.json();
    out.textContent = data.ok ? data.message : `refused (${reply.status}): ${data.error}`;
    out.className = data.ok ? "" : "bad";
  } catch (err) {
    out.textContent = `failed: ${err}`;
    out.className = "bad";
  }
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.verb) {
    if (confirm(`${b.dataset.verb} ${b.dataset.node}?`)) act(b.dataset.verb, {node: b.dataset.node});
  } else if (b.id === "upgrade") {
    const k = prompt("Rolling upgrade of every live node: how many at a time (max unavailable)?", "1");
    if (k !== null && /^\d+$/.test(k.trim())) act("upgrade", {max_unavailable: parseInt(k, 10)});
  } else if (b.id === "abort") {
    if (confirm("Abort the running rollout?")) act("abort", {});
  }
});

$("token").value = sessionStorage.getItem("polycorn-token") || "";
connect();
