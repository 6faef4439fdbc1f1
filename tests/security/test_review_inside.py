# Security review: hostile code inside a sandbox (as app and as root through
# sudo) against what other sandboxes, the shared image and the host own:
# image layers, /dev/shm and /tmp, chroot games, the writable layer's size.
import hashlib
import os
import time

import pytest

from hutchlib import Hutchd  # noqa: F401  (fixtures come from conftest)

IMAGE = os.path.join(os.environ.get("HUTCH_IMAGE_CACHE", "/var/cache/hutch/images"), "debian-13", "rootfs")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_root_cannot_change_the_shared_image(hutchd):
    """Root in sandbox A rewrites files of the image: only A's writable layer
    changes; sandbox B and the host's image cache see the original."""
    host_before = {p: sha(os.path.join(IMAGE, p)) for p in ("etc/passwd", "usr/bin/env")
                   if os.path.exists(os.path.join(IMAGE, p))}
    a = hutchd.create_sandbox()
    b = hutchd.create_sandbox()
    try:
        r = a.sh("sh -c 'echo pwned:x:0:0::/:/bin/sh >> /etc/passwd && "
                 "printf x > /usr/bin/env && chmod 4755 /usr/bin/env && echo done'", sudo=True)
        assert r["stdout"] == b"done\n", r
        r = b.sh("grep -c pwned /etc/passwd; head -c 4 /usr/bin/env | od -c | head -1; stat -c %a /usr/bin/env")
        out = r["stdout"].decode()
        assert out.startswith("0\n"), out
        assert "E   L   F" in out, out
        assert out.strip().endswith("755") and "4755" not in out, out
    finally:
        a.ws.close()
        b.ws.close()
    for p, h in host_before.items():
        assert sha(os.path.join(IMAGE, p)) == h, f"host image file {p} changed"


@pytest.mark.parametrize("where", ["/dev/shm", "/tmp", "/var/tmp", "/run"])
def test_scratch_dirs_not_shared_between_sandboxes(hutchd, where):
    a = hutchd.create_sandbox()
    b = hutchd.create_sandbox()
    try:
        marker = f"review-{os.getpid()}-{time.monotonic_ns()}"
        a.sh(f"sh -c 'echo secret > {where}/{marker}'", sudo=True)
        assert a.sh(f"cat {where}/{marker}", sudo=True)["stdout"] == b"secret\n"
        r = b.sh(f"ls -a {where}; cat {where}/{marker}", sudo=True)
        assert marker.encode() not in r["stdout"], r
    finally:
        a.ws.close()
        b.ws.close()


def test_chroot_escape_stays_in_the_sandbox(sandbox):
    """CAP_SYS_CHROOT is in the bounding set: the classic chroot break-out
    must land on the sandbox's own pivoted root, never the host's."""
    script = ("import os; os.makedirs('/jail', exist_ok=True); os.chroot('/jail');"
              "[os.chdir('..') for _ in range(64)]; os.chroot('.');"
              "print(sorted(os.listdir('/'))); print(os.path.exists('/jail'));"
              "print(any(os.path.exists(p) for p in ('/work', '/var/cache/hutch', '/run/netns', '/var/lib/hutch')))")
    r = sandbox.run("sudo", ["python3", "-c", script])
    lines = r["stdout"].decode().splitlines()
    assert r["code"] == 0, r
    assert lines[1] == "True", lines       # still the sandbox root (it has /jail)
    assert lines[2] == "False", lines      # no host directories visible


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_init_root_cwd_and_fds_unreachable(sandbox, sudo):
    r = sandbox.sh("ls /proc/1/root/ /proc/1/cwd/ /proc/1/fd/ /proc/1/map_files/ 2>/dev/null | wc -l", sudo=sudo)
    assert r["stdout"].strip() == b"0", r


def test_mountinfo_leaks_no_host_paths(hutchd, sandbox):
    r = sandbox.sh("cat /proc/self/mountinfo")
    text = r["stdout"].decode()
    for bad in (hutchd.state_dir, hutchd.tmp, "/var/lib/hutch", "/var/cache/hutch", "/work/"):
        assert bad not in text, f"{bad} visible in the sandbox's mountinfo:\n{text}"


DISK_MB = 64


def test_filling_the_disk_does_not_kill_the_sandbox(make_hutchd):
    """The writable layer is a disk of its own (--disk): filling it is ENOSPC
    for the writer, and the sandbox, its agent and hutchd live on."""
    d = make_hutchd(extra_args=["--disk", str(DISK_MB), "--warm", "0"])
    # no network: the module's hutchd in this netns holds the proxy's ports
    sb = d.create_sandbox({"memory_mb": 768, "allow_net": []})
    try:
        # control: the layer has the size asked for, and a small write fits
        r = sb.sh("df -m --output=size /home/app | tail -1; head -c 8M /dev/zero > /home/app/small && echo wrote")
        size, wrote = r["stdout"].decode().split()
        assert DISK_MB // 2 < int(size) <= DISK_MB and wrote == "wrote", r
        r = sb.sh(f"head -c {DISK_MB * 4}M /dev/zero > /home/app/fill; echo rc=$?; stat -c %s /home/app/fill")
        o = (r["stdout"] + r["stderr"]).decode()
        assert "rc=1" in o and "No space left on device" in o, o
        assert int(r["stdout"].split()[-1]) < DISK_MB << 20, o
        assert sb.sh("echo alive")["stdout"] == b"alive\n"
    finally:
        sb.ws.close()
    assert d.http("GET", "/healthz", token=None).status == 200


def test_memory_hog_is_oom_and_daemon_responsive(hutchd):
    sb = hutchd.create_sandbox({"memory_mb": 768})
    try:
        t0 = time.monotonic()
        r = sb.run("python3", ["-c", "b=[]\nwhile True: b.append(bytearray(64<<20))"], timeout=120)
        assert r["signal"] == "SIGKILL", r
        assert r["oom"], r
        assert time.monotonic() - t0 < 60
        assert hutchd.http("GET", "/healthz", token=None, timeout=5).status == 200
        assert sb.sh("echo alive")["stdout"] == b"alive\n"
    finally:
        sb.ws.close()
