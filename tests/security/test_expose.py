# Exposed ports (issue 8): what an exposure reaches and what it never does,
# and how the ingress refuses bad input. Each refusal has its positive control.
import os
import socket
import ssl
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutchlib import Hutchd  # noqa: E402
from expose_util import (Ingress, chunk_plan, expose, json_body, parse_response, server_log,  # noqa: E402
                         start_server)

HEAD_TIMEOUT_MS = 2000
UPSTREAM_TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def d():
    if os.geteuid() != 0:
        pytest.fail("hutchd tests need root (run scripts/test.sh as root)")
    h = Hutchd(tag="expose", extra_args=["--ingress-head-timeout", str(HEAD_TIMEOUT_MS),
                                         "--ingress-upstream-timeout", str(UPSTREAM_TIMEOUT_MS)]).start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def two(d):
    """Two sandboxes, each with a server on 8001 (exposed) and 8002 (not)."""
    a, b = d.create_sandbox(), d.create_sandbox()
    try:
        for sb, m in ((a, "A"), (b, "B")):
            start_server(sb, 8001, m + "-8001")
            start_server(sb, 8002, m + "-8002")
        yield a, expose(d, a, 8001), b, expose(d, b, 8001), Ingress(d)
    finally:
        a.ws.close()
        b.ws.close()


def test_url_is_unguessable_and_on_the_ingress_address(two):
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    assert host == "127.0.0.1" and port > 0
    name = prefix.strip("/")
    assert len(name) == 26 and set(name) <= set("abcdefghijklmnopqrstuvwxyz234567")  # 128 random bits
    assert ing.split(ub)[2] != prefix and ing.split(ub)[1] != port


def test_exposure_reaches_its_port_and_never_another_port(two):
    a, ua, b, ub, ing = two
    st, _, body = ing.get(ua, "/")
    assert st == 200 and body == b"hello from A-8001\n"
    # positive control: 8002 really listens in the same sandbox
    assert a.sh("curl -s http://127.0.0.1:8002/")["stdout"] == b"hello from A-8002\n"
    # the request-target, Host and an absolute-form URL cannot move it to 8002
    for target, host in ((f"{ing.split(ua)[2]}/", "127.0.0.1:8002"),
                         (f"http://127.0.0.1:8002{ing.split(ua)[2]}/", "127.0.0.1:8002")):
        raw = (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").encode()
        st, _, body = parse_response(ing.exchange(ua, raw))
        assert b"8002" not in body
        assert st in (200, 404), st
        if st == 200:
            assert body == b"hello from A-8001\n"


def test_another_sandboxs_secret_or_host_never_reaches_it(two):
    a, ua, b, ub, ing = two
    assert ing.get(ub, "/")[2] == b"hello from B-8001\n"  # positive control: B's URL reaches B
    # B's secret on A's port: 404 from the ingress, not B (nor A)
    host_a, port_a, _ = ing.split(ua)
    _, port_b, prefix_b = ing.split(ub)
    raw = f"GET {prefix_b}/ HTTP/1.1\r\nHost: {host_a}:{port_b}\r\nConnection: close\r\n\r\n".encode()
    st, h, body = parse_response(ing.exchange(ua, raw))
    assert st == 404 and h.get("x-hutch-ingress") == ["404"], (st, body)
    # A's URL with B's Host header: still A (routing is by the connection's port and secret)
    raw = f"GET {ing.split(ua)[2]}/ HTTP/1.1\r\nHost: {host_a}:{port_b}\r\nConnection: close\r\n\r\n".encode()
    assert parse_response(ing.exchange(ua, raw))[2] == b"hello from A-8001\n"


def test_no_secret_no_access(two):
    a, ua, b, ub, ing = two
    st, h, _ = parse_response(ing.exchange(ua, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert st == 404 and h.get("x-hutch-ingress") == ["404"]
    # a wrong secret of the right length
    bad = "/" + "a" * 26 + "/"
    st, _, _ = parse_response(ing.exchange(ua, f"GET {bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()))
    assert st == 404
    assert ing.get(ua, "/")[0] == 200  # positive control


def test_cookie_carries_the_secret_for_browsers_and_is_never_forwarded(two):
    a, ua, b, ub, ing = two
    st, h, _ = ing.get(ua, "/")
    cookie = h["set-cookie"][0]
    assert cookie.startswith("__Host-hutch-") and "HttpOnly" in cookie and "Secure" in cookie
    pair = cookie.split(";")[0]
    # an absolute link of the app ("/headers") works with the cookie alone
    host, port, _ = ing.split(ua)
    raw = (f"GET /headers HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: app=1; {pair}\r\n"
           f"X-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n").encode()
    st, _, body = parse_response(ing.exchange(ua, raw))
    assert st == 200, body
    seen = json_body(body)
    hdrs = {k.lower(): v for k, v in seen["headers"]}
    assert hdrs["cookie"] == "app=1"                      # hutch's cookie stripped, the app's kept
    xff = [v for k, v in seen["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["127.0.0.1"]                           # the client's claim replaced, not joined
    assert hdrs["x-forwarded-proto"] == "https"
    assert hdrs["x-forwarded-host"] == f"{host}:{port}"
    # the path secret is stripped too: the server sees its own paths
    st, _, body = ing.get(ua, "/headers?x=1")
    assert json_body(body)["path"] == "/headers?x=1"


def test_a_sandbox_cannot_set_hutchs_cookie(two):
    a, ua, b, ub, ing = two
    st, h, _ = ing.get(ua, "/setcookie")
    assert st == 200
    cookies = h.get("set-cookie", [])
    assert "app=kept; Path=/" in cookies  # positive control: the app's own cookie passes
    assert not [c for c in cookies if "planted" in c], cookies
    assert [c for c in cookies if c.startswith("__Host-hutch-") and ing.split(ua)[2].strip("/") in c]


def test_hutchd_api_is_not_reachable_through_an_exposure(d, two):
    a, ua, b, ub, ing = two
    # positive control: the API answers directly
    assert d.http("GET", "/api/v2/sandboxes").status == 200
    host, port, prefix = ing.split(ua)
    raw = (f"GET http://127.0.0.1:{d.port}/api/v2/sandboxes HTTP/1.1\r\nHost: 127.0.0.1:{d.port}\r\n"
           f"Authorization: Bearer {d.token}\r\nConnection: close\r\n\r\n").encode()
    st, _, body = parse_response(ing.exchange(ua, raw))
    assert st == 404 and b"sbx_" not in body
    raw = (f"GET {prefix}/api/v2/sandboxes HTTP/1.1\r\nHost: 127.0.0.1:{d.port}\r\n"
           f"Authorization: Bearer {d.token}\r\nConnection: close\r\n\r\n").encode()
    st, _, body = parse_response(ing.exchange(ua, raw))
    assert st == 200 and body == b"hello from A-8001\n"  # the sandbox's own server, never hutchd


def test_smuggling_and_floods_are_refused(two):
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    base = f"POST {prefix}/upload HTTP/1.1\r\nHost: {host}:{port}\r\n"
    smuggle = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    cases = {
        "cl+te": (base + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggle, 400),
        "te+cl": (base + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggle, 400),
        "two lengths": (base + "Content-Length: 0\r\nContent-Length: 40\r\n\r\n" + smuggle, 400),
        "obs-fold": (base + "X-A: 1\r\n b\r\nContent-Length: 0\r\n\r\n", 400),
        # a bare CR: Debian's http-parser would end this head at "\r\r\n" and read the rest as the next request
        "bare CR": (base + "X-A: \r\rContent-Length: 0\r\n\r\n" + smuggle, 400),
        "bare CR in a value": (base + "X-A: a\rb\r\nContent-Length: 0\r\n\r\n", 400),
        "header flood": (base + "".join(f"X-{i}: v\r\n" for i in range(200)) + "\r\n", 431),
        "huge header": (base + "X-Big: " + "a" * 20000 + "\r\n\r\n", 431),
        "huge url": (f"GET {prefix}/{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    }
    for name, (raw, want) in cases.items():
        st, h, body = parse_response(ing.exchange(ua, raw.encode()))
        assert st == want and h.get("x-hutch-ingress") == [str(want)], (name, st)
        if name.startswith("bare CR"):
            assert b"bare CR" in body, (name, body)
    assert "/smuggled" not in server_log(a, 8001)
    # positive control: the same upload, well framed, answers
    st, _, body = ing.get(ua, "/upload", method="POST", body=b"abcd")
    assert st == 200 and json_body(body)["len"] == 4


def test_a_slow_client_times_out(two):
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    s = ing.connect(ua)
    try:
        s.sendall(f"GET {prefix}/ HTTP/1.1\r\nHost: x\r\n".encode())  # never finished
        s.settimeout(HEAD_TIMEOUT_MS / 1000 * 10)
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, ssl_error()):
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    st, h, _ = parse_response(out)
    assert st == 408 and h.get("x-hutch-ingress") == ["408"]
    # positive control: a complete head on a new connection answers
    assert ing.get(ua, "/")[0] == 200


def ssl_error():
    import ssl
    return ssl.SSLError


def test_an_upstream_that_never_answers_gets_504(two):
    a, ua, b, ub, ing = two
    st, h, _ = ing.get(ua, "/hang")
    assert st == 504 and h.get("x-hutch-ingress") == ["504"]
    assert ing.get(ua, "/")[0] == 200


def test_streams_websocket_and_large_upload(two):
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    # SSE: event one arrives before the server even produces event two
    a.sh("rm -f /tmp/sse-go-8001")
    s = ing.connect(ua)
    s.sendall(f"GET {prefix}/sse HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    got = b""
    while b"data: one" not in got:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    assert b"data: two" not in got
    a.sh("touch /tmp/sse-go-8001")
    while b"data: two" not in got:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    s.close()
    # WebSocket echo through the URL
    s = ing.connect(ua)
    s.sendall((f"GET {prefix}/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    payload = b"ping through the ingress"
    mask = b"\x01\x02\x03\x04"
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
    echo = b""
    while len(echo) < 2 + len(payload):
        echo += s.recv(4096)
    assert echo == bytes([0x81, len(payload)]) + payload
    s.close()
    # a 64 MiB chunked upload, streamed (the ingress never holds it whole)
    import hashlib
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    s = ing.connect(ua, timeout=120)
    s.sendall(f"POST {prefix}/upload HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
              "Connection: close\r\n\r\n".encode())
    for _ in range(64):
        s.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
        h.update(block)
    s.sendall(b"0\r\n\r\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    st, _, body = parse_response(out)
    assert st == 200 and json_body(body) == {"len": 64 << 20, "sha256": h.hexdigest(), "marker": "A-8001"}


def test_502_before_listening_then_404_after_stop(d):
    ing = Ingress(d)
    sb = d.create_sandbox()
    try:
        url = expose(d, sb, 8003)
        st, h, body = ing.get(url, "/")
        assert st == 502 and h.get("x-hutch-ingress") == ["502"] and b"8003" in body
        start_server(sb, 8003, "late")
        assert ing.get(url, "/")[2] == b"hello from late\n"
    finally:
        sb.ws.close()
    # the sandbox is gone (its session closed): its URL answers 404, the port stays ours for a while.
    # While it stops, a request may still be answered, get a 502 or see its connection closed.
    deadline = time.monotonic() + 20
    while True:
        try:
            st, h, body = ing.get(url, "/")
        except (ssl.SSLError, OSError) as e:
            st, h, body = None, {}, repr(e).encode()
        if st == 404 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert st == 404 and h.get("x-hutch-ingress") == ["404"] and b"not running" in body, (st, body)


def test_pid_exposure_finds_the_port(d):
    ing = Ingress(d)
    sb = d.create_sandbox()
    try:
        r = sb.run("bash", ["-c", "cat > /tmp/expose_server.py"],
                   stdin=open(os.path.join(os.path.dirname(__file__), "..", "integration", "expose_server.py"), "rb").read())
        assert r["code"] == 0
        sp = sb.call("spawn", {"command": "python3", "args": ["/tmp/expose_server.py", "8111", "bypid"],
                               "stdout": "null", "stderr": "null"})
        url = expose(d, sb, pid=sp["pid"])
        for _ in range(100):
            st, _, body = ing.get(url, "/")
            if st == 200:
                break
            time.sleep(0.1)
        assert body == b"hello from bypid\n"
    finally:
        sb.ws.close()


def test_cli_expose_prints_a_working_url(d):
    ing = Ingress(d)
    sb = d.create_sandbox()
    try:
        start_server(sb, 8004, "cli")
        r = d.cli("expose", sb.id, "8004", check=True)
        url = r.stdout.strip()
        assert url.startswith("https://127.0.0.1:"), r.stdout
        assert ing.get(url, "/")[2] == b"hello from cli\n"
        bad = d.cli("expose", sb.id, "70000")
        assert bad.returncode == 2 and "1..65535" in bad.stderr
        gone = d.cli("expose", "sbx_loc_aaaaaaaaaaaaaaaaaaaa", "8004")
        assert gone.returncode != 0 and "SANDBOX_NOT_FOUND" in gone.stderr + gone.stdout or "no running sandbox" in gone.stderr
    finally:
        sb.ws.close()


def _ingress_pids(d):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        if comm == "hutch-ingress" and ppid == d.pid:
            out.append(int(p))
    return out


def test_ingress_runs_confined_and_is_restarted_with_its_routes(d, two):
    a, ua, b, ub, ing = two
    assert ing.get(ua, "/")[2] == b"hello from A-8001\n"
    pids = _ingress_pids(d)
    assert len(pids) == 1, pids
    pid = pids[0]
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    uids = [ln for ln in status.splitlines() if ln.startswith("Uid:")][0].split()[1:]
    assert set(uids) == {"65534"}, uids                                  # not root
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status
    assert os.readlink(f"/proc/{pid}/root").endswith("/ingress-root")   # chrooted into an empty dir
    os.kill(pid, 9)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = [p for p in _ingress_pids(d) if p != pid]
        if new:
            try:
                if ing.get(ua, "/")[2] == b"hello from A-8001\n" and ing.get(ub, "/")[2] == b"hello from B-8001\n":
                    break
            except OSError:
                pass
        time.sleep(0.2)
    else:
        raise AssertionError("the ingress did not come back with its routes")
    assert "hutch-ingress exited" in d._log_text()


def test_keep_alive_pipelining_head_and_half_close(two):
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    req = f"GET {prefix}/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    s = ing.connect(ua)
    try:
        # two requests in one write: answered in order on one connection
        s.sendall(req + f"HEAD {prefix}/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() + req)
        got = b""
        while got.count(b"HTTP/1.1 200") < 3 or not got.endswith(b"hello from A-8001\n"):
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        assert got.count(b"hello from A-8001\n") == 2  # the HEAD answer has no body
        assert got.count(b"Connection: keep-alive") == 3
    finally:
        s.close()
    # a client that half-closes after its request still gets the answer
    s = ing.connect(ua)
    try:
        s.sendall(f"GET {prefix}/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        socket.socket.shutdown(s, socket.SHUT_WR)  # the TCP side only (SSLSocket.shutdown drops TLS)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        assert parse_response(out)[2] == b"hello from A-8001\n", out
    finally:
        s.close()


def test_a_chunked_download_in_awkward_pieces_arrives_byte_exact(two):
    """The ingress packs what it sends into TLS records of up to 16 KiB: pieces
    of 1 byte to 128 KiB, each written by the server as size line, data and
    CRLF, arrive intact and in order, re-chunked on a keep-alive connection
    (the next request on it is still answered) and until close for HTTP/1.0."""
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    want = chunk_plan("k1")
    s = ing.connect(ua, timeout=60)
    try:
        s.sendall(f"GET {prefix}/chunks?seed=k1 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
                  f"GET {prefix}/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    first, sep, second = got.partition(b"0\r\n\r\n" + b"HTTP/1.1 ")
    assert sep, got[-300:]
    st, hdrs, body = parse_response(first + b"0\r\n\r\n")
    assert st == 200 and hdrs["transfer-encoding"] == ["chunked"]
    assert len(body) == len(want) and body == want
    assert parse_response(b"HTTP/1.1 " + second)[2] == b"hello from A-8001\n"
    # HTTP/1.0: no chunking towards the client, the body ends when the ingress closes
    raw = ing.exchange(ua, f"GET {prefix}/chunks?seed=k2 HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode(), 60)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower() and b"Connection: close" in head
    assert body == chunk_plan("k2")


def test_a_stalled_request_body_times_out(two):
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    s = ing.connect(ua, timeout=UPSTREAM_TIMEOUT_MS / 1000 * 10)
    try:
        s.sendall(f"POST {prefix}/upload HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100\r\n\r\n".encode()
                  + b"x" * 10)  # 90 bytes never come
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    st, h, body = parse_response(out)
    assert st == 408 and h.get("x-hutch-ingress") == ["408"] and b"body stalled" in body
    st, _, body = ing.get(ua, "/upload", method="POST", body=b"x" * 100)  # positive control
    assert st == 200 and json_body(body)["len"] == 100


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([ln for ln in f.read().splitlines() if ln.startswith("VmRSS:")][0].split()[1])


def test_a_client_that_does_not_read_holds_bounded_memory(d, two):
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    pid = _ingress_pids(d)[0]
    before = _rss_kib(pid)
    s = ing.connect(ua, timeout=60)
    try:
        s.sendall(f"GET {prefix}/big?mb=256 HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        peak = before
        for _ in range(30):  # 3 s of not reading while the server pushes 256 MiB at loopback speed
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.1)
        assert peak - before < 48 * 1024, (before, peak)  # KiB: the 1 MiB high-water mark plus buffers, not 256 MiB
        got = 0
        while True:  # positive control: every byte still arrives
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    finally:
        s.close()
    assert got > 256 << 20 and got - (256 << 20) < 4096, got  # the body plus a head


def test_a_websocket_that_never_reads_holds_bounded_memory(d, two):
    a, ua, b, ub, ing = two
    host, port, prefix = ing.split(ua)
    pid = _ingress_pids(d)[0]
    before = _rss_kib(pid)
    s = ing.connect(ua, timeout=5)
    try:
        s.sendall((f"GET {prefix}/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        payload = b"y" * 60000
        frame = bytes([0x82, 0xFE]) + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload  # zero mask
        sent, stalled = 0, False
        s.settimeout(3)
        while sent < 512 << 20:  # never reading the echoes; the ingress must stop taking ours
            try:
                s.sendall(frame)
            except (TimeoutError, socket.timeout):
                stalled = True
                break
            sent += len(frame)
        assert stalled, "512 MiB went in while nothing was read: nothing pushed back"
        assert _rss_kib(pid) - before < 48 * 1024, (before, _rss_kib(pid))
    finally:
        s.close()
    assert ing.get(ua, "/")[0] == 200  # positive control: the ingress still serves


def test_exposures_per_sandbox_are_bounded(d):
    sb = d.create_sandbox()
    try:
        codes = [d.http("POST", f"/api/v3/sandbox/{sb.id}/expose/http", body=b"{}").status for _ in range(33)]
        assert codes[:32] == [200] * 32 and codes[32] == 429, codes
    finally:
        sb.ws.close()
