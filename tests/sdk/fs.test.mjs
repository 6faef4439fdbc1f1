// The SDK's fs API against hutchd: every method, its options, the error
// kinds, file handles per connection, listings, upload/download, bad input,
// and a 200 MB round trip with bounded daemon memory (HUTCHD_PID to check RSS).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, readFileSync, readlinkSync, lstatSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { withSandbox } from "./helpers.mjs";

const enc = new TextEncoder();

async function collect(iter) {
  const out = [];
  for await (const e of iter) out.push(e);
  return out;
}

async function rejects(p, code, pathPart) {
  await assert.rejects(p, (e) => {
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    if (pathPart) assert.ok(e.message.includes(pathPart), `message names the path: ${e.message}`);
    return true;
  });
}

test("fs: text and bytes round trip, relative paths resolve against /home/app", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeTextFile("hello.txt", "héllo\nworld");
    assert.equal(await sb.fs.readTextFile("/home/app/hello.txt"), "héllo\nworld");
    const bytes = new Uint8Array(1000).map((_, i) => (i * 31) & 255);
    await sb.fs.writeFile("b.bin", bytes);
    assert.deepEqual(await sb.fs.readFile("b.bin"), bytes);
    await sb.fs.writeFile("empty", new Uint8Array(0));
    assert.equal((await sb.fs.readFile("empty")).length, 0);
    assert.equal(await sb.fs.realPath("."), "/home/app");
    const st = await sb.fs.stat("hello.txt");
    assert.equal(st.uid, 1000);
    assert.equal(st.isFile, true);
    assert.equal(st.size, 12);
    assert.ok(st.mtime instanceof Date);
  });
});

test("fs: writeFile options append, create, createNew, mode", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeTextFile("a.txt", "one");
    await sb.fs.writeTextFile("a.txt", "two", { append: true });
    assert.equal(await sb.fs.readTextFile("a.txt"), "onetwo");
    await rejects(sb.fs.writeTextFile("a.txt", "x", { createNew: true }), "EEXIST", "a.txt");
    await rejects(sb.fs.writeTextFile("nope.txt", "x", { create: false }), "ENOENT", "nope.txt");
    await sb.fs.writeTextFile("m.txt", "x", { mode: 0o600 });
    assert.equal((await sb.fs.stat("m.txt")).mode & 0o777, 0o600);
    // a streamed text upload
    await sb.fs.writeTextFile("s.txt", ReadableStream.from(["ab", "cd", "é"]));
    assert.equal(await sb.fs.readTextFile("s.txt"), "abcdé");
  });
});

test("fs: errors carry the kind and the path", async () => {
  await withSandbox({}, async (sb) => {
    await rejects(sb.fs.readFile("missing/file"), "ENOENT", "missing/file");
    await rejects(sb.fs.writeTextFile("/etc/passwd", "x"), "EACCES", "/etc/passwd");
    await rejects(sb.fs.readFile("/home"), "EISDIR", "/home");
    await sb.fs.mkdir("d");
    await rejects(sb.fs.mkdir("d"), "EEXIST", "d");
    await sb.fs.writeTextFile("f", "x");
    await rejects(sb.fs.readTextFile("f/x"), "ENOTDIR", "f/x");
    await rejects(sb.fs.remove("/etc/hostname"), "EACCES");
    await rejects(sb.fs.chown("f", 0, 0), "EPERM");
  });
});

test("fs: mkdir, readDir, rename, copy, links, chmod, truncate, utime, umask, temp", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.mkdir("x/y/z", { recursive: true, mode: 0o750 });
    await sb.fs.mkdir("x/y/z", { recursive: true });
    assert.equal((await sb.fs.stat("x/y/z")).mode & 0o777, 0o750);
    await sb.fs.writeTextFile("x/f.txt", "hello");
    await sb.fs.symlink("f.txt", "x/l");
    const names = (await collect(sb.fs.readDir("x"))).sort((a, b) => a.name.localeCompare(b.name));
    assert.deepEqual(names, [
      { name: "f.txt", isFile: true, isDirectory: false, isSymlink: false },
      { name: "l", isFile: false, isDirectory: false, isSymlink: true },
      { name: "y", isFile: false, isDirectory: true, isSymlink: false },
    ]);
    assert.equal(await sb.fs.readLink("x/l"), "f.txt");
    assert.equal((await sb.fs.lstat("x/l")).isSymlink, true);
    assert.equal((await sb.fs.stat("x/l")).isFile, true);
    assert.equal(await sb.fs.realPath("x/l"), "/home/app/x/f.txt");
    await sb.fs.rename("x/f.txt", "x/g.txt");
    await sb.fs.copyFile("x/g.txt", "x/h.txt");
    assert.equal(await sb.fs.readTextFile("x/h.txt"), "hello");
    await sb.fs.link("x/h.txt", "x/hard");
    assert.equal((await sb.fs.stat("x/hard")).nlink, 2);
    await sb.fs.chmod("x/h.txt", 0o640);
    assert.equal((await sb.fs.stat("x/h.txt")).mode & 0o777, 0o640);
    await sb.fs.truncate("x/h.txt", 2);
    assert.equal(await sb.fs.readTextFile("x/h.txt"), "he");
    await sb.fs.truncate("x/h.txt");
    assert.equal((await sb.fs.stat("x/h.txt")).size, 0);
    const when = new Date("2020-01-02T03:04:05.000Z");
    await sb.fs.utime("x/h.txt", when, when);
    assert.equal((await sb.fs.stat("x/h.txt")).mtime.getTime(), when.getTime());
    const old = await sb.fs.umask(0o077);
    assert.equal(old, 0o022);
    assert.equal(await sb.fs.umask(), 0o077);
    const td = await sb.fs.makeTempDir({ prefix: "pre-", suffix: "-suf" });
    assert.match(td, /^\/tmp\/pre-.*-suf$/);
    assert.equal((await sb.fs.stat(td)).isDirectory, true);
    const tf = await sb.fs.makeTempFile({ dir: td });
    assert.ok(tf.startsWith(td + "/"));
    await rejects(sb.fs.remove("x"), "ENOTEMPTY");
    await sb.fs.remove("x", { recursive: true });
    await rejects(sb.fs.stat("x"), "ENOENT");
  });
});

test("fs: file handles read, write, seek, stat, truncate, sync, utime, lock, close", async () => {
  await withSandbox({}, async (sb) => {
    const f = await sb.fs.create("h.bin");
    assert.equal(await f.write(new Uint8Array([0, 1, 2, 3, 4, 5])), 6);
    assert.equal(await f.seek(2, 0), 2);
    const buf = new Uint8Array(10);
    assert.equal(await f.read(buf), 4);
    assert.deepEqual(buf.slice(0, 4), new Uint8Array([2, 3, 4, 5]));
    assert.equal(await f.read(buf), null);
    assert.equal(await f.seek(-4, 2), 2);
    assert.equal(await f.seek(1n, 1), 3);
    await f.sync();
    await f.syncData();
    assert.equal((await f.stat()).size, 6);
    await f.truncate(3);
    assert.equal((await f.stat()).size, 3);
    await f.utime(new Date(1e12), new Date(1e12));
    assert.equal((await f.stat()).mtime.getTime(), 1e12);
    await f.lock(true);
    await f.unlock();
    await f.close();
    await rejects(f.stat(), "EBADF"); // after close
    const r = await sb.fs.open("h.bin", { read: true });
    assert.deepEqual(await r.stat().then((s) => s.size), 3);
    await rejects(r.write(new Uint8Array([1])), "EBADF"); // opened read-only
    await r.close();
    const w = await sb.fs.open("new.txt", { write: true, createNew: true, mode: 0o600 });
    await w.writable.getWriter().write(enc.encode("streamed"));
    await w.close();
    assert.equal(await sb.fs.readTextFile("new.txt"), "streamed");
    await rejects(sb.fs.open("new.txt", { write: true, createNew: true }), "EEXIST", "new.txt");
  });
});

test("fs: a handle belongs to the connection that opened it", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeTextFile("shared.txt", "secret");
    const f = await sb.fs.open("shared.txt"); // the worker numbers handles from 1
    // Another connection to the same sandbox, speaking raw JSON-RPC, tries every small id.
    const url = process.env.DENO_SANDBOX_ENDPOINT.replace(/^http/, "ws") + `/api/v3/sandbox/${sb.id}/connect`;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` } });
    await new Promise((res, rej) => { ws.once("open", res); ws.once("error", rej); });
    try {
      const replies = new Map();
      ws.on("message", (m) => { const v = JSON.parse(m.toString()); if (v.id) replies.set(v.id, v); });
      for (let id = 1; id <= 8; id++)
        ws.send(JSON.stringify({ jsonrpc: "2.0", id, method: "fileRead", params: { fileHandleId: id, length: 100 } }));
      const end = Date.now() + 10000;
      while (replies.size < 8 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      assert.equal(replies.size, 8);
      for (const v of replies.values()) assert.equal(v.result.error.code, "EBADF");
    } finally {
      ws.close();
    }
    const buf = new Uint8Array(16);
    assert.equal(await f.read(buf), 6);
    await f.close();
  });
});

test("fs: walk with maxDepth, includeDirs, exts, match, skip; symlink loops fail clearly", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.mkdir("w/a/b", { recursive: true });
    await sb.fs.writeTextFile("w/1.txt", "");
    await sb.fs.writeTextFile("w/a/2.md", "");
    await sb.fs.writeTextFile("w/a/b/3.txt", "");
    const all = (await collect(sb.fs.walk("w"))).map((e) => e.path).sort();
    assert.deepEqual(all, ["w", "w/1.txt", "w/a", "w/a/2.md", "w/a/b", "w/a/b/3.txt"]);
    const d1 = (await collect(sb.fs.walk("w", { maxDepth: 1 }))).map((e) => e.path).sort();
    assert.deepEqual(d1, ["w", "w/1.txt", "w/a"]);
    const files = (await collect(sb.fs.walk("w", { includeDirs: false, exts: ["txt"] }))).map((e) => e.path).sort();
    assert.deepEqual(files, ["w/1.txt", "w/a/b/3.txt"]);
    const m = (await collect(sb.fs.walk("w", { match: [/\.md$/] }))).map((e) => e.name);
    assert.deepEqual(m, ["2.md"]);
    const s = (await collect(sb.fs.walk("w", { skip: [/b/] }))).map((e) => e.path).sort();
    assert.deepEqual(s, ["w", "w/1.txt", "w/a", "w/a/2.md"]);
    // as std/fs: a file root is yielded, then reading it as a directory fails
    await rejects(collect(sb.fs.walk("w/a/2.md")), "ENOTDIR", "w/a/2.md");
    assert.deepEqual((await collect(sb.fs.walk("w/a/2.md", { maxDepth: 0 })))[0],
      { path: "w/a/2.md", name: "2.md", isFile: true, isDirectory: false, isSymlink: false });
    await sb.fs.symlink("..", "w/a/b/up");
    const noFollow = await collect(sb.fs.walk("w"));
    assert.ok(noFollow.some((e) => e.isSymlink && e.name === "up"));
    await rejects(collect(sb.fs.walk("w", { followSymlinks: true })), "ELOOP");
    await rejects(collect(sb.fs.walk("nowhere")), "ENOENT", "nowhere");
  });
});

test("fs: expandGlob with globstar, root, exclude, includeDirs", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.mkdir("g/x/y", { recursive: true });
    for (const p of ["g/a.ts", "g/b.js", "g/x/c.ts", "g/x/y/d.ts"]) await sb.fs.writeTextFile(p, "");
    const ts = (await collect(sb.fs.expandGlob("g/**/*.ts"))).map((e) => e.path).sort();
    assert.deepEqual(ts, ["/home/app/g/a.ts", "/home/app/g/x/c.ts", "/home/app/g/x/y/d.ts"]);
    const top = (await collect(sb.fs.expandGlob("*.ts", { root: "/home/app/g" }))).map((e) => e.name);
    assert.deepEqual(top, ["a.ts"]);
    const ex = (await collect(sb.fs.expandGlob("g/**/*.ts", { exclude: ["g/x/y"] }))).map((e) => e.name).sort();
    assert.deepEqual(ex, ["a.ts", "c.ts"]);
    const dirs = (await collect(sb.fs.expandGlob("g/*", { includeDirs: false }))).map((e) => e.name).sort();
    assert.deepEqual(dirs, ["a.ts", "b.js"]);
    assert.deepEqual(await collect(sb.fs.expandGlob("g/none-*")), []);
  });
});

test("fs: upload and download a tree with nested dirs, empty files, symlinks and a binary", async () => {
  const local = mkdtempSync(join(tmpdir(), "hutch-fs-"));
  try {
    const src = join(local, "tree");
    mkdirSync(join(src, "sub", "deep"), { recursive: true });
    writeFileSync(join(src, "empty"), "");
    writeFileSync(join(src, "sub", "deep", "text.txt"), "deep text");
    const bin = Buffer.alloc(3 * 1024 * 1024 + 7);
    for (let i = 0; i < bin.length; i++) bin[i] = (i * 131) & 255;
    writeFileSync(join(src, "sub", "big.bin"), bin);
    symlinkSync("sub/deep/text.txt", join(src, "link"));
    await withSandbox({}, async (sb) => {
      await sb.fs.upload(src, ".");
      assert.equal(await sb.fs.readTextFile("tree/sub/deep/text.txt"), "deep text");
      assert.equal((await sb.fs.stat("tree/empty")).size, 0);
      assert.equal((await sb.fs.lstat("tree/link")).isSymlink, true);
      assert.deepEqual(Buffer.from(await sb.fs.readFile("tree/sub/big.bin")), bin);
      const out = join(local, "back");
      mkdirSync(out);
      await sb.fs.download("tree", out);
      assert.deepEqual(readFileSync(join(out, "tree", "sub", "big.bin")), bin);
      assert.equal(readFileSync(join(out, "tree", "empty")).length, 0);
      assert.equal(readFileSync(join(out, "tree", "sub", "deep", "text.txt"), "utf8"), "deep text");
      assert.ok(lstatSync(join(out, "tree", "link")).isSymbolicLink());
      assert.equal(readlinkSync(join(out, "tree", "link")), "sub/deep/text.txt");
    });
  } finally {
    rmSync(local, { recursive: true, force: true });
  }
});

test("fs: bad input gets a clear error and the connection stays usable", async () => {
  await withSandbox({}, async (sb) => {
    await rejects(sb.fs.readFile("a\0b"), "EINVAL");
    await rejects(sb.fs.readFile("x".repeat(5000)), "ENAMETOOLONG");
    await rejects(sb.fs.stat(""), "EINVAL");
    await rejects(sb.fs.chmod("nope", 0o7777 + 1), "EINVAL");
    await sb.fs.writeTextFile("f", "abc");
    const f = await sb.fs.open("f");
    await rejects(f.seek(-100, 0), "EINVAL");
    await rejects(f.seek(0, 7), "EINVAL");
    const big = new Uint8Array(1 << 20);
    assert.ok((await f.read(big)) <= 144 * 1024);
    await f.close();
    // reading a FIFO nobody writes must not hang the sandbox's fs
    await sb.sh`mkfifo /home/app/fifo`;
    const fifo = await sb.fs.open("fifo");
    assert.equal(await sb.fs.readTextFile("f"), "abc");
    await fifo.close();
    assert.equal(await sb.fs.readTextFile("f"), "abc");
  });
});

test("fs: symlinks planted in the sandbox never reach host files", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.symlink("/work/main/README.md", "host-readme");
    await sb.fs.symlink("/proc/1/root/etc/shadow", "pid1-shadow");
    await rejects(sb.fs.readFile("host-readme"), "ENOENT");
    await assert.rejects(sb.fs.readFile("pid1-shadow"));
    await rejects(sb.fs.readFile("../../../../../../etc/shadow"), "EACCES");
    await sb.fs.link("/etc/shadow", "hard-shadow").catch(() => {}); // protected_hardlinks refuses
    await assert.rejects(sb.fs.readFile("hard-shadow"));
  });
});

test("fs: 200 MB written and read back byte-exact with bounded daemon memory", { timeout: 600000 }, async () => {
  const SIZE = 200 * 1024 * 1024, CH = 1 << 20;
  const pid = process.env.HUTCHD_PID;
  assert.ok(pid, "HUTCHD_PID is not set: run this through scripts/test.sh (the bound is on hutchd's memory)");
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024;
  await withSandbox({ memory: "2GiB" }, async (sb) => {
    const base = rss();
    let peak = base;
    const timer = setInterval(() => { peak = Math.max(peak, rss()); }, 50);
    try {
      const chunk = new Uint8Array(CH);
      for (let i = 0; i < CH; i++) chunk[i] = (i * 2654435761) >>> 24;
      const h = createHash("sha256");
      let sent = 0;
      const src = new ReadableStream({
        pull(c) {
          if (sent >= SIZE) return c.close();
          const b = chunk.slice();
          b[0] = sent / CH;
          h.update(b);
          c.enqueue(b);
          sent += CH;
        },
      }, { highWaterMark: 0 });
      await sb.fs.writeFile("big.bin", src);
      assert.equal((await sb.fs.stat("big.bin")).size, SIZE);
      const f = await sb.fs.open("big.bin");
      const h2 = createHash("sha256");
      let n = 0;
      for await (const c of f.readable) { h2.update(c); n += c.length; }
      assert.equal(n, SIZE);
      assert.equal(h2.digest("hex"), h.digest("hex"));
      await rejects(sb.fs.readFile("big.bin"), "EFBIG");
    } finally {
      clearInterval(timer);
    }
    assert.ok(peak - base < 32, `hutchd grew by ${(peak - base).toFixed(1)} MiB`);
  });
});
