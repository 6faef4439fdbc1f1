# Claims of docs/network.md and docs/secrets.md that had no test: the
# proxy's confinement and restart, the DNS answer filter, the audit cap,
# `hutch net`'s output, the secrets validation rules and --rotate-ca.
# hutchd runs in netenv's throwaway namespaces (upstream hosts UP_A, UP_B, UP_V6).
import json
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutchlib import HandshakeError, pid_alive, wait_until  # noqa: E402
from netenv import UP_A, UP_B, UP_V6, out, running, wait_audit  # noqa: E402

SECRET = "hx-doc-claims-" + "4b7e1f0c9a2d"


@pytest.fixture(scope="module")
def env():
    # the TLS upstream's self-signed certificate is the upstream CA, so that
    # secrets interception (and so the CA's use) can be shown end to end
    with running("docnet", extra=lambda e: ["--upstream-ca", os.path.join(e.tmp, "cert.pem")]) as net:
        yield net


@pytest.fixture
def sbx(env):
    made = []

    def make(cfg=None):
        sb = env.hutchd.create_sandbox(cfg or {})
        made.append(sb)
        return sb
    yield make
    for sb in made:
        sb.ws.close()


def proxy_pids(hutchd):
    """Pids of hutch-proxy processes whose parent is this hutchd."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                st = dict(ln.rstrip("\n").split(":\t", 1) for ln in f if ":\t" in ln)
        except OSError:
            continue
        if st.get("Name") == "hutch-proxy" and int(st.get("PPid", 0)) == hutchd.pid:
            found.append(int(d))
    return found


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(ln.rstrip("\n").split(":\t", 1) for ln in f if ":\t" in ln)


def curl_code(sb, url, resolve=""):
    opt = f"--resolve {resolve}" if resolve else ""
    r = sb.sh(f"curl -sS -m 10 {opt} -o /dev/null -w '%{{http_code}}' {url}")
    return r["stdout"].decode().strip()


# ---------------------------------------------------------------- the proxy

def test_proxy_runs_as_nobody_in_its_chroot_under_seccomp(env):
    pids = proxy_pids(env.hutchd)
    assert len(pids) == 1, pids
    st = status(pids[0])
    assert st["Uid"].split() == ["65534"] * 4, st["Uid"]
    assert st["Gid"].split() == ["65534"] * 4, st["Gid"]
    assert st["Groups"].split() == [], st["Groups"]
    assert st["NoNewPrivs"].strip() == "1", st
    assert st["Seccomp"].strip() == "2", st          # filter mode
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st
    root = os.readlink(f"/proc/{pids[0]}/root")
    assert root == os.path.join(env.hutchd.state_dir, "proxy-root"), root
    assert os.listdir(root) == [], os.listdir(root)  # an empty directory


def test_a_killed_proxy_is_restarted_and_egress_works_again(env, sbx):
    sb = sbx({"allow_net": ["example.test"]})
    assert curl_code(sb, "http://example.test/") == "200"   # before: works
    old = proxy_pids(env.hutchd)
    assert len(old) == 1, old
    os.kill(old[0], signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(old[0]), 10)
    new = wait_until(lambda: [p for p in proxy_pids(env.hutchd) if p != old[0]], 30)
    assert new, "hutchd did not restart hutch-proxy:\n" + env.hutchd.log_tail(20)
    # the sandbox made before the kill, and a new one, get their policy back
    assert wait_until(lambda: curl_code(sb, "http://example.test/") == "200", 30, interval=0.5), \
        env.hutchd.log_tail(20)
    assert curl_code(sb, "http://other.test/", f"other.test:80:{UP_B}") == "403"       # and still only that
    sb2 = sbx({"allow_net": ["other.test"]})
    assert curl_code(sb2, "http://other.test/") == "200"
    assert env.hutchd.alive()


# ---------------------------------------------------------------- DNS

DNS = r'''
import random, socket, struct, sys
ns = next(ln.split()[1] for ln in open("/etc/resolv.conf") if ln.startswith("nameserver"))
def query(name, qtype):
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", qtype, 1)
    s = socket.socket(socket.AF_INET6 if ":" in ns else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, (ns, 53))
    r = s.recv(4096)
    rid, flags, qd, an = struct.unpack("!HHHH", r[:8])
    assert rid == qid
    # answers: skip the question, then read each RR's data
    off = len(q)
    addrs = []
    for _ in range(an):
        if r[off] & 0xC0 == 0xC0:
            off += 2
        else:
            while r[off]:
                off += r[off] + 1
            off += 1
        t, c, ttl, n = struct.unpack("!HHIH", r[off:off + 10])
        data = r[off + 10:off + 10 + n]
        off += 10 + n
        addrs.append(socket.inet_ntop(socket.AF_INET if t == 1 else socket.AF_INET6, data))
    return flags & 0xF, addrs, r
for name in sys.argv[1:]:
    for qtype, label in ((1, "A"), (28, "AAAA")):
        rc, addrs, raw = query(name, qtype)
        loop = b"\x7f\x00\x00\x01" in raw or socket.inet_pton(socket.AF_INET6, "::1") in raw
        print(name, label, rc, ",".join(addrs) or "-", "loop" if loop else "noloop")
'''


def test_dns_never_answers_with_a_forbidden_address(env, sbx):
    """loop.test is configured (--resolve) to 127.0.0.1 and allowed: the
    responder still answers NOERROR without that address (docs/network.md:
    "Answers never contain forbidden addresses"); example.test, by the same
    query, gets its real addresses."""
    sb = sbx({"allow_net": ["loop.test", "example.test"]})
    r = sb.run("python3", ["-c", DNS, "loop.test", "example.test"])
    got = {tuple(ln.split()[:2]): ln.split()[2:] for ln in out(r).splitlines() if ln.count(" ") == 4}
    assert got[("example.test", "A")] == ["0", UP_A, "noloop"], out(r)
    assert got[("example.test", "AAAA")] == ["0", UP_V6, "noloop"], out(r)
    assert got[("loop.test", "A")] == ["0", "-", "noloop"], out(r)
    assert got[("loop.test", "AAAA")] == ["0", "-", "noloop"], out(r)
    # and the name resolves to nothing for the C library either
    r = sb.sh("getent ahosts loop.test; echo rc=$?")
    assert "127.0.0.1" not in out(r) and "rc=2" in out(r), out(r)


# ---------------------------------------------------------------- audit

FLOOD = r'''
import random, socket, struct, sys
ns = next(ln.split()[1] for ln in open("/etc/resolv.conf") if ln.startswith("nameserver"))
s = socket.socket(socket.AF_INET6 if ":" in ns else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
names = ["n%04d.blocked.test" % i for i in range(int(sys.argv[1]))] + [sys.argv[2]]
for name in names:
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    s.sendto(q, (ns, 53))
    while struct.unpack("!H", s.recv(4096)[:2])[0] != qid:
        pass
print("sent", len(names))
'''


def test_audit_keeps_the_last_1000_records_and_64_chars_of_a_blocked_name(env, sbx):
    sb = sbx({"allow_net": ["example.test"]})
    long_name = ".".join(["a" * 60] * 3) + ".test"   # 188 characters
    r = sb.run("python3", ["-c", FLOOD, "1100", long_name], timeout=120)
    assert "sent 1101" in out(r), out(r)
    rep = wait_audit(env.hutchd, sb.id, lambda rep: any(a["host"].startswith("aaaa") for a in rep["audit"]), 15)
    audit = rep["audit"]
    assert len(audit) == 1000, len(audit)
    assert rep["audit_dropped"] >= 101, rep["audit_dropped"]
    last = audit[-1]
    assert last["proto"] == "dns" and last["verdict"] == "blocked", last
    assert last["host"] == long_name[:64] + "...", last["host"]   # 64 characters kept, marked cut
    hosts = [a["host"] for a in audit]
    assert "n0000.blocked.test" not in hosts          # the oldest went first
    assert "n1099.blocked.test" in hosts


# ---------------------------------------------------------------- hutch net

def test_hutch_net_prints_addresses_policy_bytes_and_audit(env, sbx):
    sb = sbx({"allow_net": ["example.test"]})
    assert curl_code(sb, "http://example.test/") == "200"
    assert curl_code(sb, "http://other.test/", f"other.test:80:{UP_B}") == "403"
    wait_audit(env.hutchd, sb.id, lambda rep: len(rep["destinations"]) >= 1 and
               any(a["host"] == "other.test" for a in rep["audit"]))
    r = env.hutchd.cli("net", sb.id, check=True)
    text = r.stdout
    rep = env.hutchd.http("GET", f"/api/v2/sandboxes/{sb.id}/network").json()
    a = rep["addresses"]
    assert f"address   {a['ipv4']}, {a['ipv6']} (gateway and DNS {a['gateway4']}, {a['gateway6']})" in text, text
    assert a["ipv4"].startswith("10.200."), a
    assert "\nallowNet  example.test\n" in text, text
    dest = [ln for ln in text.splitlines()
            if ln.strip().startswith((f"example.test ({UP_A})", f"example.test ({UP_V6})"))]
    assert len(dest) == 1, text
    port, sent, recvd, conns = dest[0].split()[2:]
    assert port == "80" and int(sent) > 0 and int(recvd) > 0 and conns == "1", dest
    audit = [ln.split(None, 4) for ln in text.splitlines() if ln[:4].isdigit()]
    assert ["allowed", "http", "example.test:80"] in [x[1:4] for x in audit], text
    assert ["blocked", "http", "other.test:80"] in [x[1:4] for x in audit], text
    # --json is the route's answer as it is
    j = json.loads(env.hutchd.cli("net", "--json", sb.id, check=True).stdout)
    assert j["addresses"] == a and j["allow_net"] == ["example.test"]
    # a sandbox without network says so
    sb0 = sbx({"allow_net": []})
    r = env.hutchd.cli("net", sb0.id, check=True)
    assert r.stdout == "no network (allowNet [] or networking off): loopback only\n", r.stdout


# ---------------------------------------------------------------- secrets validation

def secret(value=SECRET, hosts=("api.example.test",)):
    return {"value": value, "hosts": list(hosts)}


BAD_SECRETS = [
    ("value 7 characters", {"API_KEY": secret("x" * 7)}, {}, "API_KEY", "8 to 4096 printable ASCII"),
    ("value 4097 characters", {"API_KEY": secret("x" * 4097)}, {}, "API_KEY", "8 to 4096 printable ASCII"),
    ("value with a newline", {"API_KEY": secret(SECRET + "\nX")}, {}, "API_KEY", "printable ASCII"),
    ("value with DEL", {"API_KEY": secret(SECRET + "\x7f")}, {}, "API_KEY", "printable ASCII"),
    ("value not ASCII", {"API_KEY": secret(SECRET + "é")}, {}, "API_KEY", "printable ASCII"),
    ("value not a string", {"API_KEY": {"value": 12345678, "hosts": ["a.test"]}}, {}, "API_KEY", "string"),
    ("name starts with a digit", {"1KEY": secret()}, {}, "1KEY", "environment variable name"),
    ("name with a dash", {"API-KEY": secret()}, {}, "API-KEY", "environment variable name"),
    ("name also in env", {"API_KEY": secret()}, {"env": {"API_KEY": "x"}}, "API_KEY", "also set in env"),
    ("no hosts", {"API_KEY": secret(hosts=())}, {}, "API_KEY", "non-empty array"),
    ("257 hosts", {"API_KEY": secret(hosts=[f"h{i}.test" for i in range(257)])}, {}, "API_KEY", "non-empty array"),
    ("an IPv4 host", {"API_KEY": secret(hosts=["203.0.113.10"])}, {}, "API_KEY", "not addresses"),
    ("an IPv6 host", {"API_KEY": secret(hosts=["[2001:db8::1]"])}, {}, "API_KEY", "not addresses"),
    ("a bad host name", {"API_KEY": secret(hosts=["exa mple.test"])}, {}, "API_KEY", ""),
    ("33 secrets", {f"K{i}": secret() for i in range(33)}, {}, "", "at most 32 secrets"),
    ("with allowNet []", {"API_KEY": secret()}, {"allow_net": []}, "", "allowNet is []"),
]


@pytest.mark.parametrize("what,secrets,extra,name,why", BAD_SECRETS, ids=[b[0] for b in BAD_SECRETS])
def test_invalid_secrets_are_400_naming_the_secret_never_the_value(env, what, secrets, extra, name, why):
    with pytest.raises(HandshakeError) as ei:
        env.hutchd.create_sandbox({"secrets": secrets, **extra})
    e = ei.value
    assert e.status == 400, (e.status, e.body)
    body = e.json()
    assert body["code"] == "INVALID_SECRETS", body
    assert name in body["message"] and why in body["message"], body
    assert SECRET not in e.body.decode(errors="replace"), body


GOOD_SECRETS = [
    ("value 8 characters", {"API_KEY": secret("x" * 8)}),
    ("value 4096 characters", {"API_KEY": secret("y" * 4096)}),
    ("256 hosts, wildcard and port", {"API_KEY": secret(hosts=["*.w.test", "p.test:443"] +
                                                         [f"h{i}.test" for i in range(254)])}),
    ("32 secrets", {f"K{i}": secret(f"value-{i:04d}") for i in range(32)}),
]


@pytest.mark.parametrize("what,secrets", GOOD_SECRETS, ids=[g[0] for g in GOOD_SECRETS])
def test_secrets_at_the_limits_are_accepted(env, sbx, what, secrets):
    """The positive side of each boundary above: a sandbox is made and its
    environment holds a placeholder as long as each value."""
    sb = sbx({"secrets": secrets})
    name = sorted(secrets)[0]
    r = sb.sh(f'printf %s "${name}"')
    placeholder = r["stdout"].decode()
    assert len(placeholder) == len(secrets[name]["value"]) and placeholder != secrets[name]["value"], r


# ---------------------------------------------------------------- --rotate-ca (restarts hutchd: last)

def bundle_has(sb, pem):
    body = "".join(pem.strip().splitlines()[1:-1])
    r = sb.sh("tr -d '\\n' < /etc/ssl/certs/ca-certificates.crt")
    return body in r["stdout"].decode()


def intercepted_issuer(sb):
    """curl through interception (a secret bound to example.test): the
    sandbox verifies the minted leaf with its bundle; prints the issuer."""
    r = sb.sh("curl -sS -m 10 -o /dev/null -w '%{http_code}' https://example.test/ && "
              "echo | openssl s_client -connect example.test:443 -servername example.test 2>/dev/null"
              " | openssl x509 -noout -fingerprint -sha256 -issuer")
    return out(r)


def test_rotate_ca_makes_a_new_ca_that_new_sandboxes_trust(env, sbx):
    ca = os.path.join(env.hutchd.state_dir, "ca", "ca.crt")
    cfg = {"allow_net": ["example.test"], "secrets": {"API_KEY": secret(hosts=["example.test"])}}
    sb = sbx(cfg)
    with open(ca) as f:
        old = f.read()
    assert bundle_has(sb, old)
    before = intercepted_issuer(sb)
    assert before.startswith("200"), before
    sb.ws.close()
    # a plain restart keeps the CA ...
    env.hutchd.restart()
    with open(ca) as f:
        assert f.read() == old
    # ... --rotate-ca replaces it
    env.hutchd.extra_args.append("--rotate-ca")
    try:
        env.hutchd.restart()
    finally:
        env.hutchd.extra_args.remove("--rotate-ca")
    with open(ca) as f:
        new = f.read()
    assert new != old and "BEGIN CERTIFICATE" in new
    assert os.stat(os.path.join(env.hutchd.state_dir, "ca", "ca.key")).st_mode & 0o777 == 0o600
    sb = sbx(cfg)
    assert bundle_has(sb, new) and not bundle_has(sb, old)
    after = intercepted_issuer(sb)
    assert after.startswith("200"), after    # the new leaf verifies against the new bundle
    assert after != before                   # and it is another CA's leaf
