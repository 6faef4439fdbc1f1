# hutch's binary stream messages (docs/protocol.md "Binary streams") and its
# readFileStream download: negotiated per connection, byte-exact both ways,
# bounded memory for a client that never reads, and hostile frames refused
# with the documented close codes while the daemon and other clients go on.
import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time

import pytest

from hutchlib import OP_BIN, WebSocket, WsClosed, b64cfg

HDR = {"x-hutch-streams": "binary"}


class BinConn:
    """A session with binary streams: stream bytes come as binary messages
    (8-byte big-endian stream id + bytes), everything else as JSON."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 1
        self.responses = {}
        self.streams = {}
        self.ended = {}          # streamId -> None (end) or the error object
        self.binary_msgs = 0
        self.b64_msgs = 0

    def pump(self, timeout=60):
        op, data = self.ws.recv(timeout)
        if op == OP_BIN:
            assert len(data) >= 8
            sid = struct.unpack("!Q", data[:8])[0]
            self.streams.setdefault(sid, bytearray()).extend(data[8:])
            self.binary_msgs += 1
            return
        if data == b"pong":
            return
        msg = json.loads(data)
        if "id" in msg and ("result" in msg or "error" in msg):
            self.responses[msg["id"]] = msg
            return
        p = msg.get("params") or {}
        m = msg.get("method")
        if m == "$sandbox.stream.start":
            self.streams.setdefault(p["streamId"], bytearray())
        elif m == "$sandbox.stream.enqueue":
            self.streams.setdefault(p["streamId"], bytearray()).extend(base64.b64decode(p["data"]))
            self.b64_msgs += 1
        elif m == "$sandbox.stream.end":
            self.ended[p["streamId"]] = None
        elif m == "$sandbox.stream.error":
            self.ended[p["streamId"]] = p["error"]

    def call(self, method, params, timeout=60):
        rid = self.next_id
        self.next_id += 1
        self.ws.send_json({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while rid not in self.responses:
            self.pump(max(0.1, deadline - time.monotonic()))
        r = self.responses.pop(rid)
        assert "result" in r, r
        return r["result"]

    def send_bin(self, sid, data):
        self.ws.send_frame(OP_BIN, struct.pack("!Q", sid) + data)

    def notify(self, method, sid):
        self.ws.send_json({"jsonrpc": "2.0", "method": method, "params": {"streamId": sid}})

    def wait_end(self, sid, timeout=120):
        deadline = time.monotonic() + timeout
        while sid not in self.ended:
            self.pump(max(0.1, deadline - time.monotonic()))
        return self.ended[sid]

    def upload(self, path, data, chunk=1 << 20, sid=7):
        self.notify("$sandbox.stream.start", sid)
        rid = self.next_id
        self.next_id += 1
        self.ws.send_json({"jsonrpc": "2.0", "id": rid, "method": "writeFile",
                           "params": {"path": path, "contentStreamId": sid}})
        for off in range(0, len(data), chunk):
            self.send_bin(sid, data[off:off + chunk])
        self.notify("$sandbox.stream.end", sid)
        deadline = time.monotonic() + 120
        while rid not in self.responses:
            self.pump(max(0.1, deadline - time.monotonic()))
        return self.responses.pop(rid)["result"]

    def download(self, path):
        res = self.call("readFileStream", {"path": path})
        assert "ok" in res, res
        sid = res["ok"]["streamId"]
        err = self.wait_end(sid)
        return err, bytes(self.streams.pop(sid, b""))


def bin_session(hutchd, headers=HDR):
    cfg = {"x-deno-sandbox-config": b64cfg({"memory_mb": 1280}), **headers}
    ws = hutchd.ws("/api/v3/sandboxes/create", headers=cfg)
    return BinConn(ws)


def bin_connect(hutchd, sandbox_id):
    return BinConn(hutchd.ws(f"/api/v3/sandbox/{sandbox_id}/connect", headers=HDR))


@pytest.fixture(scope="module")
def conn(hutchd):
    c = bin_session(hutchd)
    yield c
    c.ws.close()


def test_binary_streams_are_granted_only_when_asked(hutchd, conn):
    assert conn.ws.headers.get("x-hutch-streams") == "binary"
    plain = hutchd.create_sandbox()
    try:
        assert "x-hutch-streams" not in plain.ws.headers
        # the SDK's shape keeps working there: readFileStream sends base64 enqueues
        plain.call("writeFile", {"path": "/tmp/p", "content": base64.b64encode(b"plain\x00\xff").decode()})
        res = plain.call("readFileStream", {"path": "/tmp/p"})
        sid = res["streamId"]
        deadline = time.monotonic() + 30
        while sid not in plain.ended:
            plain._pump_one(max(0.1, deadline - time.monotonic()))
        assert bytes(plain.streams[sid]) == b"plain\x00\xff"
    finally:
        plain.ws.close()
    # an unknown value is not binary
    other = bin_session(hutchd, {"x-hutch-streams": "json"})
    try:
        assert "x-hutch-streams" not in other.ws.headers
        other.ws.send_frame(OP_BIN, struct.pack("!Q", 1) + b"x")
        with pytest.raises(WsClosed) as ei:
            while True:
                other.pump(10)
        assert ei.value.code == 1003, ei.value
    finally:
        other.ws.close()


def test_upload_and_download_of_24_mib_are_byte_exact(conn):
    data = os.urandom(24 << 20) + b"\x00tail"
    res = conn.upload("/tmp/big.bin", data, chunk=(1 << 20) - 3)  # odd sizes: no alignment assumed
    assert res == {"ok": None}, res
    before = conn.binary_msgs
    err, got = conn.download("/tmp/big.bin")
    assert err is None, err
    assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert conn.binary_msgs - before >= 24  # the bytes came as binary messages ...
    assert conn.b64_msgs == 0               # ... and never as base64


def test_process_output_and_stdin_travel_as_binary_messages(conn):
    data = os.urandom(3 << 20)
    sin = 99
    conn.notify("$sandbox.stream.start", sin)
    sp = conn.call("spawn", {"command": "cat", "args": [], "stdinStreamId": sin,
                             "stdout": "piped", "stderr": "piped"})["ok"]
    for off in range(0, len(data), 300000):
        conn.send_bin(sin, data[off:off + 300000])
    conn.notify("$sandbox.stream.end", sin)
    st = conn.call("processWait", {"pid": sp["pid"]})["ok"]
    assert st["code"] == 0, st
    conn.wait_end(sp["stdoutStreamId"])
    assert bytes(conn.streams.pop(sp["stdoutStreamId"])) == data
    assert conn.b64_msgs == 0


def test_read_file_stream_errors_are_the_sandboxs(conn):
    err, got = conn.download("/tmp/does-not-exist")
    assert err and err["code"] == "ENOENT" and got == b"", err
    err, _ = conn.download("/tmp")
    assert err and err["code"] == "EISDIR", err
    # as app: a root-only file, directly and through a symlink, is refused by the kernel
    err, _ = conn.download("/etc/shadow")
    assert err and err["code"] == "EACCES", err
    r = conn.call("symlink", {"target": "/etc/shadow", "path": "/tmp/sh-link"})
    assert r == {"ok": None}, r
    err, _ = conn.download("/tmp/sh-link")
    assert err and err["code"] == "EACCES", err
    err, got = conn.download("/etc/hostname")  # positive control: a readable file
    assert err is None and got.strip(), (err, got)
    # bad parameters are answered, not streamed
    res = conn.call("readFileStream", {"path": "a\x00b"})
    assert res["error"]["code"] == "EINVAL", res
    res = conn.call("readFileStream", {})
    assert res["error"]["code"] == "EINVAL", res


@pytest.mark.parametrize("payload,code,why", [
    (b"", 1002, "8-byte stream id"),
    (b"\x00\x00\x00\x01", 1002, "8-byte stream id"),
    (struct.pack("!Q", 1 << 53) + b"x", 1002, "2^53"),
])
def test_malformed_binary_messages_close_the_connection(hutchd, payload, code, why):
    c = bin_session(hutchd)
    try:
        c.ws.send_frame(OP_BIN, payload)
        with pytest.raises(WsClosed) as ei:
            while True:
                c.pump(10)
        assert ei.value.code == code and why in ei.value.reason, ei.value
    finally:
        c.ws.close()


def test_oversized_and_truncated_binary_frames_leave_the_daemon_serving(hutchd, conn):
    c = bin_session(hutchd)
    declared = 32 << 20  # over the 16 MiB message limit
    hdr, _mask = WebSocket.frame(OP_BIN, b"", declared_len=declared)

    def blast():
        try:
            c.ws.sock.sendall(hdr)
            for _ in range(declared >> 20):
                c.ws.sock.sendall(bytes(1 << 20))
        except OSError:
            pass  # the daemon closing on us mid-send is the expected outcome

    t = threading.Thread(target=blast, daemon=True)
    t.start()
    try:
        with pytest.raises(WsClosed) as ei:
            while True:
                c.pump(30)
        assert ei.value.code == 1009, ei.value
    finally:
        t.join(30)
        c.ws.sock.close()
    # a frame that promises 1 MiB and stops after 10 bytes, then a vanished client
    t = bin_session(hutchd)
    hdr, _mask = WebSocket.frame(OP_BIN, b"", declared_len=1 << 20)
    t.ws.sock.sendall(hdr + b"\x00" * 10)
    t.ws.sock.shutdown(socket.SHUT_RDWR)
    t.ws.sock.close()
    assert hutchd.alive()
    # the module's session still works
    err, got = conn.download("/etc/hostname")
    assert err is None and got.strip()


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([ln for ln in f.read().splitlines() if ln.startswith("VmRSS:")][0].split()[1])


def test_a_client_that_never_reads_a_download_holds_bounded_memory(hutchd, conn):
    data = os.urandom(1 << 20)
    sh = conn.call("spawn", {"command": "bash", "args": ["-c", "head -c 200M /dev/urandom > /tmp/huge"],
                             "stdout": "null", "stderr": "null"})["ok"]
    assert conn.call("processWait", {"pid": sh["pid"]}, timeout=120)["ok"]["code"] == 0
    pid = hutchd.proc.pid
    before = _rss_kib(pid)
    slow = bin_connect(hutchd, conn.ws.headers["x-deno-sandbox-id"])
    try:
        slow.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        rid = slow.next_id
        slow.ws.send_json({"jsonrpc": "2.0", "id": rid, "method": "readFileStream", "params": {"path": "/tmp/huge"}})
        peak = before
        for _ in range(30):  # 3 s without reading while the sandbox could push 200 MiB
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.1)
        assert peak - before < 24 * 1024, (before, peak)  # KiB: windows and watermarks, not the file
        # meanwhile other clients are served
        assert conn.upload("/tmp/small", data, sid=8) == {"ok": None}
        # positive control: the stalled download then completes byte-exact
        while rid not in slow.responses:
            slow.pump(30)
        sid = slow.responses.pop(rid)["result"]["ok"]["streamId"]
        assert slow.wait_end(sid, timeout=300) is None
        got = bytes(slow.streams.pop(sid))
        want = conn.call("spawn", {"command": "sha256sum", "args": ["/tmp/huge"],
                                   "stdout": "piped", "stderr": "null"})["ok"]
        conn.wait_end(want["stdoutStreamId"])
        digest = bytes(conn.streams.pop(want["stdoutStreamId"])).split()[0].decode()
        assert len(got) == 200 << 20 and hashlib.sha256(got).hexdigest() == digest
    finally:
        slow.ws.close()


def _drain(c, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            c.pump(max(0.05, end - time.monotonic()))
        except (socket.timeout, TimeoutError):
            pass


def test_cancelling_a_download_stops_it_and_the_session_goes_on(conn):
    res = conn.call("readFileStream", {"path": "/dev/zero"})  # endless without the cancel
    sid = res["ok"]["streamId"]
    deadline = time.monotonic() + 30
    while len(conn.streams.get(sid, b"")) < (1 << 20):
        conn.pump(max(0.1, deadline - time.monotonic()))
    conn.notify("$sandbox.stream.cancel", sid)
    _drain(conn, 1.0)  # what was in flight when the cancel went out
    n = len(conn.streams[sid])
    _drain(conn, 1.5)
    assert len(conn.streams[sid]) == n, "bytes kept coming after the cancel"
    assert sid not in conn.ended  # a cancelled stream is not ended by hutchd (as the SDK's listings)
    err, got = conn.download("/etc/hostname")  # positive control: the session goes on
    assert err is None and got.strip()
