// Memory per connected SDK client (hutchd's RSS) and per idle sandbox (the
// host's MemAvailable), through the official SDK. Prints one JSON object.
// Env: DENO_* as for the SDK tests, HUTCHD_PID, HUTCH_CGROUP_NAME,
// MEM_DAEMON_CG (the memory cgroup directory hutchd runs in, alone: what
// hutchd and the kernel objects it makes for sandboxes are charged to),
// MEM_CLIENTS (default 200), MEM_SANDBOXES (default 200).
//
// 1. clients: N SDK clients connect to one sandbox and each runs a command
//    (so its session, WebSocket and JSON paths were all used), then idle.
// 2. streaming: N sandboxes, each with its client connected and a process
//    printing a line a second to it (the scale run's shape, issue 15's
//    "1,000 connected"): hutchd's RSS per client+sandbox.
// 3. idle sandboxes: the clients of part 2 close, their processes end, and
//    the sandboxes stay alive. What they hold, from the memory cgroups that
//    are charged for it (robust on a shared machine): each sandbox's own
//    cgroup (hutch-init, the page cache and kernel objects made inside it)
//    plus the growth of hutchd's cgroup (hutchd, and the namespaces, mounts,
//    loop devices and veths it makes), split into anonymous memory, kernel
//    memory and page cache (reclaimable). Beside them MemAvailable's drop,
//    which is the whole machine's: other work on it moves that number.
import fs from "node:fs";
import { cgMem, fdCount, meminfo, procStatus as status, sandboxCgDir } from "./cgmem.mjs";

const sdkUrl = new URL("../tests/sdk/node_modules/@deno/sandbox/esm/mod.js", import.meta.url);
const { Sandbox } = await import(sdkUrl.href);

const PID = Number(process.env.HUTCHD_PID);
const NC = Number(process.env.MEM_CLIENTS ?? 200);
const NS = Number(process.env.MEM_SANDBOXES ?? 200);
const PAR = 10;
const sleep = (t) => new Promise((r) => setTimeout(r, t));

function cgSum(dirs) {
  const t = { anon: 0, file: 0, kernel: 0, total: 0, n: 0 };
  for (const d of dirs) {
    const m = cgMem(d);
    if (!m) continue;
    for (const k of ["anon", "file", "kernel", "total"]) t[k] += m[k];
    t.n++;
  }
  return t;
}
const DCG = process.env.MEM_DAEMON_CG || null;
const sbCgDir = (id) => sandboxCgDir(process.env.HUTCH_CGROUP_NAME, id);

// what node itself grew by is not the sandboxes' cost
const nodeRss = () => process.memoryUsage().rss / 1024;

async function parallel(n, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(PAR, n) }, async () => {
    while (next < n) await fn(next++);
  }));
}
async function settle() {
  await sleep(1500);
  if (global.gc) global.gc();
  await sleep(500);
}

const out = { clients: NC, sandboxes: NS };

// 1. idle clients on one sandbox
{
  const host = await Sandbox.create({ timeout: "10m" });
  await host.sh`true`;
  await settle();
  const before = status(PID);
  const conns = [];
  await parallel(NC, async () => {
    const sb = await Sandbox.connect(host.id);
    await sb.sh`true`;
    conns.push(sb);
  });
  await settle();
  const after = status(PID);
  out.idle_client = { before_kib: before.rss, after_kib: after.rss, per_client_kib: (after.rss - before.rss) / NC };
  await parallel(conns.length, async (i) => { await conns[i].close().catch(() => {}); });
  await host.kill().catch(() => {});
  await host.close().catch(() => {});
}

// 2. each client with its own sandbox and a process streaming to it
const cg = process.env.HUTCH_CGROUP_NAME;
const alive = [];
{
  await settle();
  const before = status(PID), mem0 = meminfo(), node0 = nodeRss(), fd0 = fdCount(PID), dcg0 = cgMem(DCG);
  await parallel(NS, async () => {
    const sb = await Sandbox.create({ timeout: "10m" });
    const child = await sb.spawn("bash", {
      args: ["-c", "i=0; while :; do echo \"tick $i\"; i=$((i+1)); sleep 1; done"],
      stdout: "piped",
    });
    const rec = { sb, child, lines: 0 };
    (async () => {
      for await (const chunk of child.stdout) rec.lines += chunk.length > 0;
    })().catch(() => {});
    alive.push(rec);
  });
  await sleep(3000);
  await settle();
  const after = status(PID), mem1 = meminfo(), fd1 = fdCount(PID);
  out.streaming = {
    before_kib: before.rss, after_kib: after.rss,
    per_client_kib: (after.rss - before.rss) / NS,
    hutchd_fds_per_sandbox: (fd1 - fd0) / NS,
    streams_delivering: alive.filter((r) => r.lines > 0).length,
    memavailable_drop_per_sandbox_kib: (mem0.MemAvailable - mem1.MemAvailable - (nodeRss() - node0)) / NS,
  };
  // 3. the clients leave (their processes killed first), the sandboxes stay
  await parallel(alive.length, async (i) => {
    await alive[i].child.kill("SIGKILL").catch(() => {});
    await alive[i].child.status.catch(() => {});
    await alive[i].sb.close().catch(() => {});
  });
  await sleep(2000);
  await settle();
  const idle = status(PID), mem2 = meminfo(), dcg2 = cgMem(DCG);
  const sbs = cgSum(alive.map(({ sb }) => sbCgDir(sb.id)).filter(Boolean));
  const per = (k) => ((dcg0 && dcg2 ? dcg2[k] - dcg0[k] : 0) + sbs[k]) / NS;
  // each sandbox's own: its cgroup's charge, hutch-init's RSS
  let cgKib = 0, cgSeen = 0, initRss = 0, initSeen = 0, pidsIn = 0;
  for (const { sb } of alive) {
    for (const dir of [`/sys/fs/cgroup/memory/${cg}/${sb.id}`, `/sys/fs/cgroup/${cg}/${sb.id}`]) {
      let usage;
      try {
        usage = fs.readFileSync(`${dir}/memory.usage_in_bytes`, "utf8");
      } catch {
        try { usage = fs.readFileSync(`${dir}/memory.current`, "utf8"); } catch { continue; }
      }
      cgKib += Number(usage) / 1024;
      cgSeen++;
      break;
    }
    for (const f of [`/sys/fs/cgroup/pids/${cg}/${sb.id}/cgroup.procs`, `/sys/fs/cgroup/${cg}/${sb.id}/cgroup.procs`]) {
      let procs;
      try { procs = fs.readFileSync(f, "utf8").trim().split("\n").filter(Boolean); } catch { continue; }
      pidsIn += procs.length;
      for (const p of procs) {
        try {
          initRss += status(p).rss;
          initSeen++;
        } catch { /* gone */ }
      }
      break;
    }
  }
  const d = (k) => (mem0[k] - mem2[k]) / NS;
  out.idle_sandbox = {
    // charged to the sandboxes' cgroups and (growth) to hutchd's
    charged_kib_per_sandbox: per("total"),
    charged_anon_kib: per("anon"),
    charged_kernel_kib: per("kernel"),
    charged_file_kib: per("file"),
    charged_without_cache_kib: per("anon") + per("kernel"),
    daemon_cg: Boolean(dcg0 && dcg2),
    sandbox_cgroups_read: sbs.n,
    memavailable_drop_per_sandbox_kib: d("MemAvailable") - (nodeRss() - node0) / NS,
    memfree_drop_per_sandbox_kib: d("MemFree"),
    hutchd_kib_per_sandbox: (idle.rss - before.rss) / NS,
    cgroup_kib_per_sandbox: cgSeen ? cgKib / cgSeen : null,
    processes_per_sandbox: cgSeen ? pidsIn / NS : null,
    process_rss_kib_per_sandbox: initSeen ? initRss / NS : null,
    slab_unreclaimable_kib: -d("SUnreclaim"),
    slab_reclaimable_kib: -d("SReclaimable"),
    page_tables_kib: -d("PageTables"),
    kernel_stack_kib: -d("KernelStack"),
    shmem_kib: -d("Shmem"),
    percpu_kib: -d("Percpu"),
    buffers_kib: -d("Buffers"),
    cached_kib: -d("Cached"),
  };
  await parallel(alive.length, async (i) => {
    const sb = await Sandbox.connect(alive[i].sb.id).catch(() => null);
    if (sb) {
      await sb.kill().catch(() => {});
      await sb.close().catch(() => {});
    }
  });
}

console.log(JSON.stringify(out));
