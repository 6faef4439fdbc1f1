# Forbidden ranges (issue 14 part 3, src/proxy/ranges.c) and request heads
# with bytes RFC 9112 does not allow (issue 14 part 5, src/proxy/http1.c).
#
# The upstream namespace of netenv gets extra addresses that stand for cloud
# metadata services and internal networks (they exist only in the namespaces
# this module creates), each with an HTTP server on 80 and an echo on 81.
# From hutchd's side every one answers (the probe works); from a sandbox --
# with no allowNet, with allowNet naming the address, or naming a name that
# --resolve maps to it -- the proxy refuses: 403 naming the range for HTTP, a
# reset for other TCP, the DNS record left out, and an audit line each time.
# The range opened with --allow-range answers through hutch; the pools,
# hutchd's own addresses and loopback stay closed although "opened" too.
import os
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from netenv import UP_A, running, start_upstream, wait_audit  # noqa: E402

# address, the range the proxy must name, the name --resolve maps to it
CLOSED = [
    ("100.100.100.200", "100.64.0.0/10", "alibaba-meta.test"),   # Alibaba Cloud metadata
    ("168.63.129.16", "168.63.129.16/32", "azure-wire.test"),    # Azure WireServer
    ("100.64.0.1", "100.64.0.0/10", "cgnat.test"),
    ("10.1.2.3", "10.0.0.0/8", "lan10.test"),
    ("172.16.5.5", "172.16.0.0/12", "lan172.test"),
    ("192.168.8.8", "192.168.0.0/16", "lan192.test"),            # next to the opened /24
    ("198.18.0.1", "198.18.0.0/15", "bench.test"),
    ("fd00:ec2::254", "fc00::/7", "aws-meta6.test"),             # AWS IMDS over IPv6
    ("64:ff9b::a01:203", "10.0.0.0/8", "nat64.test"),            # NAT64 of 10.1.2.3: judged as IPv4
]
OPENED = ("192.168.7.7", "opened.test")                          # --allow-range 192.168.7.0/24
LATE = ("192.168.7.9", "late.test")       # in the opened /24; becomes one of hutchd's own addresses mid-run
ALL = [c[0] for c in CLOSED] + [OPENED[0]]
HUTCHD_OWN = "192.0.2.1"                                         # netenv: hutchd's side of the veth

UP = r'''
import socket, socketserver, http.server, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"internal host {self.server.server_address[0]}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(4096)
            if not d: return
            self.request.sendall(d)
def server(base, handler, addr, port):
    cls = type("S", (socketserver.ThreadingMixIn, base), {"daemon_threads": True, "allow_reuse_address": True,
               "address_family": socket.AF_INET6 if ":" in addr else socket.AF_INET})
    if base is http.server.HTTPServer:
        cls.server_bind = lambda s: (socketserver.TCPServer.server_bind(s), setattr(s, "server_name", "up"),
                                     setattr(s, "server_port", port))
    return cls((addr, port), handler)
servers = []
for a in sys.argv[1:]:
    servers += [server(http.server.HTTPServer, H, a, 80), server(socketserver.TCPServer, Echo, a, 81)]
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _prepare(env):
    # each fake host: an address in "u" and a route to it in "d" (no default route anywhere)
    for a in ALL:
        plen, extra = ("128", ["nodad"]) if ":" in a else ("32", [])
        _ip("-n", env.u, "addr", "add", f"{a}/{plen}", "dev", "hxnb", *extra)
        _ip("-n", env.d, "route", "add", f"{a}/{plen}", "dev", "hxna")
    return start_upstream(env, "internal.py", UP, *ALL)


def _hutchd_args(env):
    args = [f"--resolve={name}={ip}" for ip, _, name in CLOSED]
    args += [f"--resolve={OPENED[1]}={OPENED[0]}",
             f"--resolve=mixed.test={UP_A}", "--resolve=mixed.test=10.1.2.3",   # rebinding: one good, one LAN
             "--resolve=pool.test=10.200.0.1", f"--resolve=own.test={HUTCHD_OWN}", f"--resolve={LATE[1]}={LATE[0]}",
             "--allow-range", "192.168.7.0/24",
             # opened, yet closed: the pool, loopback, hutchd's own address
             "--allow-range", "10.200.0.0/16", "--allow-range", "127.0.0.0/8",
             "--allow-range", f"{HUTCHD_OWN}/32"]
    return args


@pytest.fixture(scope="module")
def net():
    with running(tag="ranges", prepare=_prepare, extra=_hutchd_args) as env:
        yield env


@pytest.fixture(scope="module")
def sandboxes(net):
    made = {}
    try:
        made["open"] = net.hutchd.create_sandbox({})
        made["by_ip"] = net.hutchd.create_sandbox({"allow_net": [f"[{a}]" if ":" in a else a for a in ALL]})
        made["by_name"] = net.hutchd.create_sandbox(
            {"allow_net": [c[2] for c in CLOSED] + [OPENED[1], "mixed.test", "loop.test", "pool.test", "own.test",
                                                    "example.test"]})
        yield made
    finally:
        for s in made.values():
            s.ws.close()


def url(ip, port=80):
    return f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"


def curl(sb, target, resolve=None):
    args = ["-sS", "-m", "5", "-w", "\ncode=%{http_code}\n"]
    if resolve:
        args += ["--resolve", resolve]
    r = sb.run("curl", args + [target])
    return (r["stdout"] + r["stderr"]).decode(errors="replace")


def direct_get(ip, port=80):
    """From hutchd's namespace (the test process lives there), not through hutch."""
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((ip, port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode(errors="replace")


def blocked_audit(net, sb, ip, text):
    rep = wait_audit(net.hutchd, sb.id, lambda rep: any(a["ip"] == ip and text in a["reason"] for a in rep["audit"]))
    hits = [a for a in rep["audit"] if a["ip"] == ip and text in a["reason"]]
    assert hits and all(a["verdict"] == "blocked" for a in hits), rep["audit"][-5:]
    return hits[-1]


@pytest.mark.parametrize("ip", ALL)
def test_probe_works_from_hutchd_side(net, ip):
    # the positive control for everything below: each host is up and reachable from where the proxy sits
    o = direct_get(ip)
    assert " 200 " in o.splitlines()[0] and f"internal host {ip}" in o, o


@pytest.mark.parametrize("ip,cidr,name", CLOSED)
def test_closed_range_refused_with_no_allow_net(net, sandboxes, ip, cidr, name):
    sb = sandboxes["open"]
    o = curl(sb, url(OPENED[0]))
    assert f"internal host {OPENED[0]}" in o and "code=200" in o, o   # same sandbox, same probe, opened range
    o = curl(sb, url(ip))
    assert "internal host" not in o and "code=403" in o and f"forbidden range: {cidr}" in o, o
    a = blocked_audit(net, sb, ip, f"forbidden range: {cidr}")
    assert a["proto"] == "http" and a["port"] == 80, a


@pytest.mark.parametrize("ip,cidr,name", CLOSED)
def test_closed_range_refused_when_allow_net_names_the_address(net, sandboxes, ip, cidr, name):
    sb = sandboxes["by_ip"]
    o = curl(sb, url(OPENED[0]))
    assert f"internal host {OPENED[0]}" in o, o
    o = curl(sb, url(ip))
    assert "internal host" not in o and "code=403" in o and f"forbidden range: {cidr}" in o, o
    blocked_audit(net, sb, ip, f"forbidden range: {cidr}")


@pytest.mark.parametrize("ip,cidr,name", CLOSED)
def test_closed_range_refused_when_allow_net_names_a_name_for_it(net, sandboxes, ip, cidr, name):
    sb = sandboxes["by_name"]
    fam = "ahostsv6" if ":" in ip else "ahostsv4"
    r = sb.sh(f"getent {fam} {OPENED[1]}; echo rc=$?; getent {fam} {name}; echo rc=$?")
    o = r["stdout"].decode()
    # the opened one resolves (positive control); the closed one gets no record at all
    assert OPENED[0] in o and o.count("rc=0") == 1 and "rc=2" in o and ip not in o, o
    a = blocked_audit(net, sb, ip, "answer left out")
    assert a["proto"] == "dns" and a["host"] == name and cidr in a["reason"], a
    # and with the address given by the client (curl --resolve), the connection is refused
    o = curl(sb, f"http://{name}/", resolve=f"{name}:80:{ip}")
    assert "internal host" not in o and "code=403" in o and f"forbidden range: {cidr}" in o, o


def test_dns_rebinding_answer_keeps_only_the_reachable_address(net, sandboxes):
    sb = sandboxes["by_name"]
    o = sb.sh("getent ahostsv4 mixed.test; echo rc=$?")["stdout"].decode()
    assert UP_A in o and "10.1.2.3" not in o and "rc=0" in o, o
    a = blocked_audit(net, sb, "10.1.2.3", "answer left out")
    assert a["host"] == "mixed.test" and "10.0.0.0/8" in a["reason"], a


@pytest.mark.parametrize("ip,cidr", [("100.100.100.200", "100.64.0.0/10"), ("fd00:ec2::254", "fc00::/7")])
def test_closed_range_other_tcp_gets_a_reset(net, sandboxes, ip, cidr):
    code = ("import socket,sys\n"
            "for ip in sys.argv[1:]:\n"
            "    s=socket.create_connection((ip,81),5); s.sendall(b'ping\\n')\n"
            "    try: print(ip, repr(s.recv(100)))\n"
            "    except OSError as e: print(ip, type(e).__name__)\n")
    r = sandboxes["open"].run("python3", ["-c", code, OPENED[0], ip])
    o = (r["stdout"] + r["stderr"]).decode()
    assert f"{OPENED[0]} b'ping\\n'" in o, o            # the echo answers through hutch in the opened range
    assert f"{ip} ConnectionResetError" in o, o
    a = blocked_audit(net, sandboxes["open"], ip, f"forbidden range: {cidr}")
    assert a["proto"] == "tcp" and a["port"] == 81, a


def test_opened_range_answers_through_hutch(net, sandboxes):
    for kind in ("open", "by_ip"):
        o = curl(sandboxes[kind], url(OPENED[0]))
        assert f"internal host {OPENED[0]}" in o and "code=200" in o, (kind, o)
    sb = sandboxes["by_name"]
    o = curl(sb, f"http://{OPENED[1]}/")
    assert f"internal host {OPENED[0]}" in o, o
    rep = wait_audit(net.hutchd, sb.id, lambda rep: any(a["ip"] == OPENED[0] and a["verdict"] == "allowed"
                                                        for a in rep["audit"]))
    assert any(a["ip"] == OPENED[0] and a["verdict"] == "allowed" for a in rep["audit"]), rep["audit"][-5:]


def test_pool_stays_closed_when_opened(net, sandboxes):
    # another sandbox's address is in the pool (its gateway and hutchd's own
    # addresses are local: nftables resets those before the proxy sees them)
    other = sandboxes["by_ip"]
    ip = net.hutchd.http("GET", f"/api/v2/sandboxes/{other.id}/network").json()["addresses"]["ipv4"]
    assert ip.startswith("10.200."), ip
    other.run("bash", ["-c", "nohup python3 -m http.server 8000 >/dev/null 2>&1 &"])
    r = other.sh("for i in $(seq 50); do curl -s -m1 -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/ "
                 "&& break; sleep 0.1; done")
    assert r["stdout"].decode().endswith("200"), r   # positive control: it listens
    sb = sandboxes["open"]
    o = curl(sb, url(ip, 8000))
    assert "Directory listing" not in o and "code=403" in o, o
    blocked_audit(net, sb, ip, "a sandbox pool or one of hutchd's own addresses")


@pytest.mark.parametrize("name,ip,text", [("pool.test", "10.200.0.1", "a sandbox pool or one of hutchd's own"),
                                          ("own.test", HUTCHD_OWN, "a sandbox pool or one of hutchd's own"),
                                          ("loop.test", "127.0.0.1", "loopback")])
def test_dns_leaves_out_pool_own_and_loopback_when_opened(net, sandboxes, name, ip, text):
    sb = sandboxes["by_name"]
    o = sb.sh(f"getent ahostsv4 example.test; echo rc=$?; getent ahostsv4 {name}; echo rc=$?")["stdout"].decode()
    assert UP_A in o and ip not in o and o.count("rc=0") == 1 and "rc=2" in o, o
    a = blocked_audit(net, sb, ip, "answer left out")
    assert a["host"] == name and text in a["reason"], a


# ---- request heads (issue 14 part 5) ----

RAW = r'''
import socket, sys
def send(req):
    s = socket.create_connection((sys.argv[1], 80), 5)
    s.sendall(req)
    data = b""
    try:
        while chunk := s.recv(4096):  # every request says Connection: close; the proxy closes after a 400
            data += chunk
    except OSError as e:
        data += repr(e).encode()
    return data
'''


@pytest.fixture(scope="module")
def sb_example(net):
    s = net.hutchd.create_sandbox({"allow_net": ["example.test"]})
    yield s
    s.ws.close()


SMUGGLING = [
    # the form: the proxy judged by the later Host, a lenient server reads three header lines
    (b"GET /\nHost:evil.test\nX:y HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
     b"GET /%0AHost:evil.test%0AX:y HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"),
    # a bare CR after the request line: the proxy read "ost: evil.test"
    (b"GET / HTTP/1.1\rHost: evil.test\r\nHost: example.test\r\nConnection: close\r\n\r\n",
     b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"),
    (b"GET /\x00 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
     b"GET /%00 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"),
    (b"GET / HTTP/1.1\r\nHost: example.test\r\nX-A: b\x01c\r\nConnection: close\r\n\r\n",
     b"GET / HTTP/1.1\r\nHost: example.test\r\nX-A: b c\r\nConnection: close\r\n\r\n"),
]


@pytest.mark.parametrize("bad,good", SMUGGLING, ids=["lf-in-target", "bare-cr", "nul-in-target", "ctl-in-value"])
def test_malformed_request_head_gets_the_proxys_400(net, sb_example, bad, good):
    code = RAW + "print(repr(send(bytes.fromhex(sys.argv[2]))))\nprint(repr(send(bytes.fromhex(sys.argv[3]))))\n"
    r = sb_example.run("python3", ["-c", code, "example.test", good.hex(), bad.hex()])
    lines = r["stdout"].decode().splitlines()
    assert len(lines) == 2, r
    ok, refused = lines
    assert "200 OK" in ok and "hello from 192.0.2.2 host=example.test" in ok, ok     # upstream answers
    assert "400 Bad Request" in refused and "hutch: bad request" in refused, refused  # the proxy, not upstream
    assert "hello from" not in refused, refused
    blocked_audit(net, sb_example, UP_A, "malformed or ambiguous HTTP request head")


def test_malformed_later_head_on_kept_alive_connection_gets_400(net, sb_example):
    code = RAW + (
        "s = socket.create_connection((sys.argv[1], 80), 5)\n"
        "s.sendall(b'GET / HTTP/1.1\\r\\nHost: example.test\\r\\n\\r\\n')\n"
        "first = b''\n"
        "while b'host=example.test' not in first:\n"
        "    c = s.recv(4096)\n"
        "    if not c: break\n"
        "    first += c\n"
        "s.sendall(b'GET /\\nHost:evil.test\\nX:y HTTP/1.1\\r\\nHost: example.test\\r\\n\\r\\n')\n"
        "second = b''\n"
        "while True:\n"
        "    c = s.recv(4096)\n"
        "    if not c: break\n"
        "    second += c\n"
        "print(repr(first)); print(repr(second))\n")
    r = sb_example.run("python3", ["-c", code, "example.test"])
    lines = r["stdout"].decode().splitlines()
    assert len(lines) == 2, r
    assert "hello from 192.0.2.2 host=example.test" in lines[0], lines
    assert "400 Bad Request" in lines[1] and "hutch: bad request" in lines[1] and "hello" not in lines[1], lines


def test_an_address_hutchd_gains_later_is_refused_too(net, sandboxes):
    # hutchd re-reads its own addresses on a timer (not at each sandbox's
    # attach, which cost a dump of every link): an address the operator adds
    # to the host after start is closed to sandboxes within seconds. Probed
    # through DNS, where the proxy's list is the only judge (a connection to
    # a local address is also reset by nftables before the proxy sees it).
    sb = sandboxes["open"]
    probe = f"getent ahostsv4 {LATE[1]}; echo rc=$?"
    o = sb.sh(probe)["stdout"].decode()
    assert LATE[0] in o and "rc=0" in o, o          # before: an ordinary address in an opened range
    _ip("-n", net.d, "addr", "add", f"{LATE[0]}/32", "dev", "lo")
    try:
        deadline = time.monotonic() + 20
        while LATE[0] in o and time.monotonic() < deadline:
            time.sleep(0.5)
            o = sb.sh(probe)["stdout"].decode()
        assert LATE[0] not in o and "rc=2" in o, o
        a = blocked_audit(net, sb, LATE[0], "answer left out")
        assert a["host"] == LATE[1] and "a sandbox pool or one of hutchd's own" in a["reason"], a
    finally:
        _ip("-n", net.d, "addr", "del", f"{LATE[0]}/32", "dev", "lo")
