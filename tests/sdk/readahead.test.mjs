// fileRead's read-ahead in hutchd (rpc_fs.c): a handle read chunk after
// chunk is answered from what hutchd already asked the fs worker for. Every
// test checks the bytes against a pattern it wrote, and the ones about giving
// a read-ahead back check that one was there to give back (/metrics,
// hutch_fs_readahead_total), so they cannot pass with read-ahead switched off.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import WebSocket from "ws";
import { withSandbox } from "./helpers.mjs";

const CH = 65536; // the SDK's FsFile.readable asks for this much per fileRead

// byte i of a pattern file: position-dependent, so a chunk from the wrong place shows
const pat = (i) => (i * 7 + (i >>> 16)) & 255;
function pattern(n) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = pat(i);
  return b;
}
function expectAt(buf, off, what) {
  for (let i = 0; i < buf.length; i++)
    if (buf[i] !== pat(off + i)) assert.fail(`${what}: byte ${i} is ${buf[i]}, the file has ${pat(off + i)} at ${off + i}`);
}

async function readahead() {
  const r = await fetch(`${process.env.DENO_DEPLOY_ENDPOINT}/metrics`, {
    headers: { authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` },
  });
  assert.equal(r.status, 200);
  const t = await r.text();
  const get = (o) => Number(new RegExp(`^hutch_fs_readahead_total\\{outcome="${o}"\\} (\\d+)$`, "m").exec(t)[1]);
  return { hit: get("hit") + get("waited"), undone: get("undone") };
}

// f.read(buf) asks for buf.length bytes: the same length each time, as readable does
async function readChunk(f, len = CH) {
  const buf = new Uint8Array(len);
  const n = await f.read(buf);
  return n === null ? null : buf.slice(0, n);
}

test("readahead: a file read through readable is byte-exact and its reads are answered ahead", async () => {
  await withSandbox({}, async (sb) => {
    const data = randomBytes(3 * 1000 * 1000 + 17); // not a multiple of 64 KiB: the last read is short
    await sb.fs.writeFile("r.bin", data);
    const before = await readahead();
    const f = await sb.fs.open("r.bin");
    const h = createHash("sha256");
    let n = 0, reads = 0;
    for await (const c of f.readable) { h.update(c); n += c.length; reads++; }
    assert.equal(n, data.length);
    assert.equal(h.digest("hex"), createHash("sha256").update(data).digest("hex"));
    const after = await readahead();
    // 46 reads of data: all but the first (and any a stray agent frame made stale) from read-ahead
    assert.ok(after.hit - before.hit >= reads / 2, `only ${after.hit - before.hit} of ${reads} reads were answered ahead`);
  });
});

test("readahead: the end of the file and short reads come exactly where they are", async () => {
  await withSandbox({}, async (sb) => {
    for (const size of [2 * CH, 2 * CH + 5, 1]) {
      await sb.fs.writeFile("e.bin", pattern(size));
      const f = await sb.fs.open("e.bin");
      const got = [];
      for (let i = 0; i < 5; i++) {
        const c = await readChunk(f);
        got.push(c === null ? null : c.length);
        if (c) expectAt(c, i * CH, `size ${size} read ${i}`);
      }
      const want = size === 1 ? [1, null, null, null, null]
        : size === 2 * CH ? [CH, CH, null, null, null] : [CH, CH, 5, null, null];
      assert.deepEqual(got, want, `file of ${size} bytes`);
      await f.close();
    }
  });
});

test("readahead: fileSeek after reads gives the read-ahead back; the position is the client's", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeFile("s.bin", pattern(1 << 20));
    const f = await sb.fs.open("s.bin");
    for (let i = 0; i < 3; i++) expectAt(await readChunk(f), i * CH, `read ${i}`);
    const before = await readahead();
    assert.equal(await f.seek(0, 1), 3 * CH); // SeekCurrent: the worker had read a 4th chunk ahead
    const after = await readahead();
    assert.equal(after.undone - before.undone, 1, "a read-ahead was given back (the probe: one was there)");
    assert.equal(await f.seek(-100, 1), 3 * CH - 100);
    expectAt(await readChunk(f), 3 * CH - 100, "read after seeking back");
    assert.equal(await f.seek(5, 0), 5);
    expectAt(await readChunk(f), 5, "read after SeekStart");
    expectAt(await readChunk(f), 5 + CH, "the next read, ahead again");
    assert.equal(await f.seek(-10, 2), (1 << 20) - 10);
    const tail = await readChunk(f);
    assert.equal(tail.length, 10);
    expectAt(tail, (1 << 20) - 10, "read after SeekEnd");
    assert.equal(await readChunk(f), null);
  });
});

test("readahead: fileWrite after reads lands at the client's position", async () => {
  await withSandbox({}, async (sb) => {
    const size = 4 * CH;
    await sb.fs.writeFile("w.bin", pattern(size));
    const f = await sb.fs.open("w.bin", { read: true, write: true });
    expectAt(await readChunk(f), 0, "read 0");
    expectAt(await readChunk(f), CH, "read 1");
    const before = await readahead();
    assert.equal(await f.write(new Uint8Array(10).fill(0xaa)), 10);
    assert.equal((await readahead()).undone - before.undone, 1, "a read-ahead was given back");
    expectAt(await readChunk(f), 2 * CH + 10, "read after the write");
    await f.close();
    const back = await sb.fs.readFile("w.bin");
    assert.equal(back.length, size);
    for (let i = 0; i < size; i++) {
      const want = i >= 2 * CH && i < 2 * CH + 10 ? 0xaa : pat(i);
      if (back[i] !== want) assert.fail(`byte ${i} is ${back[i]}, want ${want}`);
    }
  });
});

test("readahead: fileTruncate after reads; the next read sees the shorter file", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeFile("t.bin", pattern(4 * CH));
    const f = await sb.fs.open("t.bin", { read: true, write: true });
    expectAt(await readChunk(f), 0, "read 0");
    const before = await readahead();
    await f.truncate(CH + 10);
    assert.equal((await readahead()).undone - before.undone, 1, "a read-ahead was given back");
    const c = await readChunk(f);
    assert.equal(c.length, 10, "not the 64 KiB read ahead before the truncate");
    expectAt(c, CH, "read after truncate");
    assert.equal(await readChunk(f), null);
  });
});

test("readahead: a command that changes the file between two reads is seen by the second", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeFile("c.bin", pattern(4 * CH));
    const f = await sb.fs.open("c.bin");
    expectAt(await readChunk(f), 0, "read 0");
    expectAt(await readChunk(f), CH, "read 1"); // chunk 2 is read ahead now
    await sb.sh`printf XYZ | dd of=c.bin bs=1 seek=131072 conv=notrunc status=none`; // throws if it fails
    const c = await readChunk(f);
    assert.equal(new TextDecoder().decode(c.slice(0, 3)), "XYZ", "the read-ahead from before the command was used");
    expectAt(c.slice(3), 2 * CH + 3, "rest of read 2");
  });
});

test("readahead: another length, and two handles read in turns, get their own bytes", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeFile("m.bin", pattern(8 * CH));
    const a = await sb.fs.open("m.bin"), b = await sb.fs.open("m.bin");
    let pa = 0, pb = 0;
    for (let i = 0; i < 6; i++) {
      const ca = await readChunk(a); expectAt(ca, pa, `a ${i}`); pa += ca.length;
      const cb = await readChunk(b, i % 2 ? 1000 : CH); expectAt(cb, pb, `b ${i}`); pb += cb.length;
    }
    expectAt(await readChunk(a, 333), pa, "a with another length");
    pa += 333;
    expectAt(await readChunk(a), pa, "a back at 64 KiB");
    await a.close();
    expectAt(await readChunk(b), pb, "b after a closed");
  });
});

test("readahead: a handle opened write-only fails each read with EBADF; nothing is read past an error", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeFile("wo.bin", pattern(2 * CH));
    const f = await sb.fs.open("wo.bin", { write: true });
    for (let i = 0; i < 3; i++)
      await assert.rejects(f.read(new Uint8Array(CH)), (e) => { assert.equal(e.code, "EBADF"); return true; });
    assert.equal(await f.write(new Uint8Array([1])), 1); // the position is still 0: nothing was read
    await f.close();
    const back = await sb.fs.readFile("wo.bin");
    assert.equal(back[0], 1);
    expectAt(back.slice(1), 1, "rest of the file");
  });
});

// Raw JSON-RPC: the SDK waits for each answer; a client may not.
test("readahead: calls sent without waiting are answered in order, with the bytes of their turn", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeFile("p.bin", pattern(16 * CH));
    const url = process.env.DENO_SANDBOX_ENDPOINT.replace(/^http/, "ws") + `/api/v3/sandbox/${sb.id}/connect`;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` } });
    await new Promise((res, rej) => { ws.once("open", res); ws.once("error", rej); });
    try {
      const replies = new Map();
      let waiting = null;
      ws.on("message", (m) => {
        const v = JSON.parse(m.toString());
        if (v.id) { replies.set(v.id, v.result); if (waiting) waiting(); }
      });
      let next = 1;
      const call = (method, params) => { const id = next++; ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params })); return id; };
      const wait = async (ids) => {
        const end = Date.now() + 20000;
        while (!ids.every((i) => replies.has(i))) {
          if (Date.now() > end) assert.fail(`no answer to ${ids.filter((i) => !replies.has(i))}`);
          await new Promise((r) => { waiting = r; setTimeout(r, 100); });
        }
        return ids.map((i) => replies.get(i));
      };
      const [open] = await wait([call("open", { path: "p.bin", options: { read: true, write: true } })]);
      const fh = open.ok.fileHandleId;
      const bytes = (r) => Buffer.from(r.ok.data, "base64");
      // warm up: two reads one after the other, so the third is read ahead
      for (let i = 0; i < 2; i++) expectAt(bytes((await wait([call("fileRead", { fileHandleId: fh, length: CH })]))[0]), i * CH, `warm ${i}`);
      const ids = [
        call("fileRead", { fileHandleId: fh, length: CH }),            // 2 CH
        call("fileRead", { fileHandleId: fh, length: CH }),            // 3 CH
        call("fileSeek", { fileHandleId: fh, offset: -10, whence: 1 }), // 4 CH - 10
        call("fileRead", { fileHandleId: fh, length: 20 }),            // 4 CH - 10 .. + 20
        call("fileWrite", { fileHandleId: fh, data: Buffer.from("HELLO").toString("base64") }), // at 4 CH + 10
        call("fileRead", { fileHandleId: fh, length: CH }),            // 4 CH + 15
        call("fileStat", { fileHandleId: fh }),
        call("fileRead", { fileHandleId: fh, length: CH }),            // 5 CH + 15
        call("fileClose", { fileHandleId: fh }),
        call("fileRead", { fileHandleId: fh, length: CH }),            // EBADF
      ];
      const r = await wait(ids);
      expectAt(bytes(r[0]), 2 * CH, "pipelined read 0");
      expectAt(bytes(r[1]), 3 * CH, "pipelined read 1");
      assert.equal(r[2].ok.position, 4 * CH - 10);
      assert.equal(bytes(r[3]).length, 20);
      expectAt(bytes(r[3]), 4 * CH - 10, "read after the seek");
      assert.equal(r[4].ok.bytesWritten, 5);
      expectAt(bytes(r[5]), 4 * CH + 15, "read after the write");
      assert.equal(r[6].ok.size, 16 * CH);
      expectAt(bytes(r[7]), 5 * CH + 15, "read after the stat");
      assert.ok(!r[8].error, JSON.stringify(r[8]));
      assert.equal(r[9].error.code, "EBADF");
      const back = await sb.fs.readFile("p.bin");
      assert.equal(new TextDecoder().decode(back.slice(4 * CH + 10, 4 * CH + 15)), "HELLO");
    } finally {
      ws.close();
    }
  });
});

// hutchd writes a fileRead answer straight from the reply it holds when nothing is queued before
// it (ws.c ws_send_text_parts), and copies only what the socket does not take: a client that stops
// reading makes the socket take part of an answer, then nothing, and later answers queue behind.
test("fs: answers to a client that stops reading arrive whole, each with its own bytes", async () => {
  await withSandbox({}, async (sb) => {
    const N = 160; // 160 answers of ~87 KB: more than the socket buffers hold
    await sb.fs.writeFile("s.bin", pattern(CH));
    await sb.fs.writeTextFile("small.txt", "small");
    const url = process.env.DENO_SANDBOX_ENDPOINT.replace(/^http/, "ws") + `/api/v3/sandbox/${sb.id}/connect`;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` } });
    await new Promise((res, rej) => { ws.once("open", res); ws.once("error", rej); });
    try {
      const got = new Map();
      ws.on("message", (m) => { const v = JSON.parse(m.toString()); if (v.id) got.set(v.id, v.result); });
      const until = async (ids, ms = 120000) => {
        const end = Date.now() + ms;
        while (!ids.every((i) => got.has(i))) {
          if (Date.now() > end) assert.fail(`no answer to ${ids.filter((i) => !got.has(i)).slice(0, 5)}...`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      // a handle per read (one read each: none waits behind another's read-ahead)
      for (let i = 0; i < N; i++)
        ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1 + i, method: "open", params: { path: "s.bin" } }));
      await until(Array.from({ length: N }, (_, i) => 1 + i));
      ws._socket.pause(); // stop reading: hutchd's writes meet a full socket
      const ids = [];
      for (let i = 0; i < N; i++) { // read i asks for CH - i bytes: its answer's length is its own
        const id = 1000 + i;
        ids.push(id);
        ws.send(JSON.stringify({ jsonrpc: "2.0", id, method: "fileRead",
                                 params: { fileHandleId: got.get(1 + i).ok.fileHandleId, length: CH - i } }));
        if (i % 40 === 39) { // an answer of another kind between them, through wslay's queue
          ids.push(10000 + i);
          ws.send(JSON.stringify({ jsonrpc: "2.0", id: 10000 + i, method: "readTextFile", params: { path: "small.txt" } }));
        }
      }
      await new Promise((r) => setTimeout(r, 2000)); // hutchd answers until the socket is full
      ws._socket.resume();
      await until(ids);
      for (let i = 0; i < N; i++) {
        const b = Buffer.from(got.get(1000 + i).ok.data, "base64");
        assert.equal(b.length, CH - i, `read ${i}`);
        expectAt(b, 0, `read ${i}`);
      }
      for (const id of ids.filter((x) => x >= 10000)) assert.equal(got.get(id).ok, "small");
    } finally {
      ws.close();
    }
  });
});

test("readahead: a connection that leaves with reads ahead out leaves nothing behind", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeFile("l.bin", pattern(4 * CH));
    const url = process.env.DENO_SANDBOX_ENDPOINT.replace(/^http/, "ws") + `/api/v3/sandbox/${sb.id}/connect`;
    for (let round = 0; round < 3; round++) {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}` } });
      await new Promise((res, rej) => { ws.once("open", res); ws.once("error", rej); });
      const got = new Map();
      ws.on("message", (m) => { const v = JSON.parse(m.toString()); if (v.id) got.set(v.id, v.result); });
      const until = async (id) => { const end = Date.now() + 20000; while (!got.has(id)) { if (Date.now() > end) assert.fail("no answer"); await new Promise((r) => setTimeout(r, 20)); } return got.get(id); };
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "open", params: { path: "l.bin" } }));
      const fh = (await until(1)).ok.fileHandleId;
      for (let i = 0; i < 5; i++)
        ws.send(JSON.stringify({ jsonrpc: "2.0", id: 10 + i, method: "fileRead", params: { fileHandleId: fh, length: CH } }));
      if (round) await until(10); // round 0 leaves before any answer
      ws.terminate();
    }
    // the sandbox still serves reads, from the start, on a new handle
    const f = await sb.fs.open("l.bin");
    expectAt(await readChunk(f), 0, "read on a fresh handle");
    expectAt(await readChunk(f), CH, "and the next");
  });
});
