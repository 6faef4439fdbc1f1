# Refusals of issue 9 that test_volumes.py does not cover (docs/storage.md):
# bad volume configs on create, a writable root in use, and a volume made
# from a snapshot, which may grow (resize2fs) but never shrink below it.
import pytest

from hutchlib import HandshakeError, Hutchd, wait_until


@pytest.fixture(scope="module")
def d():
    h = Hutchd(tag="volref", extra_args=["--storage-size", "2GiB", "--disk", "256"]).start()
    yield h
    h.stop()


def ok(r, status=200):
    assert r.status == status, (r.status, r.body)
    return r.json()


def vcreate(d, slug, capacity="32MiB", **kw):
    return ok(d.http("POST", "/api/v2/volumes", body={"slug": slug, "region": "ord", "capacity": capacity, **kw},
                     timeout=120))


def refused(d, cfg):
    with pytest.raises(HandshakeError) as ei:
        sb = d.create_sandbox(cfg)
        sb.ws.close()  # not reached when refused
    return ei.value.status, ei.value.json()["code"], ei.value.json()["message"]


def run_ok(sb, script):
    r = sb.sh(script)
    assert r["code"] == 0, r
    return r["stdout"].decode()


def test_bad_volume_configs_are_refused_with_the_reason(d):
    vcreate(d, "ref-a")
    vcreate(d, "ref-b")
    vcreate(d, "ref-boot", capacity="700MiB", **{"from": "builtin:debian-13"})
    ok(d.http("POST", "/api/v2/volumes/ref-b/snapshot", body={"slug": "ref-b-snap"}))
    V = lambda name, path: {"volume": name, "path": path}  # noqa: E731
    cases = [
        ({"volumes": [V("ref-a", "/data"), V("ref-a", "/data2")]}, 400, "INVALID_VOLUMES", "given twice"),
        ({"volumes": [V("ref-a", "/data"), V("ref-b", "/data/inner")]}, 400, "INVALID_VOLUMES", "overlap"),
        ({"volumes": [V("ref-a", "/proc/x")]}, 400, "INVALID_VOLUMES", "/proc"),
        ({"volumes": [V("ref-a", "data")]}, 400, "INVALID_VOLUMES", "absolute"),
        ({"volumes": [V("ref-a", f"/d{i}") for i in range(9)]}, 400, "INVALID_VOLUMES", "at most 8"),
        # a snapshot is never mounted read-write: it is not a volume
        ({"volumes": [V("ref-b-snap", "/data")]}, 404, "VOLUME_NOT_FOUND", "ref-b-snap"),
        ({"volumes": [V("no-such-vol", "/data")]}, 404, "VOLUME_NOT_FOUND", "no-such-vol"),
        ({"root": {"volume": "no-such-vol"}}, 404, "VOLUME_NOT_FOUND", "no-such-vol"),
        ({"root": {"volume": "ref-a"}}, 400, "INVALID_ROOT", "not bootable"),
        # one file system mounted read-write twice in one sandbox would corrupt it
        ({"root": {"volume": "ref-boot"}, "volumes": [V("ref-boot", "/data")]}, 400, "INVALID_ROOT",
         "both the root and mounted"),
    ]
    for cfg, status, code, words in cases:
        got = refused(d, cfg)
        assert got[:2] == (status, code) and words in got[2], (cfg, got)
    # positive control: each piece alone is fine, and nothing of the refusals holds a volume
    sb = d.create_sandbox({"volumes": [V("ref-a", "/data"), V("ref-b", "/data2")]})
    assert run_ok(sb, "findmnt -no FSTYPE /data; findmnt -no FSTYPE /data2").split() == ["ext4", "ext4"]
    sb.ws.close()
    sb = wait_until(lambda: _try_create(d, {"root": {"volume": "ref-boot"}}), 20)
    assert sb, "the bootable volume was not free"
    assert run_ok(sb, "findmnt -no FSTYPE /") == "ext4\n"
    sb.ws.close()


def _try_create(d, cfg):
    try:
        return d.create_sandbox(cfg)
    except HandshakeError as e:
        if e.status == 409:
            return None
        raise


def test_a_writable_root_in_use_is_not_deleted_snapshotted_or_attached_twice(d):
    vcreate(d, "ref-root", capacity="700MiB", **{"from": "builtin:debian-13"})
    sb = d.create_sandbox({"root": {"volume": "ref-root"}})
    run_ok(sb, "echo mine | sudo tee /etc/ref-root >/dev/null")
    r = d.http("DELETE", "/api/v2/volumes/ref-root")
    assert (r.status, r.json()["code"]) == (409, "VOLUME_IN_USE") and sb.id in r.json()["message"], r
    r = d.http("POST", "/api/v2/volumes/ref-root/snapshot", body={"slug": "ref-root-s"})
    assert (r.status, r.json()["code"]) == (409, "VOLUME_IN_USE") and sb.id in r.json()["message"], r
    for cfg in ({"root": {"volume": "ref-root"}}, {"volumes": [{"volume": "ref-root", "path": "/data"}]}):
        status, code, msg = refused(d, cfg)
        assert (status, code) == (409, "VOLUME_IN_USE") and sb.id in msg, (cfg, msg)
    assert d.http("GET", "/api/v2/snapshots/ref-root-s").status == 404
    sb.ws.close()
    # once the sandbox stopped, the same calls go through (positive control)
    snap = wait_until(lambda: (r := d.http("POST", "/api/v2/volumes/ref-root/snapshot",
                                           body={"slug": "ref-root-s"})).status == 200 and r.json(), 20)
    assert snap and snap["is_bootable"] is True
    sb = d.create_sandbox({"root": {"volume": "ref-root-s"}})
    assert run_ok(sb, "cat /etc/ref-root") == "mine\n"
    sb.ws.close()
    assert wait_until(lambda: d.http("DELETE", "/api/v2/snapshots/ref-root-s").status == 200, 20)
    ok(d.http("DELETE", "/api/v2/volumes/ref-root"))


def test_a_volume_from_a_snapshot_grows_but_never_shrinks_below_it(d):
    vcreate(d, "ref-src", capacity="64MiB")
    sb = d.create_sandbox({"volumes": [{"volume": "ref-src", "path": "/data"}]})
    run_ok(sb, "echo seed > /data/seed && sync")
    sb.ws.close()
    snap = wait_until(lambda: (r := d.http("POST", "/api/v2/volumes/ref-src/snapshot",
                                           body={"slug": "ref-src-s"})).status == 200 and r.json(), 20)
    assert snap
    r = d.http("POST", "/api/v2/volumes", body={"slug": "ref-small", "region": "ord", "capacity": "32MiB",
                                                "from": "ref-src-s"})
    assert (r.status, r.json()["code"]) == (400, "INVALID_CAPACITY") and "at least the snapshot" in r.json()["message"]
    assert d.http("GET", "/api/v2/volumes/ref-small").status == 404
    big = vcreate(d, "ref-big", capacity="160MiB", **{"from": "ref-src-s"})
    assert big["capacity"] == 160 << 20 and big["base_snapshot"]["slug"] == "ref-src-s"
    sb = d.create_sandbox({"volumes": [{"volume": "ref-big", "path": "/data"}]})
    # the file system really grew: more than the snapshot's 64 MiB fits, and the seed is there
    out = run_ok(sb, "cat /data/seed; df -B1M --output=size /data | tail -1; "
                     "head -c 100M /dev/zero > /data/fill && sync && echo filled")
    seed, size, filled = out.split()
    assert seed == "seed" and 140 <= int(size) <= 160 and filled == "filled", out
    sb.ws.close()
    wait_until(lambda: d.http("DELETE", "/api/v2/volumes/ref-big").status == 200, 20)
    ok(d.http("DELETE", "/api/v2/snapshots/ref-src-s"))
