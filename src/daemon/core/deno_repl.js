// hutch's Deno REPL driver: runs inside the sandbox as `app` (deno eval),
// embedded in hutchd at build time (docs/deno.md). It connects to hutchd's
// control listener on the sandbox's loopback, proves itself with the token
// hutchd gave it, then evaluates requests, one JSON object per line:
//   → {"id": n, "op": "eval", "code": "..."} | {"id": n, "op": "call", "fn": "...", "args": [...]}
//   ← {"id": n, "ok": <JSON value>} | {"id": n, "error": {constructorName, name, message, stack, code}}
// Code runs through V8's REPL mode (the inspector's Runtime.evaluate with
// replMode, as `deno repl` does): let/const persist between evals and may be
// redeclared, top-level await works. TypeScript is stripped to JavaScript
// first. User code owns stdin/stdout/stderr; this channel never touches them.
import { Session } from "node:inspector";
import { stripTypeScriptTypes } from "node:module";

const spec = Deno.env.get("HUTCH_DENO_REPL") ?? "";
Deno.env.delete("HUTCH_DENO_REPL"); // not visible to the code it runs
const [portText, token] = spec.split(":");
const port = Number(portText);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !token) {
  console.error("hutch REPL driver: HUTCH_DENO_REPL is not set");
  Deno.exit(70);
}

const session = new Session();
session.connect();
const post = (method, params) =>
  new Promise((resolve, reject) =>
    session.post(method, params, (err, res) => (err ? reject(err) : resolve(res)))
  );

// The inspector hands back remote objects; this stores the real value where
// the driver can read it.
const SLOT = "hutch.repl.slot";
const globalId = (await post("Runtime.evaluate", { expression: "globalThis" })).result.objectId;
async function realValue(remote) {
  const arg = remote.objectId
    ? { objectId: remote.objectId }
    : remote.unserializableValue !== undefined
    ? { unserializableValue: remote.unserializableValue }
    : remote.type === "undefined"
    ? {}
    : { value: remote.value };
  await post("Runtime.callFunctionOn", {
    objectId: globalId,
    functionDeclaration: "function (v) { this[Symbol.for('hutch.repl.slot')] = v; }",
    arguments: [arg],
  });
  const v = globalThis[Symbol.for(SLOT)];
  delete globalThis[Symbol.for(SLOT)];
  if (remote.objectId) post("Runtime.releaseObject", { objectId: remote.objectId }).catch(() => {});
  return v;
}

function toCode(code) {
  for (const mode of ["strip", "transform"]) { // transform: enums, namespaces
    try {
      return stripTypeScriptTypes(code, { mode });
    } catch {
      // next
    }
  }
  return code; // not TypeScript either: V8 reports the syntax error
}

class Thrown {
  constructor(value) {
    this.value = value;
  }
}

async function evaluate(code) {
  const r = await post("Runtime.evaluate", {
    expression: toCode(code),
    replMode: true,
    awaitPromise: true,
    objectGroup: "hutch",
  });
  if (r.exceptionDetails) {
    const ex = r.exceptionDetails.exception;
    throw new Thrown(ex ? await realValue(ex) : new Error(r.exceptionDetails.text));
  }
  let v = await realValue(r.result);
  if (v !== null && (typeof v === "object" || typeof v === "function") && typeof v.then === "function") {
    try {
      v = await v;
    } catch (e) {
      throw new Thrown(e);
    }
  }
  return v;
}

async function call(fn, args) {
  const f = await evaluate(fn);
  if (typeof f !== "function") throw new Thrown(new TypeError(`${fn.slice(0, 100)} is not a function`));
  try {
    return await f(...args);
  } catch (e) {
    throw new Thrown(e);
  }
}

// JSON for the SDK (its schema is z.unknown(): what we send is what the
// caller gets). undefined → null, BigInt → string, Map → object of its
// entries, Set and typed arrays → arrays, Date → ISO string (toJSON),
// functions and symbols dropped, cycles → "[Circular]".
function toJson(v) {
  const stack = [];
  const conv = (x) => {
    if (x === undefined || typeof x === "function" || typeof x === "symbol") return undefined;
    if (typeof x === "bigint") return x.toString();
    if (typeof x === "number") return Number.isFinite(x) ? x : null;
    if (x === null || typeof x !== "object") return x;
    if (stack.includes(x)) return "[Circular]";
    if (typeof x.toJSON === "function") return conv(x.toJSON());
    stack.push(x);
    try {
      if (x instanceof Map) {
        const o = {};
        for (const [k, val] of x) {
          const c = conv(val);
          if (c !== undefined) o[String(k)] = c;
        }
        return o;
      }
      if (x instanceof Set) return [...x].map((e) => conv(e) ?? null);
      if (ArrayBuffer.isView(x) && !(x instanceof DataView)) return Array.from(x, (e) => conv(e));
      if (Array.isArray(x)) return x.map((e) => conv(e) ?? null);
      if (x instanceof Error) return { name: x.name, message: x.message };
      const o = {};
      for (const k of Object.keys(x)) {
        const c = conv(x[k]);
        if (c !== undefined) o[k] = c;
      }
      return o;
    } finally {
      stack.pop();
    }
  };
  const r = conv(v);
  return r === undefined ? null : r;
}

// The stack as the user's code sees it: the driver's own frames cut off.
function userStack(stack) {
  if (typeof stack !== "string") return null;
  const lines = stack.split("\n");
  const cut = lines.findIndex((l, i) => i > 0 && (l.includes("ext:deno_node/inspector") || l.includes(import.meta.url)));
  return (cut > 0 ? lines.slice(0, cut) : lines).join("\n").slice(0, 65536);
}

function errorJson(e) {
  const str = (s, n) => (typeof s === "string" ? s.slice(0, n) : null);
  if (e instanceof Error || (e && typeof e === "object" && typeof e.message === "string")) {
    return {
      constructorName: str(e.constructor?.name, 100) ?? "Error",
      name: str(e.name, 100),
      message: str(e.message, 65536) ?? "",
      stack: userStack(e.stack),
      code: str(e.code, 100),
    };
  }
  let text;
  try {
    text = Deno.inspect(e);
  } catch {
    text = String(e);
  }
  return { constructorName: "Error", name: "Error", message: `Uncaught ${text}`.slice(0, 65536), stack: null, code: null };
}

const conn = await Deno.connect({ hostname: "127.0.0.1", port });
const enc = new TextEncoder();
let writing = Promise.resolve();
function send(obj) {
  let line;
  try {
    line = JSON.stringify(obj);
  } catch (e) {
    line = JSON.stringify({ id: obj.id, error: errorJson(e) });
  }
  const bytes = enc.encode(line + "\n");
  writing = writing.then(async () => {
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
  });
  return writing;
}

async function handle(req) {
  try {
    const v = req.op === "call" ? await call(req.fn, req.args) : await evaluate(req.code);
    await send({ id: req.id, ok: toJson(v) });
  } catch (e) {
    await send({ id: req.id, error: errorJson(e instanceof Thrown ? e.value : e) });
  }
}

await send({ token });
const dec = new TextDecoder();
let buf = "";
for await (const chunk of conn.readable) {
  buf += dec.decode(chunk, { stream: true });
  let nl;
  while ((nl = buf.indexOf("\n")) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    let req;
    try {
      req = JSON.parse(line);
    } catch {
      continue;
    }
    handle(req); // concurrent, like the SDK's calls: each answers by id
  }
}
Deno.exit(0); // hutchd closed the channel: the REPL ends
