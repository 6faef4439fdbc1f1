// exposeSsh through the official SDK (issue 8; docs/ssh.md): the hostname and
// username it returns log the real OpenSSH client into the sandbox. hutchd's
// SSH port is the default, 2222 (the SDK's answer has no port: `ssh
// username@hostname` needs -p 2222 unless the operator runs SSH on port 22).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Sandbox } from "@deno/sandbox";
import { requireEnv, withSandbox } from "./helpers.mjs";

const PORT = 2222;

// The host key, from hutch's own field of the same REST answer (the SDK reads only hostname and username).
async function hostKey(id) {
  requireEnv();
  const r = await fetch(new URL(`/api/v3/sandbox/${id}/expose/ssh`, process.env.DENO_SANDBOX_ENDPOINT), {
    method: "POST",
    headers: { Authorization: `Bearer ${process.env.DENO_DEPLOY_TOKEN}`, "Content-Type": "application/json" },
    body: "{}",
  });
  assert.equal(r.status, 200);
  return await r.json();
}

function ssh({ hostname, username }, key, command) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "hutch-ssh-"));
  const kh = path.join(dir, "known_hosts");
  writeFileSync(kh, `[${hostname}]:${PORT} ${key}\n`);
  return spawnSync("ssh", ["-F", "/dev/null", "-p", String(PORT), "-o", `UserKnownHostsFile=${kh}`,
    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null",
    "-v", `${username}@${hostname}`, command], { encoding: "utf8", timeout: 60000 });
}

test("Sandbox.create({ssh: true}) fills sandbox.ssh with a login the real ssh client uses", async () => {
  await withSandbox({ ssh: true }, async (sb) => {
    const info = sb.ssh;
    assert.match(info.username, /^[a-z2-7]{26}$/);
    assert.equal(typeof info.hostname, "string");
    const rest = await hostKey(sb.id);
    assert.equal(rest.username, info.username);
    assert.equal(rest.hostname, info.hostname);
    assert.equal(rest.port, PORT);
    await sb.fs.writeTextFile("/home/app/marker", "from the sdk");
    const r = ssh(info, rest.hostKey, "cat /home/app/marker; whoami; exit 3");
    assert.equal(r.status, 3, r.stderr);
    assert.equal(r.stdout, "from the sdkapp\n");
  });
});

test("exposeSsh() returns {hostname, username}; a wrong username is refused", async () => {
  await withSandbox({}, async (sb) => {
    const info = await sb.exposeSsh();
    assert.deepEqual(Object.keys(info).sort(), ["hostname", "username"]);
    assert.deepEqual(await sb.exposeSsh(), info); // one login per sandbox
    const { hostKey: key } = await hostKey(sb.id);
    const ok = ssh(info, key, "exit 0");
    assert.equal(ok.status, 0, `ssh: ${ok.stderr}`); // positive control
    const bad = ssh({ ...info, username: info.username.replace(/^./, (c) => (c === "a" ? "b" : "a")) }, key, "exit 0");
    assert.equal(bad.status, 255);
    assert.match(bad.stderr, /Permission denied/);
  });
});
