# Network test environment (tests/integration/test_network.py and
# tests/security/test_net_bypass.py): two throwaway network namespaces made
# with `ip netns` -- "d" runs hutchd, "u" holds the upstream "internet" hosts
# (HTTP on 192.0.2.2/.3 and 2001:db8::2, TLS on 192.0.2.2 and 2001:db8::2 port 443,
# a raw TCP and UDP echo on 7) -- joined by one veth. The test process's main thread
# enters "d" (setns) so that hutchd, its API and every socket the test opens
# live there; nothing touches the namespace the tests were started in.
import contextlib
import ctypes
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from hutchlib import Hutchd  # noqa: E402

CLONE_NEWNET = 0x40000000
UP_A, UP_B, UP_V6 = "192.0.2.2", "192.0.2.3", "2001:db8::2"
NAMES = {"example.test": [UP_A, UP_V6], "other.test": [UP_B], "a.wild.test": [UP_A], "b.c.wild.test": [UP_A],
         "wild.test": [UP_A], "loop.test": ["127.0.0.1"]}

UPSTREAM = r'''
import http.server, socket, socketserver, ssl, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _send(self, body):
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/big/"):
            return self._send(b"x" * int(self.path[5:]))
        self._send(f"hello from {self.server.server_address[0]} host={self.headers.get('Host')}\n".encode())
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(f"got {len(data)} host={self.headers.get('Host')}\n".encode())
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; allow_reuse_address = True; request_queue_size = 1024
    def server_bind(self):  # no getfqdn(): no DNS in the test namespaces
        socketserver.TCPServer.server_bind(self); self.server_name = 'up'; self.server_port = self.server_address[1]
class S6(S):
    address_family = socket.AF_INET6
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d: return
            self.request.sendall(d)
class E(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True; allow_reuse_address = True
class UEcho(socketserver.BaseRequestHandler):  # UDP echo: something that answers UDP, so "no answer" means a drop
    def handle(self): self.request[1].sendto(self.request[0], self.client_address)
class UE(socketserver.UDPServer):
    allow_reuse_address = True
class UE6(UE):
    address_family = socket.AF_INET6
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
servers = [S(("192.0.2.2", 80), H), S(("192.0.2.3", 80), H), S6(("2001:db8::2", 80), H), E(("192.0.2.2", 7), Echo),
           UE(("192.0.2.2", 7), UEcho), UE6(("2001:db8::2", 7), UEcho)]
for cls, addr in ((S, "192.0.2.2"), (S6, "2001:db8::2")):
    t = cls((addr, 443), H); t.socket = ctx.wrap_socket(t.socket, server_side=True); servers.append(t)
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


def _sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


class NetEnv:
    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.d, self.u = f"hxn{tag}d", f"hxn{tag}u"
        self.tmp = tempfile.mkdtemp(prefix="hutch-net-")
        self.orig_ns = None
        self.upstream = None
        self.hutchd = None

    def start(self):
        for ns in (self.d, self.u):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "link", "add", "hxna", "netns", self.d, "type", "veth", "peer", "name", "hxnb", "netns", self.u)
        _sh("ip", "-n", self.d, "addr", "add", "192.0.2.1/24", "dev", "hxna")
        _sh("ip", "-n", self.d, "addr", "add", "2001:db8::1/64", "dev", "hxna", "nodad")
        for a in ("192.0.2.2/24", "192.0.2.3/24"):
            _sh("ip", "-n", self.u, "addr", "add", a, "dev", "hxnb")
        _sh("ip", "-n", self.u, "addr", "add", "2001:db8::2/64", "dev", "hxnb", "nodad")
        _sh("ip", "-n", self.d, "link", "set", "hxna", "up")
        _sh("ip", "-n", self.u, "link", "set", "hxnb", "up")
        key, cert = os.path.join(self.tmp, "key.pem"), os.path.join(self.tmp, "cert.pem")
        _sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
            "-subj", "/CN=example.test", "-addext", "subjectAltName=DNS:example.test,DNS:other.test")
        script = os.path.join(self.tmp, "upstream.py")
        with open(script, "w") as f:
            f.write(UPSTREAM)
        self.upstream = subprocess.Popen(["ip", "netns", "exec", self.u, sys.executable, script, cert, key],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.upstream.stdout.readline()
        if "ready" not in line:
            raise RuntimeError("upstream servers did not start: " + line + self.upstream.stdout.read())
        self.orig_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        fd = os.open(f"/run/netns/{self.d}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        return self

    def start_hutchd(self, tag="net", extra=()):
        args = []
        for name, addrs in NAMES.items():
            for a in addrs:
                args += ["--resolve", f"{name}={a}"]
        self.hutchd = Hutchd(tag=tag, extra_args=args + list(extra)).start()
        return self.hutchd

    def stop(self):
        errors = []
        if self.hutchd:
            try:
                self.hutchd.stop()
            except Exception as e:  # still remove the namespaces
                errors.append(str(e))
        if self.orig_ns is not None:
            _setns(self.orig_ns)
            os.close(self.orig_ns)
        if self.upstream:
            self.upstream.kill()
            self.upstream.wait()
        # Look before deleting: `ip netns del` would take a leaked veth,
        # nftables table or process down with it, unseen.
        errors += self.leftovers()
        for ns in (self.u, self.d):
            _sh("ip", "netns", "del", ns, check=False)
        subprocess.run(["rm", "-rf", self.tmp])
        if errors:
            raise AssertionError("\n".join(errors))

    def leftovers(self):
        """What is still in the two namespaces once hutchd and our servers
        are gone: anything but lo and the test veth, any nftables table,
        any process."""
        found = []
        expected_links = {self.d: {"lo", "hxna"}, self.u: {"lo", "hxnb"}}
        for ns in (self.d, self.u):
            links = set()
            for line in _sh("ip", "-n", ns, "-o", "link", "show").stdout.splitlines():
                name = line.split(":", 2)[1].strip().split("@")[0]
                links.add(name)
            if links - expected_links[ns]:
                found.append(f"links left in netns {ns}: {sorted(links - expected_links[ns])}")
            tables = _sh("ip", "netns", "exec", ns, "nft", "list", "tables").stdout.strip()
            if tables:
                found.append(f"nftables tables left in netns {ns}: {tables}")
            pids = _sh("ip", "netns", "pids", ns).stdout.split()
            if pids:
                procs = []
                for p in pids:
                    with contextlib.suppress(OSError):
                        with open(f"/proc/{p}/cmdline", "rb") as f:
                            cmd = f.read().replace(b"\0", b" ")[:80]
                        procs.append(f"{p}: {cmd!r}")
                found.append(f"processes left in netns {ns}: " + "; ".join(procs))
        return found

    def nft_tables(self):
        return _sh("nft", "list", "tables").stdout


@contextlib.contextmanager
def running(tag="net", extra=(), prepare=None):
    """A NetEnv with hutchd started (module fixtures use it): prepare(env),
    if given, runs first (upstream servers, addresses) and may return a
    cleanup callable; extra (hutchd's arguments) may be a function of env.
    Everything goes, whatever fails."""
    if os.geteuid() != 0:
        raise RuntimeError("network tests need root")
    env = NetEnv().start()
    cleanup = None
    try:
        cleanup = prepare(env) if prepare else None
        env.start_hutchd(tag=tag, extra=list(extra(env) if callable(extra) else extra))
        yield env
    finally:
        try:
            if cleanup:
                cleanup()
        finally:
            env.stop()


def start_upstream(env, name, script_text, *args, addrs=()):
    """Runs script_text with python in the upstream namespace after adding
    addrs there; waits for its "ready" line. Returns a callable that stops it."""
    for ip in addrs:
        _sh("ip", "-n", env.u, "addr", "add", f"{ip}/24", "dev", "hxnb")
    script = os.path.join(env.tmp, name)
    with open(script, "w") as f:
        f.write(script_text)
    proc = subprocess.Popen(["ip", "netns", "exec", env.u, sys.executable, script, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise RuntimeError(f"{name} did not start: {line}{proc.stdout.read()}")

    def stop():
        proc.kill()
        proc.wait()
    return stop


def out(r):
    return (r["stdout"] + r["stderr"]).decode(errors="replace")


def wait_audit(hutchd, sid, pred, timeout=5):
    """The sandbox's network report once pred(report) holds (audit records
    are flushed about every second); fails the test if it never does."""
    end = time.monotonic() + timeout
    while True:
        r = hutchd.http("GET", f"/api/v2/sandboxes/{sid}/network")
        assert r.status == 200, (r.status, r.body)
        rep = r.json()
        if pred(rep):
            return rep
        if time.monotonic() > end:
            raise AssertionError(f"the network report of {sid} never matched within {timeout} s: {rep}")
        time.sleep(0.1)


def forward_to_sandboxes(env, pool4="10.200.0.0/16", pool6="fd68:7574:6368::/48"):
    """Makes hutchd's namespace a router, as a host that forwards would be:
    forwarding on, and the upstream namespace routes hutchd's sandbox pools
    (its defaults) back to it. Then only hutch's nftables rules stand
    between a sandbox and the upstream hosts, which is what the tests show."""
    _sh("nsenter", f"--net=/run/netns/{env.d}", "sysctl", "-qw", "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1")
    for fam, pool in (("-4", pool4), ("-6", pool6)):
        addrs = _sh("ip", "-n", env.d, fam, "-o", "addr", "show", "dev", "hxna", "scope", "global").stdout.split()
        via = addrs[addrs.index("inet6" if fam == "-6" else "inet") + 1].split("/")[0]
        _sh("ip", "-n", env.u, fam, "route", "add", pool, "via", via)


def hutch_counters(env):
    """{(chain, rule): packets} of the counters in hutchd's own nftables
    table (read only); rule is the rule's text without its counter, e.g.
    ("sb_fwd", 'iifname "hxs*" drop')."""
    name = "hutch_" + "".join(c if c.isalnum() else "_" for c in env.hutchd.cgroup_name)
    text = _sh("nft", "list", "table", "inet", name).stdout
    counts, chain = {}, None
    for line in text.splitlines():
        w = line.split()
        if w[:1] == ["chain"]:
            chain = w[1]
        elif "counter" in w:
            i = w.index("counter")
            counts[(chain, " ".join(w[:i] + w[i + 5:]))] = int(w[i + 2])
    return counts
