// The tdvsm dashboard: polls ./stats every second, follows ./events live. No build step, no library.
"use strict";

const POLL_MS = 1000;
const HISTORY = 120;          // points on the rate chart (seconds)
const MAX_EVENTS = 60;        // lines in the recent-events list
const RATES = ["vp_actions", "commits", "vmcs_reads", "vmcs_writes", "vtl_switches", "intercepts"];
// HvMessageType values of secure intercepts (DOMAIN 2.5).
const MESSAGE_TYPES = { 0x80000001: "GPA intercept", 0x80010000: "I/O port intercept", 0x80010001: "MSR intercept",
  0x80010006: "register intercept" };

const $ = (id) => document.getElementById(id);
const base = new URL(".", document.baseURI);
let previous = null;
const history = [];
let source = null;

function fmt(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "-";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function rate(n) {
  if (n === null || n === undefined) return "-";
  return n >= 100 ? fmt(n) : fmt(n, 1);
}

function us(value) {
  if (value === null || value === undefined) return "-";
  return value >= 1000 ? fmt(value / 1000, 2) + " ms" : fmt(value, 1) + " \u00b5s";
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function link(state, text) {
  const pill = $("link");
  pill.className = "pill pill-" + state;
  pill.textContent = text;
}

function renderCards(stats) {
  const t = stats.totals;
  const states = t.partitions;
  const total = states.running + states.failed + states.stopped;
  $("backend").textContent = stats.backend;
  $("uptime").textContent = duration(stats.uptime);
  $("c-partitions").textContent = fmt(total);
  $("c-partition-states").textContent = `${fmt(states.running)} running, ${fmt(states.failed)} failed, ${fmt(states.stopped)} stopped`;
  $("c-vps").textContent = fmt(t.vps);
  $("c-mailbox").textContent = `${fmt(t.mailbox_depth)} queued, max ${fmt(t.mailbox_high_water)}`;
  $("c-connections").textContent = fmt(t.connections);
  $("c-subscribers").textContent = `${fmt(t.subscribers)} on events, ${fmt(t.requests_in_flight)} in flight`;
  for (const key of RATES) $("t-" + key).textContent = fmt(t[key]) + " in all";
}

function renderRates(stats) {
  const t = stats.totals;
  if (previous) {
    const dt = Math.max(stats.time - previous.time, 1e-3);
    const point = { time: stats.time };
    for (const key of RATES) {
      point[key] = Math.max(t[key] - previous.totals[key], 0) / dt;
      $("r-" + key).textContent = rate(point[key]);
    }
    history.push(point);
    if (history.length > HISTORY) history.shift();
  }
  previous = stats;
  drawChart();
}

function drawChart() {
  const canvas = $("rates");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const left = 56, bottom = height - 18, top = 8, right = width - 56;
  // Guest actions on the left axis; VTL switches and intercepts (far fewer) on the right one.
  const scale = niceCeiling(Math.max(1, ...history.map((p) => p.vp_actions)));
  const minor = niceCeiling(Math.max(1, ...history.map((p) => Math.max(p.vtl_switches, p.intercepts))));
  ctx.strokeStyle = "#28313c";
  ctx.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = bottom - ((bottom - top) * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillStyle = "#4fb3ff";
    ctx.fillText(rate((scale * i) / 4), left - 6, y + 4);
    ctx.textAlign = "left";
    ctx.fillStyle = "#c792ea";
    ctx.fillText(rate((minor * i) / 4), right + 6, y + 4);
  }
  ctx.fillStyle = "#8a96a3";
  ctx.textAlign = "left";
  ctx.fillText(`${HISTORY} s ago`, left, height - 4);
  ctx.textAlign = "right";
  ctx.fillText("now", right, height - 4);
  const x = (i) => right - ((history.length - 1 - i) * (right - left)) / (HISTORY - 1);
  const series = [["vp_actions", "#4fb3ff", true, scale], ["vtl_switches", "#c792ea", false, minor],
    ["intercepts", "#ffb454", false, minor]];
  for (const [key, color, fill, top_value] of series) {
    if (history.length < 2) break;
    const y = (v) => bottom - ((bottom - top) * Math.min(v, top_value)) / top_value;
    ctx.beginPath();
    history.forEach((p, i) => (i ? ctx.lineTo(x(i), y(p[key])) : ctx.moveTo(x(i), y(p[key]))));
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.stroke();
    if (fill) {
      ctx.lineTo(x(history.length - 1), bottom);
      ctx.lineTo(x(0), bottom);
      ctx.closePath();
      ctx.fillStyle = "rgba(79, 179, 255, 0.12)";
      ctx.fill();
    }
  }
}

function niceCeiling(v) {
  const magnitude = Math.pow(10, Math.floor(Math.log10(v)));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= v) return step * magnitude;
  return 10 * magnitude;
}

function renderLatency(stats) {
  const body = $("latency").tBodies[0];
  if (!stats.actions.length) return;
  body.replaceChildren(...stats.actions.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.action = row.action;
    const outcomes = Object.entries(row.outcomes).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    tr.append(cell(row.action), cell(fmt(row.count), "n"), cell(us(row.p50_us), "n"),
      cell(us(row.p90_us), "n"), cell(us(row.p99_us), "n"), cell(outcomes, "outcome"));
    return tr;
  }));
}

function renderPartitions(stats) {
  const rows = stats.partitions;
  const total = stats.totals.partitions.running + stats.totals.partitions.failed + stats.totals.partitions.stopped;
  $("partition-note").textContent = rows.length < total ? `the first ${rows.length} of ${fmt(total)}` : "";
  if (!rows.length) return;
  $("partitions").tBodies[0].replaceChildren(...rows.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.partition = p.id;
    const state = cell("");
    const badge = document.createElement("span");
    badge.className = "state state-" + p.state;
    badge.textContent = p.state;
    state.append(badge);
    tr.append(cell(p.id, "n"), cell(fmt(p.vp_count), "n"), state, cell(fmt(p.vtl1_vps), "n"),
      cell(fmt(p.actions), "n"), cell(fmt(p.commits), "n"), cell(fmt(p.vmcs_reads), "n"), cell(fmt(p.vmcs_writes), "n"),
      cell(fmt(p.vtl_switches), "n"), cell(fmt(p.mailbox_depth), "n"), cell(p.failure || "", "wrap"));
    return tr;
  }));
}

function describe(event) {
  switch (event.type) {
    case "VtlSwitch":
      return `VTL${event.from_vtl} \u2192 VTL${event.to_vtl}` + (event.to_vtl ? ` (entry reason ${event.entry_reason})` : "");
    case "SecureIntercept": {
      const m = event.message;
      const kind = MESSAGE_TYPES[m.message_type] || `message 0x${m.message_type.toString(16)}`;
      const what = m.register_name !== null ? `register 0x${m.register_name.toString(16)}`
        : m.msr !== null ? `MSR 0x${m.msr.toString(16)}` : m.gpa !== null ? `GPA 0x${m.gpa.toString(16)}` : "";
      return `${kind}: ${what} at RIP 0x${m.rip.toString(16)}`;
    }
    case "Commit":
      return `VTL${event.vtl}: ${event.commits} commit(s), ${event.vmcs_writes} VMCS write(s)`;
    case "PartitionFailure":
      return event.reason;
    case "Cut":
      return `stream cut after missing ${event.missed} events: ${event.reason}`;
    default:
      return JSON.stringify(event);
  }
}

function addEvent(event) {
  const list = $("events");
  const empty = list.querySelector(".empty");
  if (empty) empty.remove();
  const li = document.createElement("li");
  li.dataset.type = event.type;
  const when = document.createElement("span");
  when.className = "t";
  when.textContent = new Date().toLocaleTimeString("en-GB");
  const kind = document.createElement("span");
  kind.className = "k-" + event.type;
  kind.textContent = event.type === "Cut" ? "Cut"
    : event.vp === undefined ? `${event.type} p${event.partition}` : `${event.type} p${event.partition}/vp${event.vp}`;
  const what = document.createElement("span");
  what.textContent = describe(event);
  li.append(when, kind, what);
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function follow() {
  if (source) source.close();
  const types = ["VtlSwitch", "SecureIntercept", "PartitionFailure"];
  if ($("with-commits").checked) types.push("Commit");
  source = new EventSource(new URL("events?type=" + types.join(","), base));
  for (const type of [...types, "Cut"]) {
    source.addEventListener(type, (message) => addEvent(JSON.parse(message.data)));
  }
  source.onopen = () => { $("event-note").textContent = "live"; };
  source.onerror = () => { $("event-note").textContent = "reconnecting"; };
}

async function poll() {
  try {
    const reply = await fetch(new URL("stats", base), { credentials: "same-origin", cache: "no-store" });
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    const stats = await reply.json();
    renderCards(stats);
    renderRates(stats);
    renderLatency(stats);
    renderPartitions(stats);
    link("live", "live");
  } catch (error) {
    link("down", "no data: " + error.message);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("with-commits").addEventListener("change", follow);
  window.addEventListener("resize", drawChart);
  follow();
  poll();
});
