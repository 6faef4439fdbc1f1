# hutchd restarts (clean SIGTERM and crash SIGKILL): tokens survive; sandboxes
# that were running are either re-adopted (still usable) or cleaned up
# completely (listed as stopped, no processes, no cgroups, no mounts).
import json
import os
import time

import pytest

from hutchlib import (cgroup_dirs_for_sandbox, cli_token_create, mounts_mentioning,
                      pid_alive, sandbox_cgroup_pids, wait_until)


def now_ms():
    return int(time.time() * 1000)


def check_after_restart(d, sid, old_pids, marker=True):
    """sid was a running duration sandbox before the restart."""
    status = d.sandbox_status(sid)
    assert status in ("running", "stopped"), (status, d.list_sandboxes())
    if status == "running":
        # re-adopted: it must really work, with its files intact
        with d.connect_sandbox(sid) as sb:
            r = sb.sh("cat /tmp/keep")
            assert r["code"] == 0 and r["stdout"] == b"kept\n", r
        r = d.http("DELETE", f"/api/v3/sandbox/{sid}")
        assert r.status < 300, r
        assert wait_until(lambda: d.sandbox_status(sid) == "stopped", 10)
    # stopped (either way now): nothing of it may remain
    assert wait_until(lambda: not cgroup_dirs_for_sandbox(d.cgroup_name, sid), 10), \
        cgroup_dirs_for_sandbox(d.cgroup_name, sid)
    assert wait_until(lambda: not [p for p in old_pids if pid_alive(p)], 10), \
        [p for p in old_pids if pid_alive(p)]
    assert not [m for m in mounts_mentioning(d.state_dir) if sid in m]
    return status


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart(make_hutchd, how):
    d = make_hutchd(tag=f"rs-{how}")
    admin = d.token
    user_token, _ = cli_token_create(d, f"restart-{how}")
    assert d.http("GET", "/api/v2/sandboxes", token=user_token).status == 200

    sb = d.create_sandbox({"stop_at_ms": now_ms() + 600000, "labels": {"t": how}})
    sid = sb.id
    r = sb.sh("echo kept > /tmp/keep; sleep 1000 >/dev/null 2>&1 &")
    assert r["code"] == 0, r
    sb.ws.close()
    session = d.create_sandbox()
    session_id = session.id
    old_pids = sandbox_cgroup_pids(d.cgroup_name, sid)
    session_pids = sandbox_cgroup_pids(d.cgroup_name, session_id)
    assert old_pids and session_pids, "sandbox cgroups have no processes (cgroup layout changed?)"

    if how == "sigterm":
        rc = d.terminate()
        assert rc == 0, f"hutchd exited {rc} on SIGTERM:\n" + d.log_tail()
        # a clean shutdown ends every session sandbox
        assert wait_until(lambda: not [p for p in session_pids if pid_alive(p)], 10)
    else:
        d.kill_hard()
    session.ws.sock.close()
    d.start()

    # tokens survive
    assert d.token == admin
    assert d.http("GET", "/api/v2/sandboxes", token=user_token).status == 200
    assert d.http("GET", "/api/v2/sandboxes", token="ddo_bogus").status == 401
    # the session sandbox is gone for good
    assert wait_until(lambda: d.sandbox_status(session_id) == "stopped", 10), d.list_sandboxes()
    assert wait_until(lambda: not [p for p in session_pids if pid_alive(p)], 10)
    assert wait_until(lambda: not cgroup_dirs_for_sandbox(d.cgroup_name, session_id), 10)
    check_after_restart(d, sid, old_pids)
    # and the restarted daemon works
    with d.create_sandbox() as fresh:
        assert fresh.sh("echo ok")["stdout"] == b"ok\n"


def test_revoked_token_stays_revoked_across_restart(make_hutchd):
    d = make_hutchd(tag="rs-revoke")
    tok, _ = cli_token_create(d, "to-revoke")
    listing = d.cli("token", "list", "--json", check=True).stdout
    assert tok not in listing, "token list must not print secrets"
    tid = [t["id"] for t in json.loads(listing) if t.get("name") == "to-revoke"]
    assert len(tid) == 1, listing
    assert d.http("GET", "/api/v2/sandboxes", token=tok).status == 200
    d.cli("token", "revoke", tid[0], check=True)
    assert d.http("GET", "/api/v2/sandboxes", token=tok).status == 401
    d.restart()
    assert d.http("GET", "/api/v2/sandboxes", token=tok).status == 401
    assert d.http("GET", "/api/v2/sandboxes").status == 200


def test_without_live_restore_hutchd_death_still_ends_sandboxes(make_hutchd):
    """The default (no --live-restore) is unchanged: no agent socket is made,
    and a sandbox's init ends with hutchd's socket (test_live_restore.py
    covers the other way)."""
    d = make_hutchd(tag="rs-nolive")
    sb = d.create_sandbox({"stop_at_ms": now_ms() + 600000})
    pids = sandbox_cgroup_pids(d.cgroup_name, sb.id)
    assert pids
    assert not os.path.exists(os.path.join(d.state_dir, "sandboxes", sb.id, "agent.sock"))
    d.kill_hard()
    assert wait_until(lambda: not [p for p in pids if pid_alive(p)], 10), [p for p in pids if pid_alive(p)]
    sb.ws.sock.close()
    d.start()
    assert wait_until(lambda: d.sandbox_status(sb.id) == "stopped", 10)
    assert wait_until(lambda: not cgroup_dirs_for_sandbox(d.cgroup_name, sb.id), 10)
