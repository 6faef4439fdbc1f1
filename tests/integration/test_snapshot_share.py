# Booting from a snapshot shares one read-only loop device and one mount
# per snapshot (docs/storage.md, "Booting from a snapshot: one shared
# mount"): counted from the host, released after the last sandbox, and let
# go for a delete.
import os
import time

import pytest

from hutchlib import wait_until


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
def d(request):
    from hutchlib import Hutchd
    d = Hutchd(tag="snapshare", extra_args=["--storage-size", "2GiB", "--max-sandboxes", "12", "--disk", "256"]).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def shared(d):
    """A bootable volume with a marker baked in, for the snapshots here."""
    vol = ok(d.http("POST", "/api/v2/volumes", body={"slug": "shared", "region": "loc", "capacity": "700MiB",
                                                      "from": "builtin:debian-13"}, timeout=120))
    return vol


def loops_of_image(image_id):
    """Loop devices backed by one image in the pool (the pool is mounted
    detached, so the kernel names the file from the pool's root)."""
    out = []
    for dev in os.listdir("/sys/block"):
        if not dev.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{dev}/loop/backing_file") as f:
                back = f.read().strip()
        except OSError:
            continue
        if back.endswith(f"/images/{image_id}.img"):
            out.append(dev)
    return out


def test_sandboxes_booting_one_snapshot_share_one_loop_device_released_after_the_last(d, shared):
    vol = shared
    # positive control: the probe sees a pool image's loop device (a
    # bootable volume as a writable root is on one of its own)
    sb = d.create_sandbox({"root": {"volume": "shared"}})
    assert len(loops_of_image(vol["id"])) == 1, loops_of_image(vol["id"])
    run_ok(sb, "echo baked | sudo tee /etc/shared-marker >/dev/null")
    sb.ws.close()
    assert wait_until(lambda: not loops_of_image(vol["id"]), 20), loops_of_image(vol["id"])
    snap = ok(d.http("POST", "/api/v2/volumes/shared/snapshot", body={"slug": "shared-snap"}))
    assert loops_of_image(snap["id"]) == []
    sbs = [d.create_sandbox({"root": {"volume": "shared-snap"}}) for _ in range(5)]
    loops = loops_of_image(snap["id"])
    assert len(loops) == 1, loops  # five sandboxes, one loop device
    # read-only in the kernel: the device, and so the snapshot, is never written
    with open(f"/sys/block/{loops[0]}/ro") as f:
        assert f.read().strip() == "1"
    for i, s in enumerate(sbs):
        run_ok(s, f"echo {i} > /home/app/mine && sudo sh -c 'echo {i} > /etc/own-{i}'")
    for i, s in enumerate(sbs):
        out = run_ok(s, "cat /etc/shared-marker /home/app/mine; ls /etc | grep -c '^own-'; stat -c %U /home/app")
        assert out.split() == ["baked", str(i), "1", "app"], (i, out)
    for s in sbs[:4]:
        s.ws.close()
    # the fifth still holds it: the same device stays
    time.sleep(1)
    assert loops_of_image(snap["id"]) == loops
    assert run_ok(sbs[4], "cat /home/app/mine").strip() == "4"
    # a sandbox booted now joins the same device
    late = d.create_sandbox({"root": {"volume": "shared-snap"}})
    assert loops_of_image(snap["id"]) == loops
    assert run_ok(late, "cat /etc/shared-marker; test ! -e /home/app/mine && echo clean").split() == ["baked", "clean"]
    late.ws.close()
    sbs[4].ws.close()
    # released once the last one stopped (after a linger of 3 s)
    assert wait_until(lambda: not loops_of_image(snap["id"]), 30), loops_of_image(snap["id"])
    assert wait_until(lambda: d.http("DELETE", "/api/v2/snapshots/shared-snap").status == 200, 20)


def test_deleting_a_snapshot_as_its_last_sandbox_stops_succeeds_and_frees_its_loop_device(d, shared):
    snap = ok(d.http("POST", "/api/v2/volumes/shared/snapshot", body={"slug": "linger-snap"}))
    sb = d.create_sandbox({"root": {"volume": "linger-snap"}})
    assert run_ok(sb, "id -un").strip() == "app"
    # control: in use, deleting is refused, and the device is there
    err(d.http("DELETE", "/api/v2/snapshots/linger-snap"), 409, "VOLUME_IN_USE")
    assert len(loops_of_image(snap["id"])) == 1
    sb.ws.close()
    # the sandbox stops; its share would linger, and is let go for the delete

    def delete():
        r = d.http("DELETE", "/api/v2/snapshots/linger-snap")
        return r if r.status != 409 else None
    r = wait_until(delete, 20)
    assert r is not None and r.status == 200, (r and r.status, r and r.body)
    assert d.http("GET", "/api/v2/snapshots/linger-snap").status == 404
    assert wait_until(lambda: not loops_of_image(snap["id"]), 10), loops_of_image(snap["id"])
