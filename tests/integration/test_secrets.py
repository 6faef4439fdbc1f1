# Secrets on the wire (issue 5): the sandbox holds a placeholder; only HTTPS
# to a host named in the secret (and allowed by allowNet) is intercepted and
# carries the real value; responses echo it back masked. hutchd runs in a
# throwaway network namespace (netenv.py); the echo upstream is a test server
# with a certificate from a test CA, in a namespace the test made.
import base64
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hutchlib import HandshakeError  # noqa: E402
from netenv import NetEnv, out, wait_audit  # noqa: E402

ECHO_IP = "192.0.2.4"
SECRET = "sk-real-" + "7f3a9c2e5b1d48f6a0c3e9b7d2f1a6c4"   # what must never reach the sandbox
NAMES = ["api.secret.test", "other.secret.test", "bad.secret.test"]

ECHO = r'''
import http.server, json, socket, socketserver, ssl, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):  # no Nagle: a head and a body written apart must not wait for a delayed ACK
        super().setup(); self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline(); return data
                data += self.rfile.read(n); self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))
    def _echo(self):
        body = self._body()
        rec = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
               "body_len": len(body), "tls": isinstance(self.connection, ssl.SSLSocket)}
        data = json.dumps(rec).encode() + b"\n"
        with open(sys.argv[3], "a") as f:  # logged before answering: a test reads it right after
            f.write(json.dumps(rec) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo-Auth", self.headers.get("Authorization", ""))
        self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = do_PUT = _echo
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; allow_reuse_address = True
    def server_bind(self):
        socketserver.TCPServer.server_bind(self); self.server_name = "echo"; self.server_port = self.server_address[1]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
plain = S((sys.argv[4], 80), H)
tls = S((sys.argv[4], 443), H); tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
for s in (plain, tls):
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


def _sh(*a):
    subprocess.run(list(a), check=True, capture_output=True)


def make_test_ca(d):
    """A test CA and a leaf for the echo names (not bad.secret.test)."""
    ca_key, ca, key, csr, cert, ext = (os.path.join(d, n) for n in
                                       ("ca.key", "ca.pem", "echo.key", "echo.csr", "echo.pem", "ext.cnf"))
    _sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=hutch test upstream CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    _sh("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=api.secret.test")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:api.secret.test,DNS:other.secret.test\nextendedKeyUsage=serverAuth\n")
    _sh("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    return ca, cert, key


@pytest.fixture(scope="module")
def env():
    if os.geteuid() != 0:
        pytest.fail("secrets tests need root")
    net = NetEnv().start()
    echo = None
    try:
        ca, cert, key = make_test_ca(net.tmp)
        log = os.path.join(net.tmp, "echo.log")
        subprocess.run(["ip", "-n", net.u, "addr", "add", f"{ECHO_IP}/24", "dev", "hxnb"], check=True)
        script = os.path.join(net.tmp, "echo.py")
        with open(script, "w") as f:
            f.write(ECHO)
        echo = subprocess.Popen(["ip", "netns", "exec", net.u, sys.executable, script, cert, key, log, ECHO_IP],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = echo.stdout.readline()
        assert "ready" in line, line + echo.stdout.read()
        extra = ["--upstream-ca", ca]
        for n in NAMES:
            extra += ["--resolve", f"{n}={ECHO_IP}"]
        net.start_hutchd(tag="sec", extra=extra)
        net.test_ca, net.echo_log = ca, log
        yield net
    finally:
        if echo:
            echo.kill()
            echo.wait()
        net.stop()


def echoed(env, since):
    """Requests the echo server received after offset since."""
    with open(env.echo_log) as f:
        f.seek(since)
        return [json.loads(line) for line in f if line.strip()]


def log_pos(env):
    return os.path.getsize(env.echo_log) if os.path.exists(env.echo_log) else 0


@pytest.fixture
def sbx(env):
    made = []

    def make(secrets=None, allow_net=("api.secret.test", "other.secret.test", "bad.secret.test"), **extra):
        cfg = {"secrets": secrets if secrets is not None else
               {"API_KEY": {"hosts": ["api.secret.test", "bad.secret.test"], "value": SECRET}}}
        if allow_net is not None:
            cfg["allow_net"] = list(allow_net)
        cfg.update(extra)
        sb = env.hutchd.create_sandbox(cfg)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.ws.close()


def placeholder(sb):
    r = sb.sh("printf %s \"$API_KEY\"")
    return out(r)


def test_sandbox_sees_a_placeholder_everywhere(sbx):
    sb = sbx()
    ph = placeholder(sb)
    assert ph and ph != SECRET and len(ph) == len(SECRET), ph
    assert sb.call("envGet", {"key": "API_KEY"}) == ph
    again = out(sb.sh("sh -c 'printf %s $API_KEY'; sudo -n sh -c 'printf %s $API_KEY' || true"))
    assert SECRET not in again
    r = sb.sh("cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c " + SECRET[:20] + "; "
              "sudo -n grep -rl --exclude-dir=proc --exclude-dir=sys " + SECRET[:20] + " / 2>/dev/null | head -3; "
              "echo done")
    o = out(r)
    assert o.split()[0] == "0" and o.split()[1] == "done", o


def test_https_to_an_approved_host_gets_the_real_value_and_the_echo_is_masked(env, sbx):
    sb = sbx()
    pos = log_pos(env)
    r = sb.sh('curl -sS -m 10 -D /tmp/h -H "Authorization: Bearer $API_KEY" https://api.secret.test/v1/x; '
              'cat /tmp/h')
    o = out(r)
    assert r["code"] == 0, o
    got = echoed(env, pos)
    assert got and got[-1]["headers"]["Authorization"] == "Bearer " + SECRET, got
    assert got[-1]["tls"] and got[-1]["headers"].get("Accept-Encoding", "identity") == "identity"
    assert SECRET not in o, o
    ph = placeholder(sb)
    assert "Bearer " + ph in o, o            # the echo (body and header) came back masked
    rep = wait_audit(env.hutchd, sb.id, lambda rep: any(a.get("verdict") == "substituted" for a in rep["audit"]))
    subs = [a for a in rep["audit"] if a.get("verdict") == "substituted"]
    assert subs and subs[0]["secret"] == "API_KEY" and subs[0]["host"] == "api.secret.test", rep["audit"]
    assert subs[0]["method"] == "GET" and subs[0]["path"] == "/v1/x"
    assert SECRET not in json.dumps(rep)


def test_a_client_hello_sent_late_is_still_intercepted(env, sbx):
    """A client that connects to port 443 and says nothing for 1.5 s (a
    loaded sandbox, a pool that connects early) still gets its secret
    substituted: on the web's ports the proxy waits for the client's first
    bytes instead of splicing raw TCP after 300 ms. The same script sending
    at once is the control."""
    sb = sbx()
    script = ("import os, socket, ssl, sys, time\n"
              "s = socket.create_connection(('api.secret.test', 443))\n"
              "time.sleep(float(sys.argv[1]))\n"
              "t = ssl.create_default_context().wrap_socket(s, server_hostname='api.secret.test')\n"
              "t.sendall(b'GET /late HTTP/1.1\\r\\nHost: api.secret.test\\r\\nAuthorization: Bearer '"
              " + os.environ['API_KEY'].encode() + b'\\r\\nConnection: close\\r\\n\\r\\n')\n"
              "print(t.recv(100).decode().split()[1])\n")
    assert sb.sh("cat > /tmp/late.py <<'EOF'\n" + script + "EOF")["code"] == 0
    for delay in ("0", "1.5"):
        pos = log_pos(env)
        r = sb.sh("python3 /tmp/late.py " + delay)
        assert r["code"] == 0 and out(r).strip() == "200", (delay, out(r), r)
        got = _wait_echoed(env, pos)
        assert got and got[-1]["path"] == "/late" and got[-1]["tls"], (delay, got)
        assert _header(got[-1], "authorization") == "Bearer " + SECRET, (delay, got)


def test_basic_auth_keep_alive_and_chunked_bodies(env, sbx):
    sb = sbx()
    pos = log_pos(env)
    # two requests on one connection, the second with a chunked body
    r = sb.sh('head -c 100000 /dev/zero > /tmp/z; '
              'curl -sS -m 10 -u "user:$API_KEY" https://api.secret.test/a '
              '--next -sS -m 10 -H "Transfer-Encoding: chunked" -H "X-Key: $API_KEY" --data-binary @/tmp/z '
              'https://api.secret.test/b')
    o = out(r)
    assert r["code"] == 0, o
    got = echoed(env, pos)
    assert len(got) == 2, got
    assert got[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    assert got[1]["headers"]["X-Key"] == SECRET and got[1]["body_len"] == 100000, got[1]
    assert SECRET not in o


def test_python_urllib_works_through_interception(env, sbx):
    sb = sbx()
    pos = log_pos(env)
    code = ("import os,urllib.request as u;"
            "r=u.urlopen(u.Request('https://api.secret.test/py',headers={'X-Api-Key':os.environ['API_KEY']}));"
            "print(r.status)")
    r = sb.sh(f'python3 -c "{code}"')
    assert "200" in out(r), out(r)
    assert echoed(env, pos)[-1]["headers"]["X-Api-Key"] == SECRET


def test_other_hosts_and_plain_http_only_see_the_placeholder(env, sbx):
    sb = sbx()
    ph = placeholder(sb)
    pos = log_pos(env)
    # other.secret.test is allowed but not named in the secret: not intercepted, so the
    # sandbox sees the upstream's own certificate (issued by the test CA, not ours)
    r = sb.sh('curl -sS -m 10 -k -H "X-Key: $API_KEY" https://other.secret.test/o; '
              'curl -sS -m 10 -H "X-Key: $API_KEY" http://api.secret.test/plain; '
              'curl -sS -m 10 -k -w "%{ssl_verify_result}" -o /dev/null https://other.secret.test/issuer -v 2>&1 '
              '| grep -i "issuer:"')
    o = out(r)
    got = echoed(env, pos)
    assert [g["headers"]["X-Key"] for g in got[:2]] == [ph, ph], got
    assert "hutch test upstream CA" in o, o         # the upstream's certificate, untouched
    assert SECRET not in o


def test_pinned_client_and_unverifiable_upstream_fail_cleanly(env, sbx):
    sb = sbx()
    # a client that trusts only its own CA refuses our certificate
    with open(env.test_ca) as f:
        pem = f.read()
    r = sb.sh(f"printf '%s' '{pem}' > /tmp/own.pem; "
              "curl -sS -m 10 --cacert /tmp/own.pem https://api.secret.test/pinned; echo rc=$?")
    assert "rc=0" not in out(r), out(r)
    # bad.secret.test's upstream certificate does not name it: the proxy refuses to send the value
    pos = log_pos(env)
    r = sb.sh('curl -sS -m 10 -H "X-Key: $API_KEY" https://bad.secret.test/x; echo rc=$?')
    assert "rc=0" not in out(r), out(r)
    assert not [g for g in echoed(env, pos) if g["path"] == "/x"]
    rep = wait_audit(env.hutchd, sb.id, lambda rep: any("verification" in a["reason"] for a in rep["audit"]))
    assert any(a["host"] == "bad.secret.test" and "verification" in a["reason"] for a in rep["audit"]), rep["audit"]


def test_invalid_secrets_are_refused_without_echoing_the_value(env):
    for bad in ({"API_KEY": {"hosts": ["api.secret.test"], "value": "short"}},
                {"1BAD": {"hosts": ["api.secret.test"], "value": SECRET}},
                {"API_KEY": {"hosts": ["10.0.0.1"], "value": SECRET}},
                {"API_KEY": {"hosts": [], "value": SECRET}},
                {"API_KEY": {"hosts": ["api.secret.test"], "value": SECRET + "\r\nX: y"}}):
        with pytest.raises(HandshakeError) as ei:
            env.hutchd.create_sandbox({"secrets": bad})
        assert ei.value.status == 400, (bad, ei.value)
        assert SECRET.encode() not in ei.value.body, ei.value.body


def test_the_value_is_not_in_logs_or_state(env, sbx):
    sb = sbx()
    sb.sh('curl -sS -m 10 -H "Authorization: Bearer $API_KEY" https://api.secret.test/z')
    time.sleep(0.5)
    needle = SECRET.encode()
    with open(env.hutchd.log_path, "rb") as f:
        assert needle not in f.read()
    for root, dirs, files in os.walk(env.hutchd.state_dir):
        # STATE/lxcfs is hutchd's lxcfs mount (resource views), not state
        dirs[:] = [x for x in dirs if not os.path.ismount(os.path.join(root, x))]
        for name in files:
            p = os.path.join(root, name)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    assert needle not in f.read(), p
    key = os.path.join(env.hutchd.state_dir, "ca", "ca.key")
    assert os.stat(key).st_mode & 0o777 == 0o600


def test_cli_create_with_a_secret_from_a_file(env):
    d = env.hutchd
    path = os.path.join(env.tmp, "key.txt")
    with open(path, "w") as f:
        f.write(SECRET + "\n")
    r = d.cli("create", "--secret", f"API_KEY=@{path}", "--secret-host", "API_KEY=api.secret.test",
              "--allow-net", "api.secret.test", check=True)
    sid = r.stdout.strip()
    try:
        pos = log_pos(env)
        r = d.cli("exec", sid, "--", "sh", "-c", 'curl -sS -m 10 -H "X-Key: $API_KEY" https://api.secret.test/cli',
                  check=True)
        assert SECRET not in r.stdout
        assert echoed(env, pos)[-1]["headers"]["X-Key"] == SECRET
        # a value on the command line is refused (it would be visible in ps)
        bad = d.cli("create", "--secret", f"API_KEY={SECRET}", "--secret-host", "API_KEY=api.secret.test")
        assert bad.returncode != 0 and SECRET not in bad.stderr
    finally:
        d.cli("kill", sid)


def _wait_echoed(env, since, timeout=5):
    """The echo server logs after it answered: wait for its line."""
    deadline = time.monotonic() + timeout
    while True:
        got = echoed(env, since)
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _header(rec, name):
    return {k.lower(): v for k, v in rec["headers"].items()}.get(name.lower())


def test_sandbox_fetch_carries_secrets_like_the_sandbox_does(env, sbx):
    """sandbox.fetch is made from the sandbox's network position: a secret's
    placeholder becomes the real value only for its approved host (over the
    proxy's interception), and the echo comes back masked."""
    from test_fetch import fetch
    sb = sbx()
    ph = placeholder(sb)
    pos = log_pos(env)
    res, data = fetch(sb, "https://api.secret.test/fetch", headers=[("authorization", "Bearer " + ph)])
    assert res["status"] == 200, res
    got = _wait_echoed(env, pos)
    assert got and _header(got[-1], "authorization") == "Bearer " + SECRET, got
    assert SECRET.encode() not in data and ("Bearer " + ph).encode() in data, data
    assert all(SECRET not in v for _, v in res["headers"]), res["headers"]
    # an allowed host that is not the secret's only ever sees the placeholder
    pos = log_pos(env)
    res, data = fetch(sb, "https://other.secret.test/fetch", headers=[("authorization", "Bearer " + ph)])
    got = _wait_echoed(env, pos)
    assert got and _header(got[-1], "authorization") == "Bearer " + ph, got
