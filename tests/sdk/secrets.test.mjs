// Secrets through the official SDK (issue 5): the sandbox sees a placeholder,
// the same in env.get and in every process; it trusts hutch's interception
// CA; invalid secrets are refused at create without echoing the value.
// (Interception itself is tested with a real HTTPS upstream in
// tests/integration/test_secrets.py.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { withSandbox } from "./helpers.mjs";

const VALUE = "sk-sdk-test-" + "4b8e1f0a9c7d2e3f5a6b";

test("secrets: the sandbox holds a placeholder, never the value", async () => {
  await withSandbox({ secrets: { API_KEY: { hosts: ["api.example.invalid"], value: VALUE } } }, async (sandbox) => {
    const ph = await sandbox.env.get("API_KEY");
    assert.ok(ph && ph !== VALUE && ph.length === VALUE.length, ph);
    const inside = await sandbox.sh`printf %s "$API_KEY"`.text();
    assert.equal(inside, ph);
    const all = await sandbox.sh`sh -c ${"cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; env"}`.text();
    assert.ok(!all.includes(VALUE));
  });
});

test("secrets: every TLS library is pointed at the bundle with hutch's CA", async () => {
  await withSandbox({ secrets: { API_KEY: { hosts: ["api.example.invalid"], value: VALUE } } }, async (sandbox) => {
    const out = await sandbox.sh`sh -c ${'for v in SSL_CERT_FILE NODE_EXTRA_CA_CERTS REQUESTS_CA_BUNDLE CURL_CA_BUNDLE DENO_CERT GIT_SSL_CAINFO; do printenv $v; done; tail -c 1200 /etc/ssl/certs/ca-certificates.crt | grep -c "BEGIN CERTIFICATE"'}`.text();
    const lines = out.trim().split("\n");
    assert.deepEqual(lines.slice(0, 6), Array(6).fill("/etc/ssl/certs/ca-certificates.crt"));
  });
});

test("secrets: invalid ones are refused without the value in the error", async () => {
  for (const secrets of [
    { API_KEY: { hosts: [], value: VALUE } },
    { API_KEY: { hosts: ["203.0.113.1"], value: VALUE } },
    { "BAD-NAME": { hosts: ["api.example.invalid"], value: VALUE } },
    { API_KEY: { hosts: ["api.example.invalid"], value: "short" } },
  ]) {
    await assert.rejects(() => withSandbox({ secrets }, async () => {}), (e) => !String(e).includes(VALUE));
  }
});
