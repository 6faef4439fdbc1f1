// The create path through the official SDK (issue 15): creates per second
// with CREATE_PAR creates in flight (CREATE_N in all), each closed once it is
// made (a session sandbox stops with its last connection, so a run holds about
// CREATE_PAR alive and needs no disk for CREATE_N writable layers); then
// create -> first output back to back (the warm pool drained). Prints one
// JSON object. Env: DENO_* as for the SDK tests, CREATE_N (200), CREATE_PAR
// (10), BENCH_RUNS (30, the burst's length), HUTCHD_PID (then each part also
// reports the CPU of hutchd and its reaped children, hutch-init included, per
// create: /proc/PID/stat utime+stime+cutime+cstime, which holds under load).
import fs from "node:fs";
const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Sandbox } = await import(sdkUrl.href);

const N = Number(process.env.CREATE_N ?? 200);
const PAR = Number(process.env.CREATE_PAR ?? 10);
const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const now = () => process.hrtime.bigint();
const ms = (t0) => Number(now() - t0) / 1e6;
const sleep = (t) => new Promise((r) => setTimeout(r, t));

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, p50_ms: +pick(0.5).toFixed(2), p99_ms: +pick(0.99).toFixed(2) };
}

const out = {};

// CPU ms of hutchd's tree so far (its own and its reaped children's), or NaN
const HZ = 100; // USER_HZ
function treeCpuMs() {
  const pid = process.env.HUTCHD_PID;
  if (!pid) return NaN;
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const v = f.slice(f.lastIndexOf(")") + 2).split(" ").map(Number); // v[0] is field 3 (state)
  return (v[11] + v[12] + v[13] + v[14]) * 1000 / HZ; // utime stime cutime cstime: fields 14-17
}

// 1. N creates, PAR in flight; each sandbox closed (not awaited) once made
{
  const each = [], closing = [];
  let next = 0;
  const t0 = now();
  const c0 = treeCpuMs();
  await Promise.all(Array.from({ length: PAR }, async () => {
    while (next < N) {
      next++;
      const t = now();
      const sb = await Sandbox.create();
      each.push(ms(t));
      closing.push(sb.close());
    }
  }));
  const total = ms(t0);
  await Promise.all(closing);
  await sleep(2000); // the teardowns of the last ones (reaped: their CPU is counted), and the pool's refill
  out.creates_parallel = { ...stats(each), par: PAR, creates_per_s: +(N / (total / 1000)).toFixed(1),
                           cpu_ms_per_create: +((treeCpuMs() - c0) / N).toFixed(2) };
}

// 2. create -> first sh`true` back to back: the pool drains after its first
// few, so the rest are built from scratch while the caller waits
{
  const xs = [];
  const c0 = treeCpuMs();
  for (let i = 0; i < RUNS; i++) {
    const t0 = now();
    const sb = await Sandbox.create();
    await sb.sh`true`;
    xs.push(ms(t0));
    await sb.close();
  }
  await sleep(2000);
  out.create_first_cmd_burst = { ...stats(xs), cpu_ms_per_create: +((treeCpuMs() - c0) / RUNS).toFixed(2) };
}

console.log(JSON.stringify(out));
