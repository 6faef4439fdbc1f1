# SSH into a sandbox (issue 8; docs/ssh.md): POST /expose/ssh, hutch-ssh, and
# the real OpenSSH client (Debian openssh-client) inside the test netns.
import os
import subprocess

import pytest

from hutchlib import Hutchd, free_port


@pytest.fixture(scope="module")
def d(request):
    if os.geteuid() != 0:
        pytest.fail("hutchd tests need root (run scripts/test.sh as root)")
    h = Hutchd(tag="ssh", extra_args=["--ssh-port", str(free_port())]).start()
    yield h
    h.stop()


@pytest.fixture
def sb(d):
    s = d.create_sandbox()
    try:
        yield s
    finally:
        s.ws.close()


def expose_ssh(d, s):
    r = d.http("POST", f"/api/v3/sandbox/{s.id}/expose/ssh", body=b"{}", headers={"Content-Type": "application/json"})
    assert r.status == 200, (r.status, r.body)
    return r.json()


def known_hosts(tmp_path, info):
    p = tmp_path / "known_hosts"
    p.write_text(f"[{info['hostname']}]:{info['port']} {info['hostKey']}\n")
    return p


def ssh_argv(tmp_path, info, *more, user=None):
    kh = known_hosts(tmp_path, info)
    return ["ssh", "-F", "/dev/null", "-p", str(info["port"]), "-o", f"UserKnownHostsFile={kh}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "IdentityFile=/dev/null", "-o", "ConnectTimeout=20",
            *more, f"{user or info['username']}@{info['hostname']}"]


def ssh(tmp_path, info, *cmd, more=(), user=None, timeout=60, input=None):
    return subprocess.run(ssh_argv(tmp_path, info, *more, user=user) + list(cmd), capture_output=True,
                          timeout=timeout, input=input)


def test_ssh_exec_returns_the_exit_status(d, sb, tmp_path):
    info = expose_ssh(d, sb)
    assert len(info["username"]) == 26 and info["hostKey"].startswith("ssh-ed25519 ")
    r = ssh(tmp_path, info, "echo out; echo err >&2; id -un; exit 7")
    assert r.returncode == 7, (r.returncode, r.stdout, r.stderr, d.log_tail(200))
    assert r.stdout.decode().split() == ["out", "app"], r.stdout
    assert b"err" in r.stderr
