// The README's Deno example (deno_example.ts) under Deno itself, as a Deno
// user runs it: deno 2.9.6 from npm (pinned in package.json and the
// lockfile), the SDK from node_modules, TypeScript, `await using`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { requireEnv } from "./helpers.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));

test("the README's Deno example runs under deno run -NE with await using", async () => {
  requireEnv();
  const home = mkdtempSync(path.join(os.tmpdir(), "hutch-deno-host-"));
  const env = {
    PATH: process.env.PATH, HOME: home, DENO_DIR: path.join(home, "deno"), DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1",
    DENO_DEPLOY_TOKEN: process.env.DENO_DEPLOY_TOKEN, DENO_SANDBOX_ENDPOINT: process.env.DENO_SANDBOX_ENDPOINT,
    DENO_DEPLOY_ENDPOINT: process.env.DENO_DEPLOY_ENDPOINT,
  };
  const deno = path.join(here, "node_modules", ".bin", "deno");
  const r = await new Promise((resolve) =>
    execFile(deno, ["run", "-NE", "--node-modules-dir=manual", "deno_example.ts"], { cwd: here, env, timeout: 300000 },
      (err, stdout, stderr) => resolve({ code: err ? err.code ?? err.signal : 0, stdout, stderr })));
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "eval: 2\nrepl: 50\nfetch: 200 hello from /deno\n");
});
