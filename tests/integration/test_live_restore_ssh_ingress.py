# Live restore of what a sandbox exposes (issue 11.1, docs/restore.md,
# docs/ssh.md, docs/expose.md): after a kill -9 of hutchd, `ssh` with the
# login name given before works again (the same name: it is the credential
# the user holds), and an exposure whose ingress port another program took
# while hutchd was away lives on at a new port, logged, and kept there. A
# module of its own: its hutchd must not share the harness's network
# namespace with another module's daemon.
import contextlib
import os
import re
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from expose_util import Ingress, expose, start_server  # noqa: E402
from hutchlib import Hutchd, free_port, sandbox_cgroup_pids, wait_until  # noqa: E402
from test_live_restore import assert_gone, log_after, now_ms  # noqa: E402
from test_ssh import expose_ssh, ssh  # noqa: E402

WAIT_S = "60"


@pytest.fixture(scope="module")
def d():
    if os.geteuid() != 0:
        pytest.fail("live restore tests need root")
    h = Hutchd(tag="lrssh", extra_args=["--live-restore", WAIT_S, "--warm", "0", "--ssh-port", str(free_port())]).start()
    yield h
    h.stop()


def close(sb):
    with contextlib.suppress(OSError):
        sb.ws.sock.close()


def refused_login(r):
    return r.returncode == 255 and b"Permission denied" in r.stderr


def test_ssh_login_name_given_before_a_restart_works_after_it(d, tmp_path):
    s = d.create_sandbox({"stop_at_ms": now_ms() + 600000})
    info = expose_ssh(d, s)
    r = ssh(tmp_path, info, "echo $((6*7)) > /tmp/from-ssh; exit 3")
    assert r.returncode == 3, (r.returncode, r.stderr, d.log_tail(50))  # positive control
    pids = sandbox_cgroup_pids(d.cgroup_name, s.id)
    kill_and_settle(d)
    close(s)
    # no hutchd: nobody answers on the SSH port
    assert ssh(tmp_path, info, "true", timeout=30).returncode == 255
    mark = len(d._log_text())
    d.start()
    log = log_after(d, mark)
    assert f"{s.id}: SSH login restored" in log, log[-3000:]
    assert wait_until(lambda: f"{s.id} re-adopted" in log_after(d, mark), 10), log_after(d, mark)[-3000:]
    # the same name, the same host key (the old known_hosts entry still matches), the same sandbox
    r = ssh(tmp_path, info, "cat /tmp/from-ssh; exit 4")
    assert r.returncode == 4 and r.stdout == b"42\n", (r.returncode, r.stdout, r.stderr, d.log_tail(50))
    again = expose_ssh(d, s)
    assert (again["username"], again["hostKey"], again["port"]) == (info["username"], info["hostKey"], info["port"])
    # hutch's own refusal for a name it does not know (and its log line)
    wrong = ssh(tmp_path, info, "true", user="a" * 26)
    assert refused_login(wrong), (wrong.returncode, wrong.stderr)
    assert 'unknown user "aaaa' in log_after(d, mark), log_after(d, mark)[-2000:]
    # the name ends with its sandbox
    assert d.http("DELETE", f"/api/v3/sandbox/{s.id}").status < 300
    assert_gone(d, s.id, pids)
    gone = ssh(tmp_path, info, "true")
    assert refused_login(gone), (gone.returncode, gone.stderr)


def kill_and_settle(d):
    """kill -9, then wait until nothing answers on its API port any more
    (Hutchd.start() takes an answer there for the new hutchd's)."""
    d.kill_hard()
    assert wait_until(lambda: not d._port_answers(), 20), "something still answers on the dead hutchd's port"


def bind_when_free(host, port, timeout=20):
    """The old hutch-ingress lets go of its port when it sees hutchd gone."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(4)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_exposure_whose_ingress_port_was_taken_moves_to_a_new_port_and_stays_there(d):
    s = d.create_sandbox({"stop_at_ms": now_ms() + 600000})
    start_server(s, 8000, "moved")
    url = expose(d, s, 8000)
    assert Ingress(d).get(url, "/")[2] == b"hello from moved\n"  # positive control
    host, port, _ = Ingress.split(url)
    pids = sandbox_cgroup_pids(d.cgroup_name, s.id)
    kill_and_settle(d)
    close(s)
    squat = bind_when_free(host, port)
    try:
        mark = len(d._log_text())
        d.start()
        log = log_after(d, mark)
        m = re.search(rf"{s.id}: exposure moved from ingress port {port} \(taken meanwhile\) to port (\d+)", log)
        assert m, log[-3000:]
        new = int(m.group(1))
        assert new != port
        moved = url.replace(f":{port}/", f":{new}/")
        st, _, body = Ingress(d).get(moved, "/")
        assert (st, body) == (200, b"hello from moved\n"), (st, body)
        # the old port is still the other program's: what connects there reaches it, not hutch
        with socket.create_connection((host, port), timeout=5):
            c, _ = squat.accept()
            c.close()
        # the move was kept: the next restart restores it at its new port, without moving it again
        kill_and_settle(d)
        mark = len(d._log_text())
        d.start()
        log = log_after(d, mark)
        assert "exposure moved" not in log and f"{s.id}: 1 exposures restored" in log, log[-3000:]
        st, _, body = Ingress(d).get(moved, "/")
        assert (st, body) == (200, b"hello from moved\n"), (st, body)
    finally:
        squat.close()
    assert d.http("DELETE", f"/api/v3/sandbox/{s.id}").status < 300
    assert_gone(d, s.id, pids)
