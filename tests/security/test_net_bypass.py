# allowNet must hold against hostile code, as app and as root (sudo): every
# way out of the sandbox that does not pass the proxy's policy fails.
# hutchd runs in a throwaway network namespace (tests/integration/netenv.py).
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from netenv import running, out, wait_audit  # noqa: E402

PY = "python3 -c "


@pytest.fixture(scope="module")
def net():
    with running(tag="netsec") as env:
        yield env


@pytest.fixture(scope="module")
def sb(net):
    s = net.hutchd.create_sandbox({"allow_net": ["example.test"]})
    yield s
    s.ws.close()


@pytest.mark.parametrize("sudo", [False, True])
def test_ip_literal_to_blocked_address(sb, sudo):
    r = sb.sh("curl -sS -m3 http://192.0.2.3/; curl -sS -m3 -k https://192.0.2.2/; echo rc=$?", sudo=sudo)
    o = out(r)
    assert "hello from" not in o, o


@pytest.mark.parametrize("sudo", [False, True])
def test_dns_to_other_resolver_udp_and_tcp(sb, sudo):
    # Any port-53 traffic lands on hutch's responder, which says NXDOMAIN for other names.
    script = (PY + "'import socket,struct\n"
              "q=struct.pack(\">HHHHHH\",7,0x100,1,0,0,0)+b\"\\x05other\\x04test\\x00\\x00\\x01\\x00\\x01\"\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2);s.sendto(q,(\"192.0.2.2\",53))\n"
              "r=s.recv(512);print(\"udp-rcode\",r[3]&15,\"answers\",r[7])\n"
              "t=socket.create_connection((\"192.0.2.2\",53),2);t.sendall(struct.pack(\">H\",len(q))+q)\n"
              "r=t.recv(512)[2:];print(\"tcp-rcode\",r[3]&15,\"answers\",r[7])'")
    o = out(sb.sh(script, sudo=sudo))
    assert "udp-rcode 3 answers 0" in o and "tcp-rcode 3 answers 0" in o, o


def test_dns_tunnelling_long_random_labels_gets_nothing(net, sb):
    o = out(sb.sh("for i in 1 2 3; do getent hosts $(head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \\n').x.other.test;"
                  " echo rc=$?; done"))
    assert o.count("rc=2") == 3, o
    rep = wait_audit(net.hutchd, sb.id, lambda rep: True)
    # the audit log keeps a bounded prefix of the name, not the payload
    assert all(len(a["host"]) <= 80 for a in rep["audit"]), rep


@pytest.mark.parametrize("sudo", [False, True])
def test_udp_to_arbitrary_ports_and_icmp(sb, sudo):
    script = (PY + "'import socket\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1);s.sendto(b\"x\",(\"192.0.2.2\",7))\n"
              "try: print(\"got\",s.recv(10))\nexcept Exception as e: print(\"udp-none\",type(e).__name__)\n"
              "try: socket.socket(socket.AF_INET,socket.SOCK_DGRAM,socket.IPPROTO_ICMP).sendto(b\"\\x08\\0\\0\\0\\0\\0\\0\\0\",(\"192.0.2.2\",0)); print(\"icmp-sent\")\n"
              "except Exception as e: print(\"icmp-refused\",e)'")
    o = out(sb.sh(script, sudo=sudo))
    assert "udp-none" in o and "got" not in o, o


def test_raw_and_packet_sockets_refused_even_for_root(sb):
    o = out(sb.sh(PY + "'import socket\nfor a in ((socket.AF_INET,socket.SOCK_RAW,1),(socket.AF_PACKET,socket.SOCK_RAW,0)):\n"
                  "  try: socket.socket(*a); print(\"opened\")\n  except OSError as e: print(\"refused\",e.errno)'", sudo=True))
    assert "opened" not in o and o.count("refused") == 2, o


def test_root_cannot_change_addresses_routes_or_rules(sb):
    o = out(sb.sh("ip addr add 192.0.2.9/24 dev eth0; echo a=$?; ip route add 192.0.2.0/24 dev eth0; echo r=$?; "
                  "ip link set eth0 down; echo l=$?; echo 1 > /proc/sys/net/ipv4/ip_forward; echo s=$?", sudo=True))
    for k in ("a", "r", "l", "s"):
        assert f"{k}=0" not in o, o


def test_sni_differs_from_resolved_allowed_name(sb):
    # resolves example.test legitimately, then asks for other.test in the ClientHello
    o = out(sb.sh("getent hosts example.test >/dev/null; curl -sS -m3 -k --resolve other.test:443:192.0.2.2 "
                  "https://other.test/; echo rc=$?"))
    assert "hello from" not in o, o


def test_host_header_differs_from_address(sb):
    o = out(sb.sh("curl -sS -m3 -H 'Host: example.test' http://192.0.2.3/"))
    assert "not an address of example.test" in o, o


def test_host_switch_on_kept_alive_connection(sb):
    script = (PY + "'import socket,time\ns=socket.create_connection((\"192.0.2.2\",80),3)\n"
              "s.sendall(b\"GET / HTTP/1.1\\r\\nHost: example.test\\r\\n\\r\\n\");time.sleep(0.5);print(s.recv(4096))\n"
              "s.sendall(b\"GET / HTTP/1.1\\r\\nHost: other.test\\r\\n\\r\\n\");time.sleep(0.5);print(s.recv(4096))'")
    o = out(sb.sh(script))
    assert "host=example.test" in o and "host=other.test" not in o and "403" in o, o


@pytest.mark.parametrize("url", ["http://10.200.0.1:{port}/healthz", "http://127.0.0.1:{port}/healthz",
                                 "http://192.0.2.1:{port}/healthz", "http://10.200.0.1:15001/",
                                 "http://10.200.0.1:15053/", "http://[fd68:7574:6368::1]:{port}/healthz"])
def test_hutchd_api_proxy_and_host_services_unreachable(net, sb, url):
    o = out(sb.sh(f"curl -sS -m3 {url.format(port=net.hutchd.port)}; echo rc=$?", sudo=True))
    assert '"ok"' not in o and "sandboxes" not in o, o


def test_other_sandbox_unreachable(net, sb):
    other = net.hutchd.create_sandbox({})
    try:
        ip = net.hutchd.http("GET", f"/api/v2/sandboxes/{other.id}/network").json()["addresses"]["ipv4"]
        other.run("bash", ["-c", "nohup python3 -m http.server 8000 >/dev/null 2>&1 &"])
        o = out(sb.sh(f"curl -sS -m3 http://{ip}:8000/; echo rc=$?", sudo=True))
        assert "Directory listing" not in o, o
    finally:
        other.ws.close()


@pytest.mark.parametrize("spelling", ["EXAMPLE.TEST", "example.test.", "Example.Test."])
def test_case_and_trailing_dot_spellings_are_the_same_name(sb, spelling):
    o = out(sb.sh(f"curl -sS -m3 -4 http://{spelling}/"))
    assert "hello from 192.0.2.2" in o, o


@pytest.mark.parametrize("spelling", ["3221225987", "0xc0.0.0x2.3", "192.0.515"])
def test_decimal_ip_spellings_of_blocked_address(sb, spelling):
    o = out(sb.sh(f"curl -sS -m3 http://{spelling}/; echo rc=$?"))
    assert "hello from" not in o, o


def test_idn_name_is_not_resolved(sb):
    o = out(sb.sh("getent hosts 'exämple.test'; echo rc=$?"))
    assert "rc=2" in o, o


def test_curl_noproxy_changes_nothing(sb):
    o = out(sb.sh("curl -sS -m3 --noproxy '*' --resolve other.test:80:192.0.2.3 http://other.test/"))
    assert "403" in o or "not in allowNet" in o, o


def test_empty_allow_net_has_no_interface(net):
    s = net.hutchd.create_sandbox({"allow_net": []})
    try:
        o = out(s.sh(PY + "'import socket;print(socket.if_nameindex())'; curl -sS -m2 http://192.0.2.2/; echo rc=$?",
                     sudo=True))
        assert "eth0" not in o and "hello" not in o, o
    finally:
        s.ws.close()
