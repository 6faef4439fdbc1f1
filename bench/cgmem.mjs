// What the benches (and the scale test) read from cgroups and /proc (mem_bench.mjs, fivek_bench.mjs,
// fair_bench.mjs, tests/scale).
import fs from "node:fs";

// A memory cgroup's charge in KiB: anon, page cache (file), kernel, total.
export function cgMem(dir) {
  if (!dir) return null;
  const st = {};
  try {
    for (const l of fs.readFileSync(`${dir}/memory.stat`, "utf8").split("\n")) {
      const [k, v] = l.split(" ");
      if (k) st[k] = Number(v);
    }
  } catch { return null; }
  let kernel;
  if ("kernel" in st) kernel = st.kernel; // v2
  else {
    try { kernel = Number(fs.readFileSync(`${dir}/memory.kmem.usage_in_bytes`, "utf8")); } catch { kernel = 0; }
  }
  const anon = st.anon ?? st.rss ?? 0, file = st.file ?? st.cache ?? 0;
  return { anon: anon / 1024, file: file / 1024, kernel: kernel / 1024, total: (anon + file + kernel) / 1024 };
}

// A sandbox's memory cgroup under hutchd's cgroup name cg (v1 or v2), or undefined.
export const sandboxCgDir = (cg, id) => [`/sys/fs/cgroup/memory/${cg}/${id}`, `/sys/fs/cgroup/${cg}/${id}`]
  .find((d) => fs.existsSync(`${d}/memory.stat`));

// A process's memory from /proc/PID/status, KiB (and its threads).
export function procStatus(pid) {
  const t = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (k) => Number((new RegExp(`${k}:\\s+(\\d+) kB`).exec(t) || [])[1] ?? NaN);
  return { rss: kib("VmRSS"), anon: kib("RssAnon"), threads: Number((/Threads:\s+(\d+)/.exec(t) || [])[1] ?? NaN) };
}
// /proc/meminfo as { MemAvailable: KiB, ... }.
export function meminfo() {
  const o = {};
  for (const l of fs.readFileSync("/proc/meminfo", "utf8").split("\n")) {
    const m = /^(\w+):\s+(\d+)/.exec(l);
    if (m) o[m[1]] = Number(m[2]);
  }
  return o;
}
// How many descriptors a process holds.
export const fdCount = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;

// hutch-init of sandbox id under hutchd cgroup name: the process of its memory
// cgroup that is PID 1 of its pid namespace (NSpid: HOSTPID 1; its cpu
// cgroup may be the agents'); 0 when it cannot be read
export function agentPid(name, id) {
  if (!name) return 0;
  for (const ctl of ["memory", "."]) {
    let procs;
    try {
      procs = fs.readFileSync(`/sys/fs/cgroup/${ctl}/${name}/${id}/cgroup.procs`, "utf8").split("\n").filter(Boolean);
    } catch {
      continue;
    }
    for (const p of procs) {
      try {
        const ns = /^NSpid:\s+(.*)$/m.exec(fs.readFileSync(`/proc/${p}/status`, "utf8"));
        if (ns && ns[1].trim().split(/\s+/).pop() === "1") return Number(p);
      } catch { /* gone */ }
    }
  }
  return 0;
}
