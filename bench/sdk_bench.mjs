// hutch through the official SDK: create->first sh`true`, command round trip,
// kill latency, hutchd RSS per idle sandbox. Prints one JSON object.
// Env: DENO_* as for the SDK tests, HUTCHD_PID, BENCH_RUNS (default 30).
import fs from "node:fs";

const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Sandbox } = await import(sdkUrl.href);

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
const now = () => process.hrtime.bigint();

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, p50_ms: pick(0.5), p99_ms: pick(0.99), mean_ms: s.reduce((a, b) => a + b, 0) / s.length };
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

const out = {};

// 1. create -> result of the first sh`true`. "paced": one create every
// 400 ms, which hutchd's warm pool keeps up with (a create is a hand-over);
// "burst": back to back, which drains the pool, so most are built from scratch.
for (const [key, pause] of [["create_first_cmd", 400], ["create_first_cmd_burst", 0]]) {
  const xs = [];
  for (let i = 0; i < RUNS; i++) {
    if (pause) await new Promise((r) => setTimeout(r, pause));
    const t0 = now();
    const sb = await Sandbox.create();
    await sb.sh`true`;
    xs.push(ms(t0));
    await sb.close();
  }
  out[key] = stats(xs);
}

// 2. command round trip in a live sandbox (sh`true` = bash -c true; spawn of /bin/true)
{
  const sb = await Sandbox.create();
  try {
    await sb.sh`true`;
    const a = [], b = [];
    for (let i = 0; i < RUNS * 3; i++) {
      let t0 = now();
      await sb.sh`true`;
      a.push(ms(t0));
      t0 = now();
      const c = await sb.spawn("/bin/true", { stdout: "null", stderr: "null" });
      await c.status;
      b.push(ms(t0));
    }
    out.sh_true_roundtrip = stats(a);
    out.spawn_true_roundtrip = stats(b);
  } finally {
    await sb.close();
  }
}

// 2b. deno.eval("1+1"): a fresh REPL (deno eval of hutch's driver), its
// channel to hutchd, one eval, close; beside it a reused REPL's eval alone
{
  const sb = await Sandbox.create();
  try {
    await sb.deno.eval("1+1"); // DENO_DIR warm, page cache warm
    const a = [], b = [];
    for (let i = 0; i < Math.min(RUNS, 20); i++) {
      const t0 = now();
      if ((await sb.deno.eval("1+1")) !== 2) throw new Error("deno.eval(\"1+1\") is not 2");
      a.push(ms(t0));
    }
    const repl = await sb.deno.repl();
    await repl.eval("1+1");
    for (let i = 0; i < RUNS * 3; i++) {
      const t0 = now();
      await repl.eval("1+1");
      b.push(ms(t0));
    }
    await repl.close();
    out.deno_eval_roundtrip = stats(a);
    out.deno_repl_eval_roundtrip = stats(b);
  } finally {
    await sb.close();
  }
}

// 3. kill latency (REST DELETE until the connection is closed)
{
  const xs = [];
  for (let i = 0; i < Math.min(RUNS, 15); i++) {
    const sb = await Sandbox.create({ timeout: "5m" });
    await sb.sh`true`;
    const t0 = now();
    await sb.kill();
    xs.push(ms(t0));
  }
  out.kill = stats(xs);
}

// 4. hutchd RSS growth per idle sandbox
if (process.env.HUTCHD_PID) {
  const pid = Number(process.env.HUTCHD_PID);
  const N = 20;
  await new Promise((r) => setTimeout(r, 500));
  const before = rssKiB(pid);
  const ids = [];
  for (let i = 0; i < N; i++) {
    const sb = await Sandbox.create({ timeout: "5m" });
    ids.push(sb.id);
    await sb.close();
  }
  await new Promise((r) => setTimeout(r, 1000));
  const after = rssKiB(pid);
  out.rss = { sandboxes: N, before_kib: before, after_kib: after, per_sandbox_kib: (after - before) / N };
  // what each idle sandbox itself holds (hutch-init, page cache of its layer)
  const cg = process.env.HUTCH_CGROUP_NAME;
  if (cg) {
    let total = 0, seen = 0;
    for (const id of ids) {
      for (const f of [`/sys/fs/cgroup/memory/${cg}/${id}/memory.usage_in_bytes`, `/sys/fs/cgroup/${cg}/${id}/memory.current`]) {
        try {
          total += Number(fs.readFileSync(f, "utf8"));
          seen++;
          break;
        } catch { /* the other cgroup layout */ }
      }
    }
    if (seen) out.rss.cgroup_kib_per_sandbox = total / seen / 1024;
  }
  for (const id of ids) {
    const sb = await Sandbox.connect(id);
    await sb.kill().catch(() => {});
    await sb.close().catch(() => {});
  }
}

console.log(JSON.stringify(out));
