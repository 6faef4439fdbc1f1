# Attacks from inside a sandbox that must fail (as `app` and as root via
# sudo), and host-side checks that sandboxes own nothing on the host.
import contextlib
import json
import os
import signal
import threading
import time

import pytest

from hutchlib import (SANDBOX_UID_MIN, cgroup_dirs_for_sandbox,
                      pids_with_sandbox_uids, sandbox_cgroup_pids, wait_until)

# Runs inside the sandbox: tries each dangerous syscall through ctypes and
# prints {name: [return value, errno]}.
PROBE = r'''
import ctypes, ctypes.util, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return [r, ctypes.get_errno()]
buf = ctypes.create_string_buffer(256)
addr = ctypes.addressof(buf)
res = {}
ctypes.set_errno(0)
r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None); res["mount"] = [r, ctypes.get_errno()]
ctypes.set_errno(0)
r = libc.umount2(b"/proc", 2); res["umount"] = [r, ctypes.get_errno()]
res["unshare_user"] = sc(272, 0x10000000)
res["unshare_mnt"] = sc(272, 0x00020000)
res["unshare_net"] = sc(272, 0x40000000)
res["keyctl"] = sc(250, 0, -3, 1)
res["add_key"] = sc(248, ctypes.addressof(ctypes.create_string_buffer(b"user")),
                    ctypes.addressof(ctypes.create_string_buffer(b"k")), addr, 1, -3)
# BPF_MAP_CREATE of a tiny array map: allowed for unprivileged users on some kernels
attr = ctypes.create_string_buffer(128)
ctypes.memmove(attr, (ctypes.c_uint32 * 4)(2, 4, 4, 1), 16)
res["bpf"] = sc(321, 0, ctypes.addressof(attr), 128)
params = ctypes.create_string_buffer(120)
res["io_uring_setup"] = sc(425, 1, ctypes.addressof(params))
res["userfaultfd"] = sc(323, 0)
pattr = ctypes.create_string_buffer(128)
ctypes.memmove(pattr, (ctypes.c_uint32 * 2)(1, 128), 8)   # PERF_TYPE_SOFTWARE, size
res["perf_event_open"] = sc(298, ctypes.addressof(pattr), 0, -1, -1, 0)
res["ptrace_attach_1"] = sc(101, 16, 1, 0, 0)
res["syslog_read"] = sc(103, 3, addr, 256)
res["setns"] = sc(308, os.open("/proc/1/ns/mnt", os.O_RDONLY) if os.access("/proc/1/ns/mnt", os.R_OK) else -1, 0)
res["clone_newuser"] = sc(56, 0x10000000 | 17, 0, 0, 0, 0)
res["init_module"] = sc(175, addr, 0, addr)
res["kexec_load"] = sc(246, 0, 0, 0, 0)
res["open_by_handle_at"] = sc(304, -100, addr, 0)
# a child that got created by clone would exit right away; never leave it running
if res["clone_newuser"][0] == 0:
    os._exit(0)
print(json.dumps(res))
'''

MUST_FAIL = ["mount", "umount", "unshare_user", "unshare_mnt", "unshare_net", "keyctl",
             "add_key", "bpf", "io_uring_setup", "userfaultfd", "perf_event_open",
             "ptrace_attach_1", "syslog_read", "setns", "clone_newuser", "init_module",
             "kexec_load", "open_by_handle_at"]

# Capabilities that must never be in the bounding set (even for root inside).
FORBIDDEN_CAPS = {"CAP_SYS_ADMIN": 21, "CAP_SYS_PTRACE": 19, "CAP_SYS_MODULE": 16,
                  "CAP_SYS_RAWIO": 17, "CAP_NET_ADMIN": 12, "CAP_SYS_TIME": 25,
                  "CAP_SYS_BOOT": 22, "CAP_MAC_ADMIN": 33, "CAP_BPF": 39,
                  "CAP_PERFMON": 38, "CAP_SYSLOG": 34, "CAP_DAC_READ_SEARCH": 2,
                  "CAP_MKNOD": 27, "CAP_SYS_RESOURCE": 24, "CAP_SYS_NICE": 23}


def probe(sb, sudo):
    r = sb.run("sudo" if sudo else "python3",
               (["python3"] if sudo else []) + ["-c", PROBE], timeout=60)
    assert r["code"] == 0, r
    return json.loads(r["stdout"])


@pytest.mark.parametrize("sudo", [False, True], ids=["app", "root"])
def test_dangerous_syscalls_refused(sandbox, sudo):
    res = probe(sandbox, sudo)
    allowed = {k: v for k, v in res.items() if k in MUST_FAIL and v[0] >= 0}
    assert not allowed, f"syscalls that succeeded ({'sudo' if sudo else 'app'}): {allowed}"


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


def test_sys_not_writable(sandbox):
    # /sys may be absent (a plain directory of the image: writing there is
    # harmless) or sysfs; if sysfs, it must be read-only even for root.
    script = ("import json\nout = []\nfor ln in open('/proc/self/mountinfo'):\n"
              "    a, b = ln.split(' - ', 1)\n    f = a.split()\n"
              "    if f[4] == '/sys' or f[4].startswith('/sys/'):\n"
              "        out.append([f[4], f[5], b.split()[0]])\nprint(json.dumps(out))")
    r = sandbox.run("python3", ["-c", script])
    assert r["code"] == 0, r
    for mnt, opts, fstype in json.loads(r["stdout"]):
        if fstype in ("sysfs", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs", "bpf"):
            assert "ro" in opts.split(","), f"{fstype} mounted writable at {mnt}: {opts}"
    for script in ("echo x > /sys/class/net/lo/ifalias", "echo 1 > /sys/kernel/mm/ksm/run",
                   "echo 1 > /sys/fs/cgroup/cgroup.procs"):
        r = sandbox.sh(f"sh -c '{script}'", sudo=True)
        assert r["code"] != 0, (script, r)


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


def test_cannot_reach_daemon_api(hutchd, sandbox):
    script = f'''
import socket, subprocess
targets = [("127.0.0.1", {hutchd.port})]
try:
    out = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for ln in out.splitlines():
        w = ln.split()
        if w[:2] == ["default", "via"]:
            targets.append((w[2], {hutchd.port}))
except Exception:
    pass
for host, port in targets:
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); print("CONNECTED", host, port)
    except Exception as e:
        print("refused", host, port, type(e).__name__)
'''
    r = sandbox.run("python3", ["-c", script], timeout=60)
    assert r["code"] == 0, r
    assert b"CONNECTED" not in r["stdout"], r["stdout"]


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
