# hutchd's own CPU weight (--daemon-cpu-shares, docs/performance/fairness.md
# "hutchd's own weight"): on cgroup v1 hutchd moves its process, every thread
# and the helpers it starts into a cpu cgroup of its own, NAME-daemon, with
# the given shares, so a host busy with sandboxes does not make the event
# loop (every stream, every API call) wait for a CPU; sandboxes' agents and
# processes stay where they were (NAME-agents, NAME/ID). The latency itself
# is for bench/, not asserted here.
import os
import subprocess

import pytest

from hutchlib import CGROUP_ROOT, Hutchd, hutchd_path, sandbox_cgroup_pids

V1_CPU = os.path.isfile(os.path.join(CGROUP_ROOT, "cpu", "cpu.shares"))
DEFAULT_SHARES = 4096


def cpu_cgroup(pid, tid=None):
    path = f"/proc/{pid}/task/{tid}/cgroup" if tid else f"/proc/{pid}/cgroup"
    with open(path) as f:
        for line in f:
            _, ctrls, cg = line.rstrip("\n").split(":", 2)
            if "cpu" in ctrls.split(","):
                return cg
    raise AssertionError(f"{pid} has no cpu cgroup")


def children(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


@pytest.mark.skipif(not V1_CPU, reason="cgroup v1 cpu hierarchy")
def test_hutchd_and_its_helpers_run_weighted_in_a_cpu_cgroup_of_their_own():
    d = Hutchd(tag="dweight").start()
    mine = cpu_cgroup(os.getpid())
    own = f"/{d.cgroup_name}-daemon"
    try:
        assert cpu_cgroup(d.pid) == own
        with open(os.path.join(CGROUP_ROOT, "cpu", own.lstrip("/"), "cpu.shares")) as f:
            assert int(f.read()) == DEFAULT_SHARES
        tids = os.listdir(f"/proc/{d.pid}/task")
        assert len(tids) > 1, tids  # control: the threads exist (libuv's workers, the lane)
        assert {cpu_cgroup(d.pid, t) for t in tids} == {own}
        helpers = [c for c in children(d.pid) if comm(c).startswith("hutch-")]
        assert helpers, [comm(c) for c in children(d.pid)]  # hutch-proxy, hutch-ingress
        for h in helpers:
            assert cpu_cgroup(h) == own, comm(h)
        # a sandbox's agent and processes are not in it
        sb = d.create_sandbox()
        try:
            r = sb.sh("cat /proc/self/cgroup >/dev/null; echo $$")
            assert r["code"] == 0, r
            pids = sandbox_cgroup_pids(d.cgroup_name, sb.id)
            assert pids  # control: the sandbox's processes are found
            for p in pids:
                assert cpu_cgroup(p) != own, p
        finally:
            sb.ws.close()
    finally:
        d.stop()
    # it moved back and removed its cgroup on the way out
    assert not os.path.exists(os.path.join(CGROUP_ROOT, "cpu", own.lstrip("/")))
    assert cpu_cgroup(os.getpid()) == mine


@pytest.mark.skipif(not V1_CPU, reason="cgroup v1 cpu hierarchy")
def test_daemon_cpu_shares_0_leaves_hutchd_where_it_started():
    d = Hutchd(tag="dweight0", extra_args=["--daemon-cpu-shares", "0"]).start()
    try:
        assert cpu_cgroup(d.pid) == cpu_cgroup(os.getpid())
        assert not os.path.exists(os.path.join(CGROUP_ROOT, "cpu", f"{d.cgroup_name}-daemon"))
    finally:
        d.stop()


@pytest.mark.parametrize("bad", ["1", "262145", "-5", "lots"])
def test_daemon_cpu_shares_out_of_range_is_refused(bad, tmp_path):
    r = subprocess.run([hutchd_path(), "--state-dir", str(tmp_path), "--daemon-cpu-shares", bad],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "--daemon-cpu-shares" in r.stderr, r.stderr
