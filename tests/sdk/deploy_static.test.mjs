// sandbox.deploy() with a framework preset whose runtime is static (issue 10;
// docs/apps.md): the "lume" preset's install and build commands run a real
// build in the build sandbox (no network), its _site directory is served by
// hutch's static file server, and headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core, trusting the ingress CA from
// an NSS database in a fresh $HOME) opens the production URL: the page's
// script fetches the build's data.json from the app and writes it into the
// DOM. A screenshot is kept as an artifact. buildDirectory overrides the
// preset's directory; an unknown preset is refused before anything runs.
// The "fresh" preset (dynamic) serves the module its build writes with
// `deno serve`; an explicit entrypoint and installCommand replace its own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { Client } from "@deno/sandbox";
import { gotoRetry, requireEnv, withSandbox } from "./helpers.mjs";

const CHROMIUM = "/usr/bin/chromium";
const slug = (s) => `${s}-${process.pid % 100000}-${Math.floor(Math.random() * 1e6)}`.slice(0, 32);

const DENO_JSON = JSON.stringify({ tasks: { build: "deno run --allow-read --allow-write build.ts" } });
// the build: a page, its script, and data computed at build time
const BUILD_TS = (dir) => `
await Deno.mkdir("${dir}", { recursive: true });
await Deno.writeTextFile("${dir}/index.html", \`<!doctype html><html><head><title>loading</title>
<link rel="stylesheet" href="style.css"></head><body><h1>hutch static</h1><p id="out">loading</p>
<script src="app.js"></script></body></html>\`);
await Deno.writeTextFile("${dir}/style.css", "body { font-family: sans-serif; background: #eef; }");
await Deno.writeTextFile("${dir}/app.js", \`fetch("data.json").then((r) => r.json()).then((d) => {
  document.getElementById("out").textContent = "built with deno " + d.deno + " in " + d.dir;
  document.title = "done";
}).catch((e) => { document.getElementById("out").textContent = "error " + e; document.title = "failed"; });\`);
await Deno.writeTextFile("${dir}/data.json", JSON.stringify({ deno: Deno.version.deno, dir: "${dir}" }));
`;

// fetch() in a fresh Node that trusts the ingress CA, as a user would
function nodeFetch(ca, url) {
  const out = execFileSync(process.execPath, ["-e",
    `fetch(process.argv[1]).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))
       .catch((e) => { console.log(JSON.stringify({ error: String(e.cause ?? e) })); })`, url],
  { env: { ...process.env, NODE_EXTRA_CA_CERTS: ca }, encoding: "utf8", timeout: 90000 });
  return JSON.parse(out);
}

async function browserHome() {
  const home = mkdtempSync(path.join(os.tmpdir(), "hutch-chromium-"));
  const r = await fetch(new URL("/hutch/v1/ingress/ca.crt", process.env.DENO_DEPLOY_ENDPOINT), {
    headers: { Authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` },
  });
  assert.equal(r.status, 200);
  writeFileSync(path.join(home, "ca.crt"), await r.text());
  const nssdb = path.join(home, ".pki", "nssdb");
  mkdirSync(nssdb, { recursive: true });
  execFileSync("certutil", ["-d", `sql:${nssdb}`, "-N", "--empty-password"]);
  execFileSync("certutil", ["-d", `sql:${nssdb}`, "-A", "-t", "C,,", "-n", "hutch-ingress", "-i", path.join(home, "ca.crt")]);
  return home;
}

test("deploy-static: a lume preset build is served as a static site and Chromium renders it through the production URL", { timeout: 600000 }, async () => {
  requireEnv();
  assert.ok(existsSync(CHROMIUM), "Debian's chromium is not installed (scripts/deps.sh installs it)");
  const client = new Client();
  const s = slug("static");
  const home = await browserHome();
  try {
    await withSandbox({}, async (sb) => {
      await sb.fs.mkdir("/home/app/site", { recursive: true });
      await sb.fs.writeTextFile("/home/app/site/deno.json", DENO_JSON);
      await sb.fs.writeTextFile("/home/app/site/build.ts", BUILD_TS("_site"));
      const build = await sb.deploy(s, { path: "/home/app/site", build: { mode: "local", frameworkPreset: "lume" } });
      const rev = await build.done;
      const logs = [];
      for await (const l of client.revisions.buildLogs(build.id)) logs.push(l.message);
      assert.equal(rev.status, "succeeded", JSON.stringify({ rev, logs }));
      // what the preset chose
      assert.equal(rev.config.framework, "lume");
      assert.equal(rev.config.install, "deno install");
      assert.equal(rev.config.build, "deno task build");
      assert.deepEqual(rev.config.runtime, { type: "static", cwd: "_site" });
      assert.ok(logs.includes("$ deno task build"), JSON.stringify(logs));
      const url = `https://${rev.timelines[0].domains[0].domain}`;

      const browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        env: { ...process.env, HOME: home },
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage"],
      });
      try {
        const page = await browser.newPage();
        const seen = [];
        page.on("response", (r) => seen.push(`${r.status()} ${r.headers()["content-type"]} ${new URL(r.url()).pathname.split("/").pop()}`));
        const resp = await gotoRetry(page, `${url}/`);
        assert.equal(resp.status(), 200);
        assert.match((await resp.securityDetails())?.issuer ?? "", /^hutch ingress CA/);
        await page.waitForFunction(() => document.title !== "loading", null, { timeout: 30000 });
        const shots = process.env.HUTCH_TEST_ARTIFACTS || path.join(os.tmpdir(), "hutch-artifacts");
        mkdirSync(shots, { recursive: true });
        const shot = path.join(shots, `deploy-static-${process.pid}.png`);
        await page.screenshot({ path: shot });
        console.log(`# screenshot: ${shot}`);
        const out = await page.textContent("#out");
        assert.equal(await page.title(), "done", out);
        assert.match(out, /^built with deno 2\.\d+\.\d+ in _site$/);
        // the CSS applied, and each file came with its type
        assert.equal(await page.evaluate(() => getComputedStyle(document.body).backgroundColor), "rgb(238, 238, 255)");
        for (const want of ["200 text/html; charset=utf-8 ", "200 text/css; charset=utf-8 style.css",
                            "200 text/javascript; charset=utf-8 app.js", "200 application/json data.json"])
          assert.ok(seen.includes(want), `${want} not in ${JSON.stringify(seen)}`);
      } finally {
        await browser.close();
      }

      // buildDirectory overrides the preset's _site; the build command is the preset's
      await sb.fs.writeTextFile("/home/app/site/build.ts", BUILD_TS("out"));
      const b2 = await sb.deploy(s, { path: "/home/app/site", build: { mode: "local", frameworkPreset: "lume", buildDirectory: "out" } });
      const rev2 = await b2.done;
      assert.equal(rev2.status, "succeeded", JSON.stringify(rev2));
      assert.deepEqual(rev2.config.runtime, { type: "static", cwd: "out" });
      const got = nodeFetch(path.join(home, "ca.crt"), `${url}/data.json`);
      assert.equal(got.status, 200, JSON.stringify(got));
      assert.equal(JSON.parse(got.body).dir, "out", got.body);

      // an unknown preset and a bad buildDirectory are refused with the SDK's {code, message}
      await assert.rejects(sb.deploy(s, { build: { mode: "local", frameworkPreset: "rails" } }),
        (e) => /400/.test(e.message) && /INVALID_CONFIG/.test(e.message) && /unknown framework preset/.test(e.message));
      await assert.rejects(sb.deploy(s, { build: { mode: "local", frameworkPreset: "lume", buildDirectory: "../etc" } }),
        (e) => /400/.test(e.message) && /INVALID_BODY/.test(e.message) && /buildDirectory/.test(e.message));
    });
  } finally {
    await client.apps.delete(s);
  }
});

test("deploy-preset: the fresh preset serves the module its build writes; an explicit entrypoint and installCommand win", { timeout: 600000 }, async () => {
  requireEnv();
  const client = new Client();
  const s = slug("fresh");
  const ca = path.join(await browserHome(), "ca.crt");
  try {
    await withSandbox({}, async (sb) => {
      await sb.fs.mkdir("/home/app/f", { recursive: true });
      await sb.fs.writeTextFile("/home/app/f/deno.json",
        JSON.stringify({ tasks: { build: "mkdir -p _fresh && cp server.src _fresh/server.js" } }));
      await sb.fs.writeTextFile("/home/app/f/server.src",
        "export default { fetch: (req) => new Response('fresh ' + new URL(req.url).pathname) };\n");
      await sb.fs.writeTextFile("/home/app/f/alt.ts", "Deno.serve({ port: 8000 }, () => new Response('alt entry'));\n");
      const b = await sb.deploy(s, { path: "/home/app/f", build: { mode: "local", frameworkPreset: "fresh" } });
      const rev = await b.done;
      assert.equal(rev.status, "succeeded", JSON.stringify(rev));
      assert.deepEqual([rev.config.install, rev.config.build, rev.config.runtime],
        ["deno install", "deno task build", { type: "dynamic", entrypoint: "_fresh/server.js", args: [] }]);
      const url = `https://${rev.timelines[0].domains[0].domain}`;
      assert.deepEqual(nodeFetch(ca, `${url}/x`), { status: 200, body: "fresh /x" });
      // explicit options: the entrypoint replaces the preset's, installCommand replaces `deno install`
      const b2 = await sb.deploy(s, { path: "/home/app/f",
        build: { mode: "local", frameworkPreset: "fresh", entrypoint: "alt.ts", installCommand: "echo own install" } });
      const rev2 = await b2.done;
      assert.equal(rev2.status, "succeeded", JSON.stringify(rev2));
      assert.equal(rev2.config.install, "echo own install");
      assert.equal(rev2.config.build, "deno task build");
      assert.equal(rev2.config.runtime.entrypoint, "alt.ts");
      const logs = [];
      for await (const l of client.revisions.buildLogs(b2.id)) logs.push(l.message);
      assert.ok(logs.includes("own install") && !logs.includes("$ deno install"), JSON.stringify(logs));
      assert.deepEqual(nodeFetch(ca, `${url}/`), { status: 200, body: "alt entry" });
    });
  } finally {
    await client.apps.delete(s);
  }
});
