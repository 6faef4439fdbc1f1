# Review 2: sandbox.fetch (src/daemon/core/rpc_net.c) -- redirects across
# origins, what "localhost" and IP literals reach, and a session that outlives
# its sandbox while a fetch is in flight.
import base64
import json
import os
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutchlib import RpcFailure, WsClosed, wait_until  # noqa: E402
from netenv import running, start_upstream  # noqa: E402

IP_A, IP_B = "192.0.2.21", "192.0.2.22"
UP = r'''
import http.server, json, socket, socketserver, sys, threading, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _send(self, code, body, extra=()):
        self.send_response(code)
        for k, v in extra: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/redir?to="):
            return self._send(302, b"", [("Location", self.path[len("/redir?to="):])])
        self._send(200, json.dumps({"host": self.headers.get("Host"), "headers": dict(self.headers)}).encode())
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; allow_reuse_address = True
    def server_bind(self):
        socketserver.TCPServer.server_bind(self); self.server_name = 'up'; self.server_port = self.server_address[1]
# a peer that accepts and never reads: request bodies pile up in hutchd
class Sink(socketserver.BaseRequestHandler):
    def handle(self):
        time.sleep(3600)
class T(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True; allow_reuse_address = True
servers = [S((sys.argv[1], 80), H), S((sys.argv[2], 80), H), T((sys.argv[1], 81), Sink)]
for s in servers: threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


@pytest.fixture(scope="module")
def env():
    def upstream(net):
        return start_upstream(net, "rv2up.py", UP, IP_A, IP_B, addrs=(IP_A, IP_B))
    with running("rv2f", ["--resolve", f"a.rv2.test={IP_A}", "--resolve", f"b.rv2.test={IP_B}"], upstream) as net:
        yield net


def _fetch(sb, url, headers=(), timeout=30):
    res = sb.call("fetch", {"url": url, "method": "GET", "headers": [list(h) for h in headers],
                            "redirect": "follow"}, timeout)
    data = None
    s = res["bodyStreamId"]
    if s is not None:
        deadline = time.monotonic() + timeout
        while s not in sb.ended:
            sb._pump_one(max(0.1, deadline - time.monotonic()))
        data = bytes(sb.streams.pop(s, b""))
    return res, data


def test_cross_origin_redirect_drops_credentials(env):
    with env.hutchd.create_sandbox({"allow_net": ["a.rv2.test", "b.rv2.test"]}) as sb:
        res, data = _fetch(sb, "http://a.rv2.test/redir?to=http://b.rv2.test/echo",
                           headers=[("Authorization", "Bearer user-token-123"), ("Cookie", "sid=abc")])
        got = json.loads(data)
        assert res["status"] == 200 and got["host"] == "b.rv2.test"
        assert "Authorization" not in got["headers"], got
        assert "Cookie" not in got["headers"], got


def test_same_origin_redirect_keeps_headers(env):
    with env.hutchd.create_sandbox({"allow_net": ["a.rv2.test"]}) as sb:
        res, data = _fetch(sb, "http://a.rv2.test/redir?to=/echo", headers=[("Authorization", "Bearer t")])
        assert json.loads(data)["headers"].get("Authorization") == "Bearer t"


def test_redirect_to_a_host_outside_allow_net_is_blocked(env):
    with env.hutchd.create_sandbox({"allow_net": ["a.rv2.test"]}) as sb:
        try:
            res, data = _fetch(sb, "http://a.rv2.test/redir?to=http://b.rv2.test/echo")
        except RpcFailure:
            return
        assert res["status"] == 403 and b"b.rv2.test" not in (data or b"").split(b"hutch:")[0], (res, data)


def test_loopback_and_literals_are_the_sandboxs_not_hutchds(env):
    # hutchd's API listens on 127.0.0.1 of hutchd's netns: a fetch of
    # 127.0.0.1/localhost/[::1] must land in the sandbox's own loopback instead.
    port = env.hutchd.port
    with env.hutchd.create_sandbox({"allow_net": ["a.rv2.test"]}) as sb:
        for url in (f"http://127.0.0.1:{port}/api/v2/sandboxes", f"http://localhost:{port}/api/v2/sandboxes",
                    f"http://[::1]:{port}/api/v2/sandboxes", f"http://0.0.0.0:{port}/api/v2/sandboxes",
                    f"http://x.localhost:{port}/api/v2/sandboxes", f"http://192.0.2.1:{port}/api/v2/sandboxes"):
            try:
                res, data = _fetch(sb, url, timeout=20)
            except RpcFailure:
                continue
            assert res["status"] == 403, (url, res, data)
        # and hutchd itself still answers on its own loopback
        assert env.hutchd.http("GET", "/api/v2/sandboxes").status == 200


def test_session_outliving_its_sandbox_mid_fetch(env):
    """A fetch with request body bytes queued in hutchd (the upstream never
    reads); the sandbox is killed over REST; the client ignores the close frame
    until the sandbox is fully torn down, then drops the connection. hutchd
    must not touch the freed sandbox (f->sb in rpc_net.c)."""
    h = env.hutchd
    sb = h.create_sandbox({"allow_net": ["a.rv2.test:81"]})
    sid = 7001
    sb.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.start", "params": {"streamId": sid}})
    sb.ws.send_json({"jsonrpc": "2.0", "id": 99, "method": "fetch",
                     "params": {"url": "http://a.rv2.test:81/sink", "method": "POST", "headers": [],
                                "redirect": "follow", "bodyStreamId": sid}})
    chunk = base64.b64encode(os.urandom(256 * 1024)).decode()
    sb.ws.sock.settimeout(5)  # hutchd stops reading once the body backs up: do not block past that
    try:
        for _ in range(160):  # 40 MiB: more than every socket buffer on the way
            sb.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue",
                             "params": {"streamId": sid, "data": chunk}})
    except OSError:
        pass
    time.sleep(1)
    assert h.http("DELETE", f"/api/v3/sandbox/{sb.id}").status == 200
    # ignore the close frame; wait until the sandbox is gone completely
    assert wait_until(lambda: h.sandbox_status(sb.id) == "stopped", 20)
    time.sleep(4)
    sb.ws.sock.close()
    time.sleep(1)
    assert h.alive(), h.log_tail()
    assert "AddressSanitizer" not in h._log_text(), h.log_tail()
    assert h.http("GET", "/api/v2/sandboxes").status == 200
