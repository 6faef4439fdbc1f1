# Live restore (issue 11.1, docs/restore.md): with --live-restore, a
# sandbox's init and processes outlive hutchd (kill -9, SIGTERM), and the
# next hutchd re-adopts the sandboxes that should still run (agent, network,
# policy, secrets, timers, labels) and cleans up completely the ones that
# should not (timeout passed during the gap, killed while hutchd was down, a
# session sandbox nobody came back to, an agent that answers the reconnect
# with anything but a valid hello). The census of each daemon's stop() (and of
# the network namespaces) stays on.
import base64
import contextlib
import json
import ctypes
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import test_secrets as ts  # noqa: E402  (the TLS echo upstream and its test CA)
from hutchlib import (cgroup_dirs_for_sandbox, hutchd_path, loops_backed_by, mounts_mentioning,  # noqa: E402
                      pid_alive, sandbox_cgroup_pids, sandbox_links, wait_until)
from expose_util import Ingress, expose, start_server  # noqa: E402
from netenv import NetEnv, out  # noqa: E402

WAIT_S = "60"   # --live-restore: how long an init waits for a hutchd (bounds what a failed test leaves)
HELD_MAX = 4 << 20          # src/init/agent.c
OUTPUT_WINDOW = 512 << 10   # HX_OUTPUT_WINDOW, per stream
HX_READY, HX_HELLO = 16, 23


def now_ms():
    return int(time.time() * 1000)


def init_pid(d, sid):
    """The sandbox's PID 1 (host pid): the process of its cgroup that is pid 1 of its namespace."""
    for p in sandbox_cgroup_pids(d.cgroup_name, sid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                        return p
    return None


def read_inside(pid, path):
    """A file in the sandbox, read from the host through its init's root."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/root{path}") as f:
            return f.read().strip()
    return None


def counter(pid, path):
    v = read_inside(pid, path)
    return int(v) if v and v.isdigit() else 0


def log_after(d, mark):
    return d._log_text()[mark:]


def assert_gone(d, sid, pids):
    assert wait_until(lambda: d.sandbox_status(sid) == "stopped", 20), (sid, d.list_sandboxes())
    assert wait_until(lambda: not cgroup_dirs_for_sandbox(d.cgroup_name, sid), 20), \
        cgroup_dirs_for_sandbox(d.cgroup_name, sid)
    assert wait_until(lambda: not [p for p in pids if pid_alive(p)], 20), [p for p in pids if pid_alive(p)]
    assert not [m for m in mounts_mentioning(d.state_dir) if sid in m]
    assert wait_until(lambda: not [x for x in loops_backed_by(d.state_dir) if sid in x], 20)
    assert not os.path.exists(os.path.join(d.state_dir, "sandboxes", sid)), "scratch dir (and agent socket) left"


@pytest.fixture(scope="module")
def env():
    """hutchd --live-restore in a throwaway netns, with the network tests'
    upstreams and the secrets tests' TLS echo server (test CA)."""
    if os.geteuid() != 0:
        pytest.fail("live restore tests need root")
    net = NetEnv().start()
    echo = None
    try:
        ca, cert, key = ts.make_test_ca(net.tmp)
        log = os.path.join(net.tmp, "echo.log")
        subprocess.run(["ip", "-n", net.u, "addr", "add", f"{ts.ECHO_IP}/24", "dev", "hxnb"], check=True)
        script = os.path.join(net.tmp, "echo.py")
        with open(script, "w") as f:
            f.write(ts.ECHO)
        echo = subprocess.Popen(["ip", "netns", "exec", net.u, sys.executable, script, cert, key, log, ts.ECHO_IP],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = echo.stdout.readline()
        assert "ready" in line, line + echo.stdout.read()
        extra = ["--upstream-ca", ca, "--live-restore", WAIT_S, "--warm", "0"]
        for n in ts.NAMES:
            extra += ["--resolve", f"{n}={ts.ECHO_IP}"]
        net.start_hutchd(tag="lr", extra=extra)
        net.echo_log = log
        yield net
    finally:
        if echo:
            echo.kill()
            echo.wait()
        net.stop()


def spawn_bg(sb, script, stdout="piped"):
    return sb.call("spawn", {"command": "bash", "args": ["-c", script], "stdout": stdout, "stderr": "null"})


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_sandbox_outlives_hutchd_and_is_readopted_with_everything(env, how):
    d = env.hutchd
    sb = d.create_sandbox({"stop_at_ms": now_ms() + 600000, "labels": {"t": how}, "env": {"GREETING": "hi"},
                           "allow_net": ["example.test", "api.secret.test"],
                           "secrets": {"API_KEY": {"hosts": ["api.secret.test"], "value": ts.SECRET}}})
    sid = sb.id
    assert sb.sh("echo kept > /tmp/keep")["code"] == 0
    ph = out(sb.sh('printf %s "$API_KEY"'))
    assert ph and ph != ts.SECRET
    # positive controls before the restart: egress and the secret's substitution work
    assert "hello from" in out(sb.sh("curl -sS -m 10 http://example.test/"))
    # an exposed port: the same URL works after the restart
    start_server(sb, 8000, how)
    url = expose(d, sb, 8000)
    assert Ingress(d).get(url, "/")[2] == f"hello from {how}\n".encode()
    # a slow writer (its output keeps flowing through the gap) and a fast one (held until the bound)
    spawn_bg(sb, 'i=0; while :; do i=$((i+1)); echo "tick $i"; echo $i > /tmp/slow.tmp; '
                 'mv /tmp/slow.tmp /tmp/slow; sleep 0.05; done')
    spawn_bg(sb, 'n=0; while :; do head -c 65536 /dev/zero; n=$((n+1)); echo $n > /tmp/fast.tmp; '
                 'mv /tmp/fast.tmp /tmp/fast; done')
    pid1 = init_pid(d, sid)
    pids = sandbox_cgroup_pids(d.cgroup_name, sid)
    links = set(sandbox_links(d.netns_fd))
    assert pid1 and links
    assert wait_until(lambda: counter(pid1, "/tmp/slow") > 3, 10)

    if how == "sigkill":
        d.kill_hard()
    else:
        assert d.terminate() == 0, d.log_tail()
    with contextlib.suppress(OSError):
        sb.ws.sock.close()
    # no hutchd: the sandbox runs on, its output is held (the fast writer stops at the bound)
    assert pid_alive(pid1), "the sandbox's init died with hutchd"
    slow0 = counter(pid1, "/tmp/slow")
    assert wait_until(lambda: counter(pid1, "/tmp/slow") > slow0 + 10, 20), "output stopped flowing in the gap"
    time.sleep(2)
    fast_gap = counter(pid1, "/tmp/fast")
    time.sleep(1)
    assert counter(pid1, "/tmp/fast") == fast_gap, "the fast writer was not held at the bound"
    # 64 KiB per step: the window, the pipe's 64 KiB and one read are all it can get ahead
    assert fast_gap * 65536 <= HELD_MAX + 4 * OUTPUT_WINDOW, fast_gap
    assert set(sandbox_links(d.netns_fd)) >= links, "its veth went with hutchd"

    mark = len(d._log_text())
    d.start()
    log = log_after(d, mark)
    m = re.search(rf"{sid} re-adopted: \d+ processes running, (\d+) bytes of output held", log)
    assert m, log[-3000:]
    assert int(m.group(1)) > 0, "nothing produced in the gap was delivered"
    assert d.sandbox_status(sid) == "running"
    # the held output drained, so the fast writer runs again
    assert wait_until(lambda: counter(pid1, "/tmp/fast") > fast_gap + 100, 20), (fast_gap, counter(pid1, "/tmp/fast"))
    # the official SDK's Sandbox.connect(id) at once (and extendTimeout on the adopted one)
    sdk = os.path.join(os.path.dirname(__file__), "..", "sdk")
    assert os.path.isdir(os.path.join(sdk, "node_modules", "@deno", "sandbox")), \
        "tests/sdk/node_modules is missing: run scripts/test.sh's npm step (npm ci in tests/sdk)"
    r = subprocess.run(["node", os.path.join(sdk, "connect_check.mjs"), sid], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "DENO_SANDBOX_ENDPOINT": d.url, "DENO_DEPLOY_ENDPOINT": d.url,
                                        "DENO_DEPLOY_TOKEN": d.token})
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["id"] == sid and seen["keep"] == "kept\n" and seen["greeting"] == "hi", seen
    assert seen["extended"] > now_ms() + 300000, seen
    # connect() at once, and everything works: files, env, processes, network, secrets, labels
    with d.connect_sandbox(sid) as c:
        r = c.sh("cat /tmp/keep; echo $GREETING")
        assert r["code"] == 0 and r["stdout"] == b"kept\nhi\n", r
        assert c.call("envGet", {"key": "GREETING"}) == "hi"
        c.call("writeFile", {"path": "/tmp/after", "content": base64.b64encode(b"written after").decode()})
        assert c.sh("cat /tmp/after")["stdout"] == b"written after"
        assert "hello from" in out(c.sh("curl -sS -m 10 http://example.test/"))
        r = c.sh("curl -sS -m 10 http://other.test/; echo rc=$?")
        assert "hello from" not in out(r), out(r)  # the policy came back too
        pos = ts.log_pos(env)
        r = c.sh('curl -sS -m 10 -H "Authorization: Bearer $API_KEY" https://api.secret.test/v1/x')
        assert r["code"] == 0, out(r)
        got = ts.echoed(env, pos)
        assert got and got[-1]["headers"]["Authorization"] == "Bearer " + ts.SECRET, got
        assert ts.SECRET not in out(r)
    assert [s for s in d.list_sandboxes(labels={"t": how}) if s["id"] == sid]
    st, _, body = Ingress(d).get(url, "/")  # a new hutch-ingress, the same URL (name and port)
    assert (st, body) == (200, f"hello from {how}\n".encode()), (st, body, log[-2000:])
    assert pid_alive(pid1) and init_pid(d, sid) == pid1
    # and when it is killed now, nothing of it remains
    assert d.http("DELETE", f"/api/v3/sandbox/{sid}").status < 300
    assert_gone(d, sid, pids)
    assert wait_until(lambda: not (links & set(sandbox_links(d.netns_fd))), 10), "its veth outlived it"


def test_timeout_passed_killed_and_session_sandboxes_across_a_restart(env):
    d = env.hutchd
    timed = d.create_sandbox({"stop_at_ms": now_ms() + 6000})
    doomed = d.create_sandbox({"stop_at_ms": now_ms() + 600000})
    lone = d.create_sandbox()       # session sandbox nobody comes back to
    back = d.create_sandbox()       # session sandbox its client reconnects to
    for s in (timed, doomed, lone, back):
        assert s.sh("sleep 1000 >/dev/null 2>&1 & echo ok")["code"] == 0
    # extended: its agent learns the latest timeout
    timed_stop_at = now_ms() + 9000
    r = d.http("PATCH", f"/api/v3/sandbox/{timed.id}", body=b'{"stop_at_ms": %d}' % timed_stop_at,
               headers={"Content-Type": "application/json"})
    assert r.status == 200 and r.json()["stop_at_ms"] == timed_stop_at, (r.status, r.body)
    pids = {s.id: sandbox_cgroup_pids(d.cgroup_name, s.id) for s in (timed, doomed, lone, back)}
    doomed_init = init_pid(d, doomed.id)
    timed_init = init_pid(d, timed.id)
    lone_init = init_pid(d, lone.id)
    d.kill_hard()
    for s in (timed, doomed, lone, back):
        with contextlib.suppress(OSError):
            s.ws.sock.close()
    os.kill(doomed_init, signal.SIGKILL)     # killed while no hutchd ran
    assert wait_until(lambda: not pid_alive(doomed_init), 10)
    assert wait_until(lambda: now_ms() > timed_stop_at + 500, 15)  # its timeout passes in the gap
    # waiting for a hutchd never keeps a sandbox past its timeout: its init ended it
    assert wait_until(lambda: not pid_alive(timed_init), 10), "the timed sandbox outlived its timeout"
    assert pid_alive(lone_init)
    d.start()
    assert_gone(d, timed.id, pids[timed.id])
    assert_gone(d, doomed.id, pids[doomed.id])
    assert d.sandbox_status(lone.id) == "running" and d.sandbox_status(back.id) == "running"
    with d.connect_sandbox(back.id) as c:
        assert c.sh("echo back")["stdout"] == b"back\n"
        # past the grace: the one nobody reconnected to is stopped, the other lives on
        assert_gone(d, lone.id, pids[lone.id])
        assert d.sandbox_status(back.id) == "running"
        assert c.sh("echo still")["stdout"] == b"still\n"
    # a session sandbox still stops with its last connection
    assert_gone(d, back.id, pids[back.id])


def pidfd_getfd(pid, fd):
    libc = ctypes.CDLL(None, use_errno=True)
    pfd = os.pidfd_open(pid)
    try:
        r = libc.syscall(438, pfd, fd, 0)  # pidfd_getfd
        if r < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return r
    finally:
        os.close(pfd)


def frame(t, payload, length=None):
    return struct.pack("<IHHI", len(payload) if length is None else length, t, 0, 0) + payload


HOSTILE = {
    "bad header": b"\xff" * 12,
    "ready instead of hello": frame(HX_READY, b'{"ok":true}'),
    "hello not json": frame(HX_HELLO, b"\x00{{{not json"),
    "hello wrong fields": frame(HX_HELLO, b'{"pids":"all","held":-5}'),
}


def test_hostile_agent_replies_on_reconnect_stop_only_that_sandbox(env):
    """Each sandbox's init is frozen and its listening socket answered by the
    test (the same socket, so SO_PEERCRED still names that init), as an init
    taken over by root inside the sandbox could; one more socket is replaced
    by the test's own (another peer). hutchd stops exactly those sandboxes,
    cleans them up, keeps running and adopts the healthy one."""
    d = env.hutchd
    healthy = d.create_sandbox({"stop_at_ms": now_ms() + 600000})
    assert healthy.sh("echo kept > /tmp/keep")["code"] == 0
    bad = {k: d.create_sandbox({"stop_at_ms": now_ms() + 600000}) for k in list(HOSTILE) + ["another peer"]}
    pids = {s.id: sandbox_cgroup_pids(d.cgroup_name, s.id) for s in bad.values()}
    inits = {k: init_pid(d, s.id) for k, s in bad.items()}
    d.kill_hard()
    for s in [healthy, *bad.values()]:
        with contextlib.suppress(OSError):
            s.ws.sock.close()
    socks, threads = [], []

    def answer(lsock, data):
        with contextlib.suppress(OSError):
            c, _ = lsock.accept()
            socks.append(c)
            c.sendall(data)

    for k, s in bad.items():
        if k == "another peer":
            path = os.path.join(d.state_dir, "sandboxes", s.id, "agent.sock")
            os.unlink(path)
            lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            lsock.bind(path)
            lsock.listen(1)
            data = frame(HX_HELLO, b'{"pids":[],"held":0}')  # a perfect hello, from the wrong process
        else:
            os.kill(inits[k], signal.SIGSTOP)
            lsock = socket.socket(fileno=pidfd_getfd(inits[k], 6))
            lsock.settimeout(30)  # the file description is the init's: O_NONBLOCK from its loop
            data = HOSTILE[k]
        socks.append(lsock)
        t = threading.Thread(target=answer, args=(lsock, data), daemon=True)
        t.start()
        threads.append(t)
    try:
        mark = len(d._log_text())
        d.start()
        log = log_after(d, mark)
        for k, s in bad.items():
            assert_gone(d, s.id, pids[s.id] | {inits[k]})
        assert log.count("agent protocol violation") >= len(HOSTILE), log[-6000:].replace("--resolve", "")
        assert "its agent socket is not served by its init" in log, log[-3000:]
        assert d.alive()
        with d.connect_sandbox(healthy.id) as c:
            assert c.sh("cat /tmp/keep")["stdout"] == b"kept\n"
        assert d.http("DELETE", f"/api/v3/sandbox/{healthy.id}").status < 300
    finally:
        for k, p in inits.items():
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGCONT)
        for s in socks:
            s.close()
        for t in threads:
            t.join(5)


def test_live_restore_flag_is_validated():
    r = subprocess.run([hutchd_path(), "--live-restore", "soon"], capture_output=True, text=True)
    assert r.returncode == 2 and "--live-restore" in r.stderr, r
