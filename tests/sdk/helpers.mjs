// Shared helpers for the SDK tests: environment check, a sandbox that is
// always closed, and polling. Node 20 has no `await using`, so try/finally.
import { Client, Sandbox } from "@deno/sandbox";

export function requireEnv() {
  for (const k of ["DENO_DEPLOY_TOKEN", "DENO_SANDBOX_ENDPOINT", "DENO_DEPLOY_ENDPOINT"]) {
    if (!process.env[k]) {
      throw new Error(`${k} is not set: run these tests through scripts/test.sh (it starts hutchd)`);
    }
  }
}

export async function withSandbox(options, fn) {
  requireEnv();
  const sandbox = await Sandbox.create(options);
  try {
    return await fn(sandbox);
  } finally {
    await sandbox.close().catch(() => {});
  }
}

export async function statusOf(id) {
  const list = await new Client().sandboxes.list();
  return list.find((s) => s.id === id)?.status;
}

export async function waitFor(what, pred, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function readAll(stream) {
  const chunks = [];
  let n = 0;
  for await (const c of stream) {
    chunks.push(c);
    n += c.length;
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

export const runTag = `sdk-${process.pid}-${Date.now()}`;

// Chromium aborts a navigation with ERR_NETWORK_CHANGED when an interface
// appears in its network namespace (each new sandbox adds a veth to
// hutchd's): every browser test goes through this, which tries again then.
export async function gotoRetry(page, url) {
  for (let i = 0; ; i++) {
    try {
      return await page.goto(url);
    } catch (e) {
      if (i === 4 || !String(e.message).includes("ERR_NETWORK_CHANGED")) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
