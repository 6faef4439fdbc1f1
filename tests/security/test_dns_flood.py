# One sandbox must not be able to cut off every sandbox's DNS or grow the
# host's log without bound (issue 14). hutchd resolves names that are not in
# --resolve with a slow fake DNS server that this module runs itself on
# hutchd's namespace loopback (--dns-upstream): nothing here asks a real one.
import collections
import heapq
import json
import os
import re
import select
import socket
import struct
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from netenv import UP_A, running, wait_audit  # noqa: E402

DELAY = 1.0                  # the fake upstream answers every query this late
PER_SB_LOOKUPS = 8           # proxy main.c LOOKUP_PER_SB: one sandbox's share of lookups at once


class SlowResolver:
    """A DNS server on 127.0.0.1 (UDP) that answers after DELAY and counts
    the queries it gets per (name, qtype): *.flood.test and *.b.test have an
    A record, *.fail.test gets SERVFAIL, everything else NXDOMAIN."""

    def __init__(self):
        # created by the thread that entered hutchd's netns: it lives there
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.counts = collections.Counter()
        self.lock = threading.Lock()
        self.inflight = collections.Counter()   # per name suffix, queries not answered yet
        self.max_inflight = collections.Counter()
        self.first_seen = {}                    # per name suffix, wall time of its first query
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _suffix(name):
        return ".".join(name.split(".")[-2:])

    def count(self, name, qtype=1):
        with self.lock:
            return self.counts[(name, qtype)]

    def total(self, suffix):
        with self.lock:
            return sum(n for (name, _), n in self.counts.items() if name.endswith(suffix))

    def _answer(self, q):
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
            i += 1 + q[i]
        qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
        name, question = ".".join(labels), q[12:i + 5]
        rcode, answers = 3, b""
        if name.endswith(".fail.test"):
            rcode = 2
        elif name.endswith(".flood.test") or name.endswith(".b.test"):
            rcode = 0
            if qtype == 1:
                answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(UP_A)
        head = struct.pack(">HHHHHH", struct.unpack(">H", q[:2])[0], 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        return name, qtype, head + question + answers

    def _serve(self):
        due, seq = [], 0
        while not self.done.is_set():
            wait = max(0.0, due[0][0] - time.monotonic()) if due else 0.2
            r, _, _ = select.select([self.sock], [], [], wait)
            if r:
                q, peer = self.sock.recvfrom(4096)
                try:
                    name, qtype, reply = self._answer(q)
                except (IndexError, struct.error, UnicodeDecodeError):
                    continue
                with self.lock:
                    self.counts[(name, qtype)] += 1
                    sfx = self._suffix(name)
                    self.inflight[sfx] += 1
                    self.max_inflight[sfx] = max(self.max_inflight[sfx], self.inflight[sfx])
                    self.first_seen.setdefault(sfx, time.time())
                seq += 1
                heapq.heappush(due, (time.monotonic() + DELAY, seq, reply, peer, self._suffix(name)))
            while due and due[0][0] <= time.monotonic():
                _, _, reply, peer, sfx = heapq.heappop(due)
                with self.lock:
                    self.inflight[sfx] -= 1
                self.sock.sendto(reply, peer)

    def stop(self):
        self.done.set()
        self.thread.join(5)
        self.sock.close()


# Runs inside a sandbox: UDP queries for FMT % i, i < N, GAP seconds apart
# and then WAIT seconds for the answers (GAP 0: one at a time, each waiting
# up to WAIT, like a stub resolver); prints rcode counts and times as JSON.
PROBE = r'''
import collections, json, socket, struct, sys, threading, time
fmt, n, gap, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver") and "." in l.split()[1]][0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def query(i):
    q = struct.pack(">HHHHHH", i & 0xffff, 0x100, 1, 0, 0, 0)
    for label in (fmt % i).split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0\0\1\0\1"
got, rcodes, addrs, lat = {}, collections.Counter(), collections.Counter(), []
def rx(deadline, want):
    while len(got) < want and time.time() < deadline:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            r = s.recv(4096)
        except socket.timeout:
            break
        i = struct.unpack(">H", r[:2])[0]
        if i in got or i >= n:
            continue
        got[i] = r[3] & 15
        rcodes[r[3] & 15] += 1
        if struct.unpack(">H", r[6:8])[0]:
            addrs[socket.inet_ntoa(r[-4:])] += 1
first = time.time()
if gap:
    t = threading.Thread(target=rx, args=(first + n * gap + wait, n))
    t.start()
    for i in range(n):
        s.sendto(query(i), (ns, 53))
        time.sleep(gap)
    last_sent = time.time()
    t.join()
else:
    for i in range(n):
        t0 = time.time()
        s.sendto(query(i), (ns, 53))
        before = len(got)
        rx(time.time() + wait, before + 1)
        if len(got) == before:
            got[i] = None
        if i < 10:
            lat.append(round(time.time() - t0, 3))
    last_sent = time.time()
print(json.dumps({"t_first": first, "t_last_sent": last_sent, "t_last": time.time(), "rc": rcodes,
                  "unanswered": n - sum(rcodes.values()), "addrs": addrs, "latency": lat}))
'''


def probe(sb, fmt, n, gap=0.0, wait=4.0, timeout=120):
    """Runs PROBE in sb: {"rc": {rcode: count}, "addrs", "unanswered", "t_*", "text"}."""
    r = sb.run("python3", ["-", fmt, str(n), str(gap), str(wait)], stdin=PROBE.encode(), timeout=timeout)
    text = (r["stdout"] + r["stderr"]).decode(errors="replace")
    assert r["code"] == 0, text
    res = json.loads(text.strip().splitlines()[-1])
    res["rc"] = {int(k): v for k, v in res["rc"].items()}
    res["text"] = text
    return res


@pytest.fixture(scope="module")
def dns():
    box = {}

    def prepare(env):
        box["resolver"] = SlowResolver()
        return box["resolver"].stop

    with running(tag="dnsflood", prepare=prepare,
                 extra=lambda env: ["--dns-upstream", f"127.0.0.1:{box['resolver'].port}"]) as env:
        env.resolver = box["resolver"]
        yield env


def test_flood_of_unique_names_leaves_other_sandboxes_answered(dns):
    flooder = dns.hutchd.create_sandbox({"allow_net": ["*.flood.test"]})
    victim = dns.hutchd.create_sandbox({"allow_net": ["*.b.test"]})
    try:
        # Positive control, no flood: the victim's lookups go upstream and answer.
        calm = probe(victim, "calm%d.b.test", 5)
        assert calm["rc"] == {0: 5} and calm["addrs"] == {UP_A: 5}, calm["text"]
        assert dns.resolver.count("calm0.b.test") == 1, dict(dns.resolver.counts)

        # The flood: 3000 unique allowed names 2 ms apart, far more than the
        # slow upstream answers; it lasts longer than the victim's probe.
        flood = {}
        t = threading.Thread(target=lambda: flood.update(probe(flooder, "f%d.flood.test", 3000, 0.002, 15)))
        t.start()
        try:
            # in full swing (some 700 names sent) before the victim asks
            end = time.monotonic() + 60
            while (time.time() < dns.resolver.first_seen.get("flood.test", time.time() + 1) + 1.5
                   and time.monotonic() < end and t.is_alive()):
                time.sleep(0.05)
            during = probe(victim, "during%d.b.test", 5, 0.01)
        finally:
            t.join(180)
        assert flood, "the flood probe did not finish"
        # every victim lookup answered with its address, while the flooder was still sending
        assert during["rc"] == {0: 5} and during["addrs"] == {UP_A: 5}, (during["text"], flood["text"])
        assert flood["t_first"] + 1 < during["t_first"] and during["t_last"] < flood["t_last_sent"], \
            (during["text"], flood["text"])
        # the flood did saturate its share: the excess got SERVFAIL (2) at once, the rest answers
        assert flood["rc"].get(2, 0) > 1500 and flood["rc"].get(0, 0) > 0, flood["text"]
        assert flood["unanswered"] == 0, flood["text"]
        # and never held more than its share of the upstream's lookups (A and AAAA each)
        assert dns.resolver.max_inflight["flood.test"] <= 2 * PER_SB_LOOKUPS, dict(dns.resolver.max_inflight)
    finally:
        flooder.ws.close()
        victim.ws.close()


def test_no_such_name_is_cached_briefly(dns):
    sb = dns.hutchd.create_sandbox({"allow_net": ["*.nx.test"]})
    try:
        for _ in range(3):
            r = probe(sb, "gone%d.nx.test", 1)
            assert r["rc"] == {3: 1}, r["text"]
        # three lookups of one unknown name, one question upstream
        assert dns.resolver.count("gone0.nx.test") == 1, dict(dns.resolver.counts)
        # positive control for the count: another name is asked; after the TTL (5 s) the name again
        probe(sb, "other%d.nx.test", 1)
        assert dns.resolver.count("other0.nx.test") == 1, dict(dns.resolver.counts)
        time.sleep(6)
        assert probe(sb, "gone%d.nx.test", 1)["rc"] == {3: 1}
        assert dns.resolver.count("gone0.nx.test") == 2, dict(dns.resolver.counts)
    finally:
        sb.ws.close()


def test_failed_lookup_is_servfail_and_not_cached(dns):
    # an upstream that fails is not "no such name": the sandbox may ask again, and it is asked again
    sb = dns.hutchd.create_sandbox({"allow_net": ["*.fail.test"]})
    try:
        r = probe(sb, "x%d.fail.test", 1)
        assert r["rc"] == {2: 1}, r["text"]
        first = dns.resolver.count("x0.fail.test")
        assert first >= 1, dict(dns.resolver.counts)
        r = probe(sb, "x%d.fail.test", 1)
        assert r["rc"] == {2: 1}, r["text"]
        assert dns.resolver.count("x0.fail.test") > first, dict(dns.resolver.counts)
    finally:
        sb.ws.close()


SUPPRESSED = re.compile(r"net: (\d+) similar lines suppressed")


def _log_lines(d):
    with open(d.log_path, "rb") as f:
        return f.read().decode(errors="replace").splitlines()


def test_blocked_lookups_do_not_flood_the_log_and_are_all_counted(dns):
    n = 3000
    sb = dns.hutchd.create_sandbox({"allow_net": ["*.b.test"]})
    try:
        before = len(_log_lines(dns.hutchd))
        r = probe(sb, "n%d.blocked.test", n)
        assert r["rc"] == {3: n}, r["text"]  # every one refused by policy: NXDOMAIN
        rep = wait_audit(dns.hutchd, sb.id,
                         lambda rep: sum(a["host"].endswith(".blocked.test") for a in rep["audit"])
                         + rep["audit_dropped"] >= n, timeout=30)
        blocked = [a for a in rep["audit"] if a["host"].endswith(".blocked.test")]
        # the audit API has every record or says exactly how many it lacks
        assert len(blocked) == len(rep["audit"]), rep["audit"][:3]
        assert len(blocked) + rep["audit_dropped"] == n, (len(blocked), rep["audit_dropped"])
        assert all(a["proto"] == "dns" and a["verdict"] == "blocked" for a in blocked)
        def counted():  # lines logged + lines said to be suppressed, for this sandbox
            mine = [line for line in _log_lines(dns.hutchd)[before:] if sb.id in line]
            shown = sum(".blocked.test" in line for line in mine)
            said = sum(int(m.group(1)) for m in map(SUPPRESSED.search, mine) if m)
            return mine, shown, said
        end = time.monotonic() + 15
        while sum(counted()[1:]) < n and time.monotonic() < end:
            time.sleep(0.2)  # the count of suppressed lines is logged a second later
        mine, shown, said = counted()
        lines = _log_lines(dns.hutchd)[before:]
        # positive control: the first ones are logged, hutch's own audit lines
        assert any("n0.blocked.test" in line and "name not in allowNet" in line for line in mine), mine[:5]
        # bounded: a burst and a trickle, plus the counts of what was left out, which add up
        assert len(lines) < 300, (len(lines), lines[:5], lines[-5:])
        assert said > 0 and shown + said == n, (shown, said, mine[-5:])
        rep = dns.hutchd.http("GET", f"/api/v2/sandboxes/{sb.id}/network").json()
        assert rep["log_suppressed"] == said, (rep["log_suppressed"], said)
    finally:
        sb.ws.close()
