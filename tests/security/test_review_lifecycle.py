# Security review: lifecycle races and leaks. Each test runs its own private
# hutchd (make_hutchd stops it and asserts nothing leaked: cgroups, mounts,
# sandbox-uid processes).
import base64
import os
import socket
import subprocess
import threading
import time

import pytest

from hutchlib import HandshakeError, RpcFailure, WebSocket, WsClosed, b64cfg, wait_until


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def links():
    """The links of hutchd's netns: the other ones by name, the sandbox veths
    by number (the warm pool refills during a burst, so its sandboxes may end
    up in other slots, i.e. other hxsN names, than before it)."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()]
    return sorted(n for n in names if not n.startswith("hxs")), sum(n.startswith("hxs") for n in names)


def mounts_count(under):
    """Mounts in this (the host's) namespace that name the daemon's state dir:
    the host's own count moves with other engineers' namespaces and daemons."""
    with open("/proc/self/mountinfo") as f:
        return sum(1 for ln in f if under in ln)


def future(ms):
    return int(time.time() * 1000) + ms


def test_disk_limit_is_enospc_and_sandbox_survives(make_hutchd):
    d = make_hutchd(extra_args=["--disk", "96"])
    sb = d.create_sandbox({"memory_mb": 1280})
    try:
        r = sb.sh("head -c 400M /dev/zero > /home/app/fill; echo rc=$?; stat -c %s /home/app/fill")
        out = r["stdout"].decode()
        assert "rc=0" not in out, out
        assert b"No space left" in r["stderr"], r
        assert int(out.split()[-1]) <= 96 << 20, out
        assert sb.sh("rm /home/app/fill && echo ok")["stdout"] == b"ok\n"
        assert d.http("GET", "/healthz", token=None).status == 200
    finally:
        sb.ws.close()


def test_each_layer_is_a_fresh_file_system_of_its_own(make_hutchd):
    """Writable layers are copies of one file system made once (disk.c's
    template): what a sandbox writes is in its own layer only, a layer made
    after another was written starts empty, and each is its own ext4 (its
    own free space) on its own loop device."""
    d = make_hutchd(extra_args=["--disk", "64", "--warm", "0"])
    df = "df -B1M --output=used,size / | tail -1"
    a = d.create_sandbox()
    try:
        used0, size0 = map(int, a.sh(df)["stdout"].split())
        r = a.sh("head -c 20M /dev/urandom > /home/app/blob && echo secret-a > /home/app/mark && sync; " + df)
        used_a, size_a = map(int, r["stdout"].split())
        assert size_a == size0 and used_a >= used0 + 19, (used0, used_a, r)  # positive control: df sees A's writes
        b = d.create_sandbox()
        try:
            r = b.sh("cat /home/app/mark; ls /home/app; " + df)
            assert b"No such file" in r["stderr"], r
            assert b"blob" not in r["stdout"], r
            used_b, size_b = map(int, r["stdout"].split()[-2:])
            assert size_b == size0 and used_b < used0 + 5, (used0, used_b, r)
            assert b.sh("echo secret-b > /home/app/mark && cat /home/app/mark")["stdout"] == b"secret-b\n"
            assert a.sh("cat /home/app/mark")["stdout"] == b"secret-a\n"
            # their layers are different loop devices (the host sees both attached)
            loops = [ln for ln in subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True,
                                                 text=True).stdout.splitlines() if f"{d.state_dir}/" in ln]
            assert len(loops) == 2 and loops[0].split()[0] != loops[1].split()[0], loops
        finally:
            b.ws.close()
    finally:
        a.ws.close()


def test_create_kill_cycles_leak_nothing(make_hutchd):
    """200 create/kill cycles (session close and REST kill alternating): the
    daemon's fds, the mounts, the links of its netns and its RSS come back.
    The warm pool stays at its --warm size (--warm-memory 0: no burst growth,
    which test_warm_pool.py covers), so the baseline is the end state."""
    d = make_hutchd(extra_args=["--warm-memory", "0"])
    warm = d.create_sandbox()
    warm.ws.close()
    time.sleep(1)
    fd0, links0, m0 = fd_count(d.pid), links(), mounts_count(d.state_dir)
    for i in range(200):
        sb = d.create_sandbox({"stop_at_ms": future(60000)} if i % 2 else None)
        if i % 10 == 0:
            assert sb.sh("echo ok")["stdout"] == b"ok\n"
        if i % 2:
            r = d.http("DELETE", f"/api/v3/sandbox/{sb.id}")
            assert r.status == 200, r
        sb.ws.close()
    settled = wait_until(lambda: fd_count(d.pid) <= fd0 + 2 and links() == links0 and mounts_count(d.state_dir) <= m0, 30, 0.5)
    assert settled, (f"after 200 cycles: fds {fd0} -> {fd_count(d.pid)}, links {links0} -> {links()}, "
                     f"mounts {m0} -> {mounts_count(d.state_dir)}")
    assert wait_until(lambda: d.http("GET", "/healthz", token=None).json()["sandboxes"] <= 2, 20), \
        d.http("GET", "/healthz", token=None).json()


def test_client_gone_before_create_finishes(make_hutchd):
    """Connections that send a create request and vanish at once: whatever
    was started for them is torn down."""
    d = make_hutchd()
    hdr = b64cfg({"memory_mb": 1280})
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", d.port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /api/v3/sandboxes/create HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Authorization: Bearer {d.token}\r\nx-deno-sandbox-config: {hdr}\r\n\r\n").encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    time.sleep(2)
    # only the warm pool may remain; nothing claimed by the vanished clients
    running = [sb for sb in d.list_sandboxes() if sb.get("status") == "running"]
    assert not running, running
    assert d.http("GET", "/healthz", token=None).status == 200


def test_connect_and_extend_race_with_kill(make_hutchd):
    d = make_hutchd()
    for _ in range(10):
        sb = d.create_sandbox({"stop_at_ms": future(120000)})
        sid = sb.id
        results = []

        def connect():
            try:
                c = d.connect_sandbox(sid, timeout=10)
                try:
                    results.append(("connected", c.call("envGet", {"key": "HOME"}, timeout=10)))
                except (WsClosed, OSError, TimeoutError, RpcFailure) as e:
                    results.append(("closed", str(e)))
                finally:
                    c.ws.close()
            except HandshakeError as e:
                results.append(("refused", e.status))

        ts = [threading.Thread(target=connect) for _ in range(4)]
        for t in ts:
            t.start()
        r = d.http("DELETE", f"/api/v3/sandbox/{sid}")
        assert r.status in (200, 404), r
        for t in ts:
            t.join(20)
        for kind, v in results:
            assert kind in ("connected", "closed", "refused"), results
            if kind == "refused":
                assert v == 404, results
        sb.ws.close()
        # a stopped sandbox cannot be extended, connected or killed again
        assert d.http("PATCH", f"/api/v3/sandbox/{sid}", body={"stop_at_ms": future(60000)}).status == 404
        assert d.http("DELETE", f"/api/v3/sandbox/{sid}").status == 404
        with pytest.raises(HandshakeError) as e:
            d.connect_sandbox(sid, timeout=10)
        assert e.value.status == 404
    assert d.http("GET", "/healthz", token=None).status == 200


def test_extend_is_bounded_in_total(make_hutchd):
    """PATCH may add at most 30 minutes per call, but repeated calls must not
    push a sandbox beyond the 7-day maximum that create enforces."""
    d = make_hutchd()
    sb = d.create_sandbox({"stop_at_ms": future(60000)})
    try:
        granted = 0
        for _ in range(400):  # 400 x 30 min = 8.3 days
            r = d.http("PATCH", f"/api/v3/sandbox/{sb.id}", body={"stop_at_ms": 2 ** 62})
            assert r.status == 200, r
            granted = r.json()["stop_at_ms"]
        assert granted <= future(7 * 86400 * 1000 + 60000), \
            f"extended to {(granted - future(0)) / 86400000:.1f} days ahead"
    finally:
        d.http("DELETE", f"/api/v3/sandbox/{sb.id}")
        sb.ws.close()


def test_revoked_token_cannot_connect_or_create(make_hutchd):
    d = make_hutchd()
    r = d.http("POST", "/hutch/v1/tokens", body={"name": "review-revoke"})
    assert r.status == 201, r
    tok, tid = r.json()["token"], r.json()["id"]
    sb = d.create_sandbox({"stop_at_ms": future(120000)}, token=tok)
    try:
        assert d.http("DELETE", f"/hutch/v1/tokens/{tid}").status == 200
        with pytest.raises(HandshakeError) as e:
            WebSocket.connect(d.port, f"/api/v3/sandbox/{sb.id}/connect", token=tok)
        assert e.value.status == 401
        assert d.http("DELETE", f"/api/v3/sandbox/{sb.id}", token=tok).status == 401
    finally:
        d.http("DELETE", f"/api/v3/sandbox/{sb.id}")
        sb.ws.close()


def test_revoke_closes_live_sessions(make_hutchd):
    d = make_hutchd()
    r = d.http("POST", "/hutch/v1/tokens", body={"name": "review-revoke-live"})
    tok, tid = r.json()["token"], r.json()["id"]
    sb = d.create_sandbox({"stop_at_ms": future(120000)}, token=tok)
    try:
        assert d.http("DELETE", f"/hutch/v1/tokens/{tid}").status == 200
        time.sleep(1)
        with pytest.raises((WsClosed, OSError)):
            sb.call("envGet", {"key": "HOME"}, timeout=5)
    finally:
        d.http("DELETE", f"/api/v3/sandbox/{sb.id}")
        sb.ws.close()


def test_hutchd_crash_mid_stream_then_restart_cleans_up(make_hutchd):
    d = make_hutchd()
    sb = d.create_sandbox({"stop_at_ms": future(300000)})
    sp = sb.call("spawn", {"command": "bash", "args": ["-c", "yes stream"], "stdout": "piped", "stderr": "piped"})
    for _ in range(10):
        sb._pump_one(10)
    d.kill_hard()
    with pytest.raises((WsClosed, OSError, TimeoutError)):
        for _ in range(10000):
            sb._pump_one(5)
    d.start()
    assert d.http("GET", "/healthz", token=None).status == 200
    st = d.sandbox_status(sb.id)
    assert st in (None, "stopped", "running"), st
    if st == "running":  # re-adopted: it must still be controllable
        c = d.connect_sandbox(sb.id)
        c.request("processKill", {"pid": sp["pid"], "signal": "SIGKILL"})
        c.ws.close()
        d.http("DELETE", f"/api/v3/sandbox/{sb.id}")
