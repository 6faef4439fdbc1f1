# SSH into a sandbox (issue 8; docs/ssh.md): POST /expose/ssh, hutch-ssh, and
# the real OpenSSH client (Debian openssh-client) inside the test netns.
import hashlib
import os
import shlex
import socket
import subprocess
import threading
import time

import pytest

from expose_util import Ingress, start_server
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


# ---- interactive session ----

def _tmux(sock, *args):
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=30)


def _wait_pane(sock, needle, timeout=30):
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = _tmux(sock, "capture-pane", "-p", "-t", "t").stdout
        if needle in out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never showed in the pane:\n{out}")


def test_interactive_ssh_under_tmux_has_a_prompt_and_follows_resizes(d, sb, tmp_path):
    info = expose_ssh(d, sb)
    sock = f"hutch-test-ssh-{os.getpid()}"
    status = tmp_path / "status"
    cmd = " ".join(shlex.quote(a) for a in ssh_argv(tmp_path, info)) + f"; echo $? > {status}; sleep 60"
    r = _tmux(sock, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "100", "-y", "30", cmd)
    assert r.returncode == 0, r.stderr
    try:
        _wait_pane(sock, ":~$")  # bash -l's prompt, as app in its home
        _tmux(sock, "send-keys", "-t", "t", "tty; stty size; echo M$((6*7))", "Enter")
        out = _wait_pane(sock, "M42")
        assert "30 100" in out and "/dev/pts/" in out, out
        _tmux(sock, "resize-window", "-t", "t", "-x", "120", "-y", "40")
        deadline = time.monotonic() + 30
        while True:  # SIGWINCH -> window-change -> SSP_RESIZE -> ptyResize -> TIOCSWINSZ
            _tmux(sock, "send-keys", "-t", "t", "clear; stty size; echo S$((5*5))", "Enter")
            out = _wait_pane(sock, "S25")
            if "40 120" in out or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "40 120" in out, out
        _tmux(sock, "send-keys", "-t", "t", "exit 3", "Enter")
        deadline = time.monotonic() + 30
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status.read_text().strip() == "3"
    finally:
        _tmux(sock, "kill-server")


# ---- sftp and scp ----

def sftp_batch(tmp_path, info, batch, timeout=180):
    kh = known_hosts(tmp_path, info)
    bf = tmp_path / "batch"
    bf.write_text(batch)
    return subprocess.run(["sftp", "-F", "/dev/null", "-P", str(info["port"]), "-o", f"UserKnownHostsFile={kh}",
                           "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null",
                           "-b", str(bf), f"{info['username']}@{info['hostname']}"],
                          capture_output=True, timeout=timeout)


def test_sftp_put_and_get_of_20_mb_is_byte_exact(d, sb, tmp_path):
    info = expose_ssh(d, sb)
    data = os.urandom(20 << 20)
    src, back = tmp_path / "big", tmp_path / "back"
    src.write_bytes(data)
    r = sftp_batch(tmp_path, info, f"put {src} /tmp/big\nget /tmp/big {back}\n")
    assert r.returncode == 0, (r.stdout, r.stderr, d.log_tail())
    assert back.read_bytes() == data
    inside = sb.sh("sha256sum /tmp/big; stat -c %U /tmp/big")
    lines = inside["stdout"].decode().split("\n")
    assert lines[0].split()[0] == hashlib.sha256(data).hexdigest()
    assert lines[1] == "app"  # sftp-server runs as app


def _first_diff(a, b):
    """The first offset where a and b differ (the shorter one's length if one is a prefix), or -1."""
    n = min(len(a), len(b))
    i = next((i for i in range(0, n, 65536) if a[i:i + 65536] != b[i:i + 65536]), None)
    if i is not None:
        return next(j for j in range(i, min(i + 65536, n)) if a[j] != b[j])
    return -1 if len(a) == len(b) else n


def _write(path, data):
    path.write_bytes(data)
    return path


def test_ssh_output_read_slowly_arrives_byte_exact(d, sb, tmp_path):
    """A client that reads slowly keeps shutting its window: hutch-ssh's writes
    then end in libssh's own loop, which called hutch-ssh back mid-frame (a
    frame went out twice, the next was lost, then hutch-ssh crashed: the
    "Received message too long" and "Connection reset" of the sftp test above
    under load). Before the fix 8 rounds in 9 failed; here, three rounds."""
    info = expose_ssh(d, sb)
    data = os.urandom(20 << 20)
    r = sftp_batch(tmp_path, info, f"put {_write(tmp_path / 'big', data)} /tmp/big\n")
    assert r.returncode == 0, r.stderr
    assert sb.sh("sha256sum < /tmp/big")["stdout"].split()[0].decode() == hashlib.sha256(data).hexdigest()
    for rnd in range(3):
        p = subprocess.Popen(ssh_argv(tmp_path, info) + ["cat /tmp/big"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        got = bytearray()
        watchdog = threading.Timer(240, p.kill)  # a stuck transfer fails the test, never hangs the run
        watchdog.start()
        try:
            while chunk := p.stdout.read1(16384):
                got += chunk
                time.sleep(0.001)
            err = p.stderr.read()
            rc = p.wait(timeout=120)
        finally:
            watchdog.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
        at = _first_diff(data, bytes(got))
        assert rc == 0 and at == -1, (rnd, rc, err, f"{len(got)} bytes, first difference at {at}", d.log_tail(40))


def test_ssh_stdin_ends_after_every_byte_the_client_sent(d, sb, tmp_path):
    """The process reads nothing for a while, so what the client sends fills
    the sandbox's 4 MiB of stdin in flight, the socketpair and hutch-ssh's own
    256 KiB, and the rest waits in libssh; the client's end of input then
    comes while bytes still wait there. It must reach the process after them.
    It used to be queued first, or dropped when hutch-ssh's buffer was full:
    with the fix's hutch-ssh swapped out, 5, 5.5 and 6 MiB all hung here
    (sha256sum never saw its input end)."""
    info = expose_ssh(d, sb)
    for kib in (5120, 5632, 6144):  # a range: how much the kernel's socket buffers hold varies
        data = os.urandom(kib << 10)
        r = ssh(tmp_path, info, "sleep 3; sha256sum", input=data, timeout=120)
        assert r.returncode == 0, (kib, r.returncode, r.stderr, d.log_tail(40))
        assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest(), (kib, r.stdout)


def test_scp_copies_both_ways(d, sb, tmp_path):
    info = expose_ssh(d, sb)
    kh = known_hosts(tmp_path, info)
    data = os.urandom(300000)
    (tmp_path / "up").write_bytes(data)
    base = ["scp", "-F", "/dev/null", "-P", str(info["port"]), "-o", f"UserKnownHostsFile={kh}", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null"]
    remote = f"{info['username']}@{info['hostname']}"
    r = subprocess.run(base + [str(tmp_path / "up"), f"{remote}:/home/app/up"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sb.sh("cp /home/app/up /home/app/down && echo -n tail >> /home/app/down")
    r = subprocess.run(base + [f"{remote}:/home/app/down", str(tmp_path / "down")], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "down").read_bytes() == data + b"tail"
    # the legacy scp protocol (-O) runs `scp -t` through exec: the image has scp
    r = subprocess.run(base + ["-O", str(tmp_path / "up"), f"{remote}:/home/app/legacy"], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert sb.sh("sha256sum < /home/app/legacy")["stdout"].split()[0].decode() == hashlib.sha256(data).hexdigest()


# ---- ssh -L ----

class Forward:
    """ssh -N -L LOCAL:HOST:PORT in the background; the tunnel's local port."""

    def __init__(self, tmp_path, info, host, port, user=None):
        self.local = free_port()
        self.proc = subprocess.Popen(ssh_argv(tmp_path, info, "-N", "-o", "ExitOnForwardFailure=yes",
                                              "-L", f"127.0.0.1:{self.local}:{host}:{port}", user=user),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.local), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the forward never listened")

    def get(self, path="/"):
        r = subprocess.run(["curl", "-s", "--max-time", "10", f"http://127.0.0.1:{self.local}{path}"],
                           capture_output=True, timeout=30)
        return r.returncode, r.stdout.strip()

    def close(self):
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")


def test_local_forward_reaches_a_server_in_that_sandbox_only(d, sb, tmp_path):
    other = d.create_sandbox()
    try:
        start_server(sb, 8000, "mine")
        start_server(other, 8001, "theirs")
        info, info_other = expose_ssh(d, sb), expose_ssh(d, other)
        f = Forward(tmp_path, info, "localhost", 8000)
        try:
            assert f.get() == (0, b"hello from mine")
        finally:
            f.close()
        # another sandbox's port, through this sandbox's login: nothing listens there in this sandbox
        f = Forward(tmp_path, info, "localhost", 8001)
        try:
            rc, body = f.get()
            assert body == b"" and rc != 0
        finally:
            err = f.close()
        assert "open failed" in err, err
        # positive control: the other sandbox's own login reaches it
        f = Forward(tmp_path, info_other, "127.0.0.1", 8001)
        try:
            assert f.get() == (0, b"hello from theirs")
        finally:
            f.close()
        # a host service (hutchd's API, which answers from here) and any other address: refused by hutchd
        assert d.http("GET", "/api/v2/sandboxes").status == 200
        for host, port in (("127.0.0.1", d.port), ("192.0.2.1", 80), ("10.0.0.1", d.port)):
            f = Forward(tmp_path, info, host, port)
            try:
                rc, body = f.get()
                assert body == b"" and rc != 0
            finally:
                err = f.close()
            assert "open failed" in err, err
        log = d.log_tail(400)
        assert f"{sb.id}: refused a forward to 192.0.2.1:80 (only the sandbox's own localhost ports)" in log
        assert f"{sb.id}: refused a forward to 10.0.0.1:{d.port}" in log
    finally:
        other.ws.close()


def test_forward_and_channel_floods_are_bounded(d, sb, tmp_path):
    start_server(sb, 8002, "flood")
    info = expose_ssh(d, sb)
    f = Forward(tmp_path, info, "localhost", 8002)
    held = []
    time.sleep(1)  # the probe that saw the forward listen has let go of its channel
    try:
        for _ in range(16):  # each a direct-tcpip channel, held open (nothing sent)
            held.append(socket.create_connection(("127.0.0.1", f.local), timeout=5))
        time.sleep(1)
        alive = 0
        for s in held:  # a refused channel closes the local socket; a held one stays open
            s.settimeout(0.5)
            try:
                alive += s.recv(1) != b""
            except socket.timeout:
                alive += 1
            except OSError:
                pass
        assert alive == 10, alive  # hutch-ssh's bound: 10 channels a connection
        for s in held:
            s.close()
        held = []
        deadline = time.monotonic() + 20
        while f.get() != (0, b"hello from flood") and time.monotonic() < deadline:
            time.sleep(0.2)  # the closed channels free their slots
        assert f.get() == (0, b"hello from flood")
    finally:
        for s in held:
            s.close()
        err = f.close()
    assert "open failed" in err, err
    # hutchd keeps serving
    assert sb.sh("echo ok")["stdout"] == b"ok\n"


# ---- logins ----

def test_a_guessed_username_is_refused_logged_and_rate_limited(d, sb, tmp_path):
    info = expose_ssh(d, sb)
    guess = "a" * 26
    refused = "ssh: 127.0.0.3: too many failed logins, refusing its connections for a while"
    t0 = time.monotonic()
    for i in range(12):
        r = ssh(tmp_path, info, "true", more=("-b", "127.0.0.3"), user=guess)
        assert r.returncode == 255, r.stderr
        if refused in d.log_tail(300):
            break
        assert b"Permission denied" in r.stderr, r.stderr
    elapsed = time.monotonic() - t0
    log = d.log_tail(300)
    assert refused in log, log
    # a burst of 5 failures, then one more each 5 s (sshd.c FAIL_BURST, FAIL_DECAY_PER_S): on a slow
    # machine the attempts themselves take seconds and earn some back
    failed = log.count('failed login from 127.0.0.3 (unknown user "aaaa...")')
    assert 5 <= failed <= 5 + int(elapsed / 5) + 1, (failed, elapsed, log)
    # now even the right name is refused from that address ...
    r = ssh(tmp_path, info, "true", more=("-b", "127.0.0.3"))
    assert r.returncode == 255, r
    # ... while another address logs in (positive control)
    r = ssh(tmp_path, info, "exit 4", more=("-b", "127.0.0.4"))
    assert r.returncode == 4, r.stderr
    # and the other ways a client offers the name are accepted as "the name is valid"
    r = ssh(tmp_path, info, "exit 5", more=("-b", "127.0.0.4", "-o", "PreferredAuthentications=password"))
    assert r.returncode == 5, r.stderr


def test_an_unexposed_or_stopped_sandbox_has_no_login(d, tmp_path):
    a = d.create_sandbox()
    info = expose_ssh(d, a)
    r = ssh(tmp_path, info, "exit 6", more=("-b", "127.0.0.5"))
    assert r.returncode == 6, r.stderr  # positive control
    assert d.http("DELETE", f"/api/v3/sandbox/{a.id}").status == 200
    a.ws.close()
    r = ssh(tmp_path, info, "exit 6", more=("-b", "127.0.0.5"))
    assert r.returncode == 255 and b"Permission denied" in r.stderr, r.stderr


def test_killing_the_sandbox_closes_its_ssh_session(d, tmp_path):
    a, b = d.create_sandbox(), d.create_sandbox()
    try:
        ia, ib = expose_ssh(d, a), expose_ssh(d, b)
        p = subprocess.Popen(ssh_argv(tmp_path, ia, "-b", "127.0.0.6") + ["echo started; sleep 300"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout.readline() == b"started\n"
        assert d.http("DELETE", f"/api/v3/sandbox/{a.id}").status == 200
        try:
            rc = p.wait(timeout=30)
        finally:
            p.kill()
            p.communicate()
        assert rc == 255
        assert f"ssh: {a.id}: its sandbox stopped; closing the connection from 127.0.0.6" in d.log_tail(300)
        # the other sandbox keeps serving
        r = ssh(tmp_path, ib, "exit 8", more=("-b", "127.0.0.6"))
        assert r.returncode == 8, r.stderr
    finally:
        a.ws.close()
        b.ws.close()


# ---- hutch ssh ----

def test_hutch_ssh_runs_the_system_ssh_with_a_checked_host_key(d, sb, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    r = d.cli("ssh", sb.id, "--", "echo", "hello; whoami; exit 9", env=env)
    assert r.returncode == 9, (r.stdout, r.stderr)
    assert r.stdout.split() == ["hello", "app"], r.stdout
    kh = (home / ".config" / "hutch" / "known_hosts").read_text().splitlines()
    info = expose_ssh(d, sb)  # the same login name and key again
    assert kh == [f"[{info['hostname']}]:{info['port']} {info['hostKey']}"]
    # the entry is what ssh checks: a wrong key in it makes ssh refuse (positive control above)
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtURjy7zfgGArHXvgOXTyhRtabgkg6f/D20Bt6ncnXB"
    (home / ".config" / "hutch" / "known_hosts").write_text(f"[{info['hostname']}]:{info['port']} {other}\n")
    r = subprocess.run(["ssh", "-p", str(info["port"]), "-o", f"UserKnownHostsFile={home}/.config/hutch/known_hosts",
                        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                        f"{info['username']}@{info['hostname']}", "true"], capture_output=True, timeout=60,
                       env={**os.environ, "HOME": str(home)})
    assert r.returncode == 255 and b"REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr, r.stderr
    # hutch ssh puts the key from the API back
    r = d.cli("ssh", sb.id, "--", "true", env=env)
    assert r.returncode == 0, r.stderr



def _children(pid, comm):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            if f"({comm})" in st and int(st[st.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(p))
    return out


def test_hutch_ssh_is_confined_and_one_per_connection(d, sb, tmp_path):
    info = expose_ssh(d, sb)
    before = set(_children(d.pid, "hutch-ssh"))
    p = subprocess.Popen(ssh_argv(tmp_path, info, "-b", "127.0.0.7") + ["echo up; sleep 60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"up\n"
        mine = set(_children(d.pid, "hutch-ssh")) - before
        assert len(mine) == 1, mine
        pid = mine.pop()
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
        assert status["Uid"].split() == ["65534"] * 4 and status["Gid"].split() == ["65534"] * 4
        assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
        assert status["CapEff"].strip() == "0000000000000000"
        assert os.readlink(f"/proc/{pid}/root") == os.path.join(d.state_dir, "ssh-root")
        # positive control: hutchd itself is none of these
        hs = dict(line.split(":", 1) for line in open(f"/proc/{d.pid}/status").read().splitlines() if ":" in line)
        assert hs["Uid"].split()[0] == "0" and hs["Seccomp"].strip() == "0"
    finally:
        p.kill()
        p.communicate()
    deadline = time.monotonic() + 20  # the connection ends: its hutch-ssh goes too
    while pid in _children(d.pid, "hutch-ssh") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid not in _children(d.pid, "hutch-ssh")


def _metric(d, name, outcome):
    from prometheus_client.parser import text_string_to_metric_families
    r = d.http("GET", "/metrics")
    assert r.status == 200, r
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            if s.name == name and s.labels.get("outcome") == outcome:
                return s.value
    raise AssertionError(f"{name}{{outcome={outcome}}} not in /metrics")


def test_exposing_is_audited_and_logins_and_upstreams_are_counted(d, sb, tmp_path):
    r = d.http("POST", "/hutch/v1/tokens", body={"org": "default", "name": "exposer"})
    assert r.status == 201, r
    tok, tok_id = r.json()["token"], r.json()["id"]
    ok0, bad0 = _metric(d, "hutch_ssh_logins_total", "accepted"), _metric(d, "hutch_ssh_logins_total", "refused")
    up0 = _metric(d, "hutch_ingress_upstream_connections_total", "ok")
    # SSH and HTTP exposures made with this token
    r = d.http("POST", f"/api/v3/sandbox/{sb.id}/expose/ssh", body=b"{}", token=tok,
               headers={"Content-Type": "application/json"})
    assert r.status == 200, r
    info = r.json()
    r = d.http("POST", f"/api/v3/sandbox/{sb.id}/expose/http", body=b"{}", token=tok,
               headers={"Content-Type": "application/json"})
    assert r.status == 200, r
    domain = r.json()["domain"]
    start_server(sb, 8001, "A")
    assert sb.call("exposeHttp", {"domain": domain, "port": 8001}) is None
    status, _, body = Ingress(d).get("https://" + domain)
    assert status == 200 and b"hello from A" in body, (status, body)
    # one accepted login, one refused (a wrong name of the right length)
    assert ssh(tmp_path, info, "exit 0", more=("-b", "127.0.0.5")).returncode == 0
    assert ssh(tmp_path, info, "true", more=("-b", "127.0.0.5"), user="b" * 26).returncode == 255
    assert _metric(d, "hutch_ssh_logins_total", "accepted") >= ok0 + 1
    assert _metric(d, "hutch_ssh_logins_total", "refused") >= bad0 + 1
    assert _metric(d, "hutch_ingress_upstream_connections_total", "ok") >= up0 + 1
    r = d.http("GET", "/api/v2/audit?limit=1000")
    assert r.status == 200, r
    mine = [e for e in r.json()["entries"] if e["target"] == sb.id and e["action"] == "expose"]
    assert any(e["tokenId"] == tok_id and e["detail"] == "ssh" for e in mine), mine
    assert any(e["detail"].startswith("http, ingress port") for e in mine), mine
