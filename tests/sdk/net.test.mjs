// allowNet through the official SDK. scripts/test.sh gives the daemon an
// upstream: an HTTP host in a netns of its own, named by --resolve, whose
// name is HUTCH_NET_TEST_HOST. Without it this test fails: it never skips.
import { test } from "node:test";
import assert from "node:assert/strict";
import { withSandbox } from "./helpers.mjs";

const HOST = process.env.HUTCH_NET_TEST_HOST;

test("allowNet: the allowed host answers, another name does not resolve", async () => {
  assert.ok(HOST, "HUTCH_NET_TEST_HOST is not set: run this through scripts/test.sh (it starts the upstream)");
  await withSandbox({ allowNet: [HOST] }, async (sandbox) => {
    const ok = await sandbox.sh`curl -sS -m 5 -w " %{http_code}" http://${HOST}/`.text();
    assert.match(ok.trim(), /^hello from \S+\s+200$/);
    const blocked = await sandbox.sh`sh -c ${"getent hosts not-allowed.invalid; echo rc=$?"}`.text();
    assert.match(blocked, /rc=2/);
  });
});

test("allowNet [] means no network interface but loopback", async () => {
  await withSandbox({ allowNet: [] }, async (sandbox) => {
    const out = await sandbox.sh`ls /sys/class/net 2>/dev/null; python3 -c ${"import socket;print([n for _, n in socket.if_nameindex()])"}`.text();
    assert.doesNotMatch(out, /eth0/);
  });
});

test("allowNet with an invalid entry is refused at create", async () => {
  await assert.rejects(() => withSandbox({ allowNet: ["exa mple.com"] }, async () => {}));
});
