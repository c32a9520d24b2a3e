// fer-edge dashboard: fleet, classroom and driver views over the JSON API; live updates by server-sent events.
"use strict";

const COLORS = { angry: "#d62728", disgust: "#8c564b", fear: "#9467bd", happy: "#2ca02c",
                 sad: "#1f77b4", surprise: "#ff7f0e", neutral: "#7f7f7f" };
const $ = (sel, el = document) => el.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const ago = (ts) => (ts ? `${Math.max(0, Math.round(Date.now() / 1000 - ts))} s ago` : "never");
const clock = (ts) => new Date(ts * 1000).toLocaleTimeString();
const since = (ts) => { if (!ts) return "never"; const s = Math.max(0, Date.now() / 1000 - ts);
  const when = s < 86400 ? new Date(ts * 1000).toLocaleTimeString() : new Date(ts * 1000).toLocaleString();
  return `${when} (${s < 120 ? Math.round(s) + " s" : s < 7200 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h"} ago)`; };
// A device's state for every view: offline, stale (online but silent for stale_s) or online. Recomputed on
// the browser's clock, so a device that falls silent turns stale without a reload.
function deviceState(d) {
  if (!d) return "unknown";
  if (d.status === "offline") return "offline";
  const seen = Math.max(d.last_seen || 0, d.status === "online" ? d.status_since || 0 : 0);
  if (d.stale || (d.status === "online" && Date.now() / 1000 - seen > CONFIG.stale_s)) return "stale";
  return d.status || "unknown";
}
const badge = (d) => { const st = deviceState(d); return `<span class="badge ${esc(st)}" data-state="${esc(st)}">${esc(st)}</span>`; };
const noDataSince = (d) => `no data since ${since(d && d.last_seen)}`;
const api = async (path, opts) => { const r = await fetch(path, opts); if (!r.ok) throw new Error(`${path}: ${r.status}`); return r.json(); };

let CONFIG = null, SOURCE = null, VIEW = null, LIVE = 0, CHARTS = [], GEN = 0;
// Each route() starts a new generation; callbacks of a view that was left (timers, debounced loads,
// in-flight fetches) check alive() and do nothing.
const current = () => { const gen = GEN; return () => gen === GEN; };

function stream(params, onEvents) {
  if (SOURCE) SOURCE.close();
  SOURCE = new EventSource("/api/stream?" + new URLSearchParams(params));
  SOURCE.onmessage = (e) => {
    const events = JSON.parse(e.data);
    LIVE += events.length;
    $("#live-count").textContent = LIVE;
    onEvents(events);
  };
}

function debounce(fn, ms) { let t = null; return () => { if (!t) t = setTimeout(() => { t = null; fn(); }, ms); }; }

function clearCharts() { CHARTS.forEach((c) => c.destroy()); CHARTS = []; }

function chart(el, title, series, data, opts = {}) {
  const width = Math.max(320, Math.min(900, el.clientWidth || 800));
  const u = new uPlot({ title, width, height: opts.height || 240, series: [{}, ...series], bands: opts.bands,
    scales: { x: { time: true }, ...(opts.scales || {}) }, axes: opts.axes, legend: { live: false } }, data, el);
  CHARTS.push(u);
  return u;
}

// ---------------------------------------------------------------- fleet
async function fleetView(view) {
  const alive = current();
  view.innerHTML = `<h2>Fleet</h2>
    <div class="card"><table id="fleet"><thead><tr><th>device</th><th>status</th><th>role</th><th>last seen</th><th>FPS</th>
      <th>backend</th><th>outbox</th><th>CPU °C</th><th>faces</th><th>views</th></tr></thead><tbody></tbody></table></div>
    <div class="card"><div id="rate-chart"></div>
      <p class="muted">Messages per 2 s from the whole fleet, live. Stale: online but silent for more than ${CONFIG.stale_s} s.</p></div>`;
  const devices = new Map();
  const render = () => {
    if (!alive()) return;
    const rows = [...devices.values()].sort((a, b) => a.device.localeCompare(b.device)).map((d) => {
      const st = deviceState(d);
      // offline or stale: the last FPS/faces are history, not the present: say since when nothing came
      const values = st === "offline" || st === "stale"
        ? `<td colspan="5" class="nodata">${esc(noDataSince(d))}</td>`
        : `<td>${fmt(d.fps)}</td><td>${esc(d.backend || "–")}</td><td>${d.outbox_depth ?? "–"}</td><td>${fmt(d.cpu_temp_c)}</td>
        <td>${d.faces ?? "–"}</td>`;
      return `<tr class="${st}" data-device="${esc(d.device)}"><td>${esc(d.device)}</td><td>${badge(d)}</td>
        <td>${esc(d.role || "general")}</td><td>${ago(d.last_seen)}</td>${values}
        <td><a href="#/classroom/${encodeURIComponent(d.device)}">classroom</a> ·
        <a href="#/driver/${encodeURIComponent(d.device)}">driver</a></td></tr>`;
    });
    $("#fleet tbody").innerHTML = rows.join("") || `<tr><td colspan="10">no device has published yet</td></tr>`;
  };
  const refresh = async () => { const list = await api("/api/devices"); if (!alive()) return; for (const d of list) devices.set(d.device, d); render(); };
  await refresh();
  if (!alive()) return;
  const history = await api("/api/activity?window=120");
  if (!alive()) return;
  const xs = history.map((h) => h[0]), ys = history.map((h) => h[1]);
  const u = chart($("#rate-chart"), "fleet messages / 2 s (live)", [{ label: "messages", stroke: "#23395d", fill: "#23395d22" }], [xs, ys]);
  let bucket = 0;
  const timer = setInterval(() => {
    if (!alive()) return;
    xs.push(Math.floor(Date.now() / 1000)); ys.push(bucket); bucket = 0;
    if (xs.length > 61) { xs.shift(); ys.shift(); }
    u.setData([xs, ys]);
    render();
  }, 2000);
  const slowRefresh = debounce(refresh, 2000);
  stream({ kinds: "status,stats,seen,alert" }, (events) => {
    for (const e of events) {
      if (e.type === "seen") bucket += e.n || 1;
      const d = devices.get(e.device);
      if (!d) { slowRefresh(); continue; }
      if (e.type === "status") { d.status = e.status; d.status_since = e.ts; d.stale = false; }
      if (e.type === "seen") { d.last_seen = Math.max(d.last_seen || 0, e.ts); d.stale = false; }
      if (e.type === "stats") Object.assign(d, { fps: e.fps, backend: e.backend, outbox_depth: e.outbox_depth, cpu_temp_c: e.cpu_temp_c, faces: e.faces, role: e.role });
    }
    render();
  });
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- classroom
function windowParams(sel) {
  const now = Date.now() / 1000;
  if (sel === "live") return { since: now - 300 };
  if (sel === "hour") return { since: now - 3600 };
  if (sel === "day") return { since: now - 86400 };
  if (sel === "week") return { since: now - 7 * 86400 };
  if (sel === "month") return { since: now - 30 * 86400 };
  const from = Date.parse($("#lesson-from").value) / 1000, to = Date.parse($("#lesson-to").value) / 1000;
  return isNaN(from) || isNaN(to) ? { since: now - 3600 } : { since: from, until: to };
}

async function pickDevice(kind, id) {
  const devices = await api("/api/devices");
  const groups = Object.keys(CONFIG.groups || {});
  const opts = [...devices.map((d) => d.device), ...(kind === "classroom" ? groups.map((g) => g) : [])];
  if (id && !opts.includes(id)) opts.unshift(id);
  const current = id || opts[0] || "";
  const options = opts.map((o) => `<option value="${esc(o)}" ${o === current ? "selected" : ""}>${esc(o)}${groups.includes(o) ? " (group)" : ""}</option>`);
  const info = new Map(devices.map((d) => [d.device, d]));
  return { current, html: `<select id="device-pick">${options.join("")}</select>`, info,
           known: !current || info.has(current) || groups.includes(current) };
}

// A page for a device that never published (the API answers 404): say so, and fill in when it does.
function unknownDevice(view, title, pick, kind) {
  view.innerHTML = `<h2>${esc(title)} <span class="muted">${esc(pick.current)}</span></h2><div class="controls">${pick.html}</div>
    <p class="unknown" id="unknown">No device "${esc(pick.current)}": it has not published within the retention
      (${CONFIG.retention_days} days). This page fills in as soon as it does.</p>`;
  $("#device-pick").onchange = (e) => { location.hash = `#/${kind}/${encodeURIComponent(e.target.value)}`; };
  const alive = current();
  stream({ devices: pick.current }, () => { if (alive()) route(); });
}

// The state line of the devices a view shows: a badge each and, when nothing comes, since when.
function stateLine(ids, info) {
  return ids.map((id) => { const d = info.get(id); const st = deviceState(d);
    return `<span class="device-state" data-device="${esc(id)}">${esc(id)} ${badge(d)}${st === "offline" || st === "stale"
      ? ` <span class="nodata">${esc(noDataSince(d))}</span>` : ""}</span>`; }).join(" ");
}

// Live events keep ``info`` (device -> its /api/devices row) current: status changes and messages seen.
function trackDevices(info, events) {
  for (const e of events) {
    const d = info.get(e.device);
    if (!d) continue;
    if (e.type === "status") { d.status = e.status; d.status_since = e.ts; d.stale = false; }
    if (e.type === "seen") { d.last_seen = Math.max(d.last_seen || 0, e.ts); d.stale = false; }
    if (e.type === "stats" && e.role) d.role = e.role;
  }
}

async function classroomView(view, id) {
  const alive = current();
  const pick = await pickDevice("classroom", id);
  if (!alive()) return;
  const target = pick.current;
  if (!pick.known) return unknownDevice(view, "Classroom", pick, "classroom");
  const members = (CONFIG.groups || {})[target] || [target];
  const silent = () => members.every((m) => ["offline", "stale"].includes(deviceState(pick.info.get(m))));
  view.innerHTML = `<h2>Classroom <span class="muted">${esc(target)}</span></h2>
    <div class="controls" id="device-states"></div>
    <div class="controls">${pick.html}
      <label>window <select id="window"><option value="live">live (5 min)</option><option value="hour">last hour</option>
        <option value="day">last 24 h</option><option value="week">last 7 days</option>
        <option value="month">last 30 days</option><option value="lesson">a lesson…</option></select></label>
      <span id="lesson" hidden><input type="datetime-local" id="lesson-from"> – <input type="datetime-local" id="lesson-to">
        <button id="lesson-go">show</button></span>
      <a id="csv" href="#">CSV export</a><span class="muted" id="tier"></span></div>
    <div class="row"><div class="card"><div class="muted">faces present</div><div class="big" id="faces-now">–</div></div>
      <div class="card"><div class="muted">engagement index (window)</div><div class="big" id="engagement">–</div></div>
      <div class="card"><div class="muted">formula</div><div class="formula" id="formula">${esc(CONFIG.formula)}</div>
        <div class="muted">From the devices' summaries; a proxy for how the room reacts, not a measure of attention.</div></div></div>
    <div class="card"><div id="mix-chart"></div></div>
    <div class="row"><div class="card"><div id="faces-chart"></div></div><div class="card"><div id="eng-chart"></div></div></div>`;
  $("#device-pick").onchange = (e) => { location.hash = `#/classroom/${encodeURIComponent(e.target.value)}`; };
  const load = async () => {
    if (!target || !alive()) return;
    const sel = $("#window").value;
    const q = new URLSearchParams({ devices: target, ...windowParams(sel) });
    $("#csv").href = "/api/classroom.csv?" + q;
    const data = await api("/api/classroom?" + q);
    if (!alive()) return;
    // which tier answered: raw summaries (per device window) or per-minute rollups (older or longer windows)
    $("#tier").textContent = data.tier === "minutes"
      ? `per-minute rollups, a point per ${Math.round(data.resolution_s / 60)} min` : "raw summaries";
    clearCharts();
    const xs = data.points.map((p) => p.ts);
    const labels = data.labels;
    // stacked area: cumulative shares, each band filled between it and the one below
    const cum = labels.map(() => []);
    data.points.forEach((p) => { let acc = 0; labels.forEach((l, i) => { acc += p.shares[l] || 0; cum[i].push(acc); }); });
    const series = labels.map((l) => ({ label: l, stroke: COLORS[l], fill: COLORS[l] + "aa", width: 1 }));
    const bands = labels.slice(1).map((_, i) => ({ series: [i + 2, i + 1], fill: COLORS[labels[i + 1]] + "aa" }));
    series.forEach((s, i) => { if (i > 0) delete s.fill; });
    chart($("#mix-chart"), "expression mix (share of face observations, stacked)", series, [xs, ...cum],
          { bands, scales: { y: { range: [0, 1] } }, height: 280 });
    chart($("#faces-chart"), "faces present", [{ label: "faces", stroke: "#23395d" }], [xs, data.points.map((p) => p.faces)], { height: 180 });
    chart($("#eng-chart"), "engagement index", [{ label: "E", stroke: "#2ca02c" }], [xs, data.points.map((p) => p.engagement)],
          { height: 180, scales: { y: { range: [0, 100] } } });
    const last = data.points[data.points.length - 1];
    showFaces(last ? last.faces : "–");
    $("#engagement").textContent = data.engagement === null ? "–" : data.engagement;
  };
  // faces present is "now": when no member is heard, say since when instead of the last count
  const showFaces = (n) => {
    const el = $("#faces-now");
    const quiet = silent();
    el.classList.toggle("nodata", quiet);
    el.textContent = quiet ? noDataSince({ last_seen: Math.max(0, ...members.map((m) => (pick.info.get(m) || {}).last_seen || 0)) }) : n;
  };
  const states = () => { if (alive()) $("#device-states").innerHTML = stateLine(members, pick.info); };
  states();
  const timer = setInterval(() => { states(); if (silent()) showFaces("–"); }, 2000);
  $("#window").onchange = () => { $("#lesson").hidden = $("#window").value !== "lesson"; if ($("#window").value !== "lesson") load(); };
  $("#lesson-go").onclick = load;
  await load();
  const reload = debounce(load, 1000);
  const devs = (CONFIG.groups || {})[target] || [target];
  stream({ devices: devs.join(","), kinds: "summary,expression,status,seen,stats" }, (events) => {
    if (!alive()) return;
    trackDevices(pick.info, events);
    states();
    if ($("#window").value === "lesson") return;
    if (events.some((e) => e.type === "summary")) reload();
    const faces = events.filter((e) => e.type === "summary").pop();
    if (faces) showFaces(faces.faces);
  });
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- driver
const KIND_NAMES = { negative_expression: "negative expression", no_face: "no face" };

function alertRow(device, g) {
  const a = g.active || g.last;
  const state = g.active ? `active since ${clock(g.active.since)}` : `cleared ${g.last && g.last.cleared_ts ? clock(g.last.cleared_ts) : ""}`;
  const detail = a ? `${esc(a.detail.expression || "")} ${a.detail.seconds ?? ""} s` : "";
  const history = g.history.map((h) => `<li>${clock(h.since)} ${esc(h.state)}${h.cleared_ts ? ` → ${clock(h.cleared_ts)}` : ""}
    ${esc(h.detail.expression || "")} ${h.detail.seconds ?? ""} s${h.acked ? " · acknowledged" : ""}</li>`).join("");
  const more = g.count > g.history.length ? `<li class="muted">… ${g.count - g.history.length} older</li>` : "";
  return `<tr class="alert ${g.active ? "raised" : "cleared"} ${g.unacked ? "" : "acked"}" data-kind="${esc(g.kind)}">
    <td>${esc(KIND_NAMES[g.kind] || g.kind)}</td><td>${state}</td>
    <td class="count" title="raise/clear cycles kept (retention)">${g.count}× since ${clock(g.first)}</td><td>${detail}</td>
    <td>${g.unacked ? `<button data-ack-kind="${esc(g.kind)}">acknowledge (${g.unacked})</button>` : "acknowledged"}</td></tr>
    <tr class="history"><td colspan="5"><details><summary>last ${g.history.length} of ${g.count}</summary><ul>${history}${more}</ul></details></td></tr>`;
}

async function driverView(view, id) {
  const alive = current();
  const pick = await pickDevice("driver", id);
  if (!alive()) return;
  const device = pick.current;
  if (!pick.known) return unknownDevice(view, "Driver", pick, "driver");
  const t = CONFIG.alerts;
  view.innerHTML = `<h2>Driver <span class="muted">${esc(device)}</span></h2>
    <div class="controls" id="device-states"></div>
    <div class="controls">${pick.html}<span class="muted" id="alert-rules">alerts: ${esc(t.negative.join("/"))} for ≥ ${t.negative_s} s;
      no face for ≥ ${t.no_face_s} s</span></div>
    <div class="row"><div class="card"><div class="muted">current expression</div><div class="big" id="current">–</div>
      <div class="muted" id="current-detail"></div></div>
      <div class="card" style="flex:1"><div class="muted">alerts (one row per kind)</div><table id="alerts"><thead><tr><th>alert</th><th>state</th>
        <th>how often</th><th>detail</th><th></th></tr></thead><tbody></tbody></table></div></div>
    <div class="card"><div id="conf-chart"></div>
      <p class="muted">Each point: one expression event, its confidence in the expression it reports (the colour).</p></div>`;
  $("#device-pick").onchange = (e) => { location.hash = `#/driver/${encodeURIComponent(e.target.value)}`; };
  // the confidence chart: one series per expression, so every point says which expression it is
  const labels = CONFIG.labels, xs = [], ys = labels.map(() => []);
  const addPoint = (e) => { xs.push(e.ts); labels.forEach((l, i) => ys[i].push(l === e.expression ? e.confidence : null)); };
  const recent = await api(`/api/devices/${encodeURIComponent(device)}/expressions?since=${Date.now() / 1000 - 300}&limit=300`);
  if (!alive()) return;
  recent.forEach(addPoint);
  clearCharts();
  const u = chart($("#conf-chart"), "confidence of each detected expression (last 5 min)",
                  labels.map((l) => ({ label: l, stroke: COLORS[l], width: 0, points: { show: true, size: 6, fill: COLORS[l] } })),
                  [xs, ...ys], { height: 220, scales: { y: { range: [0, 1] } } });
  let info = pick.info.get(device);
  const render = (d) => {
    if (!alive()) return;
    if (d) info = { ...info, ...d.info };
    $("#device-states").innerHTML = stateLine([device], new Map([[device, info]]));
    const st = deviceState(info);
    if (info.alerts_apply === false) $("#alert-rules").textContent = `no driver alerts: this camera's role is ${info.role}`;
    if (st === "offline" || st === "stale") {  // never the last expression of a camera that went quiet
      $("#current").innerHTML = `<span class="nodata">${esc(noDataSince(info))}</span>`;
      $("#current-detail").textContent = `device ${st}`;
    } else if (d) {
      const f = d.faces[0];
      $("#current").innerHTML = f ? `<span class="expr-${esc(f.expression)}">${esc(f.expression)}</span>` : "no face";
      $("#current-detail").textContent = f ? `face ${f.face_id}, confidence ${fmt(f.confidence, 2)}, ${ago(f.ts)}` : "";
    }
    if (!d) return;
    $("#alerts tbody").innerHTML = d.alert_groups.map((g) => alertRow(device, g)).join("") || `<tr><td colspan="5">no alerts</td></tr>`;
    for (const b of view.querySelectorAll("button[data-ack-kind]")) {
      b.onclick = async () => {
        await api(`/api/devices/${encodeURIComponent(device)}/alerts/${encodeURIComponent(b.dataset.ackKind)}/ack`, { method: "POST" });
        load();
      };
    }
  };
  const load = async () => {
    if (!alive()) return;
    const d = await api(`/api/devices/${encodeURIComponent(device)}/driver`);
    render(d);
  };
  await load();
  const reload = debounce(load, 500);
  const timer = setInterval(() => render(null), 2000);  // silent for stale_s: turns stale without an event
  stream({ devices: device, kinds: "expression,alert,ack,status,seen,stats" }, (events) => {
    if (!alive()) return;
    const m = new Map([[device, info]]);
    trackDevices(m, events);
    info = m.get(device);
    for (const e of events) {
      if (e.type === "expression") { addPoint(e); if (xs.length > 300) { xs.shift(); ys.forEach((y) => y.shift()); } }
    }
    u.setData([xs, ...ys]);
    reload();
  });
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- "cannot hear the fleet" banner (every view)
async function checkHealth() {
  const el = $("#deaf");
  let text = "";
  try {
    const r = await fetch("/healthz", { cache: "no-store" });  // 503 while deaf: the body still says why
    const h = await r.json();
    if (h.mqtt && h.mqtt.deaf) {
      text = `Not receiving from the broker since ${clock(h.mqtt.down_since)} (${Math.round(h.mqtt.down_s)} s): ` +
        `${esc(h.mqtt.error || "not connected")} <span class="muted">Views show stored data only; devices may look silent.</span>`;
    } else if (h.db_ok === false) {
      text = `The dashboard's database does not answer. <span class="muted">Views may be out of date.</span>`;
    }
  } catch (err) {
    text = `The dashboard server does not answer (${esc(err.message)}). <span class="muted">Nothing on this page updates.</span>`;
  }
  el.innerHTML = text;
  el.hidden = !text;
}

// ---------------------------------------------------------------- router
async function route() {
  if (typeof VIEW === "function") VIEW();
  VIEW = null;
  GEN += 1;
  clearCharts();
  const [, name = "fleet", id = ""] = (location.hash || "#/fleet").split("/");
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.id === `nav-${name}`);
  const view = $("#view");
  try {
    if (name === "classroom") VIEW = await classroomView(view, decodeURIComponent(id));
    else if (name === "driver") VIEW = await driverView(view, decodeURIComponent(id));
    else VIEW = await fleetView(view);
  } catch (err) {
    view.innerHTML = `<p class="alert raised">${esc(err.message)}</p>`;
  }
}

(async () => {
  checkHealth();
  setInterval(checkHealth, 3000);
  CONFIG = await api("/api/config");
  window.addEventListener("hashchange", route);
  await route();
})();
