// hutch's dashboard: sign in, the organization's sandboxes, a sandbox's detail (plots, processes,
// network, usage, kill, extend, terminal) and usage by day and label. Every value from the API is put
// on the page with textContent (or drawn on a canvas): labels and names are user input, never markup.
import { api, qs, setToken, token } from "./api.js";
import { barChart, lineChart } from "./plot.js";
import { openTerminal } from "./term.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["signin", "list", "detail", "usage"];
const REFRESH_MS = 2000;

let timer = null;
let terminal = null;
let detailStats = { id: null, samples: [] };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function show(view) {
  for (const v of VIEWS) $(v).hidden = v !== view;
  $("nav").hidden = view === "signin";
}

function stopRefresh() {
  clearTimeout(timer);
  timer = null;
  generation++;
}

function closeTerminal() {
  terminal?.close();
  terminal = null;
  $("d-term").hidden = true;
  $("d-terminal").textContent = "Open terminal";
}

// ---- formatting
function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}
const mib = (b) => `${(b / 1048576).toFixed(b < 10485760 ? 1 : 0)} MiB`;
function bytes(b) {
  if (b < 1024) return `${b} B`;
  if (b < 1048576) return `${(b / 1024).toFixed(1)} KiB`;
  if (b < 1073741824) return `${(b / 1048576).toFixed(1)} MiB`;
  return `${(b / 1073741824).toFixed(2)} GiB`;
}
const usd = (micro) => `$${(micro / 1e6).toFixed(micro < 10000 ? 6 : 4)}`;
const when = (ms) => new Date(ms).toLocaleString();

function labelChips(labels) {
  const span = el("span", { class: "labels" });
  for (const [k, v] of Object.entries(labels ?? {})) span.append(el("span", { class: "label" }, `${k}=${v}`));
  return span;
}

function message(target, text, bad = false) {
  target.textContent = text;
  target.className = bad ? "error" : "muted";
}

// ---- sign in
async function signIn(ev) {
  ev.preventDefault();
  const t = $("token").value.trim();
  $("signin-error").textContent = "";
  try {
    await api("/api/v2/sandboxes", { tok: t });
  } catch (e) {
    $("signin-error").textContent = e.status === 401 ? `Sign-in refused: ${e.message}` : `Sign-in failed: ${e.message}`;
    return;
  }
  setToken(t);
  $("token").value = "";
  route();
}

function signOut() {
  stopRefresh();
  closeTerminal();
  setToken(null);
  location.hash = "#/";
  route();
}

// Any 401 later on (revoked token) sends the user back to sign in, with the reason.
function handleError(e, target) {
  if (e.status === 401) {
    setToken(null);
    stopRefresh();
    closeTerminal();
    show("signin");
    $("signin-error").textContent = `Signed out: ${e.message}`;
    return;
  }
  if (target) message(target, e.message, true);
}

// ---- the list
function parseFilter(text) {
  const out = [];
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i > 0) out.push([part.slice(0, i), part.slice(i + 1)]);
  }
  return out;
}

async function refreshList() {
  const filter = parseFilter($("filter").value);
  try {
    const [list, live] = await Promise.all([
      api(`/api/v2/sandboxes${qs(filter.map(([k, v]) => [`labels[${k}]`, v]))}`),
      api("/hutch/v1/live"),
    ]);
    const byId = new Map(live.sandboxes.map((s) => [s.id, s]));
    const showStopped = $("show-stopped").checked;
    const rows = list.filter((s) => showStopped || s.status !== "stopped" || byId.has(s.id));
    const tbody = $("sandboxes").tBodies[0];
    tbody.replaceChildren(...rows.map((s) => {
      const l = byId.get(s.id);
      const state = l?.state ?? s.status;
      const created = Date.parse(s.createdAt) || l?.createdAt;
      const end = s.stoppedAt ? Date.parse(s.stoppedAt) : Date.now();
      const tr = el("tr", { class: "link", dataset: { id: s.id } },
        el("td", { class: "mono" }, s.id),
        el("td", { class: `state state-${state}` }, state),
        el("td", {}, labelChips(s.labels)),
        el("td", {}, created ? age(end - created) : ""),
        el("td", {}, l ? `${l.sample ? mib(l.sample.memBytes) : "–"} / ${mib(l.memoryLimitBytes)}` : ""),
        el("td", {}, l?.sample?.cpuMillis != null ? `${(l.sample.cpuMillis / 10).toFixed(1)} %` : ""));
      tr.addEventListener("click", () => { location.hash = `#/sandbox/${encodeURIComponent(s.id)}`; });
      return tr;
    }));
    $("list-empty").hidden = rows.length > 0;
    message($("list-status"), `updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    handleError(e, $("list-status"));
  }
}

// ---- a sandbox
function plotStats() {
  const s = detailStats.samples;
  lineChart($("plot-cpu"), s.filter((x) => x.cpuMillis != null).map((x) => ({ t: x.t, v: x.cpuMillis / 10 })),
            { minMax: 5 });
  lineChart($("plot-mem"), s.map((x) => ({ t: x.t, v: x.memBytes / 1048576 })), { minMax: 16 });
}

async function refreshDetail(id) {
  const enc = encodeURIComponent(id);
  const live = (await api("/hutch/v1/live")).sandboxes.find((s) => s.id === id);
  const listed = live ? null : (await api("/api/v2/sandboxes")).find((s) => s.id === id);
  const state = live?.state ?? listed?.status ?? "unknown";
  $("d-id").textContent = id;
  $("d-state").textContent = state;
  $("d-state").className = `state state-${state}`;
  $("d-labels").replaceChildren(labelChips(live?.labels ?? listed?.labels));
  $("d-stop").textContent = live ? (live.stopAtMs ? `stops at ${when(live.stopAtMs)}` : "lives while connected (session)") : "";
  $("d-stop").dataset.stopAt = String(live?.stopAtMs ?? 0);
  for (const b of ["d-kill", "d-extend", "d-terminal"]) $(b).disabled = !live || state !== "running";
  // a session sandbox lives while connected: extending would give it a timeout it does not have
  if (live && !live.stopAtMs) $("d-extend").disabled = true;
  if (!live) {
    closeTerminal();
    return;
  }
  const since = detailStats.samples.length ? detailStats.samples[detailStats.samples.length - 1].t : 0;
  const [stats, procs, net, usage] = await Promise.all([
    api(`/api/v2/sandboxes/${enc}/stats${qs([["since", since]])}`).catch(() => null),
    api(`/api/v2/sandboxes/${enc}/processes`).catch(() => null),
    api(`/api/v2/sandboxes/${enc}/network`).catch(() => null),
    api(`/api/v2/usage${qs([["by", "sandbox"], ["from", live.createdAt - 1000]])}`).catch(() => null),
  ]);
  if (stats) {
    detailStats.samples = detailStats.samples.concat(stats.samples).slice(-stats.capacity);
    plotStats();
  }
  if (procs) {
    $("d-procs").tBodies[0].replaceChildren(...procs.processes.slice(-100).reverse().map((p) => el("tr", {},
      el("td", {}, p.pid), el("td", {}, p.signal ? p.signal : p.code), el("td", {}, when(p.startedAt)),
      el("td", {}, `${(p.wallUs / 1e6).toFixed(2)} s`), el("td", {}, `${(p.cpuUs / 1e6).toFixed(3)} s`),
      el("td", {}, bytes(p.maxRssKib * 1024)), el("td", {}, bytes(p.blockReadBytes)), el("td", {}, bytes(p.blockWriteBytes)))));
  }
  if (net) {
    $("d-net").tBodies[0].replaceChildren(...(net.audit ?? []).slice(-100).reverse().map((a) => el("tr", {},
      el("td", {}, new Date(a.time_ms).toLocaleTimeString()), el("td", {}, a.verdict), el("td", {}, a.proto),
      el("td", {}, a.host), el("td", {}, a.ip), el("td", {}, a.port), el("td", {}, a.reason))));
  }
  if (usage) {
    const g = usage.groups.find((x) => x.key === id);
    $("d-usage").tBodies[0].replaceChildren(...(g ? [
      ["CPU", `${g.cpuHours.toFixed(6)} CPU-hours`, usd(g.cpuCostMicroUsd)],
      ["memory (limit)", `${g.memoryGibHours.toFixed(6)} GiB-hours`, usd(g.memoryCostMicroUsd)],
      ["egress", bytes(g.egressBytes), ""],
      ["total", "", usd(g.costMicroUsd)],
    ] : [["no usage yet", "", ""]]).map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c)))));
  }
}

async function kill(id) {
  if (!confirm(`Kill ${id}? Everything in it is lost.`)) return;
  try {
    await api(`/api/v3/sandbox/${encodeURIComponent(id)}`, { method: "DELETE" });
    message($("d-msg"), "killed");
    closeTerminal();
    await refreshDetail(id);
  } catch (e) {
    handleError(e, $("d-msg"));
  }
}

async function extend(id) {
  const cur = Number($("d-stop").dataset.stopAt) || Date.now();
  try {
    const r = await api(`/api/v3/sandbox/${encodeURIComponent(id)}`, {
      method: "PATCH", body: { stop_at_ms: Math.max(cur, Date.now()) + 5 * 60 * 1000 } });
    message($("d-msg"), `now stops at ${when(r.stop_at_ms)}`);
    await refreshDetail(id);
  } catch (e) {
    handleError(e, $("d-msg"));
  }
}

function toggleTerminal(id) {
  if (terminal) return closeTerminal();
  $("d-term").hidden = false;
  $("d-term").replaceChildren();
  terminal = openTerminal($("d-term"), id, token());
  $("d-terminal").textContent = "Close terminal";
}

// ---- usage
async function refreshUsage(ev) {
  ev?.preventDefault();
  const days = Math.min(366, Math.max(1, Number($("usage-days").value) || 14));
  const from = Date.now() - days * 86400000;
  const key = $("usage-label").value.trim();
  try {
    const byDay = await api(`/api/v2/usage${qs([["by", "day"], ["from", from]])}`);
    barChart($("plot-days"), byDay.groups.map((g) => ({ label: String(g.key).slice(5), v: g.costMicroUsd / 1e6 })));
    message($("usage-total"), `${days} days: ${usd(byDay.total.costMicroUsd)}, ${byDay.total.sandboxes} sandboxes`);
    let rows = byDay.groups;
    if (key) {
      const byLabel = await api(`/api/v2/usage${qs([["by", "label"], ["label", key], ["from", from]])}`);
      barChart($("plot-labels"), byLabel.groups.map((g) => ({ label: g.key ?? "(none)", v: g.costMicroUsd / 1e6 })));
      rows = byLabel.groups;
    } else {
      barChart($("plot-labels"), []);
    }
    $("usage-table").tBodies[0].replaceChildren(...rows.map((g) => el("tr", {},
      el("td", {}, g.key ?? "(no label)"), el("td", {}, g.cpuHours.toFixed(6)), el("td", {}, g.memoryGibHours.toFixed(4)),
      el("td", {}, g.volumeGibMonths.toFixed(6)), el("td", {}, bytes(g.egressBytes)), el("td", {}, usd(g.costMicroUsd)))));
  } catch (e) {
    handleError(e, $("usage-total"));
  }
}

// ---- routing: #/ list, #/sandbox/ID detail, #/usage
let generation = 0;
function loop(fn) {
  stopRefresh();
  const gen = ++generation;
  const tick = async () => {
    await fn();
    if (gen === generation && timer !== null) timer = setTimeout(tick, REFRESH_MS);
  };
  timer = setTimeout(tick, 0);
}

function route() {
  if (!token()) {
    stopRefresh();
    closeTerminal();
    show("signin");
    return;
  }
  const h = location.hash;
  const m = h.match(/^#\/sandbox\/([^/]+)$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    if (detailStats.id !== id) {
      closeTerminal();
      detailStats = { id, samples: [] };
      $("d-msg").textContent = "";
      for (const t of ["d-procs", "d-net", "d-usage"]) $(t).tBodies[0].replaceChildren();
    }
    show("detail");
    $("d-kill").onclick = () => kill(id);
    $("d-extend").onclick = () => extend(id);
    $("d-terminal").onclick = () => toggleTerminal(id);
    loop(() => refreshDetail(id).catch((e) => handleError(e, $("d-msg"))));
  } else if (h === "#/usage") {
    closeTerminal();
    show("usage");
    stopRefresh();
    refreshUsage();
  } else {
    closeTerminal();
    detailStats = { id: null, samples: [] };
    show("list");
    loop(refreshList);
  }
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("filter-form").addEventListener("submit", (ev) => { ev.preventDefault(); refreshList(); });
$("filter").addEventListener("input", () => refreshList());
$("show-stopped").addEventListener("change", () => refreshList());
$("usage-form").addEventListener("submit", refreshUsage);
window.addEventListener("hashchange", route);
route();
