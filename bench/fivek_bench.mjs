// 5,000 sandboxes alive at once (issue 15), created through the official
// SDK: each `Sandbox.create` (its own WebSocket), one command checked in it,
// then its client closes and the sandbox stays alive until its timeout. A
// client per sandbox would hold 5,000 WebSockets open, 1 hutchd fd each on top
// of the sandbox's own 3, past the 20,000-fd hard limit of this machine; the
// users of 5,000 idle sandboxes are not all connected at once either.
// Prints one JSON object (bench/report.py); progress goes to stderr.
//
// Reports: time to create all and creates/s; host memory per idle sandbox at
// FIVEK_MID and at FIVEK_N alive, charged to the memory cgroups as
// bench/mem_bench.mjs does (each sandbox's own + the growth of hutchd's),
// MemAvailable's drop beside it; hutchd's RSS and fds; tasks (pids) on the
// machine; at FIVEK_N, `list` and command round trips (p50/p99) in
// FIVEK_SAMPLE sandboxes picked at random, each checked to answer; the time to
// kill all; then the census (hutchd's cgroups, mounts, loop devices, veths and
// sandbox processes), polled until empty.
//
// Env: DENO_* as for the SDK tests, HUTCHD_PID, HUTCH_CGROUP_NAME,
// MEM_DAEMON_CG (hutchd's own memory cgroup), FIVEK_N (5000), FIVEK_MID
// (1000), FIVEK_PAR (10 creates in flight), FIVEK_SAMPLE (500),
// FIVEK_MIN_AVAIL_MIB (4096: no more creates below this MemAvailable),
// FIVEK_STATE (hutchd's state dir), FIVEK_DISK_DIR (its --disk-dir).
import fs from "node:fs";
import { cgMem, fdCount, meminfo, procStatus as status, sandboxCgDir } from "./cgmem.mjs";
import { execFileSync } from "node:child_process";

const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Client, Sandbox } = await import(sdkUrl.href);

const PID = Number(process.env.HUTCHD_PID);
const N = Number(process.env.FIVEK_N ?? 5000);
const MID = Number(process.env.FIVEK_MID ?? 1000);
const PAR = Number(process.env.FIVEK_PAR ?? 10);
const SAMPLE = Number(process.env.FIVEK_SAMPLE ?? 500);
const MIN_AVAIL_KIB = Number(process.env.FIVEK_MIN_AVAIL_MIB ?? 4096) * 1024;
const CG = process.env.HUTCH_CGROUP_NAME;
const DCG = process.env.MEM_DAEMON_CG || null;
const STATE = process.env.FIVEK_STATE || "";
const DISK_DIR = process.env.FIVEK_DISK_DIR || "";
const ENDPOINT = process.env.DENO_SANDBOX_ENDPOINT;
const TOKEN = process.env.DENO_DEPLOY_TOKEN;

const now = () => process.hrtime.bigint();
const ms = (t0) => Number(now() - t0) / 1e6;
const sleep = (t) => new Promise((r) => setTimeout(r, t));
const log = (...a) => console.error("bench: fivek:", ...a);
function stats(xs) {
  if (!xs.length) return { n: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, p50_ms: +pick(0.5).toFixed(2), p99_ms: +pick(0.99).toFixed(2), max_ms: +s[s.length - 1].toFixed(2) };
}

function fdLimit(pid) {
  const m = /Max open files\s+(\d+)\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/limits`, "utf8"));
  return m ? { soft: Number(m[1]), hard: Number(m[2]) } : null;
}
// tasks (processes and threads) on the whole machine: /proc/loadavg's "running/total"
const tasks = () => Number(fs.readFileSync("/proc/loadavg", "utf8").split(" ")[3].split("/")[1]);
const nodeRss = () => process.memoryUsage().rss / 1024;

const sbCgDir = (id) => sandboxCgDir(CG, id);
function sbProcs(id) {
  for (const f of [`/sys/fs/cgroup/pids/${CG}/${id}/cgroup.procs`, `/sys/fs/cgroup/${CG}/${id}/cgroup.procs`]) {
    try { return fs.readFileSync(f, "utf8").trim().split("\n").filter(Boolean).length; } catch { /* next */ }
  }
  return null;
}

const label = `fivek-${process.pid}`;
const ids = []; // alive, in creation order
const out = { n: N, mid: MID, par: PAR, sample: SAMPLE };

async function settle() {
  await sleep(3000);
  if (global.gc) global.gc();
  await sleep(1000);
}

let base;
async function measure(k) {
  await settle();
  const st = status(PID), mem = meminfo(), dcg = cgMem(DCG);
  const t = { anon: 0, file: 0, kernel: 0, total: 0, n: 0 };
  let procs = 0, procsSeen = 0;
  for (const id of ids) {
    const m = cgMem(sbCgDir(id));
    if (m) {
      for (const key of ["anon", "file", "kernel", "total"]) t[key] += m[key];
      t.n++;
    }
    const p = sbProcs(id);
    if (p !== null) { procs += p; procsSeen++; }
  }
  const per = (key) => ((dcg && base.dcg ? dcg[key] - base.dcg[key] : 0) + t[key]) / k;
  return {
    alive: k,
    charged_kib_per_sandbox: +per("total").toFixed(0),
    charged_anon_kib: +per("anon").toFixed(0),
    charged_kernel_kib: +per("kernel").toFixed(0),
    charged_file_kib: +per("file").toFixed(0),
    sandbox_cgroups_read: t.n,
    daemon_cg: Boolean(dcg && base.dcg),
    memavailable_drop_per_sandbox_kib:
      +((base.mem.MemAvailable - mem.MemAvailable - (nodeRss() - base.node)) / k).toFixed(0),
    memavailable_mib: Math.round(mem.MemAvailable / 1024),
    hutchd_rss_kib: st.rss,
    hutchd_kib_per_sandbox: +((st.rss - base.st.rss) / k).toFixed(1),
    hutchd_fds: fdCount(PID),
    hutchd_fds_per_sandbox: +((fdCount(PID) - base.fds) / k).toFixed(2),
    tasks: tasks(),
    tasks_per_sandbox: +((tasks() - base.tasks) / k).toFixed(2),
    processes_per_sandbox: procsSeen ? +(procs / procsSeen).toFixed(2) : null,
  };
}

// The SDK's own kill request (Sandbox.kill sends it, then waits for its
// WebSocket, which these closed clients no longer have).
async function killOne(id) {
  const r = await fetch(`${ENDPOINT}/api/v3/sandbox/${id}`, {
    method: "DELETE", headers: { Authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(60_000),
  });
  if (!r.ok && r.status !== 404) throw new Error(`kill ${id}: HTTP ${r.status} ${await r.text()}`);
}

// What hutchd still holds for sandboxes: cgroups, mounts, loop devices, veths, processes.
function census() {
  const c = { cgroups: 0, mounts: 0, loops: 0, veths: 0, processes: 0 };
  for (const root of fs.readdirSync("/sys/fs/cgroup").map((d) => `/sys/fs/cgroup/${d}/${CG}`).concat(`/sys/fs/cgroup/${CG}`)) {
    let ents;
    try { ents = fs.readdirSync(root, { withFileTypes: true }); } catch { continue; }
    for (const e of ents) {
      if (!e.isDirectory() || !e.name.startsWith("sbx_")) continue;
      c.cgroups++;
      try { c.processes += fs.readFileSync(`${root}/${e.name}/cgroup.procs`, "utf8").trim().split("\n").filter(Boolean).length; } catch { /* gone */ }
    }
  }
  const mi = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n");
  // a sandbox's: its layer, root or work dir (hutchd's own lxcfs mount in STATE/lxcfs is not one)
  c.mounts = mi.filter((l) => l.includes("/sbx_") || (STATE && l.includes(`${STATE}/sandboxes/`)) ||
    (DISK_DIR && l.includes(`${DISK_DIR}/`))).length;
  for (const d of fs.readdirSync("/sys/block").filter((d) => d.startsWith("loop"))) {
    let b = "";
    try { b = fs.readFileSync(`/sys/block/${d}/loop/backing_file`, "utf8"); } catch { continue; }
    if (DISK_DIR && b.startsWith(`${DISK_DIR}/`)) c.loops++;
  }
  try {
    c.veths = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).split("\n")
      .filter((l) => / hxs/.test(l)).length;
  } catch { c.veths = -1; }
  return c;
}
const censusEmpty = (c) => c.cgroups === 0 && c.mounts === 0 && c.loops === 0 && c.veths === 0 && c.processes === 0;

// ------------------------------------------------------------------ run
await settle();
base = { st: status(PID), mem: meminfo(), dcg: cgMem(DCG), fds: fdCount(PID), tasks: tasks(), node: nodeRss() };
out.start = { hutchd_rss_kib: base.st.rss, hutchd_fds: base.fds, hutchd_fd_limit: fdLimit(PID),
              memavailable_mib: Math.round(base.mem.MemAvailable / 1024), tasks: base.tasks,
              pid_max: Number(fs.readFileSync("/proc/sys/kernel/pid_max", "utf8")) };
log(`start: MemAvailable ${out.start.memavailable_mib} MiB, hutchd fd limit ${JSON.stringify(out.start.hutchd_fd_limit)}`);

const errors = [];
let stopReason = null, failedInRow = 0, logged = 0;
const createMs = [];
let createWallMs = 0; // creating only: the measuring pause at MID is not counted
try {
  let next = 0;
  const phase = async (upto) => {
    const t0 = now();
    await Promise.all(Array.from({ length: PAR }, async () => {
      // a failed create is made up for: the goal is `upto` alive
      while (next < upto + errors.length && !stopReason) {
        const i = next++;
        if (i % 50 === 0 && meminfo().MemAvailable < MIN_AVAIL_KIB) {
          stopReason = `MemAvailable below ${MIN_AVAIL_KIB >> 10} MiB with ${ids.length} alive`;
          break;
        }
        const t = now();
        let sb;
        try {
          sb = await Sandbox.create({ timeout: "60m", labels: { run: label } });
          ids.push(sb.id);
          const text = await sb.sh`echo ${`c-${i}`}`.text();
          if (text.trim() !== `c-${i}`) throw new Error(`${sb.id} answered ${JSON.stringify(text)}`);
          createMs.push(ms(t));
          failedInRow = 0;
        } catch (e) {
          errors.push({ at: i, alive: ids.length, message: String(e.message ?? e).slice(0, 400) });
          log(`create ${i} failed with ${ids.length} alive: ${e.message}`);
          // a stall fails the creates in flight together: stop at a run of them, or many in all
          if (++failedInRow >= 3 * PAR || errors.length >= 50)
            stopReason = `${errors.length} creates failed (${failedInRow} in a row)`;
        } finally {
          await sb?.close().catch(() => {});
        }
        if (ids.length >= logged + 250 && (logged = ids.length)) log(`${ids.length} alive, MemAvailable ${Math.round(meminfo().MemAvailable / 1024)} MiB, hutchd fds ${fdCount(PID)}`);
      }
    }));
    createWallMs += ms(t0);
  };
  if (MID < N) {
    await phase(MID);
    if (!stopReason) {
      out.at_mid = await measure(ids.length);
      log(`at ${MID}: ${JSON.stringify(out.at_mid)}`);
    }
  }
  if (!stopReason) await phase(N);
  out.reached = ids.length;
  out.stop_reason = stopReason;
  out.errors = errors;
  out.create_all_s = +(createWallMs / 1000).toFixed(1);
  out.creates_per_s = +(ids.length / (createWallMs / 1000)).toFixed(1);
  out.create_and_check = stats(createMs);

  out.at_n = await measure(ids.length);
  log(`at ${ids.length}: ${JSON.stringify(out.at_n)}`);

  // list (the SDK's): the newest 1,000 (docs/protocol.md), running and ours
  const client = new Client();
  const mine = new Set(ids);
  const listMs = [];
  for (let i = 0; i < 10; i++) {
    const t = now();
    const page = await client.sandboxes.list({ labels: { run: label } });
    listMs.push(ms(t));
    const running = page.filter((s) => s.status === "running" && mine.has(s.id)).length;
    if (running < Math.min(ids.length, 1000) - errors.length)
      throw new Error(`list shows ${running} of ours running (${page.length} listed, ${ids.length} alive)`);
  }
  out.list = stats(listMs);
  // hutch's own list of what hutchd holds (GET /hutch/v1/live): every one of them
  const liveMs = [];
  for (let i = 0; i < 5; i++) {
    const t = now();
    const r = await fetch(`${ENDPOINT}/hutch/v1/live`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    const body = await r.json();
    liveMs.push(ms(t));
    const held = body.sandboxes.filter((s) => s.state === "running" && mine.has(s.id)).length;
    if (held !== ids.length) throw new Error(`hutch/v1/live shows ${held} of ${ids.length} running`);
  }
  out.live_list = stats(liveMs);
  // command round trips in SAMPLE sandboxes picked at random (no repeats):
  // connect, the first command, then 3 more timed
  const pick = [...ids].sort(() => Math.random() - 0.5).slice(0, SAMPLE);
  const connectMs = [], rtMs = [];
  let answered = 0;
  for (const [j, id] of pick.entries()) {
    let t = now();
    const sb = await Sandbox.connect(id);
    try {
      connectMs.push(ms(t));
      for (let k = 0; k < 4; k++) {
        t = now();
        const text = await sb.sh`echo ${`rt-${j}-${k}`}`.text();
        if (k > 0) rtMs.push(ms(t));
        if (text.trim() !== `rt-${j}-${k}`) throw new Error(`${id} answered ${JSON.stringify(text)}`);
      }
      answered++;
    } finally {
      await sb.close().catch(() => {});
    }
  }
  out.sampled_answered = answered;
  out.connect = stats(connectMs);
  out.cmd_round_trip = stats(rtMs);
  log(`list ${JSON.stringify(out.list)}, round trip ${JSON.stringify(out.cmd_round_trip)}, ${answered}/${pick.length} answered`);
} catch (e) {
  out.failure = String(e.stack ?? e).slice(0, 1000);
  log(`failed: ${out.failure}`);
} finally {
  // kill all, PAR * 2 requests in flight
  const t0 = now();
  let next = 0;
  const killErrors = [];
  await Promise.all(Array.from({ length: PAR * 2 }, async () => {
    while (next < ids.length) {
      const id = ids[next++];
      await killOne(id).catch((e) => killErrors.push(String(e.message).slice(0, 200)));
    }
  }));
  out.kill_all_s = +(ms(t0) / 1000).toFixed(1);
  out.kill_errors = killErrors.slice(0, 5);
  // the census, until empty (teardown may finish after the DELETE answered)
  let c;
  for (let i = 0; i < 120; i++) {
    c = census();
    if (censusEmpty(c)) break;
    await sleep(1000);
  }
  out.gone_all_s = +(ms(t0) / 1000).toFixed(1);
  out.census_after_kill = c;
  let left = -1;
  try { left = (await new Client().sandboxes.list({ labels: { run: label } })).filter((s) => s.status === "running").length; } catch { /* reported as -1 */ }
  out.listed_running_after_kill = left;
  log(`killed ${ids.length} in ${out.kill_all_s} s; census ${JSON.stringify(c)}`);
}
console.log(JSON.stringify(out));
process.exit(out.failure || !censusEmpty(out.census_after_kill) || out.listed_running_after_kill !== 0 ? 1 : 0);
