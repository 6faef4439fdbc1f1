# Security review: hostile API clients. Malformed WebSocket framing, JSON-RPC
# params of every wrong type for every method, numbers out of range, clients
# that never read, and clients of another organization. hutchd must answer or
# close only the offending connection, stay up, and keep its memory bounded.
import contextlib
import json
import os
import socket
import struct
import time

import pytest

from hutchlib import (OP_BIN, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, HandshakeError,
                      WebSocket, WsClosed)


# ---------------------------------------------------------------- helpers

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def alive_and_serving(d, sb=None):
    assert d.alive(), d.log_tail()
    r = d.http("GET", "/healthz", token=None, timeout=10)
    assert r.status == 200, r
    if sb is not None:
        assert sb.call("envGet", {"key": "HOME"}, timeout=20) == "/home/app"


def raw_frame(opcode, payload, fin=True, mask=True, rsv=0, declared_len=None):
    n = len(payload) if declared_len is None else declared_len
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def close_code_after(ws, data, timeout=10):
    """Sends raw bytes, then reads until the server closes; returns its close
    code (1006 when the TCP connection ends without a close frame)."""
    ws.sock.sendall(data)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    except WsClosed as e:
        return e.code
    except (socket.timeout, TimeoutError):
        return None
    except OSError:
        return 1006
    return None


@pytest.fixture(scope="module")
def shared_sb(hutchd):
    """A duration sandbox that outlives individual raw connections."""
    stop = int(time.time() * 1000) + 20 * 60 * 1000
    sb = hutchd.create_sandbox({"stop_at_ms": stop})
    yield sb
    sb.ws.close()
    hutchd.http("DELETE", f"/api/v3/sandbox/{sb.id}")


def raw_conn(hutchd, sb_id):
    return WebSocket.connect(hutchd.port, f"/api/v3/sandbox/{sb_id}/connect", token=hutchd.token)


# ---------------------------------------------------------------- WebSocket framing

PROTOCOL_VIOLATIONS = {
    "unmasked-client-frame": raw_frame(OP_TEXT, b'{"x":1}', mask=False),
    "rsv-bits": raw_frame(OP_TEXT, b"{}", rsv=4),
    "reserved-opcode-3": raw_frame(3, b"x"),
    "reserved-opcode-11": raw_frame(11, b"x"),
    "continuation-without-start": raw_frame(OP_CONT, b"{}"),
    "fragmented-ping": raw_frame(OP_PING, b"x", fin=False),
    "ping-126-bytes": raw_frame(OP_PING, b"p" * 126),
    "close-1-byte-payload": raw_frame(OP_CLOSE, b"\x03"),
    "text-inside-fragmented-text": raw_frame(OP_TEXT, b'{"a":', fin=False) + raw_frame(OP_TEXT, b"1}"),
    "length-2^63": struct.pack("!BBQ", 0x81, 0xFF, 1 << 63) + os.urandom(4),
    "length-2^64-1": struct.pack("!BBQ", 0x81, 0xFF, (1 << 64) - 1) + os.urandom(4),
}


# The close code hutchd (wslay) answers each violation with: 1002 (protocol
# error), or 1005 = a close frame without a code (RFC 6455 says an endpoint
# SHOULD send 1002 there; what matters here is that the connection ends).
VIOLATION_CLOSE = {"unmasked-client-frame": 1002, "rsv-bits": 1002, "reserved-opcode-3": 1002,
                   "reserved-opcode-11": 1002, "continuation-without-start": 1002, "fragmented-ping": 1005,
                   "ping-126-bytes": 1005, "close-1-byte-payload": 1005, "text-inside-fragmented-text": 1002,
                   "length-2^63": 1005, "length-2^64-1": 1005}


@pytest.mark.parametrize("name", sorted(PROTOCOL_VIOLATIONS))
def test_ws_protocol_violation_closes_only_that_connection(hutchd, shared_sb, name):
    ws = raw_conn(hutchd, shared_sb.id)
    # control: this connection works before the violation
    ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "envGet", "params": {"key": "HOME"}})
    assert ws.recv_json(timeout=20)["result"]["ok"] == "/home/app"
    code = close_code_after(ws, PROTOCOL_VIOLATIONS[name])
    ws.sock.close()
    assert code == VIOLATION_CLOSE[name], f"{name}: closed with {code}"
    alive_and_serving(hutchd, shared_sb)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535])
def test_invalid_close_codes(hutchd, shared_sb, code):
    ws = raw_conn(hutchd, shared_sb.id)
    got = close_code_after(ws, raw_frame(OP_CLOSE, struct.pack("!H", code) + b"bye"))
    ws.sock.close()
    assert got == 1002, f"close code {code} answered with {got}"
    alive_and_serving(hutchd, shared_sb)


@pytest.mark.parametrize("code", [1000, 3000, 4999])
def test_valid_close_codes_are_echoed(hutchd, shared_sb, code):
    """Control for the test above: a valid code comes back as it was."""
    ws = raw_conn(hutchd, shared_sb.id)
    got = close_code_after(ws, raw_frame(OP_CLOSE, struct.pack("!H", code) + b"bye"))
    ws.sock.close()
    assert got == code


def test_control_frames_inside_fragmented_message(hutchd, shared_sb):
    ws = raw_conn(hutchd, shared_sb.id)
    msg = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "envGet", "params": {"key": "HOME"}}).encode()
    data = (raw_frame(OP_TEXT, msg[:7], fin=False) + raw_frame(OP_PING, b"hi")
            + raw_frame(OP_CONT, b"", fin=False) + raw_frame(0xA, b"unsolicited pong")
            + raw_frame(OP_CONT, msg[7:20], fin=False) + raw_frame(OP_CONT, msg[20:]))
    ws.sock.sendall(data)
    r = ws.recv_json(timeout=20)
    assert r.get("id") == 5 and r["result"]["ok"] == "/home/app", r
    ws.close()


def test_zero_length_text_and_binary(hutchd, shared_sb):
    ws = raw_conn(hutchd, shared_sb.id)
    ws.sock.sendall(raw_frame(OP_TEXT, b""))
    r = ws.recv_json(timeout=10)
    assert r["error"]["code"] == -32700, r
    code = close_code_after(ws, raw_frame(OP_BIN, b""))
    assert code == 1003, code
    ws.sock.close()
    alive_and_serving(hutchd, shared_sb)


def test_invalid_utf8_text_does_not_crash(hutchd, shared_sb):
    ws = raw_conn(hutchd, shared_sb.id)
    ws.sock.sendall(raw_frame(OP_TEXT, b'{"jsonrpc":"2.0","id":1,"method":"envGet","params":{"key":"\xff\xfe"}}'))
    # 1007 (RFC) or a JSON-RPC parse error are both acceptable; a crash is not
    try:
        r = ws.recv_json(timeout=10)
        assert "error" in r or "result" in r, r
    except WsClosed as e:
        assert e.code in (1002, 1007), e.code
    ws.sock.close()
    alive_and_serving(hutchd, shared_sb)


def test_tiny_fragments_memory_bounded(hutchd, shared_sb):
    """A message of 400k one-byte fragments (2.8 MB on the wire): wslay keeps a
    heap chunk per fragment, so what hutchd holds must still stay near the
    payload size, not a multiple of the frame count."""
    ws = raw_conn(hutchd, shared_sb.id)
    before = rss_kib(hutchd.pid)
    n = 400_000
    frag = raw_frame(OP_CONT, b" ", fin=False)
    ws.sock.sendall(raw_frame(OP_TEXT, b" ", fin=False))
    chunk = frag * 10_000
    for _ in range(n // 10_000):
        ws.sock.sendall(chunk)
    time.sleep(1.0)
    peak = rss_kib(hutchd.pid)
    ws.sock.close()
    growth_mb = (peak - before) / 1024
    alive_and_serving(hutchd, shared_sb)
    # 400 KB of payload; allow 16 MB for allocator slack
    assert growth_mb < 16, f"hutchd grew {growth_mb:.0f} MB for 400 KB of fragmented payload"


# ---------------------------------------------------------------- JSON-RPC params

METHODS = ["spawn", "processWait", "processKill", "envGet", "envSet", "envDelete", "envToObject",
           "readFile", "readTextFile", "writeFile", "writeTextFile", "readDir", "remove", "mkdir",
           "rename", "stat", "lstat", "chmod", "chown", "copyFile", "link", "symlink", "readLink",
           "realPath", "truncate", "umask", "utime", "makeTempDir", "makeTempFile", "open", "create",
           "fileClose", "fileLock", "fileRead", "fileSeek", "fileStat", "fileSync", "fileSyncData",
           "fileTruncate", "fileUnlock", "fileUtime", "fileWrite", "walk", "expandGlob"]

KEYS = ["path", "pid", "signal", "key", "value", "command", "args", "env", "cwd", "clearEnv",
        "stdinStreamId", "stdout", "stderr", "content", "contentStreamId", "fileHandleId", "options",
        "mode", "uid", "gid", "len", "length", "offset", "whence", "atime", "mtime", "source",
        "target", "root", "glob", "recursive", "create", "append", "maxDepth", "exclusive", "dir",
        "prefix", "suffix", "data", "streamId", "mask", "size"]

HOSTILE = {
    "null": None, "true": True, "neg": -1, "zero": 0, "2^31": 2 ** 31, "2^53": 2 ** 53,
    "2^63-1": 2 ** 63 - 1, "-2^63": -2 ** 63, "float": 1.5, "float-int": 3.0, "nan-ish": 1e308,
    "str": "x", "empty-str": "", "nul-str": "a\u0000b", "long-str": "A" * 70000, "list": [1, "a"],
    "obj": {"a": {"b": 1}}, "dotdot": "../../../../proc/1/root/etc/shadow",
}


def test_every_method_every_wrong_type(hutchd, shared_sb):
    """Every method × every hostile value for every known param name: each
    request gets exactly one well-formed reply, and the session stays usable."""
    ws = raw_conn(hutchd, shared_sb.id)
    sent = {}
    rid = 0
    for m in METHODS:
        for hname, hv in HOSTILE.items():
            rid += 1
            params = {k: hv for k in KEYS}
            if m == "spawn" and hname in ("str", "long-str"):
                params["command"] = "true"  # do not spawn 70 KB command names all the time
            sent[rid] = (m, hname)
            ws.send_json({"jsonrpc": "2.0", "id": rid, "method": m, "params": params})
            # a few hundred in flight at most
            if len(sent) % 200 == 0:
                time.sleep(0.2)
    got = {}
    deadline = time.monotonic() + 120
    while len(got) < len(sent) and time.monotonic() < deadline:
        msg = ws.recv_json(timeout=deadline - time.monotonic())
        if "id" in msg and msg.get("id") is not None:
            assert msg["id"] not in got, f"two replies for {sent.get(msg['id'])}"
            got[msg["id"]] = msg
            assert ("result" in msg) != ("error" in msg), msg
            if "result" in msg:
                res = msg["result"]
                assert isinstance(res, dict) and ("ok" in res or "error" in res), (sent[msg["id"]], msg)
    missing = [sent[i] for i in sent if i not in got]
    assert not missing, f"no reply for {missing[:10]} ({len(missing)} in all)"
    ws.close()
    # the dot-dot path (to /proc/1/root/etc/shadow, from the cwd) read nothing
    for i, (m, hname) in sent.items():
        if hname == "dotdot" and m in ("readFile", "readTextFile"):
            assert got[i]["result"]["error"]["code"] == "EACCES", (m, got[i])
    alive_and_serving(hutchd, shared_sb)


@pytest.mark.parametrize("pid", [0, -1, 1.0, 2 ** 31, 2 ** 53, 2 ** 63 - 1, "1", True, None, [1]])
def test_pid_out_of_range_is_invalid_params(shared_sb, pid):
    for m in ("processWait", "processKill"):
        r = shared_sb.request(m, {"pid": pid})
        assert r.get("error", {}).get("code") == -32602, (m, pid, r)


def test_integer_beyond_int64_is_a_parse_error(shared_sb):
    shared_sb.ws.send_text('{"jsonrpc":"2.0","id":1,"method":"processWait","params":{"pid":'
                           + "9" * 400 + "}}")
    r = shared_sb.ws.recv_json(timeout=10)
    assert r["error"]["code"] in (-32700, -32602), r
    assert shared_sb.call("envGet", {"key": "HOME"}) == "/home/app"


def test_pid_1_is_not_a_target(shared_sb):
    """PID 1 is hutch-init: clients only touch processes they spawned."""
    r = shared_sb.request("processKill", {"pid": 1, "signal": "SIGKILL"})
    res = r.get("result", {})
    assert "error" in r or "error" in res, r
    r = shared_sb.request("processWait", {"pid": 1})
    assert "error" in r or "error" in r.get("result", {}), r
    assert shared_sb.call("envGet", {"key": "HOME"}) == "/home/app"


def test_stream_ids_of_another_session_are_not_reachable(hutchd, shared_sb):
    """Session B cannot cancel or feed session A's streams, nor wait on/kill
    its processes' output; ids are per session or checked by owner."""
    a = hutchd.connect_sandbox(shared_sb.id)
    b = hutchd.connect_sandbox(shared_sb.id)
    try:
        sp = a.call("spawn", {"command": "bash", "args": ["-c", "sleep 1; echo from-a"],
                              "stdout": "piped", "stderr": "piped"})
        sid = sp["stdoutStreamId"]
        b.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.cancel", "params": {"streamId": sid}})
        b.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.end", "params": {"streamId": sid}})
        st = a.call("processWait", {"pid": sp["pid"]})
        assert st["code"] == 0
        deadline = time.monotonic() + 10
        while sid not in a.ended and time.monotonic() < deadline:
            a._pump_one(deadline - time.monotonic())
        assert bytes(a.streams.get(sid, b"")) == b"from-a\n"
    finally:
        a.ws.close()
        b.ws.close()


def test_thousands_of_process_wait(hutchd, shared_sb):
    sp = shared_sb.call("spawn", {"command": "sleep", "args": ["3"], "stdout": "null", "stderr": "null"})
    pid = sp["pid"]
    before = rss_kib(hutchd.pid)
    n = 3000
    for i in range(n):
        shared_sb.ws.send_json({"jsonrpc": "2.0", "id": 100000 + i, "method": "processWait", "params": {"pid": pid}})
    ok = eagain = 0
    for i in range(n):
        r = shared_sb.wait_response(100000 + i, timeout=30)
        res = r["result"]
        if "ok" in res:
            ok += 1
        else:
            eagain += res["error"]["code"] == "EAGAIN"
    assert ok + eagain == n
    assert ok <= 64, ok
    assert (rss_kib(hutchd.pid) - before) < 32 * 1024
    alive_and_serving(hutchd, shared_sb)


# ---------------------------------------------------------------- slow / absent readers

def test_client_that_never_reads_keeps_hutchd_bounded(hutchd):
    """envToObject answers ~100 KB for a 90-byte request. A client that sends
    2000 of them and never reads must not make hutchd hold 200 MB of replies."""
    stop = int(time.time() * 1000) + 5 * 60 * 1000
    sb = hutchd.create_sandbox({"stop_at_ms": stop})
    try:
        sb.call("envSet", {"key": "BIG", "value": "v" * 100_000})
        ws = WebSocket.connect(hutchd.port, f"/api/v3/sandbox/{sb.id}/connect", token=hutchd.token)
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        before = rss_kib(hutchd.pid)
        req = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "envToObject", "params": {}}).encode()
        frame = raw_frame(OP_TEXT, req)
        ws.sock.settimeout(5)
        sent = 0
        for batch in range(20):
            try:
                ws.sock.sendall(frame * 100)
                sent += 100
            except (socket.timeout, OSError):
                break  # hutchd stopped reading us: that is the fix
            time.sleep(0.15)
        time.sleep(2)
        growth_mb = (rss_kib(hutchd.pid) - before) / 1024
        ws.sock.close()
        alive_and_serving(hutchd)
        assert growth_mb < 64, f"hutchd grew {growth_mb:.0f} MB holding replies for a client that never reads ({sent} requests)"
    finally:
        sb.ws.close()
        hutchd.http("DELETE", f"/api/v3/sandbox/{sb.id}")


def test_spawn_then_disconnect_mid_stream(hutchd):
    """A duration sandbox: the client spawns a process that writes without
    end and disconnects. The process keeps running (output credited and
    dropped), the daemon stays small, a new session works and can kill it."""
    stop = int(time.time() * 1000) + 5 * 60 * 1000
    sb = hutchd.create_sandbox({"stop_at_ms": stop})
    try:
        sp = sb.call("spawn", {"command": "bash", "args": ["-c", "yes hutch-output-flood"],
                               "stdout": "piped", "stderr": "piped"})
        for _ in range(20):
            sb._pump_one(10)
        before = rss_kib(hutchd.pid)
        sb.ws.sock.close()  # abrupt: no close frame
        time.sleep(3)
        growth_mb = (rss_kib(hutchd.pid) - before) / 1024
        assert growth_mb < 32, growth_mb
        c = hutchd.connect_sandbox(sb.id)
        r = c.request("processKill", {"pid": sp["pid"], "signal": "SIGKILL"})
        assert "result" in r, r
        st = c.call("processWait", {"pid": sp["pid"]}, timeout=20)
        assert st["signal"] == "SIGKILL", st
        c.ws.close()
    finally:
        hutchd.http("DELETE", f"/api/v3/sandbox/{sb.id}")
    alive_and_serving(hutchd)


# ---------------------------------------------------------------- another organization

def test_other_org_cannot_touch_sandbox(hutchd, shared_sb):
    r = hutchd.http("POST", "/hutch/v1/tokens", body={"org": "evil-org", "name": "review-evil"})
    assert r.status == 201, r
    evil = r.json()["token"]
    sid = shared_sb.id
    for method, path, body in (("DELETE", f"/api/v3/sandbox/{sid}", None),
                               ("PATCH", f"/api/v3/sandbox/{sid}", {"stop_at_ms": int(time.time() * 1000) + 60000}),
                               ("GET", f"/api/v2/sandboxes/{sid}/network", None)):
        rr = hutchd.http(method, path, body=body, token=evil)
        assert rr.status == 404, (method, path, rr)
    with pytest.raises(HandshakeError) as e:
        WebSocket.connect(hutchd.port, f"/api/v3/sandbox/{sid}/connect", token=evil)
    assert e.value.status == 404
    lst = hutchd.http("GET", "/api/v2/sandboxes", token=evil).json()
    assert all(s.get("id") != sid for s in lst), lst
    # a non-admin token cannot mint tokens for any org, nor list or revoke them
    for method, path, body in (("POST", "/hutch/v1/tokens", {"org": "default", "admin": True}),
                               ("GET", "/hutch/v1/tokens", None)):
        rr = hutchd.http(method, path, body=body, token=evil)
        assert rr.status == 403, (method, rr)
    alive_and_serving(hutchd, shared_sb)


# ---------------------------------------------------------------- raw HTTP

HOSTILE_HTTP = {
    "te-huge-chunk": b"POST /api/v2/sandboxes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"FFFFFFFFFFFFFFFF\r\nabc\r\n",
    "cl-negative": b"POST /hutch/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "cl-duplicate": b"POST /hutch/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "cl-and-te": b"POST /hutch/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
    "cl-2^64": b"POST /hutch/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n",
    "nul-in-header": b"GET /healthz HTTP/1.1\r\nHost: x\x00y\r\n\r\n",
    "no-colon-header": b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
    "long-url": b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "http-0.9": b"GET /\r\n\r\n",
    "bad-version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "ws-upgrade-post": b"POST /api/v3/sandboxes/create HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
                       b"Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
    "bearer-nul": b"GET /api/v2/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ddo_\x00\r\n\r\n",
    "bearer-huge": b"GET /api/v2/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 15000 + b"\r\n\r\n",
    "path-traversal": b"GET /api/v3/sandbox/../../hutch/v1/tokens HTTP/1.1\r\nHost: x\r\n\r\n",
    # an empty value ended by a bare CR: http-parser's lenient build ends the
    # head at the next CRLF and reads what follows as body (docs/network.md)
    "bare-cr-empty-value": b"GET /healthz HTTP/1.1\r\nX-A: \r\r\nHost: x\r\n\r\n"
                           b"GET /api/v2/sandboxes HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare-cr-in-value": b"GET /healthz HTTP/1.1\r\nX-A: a\rGET /api/v2/sandboxes HTTP/1.1\r\nHost: x\r\n\r\n",
}


# What hutchd answers each with. Requests carry the admin token (unless the
# case is about the token), so that a 401 cannot hide what the parser did.
HOSTILE_HTTP_STATUS = {"te-huge-chunk": 400, "cl-negative": 400, "cl-duplicate": 400, "cl-and-te": 400,
                       "cl-2^64": 400, "nul-in-header": 400, "no-colon-header": 400, "long-url": 431,
                       "http-0.9": 505, "bad-version": 505, "ws-upgrade-post": 405, "bearer-nul": 400,
                       "bearer-huge": 401, "path-traversal": 404,
                       "bare-cr-empty-value": 400, "bare-cr-in-value": 400}


def read_until_close(port, data, timeout=3):
    """Everything the server sends for data, until it closes or is silent for timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    got = b""
    with contextlib.suppress(socket.timeout, ConnectionResetError):
        while len(got) < 1 << 20:
            c = s.recv(65536)
            if not c:
                break
            got += c
    s.close()
    return got


def test_pipelined_requests_get_every_response(hutchd):
    """Control for the test below: two requests in one write get two responses,
    so a smuggled second request would be seen."""
    data = read_until_close(hutchd.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                            b"GET /api/v2/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                            + hutchd.token.encode() + b"\r\nConnection: close\r\n\r\n")
    assert data.count(b"HTTP/1.1 200 OK") == 2, data[:600]


@pytest.mark.parametrize("second,status", [(b"\nHost: x\r\n\r\n", 200), (b"Host: x\r\n\r\n", 400)])
def test_a_cr_that_ends_one_read_must_be_followed_by_lf_in_the_next(hutchd, second, status):
    """The head arrives in two writes cut right after a CR: with LF next it is
    an ordinary line end (200, the control); with anything else it is a bare
    CR, refused with hutchd's 400 and its message."""
    s = socket.create_connection(("127.0.0.1", hutchd.port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\nX-A: a\r")
    time.sleep(0.3)
    s.sendall(second)
    got = b""
    with contextlib.suppress(socket.timeout, ConnectionResetError):
        while (c := s.recv(65536)):
            got += c
    s.close()
    assert got.startswith(b"HTTP/1.1 %d " % status), got[:300]
    if status == 400:
        assert b"bare CR in the request head" in got, got
    alive_and_serving(hutchd)


@pytest.mark.parametrize("name", sorted(HOSTILE_HTTP))
def test_hostile_http_is_refused_and_harmless(hutchd, name):
    req = HOSTILE_HTTP[name]
    if b"Authorization" not in req and b"\r\nHost" in req:
        req = req.replace(b"\r\nHost", b"\r\nAuthorization: Bearer " + hutchd.token.encode() + b"\r\nHost", 1)
    data = read_until_close(hutchd.port, req)
    # exactly one response (nothing smuggled after it), with the expected error
    assert data.count(b"HTTP/1.1 ") == 1, (name, data[:600])
    assert data.startswith(b"HTTP/1.1 %d " % HOSTILE_HTTP_STATUS[name]), (name, data[:300])
    assert b"ddo_" not in data, (name, data[:300])
    alive_and_serving(hutchd)
