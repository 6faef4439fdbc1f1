// Apps and sandbox.deploy() through the official SDK (issue 10): apps CRUD,
// layers, env vars (secret values never returned), a deploy from a sandbox
// whose Build.done resolves to a revision served over the ingress (Node's
// fetch with the ingress CA), Build.logs streaming, a preview deploy that
// leaves production alone, a failed build that leaves production on the
// last good revision, revisions and timelines.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Client } from "@deno/sandbox";
import { requireEnv, runTag, withSandbox } from "./helpers.mjs";

let caFile;
async function ingressCa() {
  if (caFile) return caFile;
  requireEnv();
  const r = await fetch(new URL("/hutch/v1/ingress/ca.crt", process.env.DENO_DEPLOY_ENDPOINT), {
    headers: { Authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` },
  });
  assert.equal(r.status, 200);
  caFile = path.join(mkdtempSync(path.join(os.tmpdir(), "hutch-ca-")), "ingress-ca.pem");
  writeFileSync(caFile, await r.text());
  return caFile;
}

// fetch() in a fresh Node that trusts the ingress CA, as a user would
function nodeFetch(ca, url) {
  const out = execFileSync(process.execPath, ["-e",
    `fetch(process.argv[1]).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))
       .catch((e) => { console.log(JSON.stringify({ error: String(e.cause ?? e) })); })`, url],
  { env: { ...process.env, NODE_EXTRA_CA_CERTS: ca }, encoding: "utf8", timeout: 90000 });
  return JSON.parse(out);
}

const slug = (s) => `${s}-${process.pid % 100000}-${Math.floor(Math.random() * 1e6)}`.slice(0, 32);

const SERVER = (marker) => `Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, (req) => {
  const u = new URL(req.url);
  if (u.pathname === "/env") return new Response(JSON.stringify({ GREETING: Deno.env.get("GREETING") ?? null, TOKEN: Deno.env.get("TOKEN") ?? null }));
  console.log("request " + u.pathname);
  return new Response("${marker} from " + (Deno.env.get("DENO_DEPLOYMENT_ID") ?? "?"));
});
`;

async function collect(iter) {
  const out = [];
  for await (const x of iter) out.push(x);
  return out;
}

test("apps: create, get by id and slug, list, update, delete; a taken slug is refused", async () => {
  requireEnv();
  const client = new Client();
  const s = slug("crud");
  const app = await client.apps.create({ slug: s, labels: { team: runTag.slice(0, 60) } });
  try {
    assert.match(app.id, /^app_[0-9a-z]{20}$/);
    assert.equal(app.slug, s);
    assert.deepEqual(app.layers, []);
    assert.equal((await client.apps.get(s)).id, app.id);
    assert.equal((await client.apps.get(app.id)).slug, s);
    assert.equal(await client.apps.get("no-such-app-here"), null);
    const list = await client.apps.list({ labels: { team: runTag.slice(0, 60) } });
    assert.deepEqual(list.items.map((a) => a.id), [app.id]);
    await assert.rejects(client.apps.create({ slug: s }), (e) => e.status === 409 && e.code === "SLUG_TAKEN");
    await assert.rejects(client.apps.create({ slug: "Bad_Slug" }), (e) => e.status === 400 && e.code === "INVALID_SLUG");
    const up = await client.apps.update(app.id, { slug: `${s}-x`.slice(0, 32), config: { install: null } });
    assert.equal(up.slug, `${s}-x`.slice(0, 32));
  } finally {
    await client.apps.delete(app.id);
  }
  assert.equal(await client.apps.get(app.id), null);
});

test("env vars: secret values are write-only; layers merge in order; layer apps and cycles", async () => {
  requireEnv();
  const client = new Client();
  const base = await client.layers.create({ slug: slug("base"), env_vars: [{ key: "GREETING", value: "from-layer" }] });
  const top = await client.layers.create({ slug: slug("top"), layers: [base.id], description: "includes base" });
  const app = await client.apps.create({
    slug: slug("env"),
    layers: [top.slug],
    env_vars: [{ key: "TOKEN", value: "s3cret-value", secret: true }, { key: "PLAIN", value: "visible", contexts: ["production"] }],
  });
  try {
    const tokenVar = app.env_vars.find((v) => v.key === "TOKEN");
    assert.equal(tokenVar.secret, true);
    assert.equal(tokenVar.value, undefined);
    assert.equal(app.env_vars.find((v) => v.key === "PLAIN").value, "visible");
    assert.deepEqual(app.env_vars.find((v) => v.key === "PLAIN").contexts, ["production"]);
    const raw = await fetch(new URL(`/api/v2/apps/${app.id}`, process.env.DENO_DEPLOY_ENDPOINT), {
      headers: { Authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` },
    }).then((r) => r.text());
    assert.ok(!raw.includes("s3cret-value"), "the secret value never comes back");
    assert.ok(raw.includes("visible"));
    assert.deepEqual(app.layers, [{ id: top.id, slug: top.slug }]);
    assert.equal((await client.layers.get(top.id)).app_count, 1);
    const users = await client.layers.apps(top.slug);
    assert.deepEqual(users.items, [{ id: app.id, slug: app.slug, layer_position: 0 }]);
    // a cycle (base includes top, which includes base) is refused
    await assert.rejects(client.layers.update(base.id, { layers: [top.id] }), (e) => e.status === 400 && e.code === "INVALID_LAYERS");
    // a layer in use cannot be deleted
    await assert.rejects(client.layers.delete(top.id), (e) => e.status === 409 && e.code === "LAYER_IN_USE");
    // an update by key changes the value and keeps it secret
    const up = await client.apps.update(app.id, { env_vars: [{ key: "TOKEN", value: "new-secret" }, { key: "PLAIN", delete: true }] });
    assert.equal(up.env_vars.find((v) => v.key === "TOKEN").value, undefined);
    assert.equal(up.env_vars.find((v) => v.key === "PLAIN"), undefined);
  } finally {
    await client.apps.delete(app.id);
    await client.layers.delete(top.id);
    await client.layers.delete(base.id);
  }
});

test("sandbox.deploy(): Build.done resolves to a served revision; Build.logs streams; a preview leaves production alone", { timeout: 600000 }, async () => {
  requireEnv();
  const ca = await ingressCa();
  const client = new Client();
  const s = slug("web");
  await client.apps.create({ slug: s, env_vars: [{ key: "GREETING", value: "hello-prod", contexts: ["production"] }] });
  try {
    await withSandbox({}, async (sb) => {
      await sb.fs.writeTextFile("/home/app/main.ts", SERVER("v1"));
      const build = await sb.deploy(s, { build: { entrypoint: "main.ts" } });
      assert.match(build.id, /^rev_[0-9a-z]{20}$/);
      const logsP = collect(build.logs());
      const rev = await build.done;
      assert.equal(rev.status, "succeeded", JSON.stringify(rev));
      assert.equal(rev.failure_reason, null);
      assert.equal(rev.timelines.length, 1);
      assert.equal(rev.timelines[0].context.slug, "production");
      const prodDomain = rev.timelines[0].domains[0].domain;
      const logs = await logsP;
      assert.ok(logs.length > 0);
      assert.ok(logs.every((l) => ["preparing", "installing", "building", "deploying"].includes(l.step)));
      assert.ok(logs.some((l) => l.step === "deploying"));
      let r = nodeFetch(ca, `https://${prodDomain}/`);
      assert.deepEqual(r, { status: 200, body: `v1 from ${rev.id}` });
      // env: the app's production var reached the app
      r = nodeFetch(ca, `https://${prodDomain}/env`);
      assert.equal(JSON.parse(r.body).GREETING, "hello-prod");

      // a preview deploy: its own URL; production still answers v1
      await sb.fs.writeTextFile("/home/app/main.ts", SERVER("v2"));
      const pbuild = await sb.deploy(s, { preview: true, build: { entrypoint: "main.ts" } });
      const prev = await pbuild.done;
      assert.equal(prev.status, "succeeded", JSON.stringify(prev));
      assert.equal(prev.timelines.length, 1);
      assert.equal(prev.timelines[0].context.slug, "preview");
      const pdomain = prev.timelines[0].domains[0].domain;
      assert.notEqual(pdomain, prodDomain);
      assert.deepEqual(nodeFetch(ca, `https://${pdomain}/`), { status: 200, body: `v2 from ${prev.id}` });
      assert.deepEqual(nodeFetch(ca, `https://${prodDomain}/`), { status: 200, body: `v1 from ${rev.id}` });

      // a failed build: the install command exits 3; production stays on v1
      const fbuild = await sb.deploy(s, { build: { mode: "local", entrypoint: "main.ts", installCommand: "echo installing; exit 3" } });
      const failed = await fbuild.done;
      assert.equal(failed.status, "failed");
      assert.equal(failed.failure_reason, "error");
      assert.deepEqual(failed.timelines, []);
      const flogs = await collect(client.revisions.buildLogs(fbuild.id, { step: "installing" }));
      assert.ok(flogs.some((l) => l.message === "installing"), JSON.stringify(flogs));
      assert.ok(flogs.some((l) => /exited with code 3/.test(l.message)));
      assert.deepEqual(nodeFetch(ca, `https://${prodDomain}/`), { status: 200, body: `v1 from ${rev.id}` });

      // revisions and timelines
      const revs = await client.revisions.list(s);
      assert.deepEqual(revs.items.map((x) => x.id), [rev.id, prev.id, failed.id]);
      const failedOnly = await client.revisions.list(s, { status: "failed" });
      assert.deepEqual(failedOnly.items.map((x) => x.id), [failed.id]);
      const tls = await client.timelines.list(s);
      assert.deepEqual(tls.items.map((t) => t.context.slug).sort(), ["preview", "production"]);
      const progress = await collect(client.revisions.progress(rev.id));
      assert.equal(progress.at(-1).deploying.status, "succeeded");
      assert.equal(progress.at(-1).installing.status, "skipped");

      // runtime logs: the app's console.log lines, by revision
      const start = new Date(Date.now() - 600000).toISOString();
      const rl = await client.apps.logs(s, { start, revision_id: rev.id });
      assert.ok(rl.items.some((l) => l.message === "request /" && l.level === "info" && l.revision_id === rev.id), JSON.stringify(rl.items));
      const none = await client.apps.logs(s, { start, revision_id: rev.id, level: "error" });
      assert.ok(!none.items.some((l) => l.message === "request /"));
    });
  } finally {
    await client.apps.delete(s);
  }
});

test("apps.deploy with assets: served; an asset map with .. or an absolute path is refused", { timeout: 300000 }, async () => {
  requireEnv();
  const ca = await ingressCa();
  const client = new Client();
  const s = slug("assets");
  await client.apps.create({ slug: s });
  try {
    await assert.rejects(client.apps.deploy(s, { assets: { "../evil.ts": { content: "x" } } }),
      (e) => e.status === 400 && e.code === "INVALID_ASSETS" && /\.\./.test(e.message));
    await assert.rejects(client.apps.deploy(s, { assets: { "/etc/passwd": { content: "x" } } }),
      (e) => e.status === 400 && e.code === "INVALID_ASSETS" && /absolute/.test(e.message));
    await assert.rejects(client.apps.deploy(s, { assets: { "a.ts": { kind: "symlink", target: "../../etc/passwd" } } }),
      (e) => e.status === 400 && e.code === "INVALID_ASSETS");
    const rev = await client.apps.deploy(s, {
      assets: { "main.ts": { content: "export default { fetch() { return new Response('from assets'); } };" } },
      config: { runtime: { type: "dynamic", entrypoint: "main.ts" } },
    });
    assert.equal(rev.status, "building");
    await collect(client.revisions.progress(rev.id));
    const done = await client.revisions.get(rev.id);
    assert.equal(done.status, "succeeded", JSON.stringify(done));
    const tl = await client.revisions.timelines(rev.id);
    assert.deepEqual(nodeFetch(ca, `https://${tl[0].domains[0].domain}/`), { status: 200, body: "from assets" });
  } finally {
    await client.apps.delete(s);
  }
});

test("sandbox.deploy(): layer and app vars by context reach the build and the app; revisions.cancel ends a build", { timeout: 600000 }, async () => {
  requireEnv();
  const ca = await ingressCa();
  const client = new Client();
  const layer = await client.layers.create({
    slug: slug("ctx"),
    env_vars: [{ key: "GREETING", value: "from-layer" }, { key: "BUILDONLY", value: "b-val", contexts: ["build"] }],
  });
  const s = slug("ctxapp");
  await client.apps.create({ slug: s, layers: [layer.id], env_vars: [{ key: "PRODVAR", value: "p-val", contexts: ["production"] }] });
  try {
    await withSandbox({}, async (sb) => {
      await sb.fs.writeTextFile("/home/app/main.ts", `export default { fetch() {
        const e = (k) => Deno.env.get(k) ?? null;
        return new Response(JSON.stringify({ GREETING: e("GREETING"), BUILDONLY: e("BUILDONLY"), PRODVAR: e("PRODVAR"),
          built: Deno.readTextFileSync("built.txt").trim() }));
      } };\n`);
      const build = await sb.deploy(s, { build: { mode: "local", entrypoint: "main.ts", installCommand: 'echo "$BUILDONLY" > built.txt' } });
      const rev = await build.done;
      assert.equal(rev.status, "succeeded", JSON.stringify(rev));
      const r = nodeFetch(ca, `https://${rev.timelines[0].domains[0].domain}/`);
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.deepEqual(JSON.parse(r.body), { GREETING: "from-layer", BUILDONLY: null, PRODVAR: "p-val", built: "b-val" });

      const slow = await sb.deploy(s, { build: { mode: "local", entrypoint: "main.ts", installCommand: "sleep 300" } });
      await new Promise((res) => setTimeout(res, 1500));
      const c = await client.revisions.cancel(slow.id);
      assert.equal(c.id, slow.id);
      assert.ok(c.cancellation_requested_at);
      const done = await slow.done;
      assert.equal(done.status, "failed");
      assert.equal(done.failure_reason, "cancelled");
      // production is still the first revision
      assert.equal(JSON.parse(nodeFetch(ca, `https://${rev.timelines[0].domains[0].domain}/`).body).built, "b-val");
    });
  } finally {
    await client.apps.delete(s);
    await client.layers.delete(layer.id);
  }
});
