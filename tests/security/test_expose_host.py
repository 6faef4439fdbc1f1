# Exposed ports in host mode (--ingress-domain): NAME.BASE on one port,
# routing by Host; with the operator's own certificate. No DNS is involved:
# the client connects to 127.0.0.1 and names the host in SNI and Host.
import os
import socket
import ssl
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutchlib import Hutchd, free_port  # noqa: E402
from expose_util import expose, parse_response, start_server  # noqa: E402

BASE = "preview.test"


@pytest.fixture(scope="module")
def host_mode(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("hutchd tests need root (run scripts/test.sh as root)")
    # the operator's wildcard certificate, from a CA of the operator's own
    t = tmp_path_factory.mktemp("opca")
    ca_key, ca_crt, key, csr, crt = (str(t / n) for n in ("ca.key", "ca.crt", "w.key", "w.csr", "w.crt"))
    ext = t / "ext.cnf"
    ext.write_text(f"subjectAltName=DNS:*.{BASE},DNS:{BASE}\nextendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key,
        "-out", ca_crt, "-days", "2", "-subj", "/CN=operator test CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
        "-subj", f"/CN=*.{BASE}")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
        "-days", "2", "-extfile", str(ext))
    port = free_port()
    d = Hutchd(tag="exphost", extra_args=["--ingress-domain", BASE, "--ingress-port", str(port),
                                          "--ingress-cert", crt, "--ingress-key", key]).start()
    a, b = d.create_sandbox(), d.create_sandbox()
    try:
        start_server(a, 8001, "A")
        start_server(b, 8001, "B")
        yield d, port, ca_crt, a, expose(d, a, 8001), b, expose(d, b, 8001)
    finally:
        a.ws.close()
        b.ws.close()
        d.stop()


def exchange(port, ca, sni, data):
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(data)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            return out, s.getpeercert()


def req(host, path="/", close=True):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode()


def test_names_route_by_host_with_the_operators_certificate(host_mode):
    d, port, ca, a, ua, b, ub = host_mode
    ha, hb = ua[len("https://"):], ub[len("https://"):]
    assert ha.endswith(f".{BASE}:{port}") and len(ha.split(".")[0]) == 26
    out, cert = exchange(port, ca, ha.split(":")[0], req(ha))
    assert parse_response(out)[2] == b"hello from A\n"
    assert dict(x[0] for x in cert["issuer"])["commonName"] == "operator test CA"
    assert parse_response(exchange(port, ca, hb.split(":")[0], req(hb))[0])[2] == b"hello from B\n"


def test_unknown_name_and_foreign_host_on_one_connection(host_mode):
    d, port, ca, a, ua, b, ub = host_mode
    ha, hb = ua[len("https://"):], ub[len("https://"):]
    unknown = "a" * 26 + f".{BASE}:{port}"
    st, h, _ = parse_response(exchange(port, ca, unknown.split(":")[0], req(unknown))[0])
    assert st == 404 and h.get("x-hutch-ingress") == ["404"]
    # a connection that served A, then names B: 421, never B's server through A's upstream
    out, _ = exchange(port, ca, ha.split(":")[0], req(ha, close=False) + req(hb))
    assert out.count(b"hello from A\n") == 1 and b"hello from B" not in out
    assert b"HTTP/1.1 421" in out
    # positive control: B on its own connection
    assert parse_response(exchange(port, ca, hb.split(":")[0], req(hb))[0])[2] == b"hello from B\n"
