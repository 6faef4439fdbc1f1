# CPU fairness (issue 11.5, docs/performance/fairness.md "CPU fairness"): a sandbox's
# agent (hutch-init) runs in hutch's own cpu cgroup, NAME-agents, weighted
# above any sandbox, and with a short EEVDF slice (as hutchd's event loop),
# so its wake-ups run ahead of other sandboxes' busy loops; the sandbox's
# own processes run in the sandbox's cpu cgroup, with its quota, at the
# kernel's default slice: they inherit neither. The latency itself is
# measured in bench/ (BENCH_ONLY=fair), not asserted here.
import ctypes
import os
import subprocess

import pytest

from hutchlib import hutchd_path, sandbox_cgroup_pids, wait_until

SYS_SCHED_GETATTR = 315  # x86_64
SCHED_FLAG_RESET_ON_FORK = 0x01
SLICE_NS = 100_000  # hutchd's default --control-slice-us 100
AGENTS_SHARES = 2048

_libc = ctypes.CDLL(None, use_errno=True)


class SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64),
                ("util_min", ctypes.c_uint32), ("util_max", ctypes.c_uint32)]


def sched_getattr(pid):
    """(policy, flags, runtime ns) of a thread, as the kernel has them."""
    a = SchedAttr()
    if _libc.syscall(SYS_SCHED_GETATTR, ctypes.c_int(pid), ctypes.byref(a), ctypes.c_uint(ctypes.sizeof(a)),
                     ctypes.c_uint(0)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"sched_getattr({pid}): {os.strerror(e)}")
    return a.policy, a.flags, a.runtime


def default_slice_ns():
    """The kernel's default slice: what a fresh host process gets."""
    p = subprocess.Popen(["sleep", "30"])
    try:
        return sched_getattr(p.pid)[2]
    finally:
        p.kill()
        p.wait()


def cpu_cgroup(pid):
    """The v1 cpu hierarchy's path of pid, as the host sees it."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if "cpu" in ctrls.split(","):
                return path
    raise AssertionError(f"pid {pid} has no cpu cgroup")


def cpu_root():
    for name in ("cpu", "cpu,cpuacct"):
        p = f"/sys/fs/cgroup/{name}"
        if os.path.exists(f"{p}/cpu.shares"):
            return p
    return None


def inner_pids(d, sid):
    """{pid inside the sandbox: host pid} of every process in its memory cgroup."""
    out = {}
    for host in sandbox_cgroup_pids(d.cgroup_name, sid):
        try:
            with open(f"/proc/{host}/status") as f:
                ns = [ln for ln in f if ln.startswith("NSpid:")][0].split()[1:]
        except (OSError, IndexError):
            continue
        out[int(ns[-1])] = host
    return out


@pytest.fixture(scope="module")
def v1():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers") or not cpu_root():
        pytest.skip("the agents' cpu cgroup is a cgroup v1 arrangement (docs/performance/fairness.md)")
    return cpu_root()


def spawn_bg(sb, script):
    return sb.call("spawn", {"command": "bash", "args": ["-c", script], "stdout": "null", "stderr": "null"})["pid"]


def user_processes(d, sb):
    """Host pids of an app process, a sudo (root) one and a grandchild, all
    sleeping; waits until all three are there."""
    app = spawn_bg(sb, "exec sleep 300")
    root = spawn_bg(sb, "exec sudo sleep 301")
    spawn_bg(sb, "sleep 302 & wait")
    pids = {}

    def found():
        m = inner_pids(d, sb.id)
        comm = {}
        for inner, host in m.items():
            try:
                with open(f"/proc/{host}/cmdline", "rb") as f:
                    comm[host] = f.read().split(b"\0")
            except OSError:
                pass
        pids["app"] = m.get(app)
        pids["sudo"] = m.get(root)
        pids["sudo_child"] = next((h for h, c in comm.items() if c[:2] == [b"sleep", b"301"]), None)
        pids["grandchild"] = next((h for h, c in comm.items() if c[:2] == [b"sleep", b"302"]), None)
        pids["agent"] = m.get(1)
        return all(pids.values())

    assert wait_until(found, 15), pids
    return pids


# First: its own hutchd stops before the module's starts (one per namespace: the proxy's port).
def test_control_slice_zero_leaves_the_kernels_default(make_hutchd, v1):
    d = make_hutchd(extra_args=["--warm", "0", "--control-slice-us", "0"])
    base = default_slice_ns()
    assert sched_getattr(d.pid)[2] == base
    with d.create_sandbox() as sb:
        agent = inner_pids(d, sb.id)[1]
        assert sched_getattr(agent)[1:] == (0, base)
        # the agents' cgroup does not depend on the slice
        assert cpu_cgroup(agent) == f"/{d.cgroup_name}-agents"


# Private daemons too, before the module's.
# --sandbox-slice-us: every process a sandbox runs asks for that slice before
# its exec, without reset on fork, so its children inherit it. 300 µs: neither
# the kernel's default nor the agents' 100 µs, so a match is the option's.
SANDBOX_SLICE_NS = 300_000

# Inside the sandbox: a process sets its own slice (Linux lets any process),
# forks a sleeping child that inherits it, and sleeps.
SET_OWN_SLICE = r"""
import ctypes, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
want = int(sys.argv[1])
attr = struct.pack("IIQiIQQQII", 56, 0, 0, 0, 0, want, 0, 0, 0, 0)
if libc.syscall(314, 0, ctypes.c_char_p(attr), 0) != 0:
    print("setattr", os.strerror(ctypes.get_errno())); sys.exit(1)
if os.fork() == 0:
    time.sleep(300); os._exit(0)
time.sleep(300)
"""


def test_sandbox_slice_reaches_every_sandbox_process_and_their_children(make_hutchd, v1):
    d = make_hutchd(extra_args=["--warm", "0", "--sandbox-slice-us", str(SANDBOX_SLICE_NS // 1000)])
    base = default_slice_ns()
    assert base != SANDBOX_SLICE_NS
    with d.create_sandbox() as sb:
        p = user_processes(d, sb)
        # the agent keeps its own: the control slice, reset on fork
        policy, flags, runtime = sched_getattr(p["agent"])
        assert (policy, runtime) == (0, SLICE_NS) and flags & SCHED_FLAG_RESET_ON_FORK, (policy, flags, runtime)
        # the spawner thread too (its children ask for the slice themselves)
        spawner = sorted(int(t) for t in os.listdir(f"/proc/{p['agent']}/task"))[1]
        assert sched_getattr(spawner)[1:] == (0, base)
        # every process the sandbox runs: spawned ones (app, root through
        # sudo) and what they fork (sudo's child, bash's background child),
        # without the reset flag, so inherited
        for k in ("app", "sudo", "sudo_child", "grandchild"):
            assert sched_getattr(p[k]) == (0, 0, SANDBOX_SLICE_NS), (k, sched_getattr(p[k]))
        # still in the sandbox's cpu cgroup, with its weight
        assert cpu_cgroup(p["app"]) == f"/{d.cgroup_name}/{sb.id}"
        # a process may set its own slice, longer (the kernel's 100 ms
        # bound) or shorter, and keeps it; its children inherit that
        for want in (100_000_000, 100_000):
            pid = sb.call("spawn", {"command": "python3", "args": ["-c", SET_OWN_SLICE, str(want)],
                                     "stdout": "null", "stderr": "null"})["pid"]
            found = {}

            def mine():
                for inner, host in inner_pids(d, sb.id).items():
                    try:
                        with open(f"/proc/{host}/cmdline", "rb") as f:
                            argv = f.read().split(b"\0")
                    except OSError:
                        continue
                    if argv[:2] == [b"python3", b"-c"] and argv[3] == str(want).encode():
                        found["self" if inner == pid else "child"] = host
                return len(found) == 2

            assert wait_until(mine, 15), found
            assert wait_until(lambda: sched_getattr(found["self"])[2] == want, 5), sched_getattr(found["self"])
            assert sched_getattr(found["child"]) == (0, 0, want), sched_getattr(found["child"])
            for host in found.values():
                os.kill(host, 9)


def test_sandbox_slice_zero_leaves_the_kernels_default_and_bad_values_are_refused(make_hutchd, v1):
    for bad in ("50", "100001", "x"):
        r = subprocess.run([hutchd_path(), "--sandbox-slice-us", bad], capture_output=True, text=True)
        assert r.returncode == 2 and "--sandbox-slice-us" in r.stderr, (bad, r)
    d = make_hutchd(extra_args=["--warm", "0", "--sandbox-slice-us", "0"])
    base = default_slice_ns()
    with d.create_sandbox() as sb:
        p = user_processes(d, sb)
        for k in ("app", "sudo", "sudo_child", "grandchild"):
            assert sched_getattr(p[k]) == (0, 0, base), (k, sched_getattr(p[k]))
        # positive control: the agent's own short slice is there
        assert sched_getattr(p["agent"])[2] == SLICE_NS


def test_agent_runs_in_the_agents_cpu_cgroup_and_user_processes_in_the_sandboxs(hutchd, v1):
    d = hutchd
    with d.create_sandbox() as sb:
        p = user_processes(d, sb)
        agents = f"/{d.cgroup_name}-agents"
        assert cpu_cgroup(p["agent"]) == agents
        for k in ("app", "sudo", "sudo_child", "grandchild"):
            assert cpu_cgroup(p[k]) == f"/{d.cgroup_name}/{sb.id}", (k, cpu_cgroup(p[k]))
        # the agents weigh two sandboxes; each sandbox the kernel's default
        with open(f"{v1}{agents}/cpu.shares") as f:
            assert int(f.read()) == AGENTS_SHARES
        with open(f"{v1}/{d.cgroup_name}/{sb.id}/cpu.shares") as f:
            assert int(f.read()) == 1024
        # the sandbox's quota binds its processes (2000 millis: 2 CPUs)
        with open(f"{v1}/{d.cgroup_name}/{sb.id}/cpu.cfs_quota_us") as f:
            assert int(f.read()) == 200000
        # inside, every process's cgroup ns root is the sandbox's cgroup
        r = sb.sh("grep -E '^[0-9]+:cpu:' /proc/self/cgroup")
        assert r["code"] == 0 and r["stdout"].strip().endswith(b":cpu:/"), r


def thread_cpu_cgroup(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if "cpu" in ctrls.split(","):
                return path
    raise AssertionError(f"thread {tid} has no cpu cgroup")


def test_agent_clones_children_from_a_spawner_thread_in_the_sandboxs_cpu_cgroup(hutchd, v1):
    # A child starts in its creating thread's cgroup: hutch-init's second
    # thread sits in the sandbox's cpu cgroup, so a spawned process needs no
    # move through `tasks` (the host-wide cgroup_mutex) before its exec.
    d = hutchd
    with d.create_sandbox() as sb:
        p = user_processes(d, sb)  # spawns work (and land in the sandbox's cgroup, above)
        agent = p["agent"]
        tids = sorted(int(t) for t in os.listdir(f"/proc/{agent}/task"))
        assert len(tids) == 2 and tids[0] == agent, tids
        spawner = tids[1]
        with open(f"/proc/{agent}/task/{spawner}/comm") as f:
            assert f.read().strip() == "hutch-spawner"
        # positive control: the loop thread is in the agents' cgroup
        assert thread_cpu_cgroup(agent, agent) == f"/{d.cgroup_name}-agents"
        assert thread_cpu_cgroup(agent, spawner) == f"/{d.cgroup_name}/{sb.id}"
        # it runs no handler (every signal blocked) and has the kernel's default slice
        with open(f"/proc/{agent}/task/{spawner}/status") as f:
            blk = [ln.split()[1] for ln in f if ln.startswith("SigBlk:")][0]
        want = (1 << 64) - 1  # every signal but SIGKILL, SIGSTOP (never blocked) and glibc's own two (32, 33)
        for sig in (9, 19, 32, 33):
            want &= ~(1 << (sig - 1))
        assert int(blk, 16) & want == want, blk
        assert sched_getattr(spawner)[1:] == (0, default_slice_ns())
        # its children are the sandbox's, as every spawned process
        assert cpu_cgroup(p["app"]) == f"/{d.cgroup_name}/{sb.id}"


def test_agent_has_a_short_slice_that_user_processes_do_not_inherit(hutchd, v1):
    d = hutchd
    base = default_slice_ns()
    assert base != SLICE_NS  # the probe can tell them apart
    # hutchd's event loop (its main thread) asks for the slice, reset on fork
    _, flags, runtime = sched_getattr(d.pid)
    assert runtime == SLICE_NS and flags & SCHED_FLAG_RESET_ON_FORK, (runtime, flags)
    with d.create_sandbox() as sb:
        p = user_processes(d, sb)
        # positive control: the agent has it
        policy, flags, runtime = sched_getattr(p["agent"])
        assert (policy, runtime) == (0, SLICE_NS) and flags & SCHED_FLAG_RESET_ON_FORK, (policy, flags, runtime)
        for k in ("app", "sudo", "sudo_child", "grandchild"):
            policy, flags, runtime = sched_getattr(p[k])
            assert (policy, flags, runtime) == (0, 0, base), (k, policy, flags, runtime)


def test_sandbox_code_cannot_reach_the_agents_cgroup(hutchd, v1):
    d = hutchd
    with d.create_sandbox() as sb:
        # positive control: a process lists its own fds
        assert sb.sh("ls /proc/self/fd")["code"] == 0
        # hutch-init's fds (the sandbox's tasks file among them) are not
        # reachable, even for sandbox root: PID 1 is not dumpable
        r = sb.sh("ls -l /proc/1/fd", sudo=True)
        assert r["code"] != 0 and b"Permission denied" in r["stderr"], r
        # no cgroup file is left open in a user process (closed at exec)
        r = sb.sh("ls -l /proc/self/fd/", sudo=True)
        assert r["code"] == 0 and b"cgroup" not in r["stdout"] and b"tasks" not in r["stdout"], r
        # and no cgroup file system to write to: mounting one is refused
        r = sb.sh("mkdir -p /tmp/cg && mount -t cgroup -o cpu none /tmp/cg", sudo=True)
        assert r["code"] != 0, r
        assert cpu_cgroup(inner_pids(d, sb.id)[1]) == f"/{d.cgroup_name}-agents"

