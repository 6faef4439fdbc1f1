# Connection floods against the API (issue 14): without a token, nobody may
# lock others out. Each listener has its own budget (a TCP flood never reaches
# the root-only unix socket), one source address holds at most
# --max-conns-per-ip unauthenticated connections, a full budget displaces the
# oldest unauthenticated connection (503) but never an authenticated one, and
# an unauthenticated connection has --request-timeout to send its request,
# however slowly it trickles in (408). Limits are lowered by flags so that a
# few hundred connections stand for the 4,096 of the defaults.
import contextlib
import http.client
import json
import os
import select
import socket
import time

import pytest

from hutchlib import Hutchd, wait_until

MAX_CONNS = 240          # the TCP budget of the flooded daemon
PER_IP = 80              # unauthenticated connections per source address
FLOOD_FLAGS = ["--warm", "0", "--max-conns", str(MAX_CONNS), "--max-conns-per-ip", str(PER_IP),
               # long enough that a flood outlives every check made while it holds
               "--request-timeout", "600000"]
SLOW_MAX_CONNS = 12
REQUEST_TIMEOUT_S = 2    # of the daemon that times slow clients
SLOW_FLAGS = ["--warm", "0", "--max-conns", str(SLOW_MAX_CONNS), "--max-conns-per-ip", "8",
              "--request-timeout", str(REQUEST_TIMEOUT_S * 1000)]
OLD_IDLE_S = 60          # what every connection had before (HTTP_IDLE_TIMEOUT_MS)
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"   # the reproducer: never finished


def _daemon(tag, flags):
    d = Hutchd(tag=tag, extra_args=flags).start()
    yield d
    d.stop()


def daemon_conns(d):
    """TCP connections the daemon still holds on its API port (sockets it has
    not closed, whatever their TCP state)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == d.port and fields[3] != "0A":  # not LISTEN
                    inodes.add(fields[9])
    held = 0
    fd_dir = f"/proc/{d.pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            link = os.readlink(os.path.join(fd_dir, fd))
            if link.startswith("socket:[") and link[8:-1] in inodes:
                held += 1
    return held


def settled(d):
    """The daemon has let go of every connection an earlier test closed, so that
    a test starts with the whole budget."""
    assert wait_until(lambda: daemon_conns(d) == 0, 30), f"{daemon_conns(d)} connections still held"
    return d


@pytest.fixture(scope="module")
def flooded_daemon():
    yield from _daemon("connflood", FLOOD_FLAGS)


@pytest.fixture
def flooded(flooded_daemon):
    return settled(flooded_daemon)


@pytest.fixture(scope="module")
def slow_daemon():
    yield from _daemon("connslow", SLOW_FLAGS)


@pytest.fixture
def slow(slow_daemon):
    return settled(slow_daemon)


# ---------------------------------------------------------------- helpers

def connect_from(src, port, send=PARTIAL_HEAD):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))   # all of 127/8 is loopback: each address is another source
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    if send:
        s.sendall(send)
    return s


@contextlib.contextmanager
def flood(port, counts):
    """counts {source address: n} idle connections, opened in order (so the
    daemon accepts them in that order), closed at the end."""
    socks = []
    try:
        for src, n in counts.items():
            for _ in range(n):
                socks.append(connect_from(src, port))
        yield socks
    finally:
        for s in socks:
            s.close()


def server_spoke(s):
    """True once the daemon sent anything or closed (readable), without blocking."""
    p = select.poll()   # not select(): a flood's fds go past FD_SETSIZE
    p.register(s, select.POLLIN)
    return bool(p.poll(0))


def read_until_closed(s, timeout=10):
    """What the daemon sends until it closes: (bytes, "eof" | "reset" | "open")."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, "eof"
            data += chunk
    except ConnectionResetError:
        return data, "reset"
    except socket.timeout:
        return data, "open"


def parse_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines[0].startswith("HTTP/1.1 ") else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def assert_bounced(s, status, code):
    """The daemon answered `status` with hutch's JSON error `code`, then closed."""
    data, how = read_until_closed(s)
    st, headers, body = parse_response(data)
    assert st == status, data[:300]
    assert json.loads(body)["code"] == code, body
    assert headers.get("connection") == "close"
    assert how in ("eof", "reset"), how   # the daemon's FIN (or RST), not our timeout
    return headers


def served(port, src):
    with contextlib.suppress(OSError, http.client.HTTPException):
        return get(port, "/healthz", src=src)[0] == 200
    return False


def get(port, path, src="127.0.0.1", token=None, timeout=10):
    """One request on a fresh connection from src: (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(src, 0))
    try:
        c.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def unix_get(path, sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: hutchd\r\nConnection: close\r\n\r\n".encode())
        data, _ = read_until_closed(s)
        return parse_response(data)[0]
    finally:
        s.close()


def barrier(port, src):
    """A complete request made after a flood: once it is answered the daemon
    has accepted (and so admitted or displaced) every connection before it,
    because the listen queue is first in, first out."""
    st, _ = get(port, "/healthz", src=src)
    assert st == 200


# ---------------------------------------------------------------- floods

def test_one_address_holds_at_most_its_cap_and_the_oldest_go_with_503(flooded):
    extra = 40
    with flood(flooded.port, {"127.0.0.3": PER_IP + extra}) as socks:
        barrier(flooded.port, "127.0.0.9")
        spoke = [i for i, s in enumerate(socks) if server_spoke(s)]
        # The oldest ones were displaced, each told why; the newest PER_IP still stand.
        assert spoke == list(range(extra)), spoke
        for s in socks[:extra]:
            h = assert_bounced(s, 503, "TOO_MANY_CONNECTIONS")
            assert h.get("retry-after") == "1"
        # A complete request from the capped address is still served: it displaces
        # the oldest of that address's idle connections instead of being refused.
        st, _ = get(flooded.port, "/healthz", src="127.0.0.3")
        assert st == 200
        assert server_spoke(socks[extra])
        assert_bounced(socks[extra], 503, "TOO_MANY_CONNECTIONS")
        assert not any(server_spoke(s) for s in socks[extra + 1:])


def test_another_address_is_served_while_one_floods_past_the_budget(flooded):
    # An idle connection from 127.0.0.2 that predates the flood, and a flood
    # from 127.0.0.3 of more connections than the whole budget.
    early = connect_from("127.0.0.2", flooded.port, send=b"GET /healthz HTTP/1.1\r\n")
    try:
        with flood(flooded.port, {"127.0.0.20": MAX_CONNS + 60}) as socks:
            st, body = get(flooded.port, "/healthz", src="127.0.0.2")
            assert st == 200, body
            assert json.loads(body)["ok"] is True
            # The flood's address sits at its cap (the rest was displaced) ...
            assert sum(server_spoke(s) for s in socks) == len(socks) - PER_IP
            # ... and did not displace the other address's idle connection.
            assert not server_spoke(early)
            early.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
            data, how = read_until_closed(early)
            assert parse_response(data)[0] == 200, data[:300]
    finally:
        early.close()


def test_unix_socket_and_cli_answer_while_the_tcp_budget_is_full(flooded):
    counts = {"127.0.0.4": PER_IP, "127.0.0.5": PER_IP, "127.0.0.6": MAX_CONNS - 2 * PER_IP - 1}
    last = http.client.HTTPConnection("127.0.0.1", flooded.port, timeout=10, source_address=("127.0.0.7", 0))
    with flood(flooded.port, counts) as socks, contextlib.closing(last):
        # The last free TCP slot goes to an unauthenticated keep-alive client; once
        # it is answered, the flood before it holds all the others.
        last.request("GET", "/healthz")
        r = last.getresponse()
        assert r.status == 200
        r.read()
        assert not any(server_spoke(s) for s in socks)
        assert unix_get("/healthz", flooded.socket_path) == 200
        r = flooded.cli("token", "list", "--json", token=None, env={"HUTCH_SOCKET": flooded.socket_path})
        assert r.returncode == 0, r.stderr
        assert any(t.get("name") == "admin" for t in json.loads(r.stdout)), r.stdout
        # Positive control: the TCP side really was full, the next TCP connection
        # displaces the flood's oldest.
        barrier(flooded.port, "127.0.0.8")
        assert [i for i, s in enumerate(socks) if server_spoke(s)] == [0]
        assert_bounced(socks[0], 503, "TOO_MANY_CONNECTIONS")


def test_authenticated_clients_are_served_and_never_displaced_by_a_flood(flooded):
    # Authenticated before the flood, then kept alive through it.
    keep = http.client.HTTPConnection("127.0.0.1", flooded.port, timeout=10)
    auth = {"Authorization": f"Bearer {flooded.token}"}
    try:
        keep.request("GET", "/api/v2/sandboxes", headers=auth)
        r = keep.getresponse()
        assert r.status == 200
        r.read()
        counts = {f"127.0.0.{i}": PER_IP for i in (10, 11, 12, 13)}   # 320 > the budget of 240
        with flood(flooded.port, counts) as socks:
            st, body = get(flooded.port, "/api/v2/sandboxes", token=flooded.token)
            assert st == 200, body
            r = flooded.cli("ls", check=True)       # the CLI over TCP, with the token
            assert r.returncode == 0
            keep.request("GET", "/api/v2/sandboxes", headers=auth)
            r = keep.getresponse()
            assert r.status == 200                  # the oldest connection of all, yet kept
            r.read()
            # The budget held: the flood's oldest connections made room, each with a 503.
            gone = [s for s in socks if server_spoke(s)]
            assert len(gone) >= len(socks) + 1 - MAX_CONNS
            for s in gone:
                assert_bounced(s, 503, "TOO_MANY_CONNECTIONS")
    finally:
        keep.close()


# ---------------------------------------------------------------- slow clients

@pytest.mark.parametrize("part", ["head", "body"])
def test_slow_loris_is_closed_at_the_request_deadline(slow, part):
    assert get(slow.port, "/healthz")[0] == 200          # positive control, before
    if part == "head":
        prefix, trickle = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"a" * 10000
    else:
        prefix, trickle = b"POST /api/v2/usage HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n", b"a" * 10000
    s = connect_from("127.0.0.1", slow.port, send=prefix)
    t0 = time.monotonic()
    try:
        sent = 0
        # One byte every 0.1 s: always progressing, never done. Stops by itself
        # at half the old 60 s idle timeout.
        while not server_spoke(s) and time.monotonic() - t0 < OLD_IDLE_S / 2:
            with contextlib.suppress(OSError):
                s.send(trickle[sent:sent + 1])
                sent += 1
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        assert server_spoke(s), f"still open after {elapsed:.0f}s and {sent} bytes"
        assert sent < len(trickle)
        assert elapsed >= REQUEST_TIMEOUT_S * 0.75, elapsed   # the deadline, not something earlier
        assert_bounced(s, 408, "REQUEST_TIMEOUT")
    finally:
        s.close()
    assert get(slow.port, "/healthz")[0] == 200          # positive control, after


def test_idle_unauthenticated_connection_expires_but_an_authenticated_one_does_not(slow):
    anon = http.client.HTTPConnection("127.0.0.1", slow.port, timeout=10)
    authed = http.client.HTTPConnection("127.0.0.1", slow.port, timeout=10)
    auth = {"Authorization": f"Bearer {slow.token}"}
    try:
        anon.request("GET", "/healthz")
        r = anon.getresponse()
        assert r.status == 200 and not r.will_close
        r.read()
        authed.request("GET", "/api/v2/sandboxes", headers=auth)
        r = authed.getresponse()
        assert r.status == 200 and not r.will_close
        r.read()
        t0 = time.monotonic()
        # The unauthenticated keep-alive connection is dropped at the request
        # deadline: silently (it was between requests), with the daemon's FIN.
        assert wait_until(lambda: server_spoke(anon.sock), OLD_IDLE_S / 2), "anonymous conn kept open"
        assert time.monotonic() - t0 >= REQUEST_TIMEOUT_S * 0.75
        assert read_until_closed(anon.sock) == (b"", "eof")
        # The authenticated one, idle as long, still serves.
        assert not server_spoke(authed.sock)
        authed.request("GET", "/api/v2/sandboxes", headers=auth)
        r = authed.getresponse()
        assert r.status == 200
        r.read()
    finally:
        anon.close()
        authed.close()


def test_new_connection_gets_503_when_authenticated_ones_fill_the_budget(slow):
    auth = {"Authorization": f"Bearer {slow.token}"}
    conns = []
    try:
        for _ in range(SLOW_MAX_CONNS):
            c = http.client.HTTPConnection("127.0.0.1", slow.port, timeout=10)
            c.request("GET", "/api/v2/sandboxes", headers=auth)
            r = c.getresponse()
            assert r.status == 200
            r.read()
            conns.append(c)
        # Nothing unauthenticated to displace: the newcomer is refused at accept,
        # told why before it sent a byte.
        s = connect_from("127.0.0.5", slow.port, send=None)
        try:
            assert_bounced(s, 503, "TOO_MANY_CONNECTIONS")
        finally:
            s.close()
        assert unix_get("/healthz", slow.socket_path) == 200   # its own budget
        # Positive control: once one authenticated client leaves, a newcomer is served.
        conns.pop().close()
        assert wait_until(lambda: served(slow.port, "127.0.0.5"), 10)
        for c in conns:                                      # and the others were kept
            c.request("GET", "/api/v2/sandboxes", headers=auth)
            r = c.getresponse()
            assert r.status == 200
            r.read()
    finally:
        for c in conns:
            c.close()
