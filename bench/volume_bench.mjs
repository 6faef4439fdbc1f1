// Volumes and snapshots through the official SDK (issue 9): create -> first
// output booting from a snapshot beside booting the builtin image (both cold),
// the time to snapshot a volume with 1 GB written, and write throughput on a
// volume beside the sandbox's own disk. Prints one JSON object.
// Env: DENO_* as for the SDK tests, BENCH_RUNS (default 30).
const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Client, Sandbox } = await import(sdkUrl.href);

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
const now = () => process.hrtime.bigint();
const sleep = (n) => new Promise((r) => setTimeout(r, n));
const client = new Client();
const tag = `b${process.pid}`;

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, p50_ms: pick(0.5), p99_ms: pick(0.99), mean_ms: s.reduce((a, b) => a + b, 0) / s.length };
}

// A sandbox's volume is free once that sandbox has stopped (close() does not wait).
async function eventually(fn, what, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > end) throw new Error(`${what}: ${e?.message ?? e}`);
      await sleep(200);
    }
  }
}

// the SDK quotes the interpolation: one argument to bash -c
const shOut = (sb, script) => sb.sh`bash -c ${script}`.text();

const out = {};
const made = { volumes: [], snapshots: [] };
try {
  // 1. boot from a snapshot vs the builtin image. allowNet: [] on both: no
  // network interface, and so no warm pool for either (a root never comes
  // from the pool); what is compared is the root file system's cost.
  const boot = await client.volumes.create({ slug: `${tag}-boot`, region: "loc", capacity: "2GiB", from: "builtin:debian-13" });
  made.volumes.push(boot.id);
  const snap = await client.volumes.snapshot(boot.id, { slug: `${tag}-snap` });
  made.snapshots.push(snap.id);
  const img = [], fromSnap = [];
  for (let i = 0; i < RUNS; i++) {
    for (const [opts, xs] of [[{ allowNet: [] }, img], [{ allowNet: [], root: snap.slug }, fromSnap]]) {
      const t0 = now();
      const sb = await Sandbox.create(opts);
      await sb.sh`true`;
      xs.push(ms(t0));
      await sb.close();
      await sleep(150);
    }
  }
  out.boot_image = stats(img);
  out.boot_snapshot = stats(fromSnap);

  // 2. snapshot of a volume with 1 GB written (the sandbox stopped: a mounted
  // file system's image is not snapshotted)
  const vol = await client.volumes.create({ slug: `${tag}-gb`, region: "loc", capacity: "1500MiB" });
  made.volumes.push(vol.id);
  {
    const sb = await Sandbox.create({ volumes: { "/data": vol.slug }, allowNet: [] });
    try {
      await shOut(sb, "head -c 1000000000 /dev/urandom > /data/gb && sync");
    } finally {
      await sb.close();
    }
  }
  const snaps = [];
  for (let i = 0; i < Math.min(RUNS, 10); i++) {
    const t0 = now();
    const s = await eventually(() => client.volumes.snapshot(vol.id, { slug: `${tag}-gb-${i}` }), "snapshot");
    snaps.push(ms(t0));
    await client.snapshots.delete(s.id);
  }
  // the first try may have waited for the sandbox to stop: keep the later ones
  out.snapshot_1gb = stats(snaps.length > 1 ? snaps.slice(1) : snaps);
  out.snapshot_1gb.written_bytes = 1e9;

  // 3. write throughput: 256 MB with fsync, volume vs the sandbox's own disk
  {
    const sb = await eventually(() => Sandbox.create({ volumes: { "/data": vol.slug }, allowNet: [] }), "attach");
    try {
      await shOut(sb, "rm -f /data/gb");
      const mbs = { volume: [], own_disk: [] };
      for (let i = 0; i < 5; i++) {
        for (const [key, dir] of [["volume", "/data"], ["own_disk", "/home/app"]]) {
          const t = await shOut(sb, `s=$(date +%s%N); dd if=/dev/zero of=${dir}/w bs=1M count=256 conv=fsync status=none; ` +
            `e=$(date +%s%N); rm -f ${dir}/w; echo $(( (e - s) / 1000 ))`);
          mbs[key].push(256 * 1048576 / 1e6 / (Number(t.trim()) / 1e6));
        }
      }
      const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      out.write = { mb: 268, volume_mbs: med(mbs.volume), own_disk_mbs: med(mbs.own_disk), runs: 5 };
    } finally {
      await sb.close();
    }
  }
} finally {
  for (const id of made.snapshots) await eventually(() => client.snapshots.delete(id), "delete snapshot").catch(() => {});
  for (const id of made.volumes) await eventually(() => client.volumes.delete(id), "delete volume").catch(() => {});
}
console.log(JSON.stringify(out));
