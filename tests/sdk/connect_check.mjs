// Used by tests/integration/test_live_restore.py (not a test file itself):
// connects to an existing sandbox with the official SDK, as a client would
// right after hutchd restarted, and prints what it sees as one JSON line.
// Usage: node connect_check.mjs ID (DENO_* variables set as for the SDK tests).
import { Sandbox } from "@deno/sandbox";

const id = process.argv[2];
const sb = await Sandbox.connect(id);
try {
  const keep = await sb.sh`cat /tmp/keep`.text();
  const greeting = await sb.env.get("GREETING");
  const extended = await sb.extendTimeout("10m");
  console.log(JSON.stringify({ id: sb.id, keep, greeting, extended: extended.getTime() }));
} finally {
  await sb.close();
}
