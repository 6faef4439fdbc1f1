# Live restore of sandboxes with volumes (issue 11.1, docs/restore.md,
# docs/storage.md): a sandbox with a volume, a snapshot root or a bootable
# volume as its root outlives hutchd (kill -9, SIGTERM) and is adopted with
# its volumes held again: a second sandbox asking for a held volume is
# refused exactly as before the restart (never attached twice), what was
# written before is read after, the snapshot's shared loop device and mount
# are the same ones after the restart, and once the sandbox stops each volume
# is free again for a new sandbox. A kept record whose loop device no longer
# holds the volume is not believed. The census of stop() stays on.
import contextlib
import os
import sqlite3
import sys
import json
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hutchlib import HandshakeError, Hutchd, pid_alive, sandbox_cgroup_pids, wait_until  # noqa: E402
from test_live_restore import assert_gone, init_pid, log_after, now_ms  # noqa: E402
from test_snapshot_share import loops_of_image  # noqa: E402

WAIT_S = "60"


@pytest.fixture(scope="module")
def d():
    if os.geteuid() != 0:
        pytest.fail("live restore tests need root")
    h = Hutchd(tag="lrvol", extra_args=["--live-restore", WAIT_S, "--warm", "0", "--storage-size", "2GiB",
                                        "--max-sandboxes", "12", "--disk", "256"]).start()
    yield h
    h.stop()


def ok(r, status=200):
    assert r.status == status, (r.status, r.body)
    return r.json()


def refused(d, cfg):
    """The create handshake's refusal: (status, code, message)."""
    with pytest.raises(HandshakeError) as ei:
        d.create_sandbox(cfg)
    body = json.loads(ei.value.body)
    return ei.value.status, body.get("code"), body.get("message")


def run_ok(sb, script, sudo=False):
    r = sb.sh(script, sudo=sudo)
    assert r["code"] == 0, r
    return r["stdout"].decode()


def close(sb):
    with contextlib.suppress(OSError):
        sb.ws.sock.close()


def restart(d, how):
    if how == "sigkill":
        d.kill_hard()
    else:
        assert d.terminate() == 0, d.log_tail()
    mark = len(d._log_text())
    t0 = time.monotonic()
    d.start()
    print(f"restart after {how}: hutchd listening {time.monotonic() - t0:.2f} s after its start")
    return mark


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_sandbox_with_a_volume_is_readopted_and_the_volume_is_never_attached_twice(d, how):
    slug = f"lr-{how}"
    vol = ok(d.http("POST", "/api/v2/volumes", body={"slug": slug, "region": "loc", "capacity": "64MiB"}))
    cfg = {"volumes": [{"volume": slug, "path": "/data"}]}
    a = d.create_sandbox({**cfg, "stop_at_ms": now_ms() + 600000})
    run_ok(a, "echo before > /data/f && sync")
    # a writer on the volume through the gap
    a.call("spawn", {"command": "bash", "args": ["-c", "while :; do date +%s%N >> /data/ticks; sync; sleep 0.1; done"],
                     "stdout": "null", "stderr": "null"})
    pid1 = init_pid(d, a.id)
    pids = sandbox_cgroup_pids(d.cgroup_name, a.id)
    loops = loops_of_image(vol["id"])
    assert len(loops) == 1, loops  # positive control: the probe sees the volume's loop device
    # before the restart: a second sandbox asking for it is refused, naming the holder
    before = refused(d, cfg)
    assert before[:2] == (409, "VOLUME_IN_USE") and a.id in before[2], before
    del_before = d.http("DELETE", f"/api/v2/volumes/{slug}")
    assert (del_before.status, del_before.json()["code"]) == (409, "VOLUME_IN_USE"), del_before.body

    mark = restart(d, how)
    close(a)
    log = log_after(d, mark)
    assert f"{a.id} re-adopted" in log, log[-3000:]
    assert "cannot be taken back" not in log, log[-3000:]
    # the pool is the previous one's file system, not a second mount of its image
    assert "mounted the previous hutchd's pool again" in log, log[-3000:]
    assert d.sandbox_status(a.id) == "running"
    assert pid_alive(pid1) and init_pid(d, a.id) == pid1
    assert loops_of_image(vol["id"]) == loops, "the volume's loop device changed"
    # exactly the refusal of before: the same status, code and message
    assert refused(d, cfg) == before
    r = d.http("DELETE", f"/api/v2/volumes/{slug}")
    assert (r.status, r.json()) == (del_before.status, del_before.json()), r.body
    r = d.http("POST", f"/api/v2/volumes/{slug}/snapshot", body={"slug": f"{slug}-s"})
    assert (r.status, r.json()["code"]) == (409, "VOLUME_IN_USE"), r.body
    with d.connect_sandbox(a.id) as c:
        assert run_ok(c, "cat /data/f") == "before\n"
        n0 = int(run_ok(c, "wc -l < /data/ticks"))
        assert wait_until(lambda: int(run_ok(c, "wc -l < /data/ticks")) > n0 + 3, 20), "the writer stopped"
        run_ok(c, "echo after >> /data/f && sync")
    # stopped: the volume is free for the next sandbox, with everything written
    assert d.http("DELETE", f"/api/v3/sandbox/{a.id}").status < 300
    assert_gone(d, a.id, pids)
    assert wait_until(lambda: not loops_of_image(vol["id"]), 20), loops_of_image(vol["id"])
    b = d.create_sandbox(cfg)
    try:
        assert run_ok(b, "cat /data/f; wc -l < /data/ticks | tr -d ' '").split()[:2] == ["before", "after"]
        run_ok(b, "echo b > /data/b && sync")
    finally:
        b.ws.close()
    assert wait_until(lambda: d.http("DELETE", f"/api/v2/volumes/{slug}").status == 200, 20)


def test_snapshot_and_volume_roots_are_readopted_on_the_same_devices(d):
    boot = ok(d.http("POST", "/api/v2/volumes", body={"slug": "lr-boot", "region": "loc", "capacity": "700MiB",
                                                       "from": "builtin:debian-13"}, timeout=120))
    s = d.create_sandbox({"root": {"volume": "lr-boot"}})
    run_ok(s, "echo baked | sudo tee /etc/lr-marker >/dev/null")
    s.ws.close()
    assert wait_until(lambda: not loops_of_image(boot["id"]), 20)
    snap = ok(d.http("POST", "/api/v2/volumes/lr-boot/snapshot", body={"slug": "lr-snap"}))
    stop_at = now_ms() + 600000
    kids = [d.create_sandbox({"root": {"volume": "lr-snap"}, "stop_at_ms": stop_at}) for _ in range(2)]
    for i, k in enumerate(kids):
        run_ok(k, f"echo {i} > /home/app/mine")
    rooted = d.create_sandbox({"root": {"volume": "lr-boot"}, "stop_at_ms": stop_at})
    run_ok(rooted, "echo mine | sudo tee /etc/lr-rooted >/dev/null && sync")
    snap_loops, boot_loops = loops_of_image(snap["id"]), loops_of_image(boot["id"])
    assert len(snap_loops) == 1 and len(boot_loops) == 1, (snap_loops, boot_loops)
    before = refused(d, {"root": {"volume": "lr-boot"}})
    assert before[:2] == (409, "VOLUME_IN_USE") and rooted.id in before[2], before
    pids = {x.id: sandbox_cgroup_pids(d.cgroup_name, x.id) for x in kids + [rooted]}

    mark = restart(d, "sigkill")
    for x in kids + [rooted]:
        close(x)
    log = log_after(d, mark)
    for x in kids + [rooted]:
        assert f"{x.id} re-adopted" in log, log[-3000:]
    assert refused(d, {"root": {"volume": "lr-boot"}}) == before
    r = d.http("DELETE", "/api/v2/snapshots/lr-snap")
    assert (r.status, r.json()["code"]) == (409, "VOLUME_IN_USE"), r.body
    for i, k in enumerate(kids):
        with d.connect_sandbox(k.id) as c:
            assert run_ok(c, "cat /etc/lr-marker /home/app/mine").split() == ["baked", str(i)]
    with d.connect_sandbox(rooted.id) as c:
        assert run_ok(c, "cat /etc/lr-rooted") == "mine\n"
    # a sandbox booting the snapshot now joins the share the adopted ones are on:
    # still one read-only loop device (without the share taken back, a second)
    late = d.create_sandbox({"root": {"volume": "lr-snap"}})
    try:
        assert loops_of_image(snap["id"]) == snap_loops, (loops_of_image(snap["id"]), snap_loops)
        assert run_ok(late, "cat /etc/lr-marker; test ! -e /home/app/mine && echo clean").split() == ["baked", "clean"]
    finally:
        late.ws.close()
    for x in kids + [rooted]:
        assert d.http("DELETE", f"/api/v3/sandbox/{x.id}").status < 300
    for x in kids + [rooted]:
        assert_gone(d, x.id, pids[x.id])
    # all let go: the devices clear, the snapshot can be deleted, the volume booted again
    assert wait_until(lambda: not loops_of_image(snap["id"]) and not loops_of_image(boot["id"]), 30)
    assert wait_until(lambda: d.http("DELETE", "/api/v2/snapshots/lr-snap").status == 200, 20)
    again = d.create_sandbox({"root": {"volume": "lr-boot"}})
    try:
        assert run_ok(again, "cat /etc/lr-rooted /etc/lr-marker").split() == ["mine", "baked"]
    finally:
        again.ws.close()
    assert wait_until(lambda: d.http("DELETE", "/api/v2/volumes/lr-boot").status == 200, 20)


def test_kept_volumes_the_kernel_does_not_confirm_are_not_believed(d):
    """The row says which loop device held which volume; the kernel decides.
    One row is pointed at another real loop device (the one holding the
    honest sandbox's volume): the device is not bound to its image. Another
    claims the honest sandbox's very volume and device: both right, but not
    mounted in that sandbox. Neither is adopted; each is removed and its own
    volume freed; the honest one, untouched, is adopted with its volume
    (positive control)."""
    for slug in ("lr-dev", "lr-claim", "lr-true"):
        ok(d.http("POST", "/api/v2/volumes", body={"slug": slug, "region": "loc", "capacity": "32MiB"}))
    stop_at = now_ms() + 600000
    liars = {slug: d.create_sandbox({"volumes": [{"volume": slug, "path": "/data"}], "stop_at_ms": stop_at})
             for slug in ("lr-dev", "lr-claim")}
    honest = d.create_sandbox({"volumes": [{"volume": "lr-true", "path": "/data"}], "stop_at_ms": stop_at})
    run_ok(honest, "echo kept > /data/f && sync")
    pids = {slug: sandbox_cgroup_pids(d.cgroup_name, s.id) for slug, s in liars.items()}
    ids = {slug: d.http("GET", f"/api/v2/volumes/{slug}").json()["id"] for slug in ("lr-dev", "lr-claim")}
    true_id = d.http("GET", "/api/v2/volumes/lr-true").json()["id"]
    true_dev = "/dev/" + loops_of_image(true_id)[0]
    d.kill_hard()
    for s in [*liars.values(), honest]:
        close(s)
    db = sqlite3.connect(os.path.join(d.state_dir, "hutch.db"))
    try:
        for slug, s in liars.items():
            kept = json.loads(db.execute("SELECT restore FROM sandboxes WHERE id = ?", (s.id,)).fetchone()[0])
            assert kept["storage"]["volumes"][0]["id"] == ids[slug], kept
            kept["storage"]["volumes"][0]["dev"] = true_dev
            if slug == "lr-claim":
                kept["storage"]["volumes"][0]["id"] = true_id
            db.execute("UPDATE sandboxes SET restore = ? WHERE id = ?", (json.dumps(kept), s.id))
        db.commit()
    finally:
        db.close()
    mark = len(d._log_text())
    d.start()
    log = log_after(d, mark)
    assert f"sandbox {liars['lr-dev'].id}: its volumes cannot be taken back ({true_dev} holds another file now)" \
        in log, log[-3000:]
    assert f"sandbox {liars['lr-claim'].id}: its volumes cannot be taken back ({true_dev} ({true_id}) is not " \
           "mounted in this sandbox)" in log, log[-3000:]
    for slug, s in liars.items():
        assert_gone(d, s.id, pids[slug])
    assert f"{honest.id} re-adopted" in log, log[-3000:]
    with d.connect_sandbox(honest.id) as c:
        assert run_ok(c, "cat /data/f") == "kept\n"
    status, code, msg = refused(d, {"volumes": [{"volume": "lr-true", "path": "/data"}]})
    assert (status, code) == (409, "VOLUME_IN_USE") and honest.id in msg, msg
    # the liars' volumes are free: new sandboxes get them
    for slug in liars:
        n = d.create_sandbox({"volumes": [{"volume": slug, "path": "/data"}]})
        try:
            run_ok(n, "touch /data/x")
        finally:
            n.ws.close()
    assert d.http("DELETE", f"/api/v3/sandbox/{honest.id}").status < 300
    for slug in ("lr-dev", "lr-claim", "lr-true"):
        assert wait_until(lambda: d.http("DELETE", f"/api/v2/volumes/{slug}").status == 200, 20)
