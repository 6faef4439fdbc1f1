# The `hutch` CLI's volume and snapshot verbs against a real hutchd
# (docs/cli.md, docs/storage.md): create/ls/rm/snapshot, every page of a
# listing, `hutch create --volume/--root`, exit codes and the server's reasons.
import json
import re

import pytest

from hutchlib import Hutchd, SANDBOX_ID_RE, wait_until

VOL_RE = re.compile(r"^vol_[a-z]{3}_[0-9a-hjkmnp-z]{20}$")
SNP_RE = re.compile(r"^snp_[a-z]{3}_[0-9a-hjkmnp-z]{20}$")


@pytest.fixture(scope="module")
def d():
    h = Hutchd(tag="clivol", extra_args=["--storage-size", "3GiB", "--regions", "ord,loc", "--disk", "256"]).start()
    yield h
    h.stop()


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def fails(r, code, *words):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", r.stdout
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    return r.stderr


def rest_slugs(d, kind):
    r = d.http("GET", f"/api/v2/{kind}s?limit=1000")
    assert r.status == 200, r
    return sorted(v["slug"] for v in r.json())


def test_volume_create_ls_rm_and_the_servers_reasons(d):
    vid = ok(d.cli("volume", "create", "cli-a", "--capacity", "32MiB")).strip()
    assert VOL_RE.match(vid) and vid.startswith("vol_loc_"), vid  # default region
    v = json.loads(ok(d.cli("volume", "create", "cli-b", "--capacity", "48MiB", "--region", "ord", "--json")))
    assert v["slug"] == "cli-b" and v["region"] == "ord" and v["capacity"] == 48 << 20 and v["is_bootable"] is False
    assert rest_slugs(d, "volume") == ["cli-a", "cli-b"]  # what the CLI made is what the API holds
    table = ok(d.cli("volume", "ls")).splitlines()
    assert table[0].split()[:3] == ["ID", "SLUG", "REGION"], table
    row = [ln for ln in table if vid in ln]
    assert row and row[0].split()[1:5] == ["cli-a", "loc", "32", "MiB"], table
    listed = json.loads(ok(d.cli("volume", "ls", "--json", "--search", "cli-b")))
    assert [x["id"] for x in listed] == [v["id"]]
    assert json.loads(ok(d.cli("volume", "ls", "--json", "--search", "nothing-like-it"))) == []
    # the server's refusals: exit 1 and its message
    fails(d.cli("volume", "create", "cli-a", "--capacity", "32MiB"), 1, "hutch: volume create cli-a:", "cli-a")
    assert "already used" in d.cli("volume", "create", "cli-a", "--capacity", "32MiB").stderr
    fails(d.cli("volume", "create", "Bad_Slug", "--capacity", "32MiB"), 1, "slug")
    fails(d.cli("volume", "create", "cli-c", "--capacity", "32MiB", "--region", "fra"), 1, "fra", "ord,loc")
    fails(d.cli("volume", "create", "cli-c", "--capacity", "1MiB"), 1, "capacity")
    fails(d.cli("volume", "create", "cli-c", "--capacity", "32MiB", "--from", "no-such-snap"), 1, "no-such-snap")
    # bad usage: exit 2, nothing sent (the volume does not appear)
    fails(d.cli("volume", "create", "cli-c"), 2, "--capacity is required")
    fails(d.cli("volume", "create", "cli-c", "--capacity", "lots"), 2, "invalid capacity 'lots'")
    fails(d.cli("volume", "create", "--capacity", "1GiB"), 2, "missing SLUG")
    fails(d.cli("volume", "frob"), 2, "unknown verb 'frob'")
    fails(d.cli("volume", "rm", "a/../b"), 2, "invalid volume id or slug")
    assert rest_slugs(d, "volume") == ["cli-a", "cli-b"]
    # rm by id and by slug; a second rm is the server's 404
    ok(d.cli("volume", "rm", vid, "cli-b"))
    assert rest_slugs(d, "volume") == []
    fails(d.cli("volume", "rm", "cli-a"), 1, "hutch: volume rm cli-a:", "cli-a")
    fails(d.cli("volume", "ls", token="ddo_not-a-token"), 1, "invalid")


def test_volume_ls_follows_every_link_next_page(d):
    # the server's page is 100 (docs/storage.md): 103 volumes come in two pages
    made = []
    for i in range(103):
        made.append(ok(d.cli("volume", "create", f"pg-{i:03d}", "--capacity", "16MiB")).strip())
    try:
        r = d.http("GET", "/api/v2/volumes?search=pg-")
        assert len(r.json()) == 100 and 'rel="next"' in r.headers.get("link", ""), r.headers  # control: paged
        listed = json.loads(ok(d.cli("volume", "ls", "--json", "--search", "pg-")))
        assert [v["id"] for v in listed] == made
        assert len([ln for ln in ok(d.cli("volume", "ls")).splitlines() if " pg-" in ln]) == 103
    finally:
        for i in range(0, len(made), 50):
            ok(d.cli("volume", "rm", *made[i:i + 50]))
    assert rest_slugs(d, "volume") == []


def sandbox_stopped(d, sid):
    return wait_until(lambda: d.sandbox_status(sid) in ("stopped", None), 30)


def test_create_with_volume_root_and_snapshot_verbs(d):
    ok(d.cli("volume", "create", "cli-data", "--capacity", "32MiB"))
    sid = json.loads(ok(d.cli("create", "--timeout", "3m", "--volume", "cli-data:/data", "--json")))["id"]
    assert SANDBOX_ID_RE.match(sid)
    assert ok(d.cli("sh", sid, "echo kept > /data/f && findmnt -no FSTYPE /data")) == "ext4\n"
    # one running sandbox per volume; a volume in use is neither deleted nor snapshotted
    fails(d.cli("create", "--timeout", "1m", "--volume", "cli-data:/data"), 1, "attached to running sandbox", sid)
    fails(d.cli("volume", "rm", "cli-data"), 1, "in use by running sandbox " + sid)
    fails(d.cli("volume", "snapshot", "cli-data", "cli-data-s"), 1, "stop it first")
    ok(d.cli("kill", sid))
    assert sandbox_stopped(d, sid)
    sid2 = wait_until(lambda: (r := d.cli("create", "--timeout", "3m", "--volume", "cli-data:/srv/d")).returncode == 0
                      and r.stdout.strip(), 20)
    assert sid2, "the volume was not free again after its sandbox stopped"
    assert ok(d.cli("sh", sid2, "cat /srv/d/f")) == "kept\n"
    ok(d.cli("kill", sid2))
    fails(d.cli("create", "--volume", "cli-data"), 2, "VOLUME:/PATH")
    fails(d.cli("create", "--root", "x/y"), 2, "--root")

    # a bootable volume from the image, as a persistent root
    boot = json.loads(ok(d.cli("volume", "create", "cli-boot", "--capacity", "700MiB", "--from", "builtin:debian-13",
                               "--json", timeout=180)))
    assert boot["is_bootable"] is True
    sid = ok(d.cli("create", "--timeout", "3m", "--root", "cli-boot")).strip()
    ok(d.cli("sh", sid, "echo baked | sudo tee /etc/cli-marker >/dev/null"))
    ok(d.cli("kill", sid))
    assert sandbox_stopped(d, sid)
    snap_id = wait_until(lambda: (r := d.cli("volume", "snapshot", "cli-boot", "cli-snap")).returncode == 0
                         and r.stdout.strip(), 20)
    assert snap_id and SNP_RE.match(snap_id), snap_id
    snaps = json.loads(ok(d.cli("snapshot", "ls", "--json")))
    assert [(s["id"], s["slug"], s["is_bootable"], s["volume"]["slug"]) for s in snaps] == \
        [(snap_id, "cli-snap", True, "cli-boot")]
    assert "cli-snap" in ok(d.cli("snapshot", "ls", "--search", "cli-s"))
    # boot from the snapshot: the baked file is there, the root is read-only underneath
    sid = ok(d.cli("create", "--timeout", "3m", "--root", "cli-snap")).strip()
    assert ok(d.cli("sh", sid, "cat /etc/cli-marker")) == "baked\n"
    fails(d.cli("snapshot", "rm", "cli-snap"), 1, "in use by running sandbox " + sid)
    # a volume made from the snapshot keeps it too
    ok(d.cli("volume", "create", "cli-from-snap", "--capacity", "700MiB", "--from", "cli-snap", timeout=120))
    ok(d.cli("kill", sid))
    assert sandbox_stopped(d, sid)
    err = fails(d.cli("snapshot", "rm", "cli-snap"), 1, "hutch: snapshot rm cli-snap:", "base of 1 volume")
    ok(d.cli("volume", "rm", "cli-from-snap"))
    assert wait_until(lambda: d.cli("snapshot", "rm", "cli-snap").returncode == 0, 20), err
    assert json.loads(ok(d.cli("snapshot", "ls", "--json"))) == []
    fails(d.cli("snapshot", "rm", "cli-snap"), 1, "cli-snap")
    fails(d.cli("snapshot", "create", "x"), 2, "hutch volume snapshot")
    ok(d.cli("volume", "rm", "cli-boot", "cli-data"))
    assert rest_slugs(d, "volume") == [] and rest_slugs(d, "snapshot") == []
