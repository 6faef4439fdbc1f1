// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// opens a page served inside a sandbox through its exposed URL, trusting the
// ingress CA the way a user would (an NSS database in $HOME/.pki/nssdb, made
// with certutil). The page's absolute-path fetch, EventSource and WebSocket
// ride on hutch's cookie. A screenshot is kept as an artifact.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { gotoRetry, requireEnv, waitFor, withSandbox } from "./helpers.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const SERVER = readFileSync(path.join(here, "..", "integration", "expose_server.py"), "utf8");
const CHROMIUM = "/usr/bin/chromium";

test("Chromium loads a sandbox's page through its URL: fetch, server-sent events and a WebSocket work", async () => {
  requireEnv();
  assert.ok(existsSync(CHROMIUM), "Debian's chromium is not installed (scripts/deps.sh installs it)");
  const home = mkdtempSync(path.join(os.tmpdir(), "hutch-chromium-"));
  const r = await fetch(new URL("/hutch/v1/ingress/ca.crt", process.env.DENO_DEPLOY_ENDPOINT), {
    headers: { Authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` },
  });
  writeFileSync(path.join(home, "ca.crt"), await r.text());
  const nssdb = path.join(home, ".pki", "nssdb");
  mkdirSync(nssdb, { recursive: true });
  execFileSync("certutil", ["-d", `sql:${nssdb}`, "-N", "--empty-password"]);
  execFileSync("certutil", ["-d", `sql:${nssdb}`, "-A", "-t", "C,,", "-n", "hutch-ingress", "-i", path.join(home, "ca.crt")]);

  await withSandbox({}, async (sb) => {
    await sb.fs.writeTextFile("/tmp/expose_server.py", SERVER);
    await sb.spawn("python3", { args: ["/tmp/expose_server.py", "8080", "browser"], stdout: "null", stderr: "null" });
    await waitFor("server", async () =>
      (await sb.sh`curl -s --max-time 2 http://127.0.0.1:8080/ || true`.text()).includes("hello from browser"));
    const url = await sb.exposeHttp({ port: 8080 });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      env: { ...process.env, HOME: home },
      args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--disable-sync"],
    });
    try {
      const page = await browser.newPage();
      const resp = await gotoRetry(page, `${url}/page`);
      assert.equal(resp.status(), 200);
      const sec = await resp.securityDetails();
      assert.match(sec?.issuer ?? "", /^hutch ingress CA/, JSON.stringify(sec));
      await page.waitForFunction(() => document.title !== "loading", null, { timeout: 30000 });
      const out = await page.textContent("#out");
      const shots = process.env.HUTCH_TEST_ARTIFACTS || path.join(os.tmpdir(), "hutch-artifacts");
      mkdirSync(shots, { recursive: true });
      const shot = path.join(shots, `browser-expose-${process.pid}.png`);
      await page.screenshot({ path: shot });
      console.log(`# screenshot: ${shot}`);
      assert.equal(await page.title(), "done", out);
      assert.deepEqual(JSON.parse(out), {
        marker: "browser", path: "/headers?from=page", sse: ["one", "two"], ws: "hi from chromium",
      });
    } finally {
      await browser.close();
    }
  });
});
