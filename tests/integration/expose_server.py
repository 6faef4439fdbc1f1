# A small HTTP server that the expose tests run INSIDE a sandbox (python3 is
# in the image). Usage: python3 expose_server.py PORT MARKER [LOG]
#   GET /            "hello from MARKER"          GET /headers  the request head as JSON
#   GET /sse         event 1, then waits for /tmp/sse-go-PORT to exist, event 2, end
#   GET /hang        never answers                POST /upload  {"len", "sha256"} of the body
#   GET /ws          WebSocket echo (RFC 6455, text and binary)
#   GET /setcookie   tries to set hutch's own cookie (and one of its own)
#   GET /big?mb=N    N MiB of "x"
#   GET /chunks?seed=S  a chunked body in pieces of awkward sizes (expose_util.chunk_plan), each
#                    written as three writes (size line, data, CRLF)
#   GET /go          creates /tmp/sse-go-PORT     GET /page  a page that uses all of the above
#                    from a browser (absolute paths: the cookie, not the URL, carries the secret)
# Every request line is appended to LOG (default /tmp/requests-PORT.log).
# server_bind skips HTTPServer's getfqdn(): a reverse lookup that waits out
# the sandbox's DNS otherwise.
import base64, hashlib, json, os, socket, socketserver, struct, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, MARKER = int(sys.argv[1]), sys.argv[2]
LOG = sys.argv[3] if len(sys.argv) > 3 else f"/tmp/requests-{PORT}.log"
# around the 16 KiB of a TLS record and the 64 KiB the ingress reads at once (expose_util.CHUNK_SIZES)
CHUNK_SIZES = [1, 2, 16383, 16384, 16385, 5, 65536, 100000, 7, 32768, 49155, 131072, 3]


PAGE = """<!doctype html><html><head><title>loading</title></head><body><pre id="out">waiting</pre><script>
(async () => {
  const r = { marker: "%s" };
  r.path = (await (await fetch("/headers?from=page")).json()).path;
  r.sse = await new Promise((resolve, reject) => {
    const evs = [], es = new EventSource("/sse");
    es.onmessage = (e) => {
      evs.push(e.data);
      if (e.data === "one") fetch("/go");  // event two is written only after this
      if (e.data === "two") { es.close(); resolve(evs); }
    };
    es.onerror = () => { if (evs.length < 2) { es.close(); reject(new Error("sse failed after " + evs)); } };
  });
  r.ws = await new Promise((resolve, reject) => {
    const ws = new WebSocket("wss://" + location.host + "/ws");
    ws.onopen = () => ws.send("hi from chromium");
    ws.onmessage = (m) => { resolve(m.data); ws.close(); };
    ws.onerror = () => reject(new Error("websocket failed"));
  });
  document.getElementById("out").textContent = JSON.stringify(r);
  document.title = "done";
})().catch((e) => { document.getElementById("out").textContent = String(e); document.title = "failed"; });
</script></body></html>
""" % MARKER


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "sandbox", self.server_address[1]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_req(self):
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path}\n")

    def do_GET(self):
        self.log_req()
        if self.path == "/headers" or self.path.startswith("/headers?"):
            h = {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
            return self.send(200, json.dumps(h).encode(), "application/json")
        if self.path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()  # no length, no chunking: the body ends when we close
            self.wfile.write(b"data: one\n\n")
            self.wfile.flush()
            go = f"/tmp/sse-go-{PORT}"
            for _ in range(600):  # bounded: 60 s
                if os.path.exists(go):
                    break
                time.sleep(0.1)
            self.wfile.write(b"data: two\n\n")
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/setcookie":  # tries to plant hutch's cookie for every port it can guess
            self.send_response(200)
            for port in (self.headers.get("Host", ":0").rsplit(":", 1)[-1], "1"):
                self.send_header("Set-Cookie", f"__Host-hutch-{port}=planted; Path=/; Secure")
            self.send_header("Set-Cookie", "app=kept; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/go":  # lets /sse send its second event
            open(f"/tmp/sse-go-{PORT}", "w").close()
            return self.send(204, b"")
        if self.path == "/page":
            return self.send(200, PAGE.encode(), "text/html; charset=utf-8")
        if self.path.startswith("/big?mb="):  # N MiB, as fast as the socket takes them
            n = int(self.path.split("=")[1]) << 20
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"x" * (1 << 16)
            for _ in range(n >> 16):
                self.wfile.write(block)
            return
        if self.path.startswith("/chunks?seed="):  # the same plan as expose_util.chunk_plan
            seed = self.path.split("=")[1]
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, n in enumerate(CHUNK_SIZES):
                data = (hashlib.sha256(f"{seed}:{i}".encode()).digest() * (n // 32 + 1))[:n]
                self.wfile.write(b"%x\r\n" % n)
                self.wfile.write(data)
                self.wfile.write(b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/hang":
            time.sleep(3600)
            return
        if self.path == "/ws":
            return self.websocket()
        self.send(200, f"hello from {MARKER}\n".encode())

    do_HEAD = do_GET

    def do_POST(self):
        self.log_req()
        h, n = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    b = self.rfile.read(min(left, 1 << 16))
                    h.update(b)
                    n += len(b)
                    left -= len(b)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                b = self.rfile.read(min(left, 1 << 16))
                if not b:
                    break
                h.update(b)
                n += len(b)
                left -= len(b)
        self.send(200, json.dumps({"len": n, "sha256": h.hexdigest(), "marker": MARKER}).encode(),
                  "application/json")

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", acc.decode())
        self.end_headers()
        self.wfile.flush()
        r = self.rfile
        while True:
            hdr = r.read(2)
            if len(hdr) < 2:
                return
            op, ln = hdr[0] & 0x0F, hdr[1] & 0x7F
            if ln == 126:
                ln = struct.unpack(">H", r.read(2))[0]
            elif ln == 127:
                ln = struct.unpack(">Q", r.read(8))[0]
            mask = r.read(4) if hdr[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(ln)))
            if op == 8:
                self.wfile.write(b"\x88\x00")
                return
            if op in (1, 2):
                out = bytes([0x80 | op])
                out += bytes([len(data)]) if len(data) < 126 else (
                    b"\x7e" + struct.pack(">H", len(data)) if len(data) < 65536 else b"\x7f" + struct.pack(">Q", len(data)))
                self.wfile.write(out + data)
                self.wfile.flush()


Server(("0.0.0.0", PORT), H).serve_forever()
