# The sandbox's leg of a proxied connection (docs/performance/proxy.md, "The egress
# proxy"): BIG TCP on the sandbox's veth and Reno as the congestion control
# of the connections that stay on this host (the sandbox's own, and the
# proxy's accepted ones), while the proxy's upstream connections keep the
# host's default. What must not change with them: byte-exact relaying both
# ways through the splice relay, exact byte counts in the network report,
# and allowNet refusals. hutchd runs in a throwaway namespace (netenv.py).
import json
import os
import platform
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netenv import running, out, wait_audit, UP_A  # noqa: E402

ECHO_PORT = 7  # netenv's raw TCP echo on 192.0.2.2

# Sends N pseudo-random bytes to the echo server while reading them back;
# prints the byte counts and both digests.
ECHO_CLIENT = r'''
import hashlib, os, socket, sys, threading
n, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = os.urandom(1 << 20)
s = socket.create_connection((host, port), timeout=60)
sent = hashlib.sha256()
def send():
    left = n
    while left:
        k = min(left, len(data))
        s.sendall(data[:k]); sent.update(data[:k]); left -= k
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
got, h = 0, hashlib.sha256()
while True:
    b = s.recv(1 << 20)
    if not b: break
    got += len(b); h.update(b)
t.join()
print(n, got, sent.hexdigest(), h.hexdigest())
'''

# Holds one connection to the echo server open for 8 seconds.
HOLD = r'''
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"x"); s.recv(1)
print(s.getsockname()[0], s.getsockname()[1], flush=True)
time.sleep(8)
'''


def big_tcp_kernel():
    """IPv4 BIG TCP is in Linux 6.3 and later."""
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return (major, minor) >= (6, 3)


@pytest.fixture(scope="module")
def net():
    with running(tag="leg") as env:
        yield env


@pytest.fixture
def sb_factory(net):
    made = []

    def make(allow_net):
        sb = net.hutchd.create_sandbox({"allow_net": allow_net})
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.ws.close()


def sandbox_addr(sb):
    r = sb.sh("ip -4 -o addr show dev eth0")
    assert r["code"] == 0, out(r)
    return out(r).split()[3].split("/")[0]


def host_veth(sb):
    """The host end of the sandbox's veth in hutchd's namespace (the test's
    own): the interface whose /30 holds the sandbox's address."""
    sa = [int(x) for x in sandbox_addr(sb).split(".")]
    links = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout)
    for link in links:
        for a in link.get("addr_info", []):
            ha = [int(x) for x in a["local"].split(".")]
            if a["prefixlen"] == 30 and ha[:3] == sa[:3] and ha[3] // 4 == sa[3] // 4:
                return link["ifname"]
    raise AssertionError(f"no host veth for {sa}: {links}")


def rx(ifname):
    st = json.loads(subprocess.run(["ip", "-s", "-j", "link", "show", "dev", ifname], capture_output=True, text=True,
                                   check=True).stdout)[0]["stats64"]["rx"]
    return st["packets"], st["bytes"]


def test_splice_relay_is_byte_exact_both_ways_and_counted_exactly(net, sb_factory):
    sb = sb_factory([f"{UP_A}:{ECHO_PORT}"])
    veth = host_veth(sb)
    sb.run("bash", ["-c", f"cat > /tmp/echo.py <<'EOF'\n{ECHO_CLIENT}\nEOF"])
    n = 48 << 20
    p0, b0 = rx(veth)
    r = sb.run("python3", ["/tmp/echo.py", str(n), UP_A, str(ECHO_PORT)], timeout=120)
    p1, b1 = rx(veth)
    assert r["code"] == 0, out(r)
    sent, got, dsent, dgot = out(r).split()
    assert int(sent) == n and int(got) == n and dsent == dgot, out(r)
    # what the proxy counted is what crossed, to the byte, both ways
    rep = wait_audit(net.hutchd, sb.id, lambda rep: rep["bytes_out"] >= n and rep["bytes_in"] >= n, timeout=10)
    dest = [d for d in rep["destinations"] if d["port"] == ECHO_PORT]
    assert len(dest) == 1 and dest[0]["bytes_out"] == n and dest[0]["bytes_in"] == n, rep
    assert rep["bytes_out"] == n and rep["bytes_in"] == n, rep
    # the sandbox's TCP sent the proxy packets above the 64 KiB of plain GSO
    per_packet = (b1 - b0) / max(p1 - p0, 1)
    assert b1 - b0 >= n, (b0, b1)
    if big_tcp_kernel():
        assert per_packet > 65536, f"{p1 - p0} packets, {b1 - b0} bytes on {veth}: no BIG TCP"
    else:
        assert per_packet <= 65536 + 100, per_packet


def test_refusal_is_unchanged_on_the_fast_leg(net, sb_factory):
    sb = sb_factory([f"{UP_A}:{ECHO_PORT}"])
    sb.run("bash", ["-c", f"cat > /tmp/echo.py <<'EOF'\n{ECHO_CLIENT}\nEOF"])
    ok = sb.run("python3", ["/tmp/echo.py", "1000", UP_A, str(ECHO_PORT)])   # positive control
    assert ok["code"] == 0 and out(ok).split()[1] == "1000", out(ok)
    # another port of the same host: the proxy resets it
    r = sb.sh("python3 -c \"import socket; s=socket.create_connection(('192.0.2.2', 80), timeout=5); "
              "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(s.recv(100))\"")
    o = out(r)
    assert "ConnectionResetError" in o or "403" in o, o
    rep = wait_audit(net.hutchd, sb.id, lambda rep: any(a["port"] == 80 for a in rep["audit"]))
    a = [a for a in rep["audit"] if a["port"] == 80]
    assert a[0]["verdict"] == "blocked" and "not in allowNet" in a[0]["reason"], a


def test_sandbox_leg_runs_reno_and_upstream_leg_the_host_default(net, sb_factory):
    sb = sb_factory([f"{UP_A}:{ECHO_PORT}"])
    route = out(sb.sh("ip route show default"))
    assert "congctl reno" in route, route
    host_default = subprocess.run(["sysctl", "-n", "net.ipv4.tcp_congestion_control"], capture_output=True,
                                  text=True, check=True).stdout.strip()
    sp = sb.call("spawn", {"command": "python3", "args": ["-c", HOLD, UP_A, str(ECHO_PORT)],
                           "stdout": "piped", "stderr": "piped"})
    saddr = sandbox_addr(sb)
    deadline = time.monotonic() + 15  # the holder keeps its connection 8 s
    leg, up = None, None
    while time.monotonic() < deadline and not (leg and up):
        ss = subprocess.run(["ss", "-tniH", "state", "established"], capture_output=True, text=True).stdout
        lines = ss.splitlines()
        for i, line in enumerate(lines):
            info = lines[i + 1] if i + 1 < len(lines) else ""
            f = line.split()
            if len(f) < 4:
                continue
            if f[3].startswith(saddr + ":"):  # accepted from the sandbox
                leg = info
            elif f[3] == f"{UP_A}:{ECHO_PORT}":  # the proxy's upstream connection
                up = info
        time.sleep(0.2)
    sb.call("processWait", {"pid": sp["pid"]}, timeout=30)
    assert leg and up, ss
    assert " reno " in f" {leg} ", leg
    assert f" {host_default} " in f" {up} ", (host_default, up)
