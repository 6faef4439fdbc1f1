# sandbox.fetch (RPC "fetch"): requests made from the sandbox's network
# position -- through hutch-proxy under the sandbox's allowNet -- with request
# bodies as client streams and response bodies as server streams.
import base64
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hutchlib import RpcFailure  # noqa: E402
from netenv import running, start_upstream, wait_audit  # noqa: E402

FETCH_IP = "192.0.2.5"
UP = r'''
import hashlib, http.server, json, socketserver, ssl, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _send(self, code, body, extra=()):
        self.send_response(code)
        for k, v in extra: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        if self.command != "HEAD": self.wfile.write(body)
    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                n = int(self.rfile.readline().strip(), 16)
                if n == 0:
                    self.rfile.readline(); return data
                data += self.rfile.read(n); self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))
    def _any(self):
        data = self._body()
        if self.path.startswith("/redir/"):
            return self._send(int(self.path[7:10]), b"", [("Location", "/echo")])
        if self.path == "/fold":  # an obs-fold continuation line (RFC 9112 5.2)
            return self._send(200, b"ok", [("X-Fold", "a\r\n  b"), ("X-After", "c")])
        if self.path.startswith("/hdrs/"):  # a head with that many header lines
            return self._send(200, b"ok", [(f"X-H{i}", "v") for i in range(int(self.path[6:]))])
        if self.path.startswith("/big/"):
            return self._send(200, b"y" * int(self.path[5:]))
        if self.path == "/slow":  # answers after 30 s: long past any abort
            import time; time.sleep(30)
        self._send(201, json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "len": len(data), "sha": hashlib.sha256(data).hexdigest()}).encode(),
                   [("X-Up", "yes")])
    do_GET = do_POST = do_PUT = do_HEAD = _any
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; allow_reuse_address = True
    def server_bind(self):
        socketserver.TCPServer.server_bind(self); self.server_name = 'up'; self.server_port = self.server_address[1]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
servers = [S((sys.argv[3], 80), H), S((sys.argv[3], 443), H)]
servers[1].socket = ctx.wrap_socket(servers[1].socket, server_side=True)
for s in servers: threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


@pytest.fixture(scope="module")
def env():
    def upstream(net):
        key, net.fetch_cert = os.path.join(net.tmp, "fkey.pem"), os.path.join(net.tmp, "fcert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                        net.fetch_cert, "-days", "2", "-subj", "/CN=fetch.test",
                        "-addext", "subjectAltName=DNS:fetch.test"], check=True, capture_output=True)
        return start_upstream(net, "fetchup.py", UP, net.fetch_cert, key, FETCH_IP, addrs=(FETCH_IP,))

    def args(net):
        return ["--resolve", f"fetch.test={FETCH_IP}", "--upstream-ca", net.fetch_cert]
    with running("fetch", args, upstream) as net:
        yield net


@pytest.fixture
def sbx(env):
    made = []

    def make(allow_net=("fetch.test",)):
        cfg = {} if allow_net is None else {"allow_net": list(allow_net)}
        sb = env.hutchd.create_sandbox(cfg)
        made.append(sb)
        r = sb.request("fetch", {})
        assert r.get("error", {}).get("code") != -32601, f"fetch is not a known method: {r}"
        return sb

    yield make
    for sb in made:
        sb.ws.close()


def fetch(sb, url, method="GET", headers=(), body=None, redirect="follow", timeout=30):
    params = {"url": url, "method": method, "headers": [list(h) for h in headers], "redirect": redirect}
    if body is not None:
        sid = 5000 + sb.next_id
        sb.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.start", "params": {"streamId": sid}})
        params["bodyStreamId"] = sid
        rid = sb.next_id
        sb.next_id += 1
        sb.ws.send_json({"jsonrpc": "2.0", "id": rid, "method": "fetch", "params": params})
        for i in range(0, len(body), 65536):
            sb.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue",
                             "params": {"streamId": sid, "data": base64.b64encode(body[i:i + 65536]).decode()}})
        sb.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.end", "params": {"streamId": sid}})
        r = sb.wait_response(rid, timeout)
        res = r["result"]
        if "error" in res:
            raise RpcFailure(res["error"])
        res = res["ok"]
    else:
        res = sb.call("fetch", params, timeout)
    data = None
    s = res["bodyStreamId"]
    if s is not None:
        deadline = time.monotonic() + timeout
        while s not in sb.ended:
            sb._pump_one(max(0.1, deadline - time.monotonic()))
        data = bytes(sb.streams.pop(s, b""))
    return res, data


def test_fetch_get_goes_through_the_proxy_with_host_and_headers(env, sbx):
    import json
    sb = sbx()
    res, data = fetch(sb, "http://fetch.test/echo?q=1", headers=[("x-test", "v1")])
    assert res["status"] == 201 and res["statusText"] == "Created"
    assert ["x-up", "yes"] in res["headers"]
    got = json.loads(data)
    assert got["path"] == "/echo?q=1" and got["headers"]["Host"] == "fetch.test"
    assert got["headers"]["x-test"] == "v1"
    rep = wait_audit(env.hutchd, sb.id, lambda r: any(a.get("host") == "fetch.test" for a in r["audit"]))
    assert any(a.get("host") == "fetch.test" and a.get("verdict") == "allowed" for a in rep["audit"]), rep["audit"]


def test_fetch_post_streams_the_request_body(sbx):
    import hashlib
    import json
    sb = sbx()
    body = os.urandom(3 * 1024 * 1024 + 17)
    res, data = fetch(sb, "http://fetch.test/up", method="POST", body=body)
    got = json.loads(data)
    assert got["method"] == "POST" and got["len"] == len(body)
    assert got["sha"] == hashlib.sha256(body).hexdigest()


def test_fetch_streams_a_large_response(sbx):
    sb = sbx()
    res, data = fetch(sb, "http://fetch.test/big/5000000")
    assert res["status"] == 200 and data == b"y" * 5000000


def test_fetch_https_verifies_the_upstream(sbx):
    import json
    sb = sbx()
    res, data = fetch(sb, "https://fetch.test/tls")
    assert res["status"] == 201 and json.loads(data)["path"] == "/tls"


def test_fetch_https_to_a_name_the_cert_does_not_cover_fails(sbx):
    sb = sbx(allow_net=None)
    with pytest.raises(RpcFailure):
        fetch(sb, f"https://{FETCH_IP}/")


def test_fetch_follows_redirects_unless_manual(sbx):
    import json
    sb = sbx()
    res, data = fetch(sb, "http://fetch.test/redir/302", method="POST", body=b"")
    assert res["status"] == 302  # a body was streamed: not replayed
    res, data = fetch(sb, "http://fetch.test/redir/303")
    assert res["status"] == 201 and json.loads(data)["path"] == "/echo"
    res, _ = fetch(sb, "http://fetch.test/redir/307", redirect="manual")
    assert res["status"] == 307 and ["location", "/echo"] in res["headers"]


def test_fetch_head_has_no_body(sbx):
    sb = sbx()
    res, data = fetch(sb, "http://fetch.test/echo", method="HEAD")
    assert res["status"] == 201 and res["bodyStreamId"] is None


def test_fetch_obeys_allow_net(sbx):
    sb = sbx(allow_net=("example.test",))
    with pytest.raises(RpcFailure) as ei:
        fetch(sb, "http://fetch.test/")
    assert ei.value.error["code"] in ("NotFound", "ConnectionReset", "ConnectionRefused")
    # an address literal the policy does not name: the proxy answers 403
    res, data = fetch(sb, f"http://{FETCH_IP}/")
    assert res["status"] == 403


def test_fetch_without_network_reaches_only_the_sandbox(sbx):
    sb = sbx(allow_net=())
    with pytest.raises(RpcFailure):
        fetch(sb, "http://fetch.test/")
    sb.call("spawn", {"command": "bash", "args": ["-c", "cd /tmp && exec python3 -m http.server 8123 -b 127.0.0.1"],
                      "stdout": "null", "stderr": "null"})
    deadline = time.monotonic() + 10
    while True:
        try:
            res, data = fetch(sb, "http://localhost:8123/")
            break
        except RpcFailure:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert res["status"] == 200


def test_fetch_rejects_bad_input(sbx):
    sb = sbx()
    for url, headers in (("ftp://fetch.test/", []), ("http://fetch.test/", [["bad name", "v"]]),
                         ("http://fetch.test/", [["x", "a\r\nInjected: 1"]]), ("not a url", [])):
        with pytest.raises(RpcFailure):
            fetch(sb, url, headers=headers)


def _send_request(sb, method, params):
    rid = sb.next_id
    sb.next_id += 1
    sb.ws.send_json({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    return rid


def test_abort_before_the_response_rejects_the_fetch_with_abort_error(sbx):
    sb = sbx()
    rid = _send_request(sb, "fetch", {"url": "http://fetch.test/slow", "method": "GET", "headers": [],
                                      "redirect": "follow", "abortId": 41})
    time.sleep(0.5)
    assert rid not in sb.responses  # the upstream is still thinking
    assert sb.call("abort", {"abortId": 41}) is None
    r = sb.wait_response(rid, 10)  # the upstream would answer only after 30 s
    err = r["result"]["error"]
    assert err["constructorName"] == "DOMException" and err["name"] == "AbortError", r
    # The session goes on: the next fetch works.
    res, data = fetch(sb, "http://fetch.test/big/10")
    assert res["status"] == 200 and data == b"y" * 10


def test_abort_while_the_body_streams_errors_the_stream_and_stops_it(sbx):
    size = 300_000_000
    sb = sbx()
    res = sb.call("fetch", {"url": f"http://fetch.test/big/{size}", "method": "GET", "headers": [],
                            "redirect": "follow", "abortId": 42})
    sid = res["bodyStreamId"]
    got = 0
    while got < 1_000_000:
        msg = sb.ws.recv_json(10)
        if msg.get("method") == "$sandbox.stream.enqueue" and msg["params"]["streamId"] == sid:
            got += len(base64.b64decode(msg["params"]["data"]))
    rid = _send_request(sb, "abort", {"abortId": 42})
    stream_error = reply = None
    deadline = time.monotonic() + 20
    while (stream_error is None or reply is None) and time.monotonic() < deadline:
        msg = sb.ws.recv_json(10)
        p = msg.get("params") or {}
        if msg.get("id") == rid:
            reply = msg
        elif msg.get("method") == "$sandbox.stream.enqueue" and p.get("streamId") == sid:
            assert stream_error is None, "body data after the stream's error"
            got += len(base64.b64decode(p["data"]))
        elif msg.get("method") == "$sandbox.stream.end" and p.get("streamId") == sid:
            pytest.fail(f"the body ended normally after {got} bytes: the abort did nothing")
        elif msg.get("method") == "$sandbox.stream.error" and p.get("streamId") == sid:
            stream_error = p["error"]
    assert reply is not None and reply["result"] == {"ok": None}, reply
    assert stream_error and stream_error["name"] == "AbortError", stream_error
    # Nothing more arrives for that stream, and far less than the body was read.
    end = time.monotonic() + 1
    while time.monotonic() < end:
        try:
            msg = sb.ws.recv_json(0.2)
        except (TimeoutError, OSError):
            continue
        assert (msg.get("params") or {}).get("streamId") != sid, msg
    assert got < size // 2, got


def test_abort_of_nothing_is_no_error_and_a_bad_id_is_refused(sbx):
    sb = sbx()
    assert sb.call("abort", {"abortId": 999}) is None  # finished long ago, or never: the signal may fire late
    r = sb.request("abort", {"abortId": "x"})
    assert r["error"]["code"] == -32602 and "abortId" in r["error"]["message"], r


def test_fetch_sends_the_clients_headers_and_none_of_the_clients_library_defaults(sbx):
    import json
    sb = sbx()
    res, data = fetch(sb, "http://fetch.test/echo", method="POST", body=b"abc",
                      headers=[("x-a", "1"), ("x-empty", ""), ("content-length", "999"), ("host", "evil.test")])
    got = json.loads(data)
    assert got["method"] == "POST" and got["len"] == 3
    h = {k.lower(): v for k, v in got["headers"].items()}
    assert h["x-a"] == "1" and h["x-empty"] == "" and h["host"] == "fetch.test"
    assert h["transfer-encoding"] == "chunked" and "content-length" not in h  # framing is hutch's
    # no Accept, User-Agent, Expect or form Content-Type the caller did not ask for
    for k in ("accept", "user-agent", "expect", "content-type"):
        assert k not in h, (k, h)
    res, data = fetch(sb, "http://fetch.test/echo", method="PUT")
    got = json.loads(data)
    assert got["method"] == "PUT" and got["headers"].get("Content-Length") == "0"


def test_fetch_bounds_the_response_head(sbx):
    sb = sbx()
    res, data = fetch(sb, "http://fetch.test/hdrs/200")  # positive control: 200 lines are fine
    assert res["status"] == 200 and data == b"ok"
    assert ["x-h199", "v"] in res["headers"]
    with pytest.raises(RpcFailure) as ei:
        fetch(sb, "http://fetch.test/hdrs/300")
    assert ei.value.error["code"] == "InvalidData" and "too many header lines" in ei.value.error["message"], ei.value
    res, data = fetch(sb, "http://fetch.test/big/10")  # the session goes on
    assert data == b"y" * 10


def test_fetch_unfolds_a_folded_response_header(sbx):
    sb = sbx()
    res, data = fetch(sb, "http://fetch.test/fold")
    assert res["status"] == 200 and data == b"ok"
    assert ["x-fold", "a b"] in res["headers"] and ["x-after", "c"] in res["headers"], res["headers"]
