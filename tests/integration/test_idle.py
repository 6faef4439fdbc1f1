"""A client that vanishes without closing its connection (no FIN: a dead
laptop, a dropped NAT entry) must not hold a session sandbox forever; a
client that pings, as the SDK and the CLI do every 2 s, keeps it."""
import time

from hutchlib import wait_until


def status_of(d, sid):
    for sb in d.list_sandboxes():
        if sb["id"] == sid:
            return sb["status"]
    return None


def test_a_silent_client_is_dropped_and_its_session_sandbox_stops(make_hutchd):
    d = make_hutchd(extra_args=["--ws-idle-timeout", "1500"])
    sb = d.create_sandbox()
    assert sb.call("envGet", {"key": "HOME"}) == "/home/app"
    sid = sb.id
    # silent from now on: no frames, no FIN
    assert wait_until(lambda: status_of(d, sid) == "stopped", 10), d.log_tail(20)
    sb.ws.sock.close()


def test_a_pinging_client_keeps_its_sandbox(make_hutchd):
    d = make_hutchd(extra_args=["--ws-idle-timeout", "1500"])
    sb = d.create_sandbox()
    end = time.monotonic() + 4
    while time.monotonic() < end:
        sb.ws.send_text("ping")
        time.sleep(0.5)
    assert status_of(d, sb.id) == "running"
    assert sb.call("envGet", {"key": "HOME"}) == "/home/app"
    sb.ws.close()
