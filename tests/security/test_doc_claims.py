# Claims of docs/security.md, each tried from inside a sandbox: the writable
# layer's setuid/nodev rules, the TIOCSTI/TIOCLINUX and i386-ABI seccomp
# rules, the /proc masks and read-only paths, and the parent cgroup's caps.
# Each test has a positive control (the same probe doing what is allowed),
# so a refusal is shown to be hutch's and not a broken probe.
import errno
import json
import os
import subprocess
import tempfile

import pytest

from hutchlib import SANDBOX_UID_MIN, CGROUP_ROOT, cgroup_dirs_for_sandbox, sandbox_cgroup_pids, wait_until


def show(r):
    return f"exit {r['code']} signal {r['signal']}\nstdout: {r['stdout'][-2000:]!r}\nstderr: {r['stderr'][-2000:]!r}"


def lines(r):
    assert r["code"] == 0, show(r)
    return r["stdout"].decode().splitlines()


def py(sandbox, code, *args, sudo=False):
    """python3 -c CODE ARGS... in the sandbox, as app or as sandbox root."""
    cmd = ["python3", "-c", code, *args]
    if sudo:
        cmd = ["sudo"] + cmd
    return sandbox.run(cmd[0], cmd[1:])


# ---------------------------------------------------------------- setuid, nodev

def test_setuid_copy_in_the_writable_layer_yields_sandbox_root_only(hutchd, sandbox):
    """The overlay root is not nosuid (the image's sudo needs it): a setuid
    binary sandbox root copies there does run as euid 0 — of the sandbox's
    user namespace, which is a host uid >= 1e9, never host root."""
    r = sandbox.sh("sh -c 'cp /usr/bin/id /usr/local/bin/sid && cp /bin/sleep /usr/local/bin/ssleep"
                   " && chmod 4755 /usr/local/bin/sid /usr/local/bin/ssleep'", sudo=True)
    assert r["code"] == 0, show(r)
    # positive control: setuid takes effect on the writable layer
    assert lines(sandbox.sh("/usr/local/bin/sid -u; /usr/local/bin/sid -ru")) == ["0", "1000"]
    sandbox.sh("/usr/local/bin/ssleep 120 >/dev/null 2>&1 &")

    def sleeper():
        for pid in sandbox_cgroup_pids(hutchd.cgroup_name, sandbox.id):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "ssleep":
                        return pid
            except OSError:
                pass
        return None
    pid = wait_until(sleeper, 10)
    assert pid, "the setuid sleep is not in the sandbox's cgroup"
    with open(f"/proc/{pid}/status") as f:
        uids = next(ln for ln in f if ln.startswith("Uid:")).split()[1:]
    real, eff = int(uids[0]), int(uids[1])
    assert eff >= SANDBOX_UID_MIN and real == eff + 1000, uids  # sandbox root / app, as host ids
    sandbox.sh("kill $(pgrep -x ssleep)", sudo=True)


# Mounts that must carry device nodes (the bound host nodes, devpts, the
# /dev/null binds that mask /proc files): every other mount is nodev.
DEVICE_MOUNTS = {"/dev", "/dev/pts", "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                 "/dev/tty", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                 "/proc/latency_stats", "/proc/timer_stats"}


def test_nodev_everywhere_nosuid_everywhere_but_the_root(sandbox):
    mounts = {}
    for ln in lines(sandbox.sh("cat /proc/self/mountinfo")):
        f = ln.split()
        mounts[f[4]] = set(f[5].split(","))
    assert "/" in mounts and "/proc" in mounts and "/dev/shm" in mounts, mounts
    assert "nodev" in mounts["/"] and "nosuid" not in mounts["/"], mounts["/"]
    bad_dev = sorted(m for m, o in mounts.items() if m not in DEVICE_MOUNTS and "nodev" not in o)
    bad_suid = sorted(m for m, o in mounts.items() if m != "/" and "nosuid" not in o)
    assert not bad_dev, f"mounts without nodev: {bad_dev}"
    assert not bad_suid, f"mounts without nosuid: {bad_suid}"


MKNOD = r'''
import errno, os, stat, sys
for d in sys.argv[1:]:
    p = os.path.join(d, "hx-node")
    try:
        os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        print(d, "chr", "made"); os.unlink(p)
    except OSError as e:
        print(d, "chr", errno.errorcode[e.errno])
    try:
        os.mknod(p, stat.S_IFIFO | 0o600)
        print(d, "fifo", "made"); os.unlink(p)
    except OSError as e:
        print(d, "fifo", errno.errorcode[e.errno])
'''


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_device_nodes_cannot_be_made_anywhere(sandbox, sudo):
    """mknod of a character device is EACCES (Landlock's refusal, before the
    missing CAP_MKNOD's EPERM) in every writable place; a FIFO, made by the
    same call in the same places, works."""
    dirs = ["/tmp", "/home/app", "/dev/shm"] + (["/dev", "/"] if sudo else [])
    r = sandbox.run("sudo" if sudo else "python3",
                    (["python3"] if sudo else []) + ["-c", MKNOD] + dirs)
    got = {tuple(ln.split()[:2]): ln.split()[2] for ln in lines(r)}
    for d in dirs:
        assert got[(d, "fifo")] == "made", (d, got)
        assert got[(d, "chr")] == "EACCES", (d, got)


# ---------------------------------------------------------------- tty ioctls

TTY = r'''
import errno, fcntl, os, struct, termios
TIOCLINUX = 0x541C
m, s = os.openpty()
pid = os.fork()
if pid == 0:
    os.setsid()
    fcntl.ioctl(s, termios.TIOCSCTTY, 0)   # our controlling tty: TIOCSTI's own checks pass
    out = []
    for name, req, arg in (("TIOCSTI", termios.TIOCSTI, b"x"), ("TIOCLINUX", TIOCLINUX, b"\x0b"),
                           ("TIOCGWINSZ", termios.TIOCGWINSZ, b"\0" * 8)):
        try:
            fcntl.ioctl(s, req, arg)
            out.append(name + "=ok")
        except OSError as e:
            out.append(name + "=" + errno.errorcode[e.errno])
    print(" ".join(out), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
'''


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_tiocsti_and_tioclinux_refused_a_harmless_ioctl_works(sandbox, sudo):
    """On the caller's own controlling tty TIOCSTI would succeed
    (dev.tty.legacy_tiocsti=1) or fail with EIO (=0), TIOCLINUX on a pty is
    ENOTTY: EPERM for both is the seccomp filter's answer. TIOCGWINSZ on the
    same fd works."""
    r = py(sandbox, TTY, sudo=sudo)
    assert lines(r) == ["TIOCSTI=EPERM TIOCLINUX=EPERM TIOCGWINSZ=ok"], r


# ---------------------------------------------------------------- i386 ABI

PROBE32 = r'''
#include <stdio.h>
#include <unistd.h>
/* int $0x80 from a 64-bit program: the kernel takes the i386 ABI, with the
 * i386 syscall numbers. Arguments here are integers (no pointers above 4G). */
static long sys32(long nr, long a, long b, long c)
{
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}
int main(void)
{
    printf("getpid %ld %ld\n", sys32(20, 0, 0, 0), (long)getpid());  /* allowed */
    printf("unshare %ld\n", sys32(310, 0x10000000, 0, 0));            /* CLONE_NEWUSER */
    printf("keyctl %ld\n", sys32(288, 0, 0, 0));
    printf("bpf %ld\n", sys32(357, 0, 0, 0));
    printf("io_uring_setup %ld\n", sys32(425, 1, 0, 0));
    printf("ptrace %ld\n", sys32(26, 0, 0, 0));                      /* PTRACE_TRACEME */
    return 0;
}
'''


@pytest.fixture(scope="module")
def probe32():
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "p.c"), os.path.join(d, "p")
        with open(src, "w") as f:
            f.write(PROBE32)
        r = subprocess.run(["gcc", "-static", "-O2", "-o", exe, src], capture_output=True, text=True)
        assert r.returncode == 0, f"gcc: {r.stderr}"
        with open(exe, "rb") as f:
            yield f.read()


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_i386_syscalls_are_filtered_too(sandbox, probe32, sudo):
    """Refused calls made through int $0x80 get the filter's EPERM (without
    the i386 rules unshare(CLONE_NEWUSER) and ptrace(TRACEME) succeed,
    keyctl/io_uring_setup say EINVAL/EFAULT, and a filter without the
    architecture kills the probe); getpid through the same gate works."""
    r = sandbox.run("bash", ["-c", "cat > /home/app/probe32 && chmod 755 /home/app/probe32"], stdin=probe32)
    assert r["code"] == 0, r
    r = sandbox.run("sudo" if sudo else "/home/app/probe32", ["/home/app/probe32"] if sudo else [])
    assert r["code"] == 0 and r["signal"] is None, r
    got = {ln.split()[0]: ln.split()[1:] for ln in lines(r)}
    assert got["getpid"][0] == got["getpid"][1] and int(got["getpid"][0]) > 0, got
    eperm = str(-errno.EPERM)
    for call in ("unshare", "keyctl", "bpf", "io_uring_setup", "ptrace"):
        assert got[call] == [eperm], (call, got)


# ---------------------------------------------------------------- /proc

MASKED_FILES = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats",
                "/proc/timer_stats"]
MASKED_DIRS = ["/proc/acpi", "/proc/scsi", "/proc/asound"]
READ_ONLY = ["/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq"]

PROC = r'''
import errno, json, os, stat, sys
files, dirs, ro = json.loads(sys.argv[1])
out = {}
def err(e): return errno.errorcode[e.errno]
for p in files:
    try:
        st = os.stat(p)
        with open(p, "rb") as f:
            data = f.read(4096)
        out[p] = ["chr %d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)) if stat.S_ISCHR(st.st_mode) else "file",
                  len(data)]
    except OSError as e:
        out[p] = [err(e)]
for p in dirs:
    try:
        out[p] = ["dir", len(os.listdir(p))]
    except OSError as e:
        out[p] = [err(e)]
        continue
    try:
        os.mkdir(os.path.join(p, "x"))
        out[p].append("mkdir ok")
    except OSError as e:
        out[p].append(err(e))
for p in ro + ["/proc/version"]:  # not /proc/uptime: an lxcfs view (read-only) now
    # chmod asks the mount for write access before the owner check, so a
    # read-only mount answers EROFS where a writable one says EPERM.
    target = p
    if p == "/proc/sys":
        target = "/proc/sys/kernel/hostname"   # and one file below it
    try:
        os.chmod(target, os.stat(target).st_mode & 0o7777)
        out[p] = [target, "chmod ok"]
    except OSError as e:
        out[p] = [target, err(e)]
print(json.dumps(out))
'''


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_proc_masked_and_read_only_paths_as_docker(sandbox, sudo):
    r = py(sandbox, PROC, json.dumps([MASKED_FILES, MASKED_DIRS, READ_ONLY]), sudo=sudo)
    got = json.loads(lines(r)[-1])
    for p in MASKED_FILES:
        if os.path.exists(p):   # the host's /proc: the same kernel
            assert got[p] == ["chr 1:3", 0], (p, got[p])       # /dev/null bound over it: reads empty
        else:
            assert got[p] == ["ENOENT"], (p, got[p])
    for p in MASKED_DIRS:
        if os.path.exists(p):
            assert got[p] == ["dir", 0, "EROFS"], (p, got[p])  # an empty read-only tmpfs
        else:
            assert got[p] == ["ENOENT"], (p, got[p])
    for p in READ_ONLY:
        assert got[p][1] == ("EROFS" if os.path.exists(p) else "ENOENT"), (p, got[p])
    assert got["/proc/version"][1] == "EPERM", got  # control: a writable /proc mount says EPERM


# ---------------------------------------------------------------- parent caps

def _cg_file(cgroup_name, v2_name, v1_ctrl, v1_name):
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return os.path.join(CGROUP_ROOT, cgroup_name, v2_name)
    return os.path.join(CGROUP_ROOT, v1_ctrl, cgroup_name, v1_name)


def test_parent_cgroup_caps_half_pid_max_and_80_percent_of_ram(hutchd, sandbox):
    """The parent cgroup of every sandbox: pids half of pid_max, memory
    80 % of MemTotal (the kernel keeps whole pages). The sandbox itself sits below it."""
    assert cgroup_dirs_for_sandbox(hutchd.cgroup_name, sandbox.id)
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    with open("/proc/meminfo") as f:
        mem_kib = int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1])
    with open(_cg_file(hutchd.cgroup_name, "pids.max", "pids", "pids.max")) as f:
        assert f.read().strip() == str(pid_max // 2)
    page = os.sysconf("SC_PAGE_SIZE")
    want = mem_kib * 1024 // 10 * 8 // page * page
    with open(_cg_file(hutchd.cgroup_name, "memory.max", "memory", "memory.limit_in_bytes")) as f:
        assert int(f.read()) == want, want
