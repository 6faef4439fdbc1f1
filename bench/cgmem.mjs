// What the memory benches read from memory cgroups (mem_bench.mjs, fivek_bench.mjs).
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
