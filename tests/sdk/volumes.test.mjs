// Volumes and snapshots through the SDK (issue 9): Client().volumes and
// .snapshots, Volume/Snapshot objects, pagination and search, a file that
// outlives its sandbox on a volume, and booting from a snapshot.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, Sandbox, Snapshot, Volume } from "@deno/sandbox";
import { requireEnv, runTag, statusOf, waitFor, withSandbox } from "./helpers.mjs";

const VOL_RE = /^vol_[a-z]{3}_[0-9a-hjkmnp-z]{20}$/;
const SNP_RE = /^snp_[a-z]{3}_[0-9a-hjkmnp-z]{20}$/;
const tag = runTag.toLowerCase().replace(/[^a-z0-9]/g, "").slice(-8) || "x";

async function eventually(fn, what) {
  // a volume whose sandbox just closed is free once that sandbox has stopped
  let last;
  for (let i = 0; i < 50; i++) {
    try {
      return await fn();
    } catch (e) {
      last = e;
      if (e?.status !== 409) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`${what}: ${last}`);
}

test("volumes: create, get, list with pagination and search, delete", async () => {
  requireEnv();
  const client = new Client();
  const slugs = [0, 1, 2].map((i) => `sdk-${tag}-p${i}`);
  const made = [];
  for (const slug of slugs) made.push(await client.volumes.create({ slug, region: "ord", capacity: "32MiB" }));
  const v = made[0];
  assert.ok(v instanceof Volume);
  assert.match(v.id, VOL_RE);
  assert.equal(v.slug, slugs[0]);
  assert.equal(v.region, "ord");
  assert.equal(v.capacity, 32 * 1024 * 1024);
  assert.equal(v.isBootable, false);
  assert.equal(v.baseSnapshot, null);
  assert.equal(typeof v.estimatedAllocatedSize, "number");
  assert.equal(typeof v.estimatedFlattenedSize, "number");
  const got = await Volume.get(slugs[1]);
  assert.equal(got.id, made[1].id);
  assert.equal((await client.volumes.get(made[2].id)).slug, slugs[2]);
  assert.equal(await client.volumes.get(`sdk-${tag}-none`), null);

  const page = await client.volumes.list({ limit: 2, search: `sdk-${tag}-p` });
  assert.equal(page.items.length, 2);
  assert.equal(page.hasMore, true);
  const ids = [];
  for await (const x of page) ids.push(x.id);
  assert.deepEqual(ids, made.map((m) => m.id));
  const one = await client.volumes.list({ search: slugs[1] });
  assert.deepEqual(one.items.map((x) => x.slug), [slugs[1]]);
  assert.equal(one.hasMore, false);

  await assert.rejects(client.volumes.create({ slug: slugs[0], region: "ord", capacity: "32MiB" }),
    (e) => e.status === 409 && /already used/.test(e.message));
  await assert.rejects(client.volumes.create({ slug: "Bad_Slug", region: "ord", capacity: "32MiB" }),
    (e) => e.status === 400 && e.code === "INVALID_SLUG");
  for (const m of made) await client.volumes.delete(m.id);
  assert.equal(await client.volumes.get(made[0].id), null);
});

test("a file written on a volume in one sandbox is read in the next", async () => {
  requireEnv();
  const client = new Client();
  const slug = `sdk-${tag}-data`;
  const vol = await client.volumes.create({ slug, region: "ord", capacity: "64MiB" });
  try {
    let first;
    await withSandbox({ volumes: { "/data": slug } }, async (sb) => {
      first = sb.id;
      await sb.sh`echo from-first > /data/note && sync`;
      assert.equal(await sb.sh`stat -c %U /data/note`.text(), "app\n");
      // one running sandbox per volume: the refusal names the holder
      await assert.rejects(Sandbox.create({ volumes: { "/data": slug } }), (e) => /attached to running sandbox/.test(String(e?.message)));
    });
    // close() does not wait for the sandbox to stop; the volume is free once it has
    await waitFor(`${first} stopped`, async () => (await statusOf(first)) === "stopped");
    await withSandbox({ volumes: { "/data": vol.id } }, async (sb) => {
      assert.equal(await sb.sh`cat /data/note`.text(), "from-first\n");
    });
  } finally {
    await eventually(() => client.volumes.delete(vol.id), "delete");
  }
});

test("snapshots: of a bootable volume, get/list/delete, and booting from one", async () => {
  requireEnv();
  const client = new Client();
  const vslug = `sdk-${tag}-boot`, sslug = `sdk-${tag}-snap`;
  const vol = await client.volumes.create({ slug: vslug, region: "ord", capacity: "1GiB", from: "builtin:debian-13" });
  assert.equal(vol.isBootable, true);
  let snap;
  try {
    let booted;
    await withSandbox({ root: vslug }, async (sb) => {
      booted = sb.id;
      await sb.sh`echo baked | sudo tee /opt/baked >/dev/null`;
    });
    await waitFor(`${booted} stopped`, async () => (await statusOf(booted)) === "stopped");
    snap = await eventually(() => Snapshot.create(vslug, { slug: sslug }), "snapshot");
    assert.ok(snap instanceof Snapshot);
    assert.match(snap.id, SNP_RE);
    assert.equal(snap.slug, sslug);
    assert.equal(snap.region, "ord");
    assert.equal(snap.isBootable, true);
    assert.deepEqual(snap.volume, { id: vol.id, slug: vslug });
    assert.ok(snap.flattenedSize > 100 * 1024 * 1024, `flattenedSize ${snap.flattenedSize}`);
    assert.equal(typeof snap.allocatedSize, "number");
    assert.equal((await Snapshot.get(snap.id)).slug, sslug);
    const listed = await client.snapshots.list({ search: sslug });
    assert.deepEqual(listed.items.map((s) => s.id), [snap.id]);
    // two sandboxes from one snapshot: each sees the snapshot and only its own writes
    const a = await Sandbox.create({ root: sslug }), b = await Sandbox.create({ root: snap.id });
    try {
      await a.sh`echo a > /tmp/mine`;
      await b.sh`echo b > /tmp/mine`;
      assert.equal(await a.sh`cat /opt/baked /tmp/mine`.text(), "baked\na\n");
      assert.equal(await b.sh`cat /opt/baked /tmp/mine`.text(), "baked\nb\n");
      await assert.rejects(client.snapshots.delete(sslug), (e) => e.status === 409 && /running sandbox/.test(e.message));
    } finally {
      await a.close();
      await b.close();
    }
    await eventually(() => client.snapshots.delete(sslug), "delete snapshot");
    snap = null;
    assert.equal(await client.snapshots.get(sslug), null);
  } finally {
    if (snap) await eventually(() => client.snapshots.delete(snap.id), "delete snapshot").catch(() => {});
    await eventually(() => client.volumes.delete(vol.id), "delete volume");
  }
});
