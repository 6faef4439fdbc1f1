# A minimal VS Code extension gallery (the query and download calls that
# `code-server --install-extension` makes) serving one extension,
# hutchtest.hello 1.0.0, built here as a VSIX. Runs inside a sandbox on its
# loopback (tests/sdk/vscode.test.mjs), so tests install an extension without
# any network. Usage: fake_gallery.py PORT
import io
import json
import socketserver
import sys
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT = int(sys.argv[1])
BASE = f"http://127.0.0.1:{PORT}/gallery"
MANIFEST = {"name": "hello", "publisher": "hutchtest", "version": "1.0.0", "displayName": "Hutch test",
            "description": "served by hutch's fake gallery", "engines": {"vscode": "^1.50.0"}}


def vsix():
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.'
                   'openxmlformats.org/package/2006/content-types"><Default Extension=".json" '
                   'ContentType="application/json"/><Default Extension=".vsixmanifest" ContentType="text/xml"/>'
                   '</Types>')
        z.writestr("extension.vsixmanifest", '<?xml version="1.0" encoding="utf-8"?><PackageManifest '
                   'Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011"><Metadata>'
                   '<Identity Language="en-US" Id="hello" Version="1.0.0" Publisher="hutchtest"/>'
                   '<DisplayName>Hutch test</DisplayName></Metadata><Installation><InstallationTarget '
                   'Id="Microsoft.VisualStudio.Code"/></Installation><Dependencies/><Assets><Asset '
                   'Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json" '
                   'Addressable="true"/></Assets></PackageManifest>')
        z.writestr("extension/package.json", json.dumps(MANIFEST))
        z.writestr("extension/README.md", "hello\n")
    return b.getvalue()


VSIX = vsix()
WHEN = "2024-01-01T00:00:00.000Z"
EXT = {
    "extensionId": "00000000-0000-4000-8000-000000000001", "extensionName": "hello", "displayName": "Hutch test",
    "shortDescription": "served by hutch's fake gallery", "flags": "validated, public",
    "publisher": {"publisherId": "00000000-0000-4000-8000-000000000002", "publisherName": "hutchtest",
                  "displayName": "hutchtest", "domain": None, "isDomainVerified": False},
    "versions": [{
        "version": "1.0.0", "lastUpdated": WHEN, "flags": "validated",
        "assetUri": f"{BASE}/asset", "fallbackAssetUri": f"{BASE}/asset",
        "files": [{"assetType": "Microsoft.VisualStudio.Services.VSIXPackage", "source": f"{BASE}/hello.vsix"},
                  {"assetType": "Microsoft.VisualStudio.Code.Manifest", "source": f"{BASE}/package.json"}],
        "properties": [{"key": "Microsoft.VisualStudio.Code.Engine", "value": "^1.50.0"}],
    }],
    "statistics": [], "tags": [], "categories": [], "releaseDate": WHEN, "publishedDate": WHEN, "lastUpdated": WHEN,
}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        q = json.loads(self.rfile.read(n) or b"{}")
        print("query", json.dumps(q)[:300], flush=True)
        if not self.path.startswith("/gallery/extensionquery"):
            return self.reply(404, b"{}")
        wanted = [c.get("value", "").lower() for f in q.get("filters", []) for c in f.get("criteria", [])]
        hit = "hutchtest.hello" in wanted or "00000000-0000-4000-8000-000000000001" in wanted
        exts = [EXT] if hit else []
        body = {"results": [{"extensions": exts, "pagingToken": None, "resultMetadata": [
            {"metadataType": "ResultCount", "metadataItems": [{"name": "TotalCount", "count": len(exts)}]}]}]}
        self.reply(200, json.dumps(body).encode())

    def do_GET(self):
        print("get", self.path, flush=True)
        path = self.path.split("?")[0]
        if path in ("/gallery/hello.vsix", "/gallery/asset/Microsoft.VisualStudio.Services.VSIXPackage"):
            return self.reply(200, VSIX, "application/octet-stream")
        if path in ("/gallery/package.json", "/gallery/asset/Microsoft.VisualStudio.Code.Manifest"):
            return self.reply(200, json.dumps(MANIFEST).encode())
        self.reply(404, b"{}")

    def log_message(self, *a):
        pass


class S(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):  # no getfqdn(): no DNS in a sandbox without network
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "gallery", PORT


print("ready", flush=True)
S(("127.0.0.1", PORT), H).serve_forever()
