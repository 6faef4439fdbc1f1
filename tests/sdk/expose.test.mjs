// exposeHttp through the official SDK (issue 8): the URL it returns is served
// by hutch-ingress over TLS from the install's ingress CA. Node's fetch
// trusts it through NODE_EXTRA_CA_CERTS, with no DNS and no /etc/hosts entry
// (the URL names 127.0.0.1 and a port; the secret is the first path segment).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Sandbox } from "@deno/sandbox";
import WebSocket from "ws";
import { requireEnv, waitFor, withSandbox } from "./helpers.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const SERVER = readFileSync(path.join(here, "..", "integration", "expose_server.py"), "utf8");

async function ingressCa() {
  requireEnv();
  const r = await fetch(new URL("/hutch/v1/ingress/ca.crt", process.env.DENO_DEPLOY_ENDPOINT), {
    headers: { Authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` },
  });
  assert.equal(r.status, 200);
  const pem = await r.text();
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), "hutch-ca-")), "ingress-ca.pem");
  writeFileSync(file, pem);
  return { pem, file };
}

async function startServer(sb, port, marker) {
  await sb.fs.writeTextFile("/tmp/expose_server.py", SERVER);
  await sb.spawn("python3", { args: ["/tmp/expose_server.py", String(port), marker], stdout: "null", stderr: "null" });
  await waitFor(`server on ${port}`, async () =>
    (await sb.sh`curl -s --max-time 2 http://127.0.0.1:${port}/ || true`.text()).includes(`hello from ${marker}`));
}

// fetch() in a fresh Node that trusts the CA the way a user would
function nodeFetch(caFile, url) {
  const out = execFileSync(process.execPath, ["-e",
    `fetch(process.argv[1]).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))
       .catch((e) => { console.log(JSON.stringify({ error: String(e.cause ?? e) })); })`, url],
  { env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile }, encoding: "utf8", timeout: 30000 });
  return JSON.parse(out);
}

function get(ca, url, opts = {}) {
  return new Promise((resolve, reject) => {
    https.get(url, { ca, ...opts }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
    }).on("error", reject);
  });
}

test("exposeHttp returns an https URL that Node's fetch reaches with NODE_EXTRA_CA_CERTS", async () => {
  const ca = await ingressCa();
  await withSandbox({}, async (sb) => {
    await startServer(sb, 8001, "sdk");
    const url = await sb.exposeHttp({ port: 8001 });
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/[a-z2-7]{26}$/);
    assert.deepEqual(nodeFetch(ca.file, url), { status: 200, body: "hello from sdk\n" });
    assert.deepEqual(nodeFetch(ca.file, `${url}/headers?q=1`).status, 200);
    // without the CA the same fetch fails: the trust is the ingress CA's, not a bypass
    const untrusted = JSON.parse(execFileSync(process.execPath, ["-e",
      `fetch(process.argv[1]).then((r) => console.log(JSON.stringify({ status: r.status })))
         .catch((e) => console.log(JSON.stringify({ error: String(e.cause?.code ?? e) })))`, url],
    { env: { ...process.env, NODE_EXTRA_CA_CERTS: "" }, encoding: "utf8" }));
    assert.ok(untrusted.error, JSON.stringify(untrusted));
  });
});

test("Sandbox.create({port}) fills sandbox.url; 502 until the server listens, 404 after the sandbox stops", async () => {
  const ca = await ingressCa();
  requireEnv();
  const sb = await Sandbox.create({ port: 8002 });
  let url;
  try {
    url = sb.url;
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/[a-z2-7]{26}$/);
    const before = await get(ca.pem, url);
    assert.equal(before.status, 502);
    assert.match(before.body, /Nothing is listening on port 8002/);
    await startServer(sb, 8002, "created");
    assert.equal((await get(ca.pem, url)).body, "hello from created\n");
  } finally {
    await sb.kill().catch(() => {});
    await sb.close().catch(() => {});
  }
  const after = await get(ca.pem, url, { agent: false }); // the stop is done when kill() returns
  assert.equal(after.status, 404);
  assert.match(after.body, /not running any more/);
});

test("server-sent events arrive one by one and a WebSocket echoes through the URL", async () => {
  const ca = await ingressCa();
  await withSandbox({}, async (sb) => {
    await startServer(sb, 8003, "stream");
    const url = await sb.exposeHttp({ port: 8003 });
    await sb.sh`rm -f /tmp/sse-go-8003`;
    const events = [];
    let sawOneBeforeTwoExisted = false;
    await new Promise((resolve, reject) => {
      https.get(`${url}/sse`, { ca: ca.pem }, (res) => {
        assert.equal(res.statusCode, 200);
        res.setEncoding("utf8");
        res.on("data", async (chunk) => {
          for (const m of chunk.matchAll(/data: (\w+)/g)) events.push(m[1]);
          if (events.length === 1 && events[0] === "one") {
            sawOneBeforeTwoExisted = true; // event two is written only after this
            await sb.sh`touch /tmp/sse-go-8003`;
          }
        });
        res.on("end", resolve);
      }).on("error", reject);
    });
    assert.ok(sawOneBeforeTwoExisted);
    assert.deepEqual(events, ["one", "two"]);

    const ws = new WebSocket(`${url.replace("https://", "wss://")}/ws`, { ca: ca.pem });
    const echoed = await new Promise((resolve, reject) => {
      ws.on("open", () => ws.send("hello over wss"));
      ws.on("message", (m) => resolve(String(m)));
      ws.on("error", reject);
    });
    ws.close();
    assert.equal(echoed, "hello over wss");
  });
});

test("exposeHttp({pid}) serves the port that process listens on", async () => {
  const ca = await ingressCa();
  await withSandbox({}, async (sb) => {
    await sb.fs.writeTextFile("/tmp/expose_server.py", SERVER);
    const child = await sb.spawn("python3", { args: ["/tmp/expose_server.py", "8111", "bypid"], stdout: "null", stderr: "null" });
    const url = await sb.exposeHttp({ pid: child.pid });
    const r = await waitFor("the pid's port", async () => {
      const x = await get(ca.pem, url);
      return x.status === 200 ? x : null;
    });
    assert.equal(r.body, "hello from bypid\n");
  });
});
