// Apps through the official SDK (issue 10): sandbox.deploy() of a small app to
// its first served request over the ingress, and the first request to an app
// scaled to zero (a cold start from its snapshot) beside a warm request, in
// one run. Needs hutchd with a short --app-idle (bench/run.sh passes 2 s).
// Prints one JSON object. Env: DENO_* as for the SDK tests, BENCH_DEPLOY_RUNS (default 5).
import https from "node:https";
const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Client, Sandbox } = await import(sdkUrl.href);

const RUNS = Number(process.env.BENCH_DEPLOY_RUNS ?? 5);
const IDLE_MS = Number(process.env.BENCH_APP_IDLE_MS ?? 2000);
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
const now = () => process.hrtime.bigint();
const sleep = (n) => new Promise((r) => setTimeout(r, n));
const client = new Client();

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, p50_ms: pick(0.5), p99_ms: pick(0.99), mean_ms: s.reduce((a, b) => a + b, 0) / s.length };
}

const ca = await fetch(new URL("/hutch/v1/ingress/ca.crt", process.env.DENO_DEPLOY_ENDPOINT), {
  headers: { Authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` },
}).then((r) => r.text());

function get(url) {
  return new Promise((resolve, reject) => {
    https.get(url, { ca, agent: false }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    }).on("error", reject);
  });
}

const SRC = "export default { fetch() { return new Response('hello'); } };\n";
const out = {};
const apps = [];
const sb = await Sandbox.create();
try {
  await sb.fs.writeTextFile("/home/app/main.ts", SRC);
  const deploys = [], warm = [], cold = [];
  for (let i = 0; i < RUNS; i++) {
    const slug = `bench-${process.pid}-${i}`;
    apps.push(slug);
    const t0 = now();
    const build = await sb.deploy(slug, { build: { entrypoint: "main.ts" } });
    const rev = await build.done;
    if (rev.status !== "succeeded") throw new Error(`deploy failed: ${JSON.stringify(rev)}`);
    const url = `https://${rev.timelines[0].domains[0].domain}/`;
    const r = await get(url);
    if (r.status !== 200 || r.body !== "hello") throw new Error(`bad answer ${r.status} ${r.body}`);
    deploys.push(ms(t0));
    const t1 = now();
    await get(url);
    warm.push(ms(t1));
    // idle past --app-idle: the app's sandbox stops; the next request wakes one
    const appSandboxes = async () => (await client.sandboxes.list({ labels: { "hutch.revision": rev.id } }))
      .filter((s) => s.status === "running").length;
    const end = Date.now() + IDLE_MS + 30000;
    await sleep(IDLE_MS);
    while ((await appSandboxes()) > 0) {
      if (Date.now() > end) throw new Error("the app never scaled to zero (is --app-idle set?)");
      await sleep(200);
    }
    const t2 = now();
    const c = await get(url);
    if (c.status !== 200) throw new Error(`cold request: ${c.status}`);
    cold.push(ms(t2));
  }
  out.deploy_to_first_request = stats(deploys);
  out.warm_request = stats(warm);
  out.cold_request = stats(cold);
  // a static site (runtime {type: "static"}, hutch's static file server), deployed
  // as assets with no build: deploy -> first request, warm, and scaled to zero
  // the dynamic apps go first: each holds a snapshot promised in full in the storage pool
  for (const a of apps.splice(0)) await client.apps.delete(a).catch(() => {});
  const sd = [], sw = [], sc = [];
  const page = "<!doctype html><p>static hello</p>\n";
  for (let i = 0; i < RUNS; i++) {
    const slug = `bench-st-${process.pid}-${i}`;
    apps.push(slug);
    await client.apps.create({ slug });
    const t0 = now();
    const rev = await client.apps.deploy(slug, {
      assets: { "site/index.html": { content: page } },
      config: { runtime: { type: "static", cwd: "site" } },
    });
    for await (const _ of client.revisions.progress(rev.id)); // to its end, as Build.done does
    const done = await client.revisions.get(rev.id);
    if (done.status !== "succeeded") {
      const logs = [];
      for await (const l of client.revisions.buildLogs(rev.id)) logs.push(l.message);
      throw new Error(`static deploy failed: ${JSON.stringify(done)} ${JSON.stringify(logs)}`);
    }
    const tl = await client.revisions.timelines(rev.id);
    const url = `https://${tl[0].domains[0].domain}/`;
    const r = await get(url);
    if (r.status !== 200 || r.body !== page) throw new Error(`bad static answer ${r.status} ${r.body}`);
    sd.push(ms(t0));
    const t1 = now();
    await get(url);
    sw.push(ms(t1));
    const running = async () => (await client.sandboxes.list({ labels: { "hutch.revision": rev.id } }))
      .filter((s) => s.status === "running").length;
    const end = Date.now() + IDLE_MS + 30000;
    await sleep(IDLE_MS);
    while ((await running()) > 0) {
      if (Date.now() > end) throw new Error("the static app never scaled to zero (is --app-idle set?)");
      await sleep(200);
    }
    const t2 = now();
    const c = await get(url);
    if (c.status !== 200) throw new Error(`cold static request: ${c.status}`);
    sc.push(ms(t2));
    await client.apps.delete(slug).catch(() => {});
  }
  out.static_deploy_to_first_request = stats(sd);
  out.static_warm_request = stats(sw);
  out.static_cold_request = stats(sc);
} finally {
  await sb.close().catch(() => {});
  for (const a of apps) await client.apps.delete(a).catch(() => {});
}
console.log(JSON.stringify(out));
