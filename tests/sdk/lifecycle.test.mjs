// Sandbox lifetimes through the SDK: session vs duration timeouts,
// connect/kill/extend, listing with labels, and client-side/auth errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, InvalidMemoryError, InvalidTokenError, Sandbox } from "@deno/sandbox";
import { requireEnv, runTag, statusOf, waitFor, withSandbox } from "./helpers.mjs";

const ID_RE = /^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$/;

test("session sandbox stops when the connection closes", async () => {
  requireEnv();
  const sb = await Sandbox.create({ labels: { suite: "lifecycle", run: runTag } });
  const id = sb.id;
  assert.match(id, ID_RE);
  assert.equal(await statusOf(id), "running");
  await sb.close();
  await waitFor(`${id} stopped`, async () => (await statusOf(id)) === "stopped");
});

test("duration sandbox: connect later, then kill", async () => {
  requireEnv();
  const sb = await Sandbox.create({ timeout: "1m" });
  const id = sb.id;
  await sb.sh`echo persisted > /tmp/mark`;
  await sb.close();
  assert.equal(await statusOf(id), "running");
  const again = await Sandbox.connect(id);
  try {
    assert.equal(again.id, id);
    assert.equal(await again.sh`cat /tmp/mark`.text(), "persisted\n");
    const until = await again.extendTimeout("5m");
    assert.ok(until instanceof Date);
    assert.ok(until.getTime() > Date.now() + 60_000, `extended to ${until.toISOString()}`);
    await again.kill();
  } finally {
    await again.close().catch(() => {});
  }
  await waitFor(`${id} stopped`, async () => (await statusOf(id)) === "stopped");
  await assert.rejects(Sandbox.connect(id));
});

test("extendTimeout returns a Date in the future", async () => {
  await withSandbox({ timeout: "30s" }, async (sb) => {
    const d = await sb.extendTimeout("5m");
    assert.ok(d instanceof Date && !Number.isNaN(d.getTime()));
    assert.ok(d.getTime() > Date.now() + 30_000, d.toISOString());
    await sb.kill();
  });
});

test("sandboxes.list filters by labels", async () => {
  requireEnv();
  const a = await Sandbox.create({ labels: { run: runTag, which: "a" } });
  const b = await Sandbox.create({ labels: { run: runTag, which: "b" } });
  try {
    const client = new Client();
    const onlyA = await client.sandboxes.list({ labels: { run: runTag, which: "a" } });
    assert.deepEqual(onlyA.map((s) => s.id), [a.id]);
    assert.equal(onlyA[0].status, "running");
    assert.deepEqual(onlyA[0].labels, { run: runTag, which: "a" });
    assert.ok(onlyA[0].createdAt instanceof Date && !Number.isNaN(onlyA[0].createdAt.getTime()));
    const both = await client.sandboxes.list({ labels: { run: runTag } });
    const ids = both.filter((s) => s.status === "running").map((s) => s.id).sort();
    assert.ok(ids.includes(a.id) && ids.includes(b.id), JSON.stringify(both));
    const none = await client.sandboxes.list({ labels: { run: "no-such-run" } });
    assert.deepEqual(none, []);
  } finally {
    await a.close().catch(() => {});
    await b.close().catch(() => {});
  }
});

test("a bad token is an InvalidTokenError", async () => {
  requireEnv();
  await assert.rejects(Sandbox.create({ token: "ddo_this-token-is-not-valid" }),
    (e) => e instanceof InvalidTokenError);
  await assert.rejects(new Client({ token: "ddo_nope" }).sandboxes.list(),
    (e) => e.status === 401);
});

test("a bad memory size is rejected by the SDK", async () => {
  requireEnv();
  await assert.rejects(Sandbox.create({ memory: "10XB" }), (e) => e instanceof InvalidMemoryError);
});

test("killing a sandbox ends its running commands", async () => {
  requireEnv();
  const sb = await Sandbox.create({ timeout: "1m" });
  try {
    const child = await sb.spawn("sleep", { args: ["300"], stdout: "null", stderr: "null" });
    const status = child.status.catch((e) => ({ error: e }));
    const t0 = Date.now();
    await sb.kill();
    await status;
    assert.ok(Date.now() - t0 < 10000);
    assert.equal(await statusOf(sb.id), "stopped");
  } finally {
    await sb.close().catch(() => {});
  }
});
