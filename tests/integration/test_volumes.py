# Volumes and snapshots (issue 9, docs/storage.md): the REST API as SDK
# 0.13.2 uses it, volumes mounted in sandboxes, capacity as a hard limit,
# persistence across restarts and kill -9, snapshots as read-only roots.
import os
import re
import subprocess
import time

import pytest

from hutchlib import HandshakeError, wait_until, loops_backed_by

ID_RE = re.compile(r"^(vol|snp)_[a-z]{3}_[0-9a-hjkmnp-z]{20}$")
POOL = ["--storage-size", "2GiB"]


def vcreate(d, slug, capacity="64MiB", region="ord", **kw):
    return d.http("POST", "/api/v2/volumes", body={"slug": slug, "region": region, "capacity": capacity, **kw},
                  timeout=120)


def ok(r, status=200):
    assert r.status == status, (r.status, r.body)
    return r.json()


def err(r, status, code):
    assert r.status == status, (r.status, r.body)
    assert r.json()["code"] == code, r.body
    return r.json()["message"]


def run_ok(sb, script, sudo=False):
    r = sb.sh(script, sudo=sudo)
    assert r["code"] == 0, r
    return r["stdout"].decode()


@pytest.fixture(scope="module")
def vd(request):
    from hutchlib import Hutchd
    d = Hutchd(tag="volumes", extra_args=POOL + ["--regions", "ord,ams,loc", "--max-sandboxes", "30", "--disk", "256"]).start()
    yield d
    d.stop()


def test_volume_fields_get_and_slug_namespace(vd):
    v = ok(vcreate(vd, "fields-a", capacity=64 << 20))
    assert ID_RE.match(v["id"]) and v["id"].startswith("vol_ord_"), v
    assert v["slug"] == "fields-a" and v["region"] == "ord" and v["capacity"] == 64 << 20
    assert v["is_bootable"] is False and v["base_snapshot"] is None
    assert isinstance(v["estimated_allocated_size"], int) and isinstance(v["estimated_flattened_size"], int)
    assert 0 < v["estimated_flattened_size"] <= v["capacity"]
    s = ok(vcreate(vd, "fields-b", capacity="1.5GiB".replace("1.5GiB", "96MiB")))
    assert s["capacity"] == 96 << 20
    assert ok(vd.http("GET", f"/api/v2/volumes/{v['id']}")) == ok(vd.http("GET", "/api/v2/volumes/fields-a"))
    err(vd.http("GET", "/api/v2/volumes/nope-nope"), 404, "VOLUME_NOT_FOUND")
    # one namespace: a snapshot cannot take a volume's slug, nor a volume a snapshot's
    snap = ok(vd.http("POST", "/api/v2/volumes/fields-a/snapshot", body={"slug": "fields-snap"}))
    assert ID_RE.match(snap["id"]) and snap["id"].startswith("snp_ord_")
    assert snap["volume"] == {"id": v["id"], "slug": "fields-a"} and snap["is_bootable"] is False
    assert "allocated_size" in snap and "flattened_size" in snap
    m = err(vd.http("POST", "/api/v2/volumes/fields-b/snapshot", body={"slug": "fields-a"}), 409, "SLUG_TAKEN")
    assert "fields-a" in m
    err(vcreate(vd, "fields-snap"), 409, "SLUG_TAKEN")
    err(vcreate(vd, "fields-b"), 409, "SLUG_TAKEN")
    ok(vd.http("GET", "/api/v2/snapshots/fields-snap"))
    err(vd.http("GET", "/api/v2/volumes/fields-snap"), 404, "VOLUME_NOT_FOUND")  # kinds stay apart
    # a volume from the snapshot records its base
    c = ok(vcreate(vd, "fields-c", capacity=64 << 20, **{"from": "fields-snap"}))
    assert c["base_snapshot"] == {"id": snap["id"], "slug": "fields-snap"}
    m = err(vd.http("DELETE", "/api/v2/snapshots/fields-snap"), 409, "SNAPSHOT_IN_USE")
    assert "fields-c" in m or "1 volume" in m
    for path in ("/api/v2/volumes/fields-c", "/api/v2/snapshots/fields-snap", "/api/v2/volumes/fields-a",
                 "/api/v2/volumes/fields-b"):
        ok(vd.http("DELETE", path))
        assert vd.http("GET", path).status == 404


@pytest.mark.parametrize("slug", ["a", "x" * 33, "Abc", "ab_c", "-abc", "abc-", "ab--cd", "ab c", "é-vol", ""])
def test_bad_slugs_are_refused(vd, slug):
    err(vcreate(vd, slug), 400, "INVALID_SLUG")


def test_good_slugs_are_accepted_at_the_edges(vd):
    for slug in ("ab", "x" * 32, "a-b-c", "abc--d", "0a9"):
        v = ok(vcreate(vd, slug, capacity="16MiB"))
        ok(vd.http("DELETE", f"/api/v2/volumes/{v['id']}"))


def test_region_and_capacity_refusals(vd):
    m = err(vcreate(vd, "reg-x", region="fra"), 400, "INVALID_REGION")
    assert "fra" in m and "ord,ams,loc" in m
    ok(vd.http("DELETE", "/api/v2/volumes/" + ok(vcreate(vd, "reg-ams", region="ams", capacity="16MiB"))["id"]))
    err(vcreate(vd, "cap-small", capacity="1MiB"), 400, "INVALID_CAPACITY")
    err(vcreate(vd, "cap-big", capacity="3GiB"), 400, "INVALID_CAPACITY")  # over --volume-max (the pool)
    err(vcreate(vd, "cap-bad", capacity="12 parsecs"), 400, "INVALID_CAPACITY")
    err(vcreate(vd, "cap-neg", capacity=-5), 400, "INVALID_CAPACITY")
    # the pool promise: capacities must fit in the pool together
    a = ok(vcreate(vd, "cap-a", capacity="1200MiB"))
    m = err(vcreate(vd, "cap-b", capacity="1200MiB"), 507, "INSUFFICIENT_STORAGE")
    assert "promised" in m
    ok(vd.http("DELETE", f"/api/v2/volumes/{a['id']}"))
    b = ok(vcreate(vd, "cap-b", capacity="1200MiB"))  # fits once the first is gone
    ok(vd.http("DELETE", f"/api/v2/volumes/{b['id']}"))


def test_list_pages_with_link_next_and_search(vd):
    made = [ok(vcreate(vd, f"page-{i}", capacity="16MiB"))["id"] for i in range(5)]
    seen, url, pages = [], "/api/v2/volumes?limit=2&search=page-", 0
    while url and pages < 10:
        r = vd.http("GET", url)
        items = ok(r)
        assert len(items) <= 2
        seen += [v["id"] for v in items]
        link = r.headers.get("link")
        pages += 1
        url = None
        if link:
            mt = re.match(r'<(http://[^>]+)>; rel="next"', link)
            assert mt, link
            url = mt.group(1).split("127.0.0.1:%d" % vd.port, 1)[-1]
    assert seen == made and pages == 3
    assert [v["slug"] for v in ok(vd.http("GET", "/api/v2/volumes?search=page-3"))] == ["page-3"]
    assert ok(vd.http("GET", "/api/v2/volumes?search=nothing-like-it")) == []
    for i in made:
        ok(vd.http("DELETE", f"/api/v2/volumes/{i}"))


def test_file_on_a_volume_outlives_its_sandbox_and_a_restart(vd):
    d = vd
    ok(vcreate(d, "keep", capacity="64MiB"))
    cfg = {"volumes": [{"volume": "keep", "path": "/data"}]}
    sb = d.create_sandbox(cfg)
    out = run_ok(sb, "stat -c '%U %a' /data && echo hello > /data/f && sync && cat /data/f && findmnt -no FSTYPE /data")
    assert out.split() == ["app", "755", "hello", "ext4"], out
    # one running sandbox per volume
    with pytest.raises(HandshakeError) as ei:
        d.create_sandbox(cfg)
    assert ei.value.status == 409 and "attached to running sandbox" in ei.value.body.decode()
    m = err(d.http("DELETE", "/api/v2/volumes/keep"), 409, "VOLUME_IN_USE")
    assert "running sandbox sbx_" in m
    m = err(d.http("POST", "/api/v2/volumes/keep/snapshot", body={"slug": "keep-s"}), 409, "VOLUME_IN_USE")
    sb.ws.close()
    # the next sandbox (as soon as the first stopped) reads it
    sb2 = d.create_sandbox(cfg)
    assert run_ok(sb2, "cat /data/f") == "hello\n"
    sb2.ws.close()
    d.restart()
    sb3 = d.create_sandbox(cfg)
    assert run_ok(sb3, "cat /data/f; echo more >> /data/f") == "hello\n"
    sb3.ws.close()
    v = ok(d.http("GET", "/api/v2/volumes/keep"))
    assert v["estimated_flattened_size"] > 0


def test_capacity_is_enospc_inside_and_the_host_is_untouched(vd):
    d = vd
    ok(vcreate(d, "small", capacity="32MiB"))
    pool = os.path.join(d.state_dir, "storage", "pool.img")
    before = os.stat(pool)
    sb = d.create_sandbox({"volumes": [{"volume": "small", "path": "/data"}]})
    # positive control: a file smaller than the capacity fits
    run_ok(sb, "head -c 8M /dev/zero > /data/ok && sync")
    r = sb.sh("head -c 64M /dev/urandom > /data/big; echo rc=$?; sync")
    assert "No space left on device" in r["stderr"].decode(), r
    assert "rc=1" in r["stdout"].decode()
    used = int(run_ok(sb, "du -sm /data | cut -f1"))
    assert used <= 32
    # the sandbox's own disk still has room: only the volume is full
    run_ok(sb, "head -c 8M /dev/zero > /tmp/x")
    sb.ws.close()
    after = os.stat(pool)
    assert after.st_size == before.st_size and after.st_blocks == before.st_blocks  # preallocated, never grows


def fsck_volume_offline(d, vol_id):
    """e2fsck -fn of a volume image, the pool mounted read-only in a private
    mount namespace (nothing of it outlives the command)."""
    pool = os.path.join(d.state_dir, "storage", "pool.img")
    script = (f"set -e; dev=$(losetup -r -f --show {pool}); trap 'losetup -d $dev' EXIT; "
              f"mkdir -p /tmp/hutch-fsck-$$; mount -t xfs -o ro,norecovery,nouuid $dev /tmp/hutch-fsck-$$; "
              f"e2fsck -fn /tmp/hutch-fsck-$$/images/{vol_id}.img; rc=$?; umount /tmp/hutch-fsck-$$; "
              f"rmdir /tmp/hutch-fsck-$$; exit $rc")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


def test_kill_9_mid_write_keeps_fsynced_data_and_a_clean_fs(vd):
    d = vd
    v = ok(vcreate(d, "crash", capacity="128MiB"))
    sb = d.create_sandbox({"volumes": [{"volume": "crash", "path": "/data"}], "stop_at_ms": int(time.time() * 1000) + 600000})
    run_ok(sb, "python3 -c \"import os; f=open('/data/durable','w'); f.write('x'*100000); f.flush(); os.fsync(f.fileno())\"")
    sb.run("bash", ["-c", "nohup sh -c 'i=0; while true; do head -c 1M /dev/urandom > /data/churn.$((i%20)); i=$((i+1)); done' >/dev/null 2>&1 &"])
    time.sleep(1)
    d.kill_hard()
    # everything of the dead hutchd goes by itself: its sandbox, the loop devices, the pool
    assert wait_until(lambda: not loops_backed_by(d.state_dir), 20), loops_backed_by(d.state_dir)
    r = fsck_volume_offline(d, v["id"])
    assert r.returncode == 0, r.stdout + r.stderr
    d.start()
    sb2 = d.create_sandbox({"volumes": [{"volume": "crash", "path": "/data"}]})
    assert run_ok(sb2, "wc -c < /data/durable").strip() == "100000"
    sb2.ws.close()


def test_snapshot_root_boots_many_sandboxes_each_with_its_own_writes(vd):
    d = vd
    boot = ok(vcreate(d, "boot", capacity="700MiB", **{"from": "builtin:debian-13"}))
    assert boot["is_bootable"] is True
    # a bootable volume as a writable root: changes persist
    sb = d.create_sandbox({"root": {"volume": "boot"}})
    run_ok(sb, "echo baked | sudo tee /etc/hutch-marker >/dev/null && id -un && sudo id -un")
    sb.ws.close()
    t0 = time.monotonic()
    snap = ok(d.http("POST", "/api/v2/volumes/boot/snapshot", body={"slug": "boot-snap"}))
    took = time.monotonic() - t0
    print(f"snapshot of a bootable volume: {took:.3f} s")
    assert snap["is_bootable"] is True and snap["flattened_size"] > 100 << 20
    # a non-bootable volume cannot be a root
    ok(vcreate(d, "plain", capacity="16MiB"))
    with pytest.raises(HandshakeError) as ei:
        d.create_sandbox({"root": {"volume": "plain"}})
    assert ei.value.status == 400 and "not bootable" in ei.value.body.decode()
    n = 20
    sbs = [d.create_sandbox({"root": {"volume": "boot-snap"}}) for _ in range(n)]
    for i, s in enumerate(sbs):
        run_ok(s, f"echo {i} > /home/app/mine && sudo sh -c 'echo {i} > /etc/hutch-marker.{i}'")
    for i, s in enumerate(sbs):
        out = run_ok(s, "cat /etc/hutch-marker /home/app/mine; ls /etc | grep -c hutch-marker")
        assert out.split() == ["baked", str(i), "2"], (i, out)
        r = s.sh("touch /should-fail", sudo=False)
        assert r["code"] != 0
    m = err(d.http("DELETE", "/api/v2/snapshots/boot-snap"), 409, "VOLUME_IN_USE")
    assert "running sandbox" in m
    for s in sbs:
        s.ws.close()
    # the snapshot never changed
    s = d.create_sandbox({"root": {"volume": "boot-snap"}})
    assert run_ok(s, "ls /etc | grep -c hutch-marker; test ! -e /home/app/mine && echo clean").split() == ["1", "clean"]
    s.ws.close()
    assert wait_until(lambda: d.http("DELETE", "/api/v2/snapshots/boot-snap").status == 200, 20)


def test_mounting_volumes_leaves_hutchds_own_fds_alone(vd):
    """Regression: a sandbox with volumes and no root closed hutchd's fd 0
    once they were mounted; the next file hutchd opened became fd 0, and a
    child's /dev/null stdin silently replaced it (mkfs.ext4 then saw a
    zero-sized "device")."""
    d = vd
    std = [os.readlink(f"/proc/{d.pid}/fd/{n}") for n in (0, 1, 2)]
    assert std[0] == "/dev/null", std  # control: what the harness gave it
    ok(vcreate(d, "fdcheck", capacity="32MiB"))
    sb = d.create_sandbox({"volumes": [{"volume": "fdcheck", "path": "/data"}]})
    try:
        run_ok(sb, "echo x > /data/x && cat /data/x")
    finally:
        sb.ws.close()
    assert [os.readlink(f"/proc/{d.pid}/fd/{n}") for n in (0, 1, 2)] == std
