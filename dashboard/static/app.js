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

const LAWFUL_USE = "https://github.com/fer-edge/fer-edge/blob/main/docs/attention.md#lawful-use";
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

// An x scale showing at least the last ``seconds`` up to now (one point alone would get a range of years).
const lastSeconds = (seconds) => ({ time: true, range: (u, lo, hi) => { const now = Date.now() / 1000;
  return [Math.min(lo ?? now, now - seconds), Math.max(hi ?? now, now)]; } });

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
    <p class="notice" id="no-emotions" hidden>Emotions are not inferred on ${members.length > 1 ? "these devices" : "this device"}
      (<code>[model] emotions = false</code>): the EU AI Act forbids inferring the emotions of people in education
      institutions, so this view shows who is present and where they look (<a href="${LAWFUL_USE}">lawful use</a>).</p>
    <div class="row"><div class="card"><div class="muted">faces present</div><div class="big" id="faces-now">–</div></div>
      <div class="card emotions"><div class="muted">engagement index (window)</div><div class="big" id="engagement">–</div></div>
      <div class="card emotions"><div class="muted">formula</div><div class="formula" id="formula">${esc(CONFIG.formula)}</div>
        <div class="muted">From the devices' summaries; a proxy for how the room reacts, not a measure of attention.</div></div>
      <div class="card attention" hidden><div class="muted">attention share (window)</div><div class="big" id="looking">–</div>
        <div class="muted">Share of face observations with the head toward the front (the devices' landmarks).</div></div></div>
    <div class="card emotions"><div id="mix-chart"></div></div>
    <div class="row"><div class="card"><div id="faces-chart"></div></div><div class="card emotions"><div id="eng-chart"></div></div>
      <div class="card attention" hidden><div id="look-chart"></div></div></div>`;
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
    // no emotions inferred: presence and attention share instead of the expression mix (no expression field exists)
    const emotions = data.emotions !== false;
    const attention = data.points.some((p) => p.looking_share !== null && p.looking_share !== undefined);
    $("#no-emotions").hidden = emotions;
    for (const el of view.querySelectorAll(".emotions")) el.hidden = !emotions;
    for (const el of view.querySelectorAll(".attention")) el.hidden = !(attention || !emotions);
    $("#looking").textContent = data.looking_share === null || data.looking_share === undefined ? "–" : `${Math.round(100 * data.looking_share)} %`;
    if (attention || !emotions) {
      chart($("#look-chart"), "attention share (looking toward the front)", [{ label: "share", stroke: "#6a3d9a", fill: "#6a3d9a22" }],
            [xs, data.points.map((p) => p.looking_share)], { height: 180, scales: { y: { range: [0, 1] } } });
    }
    chart($("#faces-chart"), "faces present", [{ label: "faces", stroke: "#23395d" },
      ...(attention || !emotions ? [{ label: "faces read (landmarks)", stroke: "#6a3d9a", dash: [4, 4] }] : [])],
      [xs, data.points.map((p) => p.faces), ...(attention || !emotions ? [data.points.map((p) => p.faces_read)] : [])], { height: 180 });
    const last = data.points[data.points.length - 1];
    showFaces(last ? last.faces : "–");
    if (!emotions) return;
    const labels = data.labels;
    // stacked area: cumulative shares, each band filled between it and the one below
    const cum = labels.map(() => []);
    data.points.forEach((p) => { let acc = 0; labels.forEach((l, i) => { acc += p.shares[l] || 0; cum[i].push(acc); }); });
    const series = labels.map((l) => ({ label: l, stroke: COLORS[l], fill: COLORS[l] + "aa", width: 1 }));
    const bands = labels.slice(1).map((_, i) => ({ series: [i + 2, i + 1], fill: COLORS[labels[i + 1]] + "aa" }));
    series.forEach((s, i) => { if (i > 0) delete s.fill; });
    chart($("#mix-chart"), "expression mix (share of face observations, stacked)", series, [xs, ...cum],
          { bands, scales: { y: { range: [0, 1] } }, height: 280 });
    chart($("#eng-chart"), "engagement index", [{ label: "E", stroke: "#2ca02c" }], [xs, data.points.map((p) => p.engagement)],
          { height: 180, scales: { y: { range: [0, 100] } } });
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
  // at once, not 2 s later: an offline badge never sits next to a bare "–" that looks like an empty room
  const tick = () => { states(); if (silent()) showFaces("–"); };
  tick();
  const timer = setInterval(tick, 2000);
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
const KIND_NAMES = { negative_expression: "negative expression", no_face: "no face", drowsy: "drowsy",
                     distracted: "distracted (eyes off the road)", yawning: "yawning" };
const EVENT_NAMES = { long_closure: "long eye closure", yawn: "yawn", off_road: "eyes off the road", blink: "blink" };

// An alert's detail in words: the device's own alerts carry their text; the dashboard's rules their figures.
const alertDetail = (a) => (a.detail.text !== undefined ? esc(a.detail.text) : `${esc(a.detail.expression || "")} ${a.detail.seconds ?? ""} s`);

function alertRow(device, g) {
  const a = g.active || g.last;
  const state = g.active ? `active since ${clock(g.active.since)}` : `cleared ${g.last && g.last.cleared_ts ? clock(g.last.cleared_ts) : ""}`;
  const detail = a ? alertDetail(a) : "";
  const history = g.history.map((h) => `<li>${clock(h.since)} ${esc(h.state)}${h.cleared_ts ? ` → ${clock(h.cleared_ts)}` : ""}
    ${alertDetail(h)}${h.acked ? " · acknowledged" : ""}</li>`).join("");
  const more = g.count > g.history.length ? `<li class="muted">… ${g.count - g.history.length} older</li>` : "";
  const from = g.source === "device" ? ` <span class="tag" title="raised by the device from its face landmarks">device</span>` : "";
  return `<tr class="alert ${g.active ? "raised" : "cleared"} ${g.unacked ? "" : "acked"}" data-kind="${esc(g.kind)}" data-source="${esc(g.source)}">
    <td>${esc(KIND_NAMES[g.kind] || g.kind)}${from}</td><td>${state}</td>
    <td class="count" title="raise/clear cycles kept (retention)">${g.count}× since ${clock(g.first)}</td><td class="detail">${detail}</td>
    <td>${g.unacked ? `<button data-ack-kind="${esc(g.kind)}">acknowledge (${g.unacked})</button>` : "acknowledged"}</td></tr>
    <tr class="history"><td colspan="5"><details><summary>last ${g.history.length} of ${g.count}</summary><ul>${history}${more}</ul></details></td></tr>`;
}

// A series drawn as points only: counts per minute are not a curve between minutes.
const dots = (label, color) => ({ label, stroke: color, width: 0, points: { show: true, size: 8, fill: color } });

// The attention part of the driver page: the device's eye, mouth and head-pose signals (attention messages),
// its events and their per-minute rollups. Returns { add(events), render(info, latest) }.
async function driverAttention(device, alive) {
  const base = `/api/devices/${encodeURIComponent(device)}`;
  const now = Date.now() / 1000;
  const rows = await api(`${base}/attention?since=${now - 300}&limit=3000`);
  const xs = [], perclos = [], openness = [], blinks = [], yaw = [], pitch = [], offRoad = [];
  const mean = (v) => (v && v.length ? v.reduce((x, y) => x + y, 0) / v.length : null);
  const add = (a) => { xs.push(a.ts); perclos.push(a.perclos); openness.push(mean(a.eye_openness)); blinks.push(a.blinks_per_min);
    yaw.push(a.yaw); pitch.push(a.pitch); offRoad.push(a.off_road_s ?? null); };
  rows.forEach(add);
  const pc = chart($("#perclos-chart"), "eyes: PERCLOS (share of the last 60 s ≥ 80% closed) and openness (last 5 min)",
    [{ label: "PERCLOS", stroke: "#b71c1c", fill: "#b71c1c22", width: 2 }, { label: "eye openness", stroke: "#1f77b4", dash: [4, 4] }],
    [xs, perclos, openness], { height: 200, scales: { x: lastSeconds(60), y: { range: [0, 1] } }, axes: [{}, { label: "0 .. 1" }] });
  const bc = chart($("#blink-chart"), "blinks per minute (last 5 min)", [{ label: "blinks / min", stroke: "#1f77b4" }], [xs, blinks],
    { height: 200, scales: { x: lastSeconds(60) }, axes: [{}, { label: "blinks / min" }] });
  const hc = chart($("#pose-chart"), "head pose and eyes-off-road time (last 5 min)",
    [{ label: "yaw °", stroke: "#ff7f0e" }, { label: "pitch °", stroke: "#2ca02c" },
     { label: "off road s", stroke: "#6a3d9a", scale: "s", width: 2 }], [xs, yaw, pitch, offRoad],
    { height: 220, scales: { x: lastSeconds(60), s: { range: [0, 10] } }, axes: [{}, { label: "degrees" }, { side: 1, scale: "s", label: "seconds off road" }] });
  const loadEvents = async () => {
    if (!alive()) return;
    const since = Date.now() / 1000 - 3600;
    const [events, minutes] = await Promise.all([api(`${base}/attention/events?since=${since}&limit=500`), api(`${base}/minutes?since=${since}&limit=60`)]);
    if (!alive()) return;
    const shown = events.filter((e) => e.type !== "blink");
    const nBlinks = events.length - shown.length;
    $("#att-events-title").textContent = `events, last hour: ${shown.length} (and ${nBlinks} blinks)`;
    $("#att-events tbody").innerHTML = shown.slice(0, 20).map((e) => `<tr class="event" data-type="${esc(e.type)}">
      <td>${esc(EVENT_NAMES[e.type] || e.type)}</td><td>${clock(e.start)}</td><td>${fmt(e.duration, 1)} s</td><td>face ${esc(e.face_id)}</td></tr>`).join("")
      || `<tr><td colspan="4">no long closure, yawn or off-road glance</td></tr>`;
    const att = minutes.filter((m) => m.attention);
    const mx = att.map((m) => m.ts), pick = (k) => att.map((m) => m.attention[k]);
    if (MINUTE_CHART) { MINUTE_CHART.destroy(); CHARTS = CHARTS.filter((c) => c !== MINUTE_CHART); }
    MINUTE_CHART = chart($("#minutes-chart"), "per minute, last hour (rollups): events and PERCLOS",
      [dots("blinks", "#1f77b4"), dots("long closures", "#b71c1c"), dots("yawns", "#ff7f0e"), dots("off-road glances", "#6a3d9a"),
       { label: "PERCLOS max", stroke: "#555", scale: "p", dash: [4, 4] }],
      [mx, pick("blinks"), pick("long_closures"), pick("yawns"), pick("off_road_events"), pick("perclos_max")],
      { height: 220, scales: { x: { time: true, range: () => [since, since + 3660] }, p: { range: [0, 1] } },
        axes: [{}, { label: "events / min" }, { side: 1, scale: "p", label: "PERCLOS" }] });
  };
  let MINUTE_CHART = null;
  await loadEvents();
  const reloadEvents = debounce(loadEvents, 1000);
  return {
    any: rows.length > 0,
    add(events) {
      let news = false;
      for (const e of events) {
        if (e.type !== "attention") continue;
        add(e);
        if (e.events && e.events.length) news = true;
      }
      while (xs.length > 3000) [xs, perclos, openness, blinks, yaw, pitch, offRoad].forEach((v) => v.shift());
      pc.setData([xs, perclos, openness]); bc.setData([xs, blinks]); hc.setData([xs, yaw, pitch, offRoad]);
      if (news) reloadEvents();
    },
    render(st, info, a) {  // the cards: nothing current from a device that is offline or stale
      const quiet = st === "offline" || st === "stale";
      const set = (id, html) => { $(id).innerHTML = quiet ? `<span class="nodata">${esc(noDataSince(info))}</span>` : html; };
      if (!quiet && !a) {
        ["#eyes", "#perclos", "#blinks", "#pose"].forEach((id) => { $(id).textContent = "no face"; });
        $("#eyes-detail").textContent = $("#pose-detail").textContent = "";
        return;
      }
      if (quiet) {
        ["#eyes", "#perclos", "#blinks", "#pose"].forEach((id) => set(id, ""));
        $("#eyes-detail").textContent = $("#pose-detail").textContent = "";
        return;
      }
      const open = a.eye_openness || [];
      set("#eyes", a.eyes_closed ? `<span class="alert raised">closed ${fmt(a.closed_s, 1)} s</span>` : "open");
      $("#eyes-detail").textContent = `openness ${fmt(open[0], 2)} / ${fmt(open[1], 2)} (left / right), ${ago(a.ts)}`;
      set("#perclos", `<span class="${a.drowsy ? "alert raised" : ""}">${fmt(a.perclos, 2)}</span>`);
      set("#blinks", fmt(a.blinks_per_min, 0));
      set("#pose", `${fmt(a.yaw, 0)}° / ${fmt(a.pitch, 0)}°`);
      $("#pose-detail").textContent = a.looking === false ? `off the road for ${fmt(a.off_road_s, 1)} s` : a.looking ? "toward the road" : "learning the ahead pose";
    },
  };
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
      no face for ≥ ${t.no_face_s} s; drowsy, distracted and yawning as the device raises them</span></div>
    <div class="row"><div class="card"><div class="muted">current expression</div><div class="big" id="current">–</div>
      <div class="muted" id="current-detail"></div></div>
      <div class="card" style="flex:1"><div class="muted">alerts (one row per kind)</div><table id="alerts"><thead><tr><th>alert</th><th>state</th>
        <th>how often</th><th>detail</th><th></th></tr></thead><tbody></tbody></table></div></div>
    <section id="attention" hidden><h3>Attention <span class="muted">from the device's face landmarks</span></h3>
      <div class="row"><div class="card"><div class="muted">eyes</div><div class="big" id="eyes">–</div><div class="muted" id="eyes-detail"></div></div>
        <div class="card"><div class="muted">PERCLOS (60 s)</div><div class="big" id="perclos">–</div></div>
        <div class="card"><div class="muted">blinks / min</div><div class="big" id="blinks">–</div></div>
        <div class="card"><div class="muted">head yaw / pitch</div><div class="big" id="pose">–</div><div class="muted" id="pose-detail"></div></div></div>
      <div class="row"><div class="card"><div id="perclos-chart"></div></div><div class="card"><div id="blink-chart"></div></div></div>
      <div class="row"><div class="card"><div id="pose-chart"></div></div>
        <div class="card"><div class="muted" id="att-events-title">events, last hour</div><table id="att-events"><thead><tr><th>event</th>
          <th>began</th><th>lasted</th><th></th></tr></thead><tbody></tbody></table></div></div>
      <div class="card"><div id="minutes-chart"></div></div></section>
    <div class="card" id="expressions-card"><div id="conf-chart"></div>
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
                  [xs, ...ys], { height: 220, scales: { y: { range: [0, 1] },
                    // always the last 5 minutes: one point alone would otherwise stretch the axis over years
                    x: { time: true, range: () => { const t = Date.now() / 1000; return [t - 300, t + 5]; } } } });
  let info = pick.info.get(device);
  $("#attention").hidden = false;  // laid out before its charts are drawn (uPlot sizes them to the card)
  const att = await driverAttention(device, alive);
  if (!alive()) return;
  let latest = null;
  const showAttention = () => { $("#attention").hidden = !(att.any || latest || info.role === "driver"); };
  showAttention();
  const render = (d) => {
    if (!alive()) return;
    if (d) { info = { ...info, ...d.info }; latest = d.attention; }
    $("#device-states").innerHTML = stateLine([device], new Map([[device, info]]));
    const st = deviceState(info);
    if (info.alerts_apply === false) $("#alert-rules").textContent = `no driver alerts: this camera's role is ${info.role}`;
    showAttention();
    att.render(st, info, latest);
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
  stream({ devices: device, kinds: "expression,attention,alert,ack,status,seen,stats" }, (events) => {
    if (!alive()) return;
    const m = new Map([[device, info]]);
    trackDevices(m, events);
    info = m.get(device);
    for (const e of events) {
      if (e.type === "expression") { addPoint(e); if (xs.length > 300) { xs.shift(); ys.forEach((y) => y.shift()); } }
      if (e.type === "attention") latest = e;
    }
    u.setData([xs, ...ys]);
    att.add(events);
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
