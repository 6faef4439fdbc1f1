#!/usr/bin/env python3
"""Builds the seed corpora in tests/fuzz/corpus/<target>/ (docs/fuzzing.md).
Run once by hand; the output is committed. Real inputs where there is a
real producer: ClientHellos from `openssl s_client` (captured on loopback),
archives from `tar`, DNS queries as a resolver builds them; the rest as the
SDK and hutchd write them."""
import base64, hashlib, json, os, socket, struct, subprocess, sys, tempfile, threading

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\n--\n"

def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def frame(typ, chan, payload):
    return struct.pack("<IHHI", len(payload), typ, 0, chan) + payload

# ---- agent frames
put("wire", "call", frame(2, 1, b'{"method":"spawn","params":{"command":"ls"}}'))
put("wire", "two", frame(18, 2 << 1, b"hello\n") + frame(19, 2, b'{"code":0,"signal":null}'))
put("wire", "credit", frame(4, 5, struct.pack("<I", 4096)) + frame(3, 7, b""))

# ---- client strings: first byte picks the parser
for i, s in enumerate([b"\x001.5GiB", b"\x001073741824", b"\x00768MiB", b"\x0130s", b"\x011.5m", b"\x012h",
                       b"\x02sbx_ord_0123456789abcdefghjk", b"\x03my-org", b"\x04app.tier_1",
                       b"\x05caf\xc3\xa9", b'\x06{"app":"web","tier":"1"}']):
    put("strparse", "s%d" % i, s)

# ---- DNS queries as a stub resolver sends them
def dnsq(qid, name, qtype, flags=0x0100, extra=b""):
    q = b"".join(bytes([len(l)]) + l for l in name.encode().split(b".")) + b"\0"
    return struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if extra else 0) + q + struct.pack(">HH", qtype, 1) + extra
opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)  # EDNS0 OPT, as glibc and dig add
put("dns", "a", dnsq(0x1234, "example.com", 1))
put("dns", "aaaa", dnsq(0x4321, "api.github.com", 28, extra=opt))
put("dns", "mx", dnsq(7, "example.org", 15))
put("dns", "ptr", dnsq(8, "1.2.0.192.in-addr.arpa", 12))

# ---- TLS ClientHellos from openssl s_client
def hello(args):
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
    port = ls.getsockname()[1]; got = []
    def srv():
        c, _ = ls.accept(); c.settimeout(3); buf = b""
        try:
            while len(buf) < 5 or len(buf) < 5 + struct.unpack(">H", buf[3:5])[0]:
                b = c.recv(65536)
                if not b: break
                buf += b
        except OSError: pass
        got.append(buf); c.close()
    t = threading.Thread(target=srv); t.start()
    subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + args,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    t.join(); ls.close()
    return got[0]
put("sni", "tls13", hello(["-servername", "api.example.com"]))
put("sni", "tls12", hello(["-servername", "example.org", "-tls1_2"]))
put("sni", "nosni", hello(["-noservername"]))
put("sni", "alpn", hello(["-servername", "h.example", "-alpn", "h2,http/1.1"]))

# ---- the proxy's HTTP/1 (reads cut at SEP)
put("http1", "get", b"GET /x HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n")
put("http1", "keepalive", b"POST /a HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n")
put("http1", "chunked", b"POST /c HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" + SEP +
    b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
put("http1", "absolute", b"GET http://example.net:81/p?q HTTP/1.1\r\nHost: example.net\r\n\r\n")
put("http1", "upgrade", b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
put("http1", "connect", b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")

# ---- secret substitution: a head, then response reads
ph, val = b"HUTCH_PH_aaaaaaaaa", b"sk-live-0123456789"
basic = base64.b64encode(b"user:" + ph)
put("subst", "bearer", b"GET /v1 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer " + ph +
    b"\r\nAccept-Encoding: gzip\r\n\r\n" + SEP + b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\nyour key: " + val[:9] +
    SEP + val[9:] + b" ok")
put("subst", "basic", b"GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Basic " + basic + b"\r\n\r\n" + SEP +
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsk-l\r\n" + SEP + b"e\r\nive-0123456789\r\n0\r\n\r\n")

# ---- CIDRs: first byte = exact
for i, s in enumerate([b"\x0110.0.0.0/8", b"\x00192.0.2.7/24", b"\x01fd00:ec2::254", b"\x01::ffff:10.0.0.0/104",
                       b"\x01169.254.169.254/32", b"\x002001:db8::/32"]):
    put("ranges", "c%d" % i, s)

# ---- tar archives made by tar(1)
with tempfile.TemporaryDirectory() as d:
    os.makedirs(d + "/src/sub")
    with open(d + "/src/a.txt", "w") as f: f.write("hello\n")
    with open(d + "/src/sub/" + "long" * 30 + ".txt", "w") as f: f.write("x" * 700)
    os.symlink("a.txt", d + "/src/link")
    for fmt in ("ustar", "pax", "gnu"):
        out = subprocess.run(["tar", "--format=" + fmt, "-C", d + "/src", "-cf", "-", "."] +
                             (["--owner=0", "--group=0"]), capture_output=True, check=fmt != "ustar").stdout
        if out: put("tar", fmt, out)

# ---- hutchd's HTTP + WebSocket (writes cut at SEP)
key = base64.b64encode(b"0123456789abcdef").decode()
def wsframe(op, payload, mask=b"\x11\x22\x33\x44", fin=True):
    n = len(payload)
    h = bytes([(0x80 if fin else 0) | op])
    if n < 126: h += bytes([0x80 | n])
    elif n < 65536: h += bytes([0x80 | 126]) + struct.pack(">H", n)
    else: h += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
upgrade = ("GET /api/v3/sandbox/sbx_ord_0123456789abcdefghjk/connect HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
           "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
           "Authorization: Bearer hx_0123456789\r\nUser-Agent: Deno/2.1.4\r\n\r\n" % key).encode()
rpc = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "spawn", "params": {"command": "ls"}}).encode()
put("http", "sdk_ws", upgrade + SEP + wsframe(1, rpc) + wsframe(1, b"ping") + SEP + wsframe(8, b"\x03\xe8"))
put("http", "ws_fragments", upgrade + wsframe(1, b'{"jsonrpc":', fin=False) + wsframe(9, b"p") +
    wsframe(0, b'"2.0"}') + wsframe(1, b"close"))
# ---- ws_rx alone (fuzz_wsrx.c): byte 0 picks the piece size, then client frames
enq = json.dumps({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue",
                  "params": {"streamId": 0, "data": base64.b64encode(bytes(range(256)) * 40).decode()}}).encode()
put("wsrx", "sdk_upload", b"\x00" + wsframe(1, rpc) + wsframe(1, enq) + wsframe(1, b"ping") + wsframe(8, b"\x03\xe8bye"))
put("wsrx", "pieces_of_7", b"\x07" + wsframe(1, rpc, mask=b"\xa5\x5a\x01\xfe") + wsframe(2, bytes(300)))
put("wsrx", "fragments_control_between", b"\x00" + wsframe(1, b'{"jsonrpc":', fin=False) + wsframe(9, b"p") +
    wsframe(10, b"") + wsframe(0, "\"é€😀\"".encode(), fin=False) + wsframe(0, b"}"))
put("wsrx", "utf8_split_bytewise", b"\x0f" + wsframe(1, "añ€𐍈".encode()) + wsframe(1, b"\xed\xa0\x80"))
put("wsrx", "close_reason_utf8", b"\x03" + wsframe(8, b"\x0f\xa0" + "ça va".encode()))
put("wsrx", "unmasked", b"\x00" + bytes([0x81, 3]) + b"abc")
put("wsrx", "too_many_fragments", b"\x00" + wsframe(2, b"a", fin=False) + b"".join(wsframe(0, b"b", fin=False) for _ in range(9)))
put("wsrx", "long_lengths", b"\x00" + bytes([0x82, 0xfe, 0, 125]) + b"\0\0\0\0" + bytes([0x82, 0xff]) + bytes(8))
put("http", "create", b"POST /api/v3/sandboxes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 36\r\n\r\n" + b'{"memory":"1.25GiB","timeout":"30s"}')
put("http", "list_keepalive", b"GET /api/v3/sandboxes?labels%5Bapp%5D=web&limit=10 HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Bearer t\r\n\r\n" + SEP + b"GET /api/v3/sandbox/sbx_ord_x HTTP/1.1\r\nHost: x\r\n"
    b"Connection: close\r\n\r\n")
put("http", "chunked", b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n")
# hutch's raw file channel: a body left to the app (fuzz_http detaches /raw PUTs), binary with bare CRs in
# the same read as the head, then more of it in later reads; and the refusals (chunked, no length)
put("http", "raw_put", b"PUT /raw?path=/tmp/f HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nab\rcd\r\r" + SEP + b"efgh\r")
put("http", "raw_put_chunked", b"PUT /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
put("http", "raw_put_nolength", b"PUT /raw HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")
print("seeds written under", os.path.join(HERE, "corpus"))

# ---- hutchd's JSON-RPC + agent side: 'A' parts are agent bytes, others client messages
def rpcmsg(i, method, params):
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}).encode()
def agent(*frames):
    return b"A" + b"".join(frames)
def reply(req, obj):
    return frame(17, req, json.dumps(obj).encode())
spawn = rpcmsg(1, "spawn", {"command": "bash", "args": ["-c", "echo hi"], "env": {"A": "1"}, "cwd": "/home/app",
                            "stdout": "piped", "stderr": "piped", "clearEnv": False, "stdinStreamId": 5})
put("rpc", "spawn_output_exit", b"".join([
    json.dumps({"jsonrpc": "2.0", "method": "$sandbox.stream.start", "params": {"streamId": 5}}).encode(), SEP,
    json.dumps({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue", "params": {"streamId": 5, "data": "aGk="}}).encode(), SEP,
    spawn, SEP, agent(reply(1, {"ok": {"pid": 42}})), SEP,
    rpcmsg(2, "processWait", {"pid": 42}), SEP,
    json.dumps({"jsonrpc": "2.0", "method": "$sandbox.stream.end", "params": {"streamId": 5}}).encode(), SEP,
    agent(frame(18, 42 << 1, b"hi\n"), frame(18, 42 << 1 | 1, b"err"), frame(20, 42, struct.pack("<I", 2)),
          frame(18, 42 << 1, b""), frame(18, 42 << 1 | 1, b"")), SEP,
    agent(frame(19, 42, b'{"code":0,"signal":null}')), SEP,
    rpcmsg(3, "processKill", {"pid": 42, "signal": "SIGTERM"})]))
put("rpc", "env", b"".join([rpcmsg(1, "envSet", {"key": "A", "value": "b"}), SEP, agent(reply(1, {"ok": None})), SEP,
    rpcmsg("x", "envGet", {"key": "A"}), SEP, agent(reply(2, {"error": {"code": "EINVAL", "message": "no"}})), SEP,
    rpcmsg(3, "envToObject", {}), SEP, agent(reply(3, {"ok": {"A": "b"}})), SEP,
    agent(frame(16, 0, b'{"ok":true}'), frame(21, 0, b"agent log line"))]))
put("rpc", "fs_read", b"".join([rpcmsg(1, "readFile", {"path": "/home/app/a.txt", "abortId": 1}), SEP,
    agent(reply(1, {"ok": {"size": 5}}), frame(22, 0x80000000, b"hello"), frame(22, 0x80000000, b"")), SEP,
    rpcmsg(2, "stat", {"path": "/etc"}), SEP, agent(reply(2, {"ok": {"isFile": False, "size": 4096}})), SEP,
    rpcmsg(3, "abort", {"abortId": 1})]))
put("rpc", "fs_write", b"".join([
    json.dumps({"jsonrpc": "2.0", "method": "$sandbox.stream.start", "params": {"streamId": 9}}).encode(), SEP,
    rpcmsg(1, "writeFile", {"path": "/home/app/b", "contentStreamId": 9, "options": {"mode": 420}}), SEP,
    json.dumps({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue", "params": {"streamId": 9, "data": "eHl6"}}).encode(), SEP,
    json.dumps({"jsonrpc": "2.0", "method": "$sandbox.stream.end", "params": {"streamId": 9}}).encode(), SEP,
    agent(frame(20, 0x80000000, struct.pack("<I", 3)), reply(1, {"ok": None}))]))
put("rpc", "fs_walk", b"".join([rpcmsg(1, "walk", {"root": "/home", "options": {"maxDepth": 2, "exts": ["txt"]}}), SEP,
    agent(reply(1, {"ok": {}}), frame(22, 0x80000000, b'{"path":"/home/a.txt","name":"a.txt","isFile":true}\n'),
          frame(22, 0x80000000, b"")), SEP,
    rpcmsg(2, "open", {"path": "/home/app/c", "options": {"read": True}}), SEP, agent(reply(2, {"ok": {"fileHandleId": 1}})), SEP,
    rpcmsg(3, "fileRead", {"fileHandleId": 1, "length": 10}), SEP, agent(reply(3, {"ok": {"data": "aGVsbG8="}})), SEP,
    rpcmsg(4, "fileClose", {"fileHandleId": 1})]))
put("rpc", "bad", b"".join([b"{", SEP, b'{"jsonrpc":"1.0"}', SEP, b'{"jsonrpc":"2.0","id":1,"method":"nope"}', SEP,
    b'{"jsonrpc":"2.0","id":[1],"method":"spawn"}', SEP, agent(frame(99, 0, b"x"))]))

# ---- hutch-init's agent loop: frames from hutchd (reads cut at SEP)
def call(req, method, params):
    return frame(2, req, json.dumps({"method": method, "params": params}).encode())
put("init", "spawn", call(1, "spawn", {"command": "/bin/sh", "args": ["-c", "echo hi"], "env": {"X": "1"},
    "cwd": "/home/app", "uid": 1000, "stdin": True, "stdout": True, "stderr": False, "clearEnv": False}))
put("init", "env", call(1, "envSet", {"key": "FOO", "value": "bar"}) + call(2, "envGet", {"key": "FOO"}) + SEP +
    call(3, "envToObject", {}) + call(4, "envDelete", {"key": "FOO"}))
put("init", "stdin_credit_kill", frame(3, 42, b"data") + frame(3, 42, b"") + frame(4, 42 << 1, struct.pack("<I", 100)) +
    SEP + call(5, "kill", {"pid": 42, "signal": 15}) + frame(7, 0, b""))
big = call(9, "spawn", {"command": "x", "args": ["a" * 300] * 4})
put("init", "split", big[:7] + SEP + big[7:100] + SEP + big[100:])

# ---- the fs worker: frames from init (reads cut at SEP); 'G' parts: glob matching
FS = 0x80000000
put("fsops", "stat_mkdir", call(1, "stat", {"path": "/home/app/a.txt"}) + call(2, "lstat", {"path": "/home/app/link"}) +
    call(3, "mkdir", {"path": "/home/app/x/y", "options": {"recursive": True, "mode": 0o700}}) +
    call(4, "remove", {"path": "/home/app/x", "options": {"recursive": True}}))
put("fsops", "read_stream", call(1, "readFile", {"path": "/home/app/a.txt", "chan": FS}) + SEP +
    frame(4, FS, struct.pack("<I", 6)) + call(2, "readDir", {"path": "/home/app", "chan": FS + 1}))
put("fsops", "walk_glob", call(1, "walk", {"path": "/home/app", "chan": FS, "options": {"maxDepth": 3, "includeDirs": True,
    "exts": [".txt"], "match": ["^/home"], "skip": ["node_modules"], "followSymlinks": False}}) + SEP +
    call(2, "expandGlob", {"path": "**/*.{js,txt}", "chan": FS + 1, "options": {"root": "/home/app", "globstar": True,
    "extended": True, "exclude": ["dir/*"]}}))
put("fsops", "write_upload", call(1, "writeFile", {"path": "/home/app/new", "chan": FS, "options": {"mode": 0o644,
    "create": True, "append": False}}) + frame(3, FS, b"hello ") + SEP + frame(3, FS, b"world") + frame(3, FS, b""))
put("fsops", "handles", call(1, "open", {"path": "/home/app/a.txt", "options": {"read": True, "write": True}}) +
    call(2, "fileRead", {"fileHandleId": 1, "length": 3}) + call(3, "fileWrite", {"fileHandleId": 1, "data": "eHl6"}) +
    call(4, "fileSeek", {"fileHandleId": 1, "offset": 0, "whence": 0}) + call(5, "fileStat", {"fileHandleId": 1}) +
    call(6, "fileTruncate", {"fileHandleId": 1, "length": 2}) + call(7, "fileUtime", {"fileHandleId": 1,
    "atime": "2024-01-02T03:04:05.678Z", "mtime": 5}) + call(8, "fileClose", {"fileHandleId": 1}))
put("fsops", "simple", call(1, "rename", {"oldpath": "/home/app/a.txt", "newpath": "/home/app/c.txt"}) +
    call(2, "copyFile", {"src": "/home/app/c.txt", "dest": "/home/app/d"}) + call(3, "symlink", {"target": "d",
    "path": "/home/app/s"}) + call(4, "readLink", {"path": "/home/app/s"}) + call(5, "realPath", {"path": "s"}) +
    call(6, "chmod", {"path": "/home/app/d", "mode": 0o600}) + call(7, "truncate", {"path": "/home/app/d", "len": 1}) +
    call(8, "makeTempDir", {"options": {"prefix": "p", "suffix": "s", "dir": "/home/app"}}) + call(9, "utime",
    {"path": "/home/app/d", "atime": 1, "mtime": "2020-01-01T00:00:00Z"}) + call(10, "fsCancel", {"chan": FS}))
put("fsops", "glob", b"G\x03**/*.{js,ts}\0src/a/b.ts")
put("fsops", "glob2", b"G\x07[!a-c]?x/**/@(foo|bar)*\0D/xx/y/foo1")
