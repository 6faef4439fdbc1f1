// hutch's static file server for `static` runtimes (docs/apps.md): runs in
// an app instance's sandbox as `deno run --allow-read=ROOT --allow-net` of a
// data: URL, embedded in hutchd at build time. Arguments: ROOT (the
// revision's static directory), BASE (the app directory ROOT must stay in,
// also when ROOT itself is a symlink), PORT, and "spa" or "". Nothing of it
// is written into the revision's files.
//
// GET and HEAD only (405 otherwise). A path is percent-decoded once and
// split at "/": a segment that is "." or "..", or holds a NUL or a
// backslash, is a 400 (after decoding: "%2e%2e" and "..%2f" count too).
// Deno's --allow-read does not follow symlinks, so every file is resolved
// with realPath and must stay under ROOT's real path, else 404 (as if it did
// not exist). A directory answers with its index.html (a 301 to the path
// with a "/" first, relative so a prefix in front of the app stays). A
// missing file is 404, or ROOT/index.html with 200 when "spa" is set.

const [rootArg, baseArg, portArg, mode] = Deno.args;
const spa = mode === "spa";
let root;
try {
  root = await Deno.realPath(rootArg);
  const base = await Deno.realPath(baseArg);
  if (root !== base && !root.startsWith(base + "/")) throw new Error(`it leads out of ${baseArg}`);
  if (!(await Deno.stat(root)).isDirectory) throw new Error("not a directory");
} catch (e) {
  console.error(`hutch static server: the static directory ${rootArg} cannot be served: ${e.message}`);
  Deno.exit(66);
}

const types = {
  html: "text/html; charset=utf-8", htm: "text/html; charset=utf-8", css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8", mjs: "text/javascript; charset=utf-8", cjs: "text/javascript; charset=utf-8",
  json: "application/json", map: "application/json", webmanifest: "application/manifest+json",
  txt: "text/plain; charset=utf-8", md: "text/markdown; charset=utf-8", csv: "text/csv; charset=utf-8",
  xml: "application/xml", svg: "image/svg+xml", png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg",
  gif: "image/gif", webp: "image/webp", avif: "image/avif", ico: "image/x-icon", bmp: "image/bmp",
  woff: "font/woff", woff2: "font/woff2", ttf: "font/ttf", otf: "font/otf", wasm: "application/wasm",
  pdf: "application/pdf", mp4: "video/mp4", webm: "video/webm", mp3: "audio/mpeg", ogg: "audio/ogg",
  wav: "audio/wav", zip: "application/zip", gz: "application/gzip",
};

function typeOf(path) {
  const base = path.slice(path.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  return (dot > 0 && types[base.slice(dot + 1).toLowerCase()]) || "application/octet-stream";
}

const text = (status, body, extra = {}) =>
  new Response(body + "\n", { status, headers: { "content-type": "text/plain; charset=utf-8", ...extra } });

// The real path of ROOT/rel if it exists and stays under ROOT, else null.
async function inside(rel) {
  try {
    const real = await Deno.realPath(rel ? `${root}/${rel}` : root);
    return real === root || real.startsWith(root + "/") ? real : null;
  } catch {
    return null;
  }
}

async function file(real, head, status = 200) {
  let f;
  try {
    f = await Deno.open(real, { read: true });
    const st = await f.stat();
    if (!st.isFile) {
      f.close();
      return null;
    }
    const headers = { "content-type": typeOf(real), "content-length": String(st.size) };
    if (st.mtime) headers["last-modified"] = st.mtime.toUTCString();
    if (head) {
      f.close();
      return new Response(null, { status, headers });
    }
    return new Response(f.readable, { status, headers });
  } catch {
    f?.close();
    return null;
  }
}

async function handle(req) {
  if (req.method !== "GET" && req.method !== "HEAD") return text(405, "method not allowed", { allow: "GET, HEAD" });
  const head = req.method === "HEAD";
  const url = new URL(req.url);
  let path;
  try {
    path = decodeURIComponent(url.pathname);
  } catch {
    return text(400, "bad path: invalid percent-encoding");
  }
  const segs = path.split("/").filter((s) => s !== "");
  for (const s of segs) {
    if (s === "." || s === ".." || s.includes("\0") || s.includes("\\")) return text(400, "bad path");
  }
  const rel = segs.join("/");
  const real = await inside(rel);
  if (real) {
    let st;
    try {
      st = await Deno.stat(real);
    } catch {
      st = null;
    }
    if (st?.isDirectory) {
      if (!path.endsWith("/")) {
        return new Response(null, { status: 301, headers: { location: `./${segs.at(-1)}/${url.search}` } });
      }
      const index = await inside(rel ? `${rel}/index.html` : "index.html");
      const r = index && (await file(index, head));
      if (r) return r;
    } else if (st?.isFile) {
      const r = await file(real, head);
      if (r) return r;
    }
  }
  if (spa) {
    const index = await inside("index.html");
    const r = index && (await file(index, head));
    if (r) return r;
  }
  return text(404, "not found");
}

Deno.serve({ hostname: "0.0.0.0", port: Number(portArg) || 8000, onListen() {} }, async (req) => {
  try {
    return await handle(req);
  } catch (e) {
    console.error(`hutch static server: ${req.method} ${new URL(req.url).pathname}: ${e.message}`);
    return text(500, "internal error");
  }
});
