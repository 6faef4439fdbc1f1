"""A mock of hutchd's client-facing protocol (the @deno/sandbox 0.13.2 wire protocol),
pure python3 stdlib, just enough to drive the `hutch` CLI in tests.

WebSocket endpoints: /api/v3/sandboxes/create, /api/v3/sandbox/ID/connect (JSON-RPC:
envSet/envGet, spawn, processWait, processKill, $sandbox.stream.*). REST: sandboxes
list/kill/extend and the admin token API. The commands the fake sandbox "runs" are
scripted (see MockConn.behaviour): `exit N`, `big N`, `cat`, `sha256sum`, `sleep`, ...

Run alone: python3 mock_server.py [--port N] [--unix PATH]  (prints "PORT N").
"""
import base64
import hashlib
import json
import os
import queue
import random
import shlex
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ID_ALPHABET = "0123456789abcdefghjkmnpqrstuvwxyz"
INVALID_TOKEN = {"code": "INVALID_TOKEN", "message": "The passed access token is invalid or expired."}


def now_ms():
    return int(time.time() * 1000)


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)


class Proc:
    def __init__(self, pid):
        self.pid = pid
        self.done = threading.Event()
        self.status = None
        self.kills = queue.Queue()


class MockConn:
    """One WebSocket connection to one sandbox."""

    def __init__(self, mock, sock, rfile, sandbox):
        self.mock = mock
        self.sock = sock
        self.rfile = rfile
        self.sb = sandbox
        self.wlock = threading.Lock()
        self.inbound = {}  # client stream id -> queue of bytes (None = end)
        self.procs = {}
        self.handles = {}  # fileHandleId -> [bytes, offset]
        self.closed = False

    # -- frames
    def send_frame(self, opcode, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self.wlock:
            if self.closed:
                return
            try:
                self.sock.sendall(hdr + payload)
            except OSError:
                self.closed = True

    def send_json(self, obj):
        self.send_frame(1, json.dumps(obj))

    def read_exact(self, n):
        data = self.rfile.read(n)
        if data is None or len(data) < n:
            raise EOFError
        return data

    def read_message(self):
        buf = b""
        first_opcode = None
        while True:
            b0, b1 = self.read_exact(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            if not b1 & 0x80:
                self.mock.errors.append("unmasked client frame")
                raise EOFError
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.read_exact(8))[0]
            mask = self.read_exact(4)
            data = bytearray(self.read_exact(n))
            for i in range(n):
                data[i] ^= mask[i % 4]
            if opcode >= 8:  # control frames may interleave
                return opcode, bytes(data)
            if first_opcode is None:
                first_opcode = opcode
            buf += data
            if fin:
                return first_opcode, buf

    # -- streams to the client
    def stream_out(self, sid, data, chunk=65536):
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            self.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue",
                            "params": {"streamId": sid, "data": base64.b64encode(part).decode()}})

    def stream_start(self, sid):
        self.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.start", "params": {"streamId": sid}})

    def stream_end(self, sid):
        self.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.end", "params": {"streamId": sid}})

    def read_stdin(self, sid):
        if sid is None:
            return b""
        q = self.inbound.setdefault(sid, queue.Queue())
        out = bytearray()
        while True:
            part = q.get()
            if part is None:
                return bytes(out)
            out += part

    # -- the fake processes
    def behaviour(self, params, proc, out_sid, err_sid):
        cmd, args = params["command"], list(params.get("args") or [])
        if cmd == "sudo" and args:
            cmd, args = args[0], args[1:]
        if cmd == "bash" and args[:1] == ["-c"] and len(args) > 1:
            words = shlex.split(args[1])
            cmd, args = (words[0], words[1:]) if words else ("true", [])
        out, err = bytearray(), bytearray()
        status = {"success": True, "code": 0, "signal": None, "oom": None}

        def flush():
            if out:
                self.stream_out(out_sid, bytes(out))
                out.clear()
            if err:
                self.stream_out(err_sid, bytes(err))
                err.clear()

        if cmd == "exit":
            out += b"hello\n"
            status["code"] = int(args[0])
        elif cmd == "stderr":
            err += b"oops\n"
            status["code"] = int(args[0]) if args else 1
        elif cmd == "big":
            n = int(args[0])
            block = (b"0123456789abcdef" * 4096)
            sent = 0
            while sent < n:
                part = block[:min(len(block), n - sent)]
                self.stream_out(out_sid, part)
                sent += len(part)
        elif cmd == "cat":
            out += self.read_stdin(params.get("stdinStreamId"))
        elif cmd == "sha256sum":
            data = self.read_stdin(params.get("stdinStreamId"))
            self.sb["stdin_bytes"] = len(data)
            out += hashlib.sha256(data).hexdigest().encode() + b"  -\n"
        elif cmd == "echoparams":
            out += json.dumps(params).encode() + b"\n"
        elif cmd in ("sleep", "stubborn"):
            out += b"started\n"
            flush()
            secs = float(args[0]) if args else 60.0
            deadline = time.time() + secs
            while True:
                try:
                    sig = proc.kills.get(timeout=max(0.0, deadline - time.time()))
                except queue.Empty:
                    break
                if cmd == "stubborn" and sig != "SIGKILL":
                    continue
                status.update(success=False, code=128 + signal.Signals[sig].value, signal=sig)
                break
        elif cmd == "killed":
            sig = args[0]
            status.update(success=False, code=128 + signal.Signals[sig].value, signal=sig)
        elif cmd == "oom":
            status.update(success=False, code=137, signal="SIGKILL", oom="high-confidence")
        elif cmd == "closeconn":
            out += b"partial\n"
            flush()
            time.sleep(0.2)
            with self.wlock:
                self.closed = True
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
        else:
            out += b"hello\n"
        status["success"] = status["code"] == 0 and status["signal"] is None
        flush()
        for sid in (out_sid, err_sid):
            self.stream_end(sid)
        proc.status = status
        proc.done.set()

    def rpc(self, msg):
        mid, method, params = msg.get("id"), msg.get("method"), msg.get("params") or {}
        sb = self.sb

        def ok(value):
            self.send_json({"jsonrpc": "2.0", "id": mid, "result": {"ok": value}})

        def fail(ctor, message, code=None):
            self.send_json({"jsonrpc": "2.0", "id": mid, "result": {"error": {
                "constructorName": ctor, "message": message, "code": code, "stack": None, "cause": None,
                "errors": None, "name": ctor, "suppressed": None, "error": None}}})

        self.mock.calls.append((method, params))
        if method == "envSet":
            sb["env"][params["key"]] = params["value"]
            ok(None)
        elif method == "envGet":
            ok(sb["env"].get(params["key"]))
        elif method == "spawn":
            sb["spawns"].append(params)
            words = params.get("args") or []
            first = params["command"]
            if first == "bash" and words[:1] == ["-c"] and len(words) > 1:
                first = (shlex.split(words[1]) or [""])[0]
            if first == "notfound":
                return fail("NotFound", "No such file or directory (os error 2)", "ENOENT")
            self.mock.pid += 1
            proc = Proc(self.mock.pid)
            self.procs[proc.pid] = proc
            self.mock.procs[proc.pid] = proc
            out_sid, err_sid = self.mock.pid * 2 + 1000, self.mock.pid * 2 + 1001
            if first == "early":  # output before the spawn reply names the streams
                self.stream_start(out_sid)
                self.stream_out(out_sid, b"early bird\n")
            ok({"pid": proc.pid, "stdoutStreamId": out_sid, "stderrStreamId": err_sid})
            if first != "early":
                self.stream_start(out_sid)
            self.stream_start(err_sid)
            threading.Thread(target=self.behaviour, args=(params, proc, out_sid, err_sid), daemon=True).start()
        elif method == "processWait":
            proc = self.procs.get(params.get("pid"))
            if not proc:
                return fail("NotFound", "no such process", "ESRCH")

            def waiter():
                proc.done.wait()
                ok(proc.status)
            threading.Thread(target=waiter, daemon=True).start()
        elif method in ("stat", "lstat") and params.get("path") in sb.get("files", {}):
            # a hutchd of the SDK's protocol only (no readFileStream): one flat file system
            data = sb["files"][params["path"]]
            ok({"isFile": True, "isDirectory": False, "isSymlink": False, "size": len(data), "mode": 0o100644})
        elif method in ("stat", "lstat"):
            fail("NotFound", "No such file or directory (os error 2)", "ENOENT")
        elif method == "open" and params.get("path") in sb.get("files", {}):
            self.mock.pid += 1
            self.handles[self.mock.pid] = [sb["files"][params["path"]], 0]
            ok({"fileHandleId": self.mock.pid})
        elif method == "fileRead" and params.get("fileHandleId") in self.handles:
            h = self.handles[params["fileHandleId"]]
            chunk = h[0][h[1]:h[1] + min(int(params.get("length", 65536)), 147456)]
            h[1] += len(chunk)
            ok({"data": base64.b64encode(chunk).decode() if chunk else None})
        elif method == "fileClose":
            self.handles.pop(params.get("fileHandleId"), None)
            ok(None)
        elif method == "processKill":
            proc = self.procs.get(params.get("pid"))
            self.mock.kills.append(params.get("signal"))
            if not proc:
                return fail("NotFound", "no such process", "ESRCH")
            proc.kills.put(params.get("signal") or "SIGTERM")
            ok(None)
        else:
            self.send_json({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})

    def serve(self):
        try:
            while True:
                opcode, data = self.read_message()
                if opcode == 8:
                    self.send_frame(8, data[:2])
                    return
                if opcode == 9:
                    self.send_frame(10, data)
                    continue
                if opcode != 1:
                    continue
                text = data.decode()
                if text == "ping":
                    self.mock.pings += 1
                    self.send_frame(1, "pong")
                    continue
                msg = json.loads(text)
                method = msg.get("method", "")
                if "id" not in msg and method.startswith("$sandbox.stream."):
                    p = msg["params"]
                    q = self.inbound.setdefault(p["streamId"], queue.Queue())
                    if method == "$sandbox.stream.enqueue":
                        q.put(base64.b64decode(p["data"]))
                    elif method in ("$sandbox.stream.end", "$sandbox.stream.error"):
                        q.put(None)
                    continue
                self.rpc(msg)
        except (EOFError, OSError, ValueError):
            return
        finally:
            self.closed = True


class Handler(socketserver.StreamRequestHandler):
    def reply(self, status, body=None, headers=(), chunked=False):
        reason = {200: "OK", 101: "Switching Protocols", 204: "No Content", 400: "Bad Request",
                  401: "Unauthorized", 404: "Not Found"}.get(status, "Status")
        data = b"" if body is None else json.dumps(body).encode()
        lines = ["HTTP/1.1 %d %s" % (status, reason), "Connection: close"]
        lines += ["%s: %s" % h for h in headers]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            half = len(data) // 2
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (data[:half], data[half:]) if p) + b"0\r\n\r\n"
        else:
            if status != 204:
                lines.append("Content-Length: %d" % len(data))
            lines.append("Content-Type: application/json")
            payload = data
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    def handle(self):
        mock = self.server.mock
        line = self.rfile.readline(65537).decode("latin-1")
        if not line:
            return
        method, target, _ = line.split(" ", 2)
        headers = {}
        while True:
            h = self.rfile.readline(65537).decode("latin-1")
            if h in ("\r\n", "\n", ""):
                break
            k, v = h.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        body = self.rfile.read(int(headers.get("content-length", "0") or 0))
        path, _, query = target.partition("?")
        mock.requests.append({"method": method, "target": target, "headers": headers, "body": body})
        token = headers.get("authorization", "")[len("Bearer "):] if headers.get("authorization", "").startswith(
            "Bearer ") else None
        on_unix = self.server.address_family == socket.AF_UNIX

        if path.startswith("/hutch/v1/sandboxes/"):
            # hutch's raw file channel: this server predates it (an older
            # hutchd answers a valid token's request with "no route")
            if token != mock.token and token != mock.admin_token:
                return self.reply(401, INVALID_TOKEN)
            return self.reply(404, {"code": "NOT_FOUND", "message": "no route %s %s" % (method, path)})
        if path.startswith("/hutch/v1/"):
            if not on_unix and token != mock.admin_token:
                return self.reply(401, INVALID_TOKEN)
            return self.admin(method, path, body)
        if token != mock.token:
            return self.reply(401, INVALID_TOKEN)

        if headers.get("upgrade", "").lower() == "websocket":
            return self.websocket(path, headers)
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/api/v2/sandboxes":
            q = urllib.parse.parse_qs(query)
            want = {k[len("labels["):-1]: v[0] for k, v in q.items() if k.startswith("labels[") and k.endswith("]")}
            items = [{"id": s["id"], "createdAt": iso(s["created"]), "stoppedAt": None, "region": "loc",
                      "status": s["status"], "labels": s["labels"]}
                     for s in mock.sandboxes.values() if all(s["labels"].get(k) == v for k, v in want.items())]
            return self.reply(200, items, chunked=True)
        if method == "GET" and path in ("/api/v2/volumes", "/api/v2/snapshots") and mock.pages is not None:
            # pages: {query string: (items, Link header value or None)}, set by a test
            items, link = mock.pages.get(query, ([], None))
            return self.reply(200, items, headers=[("Link", link)] if link else ())
        if len(parts) == 4 and parts[:3] == ["api", "v3", "sandbox"]:
            sb = mock.sandboxes.get(parts[3])
            if not sb or sb["status"] != "running":
                return self.reply(404, {"code": "SANDBOX_NOT_FOUND", "message": "Sandbox %s not found" % parts[3]})
            if method == "DELETE":
                sb["status"] = "stopped"
                return self.reply(204)
            if method == "PATCH":
                want = json.loads(body)["stop_at_ms"]
                granted = min(want, now_ms() + 30 * 60 * 1000)  # the real service caps at 30 min
                sb["stop_at_ms"] = granted
                return self.reply(200, {"stop_at_ms": granted})
        return self.reply(404, {"code": "NOT_FOUND", "message": "no route for %s %s" % (method, path)})

    def admin(self, method, path, body):
        mock = self.server.mock
        if method == "POST" and path == "/hutch/v1/tokens":
            req = json.loads(body or b"{}")
            n = len(mock.tokens) + 1
            tok = {"id": "tok_%04d" % n, "org": req.get("org", "default"), "name": req.get("name"),
                   "createdAt": iso(now_ms())}
            mock.tokens[tok["id"]] = tok
            return self.reply(200, dict(tok, token="hutch_secret_%04d" % n))
        if method == "GET" and path == "/hutch/v1/tokens":
            return self.reply(200, list(mock.tokens.values()))
        if method == "DELETE" and path.startswith("/hutch/v1/tokens/"):
            tid = urllib.parse.unquote(path[len("/hutch/v1/tokens/"):])
            if mock.tokens.pop(tid, None) is None:
                return self.reply(404, {"code": "TOKEN_NOT_FOUND", "message": "no token %s" % tid})
            return self.reply(204)
        return self.reply(404, {"code": "NOT_FOUND", "message": "no route"})

    def websocket(self, path, headers):
        mock = self.server.mock
        if path == "/api/v3/sandboxes/create":
            cfg = json.loads(base64.b64decode(headers.get("x-deno-sandbox-config", "e30=")))
            sid = "sbx_loc_" + "".join(random.choice(ID_ALPHABET) for _ in range(20))
            sb = {"id": sid, "config": cfg, "labels": cfg.get("labels") or {}, "env": {}, "spawns": [],
                  "status": "running", "created": now_ms()}
            mock.sandboxes[sid] = sb
        else:
            parts = path.strip("/").split("/")
            sb = mock.sandboxes.get(parts[3]) if len(parts) == 5 and parts[4] == "connect" else None
            if not sb or sb["status"] != "running":
                return self.reply(404, {"code": "SANDBOX_NOT_FOUND",
                                        "message": "Sandbox %s not found" % (parts[3] if len(parts) > 3 else "?")})
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if mock.bad_accept:
            accept = ("y" if accept[0] == "x" else "x") + accept[1:]  # always differs
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\nx-deno-sandbox-id: %s\r\n\r\n" % (accept, sb["id"])).encode())
        self.wfile.flush()
        MockConn(mock, self.connection, self.rfile, sb).serve()


class _TCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class MockServer:
    def __init__(self, token="secret", admin_token="admin", unix_path=None, port=0):
        self.token, self.admin_token = token, admin_token
        self.sandboxes, self.tokens, self.procs = {}, {}, {}
        self.requests, self.calls, self.kills, self.errors = [], [], [], []
        self.pings = 0
        self.pid = 0
        self.bad_accept = False
        self.pages = None  # volume/snapshot list pages, see Handler.handle
        self.tcp = _TCP(("127.0.0.1", port), Handler)
        self.tcp.mock = self
        self.port = self.tcp.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.unix = None
        if unix_path:
            self.unix = _Unix(unix_path, Handler)
            self.unix.mock = self
        self.threads = []

    def start(self):
        for srv in filter(None, (self.tcp, self.unix)):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        for srv in filter(None, (self.tcp, self.unix)):
            srv.shutdown()
            srv.server_close()

    def add_sandbox(self, labels=None):
        sid = "sbx_loc_" + "".join(random.choice(ID_ALPHABET) for _ in range(20))
        self.sandboxes[sid] = {"id": sid, "config": {}, "labels": labels or {}, "env": {}, "spawns": [],
                               "status": "running", "created": now_ms()}
        return sid


if __name__ == "__main__":
    port, unix = 0, None
    argv = sys.argv[1:]
    while argv:
        a = argv.pop(0)
        if a == "--port":
            port = int(argv.pop(0))
        elif a == "--unix":
            unix = argv.pop(0)
    m = MockServer(unix_path=unix, port=port).start()
    print("PORT %d" % m.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        m.stop()
        if unix:
            os.unlink(unix)
