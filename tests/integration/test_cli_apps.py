# The `hutch` CLI's deploy and app verbs against a real hutchd (docs/cli.md,
# docs/apps.md): a deploy from a sandbox with its build logs followed while
# the build runs, the URL it prints served, app ls/logs/rm, a failed deploy's
# exit status and reason, and usage errors.
import os
import select
import subprocess
import time

import pytest

from expose_util import Ingress
from hutchlib import Hutchd, hutch_cli_path

SERVER = b"""Deno.serve({ port: 8000 }, (req) => {
  console.log("hit " + new URL(req.url).pathname);
  return new Response("cli app");
});
"""


@pytest.fixture(scope="module")
def d():
    h = Hutchd(tag="cliapp", extra_args=["--app-volume-size", "48", "--storage-size", "2GiB"]).start()
    yield h
    h.stop()


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def cli_env(d):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("DENO_", "HUTCH_TOKEN", "HUTCH_SOCKET"))}
    e["HUTCH_ENDPOINT"] = d.url
    e["HUTCH_TOKEN"] = d.token
    return e


def test_deploy_follows_the_build_live_and_prints_a_served_url_then_app_ls_logs_rm(d):
    sb = d.create_sandbox()
    try:
        r = sb.run("bash", ["-c", "cat > /home/app/main.ts"], stdin=SERVER)
        assert r["code"] == 0, r
        # the install step prints one line, waits, then another: the first must reach us while it waits
        p = subprocess.Popen([hutch_cli_path(), "deploy", sb.id, "cliweb", "--prod",
                              "--install", "echo step-one; sleep 4; echo step-two"],
                             env=cli_env(d), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen, live = b"", False
        end = time.monotonic() + 120
        while time.monotonic() < end:
            rl, _, _ = select.select([p.stdout], [], [], 1)
            if rl:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
                if b"[installing] step-one\n" in seen and b"[installing] step-two" not in seen and p.poll() is None:
                    live = True
        p.wait(30)
        out = seen.decode()
        assert p.returncode == 0, out
        assert live, out  # step-one arrived while the build still ran
        assert "[installing] step-two" in out and "[preparing]" in out and "[deploying]" in out, out
        url = [ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("production: https://")][0]
        ing = Ingress(d)
        assert ing.get(url, "/from-cli")[0:3:2] == (200, b"cli app")

        ls = ok(d.cli("app", "ls"))
        row = [ln for ln in ls.splitlines() if ln.startswith("cliweb ")]
        assert row and row[0].split()[2] == url, ls

        time.sleep(1)
        logs = ok(d.cli("app", "logs", "cliweb", "--since", "10m"))
        assert "hit /from-cli" in logs, logs
        assert "hit /from-cli" not in ok(d.cli("app", "logs", "cliweb", "--level", "error")), "info lines are not errors"

        # a failed deploy: exit 1 with the reason; production still serves
        r = d.cli("deploy", sb.id, "cliweb", "--prod", "--install", "echo nope; exit 4", timeout=120)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "[installing] nope" in r.stdout and "exited with code 4" in r.stderr, (r.stdout, r.stderr)
        assert "failed (error)" in r.stderr, r.stderr
        assert ing.get(url, "/still")[0:3:2] == (200, b"cli app")

        ok(d.cli("app", "rm", "cliweb"))
        assert "cliweb " not in ok(d.cli("app", "ls"))
        r = d.cli("app", "rm", "cliweb")
        assert r.returncode == 1 and "no app" in r.stderr, (r.stdout, r.stderr)
    finally:
        sb.ws.close()


def test_usage_errors_and_a_missing_sandbox(d):
    r = d.cli("deploy", "only-one")
    assert r.returncode == 2 and "SANDBOX and APP" in r.stderr, r.stderr
    r = d.cli("app", "frobnicate")
    assert r.returncode == 2 and "unknown verb" in r.stderr, r.stderr
    r = d.cli("app", "logs", "../etc")
    assert r.returncode == 2, r.stderr
    r = d.cli("deploy", "sbx_loc_00000000000000000000", "x-app")
    assert r.returncode == 1 and "no running sandbox" in r.stderr, r.stderr
