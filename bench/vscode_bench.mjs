// VS Code in the browser (bench/run.sh, BENCH_ONLY=vscode): the time from
// sandbox.exposeVscode() to its answer (code-server listening in the
// sandbox), and on to a loaded workbench in headless Chromium (the
// explorer lists the opened folder's file), each in a fresh sandbox.
// Prints one JSON line. Env: VSCODE_BENCH_RUNS (default 3).
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
const mods = new URL("../tests/sdk/node_modules/", import.meta.url);
const { Sandbox } = await import(new URL("@deno/sandbox/esm/mod.js", mods).href);
const { chromium } = await import(new URL("playwright-core/index.mjs", mods).href);

// Chromium aborts a navigation with ERR_NETWORK_CHANGED when an interface
// appears in its network namespace (each new sandbox adds a veth to
// hutchd's): try again then.
async function gotoRetry(page, url) {
  for (let i = 0; ; i++) {
    try {
      return await page.goto(url);
    } catch (e) {
      if (i === 4 || !String(e.message).includes("ERR_NETWORK_CHANGED")) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

const runs = Number(process.env.VSCODE_BENCH_RUNS || 3);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const home = mkdtempSync(path.join(os.tmpdir(), "hutch-vscode-bench-"));
const r = await fetch(new URL("/hutch/v1/ingress/ca.crt", process.env.DENO_DEPLOY_ENDPOINT), {
  headers: { Authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` },
});
writeFileSync(path.join(home, "ca.crt"), await r.text());
const nssdb = path.join(home, ".pki", "nssdb");
mkdirSync(nssdb, { recursive: true });
execFileSync("certutil", ["-d", `sql:${nssdb}`, "-N", "--empty-password"]);
execFileSync("certutil", ["-d", `sql:${nssdb}`, "-A", "-t", "C,,", "-n", "hutch-ingress", "-i", path.join(home, "ca.crt")]);
// one browser (a fresh --user-data-dir, as playwright's persistent context passes it), a page per run
const browser = await chromium.launchPersistentContext(path.join(home, "profile"), {
  executablePath: "/usr/bin/chromium",
  env: { ...process.env, HOME: home },
  viewport: { width: 1280, height: 800 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"],
});
const answer = [], shell = [], loaded = [], jsFetch = [];
// curl, gzip accepted: {ms, bytes, status} (through the URL: trusting the ingress CA)
function curlGet(url, caFile) {
  const out = execFileSync("curl", ["-s", "-o", "/dev/null", "-H", "Accept-Encoding: gzip", "--cacert", caFile,
    "-w", "%{http_code} %{size_download} %{time_total}", url], { encoding: "utf8" });
  const [status, bytes, secs] = out.trim().split(" ");
  return { status: Number(status), bytes: Number(bytes), ms: Number(secs) * 1000 };
}
try {
  for (let i = 0; i < runs; i++) {
    const sb = await Sandbox.create();
    try {
      await sb.fs.mkdir("/home/app/p", { recursive: true });
      await sb.fs.writeTextFile("/home/app/p/bench.txt", "x\n");
      const t0 = performance.now();
      const vs = await sb.exposeVscode("/home/app/p");
      const t1 = performance.now();
      const page = await browser.newPage();
      await gotoRetry(page, `${vs.url}/`);
      await page.waitForSelector(".monaco-workbench", { timeout: 120000 });
      const tw = performance.now();
      const html = await page.content();
      await page.waitForSelector(".explorer-folders-view >> text=bench.txt", { timeout: 120000 });
      const t2 = performance.now();
      // the biggest file the page loads, alone, gzip as a browser asks: through
      // the URL (ingress + code-server) and inside the sandbox (code-server alone)
      const js = html.match(/src="([^"]*\/out\/vs\/code\/browser\/workbench\/workbench\.js)"/);
      if (js) {
        const u = new URL(js[1], page.url());
        const g = curlGet(u.href, path.join(home, "ca.crt"));
        const inner = u.pathname.split("/").slice(2).join("/"); // without the /SECRET prefix
        const port = (await sb.sh`ps -o args= -C node | grep -o 'bind-addr 127.0.0.1:[0-9]*' | head -1`.text()).trim().split(":")[1];
        const c = await sb.sh`curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{http_code} %{size_download} %{time_total}' http://127.0.0.1:${port}/${inner}`.text();
        const [code, size, secs] = c.trim().split(" ");
        if (g.status === 200 && code === "200" && Math.abs(Number(size) - g.bytes) < g.bytes / 20) jsFetch.push({ ...g, inside_ms: Number(secs) * 1000 });
        else console.error(`bench: workbench.js: through the URL ${g.status} ${g.bytes} bytes, inside ${c}`);
      }
      answer.push(t1 - t0);
      shell.push(tw - t0);
      loaded.push(t2 - t0);
      await page.close();
      await vs.kill();
      await vs.status;
    } finally {
      await sb.close().catch(() => {});
    }
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({
  expose_answer: { p50_ms: pct(answer, 50), p99_ms: pct(answer, 99), n: answer.length },
  workbench_js: jsFetch.length ? { p50_ms: pct(jsFetch.map((g) => g.ms), 50), bytes: jsFetch[0].bytes, n: jsFetch.length,
                                  inside_p50_ms: pct(jsFetch.map((g) => g.inside_ms), 50) } : null,
  workbench_shell: { p50_ms: pct(shell, 50), p99_ms: pct(shell, 99), n: shell.length },
  workbench_loaded: { p50_ms: pct(loaded, 50), p99_ms: pct(loaded, 99), n: loaded.length },
}));
