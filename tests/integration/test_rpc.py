# JSON-RPC over the sandbox WebSocket: malformed input gets a JSON-RPC error
# and the connection stays usable; an oversized message closes only that
# connection (1009) and the daemon keeps serving everyone else.
import json
import os
import socket
import threading
import time

import pytest

from hutchlib import OP_TEXT, WebSocket, WsClosed


def still_usable(sb):
    assert sb.call("envGet", {"key": "HOME"}) == "/home/app"


def raw_reply(sb, text):
    sb.ws.send_text(text)
    return sb.ws.recv_json(timeout=10)


def test_ping_pong(sandbox):
    sandbox.ws.send_text("ping")
    op, data = sandbox.ws.recv(timeout=10)
    assert (op, data) == (OP_TEXT, b"pong")


def test_parse_error_keeps_connection(sandbox):
    r = raw_reply(sandbox, "{this is not json")
    assert r.get("jsonrpc") == "2.0"
    assert r["id"] is None
    assert r["error"]["code"] == -32700, r
    still_usable(sandbox)


@pytest.mark.parametrize("msg", [
    {"foo": 1},
    {"jsonrpc": "2.0", "id": 77},
    {"jsonrpc": "2.0", "id": 77, "method": 12},
    {"jsonrpc": "1.0", "id": 77, "method": "envGet", "params": {"key": "HOME"}},
    [],
    "a string",
])
def test_invalid_request_keeps_connection(sandbox, msg):
    r = raw_reply(sandbox, json.dumps(msg))
    assert "error" in r, r
    assert r["error"]["code"] == -32600, r
    assert isinstance(r["error"].get("message"), str)
    still_usable(sandbox)


def test_unknown_method(sandbox):
    r = sandbox.request("noSuchMethod", {})
    assert r["error"]["code"] == -32601, r
    still_usable(sandbox)


@pytest.mark.parametrize("params", [{}, {"key": 5}, None, [1, 2]])
def test_invalid_params(sandbox, params):
    rid = 4242
    sandbox.ws.send_json({"jsonrpc": "2.0", "id": rid, "method": "envGet", "params": params})
    r = sandbox.wait_response(rid, timeout=10)
    assert "error" in r or "error" in (r.get("result") or {}), r
    if "error" in r:
        assert r["error"]["code"] == -32602, r
    still_usable(sandbox)


def test_deeply_nested_json(sandbox):
    r = raw_reply(sandbox, "[" * 100000 + "]" * 100000)
    assert "error" in r, r
    still_usable(sandbox)


def test_processwait_unknown_pid(sandbox):
    r = sandbox.request("processWait", {"pid": 999999})
    assert "error" in r or "error" in r["result"], r
    still_usable(sandbox)


def test_many_requests_in_flight(sandbox):
    for i in range(200):
        sandbox.ws.send_json({"jsonrpc": "2.0", "id": 10000 + i, "method": "envGet",
                              "params": {"key": "HOME"}})
    for i in range(200):
        r = sandbox.wait_response(10000 + i, timeout=20)
        assert r["result"] == {"ok": "/home/app"}, r


def test_oversized_message_1009(hutchd, sandbox):
    other = hutchd.create_sandbox()
    try:
        victim = hutchd.create_sandbox()
        declared = 64 << 20
        hdr, mask = WebSocket.frame(OP_TEXT, b"", declared_len=declared)
        chunk = bytes(1 << 20)  # masked zeros: the mask itself, repeated

        def blast():
            try:
                victim.ws.sock.sendall(hdr)
                for _ in range(declared >> 20):
                    victim.ws.sock.sendall(chunk)
            except OSError:
                pass  # the daemon closing on us mid-send is the expected outcome

        t = threading.Thread(target=blast, daemon=True)
        t.start()
        with pytest.raises(WsClosed) as ei:
            while True:
                victim.ws.recv(timeout=20)
        assert ei.value.code == 1009, ei.value
        t.join(30)
        victim.ws.sock.close()
        # the daemon and other connections are unaffected
        assert hutchd.alive()
        still_usable(sandbox)
        still_usable(other)
        with hutchd.create_sandbox() as fresh:
            still_usable(fresh)
    finally:
        other.ws.close()


def test_fragmented_message_is_reassembled(sandbox):
    msg = json.dumps({"jsonrpc": "2.0", "id": 9001, "method": "envGet",
                      "params": {"key": "HOME"}}).encode()
    a, b = msg[:10], msg[10:]
    sandbox.ws.send_frame(OP_TEXT, a, fin=False)
    sandbox.ws.send_frame(0, b, fin=True)
    r = sandbox.wait_response(9001, timeout=10)
    assert r["result"] == {"ok": "/home/app"}, r


def test_abrupt_disconnect_mid_frame(hutchd):
    sb = hutchd.create_sandbox()
    sid = sb.id
    hdr, _ = WebSocket.frame(OP_TEXT, b"", declared_len=1000)
    sb.ws.sock.sendall(hdr + b"x" * 10)
    sb.ws.sock.shutdown(socket.SHUT_RDWR)
    sb.ws.sock.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and hutchd.sandbox_status(sid) != "stopped":
        time.sleep(0.2)
    assert hutchd.sandbox_status(sid) == "stopped"
    assert hutchd.alive()


def test_idle_unauthenticated_connections_do_not_block(hutchd):
    idle = [socket.create_connection(("127.0.0.1", hutchd.port), timeout=5) for _ in range(20)]
    try:
        assert hutchd.http("GET", "/api/v2/sandboxes", timeout=10).status == 200
    finally:
        for s in idle:
            s.close()
    assert os.path.exists(hutchd.state_dir)


def test_binary_frame_closes_1003(hutchd, sandbox):
    victim = hutchd.create_sandbox()
    victim.ws.send_frame(2, b"\x00\x01binary")
    with pytest.raises(WsClosed) as ei:
        while True:
            victim.ws.recv(timeout=10)
    assert ei.value.code == 1003, ei.value
    victim.ws.sock.close()
    still_usable(sandbox)


def test_process_kill_unknown_pid_is_enoent(sandbox):
    r = sandbox.request("processKill", {"pid": 424242, "signal": "SIGKILL"})
    res = r.get("result") or {}
    assert res.get("error", {}).get("code") == "ENOENT", r
    still_usable(sandbox)


def test_stdin_before_spawn(sandbox):
    r = sandbox.run("cat", stdin=b"hello stdin\n")
    assert r["code"] == 0 and r["stdout"] == b"hello stdin\n", r


def test_wait_returns_on_exit_not_on_eof(sandbox):
    """processWait reports the exit of the process itself, even while a
    background child still holds its stdout open (Deno's semantics)."""
    sp = sandbox.call("spawn", {"command": "bash", "args": ["-c", "sleep 20 & echo started"],
                                "stdout": "piped", "stderr": "piped"})
    t0 = time.monotonic()
    st = sandbox.call("processWait", {"pid": sp["pid"]}, timeout=30)
    assert st["code"] == 0, st
    assert time.monotonic() - t0 < 10, "processWait waited for the background child"
