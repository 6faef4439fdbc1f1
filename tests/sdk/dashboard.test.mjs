// The web dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// a wrong token is refused with a message; sign in; a sandbox made through the SDK is listed with its
// labels, one of them markup that must show as text; its detail page plots CPU and memory (checked on
// the canvas's pixels and in the points it drew); the terminal runs `echo hi` and shows `hi`; Kill
// stops it. Screenshots are kept as artifacts (HUTCH_TEST_ARTIFACTS, else $TMPDIR/hutch-artifacts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { Sandbox } from "@deno/sandbox";
import { gotoRetry, requireEnv, runTag, statusOf, waitFor } from "./helpers.mjs";

const CHROMIUM = "/usr/bin/chromium";
const XSS = `<img src=x onerror="window.__xss=1">`;
// CPU time of its own process (not wall time): a known amount whatever the machine's load
const BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass\n";
const shots = process.env.HUTCH_TEST_ARTIFACTS || path.join(os.tmpdir(), "hutch-artifacts");

async function shot(page, name) {
  mkdirSync(shots, { recursive: true });
  const p = path.join(shots, `dashboard-${name}-${process.pid}.png`);
  await page.screenshot({ path: p, fullPage: true });
  console.log(`# screenshot: ${p}`);
}

async function launch() {
  assert.ok(existsSync(CHROMIUM), "Debian's chromium is not installed (scripts/deps.sh installs it)");
  const profile = mkdtempSync(path.join(os.tmpdir(), "hutch-dash-chromium-"));
  // a fresh profile (playwright passes it as --user-data-dir)
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    env: { ...process.env, HOME: profile },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage"],
  });
}

// Pixels of the plot's line color on a canvas: data drawn, not just an element.
async function coloredPixels(page, sel, rgb) {
  return page.$eval(sel, (c, [r, g, b]) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] === r && d[i + 1] === g && d[i + 2] === b && d[i + 3] > 200) n++;
    return n;
  }, rgb);
}

test("dashboard: sign in, list, plots, a terminal running echo hi, labels as text, extend, usage, kill", async () => {
  requireEnv();
  const base = process.env.DENO_DEPLOY_ENDPOINT;
  const token = process.env.DENO_DEPLOY_TOKEN;
  const browser = await launch();
  let sb = null;
  const pageErrors = [];
  const requests = [];
  try {
    sb = await Sandbox.create({ timeout: "10m", labels: { run: runTag, note: XSS } });
    const page = await browser.newPage();
    page.on("pageerror", (e) => pageErrors.push(e.message));
    page.on("request", (r) => requests.push(r.url()));
    page.on("dialog", (d) => d.accept());
    const resp = await gotoRetry(page, base + "/");
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()["content-security-policy"], /script-src 'self';/);

    // a wrong token is refused, with hutchd's message, and nothing is shown
    await page.fill("#token", "ddo_" + "x".repeat(40));
    await page.click("#signin-form button");
    await page.waitForFunction(() => document.getElementById("signin-error").textContent.length > 0);
    assert.match(await page.textContent("#signin-error"), /^Sign-in refused: The access token is invalid/);
    assert.equal(await page.isVisible("#list"), false);
    await shot(page, "wrong-token");

    // sign in: the sandbox is listed, its labels as text
    await page.fill("#token", token);
    await page.click("#signin-form button");
    await page.waitForSelector(`tr[data-id="${sb.id}"]`, { timeout: 20000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem("hutch.token")), token);
    const row = page.locator(`tr[data-id="${sb.id}"]`);
    assert.equal(await row.locator("td.state").textContent(), "running");
    const chips = await row.locator(".label").allTextContents();
    assert.ok(chips.includes(`note=${XSS}`), JSON.stringify(chips));
    assert.equal(await page.locator("#sandboxes img").count(), 0, "a label became markup");
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    // the memory column fills once a sample exists
    await page.waitForFunction((id) => /MiB \/ 1280 MiB/.test(
      document.querySelector(`tr[data-id="${id}"]`)?.children[4]?.textContent ?? ""), sb.id, { timeout: 20000 });
    // filtering by label keeps it, another value hides it
    await page.fill("#filter", `run=${runTag}`);
    await page.waitForFunction(() => document.querySelectorAll("#sandboxes tbody tr").length === 1);
    await page.fill("#filter", `run=${runTag}-other`);
    await page.waitForFunction(() => document.querySelectorAll("#sandboxes tbody tr").length === 0);
    await page.fill("#filter", `run=${runTag}`);
    await page.waitForSelector(`tr[data-id="${sb.id}"]`);
    await shot(page, "list");

    // detail: plots with data drawn; the CPU plot shows a burn made through the SDK
    await page.click(`tr[data-id="${sb.id}"]`);
    await sb.spawn("python3", { args: ["-c", BURN], stdout: "null", stderr: "null" }).then((p) => p.status);
    await page.waitForFunction(() => Number(document.getElementById("plot-mem").dataset.points) >= 2,
                               null, { timeout: 30000 });
    await page.waitForFunction(() => Number(document.getElementById("plot-cpu").dataset.points) >= 2,
                               null, { timeout: 30000 });
    const blue = [0x25, 0x63, 0xeb];
    assert.ok(await coloredPixels(page, "#plot-mem", blue) > 50, "the memory plot drew no line");
    assert.ok(await coloredPixels(page, "#plot-cpu", blue) > 50, "the CPU plot drew no line");
    await page.waitForFunction(() => Number(document.getElementById("plot-cpu").dataset.max) > 0, null,
                               { timeout: 30000 });
    assert.equal(await page.locator("#d-labels img").count(), 0);
    assert.ok((await page.locator("#d-labels").textContent()).includes(XSS));

    // the terminal: echo hi shows hi
    await page.click("#d-terminal");
    await page.waitForSelector("#d-term .xterm");
    const termText = () => page.evaluate(() => document.querySelector("#d-term .xterm-rows")?.innerText ?? "");
    await waitFor("a shell prompt", async () => /\$\s*$/m.test(await termText()), 30000);
    await page.click("#d-term .xterm");
    await page.keyboard.type("echo hi-$((40+2))\n");
    // the command's output, not the echo of what was typed: the shell computes 42
    await waitFor("the output of echo", async () => /^hi-42\s*$/m.test(await termText()), 20000);
    // and plain `echo hi`
    await page.keyboard.type("echo hi\n");
    await waitFor("hi", async () => (await termText()).split("\n").filter((l) => l.trim() === "hi").length >= 1, 20000);
    await shot(page, "terminal");
    // the process list shows the shell the terminal started (per-command usage counts it once it ends)
    // processes and usage tables are filled
    await page.waitForFunction(() => document.querySelectorAll("#d-usage tbody tr").length > 0, null, { timeout: 20000 });

    // extend: 5 more minutes, as hutchd grants and reports
    const stopAt = async () => (await (await fetch(`${base}/hutch/v1/live`, {
      headers: { Authorization: `Bearer ${token}` } })).json()).sandboxes.find((x) => x.id === sb.id).stopAtMs;
    const before = await stopAt();
    await page.click("#d-extend");
    await page.waitForFunction(() => /^now stops at /.test(document.getElementById("d-msg").textContent), null,
                               { timeout: 20000 });
    const after = await stopAt();
    assert.ok(after >= before + 4 * 60 * 1000, `stop time ${before} -> ${after}`);

    // usage: cost per day and per value of the label key "run", drawn as bars
    await page.click('a[href="#/usage"]');
    await page.fill("#usage-label", "run");
    await page.click("#usage-form button");
    await page.waitForFunction(() => Number(document.getElementById("plot-labels").dataset.points) >= 1, null,
                               { timeout: 20000 });
    assert.ok(Number(await page.$eval("#plot-days", (c) => c.dataset.points)) >= 1);
    assert.ok(Number(await page.$eval("#plot-days", (c) => c.dataset.max)) > 0, "no cost drawn per day");
    const teal = [0x0f, 0x76, 0x6e];
    assert.ok(await coloredPixels(page, "#plot-days", teal) > 20, "no bars drawn per day");
    assert.ok(await coloredPixels(page, "#plot-labels", teal) > 20, "no bars drawn per label");
    const groups = await page.locator("#usage-table tbody td:first-child").allTextContents();
    assert.ok(groups.includes(runTag), JSON.stringify(groups));
    await shot(page, "usage");
    await page.goBack();
    await page.waitForFunction((id) => document.getElementById("d-id").textContent === id && !document.getElementById("detail").hidden,
                               sb.id);

    // kill from the page
    await page.click("#d-kill");
    await page.waitForFunction(() => document.getElementById("d-state").textContent === "stopped", null,
                               { timeout: 30000 });
    await waitFor("the sandbox to stop", async () => (await statusOf(sb.id)) === "stopped", 20000);
    await shot(page, "killed");

    // the token never appeared in a URL the page requested
    assert.ok(requests.length > 10);
    for (const u of requests) assert.ok(!u.includes(token), `token in a URL: ${u}`);
    // everything came from hutchd itself: no CDN, so the page works offline
    for (const u of requests) assert.ok(u.startsWith(`${base}/`) || u.startsWith("data:"), `not from hutchd: ${u}`);
    assert.deepEqual(pageErrors, []);
  } finally {
    await browser.close();
    await sb?.kill().catch(() => {});
    await sb?.close().catch(() => {});
  }
});
