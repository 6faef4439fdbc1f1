// File throughput (issue 3): writeFile / read of a 200 MB file through the SDK,
// `hutch cp` both ways, `cat` of the same file through `hutch exec`, and a
// local `cp` of it, in one run. Prints one JSON object (MB/s, 1 MB = 1e6 bytes).
// Env: DENO_* as for the SDK tests, HUTCH_CLI (the hutch binary), FS_BENCH_MB
// (default 200), FS_BENCH_DIR (a local scratch dir, default /tmp), HUTCHD_PID
// (then the SDK rows also report the CPU seconds hutchd and every process
// under it, hutch-init and its fs worker, spent: *_cpu_s), FS_BENCH_SDK_ONLY=1
// (only the SDK rows), FS_BENCH_DENO=0 (no Deno rows). The SDK rows run under
// Node (this process) and again under Deno (bench/fs_sdk_deno.ts, deno from
// tests/sdk/node_modules, as a Deno user runs the SDK: deno_* rows).
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";

const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Sandbox } = await import(sdkUrl.href);

const MB = Number(process.env.FS_BENCH_MB ?? 200);
const size = MB * 1_000_000;
const dir = fs.mkdtempSync(path.join(process.env.FS_BENCH_DIR ?? "/tmp", "hutch-fsbench-"));
const src = path.join(dir, "big.bin");
const secs = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const now = () => process.hrtime.bigint();
const rate = (t) => Math.round((size / 1e6 / t) * 10) / 10;
// CPU seconds of hutchd and all its descendants alive now (utime + stime; clock ticks of 1/100 s),
// by process name (hutchd, hutch-init, and the fs worker's name) and in total
function daemonCpu() {
  const root = Number(process.env.HUTCHD_PID);
  if (!root) return null;
  const procs = new Map();
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
      const comm = st.slice(st.indexOf("(") + 1, st.lastIndexOf(")"));
      procs.set(Number(d), { comm, ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch { /* gone meanwhile */ }
  }
  const by = { total: 0 };
  for (const [pid, p] of procs) {
    for (let q = pid, hops = 0; q && hops < 64; q = procs.get(q)?.ppid, hops++)
      if (q === root) {
        by.total += p.ticks / 100;
        by[p.comm] = (by[p.comm] ?? 0) + p.ticks / 100;
        break;
      }
  }
  return by;
}
const r2 = (x) => Math.round(x * 100) / 100;
let cpuDetail = {};
// this process's (the SDK client's) CPU seconds since u0
const clientCpu = (u0) => { const u = process.cpuUsage(u0); return r2((u.user + u.system) / 1e6); };
function cpuSince(c0, row) {
  if (c0 === null) return undefined;
  const c1 = daemonCpu();
  cpuDetail[row] = Object.fromEntries(Object.keys(c1).filter((k) => k !== "total").map((k) => [k, r2(c1[k] - (c0[k] ?? 0))]));
  return r2(c1.total - c0.total);
}

{ // random, so that nothing on the way can compress it
  const fd = fs.openSync(src, "w");
  const block = crypto.randomBytes(1 << 20);
  for (let left = size; left > 0; left -= block.length) fs.writeSync(fd, block, 0, Math.min(left, block.length));
  fs.closeSync(fd);
}

const out = { size_mb: MB };
const sb = await Sandbox.create();
const cliEnv = { ...process.env, HUTCH_ENDPOINT: process.env.DENO_SANDBOX_ENDPOINT,
                 HUTCH_TOKEN: process.env.DENO_DEPLOY_TOKEN };
// Asynchronous, so that the SDK's connection keeps pinging while a slow copy
// runs (a silent connection is closed after 60 s, and the sandbox with it).
function run(cmd, args, opts) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const p = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"], ...opts });
    let err = "";
    p.stderr.on("data", (d) => { err += d; });
    p.on("error", reject);
    p.on("close", (code) => code === 0 ? resolve(secs(t0)) : reject(new Error(`${cmd} ${args.join(" ")}: ${code} ${err}`)));
  });
}
const cli = (args) => run(process.env.HUTCH_CLI, args, { env: cliEnv });
try {
  // local cp (the target): fresh destination, file already in the page cache
  {
    const t0 = now();
    const r = spawnSync("cp", [src, path.join(dir, "copy.bin")]);
    if (r.status !== 0) throw new Error("cp failed");
    out.local_cp_mbs = rate(secs(t0));
    fs.rmSync(path.join(dir, "copy.bin"));
  }
  // SDK writeFile with a stream (1 MiB chunks, as fs.upload does with Deno.open)
  {
    const c0 = daemonCpu(), u0 = process.cpuUsage();
    const t0 = now();
    const stream = Readable.toWeb(fs.createReadStream(src, { highWaterMark: 1 << 20 }));
    await sb.fs.writeFile("/tmp/big.bin", stream);
    out.sdk_write_mbs = rate(secs(t0));
    out.sdk_write_cpu_s = cpuSince(c0, "sdk_write");
    out.sdk_write_client_cpu_s = clientCpu(u0);
  }
  // SDK read: open + readable (readFile answers in one message and caps at ~74 MiB)
  {
    const c0 = daemonCpu(), u0 = process.cpuUsage();
    const t0 = now();
    const f = await sb.fs.open("/tmp/big.bin", { read: true });
    let n = 0;
    for await (const chunk of f.readable) n += chunk.length;
    out.sdk_read_mbs = rate(secs(t0));
    out.sdk_read_cpu_s = cpuSince(c0, "sdk_read");
    out.sdk_read_client_cpu_s = clientCpu(u0);
    // how hutchd's read-ahead answered (hutch_fs_readahead_total; absent on an older hutchd)
    const m = await fetch(`${process.env.DENO_DEPLOY_ENDPOINT}/metrics`, {
      headers: { authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` } }).then((r) => r.text()).catch(() => "");
    for (const [, k, v] of m.matchAll(/^hutch_fs_readahead_total\{outcome="(\w+)"\} (\d+)$/gm))
      (out.readahead ??= {})[k] = Number(v);
    if (n !== size) throw new Error(`read ${n} bytes, wanted ${size}`);
  }
  // The same two rows under Deno: the SDK's own client there (its `ws` on Deno's node:net)
  const deno = new URL("../tests/sdk/node_modules/.bin/deno", import.meta.url).pathname;
  if (process.env.FS_BENCH_DENO !== "0" && fs.existsSync(deno)) {
    const home = path.join(dir, "deno-home");
    fs.mkdirSync(home);
    const env = { PATH: process.env.PATH, HOME: home, DENO_DIR: path.join(home, "deno"), DENO_NO_UPDATE_CHECK: "1",
                  NO_COLOR: "1", DENO_DEPLOY_TOKEN: process.env.DENO_DEPLOY_TOKEN,
                  DENO_SANDBOX_ENDPOINT: process.env.DENO_SANDBOX_ENDPOINT,
                  DENO_DEPLOY_ENDPOINT: process.env.DENO_DEPLOY_ENDPOINT,
                  SB_ID: sb.id, SRC: src, DST: "/tmp/big-deno.bin" };
    const script = new URL("fs_sdk_deno.ts", import.meta.url).pathname;
    for (const row of ["write", "read"]) {
      const c0 = daemonCpu();
      const r = await new Promise((resolve, reject) => {
        const p = spawn(deno, ["run", "-NE", `--allow-read=${src}`, "--node-modules-dir=manual", script],
                        { cwd: new URL("../tests/sdk", import.meta.url).pathname, env: { ...env, ROW: row },
                          stdio: ["ignore", "pipe", "pipe"] });
        let o = "", e = "";
        p.stdout.on("data", (d) => { o += d; });
        p.stderr.on("data", (d) => { e += d; });
        p.on("error", reject);
        p.on("close", (code) => code === 0 ? resolve(JSON.parse(o)) : reject(new Error(`deno ${row}: ${code} ${e}`)));
      });
      out[`deno_${row}_mbs`] = r[`${row}_mbs`];
      out[`deno_${row}_cpu_s`] = cpuSince(c0, `deno_${row}`);
      out[`deno_${row}_client_cpu_s`] = r[`${row}_client_cpu_s`];
    }
  }
  if (process.env.HUTCH_CLI && !process.env.FS_BENCH_SDK_ONLY) {
    const id = sb.id;
    out.exec_cat_mbs = rate(await cli(["exec", id, "--", "cat", "/tmp/big.bin"]));
    out.cp_up_mbs = rate(await cli(["cp", "-q", src, `${id}:/tmp/up.bin`]));
    out.cp_down_mbs = rate(await cli(["cp", "-q", `${id}:/tmp/big.bin`, path.join(dir, "down.bin")]));
    if (fs.statSync(path.join(dir, "down.bin")).size !== size) throw new Error("hutch cp download: wrong size");
    fs.rmSync(path.join(dir, "down.bin"));
    // A tree of the same size (10 directories of 1 MB files), copied as a tree
    // and as tar streams: '-' is where the CLI reads and writes tar (libarchive).
    const tree = path.join(dir, "tree");
    const block = crypto.randomBytes(1 << 20);
    for (let i = 0, left = size; left > 0; i++, left -= block.length) {
      fs.mkdirSync(path.join(tree, `d${i % 10}`), { recursive: true });
      fs.writeFileSync(path.join(tree, `d${i % 10}`, `f${i}.bin`), block.subarray(0, Math.min(left, block.length)));
      block[0]++; // every file different
    }
    const shell = (cmd) => run("sh", ["-c", cmd], { env: { ...cliEnv, H: process.env.HUTCH_CLI, ID: id, D: dir } });
    out.cp_tree_up_mbs = rate(await cli(["cp", "-q", tree, `${id}:/tmp/tree`]));
    out.cp_tree_down_mbs = rate(await cli(["cp", "-q", `${id}:/tmp/tree`, path.join(dir, "tree.down")]));
    out.tar_tree_up_mbs = rate(await shell(`tar -C "$D" -cf - tree | "$H" cp -q - "$ID:/tmp/untar"`));
    out.tar_tree_down_mbs = rate(await shell(`mkdir "$D/untar" && "$H" cp -q "$ID:/tmp/tree" - | tar -C "$D/untar" -xf -`));
    const du = (p) => spawnSync("du", ["-sb", p]).stdout.toString().split("\t")[0];
    if (du(path.join(dir, "untar", "tree")) !== du(tree)) throw new Error("hutch cp ID:tree - | tar -x: wrong size");
  }
} finally {
  await sb.kill().catch(() => {});
  await sb.close().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
}
if (Object.keys(cpuDetail).length) out.cpu_by_process = cpuDetail;
console.log(JSON.stringify(out));
