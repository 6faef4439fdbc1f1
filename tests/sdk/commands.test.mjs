// The SDK's command API against hutchd: sh templates and escaping, exit codes,
// streams, stdin, signals, env, sudo and OOM reporting.
//
// Note: in @deno/sandbox 0.13.2 each SandboxCommandBuilder modifier starts
// from a fresh state (sh`x`.noThrow().stdout("piped") forgets noThrow, and
// .text() forgets .sudo()), so every chain below uses one modifier only.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { KillController, Sandbox, SandboxCommandError } from "@deno/sandbox";
import { readAll, requireEnv, runTag, withSandbox } from "./helpers.mjs";

let sandbox;
before(async () => {
  requireEnv();
  sandbox = await Sandbox.create({ memory: "1GiB", labels: { suite: "commands", run: runTag } });
});
after(async () => {
  await sandbox?.close().catch(() => {});
});

test("the issue's example: ls -lh /", async () => {
  const text = await sandbox.sh`ls -lh /`.text();
  for (const dir of ["bin", "etc", "home", "proc", "tmp", "usr"]) {
    assert.match(text, new RegExp(`\\s${dir}( |$)`, "m"), text);
  }
});

test("sh escapes substitutions", async () => {
  await sandbox.sh`echo ${"a b; c"} > ${"file with spaces.txt"}`;
  const back = await sandbox.sh`cat ${"file with spaces.txt"}`.text();
  assert.equal(back, "a b; c\n");
  const evil = "$(touch /tmp/pwned) `touch /tmp/pwned2` ' \" \\ * ?";
  assert.equal(await sandbox.sh`printf %s ${evil}`.text(), evil);
  const r = await sandbox.sh`test -e /tmp/pwned || test -e /tmp/pwned2`.noThrow();
  assert.equal(r.status.code, 1, "command substitution in an argument was executed");
});

test("arrays become separate escaped arguments", async () => {
  const names = ["one two", "three", "it's"];
  await sandbox.sh`mkdir -p arr && cd arr && touch ${names}`;
  const listed = (await sandbox.sh`ls -1 arr`.text()).split("\n").filter(Boolean).sort();
  assert.deepEqual(listed, [...names].sort());
});

test("exit code with noThrow", async () => {
  const r = await sandbox.sh`exit 3`.noThrow();
  assert.equal(r.status.code, 3);
  assert.equal(r.status.success, false);
});

test("non-zero exit throws SandboxCommandError with the code", async () => {
  await assert.rejects(
    async () => { await sandbox.sh`echo oops >&2; exit 3`.stderr("piped"); },
    (e) => e instanceof SandboxCommandError && e.code === 3 && /oops/.test(e.message),
  );
});

test(".json()", async () => {
  const v = await sandbox.sh`echo '{"a":[1,2,{"b":null}],"s":"x"}'`.json();
  assert.deepEqual(v, { a: [1, 2, { b: null }], s: "x" });
});

test("stdout and stderr are separate", async () => {
  const child = await sandbox.spawn("bash", { args: ["-c", "echo out; echo err >&2"], stdout: "piped", stderr: "piped" });
  const r = await child.output();
  assert.equal(r.stdoutText, "out\n");
  assert.equal(r.stderrText, "err\n");
  assert.equal(r.status.code, 0);
});

test("spawn with piped stdin, read back through cat", async () => {
  const child = await sandbox.spawn("cat", { stdin: "piped", stdout: "piped", stderr: "piped" });
  const w = child.stdin.getWriter();
  const payload = "line one\nline two\n" + "z".repeat(200000) + "\n";
  await w.write(new TextEncoder().encode(payload));
  await w.close();
  const out = await child.output();
  assert.equal(out.status.code, 0);
  assert.equal(out.stdoutText.length, payload.length);
  assert.equal(out.stdoutText, payload);
});

test("5 MB of stdout arrives byte-exact", async () => {
  const child = await sandbox.spawn("bash", {
    args: ["-c", "head -c 5000000 /dev/zero | tr '\\0' x"],
    stdout: "piped",
    stderr: "piped",
  });
  const bytes = await readAll(child.stdout);
  const st = await child.status;
  assert.equal(st.code, 0);
  assert.equal(bytes.length, 5000000);
  assert.ok(bytes.every((b) => b === 0x78), "every byte is 'x'");
});

test("binary output is not mangled", async () => {
  const r = await sandbox.sh`python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4)"`
    .stdout("piped").result();
  assert.equal(r.stdout.length, 1024);
  for (let i = 0; i < 1024; i++) assert.equal(r.stdout[i], i % 256);
});

test("KillController stops a running command", async () => {
  const kc = new KillController();
  const t0 = Date.now();
  const p = sandbox.sh`sleep 30`.signal(kc.signal).result();
  setTimeout(() => kc.kill("SIGKILL"), 500);
  await assert.rejects(p, (e) => e instanceof SandboxCommandError);
  assert.ok(Date.now() - t0 < 10000, "killed promptly");
});

test("AbortSignal stops a running command", async () => {
  const t0 = Date.now();
  await assert.rejects(sandbox.sh`sleep 30`.signal(AbortSignal.timeout(500)).result(),
    (e) => e instanceof SandboxCommandError);
  assert.ok(Date.now() - t0 < 10000, "aborted promptly");
});

test("spawn with an AbortSignal", async () => {
  const ac = new AbortController();
  const child = await sandbox.spawn("sleep", { args: ["30"], signal: ac.signal, stdout: "null", stderr: "null" });
  setTimeout(() => ac.abort(), 300);
  const st = await child.status;
  assert.equal(st.success, false);
});

test("child.kill('SIGKILL') reports the signal", async () => {
  const child = await sandbox.spawn("sleep", { args: ["30"], stdout: "null", stderr: "null" });
  assert.ok(child.pid > 0);
  await child.kill("SIGKILL");
  const st = await child.status;
  assert.equal(st.signal, "SIGKILL");
  assert.equal(st.success, false);
  // killing an exited process is not an error
  await child.kill("SIGKILL");
});

test("env set/get/delete/toObject is seen by later spawns", async () => {
  await sandbox.env.set("HUTCH_T", "v a l");
  assert.equal(await sandbox.env.get("HUTCH_T"), "v a l");
  const all = await sandbox.env.toObject();
  assert.equal(all.HUTCH_T, "v a l");
  assert.equal(all.HOME, "/home/app");
  assert.equal(await sandbox.sh`printenv HUTCH_T`.text(), "v a l\n");
  await sandbox.env.delete("HUTCH_T");
  assert.equal(await sandbox.env.get("HUTCH_T"), undefined);
  const r = await sandbox.sh`printenv HUTCH_T`.noThrow();
  assert.equal(r.status.code, 1);
});

test("spawn env, clearEnv and cwd", async () => {
  const a = await (await sandbox.spawn("bash", {
    args: ["-c", "echo $X:$PWD"], env: { X: "42" }, cwd: "/tmp", stdout: "piped", stderr: "piped",
  })).output();
  assert.equal(a.stdoutText, "42:/tmp\n");
  const b = await (await sandbox.spawn("/usr/bin/env", { clearEnv: true, env: { ONLY: "1" }, stdout: "piped" })).output();
  assert.equal(b.stdoutText.trim(), "ONLY=1");
});

test("spawn of a missing command fails cleanly", async () => {
  // either spawn itself rejects or the process reports failure (like exit 127)
  let failed = false;
  try {
    const c = await sandbox.spawn("/no/such/binary", { stdout: "null", stderr: "null" });
    failed = !(await c.status).success;
  } catch {
    failed = true;
  }
  assert.ok(failed);
  assert.equal(await sandbox.sh`echo still fine`.text(), "still fine\n");
});

test("sudo, whoami, pwd", async () => {
  // .sudo().text() would drop the sudo (see the note at the top)
  await sandbox.sh`sh -c ${"id -u; whoami"} > /tmp/sudo-out`.sudo();
  assert.equal(await sandbox.sh`cat /tmp/sudo-out`.text(), "0\nroot\n");
  const r = await sandbox.sh`test -w /etc/passwd`.sudo().result();
  assert.equal(r.status.code, 0);
  assert.equal((await sandbox.sh`whoami`.text()).trim(), "app");
  assert.equal((await sandbox.sh`id -u`.text()).trim(), "1000");
  assert.equal((await sandbox.sh`pwd`.text()).trim(), "/home/app");
});

test("create({env}) is applied", async () => {
  await withSandbox({ env: { GREETING: "hello there" } }, async (sb) => {
    assert.equal(await sb.sh`printenv GREETING`.text(), "hello there\n");
  });
});

test("memory limit: allocating beyond it reports oom", async () => {
  await withSandbox({ memory: "768MiB", labels: { suite: "oom", run: runTag } }, async (sb) => {
    const r = await sb.sh`python3 -c "x = b'x' * (1536 * 1024 * 1024); print(len(x))"`.noThrow();
    assert.equal(r.status.success, false);
    assert.equal(r.status.oom, true, `status: ${JSON.stringify(r.status)}`);
    // the sandbox survives its OOM
    assert.equal(await sb.sh`echo ok`.text(), "ok\n");
  });
});
