// The create path through the official SDK (issue 15): creates per second
// with CREATE_PAR creates in flight (CREATE_N in all), each closed once it is
// made (a session sandbox stops with its last connection, so a run holds about
// CREATE_PAR alive and needs no disk for CREATE_N writable layers); then
// create -> first output back to back (the warm pool drained). Prints one
// JSON object. Env: DENO_* as for the SDK tests, CREATE_N (200), CREATE_PAR
// (10), BENCH_RUNS (30, the burst's length).
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

// 1. N creates, PAR in flight; each sandbox closed (not awaited) once made
{
  const each = [], closing = [];
  let next = 0;
  const t0 = now();
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
  out.creates_parallel = { ...stats(each), par: PAR, creates_per_s: +(N / (total / 1000)).toFixed(1) };
}
await sleep(2000); // the teardowns of the last ones, and the pool's refill

// 2. create -> first sh`true` back to back: the pool drains after its first
// few, so the rest are built from scratch while the caller waits
{
  const xs = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = now();
    const sb = await Sandbox.create();
    await sb.sh`true`;
    xs.push(ms(t0));
    await sb.close();
  }
  out.create_first_cmd_burst = stats(xs);
}

console.log(JSON.stringify(out));
