# Helpers for tests of exposed ports (tests/security/test_expose.py,
# tests/integration): start expose_server.py in a sandbox, expose a port, and
# talk to the ingress over TLS with the install's ingress CA.
import hashlib
import json
import os
import socket
import ssl
import time
import urllib.parse

# expose_server.py's GET /chunks?seed=S: these sizes, each piece from this seed
CHUNK_SIZES = [1, 2, 16383, 16384, 16385, 5, 65536, 100000, 7, 32768, 49155, 131072, 3]


def chunk_plan(seed):
    """The body GET /chunks?seed=S sends."""
    return b"".join((hashlib.sha256(f"{seed}:{i}".encode()).digest() * (n // 32 + 1))[:n]
                    for i, n in enumerate(CHUNK_SIZES))


SERVER_SRC = open(os.path.join(os.path.dirname(__file__), "expose_server.py"), "rb").read()


def start_server(sb, port, marker, wait=True):
    """Runs expose_server.py on port inside the sandbox; waits until it answers there."""
    r = sb.run("bash", ["-c", "cat > /tmp/expose_server.py"], stdin=SERVER_SRC)
    assert r["code"] == 0, r
    sb.call("spawn", {"command": "python3", "args": ["/tmp/expose_server.py", str(port), marker],
                      "stdout": "null", "stderr": "null"})
    if wait:
        for _ in range(100):
            r = sb.sh(f"curl -s --max-time 2 http://127.0.0.1:{port}/")
            if f"hello from {marker}".encode() in r["stdout"]:
                return
            time.sleep(0.1)
        raise AssertionError(f"the server on port {port} in {sb.id} never answered")


def expose(d, sb, port=None, pid=None):
    """POST /expose/http then the exposeHttp RPC, as the SDK does; returns the URL."""
    r = d.http("POST", f"/api/v3/sandbox/{sb.id}/expose/http", body=b"{}",
               headers={"Content-Type": "application/json"})
    assert r.status == 200, (r.status, r.body)
    domain = r.json()["domain"]
    target = {"port": port} if port is not None else {"pid": pid}
    assert sb.call("exposeHttp", {"domain": domain, **target}) is None
    return "https://" + domain


class Ingress:
    """TLS client for the ingress, trusting only this hutchd's ingress CA."""

    def __init__(self, d):
        r = d.http("GET", "/hutch/v1/ingress/ca.crt")
        assert r.status == 200, (r.status, r.body)
        self.ca_pem = r.body.decode()
        self.ca_file = os.path.join(d.tmp, "ingress-ca.pem")
        with open(self.ca_file, "w") as f:
            f.write(self.ca_pem)
        self.ctx = ssl.create_default_context(cafile=self.ca_file)

    @staticmethod
    def split(url):
        u = urllib.parse.urlsplit(url)
        return u.hostname, u.port or 443, u.path

    def connect(self, url, timeout=20):
        host, port, _ = self.split(url)
        raw = socket.create_connection((host, port), timeout=timeout)
        return self.ctx.wrap_socket(raw, server_hostname=host)

    def exchange(self, url, data, timeout=20):
        """Sends data as is, reads until the ingress closes; returns all bytes."""
        s = self.connect(url, timeout)
        try:
            s.sendall(data)
            out = b""
            while True:
                try:
                    b = s.recv(65536)
                except (ConnectionResetError, ssl.SSLError):
                    break
                if not b:
                    break
                out += b
            return out
        finally:
            s.close()

    def get(self, url, path="", headers=None, method="GET", body=b""):
        """One request with Connection: close; returns (status, headers dict lowercased, body)."""
        host, port, prefix = self.split(url)
        h = {"Host": f"{host}:{port}", "Connection": "close", **(headers or {})}
        if body:
            h["Content-Length"] = str(len(body))
        head = f"{method} {prefix}{path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        return parse_response(self.exchange(url, head.encode() + body))


def parse_response(raw):
    if not raw:
        return None, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    if "chunked" in ",".join(headers.get("transfer-encoding", [])):
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return status, headers, body


def server_log(sb, port):
    return sb.sh(f"cat /tmp/requests-{port}.log 2>/dev/null")["stdout"].decode()


def json_body(body):
    return json.loads(body.decode())
