# Honest resource views (issue 11.6): inside a sandbox, /proc/meminfo,
# cpuinfo, stat, uptime, free, nproc and the runtimes' CPU counts show the
# sandbox's own limits, served by hutchd's own lxcfs and bound read-only
# over /proc; when that lxcfs dies, sandboxes fall back to the kernel's
# files (never ENOTCONN) and get the views back once it serves again.
import os
import re
import signal
import stat
import time

import pytest

from hutchlib import HandshakeError, cgroup_dirs_for_sandbox, wait_until

VIEW_FILES = ["meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats"]


def host_mem_total_kib():
    with open("/proc/meminfo") as f:
        return int(re.search(r"^MemTotal:\s+(\d+) kB", f.read(), re.M).group(1))


def sandbox_mem_total_kib(sb):
    r = sb.sh("cat /proc/meminfo")
    assert r["code"] == 0, r
    return int(re.search(rb"^MemTotal:\s+(\d+) kB", r["stdout"], re.M).group(1))


def cgroup_value(d, sandbox_id, names):
    """The first number in the first of names (v1, v2) in its cgroups."""
    for p in cgroup_dirs_for_sandbox(d.cgroup_name, sandbox_id):
        for name in names:
            f = os.path.join(p, name)
            if os.path.exists(f):
                with open(f) as fh:
                    return int(fh.read().split()[0])
    raise AssertionError(f"no {names[0]} for {sandbox_id}")


def cgroup_memory_limit(d, sandbox_id):
    return cgroup_value(d, sandbox_id, ("memory.limit_in_bytes", "memory.max"))


def lxcfs_pid(d):
    """The lxcfs hutchd started (its pidfile, checked to be hutchd's child)."""
    try:
        with open(os.path.join(d.state_dir, "lxcfs.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None
    return pid if ppid == d.pid else None


def views_served(d):
    return lxcfs_pid(d) is not None and f"serves sandboxes' resource views from {d.state_dir}/lxcfs" in d._log_text()


@pytest.fixture(scope="module")
def host_cpus():
    n = len(os.sched_getaffinity(0))
    # The CPU test needs a quota below the machine's CPUs to tell them apart.
    assert n >= 2, f"this machine has {n} CPU: the CPU views cannot be told from the host's"
    return n


@pytest.fixture
def views_hutchd(make_hutchd):
    """A hutchd without a warm pool (so that a sandbox starts at create) and
    a 1-CPU quota (below this machine's CPUs), its lxcfs serving."""
    d = make_hutchd(extra_args=["--warm", "0", "--cpu-millis", "1000"])
    assert wait_until(lambda: views_served(d), 15), d.log_tail()
    return d


def test_free_and_meminfo_show_the_memory_limit(views_hutchd):
    d = views_hutchd
    host = host_mem_total_kib()
    # positive control: the host's own /proc/meminfo shows the host's total
    assert host > 2 * 1280 * 1024, host
    with d.create_sandbox({"memory_mb": 1280}) as sb:
        limit = cgroup_memory_limit(d, sb.id)
        assert limit == 1280 << 20
        assert sandbox_mem_total_kib(sb) == limit // 1024
        r = sb.sh("free -m")
        assert r["code"] == 0, r
        total = int(r["stdout"].splitlines()[1].split()[1])
        assert 1280 - 8 <= total <= 1280, r["stdout"]
        # no swap inside (the cgroup has none either)
        assert re.search(rb"^SwapTotal:\s+0 kB", sb.sh("cat /proc/meminfo")["stdout"], re.M)


def test_cpu_counts_match_the_cpu_quota(views_hutchd, host_cpus):
    d = views_hutchd
    with d.create_sandbox() as sb:
        r = sb.sh("nproc; grep -c ^processor /proc/cpuinfo; grep -c '^cpu[0-9]' /proc/stat; "
                  "python3 -c 'import os; print(os.cpu_count()); print(len(os.sched_getaffinity(0)))'")
        assert r["code"] == 0, r
        assert r["stdout"].split() == [b"1"] * 5, r["stdout"]
        node = sb.sh("command -v node && node -e 'console.log(require(\"os\").availableParallelism())'")
        if node["code"] == 0:
            assert node["stdout"].split()[-1] == b"1", node
        # a sudo can widen its own affinity again; the quota still holds (not a view)
        assert sb.sh("nproc --all")["code"] == 0


def test_default_quota_sandbox_counts_its_two_cpus(make_hutchd, host_cpus):
    d = make_hutchd(extra_args=["--warm", "0"])  # hutchd's default: 2000 millis
    assert wait_until(lambda: views_served(d), 15), d.log_tail()
    with d.create_sandbox() as sb:
        r = sb.sh("nproc; grep -c ^processor /proc/cpuinfo")
        assert r["stdout"].split() == [str(min(2, host_cpus)).encode()] * 2, r


def cgroup_cpu_quota_us(d, sandbox_id):
    """Its CPU quota per 100 ms period (v1 cpu.cfs_quota_us, v2 cpu.max)."""
    return cgroup_value(d, sandbox_id, ("cpu.cfs_quota_us", "cpu.max"))


def test_a_sandbox_asks_for_less_cpu_with_its_label(make_hutchd, host_cpus):
    # The SDK has no CPU option; it passes labels as they are. With the warm
    # pool on (its sandboxes have the default quota and views): a create that
    # asks for another quota must not be handed one of them.
    d = make_hutchd()  # --cpu-millis 2000, --warm 2
    assert wait_until(lambda: views_served(d), 15), d.log_tail()
    with d.create_sandbox() as sb:  # positive control: the default
        assert cgroup_cpu_quota_us(d, sb.id) == 200000
        assert sb.sh("nproc")["stdout"].split() == [str(min(2, host_cpus)).encode()]
    with d.create_sandbox({"labels": {"hutch.cpu_millis": "500"}}) as sb:
        assert cgroup_cpu_quota_us(d, sb.id) == 50000
        r = sb.sh("nproc; grep -c ^processor /proc/cpuinfo")
        assert r["stdout"].split() == [b"1", b"1"], r
        live = {x["id"]: x for x in d.http("GET", "/hutch/v1/live").json()["sandboxes"]}
        assert live[sb.id]["cpuLimitMillis"] == 500, live[sb.id]
    for bad in ("abc", "5", "2001", "-500", " 500", "500.5"):
        with pytest.raises(HandshakeError) as ei:
            d.create_sandbox({"labels": {"hutch.cpu_millis": bad}})
        assert ei.value.status == 400 and ei.value.json()["code"] == "INVALID_CPU", (bad, ei.value)
        assert "hutch.cpu_millis" in ei.value.json()["message"]


def test_uptime_starts_near_zero(views_hutchd):
    d = views_hutchd
    t0 = time.monotonic()
    with d.create_sandbox() as sb:
        r = sb.sh("cat /proc/uptime")
        elapsed = time.monotonic() - t0
        assert r["code"] == 0, r
        up = float(r["stdout"].split()[0])
        with open("/proc/uptime") as f:
            host_up = float(f.read().split()[0])
        # positive control: the host has been up longer than this sandbox can be
        assert host_up > elapsed + 5, (host_up, elapsed)
        assert 0 <= up <= elapsed + 1, (up, elapsed)


def test_two_sandboxes_see_their_own_totals(views_hutchd):
    d = views_hutchd
    with d.create_sandbox({"memory_mb": 1024}) as a, d.create_sandbox({"memory_mb": 1280}) as b:
        assert sandbox_mem_total_kib(a) == 1024 * 1024
        assert sandbox_mem_total_kib(b) == 1280 * 1024
        # and again in the other order: lxcfs answers by the reader, not by the last one asked
        assert sandbox_mem_total_kib(a) == 1024 * 1024


def test_views_are_read_only_single_file_binds(views_hutchd):
    d = views_hutchd
    with d.create_sandbox() as sb:
        # positive control: the same write works on a writable file
        ok = sb.sh("echo x > /tmp/probe && cat /tmp/probe")
        assert ok["code"] == 0 and ok["stdout"] == b"x\n", ok
        py = ("import errno, os\n"
              "for f in %r:\n"
              "    try:\n"
              "        os.close(os.open('/proc/' + f, os.O_WRONLY))\n"
              "        print(f, 'OPENED')\n"
              "    except OSError as e:\n"
              "        print(f, errno.errorcode[e.errno])\n") % (VIEW_FILES,)
        for sudo in (False, True):
            r = sb.run("sudo" if sudo else "python3", (["python3"] if sudo else []) + ["-c", py])
            assert r["code"] == 0, r
            got = dict(line.split() for line in r["stdout"].decode().splitlines())
            # the read-only bind refuses, for app and for sandbox root alike
            assert got == {f: "EROFS" for f in VIEW_FILES}, (sudo, got)
        # the binds: one per file, read-only, nosuid, nodev, noexec; no lxcfs directory anywhere
        mi = sb.sh("cat /proc/self/mountinfo")["stdout"].decode()
        views = {}
        for line in mi.splitlines():
            f = line.split()
            sep = f.index("-")
            if f[sep + 1].startswith("fuse"):
                views[f[4]] = (f[3], set(f[5].split(",")))
        assert set(views) == {"/proc/" + x for x in VIEW_FILES}, views
        for mp, (root, opts) in views.items():
            assert root == mp, (mp, root)  # a single file of lxcfs's tree, no host path
            assert {"ro", "nosuid", "nodev", "noexec"} <= opts, (mp, opts)
        # sandbox root cannot take a view away to read the host's numbers
        py = ("import ctypes, errno\n"
              "c = ctypes.CDLL(None, use_errno=True)\n"
              "for name, rc in (('umount2', c.umount2(b'/proc/meminfo', 2)),\n"
              "                 ('remount', c.mount(None, b'/proc/meminfo', None, 32 | 4096, None))):\n"
              "    print(name, 'OK' if rc == 0 else errno.errorcode[ctypes.get_errno()])\n")
        r = sb.run("sudo", ["python3", "-c", py])
        assert r["code"] == 0, r
        assert r["stdout"].split() == [b"umount2", b"EPERM", b"remount", b"EPERM"], r
        assert sandbox_mem_total_kib(sb) == 1280 * 1024


def test_killed_lxcfs_falls_back_then_returns(make_hutchd, tmp_path):
    # A wrapper that runs the real lxcfs unless told to fail: so that the
    # fallback (kernel views while no lxcfs serves) can be seen for certain.
    gate = tmp_path / "fail"
    wrapper = tmp_path / "test-lxcfs"
    wrapper.write_text(f"#!/bin/sh\n[ -e {gate} ] && exit 1\nexec /usr/bin/lxcfs \"$@\"\n")
    wrapper.chmod(0o755)
    d = make_hutchd(extra_args=["--warm", "0", "--lxcfs", str(wrapper)])
    assert wait_until(lambda: views_served(d), 15), d.log_tail()
    host = host_mem_total_kib()
    with d.create_sandbox({"memory_mb": 1280}) as sb:
        assert sandbox_mem_total_kib(sb) == 1280 * 1024
        old = lxcfs_pid(d)
        gate.write_text("")
        os.kill(old, signal.SIGKILL)
        # fallback: the kernel's file again (the host's total), readable, not ENOTCONN
        assert wait_until(lambda: f"lxcfs (pid {old}) was killed by signal 9" in d._log_text(), 10), d.log_tail()

        def kernel_view():
            r = sb.sh("cat /proc/meminfo")
            assert r["code"] == 0 or b"not connected" in r["stderr"], r
            return r["code"] == 0 and int(re.search(rb"^MemTotal:\s+(\d+)", r["stdout"], re.M).group(1)) == host
        assert wait_until(kernel_view, 10), d.log_tail()
        r = sb.sh("cat /proc/meminfo /proc/uptime /proc/stat /proc/cpuinfo > /dev/null")
        assert r["code"] == 0, r
        # lxcfs may start again: the views come back in the running sandbox
        gate.unlink()
        assert wait_until(lambda: lxcfs_pid(d) not in (None, old), 60), d.log_tail()
        assert wait_until(lambda: sandbox_mem_total_kib(sb) == 1280 * 1024, 15), d.log_tail()
        # and a new sandbox gets them from its start
        with d.create_sandbox({"memory_mb": 1024}) as sb2:
            assert sandbox_mem_total_kib(sb2) == 1024 * 1024
    pid = lxcfs_pid(d)
    assert pid
    d.terminate()
    # hutchd's exit takes its lxcfs with it (and the mount: the census at teardown)
    assert not os.path.exists(f"/proc/{pid}"), pid


def test_a_create_asks_lxcfs_nothing(views_hutchd):
    # hutchd clones lxcfs's files from fds it holds open and passes the clones
    # to hutch-init: a create makes no lookup through lxcfs (each made lxcfs
    # read the host's whole /proc file for its size; /proc/diskstats on a host
    # with thousands of loop devices held creates for seconds). With lxcfs
    # stopped, a sandbox still starts, its /proc/meminfo already lxcfs's.
    d = views_hutchd
    with d.create_sandbox({"memory_mb": 1280}) as sb:  # positive control, and hutchd's fds are open
        assert sandbox_mem_total_kib(sb) == 1280 * 1024
    pid = lxcfs_pid(d)
    assert pid, d.log_tail()
    time.sleep(3)  # past any lookup lxcfs's answers are cached for
    os.kill(pid, signal.SIGSTOP)
    try:
        with d.create_sandbox({"memory_mb": 1024}) as sb2:
            # mountinfo only: reading the file would wait for lxcfs
            r = sb2.sh("grep ' /proc/meminfo ' /proc/self/mountinfo")
            assert r["code"] == 0 and b"lxcfs" in r["stdout"], r
            os.kill(pid, signal.SIGCONT)
            assert sandbox_mem_total_kib(sb2) == 1024 * 1024
    finally:
        os.kill(pid, signal.SIGCONT)


def test_without_lxcfs_sandboxes_get_the_kernel_views(make_hutchd):
    d = make_hutchd(extra_args=["--warm", "0", "--lxcfs", "/nonexistent/lxcfs"])
    assert "no lxcfs at /nonexistent/lxcfs" in d._log_text()
    with d.create_sandbox({"memory_mb": 1280}) as sb:
        assert sandbox_mem_total_kib(sb) == host_mem_total_kib()
        assert sb.sh("true")["code"] == 0
    assert d._log_text().count("no lxcfs at") == 1


def test_state_dir_mount_point_is_not_reachable_from_a_sandbox(views_hutchd):
    d = views_hutchd
    mnt = os.path.join(d.state_dir, "lxcfs")
    assert stat.S_ISDIR(os.stat(mnt).st_mode) and os.path.exists(os.path.join(mnt, "proc", "meminfo"))
    with d.create_sandbox() as sb:
        r = sb.sh(f"ls {mnt} {d.state_dir}")
        assert r["code"] != 0 and b"No such file or directory" in r["stderr"], r
