// CPU fairness (issue 11.5): does a CPU-bound sandbox raise another sandbox's
// command latency? A quiet sandbox's `sh echo` round trip and a spawn of
// /bin/true are measured in blocks, alternately with a hog sandbox's busy
// loops running and stopped (SIGSTOP/SIGCONT between blocks, many rounds,
// the order swapped every round), so whatever else the machine does falls
// on both sides. Beside the latencies: how long each process on the path
// waited for a CPU (run_delay from /proc/PID/schedstat) per round trip,
// which names the wake-ups that queue behind the hog, and how long a
// command's own process waited (a `cat /proc/self/schedstat` after each pair).
// Prints one JSON object. Env: DENO_* as for the SDK tests, HUTCHD_PID,
// HUTCH_CGROUP_NAME, FAIR_ROUNDS (default 12), FAIR_BLOCK (10 round trips of
// each kind per block), FAIR_LOOPS (busy loops in the hog, default 2 per CPU).
import fs from "node:fs";
import os from "node:os";
import { agentPid } from "./cgmem.mjs";

const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Sandbox } = await import(sdkUrl.href);

const ROUNDS = Number(process.env.FAIR_ROUNDS ?? 12);
const BLOCK = Number(process.env.FAIR_BLOCK ?? 10);
const LOOPS = Number(process.env.FAIR_LOOPS ?? 2 * os.availableParallelism());
const now = () => process.hrtime.bigint();
const ms = (t0) => Number(now() - t0) / 1e6;
const sleep = (t) => new Promise((r) => setTimeout(r, t));

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, p50_ms: +pick(0.5).toFixed(3), p99_ms: +pick(0.99).toFixed(3) };
}

// run_delay (ns spent runnable but not running) of a thread, 0 if unreadable
function runDelay(pid) {
  try {
    return Number(fs.readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[1]);
  } catch {
    return 0;
  }
}


const quiet = await Sandbox.create();
const hog = await Sandbox.create();
const others = [await Sandbox.create(), await Sandbox.create()]; // idle bystanders
const out = { loops: LOOPS, rounds: ROUNDS, block: BLOCK, cpus: os.availableParallelism(), loadavg_start: os.loadavg()[0] };
try {
  const watch = { hutchd: Number(process.env.HUTCHD_PID ?? 0), agent: agentPid(process.env.HUTCH_CGROUP_NAME, quiet.id), client: process.pid };
  out.watched = Object.fromEntries(Object.entries(watch).map(([k, v]) => [k, v > 0]));
  // the hog: LOOPS busy loops whose pids it writes down, stopped and
  // continued with kill inside its own sandbox
  await hog.sh`rm -f /tmp/hog.pids`;
  const burn = await hog.spawn("bash", {
    args: ["-c", `for j in $(seq ${LOOPS}); do (while :; do :; done) & echo $! >>/tmp/hog.pids; done; wait`],
  });
  for (let i = 0; i < 100; i++) {
    const n = (await hog.sh`cat /tmp/hog.pids 2>/dev/null || true`.text()).trim().split("\n").filter(Boolean).length;
    if (n === LOOPS) break;
    await sleep(50);
  }
  const setHog = async (on) => {
    if (on) await hog.sh`kill -CONT $(cat /tmp/hog.pids)`;
    else await hog.sh`kill -STOP $(cat /tmp/hog.pids)`;
    await sleep(100); // let the scheduler settle on the new load
  };
  await setHog(false);
  for (let i = 0; i < 5; i++) await quiet.sh`echo warm`.text(); // page cache, pool, JIT
  const side = { on: { echo: [], spawn: [], wait: {}, trips: 0 }, off: { echo: [], spawn: [], wait: {}, trips: 0 } };
  for (const k of Object.keys(watch)) side.on.wait[k] = side.off.wait[k] = 0;
  // the command's own process: a `cat /proc/self/schedstat` in the quiet
  // sandbox prints how long it waited for a CPU from its clone to that read
  for (const k of ["on", "off"]) Object.assign(side[k], { own: 0, owns: 0 });
  for (let r = 0; r < ROUNDS; r++) {
    for (const on of r % 2 ? [false, true] : [true, false]) {
      const s = side[on ? "on" : "off"];
      await setHog(on);
      const w0 = Object.fromEntries(Object.entries(watch).map(([k, p]) => [k, runDelay(p)]));
      for (let i = 0; i < BLOCK; i++) {
        let t = now();
        const text = await quiet.sh`echo q${i}`.text();
        s.echo.push(ms(t));
        if (text.trim() !== `q${i}`) throw new Error(`quiet sandbox answered ${JSON.stringify(text)}`);
        t = now();
        const c = await quiet.spawn("/bin/true", { stdout: "null", stderr: "null" });
        if (!(await c.status).success) throw new Error("/bin/true failed");
        s.spawn.push(ms(t));
        s.trips += 2;
        const st = (await quiet.sh`cat /proc/self/schedstat`.text()).trim().split(" ");
        s.own += Number(st[1]);
        s.owns++;
        s.trips++; // the watched processes' waits are per round trip, this one too
      }
      for (const [k, p] of Object.entries(watch)) s.wait[k] += runDelay(p) - w0[k];
    }
  }
  await setHog(true);
  await hog.sh`kill -KILL $(cat /tmp/hog.pids)`;
  await burn.status;
  for (const k of ["on", "off"]) {
    const s = side[k];
    out[`hog_${k}`] = {
      echo: stats(s.echo),
      spawn_true: stats(s.spawn),
      // ms each process on the path waited for a CPU, per round trip
      wait_ms_per_trip: Object.fromEntries(Object.entries(s.wait).map(([p, ns]) => [p, +(ns / 1e6 / s.trips).toFixed(3)])),
      // ms the command's own process (cat, in the quiet sandbox) waited, per command
      own_wait_ms: +(s.own / 1e6 / s.owns).toFixed(3),
    };
  }
  const ratio = (kind, q) => +(out.hog_on[kind][q] / out.hog_off[kind][q]).toFixed(2);
  out.ratio = {
    echo_p50: ratio("echo", "p50_ms"), echo_p99: ratio("echo", "p99_ms"),
    spawn_p50: ratio("spawn_true", "p50_ms"), spawn_p99: ratio("spawn_true", "p99_ms"),
  };
  out.loadavg = os.loadavg()[0];
} finally {
  await Promise.all([quiet, hog, ...others].map((sb) => sb.kill().catch(() => {}).then(() => sb.close().catch(() => {}))));
}
console.log(JSON.stringify({ fair: out }));
