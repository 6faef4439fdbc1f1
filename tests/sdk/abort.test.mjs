// AbortSignal on readFile / writeFile (the SDK's `abort` RPC): the request
// rejects at once with an AbortError, the fs worker inside the sandbox stops
// the transfer, and the connection keeps working.
import { test } from "node:test";
import assert from "node:assert/strict";
import { withSandbox, waitFor } from "./helpers.mjs";

function isAbortError(e) {
  assert.equal(e?.name, "AbortError", `expected an AbortError, got ${e?.name}: ${e?.message}`);
  return true;
}

test("abort: a readFile that would never end rejects with AbortError and the worker lets go of the file", async () => {
  await withSandbox({}, async (sb) => {
    await sb.sh`mkfifo /tmp/slow`;
    // A writer that trickles one byte every 100 ms for ever, so the read never reaches its end.
    // It holds a read end of its own (O_RDWR) until the fs worker has opened the FIFO and
    // drained the first byte, then lets go: from then on the worker is the only reader, and
    // the worker letting go is what makes the next write fail with EPIPE (exit 3).
    await sb.fs.writeTextFile("/tmp/writer.py", [
      "import fcntl, os, struct, termios, time",
      "hold = os.open('/tmp/slow', os.O_RDWR)",
      "w = os.open('/tmp/slow', os.O_WRONLY)",
      "os.write(w, b'x')",
      "open('/tmp/ready', 'w').close()",
      "while struct.unpack('i', fcntl.ioctl(w, termios.FIONREAD, b'0000'))[0]: time.sleep(0.02)",
      "os.close(hold)",
      "while True:",
      "    try: os.write(w, b'x')",
      "    except BrokenPipeError: raise SystemExit(3)",
      "    time.sleep(0.1)",
    ].join("\n") + "\n");
    const writer = await sb.spawn("python3", { args: ["/tmp/writer.py"], stdout: "null", stderr: "piped" });
    await waitFor("the writer", () => sb.fs.stat("/tmp/ready").then(() => true, () => false), 10000);
    const ac = new AbortController();
    const read = sb.fs.readFile("/tmp/slow", { signal: ac.signal });
    let settled = false;
    read.then(() => (settled = true), () => (settled = true));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(settled, false, "the read of an endless FIFO finished on its own: the probe is broken");
    ac.abort();
    await assert.rejects(read, isAbortError);
    // The worker closed its end of the FIFO: the writer's next printf gets EPIPE and the loop ends.
    const st = await waitFor("the FIFO writer to end", async () => {
      const r = await Promise.race([writer.status, new Promise((ok) => setTimeout(() => ok(null), 200))]);
      return r;
    }, 10000);
    assert.equal(st.code, 3, "the writer ends only when its write fails with EPIPE");
    // The connection and the fs API still work.
    await sb.fs.writeTextFile("after.txt", "fine");
    assert.equal(await sb.fs.readTextFile("after.txt"), "fine");
  });
});

test("abort: a writeFile from a stream that never ends rejects with AbortError; what was sent stays", async () => {
  await withSandbox({}, async (sb) => {
    let pulls = 0;
    const body = new ReadableStream({
      pull(c) {
        if (pulls++ === 0) c.enqueue(new TextEncoder().encode("first chunk\n"));
        return new Promise(() => {}); // and then nothing, for ever
      },
    });
    const ac = new AbortController();
    const write = sb.fs.writeFile("/home/app/partial.txt", body, { signal: ac.signal });
    let settled = false;
    write.then(() => (settled = true), () => (settled = true));
    await waitFor("the first chunk to land", async () => {
      const r = await sb.fs.readTextFile("/home/app/partial.txt").catch(() => "");
      return r === "first chunk\n";
    }, 10000);
    assert.equal(settled, false, "the write of an endless stream finished on its own: the probe is broken");
    ac.abort();
    await assert.rejects(write, isAbortError);
    assert.equal(await sb.fs.readTextFile("/home/app/partial.txt"), "first chunk\n");
    await sb.fs.writeTextFile("/home/app/partial.txt", "replaced");
    assert.equal(await sb.fs.readTextFile("/home/app/partial.txt"), "replaced");
  });
});

test("abort: a signal that fires after the read finished changes nothing and throws nothing", async () => {
  await withSandbox({}, async (sb) => {
    await sb.fs.writeTextFile("done.txt", "done");
    const ac = new AbortController();
    assert.equal(await sb.fs.readTextFile("done.txt", { signal: ac.signal }), "done");
    const unhandled = [];
    const onUnhandled = (e) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    try {
      ac.abort(); // the SDK still sends `abort` for an id that names nothing now
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
    assert.deepEqual(unhandled.map(String), [], "the abort RPC failed");
    assert.equal(await sb.fs.readTextFile("done.txt"), "done");
  });
});
