# The HTTP/WebSocket API edge against a real hutchd: auth, config
# validation, unknown ids, list/kill/extend, session and duration lifetimes.
import base64
import json
import os
import stat
import time

import pytest

from hutchlib import (SANDBOX_ID_RE, HandshakeError, WsClosed, b64cfg,
                      cgroup_dirs_for_sandbox, wait_until)

UNKNOWN_ID = "sbx_loc_" + "a" * 20


def assert_error_shape(body, code=None):
    obj = json.loads(body)
    assert isinstance(obj, dict), obj
    assert isinstance(obj.get("code"), str) and obj["code"], obj
    assert isinstance(obj.get("message"), str) and obj["message"], obj
    if code is not None:
        assert obj["code"] == code, obj
    return obj


def create_refused(hutchd, headers, token=...):
    with pytest.raises(HandshakeError) as ei:
        ws = hutchd.ws("/api/v3/sandboxes/create", headers=headers, token=token)
        ws.close()
    return ei.value


# ------------------------------------------------------------------ auth

def test_admin_token_file(hutchd):
    path = os.path.join(hutchd.state_dir, "admin.token")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 0
    assert hutchd.token.startswith("ddo_")
    assert len(hutchd.token) >= 24


def test_bad_token_rest_401(hutchd):
    r = hutchd.http("GET", "/api/v2/sandboxes", token="ddo_notavalidtoken0000000000")
    assert r.status == 401, r
    assert_error_shape(r.body, "INVALID_TOKEN")


def test_missing_token_rest_401(hutchd):
    r = hutchd.http("GET", "/api/v2/sandboxes", token=None)
    assert r.status == 401, r
    assert_error_shape(r.body)


def test_bad_token_ws_401(hutchd):
    e = create_refused(hutchd, {"x-deno-sandbox-config": b64cfg({"memory_mb": 1280})},
                       token="ddo_wrong")
    assert e.status == 401
    assert_error_shape(e.body, "INVALID_TOKEN")


def test_bad_token_on_kill_and_extend(hutchd):
    for method, body in (("DELETE", None), ("PATCH", {"stop_at_ms": int(time.time() * 1000) + 60000})):
        r = hutchd.http(method, f"/api/v3/sandbox/{UNKNOWN_ID}", body=body, token="ddo_wrong")
        assert r.status == 401, (method, r)
        assert_error_shape(r.body, "INVALID_TOKEN")


def test_org_mismatch_refused(hutchd):
    hdr = {"X-Deno-Org": "some-other-org-that-does-not-exist",
           "x-deno-sandbox-config": b64cfg({"memory_mb": 1280})}
    e = create_refused(hutchd, hdr)
    assert e.status == 403, e
    assert_error_shape(e.body, "ORG_MISMATCH")
    r = hutchd.http("GET", "/api/v2/sandboxes", headers={"X-Deno-Org": "some-other-org"})
    assert r.status == 403, r
    assert_error_shape(r.body, "ORG_MISMATCH")
    # the token's own organization is accepted
    r = hutchd.http("GET", "/api/v2/sandboxes", headers={"X-Deno-Org": "default"})
    assert r.status == 200, r


def test_healthz_needs_no_token(hutchd):
    r = hutchd.http("GET", "/healthz", token=None)
    assert r.status == 200, r
    assert r.json()["ok"] is True


# ------------------------------------------------------------------ config validation

@pytest.mark.parametrize("header,code", [
    ("!!!not base64!!!", "INVALID_CONFIG"),
    (base64.b64encode(b"{not json").decode(), "INVALID_CONFIG"),
    (base64.b64encode(b"[1,2,3]").decode(), "INVALID_CONFIG"),
    (b64cfg({"memory_mb": "lots"}), "INVALID_MEMORY"),
    (b64cfg({"memory_mb": -5}), "INVALID_MEMORY"),
    (b64cfg({"memory_mb": 0}), "INVALID_MEMORY"),
    (b64cfg({"memory_mb": 100}), "INVALID_MEMORY"),
    (b64cfg({"memory_mb": 1280.5}), "INVALID_MEMORY"),
    (b64cfg({"memory_mb": 10 ** 9}), "INVALID_MEMORY"),
    (b64cfg({"memory_mb": 1280, "stop_at_ms": "later"}), "INVALID_TIMEOUT"),
    (b64cfg({"memory_mb": 1280, "stop_at_ms": int(time.time() * 1000) + 8 * 86400 * 1000}),
     "INVALID_TIMEOUT"),
    (b64cfg({"memory_mb": 1280, "labels": ["x"]}), "INVALID_LABELS"),
    (b64cfg({"memory_mb": 1280, "labels": {"k": 5}}), "INVALID_LABELS"),
    (b64cfg({"memory_mb": 1280, "env": {"K": ["v"]}}), "INVALID_ENV"),
    (b64cfg({"memory_mb": 1280, "volumes": [{"volume": "v", "path": "data/../x"}]}), "INVALID_VOLUMES"),
], ids=["base64", "json", "array", "mem-str", "mem-neg", "mem-0", "mem-low", "mem-frac", "mem-huge",
        "stop-str", "stop-8-days", "labels-array", "labels-int", "env-array", "volumes"])
def test_bad_config_400(hutchd, header, code):
    e = create_refused(hutchd, {"x-deno-sandbox-config": header})
    assert e.status == 400, (code, e)
    obj = assert_error_shape(e.body, code)
    assert len(obj["message"]) > 5, obj
    assert hutchd.alive()


def test_oversized_config_header_refused(hutchd):
    big = b64cfg({"memory_mb": 1280, "labels": {"k": "x" * 200000}})
    e = create_refused(hutchd, {"x-deno-sandbox-config": big})
    assert 400 <= e.status < 500, e


# ------------------------------------------------------------------ unknown ids

def test_unknown_sandbox_404(hutchd):
    with pytest.raises(HandshakeError) as ei:
        hutchd.ws(f"/api/v3/sandbox/{UNKNOWN_ID}/connect").close()
    assert ei.value.status == 404
    assert_error_shape(ei.value.body, "SANDBOX_NOT_FOUND")
    r = hutchd.http("DELETE", f"/api/v3/sandbox/{UNKNOWN_ID}")
    assert r.status == 404, r
    assert_error_shape(r.body, "SANDBOX_NOT_FOUND")
    r = hutchd.http("PATCH", f"/api/v3/sandbox/{UNKNOWN_ID}",
                    body={"stop_at_ms": int(time.time() * 1000) + 60000})
    assert r.status == 404, r
    assert_error_shape(r.body, "SANDBOX_NOT_FOUND")


@pytest.mark.parametrize("bad", ["sbx_nope", "..%2F..%2Fetc", "sbx_loc_" + "A" * 20, "x" * 300])
def test_malformed_sandbox_id(hutchd, bad):
    r = hutchd.http("DELETE", f"/api/v3/sandbox/{bad}")
    assert r.status in (400, 404), r


def test_unknown_path_404(hutchd):
    r = hutchd.http("GET", "/api/v3/nothing-here")
    assert r.status == 404, r


def test_daemon_survives_garbage_http(hutchd):
    import socket
    for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 100000 + b"\r\n\r\n",
                 b"POST /api/v2/sandboxes HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nabc"):
        with socket.create_connection(("127.0.0.1", hutchd.port), timeout=10) as s:
            try:
                s.sendall(junk)
                s.recv(4096)
            except OSError:
                pass
    assert hutchd.alive()
    assert hutchd.http("GET", "/api/v2/sandboxes").status == 200


# ------------------------------------------------------------------ lifecycle over REST

def test_create_list_labels_kill(hutchd):
    labels = {"suite": "api", "run": str(os.getpid())}
    with hutchd.create_sandbox({"labels": labels}) as sb:
        assert sb.id and SANDBOX_ID_RE.match(sb.id), sb.id
        assert sb.call("envGet", {"key": "HOME"}) == "/home/app"
        listed = {s["id"]: s for s in hutchd.list_sandboxes()}
        assert sb.id in listed
        me = listed[sb.id]
        assert me["status"] == "running"
        assert me["labels"] == labels
        assert isinstance(me["createdAt"], str) and me["createdAt"]
        assert me.get("stoppedAt") is None
        only = hutchd.list_sandboxes(labels={"run": str(os.getpid())})
        assert [s["id"] for s in only] == [sb.id]
        assert hutchd.list_sandboxes(labels={"run": "no-such-run"}) == []

        r = hutchd.http("DELETE", f"/api/v3/sandbox/{sb.id}")
        assert r.status == 200, r
        assert r.json() == {"id": sb.id, "status": "stopped"}, r
        # the WebSocket of a killed sandbox is closed by the daemon
        with pytest.raises(WsClosed) as ei:
            for _ in range(100):
                sb.ws.recv(timeout=10)
        assert ei.value.code == 1000, ei.value
        assert wait_until(lambda: hutchd.sandbox_status(sb.id) == "stopped", 10)
        stopped = [s for s in hutchd.list_sandboxes() if s["id"] == sb.id][0]
        assert stopped["stoppedAt"], stopped
        assert wait_until(lambda: not cgroup_dirs_for_sandbox(hutchd.cgroup_name, sb.id), 10)
        # killing again: already stopped, not a server error
        r = hutchd.http("DELETE", f"/api/v3/sandbox/{sb.id}")
        assert r.status < 500, r


def test_extend_timeout(hutchd):
    now_ms = int(time.time() * 1000)
    with hutchd.create_sandbox({"stop_at_ms": now_ms + 60000}) as sb:
        want = now_ms + 300000
        r = hutchd.http("PATCH", f"/api/v3/sandbox/{sb.id}", body={"stop_at_ms": want})
        assert r.status == 200, r
        got = r.json()["stop_at_ms"]
        assert isinstance(got, int) and got > now_ms + 60000, got
        r = hutchd.http("PATCH", f"/api/v3/sandbox/{sb.id}", body={"stop_at_ms": "soon"})
        assert r.status == 400, r
        r = hutchd.http("PATCH", f"/api/v3/sandbox/{sb.id}", body=b"{nope",
                        headers={"Content-Type": "application/json"})
        assert r.status == 400, r
        assert hutchd.http("DELETE", f"/api/v3/sandbox/{sb.id}").status < 300


def test_session_sandbox_dies_with_connection(hutchd):
    sb = hutchd.create_sandbox()
    sid = sb.id
    assert hutchd.sandbox_status(sid) == "running"
    sb.ws.close()
    assert wait_until(lambda: hutchd.sandbox_status(sid) == "stopped", 15), hutchd.list_sandboxes()
    assert wait_until(lambda: not cgroup_dirs_for_sandbox(hutchd.cgroup_name, sid), 10)


def test_duration_sandbox_outlives_connection_then_expires(hutchd):
    sb = hutchd.create_sandbox({"stop_at_ms": int(time.time() * 1000) + 4000})
    sid = sb.id
    sb.ws.close()
    time.sleep(0.5)
    assert hutchd.sandbox_status(sid) == "running"
    with hutchd.connect_sandbox(sid) as again:
        assert again.call("envGet", {"key": "USER"}) == "app"
    assert wait_until(lambda: hutchd.sandbox_status(sid) == "stopped", 20), hutchd.list_sandboxes()
    assert wait_until(lambda: not cgroup_dirs_for_sandbox(hutchd.cgroup_name, sid), 10)
    with pytest.raises(HandshakeError) as ei:
        hutchd.connect_sandbox(sid).ws.close()
    assert ei.value.status == 404, ei.value


def test_two_sandboxes_are_independent(hutchd):
    with hutchd.create_sandbox() as a, hutchd.create_sandbox() as b:
        assert a.id != b.id
        a.call("envSet", {"key": "ONLY_A", "value": "1"})
        assert a.call("envGet", {"key": "ONLY_A"}) == "1"
        assert b.call("envGet", {"key": "ONLY_A"}) is None
        r = a.sh("echo hi > /tmp/mark && cat /tmp/mark")
        assert r["code"] == 0 and r["stdout"] == b"hi\n", r
        r = b.sh("test -e /tmp/mark")
        assert r["code"] == 1, r


def test_config_env_is_initial_environment(hutchd):
    with hutchd.create_sandbox({"env": {"FROM_CONFIG": "yes"}}) as sb:
        assert sb.call("envGet", {"key": "FROM_CONFIG"}) == "yes"
        assert sb.sh("printenv FROM_CONFIG")["stdout"] == b"yes\n"


def test_second_connection_and_session_lifetime(hutchd):
    """A session sandbox lives while any of its connections is open."""
    first = hutchd.create_sandbox()
    sid = first.id
    second = hutchd.connect_sandbox(sid)
    first.ws.close()
    time.sleep(1)
    assert hutchd.sandbox_status(sid) == "running"
    assert second.call("envGet", {"key": "HOME"}) == "/home/app"
    second.ws.close()
    assert wait_until(lambda: hutchd.sandbox_status(sid) == "stopped", 15)


def test_extend_capped_at_30_minutes(hutchd):
    now = int(time.time() * 1000)
    with hutchd.create_sandbox({"stop_at_ms": now + 60000}) as sb:
        r = hutchd.http("PATCH", f"/api/v3/sandbox/{sb.id}", body={"stop_at_ms": now + 5 * 3600 * 1000})
        assert r.status == 200, r
        got = r.json()["stop_at_ms"]
        assert now + 60000 < got <= now + 60000 + 30 * 60000 + 5000, got
        # never shorter
        r = hutchd.http("PATCH", f"/api/v3/sandbox/{sb.id}", body={"stop_at_ms": now + 1000})
        assert r.status == 200 and r.json()["stop_at_ms"] >= got, r
        hutchd.http("DELETE", f"/api/v3/sandbox/{sb.id}")
