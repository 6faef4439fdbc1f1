# Issue 14.1: one tenant filling its writable layer must not fill the file
# system under every layer and hutchd's database. The state dir lives on a
# small tmpfs the test mounts (and always unmounts), so "the host's disk" is
# 600 MiB that the test can watch fill.
import contextlib
import os
import subprocess

import pytest

from hutchlib import HandshakeError, Hutchd, cli_token_create, wait_until

FS_MB = 600
DISK_MB = 400


def fs_free_mb(path):
    v = os.statvfs(path)
    return v.f_bavail * v.f_frsize >> 20


@pytest.fixture
def small_fs_hutchd():
    d = Hutchd(tag="diskfull", extra_args=["--disk", str(DISK_MB), "--warm", "0"])
    fs = os.path.join(d.tmp, "fs")
    os.makedirs(fs)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_MB}m,mode=0700", "tmpfs", fs], check=True)
    try:
        d.state_dir = os.path.join(fs, "state")  # database, admin token and layers' images
        os.makedirs(d.state_dir)
        d.fs = fs
        d.start()
        try:
            yield d
        finally:
            d.stop()
    finally:
        subprocess.run(["umount", fs], check=False)


def fill(sb, path, mb):
    """dd of random bytes inside the sandbox: (exit status, stderr)."""
    r = sb.sh(f"dd if=/dev/urandom of={path} bs=1M count={mb} conv=fsync status=none; echo rc=$?", timeout=120)
    return r["stdout"].decode(), r["stderr"].decode()


def test_second_layer_that_would_overfill_the_disk_is_refused(small_fs_hutchd):
    d = small_fs_hutchd
    log = d._log_text()
    assert f"sandbox disks in {d.state_dir}/sandboxes" in log and "64 MiB kept free" in log, d.log_tail()
    a = d.create_sandbox()
    try:
        # A really writes 340 MiB (of the 373 its 400 MiB ext4 layer holds) into its layer: the host file system holds them.
        before = fs_free_mb(d.fs)
        out, err = fill(a, "/home/app/fill", 340)
        assert "rc=0" in out, (out, err)
        assert before - fs_free_mb(d.fs) >= 330, (before, fs_free_mb(d.fs))
        # B would be promised 400 MiB that the file system no longer has: refused, by hutch, with a reason.
        with pytest.raises(HandshakeError) as ei:
            d.create_sandbox()
        assert ei.value.status == 507, ei.value
        body = ei.value.json()
        assert body["code"] == "INSUFFICIENT_STORAGE", body
        assert "promised 400 MiB (--disk)" in body["message"] and "--disk-reserve" in body["message"], body
        # A fills its own layer: ENOSPC inside A, and the host file system keeps its reserve.
        out, err = fill(a, "/home/app/more", 200)
        assert "rc=0" not in out and "No space left on device" in err, (out, err)
        assert fs_free_mb(d.fs) >= 64 - 8, fs_free_mb(d.fs)
        assert a.sh("echo alive")["stdout"] == b"alive\n"
        # Every API call still works, for the owner and for everyone else.
        assert d.http("GET", "/healthz", token=None).status == 200
        assert d.http("GET", "/api/v2/sandboxes").status == 200
    finally:
        a.ws.close()
    # Positive control: once A is gone its space is back, and B gets its layer.
    assert wait_until(lambda: fs_free_mb(d.fs) >= FS_MB - 100, 30), fs_free_mb(d.fs)
    b = d.create_sandbox()
    try:
        out, err = fill(b, "/home/app/fill", 100)
        assert "rc=0" in out, (out, err)
    finally:
        b.ws.close()


def test_token_check_survives_a_full_state_disk(small_fs_hutchd):
    """A full file system under the database: reads go on, and the token
    check's bookkeeping write (last use) fails without refusing the token."""
    d = small_fs_hutchd
    tok, _ = cli_token_create(d, "fresh")  # never used: its first use writes last_used_ms
    filler = os.path.join(d.fs, "filler")
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
    try:
        assert fs_free_mb(d.fs) == 0
        # The failure is real: the database cannot take a write now.
        r = d.cli("token", "create", "--name", "cannot-store")
        assert r.returncode != 0 and "full" in r.stderr, r
        got = d.http("GET", "/api/v2/sandboxes", token=tok)
        assert got.status == 200, got
        assert wait_until(lambda: "last use not recorded" in d._log_text(), 5), d.log_tail()
        # Positive control: a wrong token is still refused (the check still checks).
        bad = d.http("GET", "/api/v2/sandboxes", token="ddo_" + "x" * 40)
        assert bad.status == 401, bad
    finally:
        os.unlink(filler)
