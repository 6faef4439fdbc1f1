# allowNet must hold against hostile code, as app and as root (sudo): every
# way out of the sandbox that does not pass the proxy's policy fails.
# hutchd runs in a throwaway network namespace (tests/integration/netenv.py)
# that forwards like a router and has hutchd's API on all its addresses, so
# that hutch's own rules, not a missing route or a loopback-only listener,
# are what stops each probe. Each refusal is checked by its exact errno,
# status, reset or audit record, next to a control showing that the same
# probe reaches its target from where it should (docs/testing.md).
import os
import socket
import ssl
import struct
import subprocess
import sys
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutchlib import sandbox_cgroup_pids  # noqa: E402
from netenv import forward_to_sandboxes, hutch_counters, out, running, wait_audit  # noqa: E402

PY = "python3 -c "
FWD_DROP = ("sb_fwd", 'iifname "hxs*" drop')
IN_RESET = ("sb_from", "meta l4proto tcp reject with tcp reset")


@pytest.fixture(scope="module")
def net():
    with running(tag="netsec", prepare=forward_to_sandboxes) as env:
        # the API on every address of hutchd's namespace, the sandboxes'
        # gateways included: only the firewall keeps sandboxes away from it
        env.hutchd.extra_args += ["--listen", f"[::]:{env.hutchd.port}"]
        env.hutchd.restart()
        yield env


@pytest.fixture(scope="module")
def sb(net):
    s = net.hutchd.create_sandbox({"allow_net": ["example.test"]})
    yield s
    s.ws.close()


@pytest.fixture
def fresh(net):
    """A sandbox that has resolved nothing yet (so the proxy knows no name for
    any address), allowed example.test only."""
    s = net.hutchd.create_sandbox({"allow_net": ["example.test"]})
    yield s
    s.ws.close()


def report(net, s):
    r = net.hutchd.http("GET", f"/api/v2/sandboxes/{s.id}/network")
    assert r.status == 200, r
    return r.json()


def audited(net, s, **want):
    """The audit records of s matching every field of want (waits until one exists)."""
    def match(rep):
        return [a for a in rep["audit"] if all(a.get(k) == v for k, v in want.items())]
    return match(wait_audit(net.hutchd, s.id, lambda rep: match(rep)))


def host_get(url):
    """GET from hutchd's namespace (the host side of every sandbox)."""
    ctx = ssl._create_unverified_context()
    with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
        return r.status, r.read().decode()


def curl(s, args, sudo=False):
    """curl in the sandbox: (exit code, HTTP status, body + stderr)."""
    r = s.sh(f"curl -sS -m5 -w '\\n%{{http_code}}' {args}; echo \" rc=$?\"", sudo=sudo)
    o = out(r)
    code = int(o.rsplit("rc=", 1)[1].split()[0])
    status = o.rsplit("rc=", 1)[0].split()[-1] if o.rsplit("rc=", 1)[0].split() else ""
    return code, status, o


def connect_errno(s, host, port, sudo=False):
    """errno name of a TCP connect from the sandbox ('ok' if it connected)."""
    script = (PY + f"'import errno,socket\ns=socket.socket(socket.AF_INET6 if \":\" in \"{host}\" else socket.AF_INET)\n"
              f"s.settimeout(5)\ntry: s.connect((\"{host}\",{port})); print(\"errno=ok\")\n"
              "except socket.timeout: print(\"errno=timeout\")\n"
              "except OSError as e: print(\"errno=\"+errno.errorcode[e.errno])'")
    o = out(s.sh(script, sudo=sudo))
    assert "errno=" in o, o
    return o.split("errno=")[1].split()[0]


def dns_query(name, qtype=1, qid=7):
    q = struct.pack(">HHHHHH", qid, 0x100, 1, 0, 0, 0)
    for label in name.split(b"."):
        q += bytes([len(label)]) + label
    return q + b"\0" + struct.pack(">HH", qtype, 1)


# Runs in the sandbox: a raw DNS query (UDP, then TCP) to an address and
# prints "udp RCODE ANCOUNT" and "tcp RCODE ANCOUNT" for it.
DNS_PROBE = r'''
import socket, struct, sys
q = bytes.fromhex(sys.argv[1]); host = sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(q, (host, 53))
r = s.recv(512); print("udp", r[3] & 15, struct.unpack(">H", r[6:8])[0])
t = socket.create_connection((host, 53), 3); t.sendall(struct.pack(">H", len(q)) + q)
r = t.recv(512)[2:]; print("tcp", r[3] & 15, struct.unpack(">H", r[6:8])[0])
'''


def sandbox_dns(s, name, host="192.0.2.2", sudo=False):
    s.call("writeFile", {"path": "/tmp/dnsq.py", "content": __import__("base64").b64encode(DNS_PROBE.encode()).decode()})
    o = out(s.sh(f"python3 /tmp/dnsq.py {dns_query(name).hex()} {host}", sudo=sudo))
    got = {}
    for ln in o.splitlines():
        w = ln.split()
        if len(w) == 3 and w[0] in ("udp", "tcp"):
            got[w[0]] = (int(w[1]), int(w[2]))
    assert set(got) == {"udp", "tcp"}, o
    return got


# ---------------------------------------------------------------- addresses without a name

@pytest.mark.parametrize("sudo", [False, True])
def test_ip_literal_to_blocked_address(net, fresh, sudo):
    # control: both servers really answer there
    assert host_get("http://192.0.2.3/")[1].startswith("hello from 192.0.2.3")
    assert host_get("https://192.0.2.2/")[1].startswith("hello from 192.0.2.2")
    code, status, o = curl(fresh, "http://192.0.2.3/", sudo=sudo)
    assert status == "403" and "no host name (TLS SNI, HTTP Host or an earlier DNS answer) and the address " \
        "is not in allowNet" in o, o
    code, status, o = curl(fresh, "-k https://192.0.2.2/", sudo=sudo)
    assert code == 35 and "Connection reset by peer" in o, o
    assert audited(net, fresh, proto="http", ip="192.0.2.3", port=80, verdict="blocked")
    assert audited(net, fresh, proto="tls", ip="192.0.2.2", port=443, verdict="blocked")
    # control: the same sandbox reaches the allowed name on that address
    code, status, o = curl(fresh, "-k -4 https://example.test/", sudo=sudo)
    assert status == "200" and "hello from 192.0.2.2 host=example.test" in o, o


@pytest.mark.parametrize("spelling", ["3221225987", "0xc0.0.0x2.3", "192.0.515"])
def test_decimal_ip_spellings_of_blocked_address(net, fresh, spelling):
    # curl (through the C library) reads each as 192.0.2.3 and says so in Host
    code, status, o = curl(fresh, f"-v http://{spelling}/")
    assert "Connected to" in o and "192.0.2.3" in o, o
    assert status == "403" and "hutch: blocked by the sandbox's network policy: no host name" in o, o
    assert audited(net, fresh, ip="192.0.2.3", port=80, verdict="blocked")


# ---------------------------------------------------------------- DNS

@pytest.mark.parametrize("sudo", [False, True])
def test_dns_to_other_resolver_udp_and_tcp(sb, sudo):
    # control: nothing serves DNS on 192.0.2.2 (UDP: port unreachable, TCP: refused) ...
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    u.connect(("192.0.2.2", 53))
    u.send(dns_query(b"example.test"))
    with pytest.raises(ConnectionRefusedError):
        u.recv(512)
    u.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("192.0.2.2", 53), 3)
    # ... so what answers the sandbox there is hutch's responder: the allowed
    # name resolves, another is NXDOMAIN with no answer
    assert sandbox_dns(sb, b"example.test", sudo=sudo) == {"udp": (0, 1), "tcp": (0, 1)}
    assert sandbox_dns(sb, b"other.test", sudo=sudo) == {"udp": (3, 0), "tcp": (3, 0)}


def test_dns_tunnelling_long_random_labels_gets_nothing(net, fresh):
    o = out(fresh.sh("for i in 1 2 3; do n=$(head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \\n').x.other.test; "
                     "echo name=$n; getent hosts $n; echo rc=$?; done"))
    names = [ln[5:] for ln in o.splitlines() if ln.startswith("name=")]
    assert len(names) == 3 and o.count("rc=2") == 3, o  # NXDOMAIN each
    recs = audited(net, fresh, proto="dns", verdict="blocked")
    hosts = {a["host"] for a in recs}
    # the audit keeps the first 64 characters of a name, not the payload
    for n in names:
        assert n[:64] + "..." in hosts, (n, recs)
    assert all(len(h) <= 67 for h in hosts), recs


def test_idn_name_is_not_example_test(net, fresh):
    """A look-alike name sent as raw UTF-8 (the C library may refuse to send
    it at all, so the query is built by hand) and its xn-- form are NXDOMAIN."""
    assert sandbox_dns(fresh, b"example.test") == {"udp": (0, 1), "tcp": (0, 1)}  # control
    assert sandbox_dns(fresh, "exämple.test".encode()) == {"udp": (3, 0), "tcp": (3, 0)}
    assert sandbox_dns(fresh, b"xn--exmple-cua.test") == {"udp": (3, 0), "tcp": (3, 0)}
    assert audited(net, fresh, proto="dns", host="xn--exmple-cua.test", verdict="blocked")


# ---------------------------------------------------------------- UDP, ICMP, raw sockets

UDP_PROBE = (PY + "'import socket\nfor a,f in ((\"192.0.2.2\",socket.AF_INET),(\"2001:db8::2\",socket.AF_INET6)):\n"
             " s=socket.socket(f,socket.SOCK_DGRAM);s.settimeout(2);s.sendto(b\"x\",(a,7))\n"
             " try: print(a,\"got\",s.recv(10))\n except socket.timeout: print(a,\"udp-none\")'")


def host_udp_echo(addr, family):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(b"hello", (addr, 7))
    try:
        return s.recv(10)
    finally:
        s.close()


@pytest.mark.parametrize("sudo", [False, True])
def test_udp_to_arbitrary_ports_is_dropped_by_hutch(net, sb, sudo):
    # control: the upstream echoes UDP, and hutchd's namespace routes to it
    assert host_udp_echo("192.0.2.2", socket.AF_INET) == b"hello"
    assert host_udp_echo("2001:db8::2", socket.AF_INET6) == b"hello"
    before = hutch_counters(net).get(FWD_DROP, 0)
    o = out(sb.sh(UDP_PROBE, sudo=sudo))
    assert o.count("udp-none") == 2 and "got" not in o, o
    # and it is hutch's forward rule that dropped both datagrams
    assert hutch_counters(net).get(FWD_DROP, 0) >= before + 2


@pytest.mark.parametrize("sudo", [False, True])
def test_icmp_sockets_refused(sb, sudo):
    # control: the upstream answers an echo request from hutchd's namespace
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    r.settimeout(3)
    r.sendto(b"\x08\0\xf7\xff\0\0\0\0", ("192.0.2.2", 0))
    data, _ = r.recvfrom(100)
    r.close()
    assert data[20] == 0, data  # echo reply
    # the sandbox cannot open an ICMP socket at all: ping sockets need a
    # group in the netns's ping_group_range (none of the sandbox's), raw
    # ones CAP_NET_RAW over a netns that the host's user namespace owns
    o = out(sb.sh(PY + "'import errno,socket\nfor t in (socket.SOCK_DGRAM,socket.SOCK_RAW):\n"
                  " try: socket.socket(socket.AF_INET,t,socket.IPPROTO_ICMP); print(\"opened\")\n"
                  " except OSError as e: print(\"refused\",errno.errorcode[e.errno])'", sudo=sudo))
    assert o.split() == ["refused", "EACCES", "refused", "EPERM"], o


def test_raw_and_packet_sockets_refused_even_for_root(sb):
    # control: with CAP_NET_RAW (root in hutchd's namespace) both open
    for a in ((socket.AF_INET, socket.SOCK_RAW, 1), (socket.AF_PACKET, socket.SOCK_RAW, 0)):
        socket.socket(*a).close()
    o = out(sb.sh(PY + "'import errno,socket\nfor a in ((socket.AF_INET,socket.SOCK_RAW,1),(socket.AF_PACKET,socket.SOCK_RAW,0)):\n"
                  "  try: socket.socket(*a); print(\"opened\")\n"
                  "  except OSError as e: print(\"refused\",errno.errorcode[e.errno])'", sudo=True))
    assert o.split() == ["refused", "EPERM", "refused", "EPERM"], o


NET_CHANGES = ("ip addr add 192.0.2.9/24 dev eth0; echo a=$?; ip route add 198.51.100.0/24 dev eth0; echo r=$?; "
               "ip link set eth0 down; echo l=$?; echo 1 > /proc/sys/net/ipv4/ip_forward; echo s=$?")


def test_root_cannot_change_addresses_routes_or_rules(net, sb):
    # control: the same commands work with CAP_NET_ADMIN over a netns (a
    # throwaway one of our own, with a veth called eth0)
    r = subprocess.run(["unshare", "--net", "bash", "-c", "ip link add eth0 type veth peer name eth1 && "
                        "ip link set eth0 up && "
                        + NET_CHANGES], capture_output=True, text=True, timeout=30)
    assert all(f"{k}=0" in r.stdout for k in "arls"), r
    o = out(sb.sh(NET_CHANGES, sudo=True))
    assert "a=2" in o and "r=2" in o and "l=2" in o and "s=1" in o, o
    assert o.count("RTNETLINK answers: Operation not permitted") == 3, o
    assert "/proc/sys/net/ipv4/ip_forward: Read-only file system" in o, o
    # and nothing changed, seen from the host
    pid = min(sandbox_cgroup_pids(net.hutchd.cgroup_name, sb.id))
    show = subprocess.run(["nsenter", "-t", str(pid), "-n", "sh", "-c",
                           "ip -o addr show dev eth0; ip route; ip -o link show dev eth0; "
                           "cat /proc/sys/net/ipv4/ip_forward"], capture_output=True, text=True).stdout
    assert "192.0.2.9" not in show and "198.51.100.0/24" not in show and "state UP" in show, show
    assert show.split()[-1] == "0", show


# ---------------------------------------------------------------- names that disagree

def test_sni_differs_from_resolved_allowed_name(net, sb):
    # resolves example.test legitimately, then asks for other.test in the ClientHello
    code, status, o = curl(sb, "-k --resolve other.test:443:192.0.2.2 https://other.test/")
    assert code == 35 and "Connection reset by peer" in o, o
    assert audited(net, sb, proto="tls", host="other.test", ip="192.0.2.2", verdict="blocked",
                   reason="host other.test port 443 is not in allowNet")
    code, status, o = curl(sb, "-k --resolve example.test:443:192.0.2.2 https://example.test/")  # control
    assert status == "200" and "hello from 192.0.2.2 host=example.test" in o, o


def test_host_header_differs_from_address(net, sb):
    code, status, o = curl(sb, "-H 'Host: example.test' http://192.0.2.3/")
    assert status == "403" and "192.0.2.3 is not an address of example.test" in o, o
    code, status, o = curl(sb, "-H 'Host: example.test' http://192.0.2.2/")  # control
    assert status == "200" and "hello from 192.0.2.2 host=example.test" in o, o


def test_host_switch_on_kept_alive_connection(sb):
    script = (PY + "'import socket,time\ns=socket.create_connection((\"192.0.2.2\",80),3)\n"
              "s.sendall(b\"GET / HTTP/1.1\\r\\nHost: example.test\\r\\n\\r\\n\");time.sleep(0.5);print(s.recv(4096))\n"
              "s.sendall(b\"GET / HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n\");time.sleep(0.5);print(s.recv(4096))'")
    o = out(sb.sh(script))
    assert "host=example.test" in o and "host=other.test" not in o and "403" in o, o


def test_curl_noproxy_changes_nothing(sb):
    code, status, o = curl(sb, "--noproxy '*' --resolve other.test:80:192.0.2.3 http://other.test/")
    assert status == "403" and "host other.test port 80 is not in allowNet" in o, o


@pytest.mark.parametrize("spelling", ["EXAMPLE.TEST", "example.test.", "Example.Test."])
def test_case_and_trailing_dot_spellings_are_the_same_name(sb, spelling):
    o = out(sb.sh(f"curl -sS -m3 -4 http://{spelling}/"))
    assert "hello from 192.0.2.2" in o, o


# ---------------------------------------------------------------- hutchd's own addresses

def listening(port):
    """Whether something in hutchd's namespace listens on TCP port (any address)."""
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(f) as fh:
            for ln in fh.readlines()[1:]:
                w = ln.split()
                if int(w[1].rsplit(":", 1)[1], 16) == port and w[3] == "0A":
                    return True
    return False


@pytest.mark.parametrize("target", ["api@gateway4", "api@gateway6", "api@192.0.2.1", "api@2001:db8::1",
                                    "proxy@gateway4", "dns@gateway4", "proxy@gateway6"])
def test_hutchd_api_proxy_and_host_services_unreachable(net, sb, target):
    what, where = target.split("@")
    addrs = report(net, sb)["addresses"]
    host = addrs.get(where, where)
    port = {"api": net.hutchd.port, "proxy": 15001, "dns": 15053}[what]
    # control: it listens there; the API answers on that very address
    assert listening(port), port
    if what == "api":
        url_host = f"[{host}]" if ":" in host else host
        status, body = host_get(f"http://{url_host}:{port}/healthz")
        assert status == 200 and body.startswith('{"ok":true'), (status, body)
    before = hutch_counters(net).get(IN_RESET, 0)
    # the sandbox (root too) gets a TCP reset from hutch's input rule
    assert connect_errno(sb, host, port, sudo=True) == "ECONNREFUSED"
    assert hutch_counters(net).get(IN_RESET, 0) > before


def test_other_sandbox_unreachable(net, sb):
    other = net.hutchd.create_sandbox({})
    try:
        ip = report(net, other)["addresses"]["ipv4"]
        r = other.sh("(python3 -m http.server 8000 >/dev/null 2>&1 &); for i in $(seq 100); do "
                     "curl -s -o /dev/null http://127.0.0.1:8000/ && echo up && break; sleep 0.1; done")
        assert out(r).strip() == "up", out(r)
        # control: it answers on that address (hutch's rules let nothing in
        # from outside, the host included: sb_from resets the replies too)
        assert "Directory listing" in out(other.sh(f"curl -sS -m5 http://{ip}:8000/")), ip
        code, status, o = curl(sb, f"http://{ip}:8000/", sudo=True)
        assert status == "403" and "destination is in a forbidden range: a sandbox pool or one of hutchd's own addresses" in o, o
        assert audited(net, sb, ip=ip, port=8000, verdict="blocked")
    finally:
        other.ws.close()


def test_empty_allow_net_has_no_interface(net):
    assert host_get("http://192.0.2.2/")[0] == 200  # control
    s = net.hutchd.create_sandbox({"allow_net": []})
    try:
        o = out(s.sh(PY + "'import socket;print(socket.if_nameindex())'", sudo=True))
        assert o.strip() == "[(1, 'lo')]", o
        assert connect_errno(s, "192.0.2.2", 80, sudo=True) == "ENETUNREACH"
    finally:
        s.ws.close()

