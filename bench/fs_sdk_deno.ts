// The SDK file rows of bench/fs_bench.mjs under Deno, as a Deno user runs the
// SDK: `deno run -NE --node-modules-dir=manual` (deno and the SDK from
// tests/sdk/node_modules, run with tests/sdk as the working directory),
// TypeScript. Connects to the sandbox fs_bench.mjs made, uploads SRC with
// writeFile(path, (await Deno.open(SRC)).readable) as fs.upload does (ROW=write),
// or reads DST back with open + readable (ROW=read; one process per row, so
// that the caller can take hutchd's CPU around each). Prints one JSON object:
// MB/s (1 MB = 1e6 bytes) and this process's own CPU seconds for the row (every
// thread).
// Env: SB_ID, SRC (a local file), DST (the sandbox's path), ROW, DENO_* as for the SDK.
import { Sandbox } from "npm:@deno/sandbox@0.13.2";
import process from "node:process";

const id = Deno.env.get("SB_ID")!;
const src = Deno.env.get("SRC")!;
const dst = Deno.env.get("DST") ?? "/tmp/big-deno.bin";
const size = (await Deno.stat(src)).size;
const rate = (t: number) => Math.round((size / 1e6 / t) * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const cpu = (u0: ReturnType<typeof process.cpuUsage>) => {
  const u = process.cpuUsage(u0);
  return r2((u.user + u.system) / 1e6);
};

const out: Record<string, number> = {};
await using sb = await Sandbox.connect(id);
if (Deno.env.get("ROW") === "write") {
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  const f = await Deno.open(src, { read: true });
  await sb.fs.writeFile(dst, f.readable);
  out.write_mbs = rate((performance.now() - t0) / 1e3);
  out.write_client_cpu_s = cpu(u0);
} else {
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  await using f = await sb.fs.open(dst, { read: true });
  let n = 0;
  for await (const chunk of f.readable) n += chunk.length;
  out.read_mbs = rate((performance.now() - t0) / 1e3);
  out.read_client_cpu_s = cpu(u0);
  if (n !== size) throw new Error(`read ${n} bytes, wanted ${size}`);
}
console.log(JSON.stringify(out));
