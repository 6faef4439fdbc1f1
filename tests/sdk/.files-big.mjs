import { Sandbox } from "@deno/sandbox";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
const pid = Number(process.env.HPID);
const rss = () => { const s = readFileSync(`/proc/${pid}/status`, "utf8"); return Number(/VmRSS:\s+(\d+)/.exec(s)[1]) / 1024; };
const SIZE = 200 * 1024 * 1024, CH = 1 << 20;
const chunk = new Uint8Array(CH); for (let i = 0; i < CH; i++) chunk[i] = (i * 2654435761) >>> 24;
const sb = await Sandbox.create();
try {
  const r0 = rss(); let peak = r0; const t = setInterval(() => { peak = Math.max(peak, rss()); }, 50);
  const h = createHash("sha256");
  let sent = 0;
  const src = new ReadableStream({ pull(c) { if (sent >= SIZE) { c.close(); return; } const b = chunk.slice(); b[0] = sent / CH; h.update(b); c.enqueue(b); sent += CH; } }, { highWaterMark: 0 });
  let t0 = Date.now();
  await sb.fs.writeFile("big.bin", src);
  const tw = (Date.now() - t0) / 1000;
  const st = await sb.fs.stat("big.bin");
  const want = h.digest("hex");
  const peakW = peak;
  t0 = Date.now();
  const f = await sb.fs.open("big.bin");
  const h2 = createHash("sha256"); let n = 0;
  for await (const c of f.readable) { h2.update(c); n += c.length; }
  const tr = (Date.now() - t0) / 1000;
  const peakR = peak;
  t0 = Date.now();
  let tr2 = -1, ok3 = "skipped";
  if (process.env.READFILE && false) { const all = await sb.fs.readFile("big.bin"); tr2 = (Date.now() - t0) / 1000; ok3 = createHash("sha256").update(all).digest("hex") === want; }
  clearInterval(t);
  console.log(JSON.stringify({ size: st.size, writeMBs: (200 / tw).toFixed(1), readHandleMBs: (200 / tr).toFixed(1), readFileMBs: tr2 > 0 ? (200/tr2).toFixed(1) : null,
    writeOk: true, readOk: h2.digest("hex") === want && n === SIZE, readFileOk: ok3, rss0: r0.toFixed(1), peakWriteMiB: (peakW - r0).toFixed(1), peakReadMiB: (peakR - r0).toFixed(1), peakAll: (peak - r0).toFixed(1) }));
} finally { await sb.close(); }
