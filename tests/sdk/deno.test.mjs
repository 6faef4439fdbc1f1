// sandbox.deno.* through the official SDK (issue 10.1): deno 2.9.6 from the
// builtin image, run as `app` with every Deno permission; watch restarts,
// httpReady, DenoProcess.fetch, a REPL that keeps its state. docs/deno.md.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { readAll, withSandbox } from "./helpers.mjs";

const text = (u8) => new TextDecoder().decode(u8);

// A second, raw JSON-RPC connection to the same sandbox: what a hostile
// client can send that the SDK never would.
async function rawRpc(sb) {
  const url = process.env.DENO_SANDBOX_ENDPOINT.replace(/^http/, "ws") + `/api/v3/sandbox/${sb.id}/connect`;
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` } });
  await new Promise((res, rej) => { ws.once("open", res); ws.once("error", rej); });
  const waiting = new Map();
  ws.on("message", (m) => {
    const v = JSON.parse(m.toString());
    if (v.id != null && waiting.has(v.id)) waiting.get(v.id)(v);
  });
  let next = 1;
  return {
    call(method, params) {
      const id = next++;
      return new Promise((res, rej) => {
        const t = setTimeout(() => rej(new Error(`${method}: no answer in 60 s`)), 60000);
        waiting.set(id, (v) => { clearTimeout(t); res(v); });
        ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
      });
    },
    close() { ws.close(); },
  };
}

function within(ms, p, what) {
  return Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms))]);
}

test("deno.run with code runs TypeScript as app and its output is read back", async () => {
  await withSandbox({}, async (sb) => {
    const rt = await sb.deno.run({
      code: "const n: number = 6 * 7; console.log('answer', n, Deno.uid(), import.meta.main); console.error('to stderr');",
      stdout: "piped", stderr: "piped",
    });
    const out = await rt.output();
    assert.equal(out.status.success, true, out.stderrText);
    assert.equal(out.stdoutText, "answer 42 1000 true\n");
    assert.equal(out.stderrText, "to stderr\n");
    // the extension decides how the code is read: CommonJS
    const cjs = await sb.deno.run({ code: "console.log(typeof require, typeof module.exports)", extension: "cjs", stdout: "piped" });
    assert.equal((await cjs.output()).stdoutText, "function object\n");
    // piped stdin reaches the script
    const echo = await sb.deno.run({ code: "const t = await new Response(Deno.stdin.readable).text(); console.log(t.toUpperCase())",
      stdin: "piped", stdout: "piped" });
    const w = echo.stdin.getWriter();
    await w.write(new TextEncoder().encode("from stdin"));
    await w.close();
    assert.equal((await echo.output()).stdoutText, "FROM STDIN\n");
    // a failing script: its exit code and its error on stderr
    const bad = await sb.deno.run({ code: "throw new Error('boom')", stdout: "piped", stderr: "piped" });
    const bo = await bad.output();
    assert.equal(bo.status.success, false);
    assert.equal(bo.status.code, 1);
    assert.match(bo.stderrText, /Uncaught \(in promise\) Error: boom|error: Uncaught.*boom/);
  });
});

test("deno.run with an entrypoint honours scriptArgs, env, clearEnv and cwd", async () => {
  await withSandbox({}, async (sb) => {
    await sb.env.set("FROM_SANDBOX", "yes");
    await sb.fs.mkdir("proj");
    await sb.fs.writeTextFile("proj/lib.ts", "export const who: string = 'lib';\n");
    await sb.fs.writeTextFile("proj/main.ts", `import { who } from "./lib.ts";
console.log(JSON.stringify({ who, args: Deno.args, greeting: Deno.env.get("GREETING") ?? null,
  fromSandbox: Deno.env.get("FROM_SANDBOX") ?? null, cwd: Deno.cwd(), main: import.meta.main }));\n`);
    const run = async (opts) => JSON.parse((await (await sb.deno.run({ entrypoint: "proj/main.ts", stdout: "piped", ...opts })).output()).stdoutText);
    const a = await run({ entrypoint: "/home/app/proj/main.ts", scriptArgs: ["a b", "--flag", "-A"], env: { GREETING: "hi" }, cwd: "/tmp" });
    assert.deepEqual(a, { who: "lib", args: ["a b", "--flag", "-A"], greeting: "hi", fromSandbox: "yes", cwd: "/tmp", main: true });
    // a relative entrypoint resolves against cwd (here /tmp: not found, as with `deno run` there)
    const missing = await (await sb.deno.run({ entrypoint: "proj/main.ts", cwd: "/tmp", stderr: "piped" })).output();
    assert.equal(missing.status.success, false);
    assert.match(missing.stderrText, /Module not found "file:\/\/\/tmp\/proj\/main.ts"/);
    // clearEnv drops the sandbox's variables (and PATH: deno still starts)
    const b = await run({ entrypoint: "main.ts", cwd: "/home/app/proj", clearEnv: true, env: { GREETING: "only" } });
    assert.deepEqual(b, { who: "lib", args: [], greeting: "only", fromSandbox: null, cwd: "/home/app/proj", main: true });
  });
});

test("a Deno.serve process: httpReady turns true and DenoProcess.fetch reaches its port", async () => {
  await withSandbox({}, async (sb) => {
    const rt = await sb.deno.run({
      code: `Deno.serve({ port: 8123, onListen() {} }, async (req) =>
        new Response(req.method + " " + new URL(req.url).pathname + new URL(req.url).search + " " + req.headers.get("x-t") + " " + await req.text(),
          { status: 201, headers: { "x-from": "deno" } }));`,
    });
    assert.equal(await rt.httpReady, true);
    const r = await rt.fetch("https://example.com/path?q=1", { method: "POST", body: "payload", headers: { "x-t": "v" } });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get("x-from"), "deno");
    assert.equal(await r.text(), "POST /path?q=1 v payload");
    // the same port from inside the sandbox: the probe never reached the handler (it counted nothing)
    await rt.kill();
    assert.equal((await rt.status).signal, "SIGTERM");
    // fetch after the process ended: a clear error, not a hang
    await assert.rejects(rt.fetch("http://x/"), (e) => /not a running Deno process/.test(e.message));
  });
});

test("httpReady stays false for a process that listens but does not speak HTTP, and for one that exits", async () => {
  await withSandbox({}, async (sb) => {
    // positive control in the test above; here a raw TCP listener that never answers
    const raw = await sb.deno.run({ code: "const l = Deno.listen({ port: 8124 }); for await (const c of l) { /* silent */ }", stdout: "null" });
    let settled = false;
    raw.httpReady.then(() => { settled = true; });
    // it does listen (seen from inside the sandbox) ...
    await within(30000, (async () => {
      for (;;) {
        if ((await sb.sh`(exec 3<>/dev/tcp/127.0.0.1/8124) 2>/dev/null && echo open || echo closed`.text()).trim() === "open") return;
        await new Promise((r) => setTimeout(r, 200));
      }
    })(), "the raw listener");
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(settled, false, "httpReady must not resolve for a non-HTTP listener");
    await raw.kill();
    assert.equal(await raw.httpReady, false);
    const quick = await sb.deno.run({ code: "console.log('bye')", stdout: "null" });
    assert.equal(await quick.httpReady, false);
    assert.equal((await quick.status).success, true);
  });
});

test("watch mode: writing the entrypoint restarts deno, the restart event arrives, the new code serves", async () => {
  await withSandbox({}, async (sb) => {
    const serve = (v, port) => `Deno.serve({ port: ${port}, onListen() {} }, () => new Response("${v}"));\n`;
    await sb.fs.writeTextFile("w.ts", serve("v1", 8130));
    await sb.fs.writeTextFile("nw.ts", serve("n1", 8131));
    const watched = await sb.deno.run({ entrypoint: "w.ts", watch: true, stdout: "null", stderr: "null" });
    const plain = await sb.deno.run({ entrypoint: "nw.ts", stdout: "null", stderr: "null" }); // control: not watching
    let restarts = 0, plainRestarts = 0;
    const restarted = new Promise((res) => watched.addEventListener("restart", () => { restarts++; res(); }));
    plain.addEventListener("restart", () => plainRestarts++);
    assert.equal(await watched.httpReady, true);
    assert.equal(await plain.httpReady, true);
    assert.equal(await (await watched.fetch("http://app/")).text(), "v1");
    await sb.fs.writeTextFile("w.ts", serve("v2", 8130));
    await sb.fs.writeTextFile("nw.ts", serve("n2", 8131));
    await within(60000, restarted, "the restart notification");
    let body;
    for (let i = 0; i < 150; i++) {
      body = await watched.fetch("http://app/").then((r) => r.text(), () => null);
      if (body === "v2") break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(body, "v2");
    assert.equal(await (await plain.fetch("http://app/")).text(), "n1"); // not watching: old code still serves
    assert.equal(restarts, 1);
    assert.equal(plainRestarts, 0);
    assert.notEqual(watched.pid, plain.pid);
    await watched.kill();
    await plain.kill();
    await watched.status; // their streams end before the connection closes
    await plain.status;
  });
});

test("deno.repl keeps state between evals; call; TypeScript; top-level await; console output", async () => {
  await withSandbox({}, async (sb) => {
    const repl = await sb.deno.repl({ stdout: "piped" });
    const out = readAll(repl.stdout);
    assert.equal(await repl.eval("let x = 1"), null); // undefined comes back as null (JSON)
    assert.equal(await repl.eval("x + 1"), 2);
    assert.equal(await repl.eval("let x = 10; x + 1"), 11); // redeclared, as in `deno repl`
    assert.equal(await repl.eval("const t: number = await Promise.resolve(5); t * 2"), 10);
    assert.deepEqual(await repl.eval("({ a: 1, b: [1, 'two', null], d: new Date(0), m: new Map([['k', 1n]]) })"),
      { a: 1, b: [1, "two", null], d: "1970-01-01T00:00:00.000Z", m: { k: "1" } });
    await repl.eval("function add(a: number, b: number) { return a + b; }");
    assert.equal(await repl.call("add", 1, 2), 3);
    assert.equal(await repl.call("(a, b) => a * b", 3, 4), 12);
    assert.deepEqual(await repl.call("async (o) => ({ ...o, seen: true })", { k: "v" }), { k: "v", seen: true });
    assert.equal(await repl.eval("Deno.env.get('HUTCH_DENO_REPL') ?? 'hidden'"), "hidden"); // the channel's token
    assert.ok((await repl.eval("Deno.systemMemoryInfo()")).total > 0); // every permission (-A)
    await repl.eval("console.log('from the repl')");
    await repl.close();
    assert.match(text(await out), /from the repl\n/);
    assert.equal((await repl.status).success, true); // the driver ends by itself when closed
  });
});

test("deno.eval is a repl, one eval and a close", async () => {
  await withSandbox({}, async (sb) => {
    assert.equal(await sb.deno.eval("1 + 1"), 2);
    assert.equal(await sb.deno.eval("const a = 1;\nconst b = 2;\na + b;"), 3);
    assert.deepEqual(await sb.deno.eval("Deno.args"), []);
  });
});

test("REPL errors arrive as the SDK's errors, and the REPL stays usable", async () => {
  await withSandbox({}, async (sb) => {
    const repl = await sb.deno.repl();
    try {
      await assert.rejects(repl.eval("throw new TypeError('bad thing')"),
        (e) => e instanceof TypeError && e.message === "bad thing" && /TypeError: bad thing/.test(e.stack));
      await assert.rejects(repl.eval("notDefinedAnywhere"), (e) => e instanceof ReferenceError && /notDefinedAnywhere/.test(e.message));
      await assert.rejects(repl.eval("this is not code"), (e) => e instanceof SyntaxError);
      await assert.rejects(repl.eval("await Promise.reject(new RangeError('r'))"), (e) => e instanceof RangeError && e.message === "r");
      await assert.rejects(repl.eval("throw 42"), (e) => e instanceof Error && e.message === "Uncaught 42");
      await assert.rejects(repl.call("nope"), (e) => e instanceof ReferenceError);
      await assert.rejects(repl.call("1 + 1"), (e) => e instanceof TypeError && /is not a function/.test(e.message));
      await assert.rejects(repl.call("() => { throw new URIError('u') }"), (e) => e instanceof URIError);
      const nf = await repl.eval("Deno.readTextFileSync('/nope')").catch((e) => e);
      assert.match(nf.message, /No such file or directory/); // Deno.errors.NotFound: a plain Error in Node
      assert.equal(await repl.eval("'still here'"), "still here"); // positive control after every error
    } finally {
      await repl.close();
    }
  });
});

test("hostile calls: not a Deno pid, not a REPL, closed REPL, bad params, huge code", async () => {
  await withSandbox({}, async (sb) => {
    const rpc = await rawRpc(sb);
    try {
      const sleeper = await sb.spawn("sleep", { args: ["60"], stdout: "null", stderr: "null" });
      const server = await sb.deno.run({ code: "Deno.serve({ port: 8140, onListen() {} }, () => new Response('ok'))", stdout: "null" });
      assert.equal(await server.httpReady, true);
      // positive control: a real Deno pid answers on the raw connection too
      assert.deepEqual((await rpc.call("denoHttpWait", { pid: server.pid })).result, { ok: true });
      const notDeno = (await rpc.call("denoHttpWait", { pid: sleeper.pid })).result.error;
      assert.equal(notDeno.code, "ENOENT");
      assert.match(notDeno.message, /is not a Deno process/);
      const notRepl = (await rpc.call("denoReplEval", { pid: server.pid, code: "1" })).result.error;
      assert.equal(notRepl.code, "EINVAL");
      assert.match(notRepl.message, /not a REPL/);
      const viaFetch = (await rpc.call("fetch", { url: "http://x/", method: "GET", headers: [], redirect: "follow", pid: sleeper.pid })).result.error;
      assert.match(viaFetch.message, /not a running Deno process/);
      const both = await rpc.call("spawnDeno", { code: "1", extension: "ts", entrypoint: "x.ts", stdout: "null", stderr: "null" });
      assert.equal(both.error.code, -32602);
      const badExt = await rpc.call("spawnDeno", { code: "1", extension: "exe", stdout: "null", stderr: "null" });
      assert.equal(badExt.error.code, -32602);
      const badWatch = await rpc.call("spawnDeno", { entrypoint: "x.ts", watch: ["a,b"], stdout: "null", stderr: "null" });
      assert.match(badWatch.error.message, /cannot contain ','/);
      const badPid = await rpc.call("denoReplEval", { pid: -1, code: "1" });
      assert.equal(badPid.error.code, -32602);
      // a closed REPL
      const repl = await sb.deno.repl();
      assert.equal(await repl.eval("21 * 2"), 42);
      await repl.close();
      await assert.rejects(repl.eval("1"), (e) => /closed|no longer running|not a Deno process/.test(e.message));
      await repl.close(); // closing twice is fine (ENOENT, which the SDK ignores)
      // huge code: 1 MiB works (control), 9 MiB is refused with E2BIG
      const big = await sb.deno.repl();
      try {
        assert.equal(await big.eval(`"${"a".repeat(1 << 20)}".length`), 1 << 20);
        await assert.rejects(big.eval(`"${"a".repeat(9 << 20)}".length`), (e) => e.code === "E2BIG");
        await assert.rejects(sb.deno.run({ code: `// ${"a".repeat(9 << 20)}` }), (e) => e.code === "E2BIG");
        assert.equal(await big.eval("'alive'"), "alive");
      } finally {
        await big.close();
      }
      await sleeper.kill();
      await server.kill();
      await server.status;
    } finally {
      rpc.close();
    }
  });
});

test("a REPL that never answers: the call times out (bounded), a killed REPL fails its calls at once", async () => {
  await withSandbox({}, async (sb) => {
    const repl = await sb.deno.repl();
    // the test daemon runs with --deno-call-timeout 15000 (scripts/test.sh)
    await assert.rejects(within(90000, repl.eval("await new Promise(() => {})"), "the timeout"),
      (e) => e.code === "ETIMEDOUT" && /did not answer within/.test(e.message));
    assert.equal(await repl.eval("'not stuck'"), "not stuck"); // only that call was stuck
    const spin = repl.eval("while (true) {}"); // the whole isolate stops
    await new Promise((r) => setTimeout(r, 500));
    await repl.kill("SIGKILL");
    await assert.rejects(within(30000, spin, "the failed call"), (e) => e.code === "ENOENT" && /exited/.test(e.message));
    assert.equal((await repl.status).signal, "SIGKILL");
  });
});
