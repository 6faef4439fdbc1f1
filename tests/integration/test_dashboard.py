"""The web dashboard's server side (docs/dashboard.md): CPU and memory samples
in a bounded ring (GET /api/v2/sandboxes/{id}/stats, /hutch/v1/live), the
static files served from memory with a CSP and without a token, and WebSocket
authentication by subprotocol (no token in URLs).
The page itself is driven by headless Chromium in tests/sdk/dashboard.test.mjs."""
import json
import os
import re
import time

import pytest

from hutchlib import REPO, HandshakeError, SandboxConn, WebSocket, wait_until

INTERVAL_MS = 100
RING = 5
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def dashboard_dir():
    d = os.path.join(os.environ.get("HUTCH_BUILD", os.path.join(REPO, "build")), "dashboard")
    if not os.path.isabs(d):
        d = os.path.join(REPO, d)
    assert os.path.isfile(os.path.join(d, "index.html")), f"no dashboard in {d}: run `make dashboard`"
    return d


def now_ms():
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def d(make_hutchd_module):
    return make_hutchd_module


@pytest.fixture(scope="module")
def make_hutchd_module(request):
    from hutchlib import Hutchd
    h = Hutchd(tag="dash", extra_args=["--stats-interval", str(INTERVAL_MS), "--stats-samples", str(RING),
                                        "--dashboard-dir", dashboard_dir()]).start()
    yield h
    h.stop()


def make_token(d, org, name="dash"):
    r = d.http("POST", "/hutch/v1/tokens", body={"org": org, "name": name})
    assert r.status == 201, r
    return r.json()["token"]


def stats(d, sid, token=..., q=""):
    return d.http("GET", f"/api/v2/sandboxes/{sid}/stats{q}", token=token)


# ---------------------------------------------------------------- stats

def test_stats_ring_keeps_only_the_newest_samples_and_counts_cpu(d):
    sb = d.create_sandbox({"stop_at_ms": now_ms() + 120000, "labels": {"t": "ring"}})
    try:
        t_burn = now_ms()
        r = sb.run("python3", ["-c", BURN.format(s=1.0)])
        assert r["code"] == 0, r
        t_done = now_ms()
        # a sample taken after the burn ended, and the ring full
        def newest():
            s = stats(d, sb.id).json()["samples"]
            return s if len(s) == RING and s[-1]["t"] > t_done else None
        samples = wait_until(newest, 20)
        assert samples, stats(d, sb.id).json()
        body = stats(d, sb.id).json()
        assert body["capacity"] == RING and body["intervalMs"] == INTERVAL_MS
        assert body["memoryLimitBytes"] == 1280 << 20
        # bounded: many intervals passed since the sandbox started, still RING samples, the newest ones
        assert len(body["samples"]) == RING
        assert body["samples"][0]["t"] > t_burn, body["samples"]
        ts = [s["t"] for s in body["samples"]]
        assert ts == sorted(ts) and len(set(ts)) == RING
        # the CPU counter is the cgroup's: at least the second the burn took, and it never falls
        cpu = [s["cpuUs"] for s in body["samples"]]
        assert cpu == sorted(cpu) and cpu[-1] >= 1_000_000, cpu
        assert all(0 < s["memBytes"] <= body["memoryLimitBytes"] for s in body["samples"])
        # a rate from the second kept sample on; the first kept has its predecessor dropped
        assert body["samples"][0]["cpuMillis"] is None
        assert all(isinstance(s["cpuMillis"], int) and s["cpuMillis"] >= 0 for s in body["samples"][1:])
        # since=: only newer samples
        newer = stats(d, sb.id, q=f"?since={ts[-2]}").json()["samples"]
        assert newer and all(s["t"] > ts[-2] for s in newer), (ts, newer)
        assert newer[0]["t"] == ts[-1], (ts, newer)
    finally:
        sb.ws.close()
        d.http("DELETE", f"/api/v3/sandbox/{sb.id}")


def test_stats_bad_since_is_400(d):
    with d.create_sandbox() as sb:
        r = stats(d, sb.id, q="?since=yesterday")
        assert r.status == 400 and r.json()["code"] == "INVALID_RANGE", r
        assert stats(d, sb.id, q="?since=0").status == 200


def test_stats_need_a_valid_token(d):
    with d.create_sandbox() as sb:
        assert stats(d, sb.id).status == 200  # positive control
        r = stats(d, sb.id, token=None)
        assert r.status == 401 and r.json()["code"] == "INVALID_TOKEN", r
        r = stats(d, sb.id, token="ddo_" + "a" * 40)
        assert r.status == 401 and r.json()["code"] == "INVALID_TOKEN", r
        r = d.http("GET", "/hutch/v1/live", token=None)
        assert r.status == 401 and r.json()["code"] == "INVALID_TOKEN", r


def test_other_orgs_sandbox_stats_are_404_and_live_lists_only_own(d):
    other = make_token(d, "other")
    with d.create_sandbox({"labels": {"who": "default"}}) as sb:
        assert stats(d, sb.id).status == 200  # positive control: its own org sees it
        r = stats(d, sb.id, token=other)
        assert r.status == 404 and r.json()["code"] == "SANDBOX_NOT_FOUND", r
        r = stats(d, "sbx_loc_" + "a" * 20)
        assert r.status == 404 and r.json()["code"] == "SANDBOX_NOT_FOUND", r
        mine = {s["id"]: s for s in d.http("GET", "/hutch/v1/live").json()["sandboxes"]}
        assert sb.id in mine and mine[sb.id]["state"] == "running"
        assert mine[sb.id]["labels"] == {"who": "default"}
        assert mine[sb.id]["memoryLimitBytes"] == 1280 << 20
        theirs = d.http("GET", "/hutch/v1/live", token=other).json()["sandboxes"]
        assert sb.id not in [s["id"] for s in theirs]


def test_stats_of_a_stopped_sandbox_are_404(d):
    sb = d.create_sandbox({"stop_at_ms": now_ms() + 60000})
    sid = sb.id
    assert stats(d, sid).status == 200
    assert d.http("DELETE", f"/api/v3/sandbox/{sid}").status == 200
    sb.ws.close()
    assert wait_until(lambda: stats(d, sid).status == 404, 10), stats(d, sid)


# ---------------------------------------------------------------- static files

def test_dashboard_page_is_served_without_a_token_with_a_csp(d):
    r = d.http("GET", "/", token=None)
    assert r.status == 200, r
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    directives = {p.split()[0]: p.split()[1:] for p in csp.split("; ")}
    assert directives["script-src"] == ["'self'"], csp          # no inline script, no eval
    assert directives["default-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert b"<script" in r.body and b"src=\"/ui/app.js\"" in r.body
    assert b"<script>" not in r.body and not re.search(rb"\son[a-z]+\s*=", r.body)  # no inline script or handlers
    with open(os.path.join(dashboard_dir(), "index.html"), "rb") as f:
        assert r.body == f.read()
    js = d.http("GET", "/ui/app.js", token=None)
    assert js.status == 200 and js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert d.http("GET", "/ui/xterm.mjs", token=None).headers["content-type"] == "text/javascript; charset=utf-8"
    assert d.http("GET", "/ui/app.css", token=None).headers["content-type"] == "text/css; charset=utf-8"
    # a revalidation answers 304 with no body
    r304 = d.http("GET", "/ui/app.js", token=None, headers={"If-None-Match": js.headers["etag"]})
    assert r304.status == 304 and r304.body == b""
    # the API itself still wants a token
    assert d.http("GET", "/api/v2/sandboxes", token=None).status == 401


@pytest.mark.parametrize("path", ["/ui/../state/admin.token", "/ui/%2e%2e/admin.token", "/ui/", "/ui/nope.js",
                                  "/ui/xterm.mjs.map", "/ui/.hidden.js", "/ui/index.html/", "/ui//etc/passwd"])
def test_dashboard_serves_only_its_own_files(d, path):
    r = d.http("GET", path, token=None)
    assert r.status == 404, (path, r)
    assert r.body == b"not found\n"


def test_dashboard_files_are_read_only(d):
    for m in ("POST", "PUT", "DELETE"):
        r = d.http(m, "/ui/app.js", body=b"x", token=d.token)
        assert r.status == 405 and r.headers["allow"] == "GET, HEAD", (m, r)
    assert d.http("GET", "/ui/app.js", token=None).status == 200


def test_symlinks_in_the_dashboard_directory_are_not_served(make_hutchd, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>t</title>")
    (site / "real.js").write_text("export const x = 1;\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret\n")
    os.symlink(secret, site / "leak.txt")
    os.chmod(tmp_path, 0o755)
    h = make_hutchd(extra_args=["--dashboard-dir", str(site)])
    assert h.http("GET", "/ui/real.js", token=None).status == 200  # positive control
    r = h.http("GET", "/ui/leak.txt", token=None)
    assert r.status == 404 and b"host secret" not in r.body, r


# ---------------------------------------------------------------- WebSocket auth by subprotocol

def ws_sub(d, sid, protocols):
    return WebSocket.connect(d.port, f"/api/v3/sandbox/{sid}/connect",
                             headers={"Sec-WebSocket-Protocol": protocols}, token=None)


def test_websocket_takes_the_token_from_a_subprotocol_and_answers_only_hutch_v1(d):
    with d.create_sandbox() as sb:
        ws = ws_sub(d, sb.id, f"hutch.v1, hutch.bearer.{d.token}")
        try:
            assert ws.headers.get("sec-websocket-protocol") == "hutch.v1"
            conn = SandboxConn(ws, sb.id)
            r = conn.run("echo", ["hi"])
            assert r["code"] == 0 and r["stdout"] == b"hi\n"
        finally:
            ws.close()


@pytest.mark.parametrize("protocols", ["hutch.v1, hutch.bearer.ddo_" + "b" * 40,   # unknown token
                                       "hutch.bearer.{tok}",                        # no hutch.v1 offered
                                       "hutch.v1"])                                 # no token at all
def test_websocket_subprotocol_without_a_valid_token_is_401(d, protocols):
    with d.create_sandbox() as sb:
        with pytest.raises(HandshakeError) as ei:
            ws_sub(d, sb.id, protocols.format(tok=d.token))
        assert ei.value.status == 401 and ei.value.json()["code"] == "INVALID_TOKEN"
