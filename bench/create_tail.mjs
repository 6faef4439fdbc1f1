// The create path's tail while sandboxes pile up (issue 15, "creates per
// second while 1,000 pile up"; issue 11.5's scale step): CT_N sandboxes
// created CT_PAR at a time through the official SDK, each spawning a bash
// that streams a line a second (as tests/scale/scale.test.mjs does), none
// closed until all are made. It says where the slowest creates spent their
// time:
//  - hutchd's create trace (HUTCH_CREATE_TRACE=1 in its environment; its log
//    at CT_LOG): per step, p50 of all, and the mean of the slowest 5 % and 1 %
//    by total, beside the client's time for create and spawn;
//  - a sampler (every CT_SAMPLE_MS, default 100) of every hutch-init still
//    setting up (a child of hutchd in one of its sandboxes' memory cgroups,
//    not yet idle in epoll): its system call (the __x64_sys_ frame of its
//    kernel stack) and the frame it sleeps in, its state, and its schedstat
//    run-queue wait from first sight to idle; and of hutchd's own threads
//    (loop, libuv workers) whenever they are not idle in futex/epoll;
//  - the load average at the start, its range during the run, at the end.
// Then every sandbox is killed. One JSON object on stdout (the summary),
// readable lines on stderr.
//
// Env: DENO_* as for the SDK tests, HUTCHD_PID, HUTCH_CGROUP_NAME, CT_LOG
// (hutchd's log), CT_N (1000), CT_PAR (10), CT_SAMPLE_MS (100; 0 = off).
import fs from "node:fs";

const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Sandbox } = await import(sdkUrl.href);

const PID = Number(process.env.HUTCHD_PID);
const CG = process.env.HUTCH_CGROUP_NAME;
const LOG = process.env.CT_LOG;
const N = Number(process.env.CT_N ?? 1000);
const PAR = Number(process.env.CT_PAR ?? 10);
const SAMPLE_MS = Number(process.env.CT_SAMPLE_MS ?? 100);

const now = () => process.hrtime.bigint();
const ms = (t0) => Number(now() - t0) / 1e6;
const log = (...a) => console.error("bench: create_tail:", ...a);
const rd = (p) => { try { return fs.readFileSync(p, "utf8"); } catch { return null; } };
const loadavg = () => (rd("/proc/loadavg") || "").split(" ").slice(0, 3).map(Number);
const pct = (xs, q) => {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
const r1 = (x) => +x.toFixed(1);

// ---------------------------------------------------------------- sampler
// pid -> {id, first, samples: Map(key -> count), runDelay0, runDelay1, idle}
const inits = new Map();
const seenIdle = new Set();
const hutchdSamples = new Map(); // "thread: key" -> count
const lxcfsSamples = new Map();
let lxcfsPid = 0;
let loadMin = Infinity, loadMax = 0, ticks = 0;
const loadTick = setInterval(() => { const la = loadavg()[0]; loadMin = Math.min(loadMin, la); loadMax = Math.max(loadMax, la); }, 1000);
const IDLE = /^(do_epoll_wait|ep_poll|futex_wait_queue|futex_wait|do_sys_poll|do_select|hrtimer_nanosleep|do_nanosleep|0)$/;

// the kernel stack's syscall and the frame it sits in
function stackKey(pid, tid) {
  const st = rd(`/proc/${pid}/task/${tid}/stack`);
  const frames = (st || "").split("\n").map((l) => l.replace(/^\[<[0-9a-f]+>\] /, "").replace(/\+0x.*$/, "")).filter(Boolean);
  const sys = frames.find((f) => f.startsWith("__x64_sys_") || f.startsWith("__do_sys_"));
  const top = frames.filter((f) => !/^(__schedule|schedule|schedule_timeout|schedule_preempt_disabled|io_schedule)$/.test(f)).slice(0, 2);
  return { sys: sys ? sys.replace(/^__(x64|do)_sys_/, "") : frames.length ? "(kernel)" : "(user)", top: top.join("<") };
}

function runDelay(pid) {
  const s = rd(`/proc/${pid}/schedstat`);
  return s ? Number(s.split(" ")[1]) / 1e6 : null;
}

function sampleOnce() {
  ticks++;
  const la = loadavg()[0];
  loadMin = Math.min(loadMin, la);
  loadMax = Math.max(loadMax, la);
  const tids = fs.readdirSync(`/proc/${PID}/task`);
  const kids = new Set();
  for (const tid of tids) {
    for (const c of (rd(`/proc/${PID}/task/${tid}/children`) || "").split(" ")) if (c) kids.add(Number(c));
    // hutchd's own threads, when busy or blocked in a call
    const wchan = rd(`/proc/${PID}/task/${tid}/wchan`) || "0";
    const stat = rd(`/proc/${PID}/task/${tid}/stat`) || "";
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (state === "S" && IDLE.test(wchan)) continue;
    const comm = (rd(`/proc/${PID}/task/${tid}/comm`) || "?").trim();
    const who = Number(tid) === PID ? "loop" : comm;
    const k = stackKey(PID, tid);
    const key = `${who} ${state} ${k.sys}: ${k.top || wchan}`;
    hutchdSamples.set(key, (hutchdSamples.get(key) || 0) + 1);
  }
  // hutchd's lxcfs, which answers hutch-init's open_tree of its view files:
  // its threads when not waiting for a request
  if (lxcfsPid) {
    for (const tid of fs.readdirSync(`/proc/${lxcfsPid}/task`)) {
      const stat = rd(`/proc/${lxcfsPid}/task/${tid}/stat`) || "";
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      const wchan = rd(`/proc/${lxcfsPid}/task/${tid}/wchan`) || "0";
      if (state === "S" && /^(fuse_dev_do_read|do_epoll_wait|ep_poll|futex_wait_queue|hrtimer_nanosleep|do_nanosleep)$/.test(wchan)) continue;
      const k = stackKey(lxcfsPid, tid);
      const key = `${state} ${k.sys}: ${k.top || wchan}`;
      lxcfsSamples.set(key, (lxcfsSamples.get(key) || 0) + 1);
    }
  }
  for (const pid of kids) {
    if (seenIdle.has(pid)) continue;
    let rec = inits.get(pid);
    if (!rec) {
      const cg = rd(`/proc/${pid}/cgroup`) || "";
      const m = new RegExp(`:memory:/(?:.*/)?${CG}/([^/\\n]+)`).exec(cg);
      if (!m) { // hutch-proxy, lxcfs, helpers, or not yet in its cgroup
        if ((rd(`/proc/${pid}/comm`) || "").trim() === "lxcfs") lxcfsPid = pid;
        seenIdle.add(pid);
        continue;
      }
      rec = { id: m[1], first: Date.now(), samples: new Map(), rd0: runDelay(pid), rd1: null, n: 0 };
      inits.set(pid, rec);
    }
    const stat = rd(`/proc/${pid}/stat`);
    if (!stat) { seenIdle.add(pid); continue; }
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    const wchan = rd(`/proc/${pid}/wchan`) || "0";
    if (state === "S" && /^(do_epoll_wait|ep_poll)$/.test(wchan)) {
      rec.rd1 = runDelay(pid);
      seenIdle.add(pid);
      continue;
    }
    const k = stackKey(pid, pid);
    const key = `${state} ${k.sys}: ${k.top || wchan}`;
    rec.samples.set(key, (rec.samples.get(key) || 0) + 1);
    rec.n++;
    rec.rd1 = runDelay(pid);
  }
}

let sampler = null;
if (SAMPLE_MS > 0 && PID) {
  sampler = setInterval(() => { try { sampleOnce(); } catch { /* a process gone between reads */ } }, SAMPLE_MS);
}

// ---------------------------------------------------------------- the run
const label = `createtail-${process.pid}`;
const alive = [];
const clientTimes = new Map(); // id -> {create, spawn, total, at}

async function startOne() {
  const t = now();
  const sb = await Sandbox.create({ timeout: "15m", labels: { run: label } });
  const tc = ms(t);
  const rec = { sb, closing: false };
  alive.push(rec);
  const t2 = now();
  const child = await sb.spawn("bash", {
    args: ["-c", `i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 1; done`],
    stdout: "piped",
  });
  clientTimes.set(sb.id, { create: tc, spawn: ms(t2), total: ms(t), at: Date.now() });
  (async () => { for await (const _ of child.stdout); })().catch(() => {});
}

async function killAll() {
  let next = 0;
  await Promise.all(Array.from({ length: PAR }, async () => {
    while (next < alive.length) {
      const r = alive[next++];
      r.closing = true;
      await r.sb.kill().catch(() => {});
      await r.sb.close().catch(() => {});
    }
  }));
}

const out = { n: N, par: PAR, load_start: loadavg() };
log(`${N} creates, ${PAR} in flight, load average ${out.load_start.join(" ")}`);
const t0 = now();
let next = 0, failure = null, lastLogged = 0;
const totals = [];
await Promise.all(Array.from({ length: PAR }, async () => {
  while (next < N && !failure) {
    const i = next++;
    const t = now();
    try {
      await startOne();
    } catch (e) {
      failure ??= `create ${i} of ${N} failed with ${alive.length} alive: ${e.message}`;
    }
    totals.push(ms(t));
    if (alive.length % 100 === 0 && alive.length !== lastLogged && !failure && (lastLogged = alive.length)) log(`${alive.length} alive after ${(ms(t0) / 1000).toFixed(1)} s, load ${loadavg()[0]}`);
  }
}));
const wall = ms(t0) / 1000;
if (sampler) clearInterval(sampler);
clearInterval(loadTick);
out.failure = failure;
out.alive = alive.length;
out.create_all_s = r1(wall);
out.creates_per_s = r1(alive.length / wall);
out.client_ms = { p50: r1(pct(totals, 0.5)), p90: r1(pct(totals, 0.9)), p99: r1(pct(totals, 0.99)), max: r1(Math.max(...totals)) };
out.load_during = [loadMin, loadMax];
out.load_end = loadavg();
log("killing all");
const tk = now();
await killAll();
out.kill_all_s = r1(ms(tk) / 1000);

// ---------------------------------------------------------------- the report
const STEPS = ["cgroup", "queue", "disk", "launch", "back", "setup", "attach", "net", "init"];
const traces = new Map();
for (const line of (LOG ? rd(LOG) || "" : "").split("\n")) {
  const m = /create-trace (\S+)( \(pool\))?[^:]*:(.*) total=(\d+)us/.exec(line);
  if (!m) continue;
  const t = { pool: !!m[2], total: Number(m[4]) / 1000 };
  for (const kv of m[3].trim().split(" ")) {
    const [k, v] = kv.split("=");
    t[k] = Number(v) / 1000;
  }
  traces.set(m[1], t);
}
const tr = [...traces.values()];
out.traces = tr.length;
const row = (xs) => Object.fromEntries(["total", ...STEPS].map((s) => [s, r1(mean(xs.map((t) => t[s] || 0)))]));
out.trace_p50 = Object.fromEntries(["total", ...STEPS].map((s) => [s, r1(pct(tr.map((t) => t[s] || 0), 0.5))]));
const byTotal = [...tr].sort((a, b) => b.total - a.total);
const slow5 = byTotal.slice(0, Math.max(1, Math.ceil(tr.length * 0.05)));
const slow1 = byTotal.slice(0, Math.max(1, Math.ceil(tr.length * 0.01)));
out.trace_slow5_mean = row(slow5);
out.trace_slow1_mean = row(slow1);
// the client's slowest creates, joined with their traces (a pooled sandbox's
// trace is its start in the pool, before this client asked for it)
const cl = [...clientTimes.entries()].sort((a, b) => b[1].total - a[1].total);
out.client_slowest = cl.slice(0, Math.max(5, Math.ceil(cl.length * 0.01))).map(([id, c]) => {
  const t = traces.get(id);
  return { id, create_ms: r1(c.create), spawn_ms: r1(c.spawn), trace: t ? Object.fromEntries(Object.entries(t).map(([k, v]) => [k, typeof v === "number" ? r1(v) : v])) : null };
});
out.client_create_p50 = r1(pct(cl.map(([, c]) => c.create), 0.5));
out.client_create_p99 = r1(pct(cl.map(([, c]) => c.create), 0.99));
out.client_spawn_p50 = r1(pct(cl.map(([, c]) => c.spawn), 0.5));
out.client_spawn_p99 = r1(pct(cl.map(([, c]) => c.spawn), 0.99));
out.pooled = tr.filter((t) => t.pool).length;

// where the slow ones' hutch-init sat (samples of the slowest 5 % by trace total)
const slowIds = new Set([...traces.entries()].sort((a, b) => b[1].total - a[1].total)
  .slice(0, Math.max(1, Math.ceil(traces.size * 0.05))).map(([id]) => id));
const agg = (recs) => {
  const m = new Map();
  let n = 0;
  for (const r of recs) for (const [k, c] of r.samples) { m.set(k, (m.get(k) || 0) + c); n += c; }
  return { samples: n, top: [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, c]) => `${(100 * c / (n || 1)).toFixed(1)}% ${k}`) };
};
const recs = [...inits.values()];
const slowRecs = recs.filter((r) => slowIds.has(r.id));
out.sample_ms = SAMPLE_MS;
out.init_samples_all = agg(recs);
out.init_samples_slow5 = agg(slowRecs);
const rdd = (rs) => rs.filter((r) => r.rd0 != null && r.rd1 != null).map((r) => r.rd1 - r.rd0);
out.init_run_delay_ms = { all_p50: r1(pct(rdd(recs), 0.5)), all_p99: r1(pct(rdd(recs), 0.99)), slow5_mean: r1(mean(rdd(slowRecs))) };
const hs = [...hutchdSamples.entries()].sort((a, b) => b[1] - a[1]);
out.hutchd_busy_samples = { ticks, top: hs.slice(0, 15).map(([k, c]) => `${c} ${k}`) };
out.lxcfs_busy_samples = [...lxcfsSamples.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, c]) => `${c} ${k}`);

log(`${out.alive} alive in ${out.create_all_s} s: ${out.creates_per_s} creates/s; client p50 ${out.client_ms.p50} p99 ${out.client_ms.p99} max ${out.client_ms.max} ms; load ${out.load_start[0]} -> [${loadMin}, ${loadMax}] -> ${out.load_end[0]}`);
const fmt = (o) => Object.entries(o).map(([k, v]) => `${k}=${v}`).join(" ");
log(`trace p50 (ms):         ${fmt(out.trace_p50)}`);
log(`trace slowest 5% mean:  ${fmt(out.trace_slow5_mean)}`);
log(`trace slowest 1% mean:  ${fmt(out.trace_slow1_mean)}`);
log(`hutch-init run-queue wait, first sight to idle (ms): ${fmt(out.init_run_delay_ms)}`);
log(`hutch-init samples, slowest 5% (${out.init_samples_slow5.samples} x ${SAMPLE_MS} ms):\n    ${out.init_samples_slow5.top.join("\n    ")}`);
log(`hutch-init samples, all (${out.init_samples_all.samples}):\n    ${out.init_samples_all.top.join("\n    ")}`);
log(`hutchd threads not idle (${ticks} ticks):\n    ${out.hutchd_busy_samples.top.join("\n    ")}`);
log(`lxcfs threads not waiting for a request (${ticks} ticks):\n    ${out.lxcfs_busy_samples.join("\n    ")}`);
console.log(JSON.stringify(out));
process.exit(failure ? 1 : 0);
