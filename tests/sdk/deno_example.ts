// The README's Deno example, run as a Deno user runs it: host deno from npm,
// `deno run -NE --node-modules-dir=manual deno_example.ts` (deno_example.test.mjs).
import { Sandbox } from "@deno/sandbox";

await using sandbox = await Sandbox.create();

// One expression, evaluated in a fresh REPL inside the sandbox.
const sum: number = await sandbox.deno.eval("1 + 1");
console.log("eval:", sum);

// A REPL keeps its state between evals.
await using repl = await sandbox.deno.repl();
await repl.eval("const x = 42;");
console.log("repl:", await repl.eval("x + 8"));

// A server: httpReady once it answers HTTP, then fetch reaches its port.
await using server = await sandbox.deno.run({
  code: `Deno.serve({ port: 8000, onListen() {} }, (req) => new Response("hello from " + new URL(req.url).pathname));`,
});
if (!(await server.httpReady)) throw new Error("the server did not start");
const res = await server.fetch("http://localhost/deno");
console.log("fetch:", res.status, await res.text());
