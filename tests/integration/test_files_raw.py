# hutch's raw file channel (docs/protocol.md "Raw file transfers"):
# GET/PUT /hutch/v1/sandboxes/ID/files?path=P, and `hutch cp` on it.
# Byte-exact both ways, empty files, hostile paths and bad requests (each with
# its positive control), tokens, and clients or sandboxes that go away in the
# middle (the daemon keeps running, nothing leaks, the target never lies).
import hashlib
import os
import re
import socket
import time
import urllib.parse

import pytest

from hutchlib import wait_until

BIG = 48 * 1024 * 1024 + 4097


@pytest.fixture(scope="module")
def sbid(hutchd):
    sid = hutchd.cli_create()
    sh(hutchd, sid, "echo here > /tmp/raw-here")  # the positive controls read it
    yield sid
    hutchd.cli("kill", sid)


@pytest.fixture(scope="module")
def sbid2(hutchd):
    sid = hutchd.cli_create()
    yield sid
    hutchd.cli("kill", sid)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    p = tmp_path_factory.mktemp("raw") / "big.bin"
    data = os.urandom(BIG)
    p.write_bytes(data)
    yield p, hashlib.sha256(data).hexdigest()
    p.unlink()


def sh(hutchd, sid, script):
    r = hutchd.cli("sh", sid, script, timeout=120)
    assert r.returncode == 0, (script, r.stdout, r.stderr)
    return r.stdout


def url(sid, path, **q):
    return f"/hutch/v1/sandboxes/{sid}/files?" + urllib.parse.urlencode({"path": path, **q})


def get(hutchd, sid, path, token=...):
    return hutchd.http("GET", url(sid, path), token=token, timeout=120)


def put(hutchd, sid, path, body, token=..., **q):
    return hutchd.http("PUT", url(sid, path, **q), body=body, token=token, timeout=120,
                       headers={"Content-Type": "application/octet-stream"})


def metric(hutchd, direction, outcome):
    r = hutchd.http("GET", "/metrics")
    assert r.status == 200, r
    m = re.search(rf'hutch_raw_file_transfers_total{{direction="{direction}",outcome="{outcome}"}} (\d+)',
                  r.body.decode())
    assert m, r.body[:2000]
    return int(m.group(1))


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def pool_full(hutchd):
    """The warm pool is whole and nothing starts: a refill adds a sandbox's
    socket, pidfd and disk to hutchd's descriptors, which are not the transfer's."""
    m = hutchd.http("GET", "/metrics").body.decode()
    n = lambda name: int(re.search(rf"^{name} (\d+)$", m, re.M).group(1))
    starting = re.search(r'^hutch_sandboxes\{state="starting"\} (\d+)$', m, re.M)
    return n("hutch_pool_sandboxes") == n("hutch_pool_target") and (not starting or starting.group(1) == "0")


def fd_baseline(hutchd):
    assert wait_until(lambda: pool_full(hutchd), 60)
    return fd_count(hutchd.pid)


def raw_conn(hutchd, head):
    s = socket.create_connection(("127.0.0.1", hutchd.port), timeout=60)
    s.sendall(head.encode())
    return s


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode(errors="replace"), rest


# ---------------------------------------------------------------- happy paths

def test_put_then_get_is_byte_exact_for_a_large_random_file(hutchd, sbid, big):
    path, digest = big
    r = put(hutchd, sbid, "/tmp/raw-big.bin", path.read_bytes())
    assert r.status == 200, r
    assert r.json() == {"path": "/tmp/raw-big.bin", "size": BIG}
    assert sh(hutchd, sbid, "sha256sum /tmp/raw-big.bin").split()[0] == digest
    r = get(hutchd, sbid, "/tmp/raw-big.bin")
    assert r.status == 200, r
    assert r.headers["content-length"] == str(BIG)
    assert r.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(r.body).hexdigest() == digest


def test_empty_file_both_ways(hutchd, sbid):
    r = put(hutchd, sbid, "/tmp/raw-empty", b"")
    assert r.status == 200, r
    assert r.json()["size"] == 0
    assert sh(hutchd, sbid, "stat -c %s /tmp/raw-empty").strip() == "0"
    r = get(hutchd, sbid, "/tmp/raw-empty")
    assert r.status == 200 and r.body == b"" and r.headers["content-length"] == "0", r


def test_upload_replaces_whole_with_the_mode_asked_or_kept(hutchd, sbid):
    sh(hutchd, sbid, "printf 'old old old old' > /tmp/raw-mode && chmod 640 /tmp/raw-mode")
    assert put(hutchd, sbid, "/tmp/raw-mode", b"new").status == 200
    assert sh(hutchd, sbid, "cat /tmp/raw-mode; echo; stat -c %a /tmp/raw-mode") == "new\n640\n"
    assert put(hutchd, sbid, "/tmp/raw-mode", b"newer", mode="751").status == 200
    assert sh(hutchd, sbid, "cat /tmp/raw-mode; echo; stat -c %a /tmp/raw-mode") == "newer\n751\n"
    # a new file is app's, 0644 (umask 022)
    assert put(hutchd, sbid, "raw-rel", b"x").status == 200  # relative to /home/app
    assert sh(hutchd, sbid, "stat -c '%U %a' /home/app/raw-rel") == "app 644\n"


def test_cli_cp_single_file_takes_the_raw_channel_both_ways(hutchd, sbid, big, tmp_path):
    path, digest = big
    up0, down0 = metric(hutchd, "upload", "ok"), metric(hutchd, "download", "ok")
    os.chmod(path, 0o640)
    r = hutchd.cli("cp", str(path), f"{sbid}:/tmp/cli-big.bin", timeout=300)
    assert r.returncode == 0, r.stderr
    assert sh(hutchd, sbid, "sha256sum /tmp/cli-big.bin; stat -c %a /tmp/cli-big.bin").split()[::2] == [digest, "640"]
    out = tmp_path / "back.bin"
    r = hutchd.cli("cp", f"{sbid}:/tmp/cli-big.bin", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest
    assert metric(hutchd, "upload", "ok") == up0 + 1
    assert metric(hutchd, "download", "ok") == down0 + 1


# ---------------------------------------------------------------- refusals

def test_missing_file_is_404_and_a_directory_is_409(hutchd, sbid):
    sh(hutchd, sbid, "mkdir -p /tmp/raw-dir")
    assert get(hutchd, sbid, "/tmp/raw-here").body == b"here\n"  # positive control
    r = get(hutchd, sbid, "/tmp/raw-nothing")
    assert r.status == 404 and r.json()["code"] == "ENOENT", r
    assert "/tmp/raw-nothing" in r.json()["message"]
    r = get(hutchd, sbid, "/tmp/raw-dir")
    assert r.status == 409 and r.json()["code"] == "EISDIR", r
    r = put(hutchd, sbid, "/tmp/raw-dir", b"x")
    assert r.status == 409 and r.json()["code"] == "EISDIR", r
    r = put(hutchd, sbid, "/tmp/raw-no-such-dir/f", b"x")
    assert r.status == 404 and r.json()["code"] == "ENOENT", r
    r = get(hutchd, sbid, "/dev/zero")  # endless: not a regular file
    assert r.status == 400 and r.json()["code"] == "EINVAL", r


def test_paths_resolve_inside_the_sandbox_as_app(hutchd, sbid):
    inside = sh(hutchd, sbid, "cat /etc/hostname").encode()
    with open("/etc/hostname", "rb") as f:
        host = f.read()
    r = get(hutchd, sbid, "../../../../../../etc/hostname")  # relative to /home/app, clamped at the sandbox's /
    assert r.status == 200 and r.body == inside, r
    assert inside != host
    r = get(hutchd, sbid, "/etc/shadow")  # root's, mode 0640: app may not read it
    assert r.status == 403 and r.json()["code"] == "EACCES", r
    r = put(hutchd, sbid, "/etc/raw-owned-by-root", b"x")
    assert r.status == 403 and r.json()["code"] == "EACCES", r
    assert "No such file" in hutchd.cli("sh", sbid, "cat /etc/raw-owned-by-root").stderr


def test_bad_requests_get_a_clear_4xx(hutchd, sbid):
    assert get(hutchd, sbid, "/tmp/raw-here").status == 200  # positive control
    base = f"/hutch/v1/sandboxes/{sbid}/files"
    r = hutchd.http("GET", base)
    assert r.status == 400 and r.json()["code"] == "EINVAL" and "path" in r.json()["message"], r
    r = hutchd.http("GET", base + "?path=/tmp/raw-here%00.txt")
    assert r.status == 400 and "NUL" in r.json()["message"], r
    r = get(hutchd, sbid, "/" + "a" * 4100)
    assert r.status == 400 and r.json()["code"] == "ENAMETOOLONG", r
    r = hutchd.http("POST", url(sbid, "/tmp/x"), body=b"")
    assert r.status == 405, r
    r = put(hutchd, sbid, "/tmp/raw-m", b"x", mode="99")
    assert r.status == 400 and "mode" in r.json()["message"], r
    # chunked, and no length at all: refused before a byte is read
    for head in (f"PUT {url(sbid, '/tmp/raw-c')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hutchd.token}\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                 f"PUT {url(sbid, '/tmp/raw-c')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hutchd.token}\r\n\r\n"):
        s = raw_conn(hutchd, head)
        h, _ = read_head(s)
        s.close()
        assert h.startswith("HTTP/1.1 411"), h
    assert "No such file" in hutchd.cli("sh", sbid, "cat /tmp/raw-c").stderr


def test_a_token_is_required(hutchd, sbid):
    assert get(hutchd, sbid, "/tmp/raw-here").status == 200  # positive control
    r = get(hutchd, sbid, "/tmp/raw-here", token=None)
    assert r.status == 401 and r.json()["code"] == "INVALID_TOKEN", r
    r = put(hutchd, sbid, "/tmp/raw-anon", b"x", token="hutch_not_a_token")
    assert r.status == 401 and r.json()["code"] == "INVALID_TOKEN", r
    assert "No such file" in hutchd.cli("sh", sbid, "cat /tmp/raw-anon").stderr
    r = get(hutchd, "sbx_abc_0123456789abcdefghjk", "/tmp/raw-here")
    assert r.status == 404 and r.json()["code"] == "SANDBOX_NOT_FOUND", r


# ---------------------------------------------------------------- going away

def _settle_fds(hutchd, before):
    assert wait_until(lambda: fd_count(hutchd.pid) <= before, 15), (fd_count(hutchd.pid), before)


def test_client_leaving_mid_upload_leaves_the_target_as_it_was(hutchd, sbid, sbid2, big):
    path, _ = big
    sh(hutchd, sbid, "echo old > /tmp/raw-cut")
    assert get(hutchd, sbid, "/tmp/raw-here").status == 200  # warm the worker: its fds are not ours to count
    before = fd_baseline(hutchd)
    down_failed = metric(hutchd, "upload", "failed")
    s = raw_conn(hutchd, f"PUT {url(sbid, '/tmp/raw-cut')} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {hutchd.token}\r\nContent-Length: {BIG}\r\n\r\n")
    data = path.read_bytes()
    s.sendall(data[:8 << 20])
    time.sleep(0.5)
    s.close()
    assert wait_until(lambda: metric(hutchd, "upload", "failed") == down_failed + 1, 15)
    assert sh(hutchd, sbid, "cat /tmp/raw-cut; ls -a /tmp | grep -c hutch- || true") == "old\n0\n"
    _settle_fds(hutchd, before)
    assert hutchd.alive()
    r = put(hutchd, sbid2, "/tmp/other", b"fine")  # another sandbox is untouched
    assert r.status == 200 and get(hutchd, sbid2, "/tmp/other").body == b"fine"


def test_client_leaving_mid_download_frees_everything(hutchd, sbid, big):
    path, _ = big
    assert put(hutchd, sbid, "/tmp/raw-dl", path.read_bytes()).status == 200
    before = fd_baseline(hutchd)
    s = raw_conn(hutchd, f"GET {url(sbid, '/tmp/raw-dl')} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {hutchd.token}\r\n\r\n")
    h, rest = read_head(s)
    assert h.startswith("HTTP/1.1 200"), h
    got = len(rest)
    while got < (1 << 20):
        got += len(s.recv(65536))
    s.close()
    assert wait_until(lambda: fd_count(hutchd.pid) <= before, 15), (fd_count(hutchd.pid), before)
    assert hutchd.alive()
    r = get(hutchd, sbid, "/tmp/raw-dl")  # the same file, whole, right after
    assert r.status == 200 and len(r.body) == BIG


def test_sandbox_killed_mid_download_closes_the_connection(hutchd, big):
    path, _ = big
    sid = hutchd.cli_create()
    assert put(hutchd, sid, "/tmp/raw-kill", path.read_bytes()).status == 200
    s = raw_conn(hutchd, f"GET {url(sid, '/tmp/raw-kill')} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {hutchd.token}\r\n\r\n")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    h, rest = read_head(s)
    assert h.startswith("HTTP/1.1 200"), h
    assert hutchd.cli("kill", sid).returncode == 0
    got = len(rest)
    s.settimeout(60)  # a hang fails here
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        got += len(d)
    s.close()
    assert got < BIG  # cut, not completed (and not hung)
    assert hutchd.alive()


def test_sandbox_killed_mid_upload_answers_or_closes(hutchd, big):
    path, _ = big
    sid = hutchd.cli_create()
    s = raw_conn(hutchd, f"PUT {url(sid, '/tmp/raw-kill-up')} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {hutchd.token}\r\nContent-Length: {BIG}\r\n\r\n")
    s.sendall(path.read_bytes()[:4 << 20])
    assert hutchd.cli("kill", sid).returncode == 0
    s.settimeout(60)  # a hang fails here
    buf = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
    except ConnectionResetError:
        pass
    s.close()
    if buf:
        assert buf.startswith(b"HTTP/1.1 503") or buf.startswith(b"HTTP/1.1 404"), buf[:300]
    assert hutchd.alive()
