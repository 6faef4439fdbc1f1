# Attacks from inside a sandbox that must fail (as `app` and as root via
# sudo), and host-side checks that sandboxes own nothing on the host. (That the
# daemon API is out of reach is test_net_bypass.py: it needs a listener there.)
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from hutchlib import (SANDBOX_UID_MIN, cgroup_dirs_for_sandbox,
                      pids_with_sandbox_uids, sandbox_cgroup_pids, wait_until)

# Runs inside the sandbox (and, for the control, on the host as nobody):
# tries each syscall through ctypes and prints {name: "ok" or errno name}.
# CONTROL probes are the filtered syscalls called with harmless arguments
# whose result outside the filter is known and is not EPERM (a no-op, a
# bad command number, a bad fd): the filter refuses by syscall number, so
# EPERM for these in the sandbox is the filter's, not a capability check's
# or a sysctl's (unprivileged_bpf_disabled, perf_event_paranoid,
# unprivileged_userfaultfd, dmesg_restrict would all say EPERM or EACCES
# for the attack forms). ATTACK probes are the real thing, sandbox only.
PROBE = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
FD_RESULT = {425, 323, 298, 321}  # io_uring_setup, userfaultfd, perf_event_open, bpf return fds
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    if r < 0:
        return errno.errorcode[ctypes.get_errno()]
    if nr in FD_RESULT:
        os.close(r)
    return "ok"
def s(b):
    return ctypes.addressof(ctypes.create_string_buffer(b))
buf = ctypes.addressof(ctypes.create_string_buffer(256))
attr = ctypes.create_string_buffer(128)
params = ctypes.create_string_buffer(120)
perf = ctypes.create_string_buffer(128)
ctypes.memmove(perf, (ctypes.c_uint32 * 2)(1, 128), 8)                         # PERF_TYPE_SOFTWARE, size
ctypes.memmove(ctypes.addressof(perf) + 40, (ctypes.c_uint64 * 1)((1 << 5) | (1 << 6)), 8)  # exclude_kernel|hv
res = {}
# --- control forms: outside the filter these succeed or fail otherwise than EPERM
res["mount"] = sc(165, s(b"none"), s(b"/tmp"), s(b"tmpfs"), 1 << 31, 0)        # MS_NOUSER: EINVAL/ENOENT
res["umount2"] = sc(166, s(b"/proc"), 0x80000000)                              # unknown flag: EINVAL
res["unshare"] = sc(272, 0)                                                    # a no-op: ok
res["keyctl"] = sc(250, 9999, 0, 0)                                            # unknown command: EOPNOTSUPP
res["add_key"] = sc(248, s(b""), s(b"k"), buf, 1, -3)                          # empty type: EINVAL/ENODEV
res["bpf"] = sc(321, 9999, ctypes.addressof(attr), 128)                        # unknown command: EINVAL
res["io_uring_setup"] = sc(425, 1, ctypes.addressof(params))                   # ok
res["userfaultfd"] = sc(323, 1 | os.O_CLOEXEC)                                 # UFFD_USER_MODE_ONLY: ok
res["perf_event_open"] = sc(298, ctypes.addressof(perf), 0, -1, -1, 8)         # own task, user only: ok
res["ptrace"] = sc(101, 2, os.getppid(), 0, 0)                                 # PEEKDATA of a non-tracee: ESRCH
res["syslog"] = sc(103, 10, 0, 0)                                              # SIZE_BUFFER: ok (or EPERM, dmesg_restrict)
res["setns"] = sc(308, -1, 0)                                                  # bad fd: EBADF
res["clone"] = sc(56, 0x10000000 | 0x200 | 17, 0, 0, 0, 0)                     # NEWUSER|FS: EINVAL
res["clone3"] = sc(435, 0, 0)                                                  # no args: EINVAL; the filter: ENOSYS
res["init_module"] = sc(175, buf, 0, buf)                                      # EPERM, ENOSYS if no modules
res["kexec_load"] = sc(246, 0, 0, 0, 0)                                        # EPERM, ENOSYS if no kexec
res["open_by_handle_at"] = sc(304, -1, buf, 0)                                 # bad fd: EBADF/EINVAL
if sys.argv[1:] == ["attack"]:
    res["a_mount_tmpfs"] = sc(165, s(b"none"), s(b"/tmp"), s(b"tmpfs"), 0, 0)
    res["a_umount_proc"] = sc(166, s(b"/proc"), 2)
    res["a_unshare_user"] = sc(272, 0x10000000)
    res["a_unshare_mnt"] = sc(272, 0x00020000)
    res["a_unshare_net"] = sc(272, 0x40000000)
    res["a_keyctl_session"] = sc(250, 0, -3, 1)
    ctypes.memmove(attr, (ctypes.c_uint32 * 4)(2, 4, 4, 1), 16)                # BPF_MAP_CREATE, tiny array
    res["a_bpf_map"] = sc(321, 0, ctypes.addressof(attr), 128)
    res["a_userfaultfd"] = sc(323, 0)
    res["a_ptrace_attach_1"] = sc(101, 16, 1, 0, 0)
    res["a_syslog_read"] = sc(103, 3, buf, 256)
    res["a_setns_own_mnt"] = sc(308, os.open("/proc/self/ns/mnt", os.O_RDONLY), 0)
    res["a_clone_newuser"] = sc(56, 0x10000000 | 17, 0, 0, 0, 0)
    if res["a_clone_newuser"] == "ok" and os.getpid() != int(open("/proc/self/stat").read().split()[0]):
        os._exit(0)
print(json.dumps(res))
"""

# What the filter answers (src/init/seccomp.c): EPERM, and ENOSYS for
# clone3 so that glibc falls back to clone(), whose flags it can see.
FILTER_ERRNO = {"clone3": "ENOSYS"}

# Capabilities that must never be in the bounding set (even for root inside).
FORBIDDEN_CAPS = {"CAP_SYS_ADMIN": 21, "CAP_SYS_PTRACE": 19, "CAP_SYS_MODULE": 16,
                  "CAP_SYS_RAWIO": 17, "CAP_NET_ADMIN": 12, "CAP_SYS_TIME": 25,
                  "CAP_SYS_BOOT": 22, "CAP_MAC_ADMIN": 33, "CAP_BPF": 39,
                  "CAP_PERFMON": 38, "CAP_SYSLOG": 34, "CAP_DAC_READ_SEARCH": 2,
                  "CAP_MKNOD": 27, "CAP_SYS_RESOURCE": 24, "CAP_SYS_NICE": 23}


def probe(sb, sudo):
    r = sb.run("sudo" if sudo else "python3",
               (["python3"] if sudo else []) + ["-c", PROBE, "attack"], timeout=60)
    assert r["code"] == 0, r
    return json.loads(r["stdout"])


def host_probe_as_nobody():
    """The control forms on the host, as uid/gid 65534: no filter, no privilege."""
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", py, "-c", PROBE],
                       capture_output=True, text=True, cwd="/", timeout=60)
    assert r.returncode == 0, r
    return json.loads(r.stdout)


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_dangerous_syscalls_refused(sandbox, sudo):
    res = probe(sandbox, sudo)
    wrong = {k: v for k, v in res.items() if v != FILTER_ERRNO.get(k, "EPERM")}
    assert not wrong, f"not refused by the filter's errno ({'sudo' if sudo else 'app'}): {wrong}"


def test_the_filter_is_what_refuses(sandbox):
    """Positive control: outside the filter, the control forms succeed or fail
    with another errno, so the sandbox's EPERM (ENOSYS) is the filter's."""
    host = host_probe_as_nobody()
    inside = probe(sandbox, False)
    same = {k: v for k, v in host.items() if inside[k] == v}
    # syslog: every action needs CAP_SYSLOG under dmesg_restrict=1, so there
    # (the default on Debian) the kernel says EPERM as well; nothing tells the two apart.
    with open("/proc/sys/kernel/dmesg_restrict") as f:
        if f.read().strip() != "0":
            same.pop("syslog", None)
    assert not same, f"the same result outside the filter (so the test cannot see the filter): {same}"
    assert {"unshare", "io_uring_setup", "userfaultfd"} <= {k for k, v in host.items() if v == "ok"}, host


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_only_sandbox_processes_visible(sandbox, sudo):
    r = sandbox.sh("ps -eo pid=,comm=", sudo=sudo)
    assert r["code"] == 0, r
    procs = [ln.split(None, 1) for ln in r["stdout"].decode().splitlines() if ln.strip()]
    names = {c for _, c in procs}
    assert len(procs) <= 8, procs
    assert [p for p, _ in procs if p == "1"], procs
    for host_only in ("hutchd", "systemd", "pytest", "python3 -m pytest", "sshd", "init"):
        assert host_only not in names, procs
    # the host's pid of this test runner is not reachable by number either
    r = sandbox.sh(f"test -e /proc/{os.getpid()}/environ && cat /proc/{os.getpid()}/cmdline")
    assert b"pytest" not in r["stdout"]


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_proc_masks(sandbox, sudo):
    script = ("for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/kallsyms"
              " /proc/sysrq-trigger; do if [ -e $f ]; then printf '%s ' $f; head -c 64 $f 2>/dev/null"
              " | wc -c; fi; done")
    r = sandbox.sh(script, sudo=sudo)
    readable = {}
    for ln in r["stdout"].decode().splitlines():
        path, n = ln.split()
        if int(n) > 0:
            readable[path] = int(n)
    if "/proc/kallsyms" in readable:
        # kallsyms is harmless when every address reads as zero (kptr_restrict)
        k = sandbox.sh("head -n 3 /proc/kallsyms", sudo=sudo)["stdout"].decode()
        if all(ln.startswith("0000000000000000") for ln in k.splitlines()):
            readable.pop("/proc/kallsyms")
    assert not readable, f"masked /proc files are readable: {readable}"


@pytest.mark.parametrize("path", ["/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches",
                                  "/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern"])
def test_proc_sys_read_only_even_for_root(sandbox, path):
    before = sandbox.sh(f"cat {path} 2>/dev/null")["stdout"]
    r = sandbox.sh(f"echo 1 > {path}", sudo=False)
    assert r["code"] != 0, r
    r = sandbox.sh(f"sh -c 'echo 1 > {path}'", sudo=True)
    assert r["code"] != 0, (path, r)
    assert sandbox.sh(f"cat {path} 2>/dev/null")["stdout"] == before


KERNEL_FS = ("sysfs", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs", "bpf", "configfs", "fusectl")


def test_no_sysfs_and_none_can_be_mounted(sandbox):
    """No sysfs (or cgroupfs, debugfs, ...) is mounted anywhere in a sandbox:
    /sys is the image's empty directory, so nothing under it reaches the
    kernel, and root cannot mount one (EPERM: the filter, and no CAP_SYS_ADMIN over
    the mount namespace)."""
    assert os.path.exists("/sys/kernel/mm") and os.path.exists("/sys/class/net/lo")  # control: the host's sysfs
    script = ("import json\nout = []\nfor ln in open('/proc/self/mountinfo'):\n"
              "    a, b = ln.split(' - ', 1)\n    out.append([a.split()[4], b.split()[0]])\nprint(json.dumps(out))")
    r = sandbox.run("python3", ["-c", script])
    assert r["code"] == 0, r
    mounts = json.loads(r["stdout"])
    assert ["/proc", "proc"] in mounts, mounts  # control: the parse sees real mounts
    assert not [m for m in mounts if m[1] in KERNEL_FS], mounts
    r = sandbox.sh("ls -A /sys | wc -l; stat -f -c %T /sys; mkdir -p /tmp/s; python3 -c 'import ctypes,errno\n"
                   "libc=ctypes.CDLL(None,use_errno=True)\n"
                   "r=libc.mount(b\"sysfs\",b\"/tmp/s\",b\"sysfs\",0,None);print(\"mount\",r,errno.errorcode.get(ctypes.get_errno()))'",
                   sudo=True)
    assert r["stdout"].decode().split() == ["0", "overlayfs", "mount", "-1", "EPERM"], r


def test_no_dangerous_devices(sandbox):
    r = sandbox.sh("ls /dev")
    devs = set(r["stdout"].decode().split())
    for bad in ("mem", "kmem", "port", "sda", "vda", "nvme0", "kvm", "fuse", "loop0", "dm-0"):
        assert bad not in devs, devs
    r = sandbox.sh("mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem", sudo=True)
    assert r["code"] != 0, r


def test_capability_bounding_set(sandbox):
    r = sandbox.sh("grep -E '^Cap(Bnd|Eff|Amb):' /proc/self/status", sudo=True)
    caps = {ln.split(":")[0]: int(ln.split()[1], 16) for ln in r["stdout"].decode().splitlines()}
    assert caps["CapAmb"] == 0, caps
    bad = [n for n, bit in FORBIDDEN_CAPS.items() if caps["CapBnd"] & (1 << bit)]
    assert not bad, f"forbidden capabilities in the bounding set: {bad}"
    r = sandbox.sh("grep -E '^Cap(Eff|Prm|Inh|Amb):' /proc/self/status")
    app = {ln.split(":")[0]: int(ln.split()[1], 16) for ln in r["stdout"].decode().splitlines()}
    assert all(v == 0 for v in app.values()), f"app has capabilities: {app}"


def test_agent_not_writable_or_traceable(sandbox):
    script = ("exec 3>/proc/1/exe && echo WROTE-EXE; "
              "cat /proc/1/environ >/dev/null 2>&1 && echo READ-ENVIRON; "
              "head -c 1 /proc/1/mem >/dev/null 2>&1 && echo READ-MEM; "
              "ls /proc/1/fd >/dev/null 2>&1 && echo LIST-FD; "
              "kill -9 1 && echo KILLED-1; true")
    for sudo in (False, True):
        r = sandbox.sh(script, sudo=sudo)
        out = r["stdout"].decode()
        for bad in ("WROTE-EXE", "READ-ENVIRON", "READ-MEM", "LIST-FD"):
            assert bad not in out, (sudo, out)
    # killing PID 1 from inside must not take the sandbox (or daemon) down
    assert sandbox.sh("echo alive")["stdout"] == b"alive\n"


def test_user_namespace_maps_no_host_root(sandbox):
    r = sandbox.sh("cat /proc/self/uid_map /proc/self/gid_map")
    rows = [ln.split() for ln in r["stdout"].decode().splitlines() if ln.strip()]
    assert rows, r
    for inside, outside, count in rows:
        outside, count = int(outside), int(count)
        assert outside >= SANDBOX_UID_MIN, rows
        assert count <= 65536, rows


def test_host_uids_unprivileged_and_distinct(hutchd):
    with hutchd.create_sandbox() as a, hutchd.create_sandbox() as b:
        for sb in (a, b):
            sb.sh("sleep 300 >/dev/null 2>&1 &")
            sb.sh("sudo sleep 300 >/dev/null 2>&1 &")
        uids = {}
        for sb in (a, b):
            pids = sandbox_cgroup_pids(hutchd.cgroup_name, sb.id)
            assert pids, f"no processes in the cgroups of {sb.id}"
            us = set()
            for p in pids:
                with contextlib.suppress(FileNotFoundError):
                    with open(f"/proc/{p}/status") as f:
                        for ln in f:
                            if ln.startswith(("Uid:", "Gid:")):
                                us.update(int(x) for x in ln.split()[1:])
            uids[sb.id] = us
        for sid, us in uids.items():
            assert us and min(us) >= SANDBOX_UID_MIN, (sid, sorted(us))
        ua, ub = uids[a.id], uids[b.id]
        assert not (ua & ub), "two sandboxes share host uids"
        assert abs(min(ua) - min(ub)) >= 65536, (min(ua), min(ub))


def test_fork_bomb_stays_inside(hutchd):
    preexisting = set(pids_with_sandbox_uids())
    stop = threading.Event()
    peak = [0]
    emergency = []

    def watchdog():
        # Safety net if the pids limit were missing: never let it eat the host.
        while not stop.is_set():
            mine = [p for p in pids_with_sandbox_uids() if p not in preexisting]
            peak[0] = max(peak[0], len(mine))
            if len(mine) > 12000:
                emergency.append(len(mine))
                for p in mine:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
            time.sleep(0.1)

    w = threading.Thread(target=watchdog, daemon=True)
    w.start()
    other = hutchd.create_sandbox()
    bomb = hutchd.create_sandbox()
    bomb_id = bomb.id
    try:
        limits = []
        for p in cgroup_dirs_for_sandbox(hutchd.cgroup_name, bomb_id):
            f = os.path.join(p, "pids.max")
            if os.path.exists(f):
                limits.append(open(f).read().strip())
        assert limits and all(x != "max" for x in limits), f"no pids limit: {limits}"
        # not waited for: bash's own fork retries would delay its exit
        bomb.call("spawn", {"command": "bash", "args": ["-c", "b(){ b|b & }; b"],
                            "stdout": "null", "stderr": "null"})
        time.sleep(8)
        # during the bomb: the daemon answers, another sandbox works
        t0 = time.monotonic()
        r = other.sh("echo still-here", timeout=60)
        assert r["stdout"] == b"still-here\n"
        assert time.monotonic() - t0 < 20, "another sandbox stalled during a fork bomb"
        assert hutchd.http("GET", "/api/v2/sandboxes", timeout=20).status == 200
        assert not emergency, f"fork bomb escaped the pids limit: {emergency}"
        assert peak[0] <= int(limits[0]) + 64, (peak[0], limits)
    finally:
        r = hutchd.http("DELETE", f"/api/v3/sandbox/{bomb_id}", timeout=30)
        bomb.ws.sock.close()
        stop.set()
        w.join(5)
    assert r.status < 300, r
    assert wait_until(lambda: not cgroup_dirs_for_sandbox(hutchd.cgroup_name, bomb_id), 20)
    assert other.sh("echo after")["stdout"] == b"after\n"
    other.ws.close()


def test_commands_of_one_sandbox_can_signal_each_other(sandbox):
    """Landlock is a second layer (no device nodes), but its signal scoping
    is deliberately off: each spawn is its own domain, and `kill` between two
    commands of the same sandbox must keep working."""
    sandbox.sh("sleep 300 >/dev/null 2>&1 & echo $! > /tmp/sleeper")
    r = sandbox.sh("kill -TERM $(cat /tmp/sleeper) && echo sent")
    assert r["code"] == 0 and b"sent" in r["stdout"], r


def test_device_nodes_refused_by_landlock_too(sandbox):
    """mknod of a character device fails with EACCES (Landlock) before the
    missing CAP_MKNOD (EPERM) is even looked at."""
    r = sandbox.sh("mknod /tmp/null2 c 1 3", sudo=True)
    assert r["code"] != 0
    assert b"Permission denied" in r["stderr"], r
