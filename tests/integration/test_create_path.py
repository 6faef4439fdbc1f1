# The create path's shortcuts (docs/performance.md, "Create: third pass")
# keep what a create promised: a sandbox's cpuset stops asking the
# scheduler for a domain of its own (which only cost rebuilds) while still
# confining its processes to its CPUs.
import os

import pytest

from hutchlib import CGROUP_ROOT, cgroup_dirs_for_sandbox

V1 = os.path.isdir(os.path.join(CGROUP_ROOT, "memory")) and not os.path.exists(
    os.path.join(CGROUP_ROOT, "cgroup.controllers"))


@pytest.mark.skipif(not V1, reason="cgroup v1 cpusets")
def test_a_sandbox_cpuset_confines_it_without_a_sched_domain_of_its_own(hutchd):
    with open(os.path.join(CGROUP_ROOT, "cpuset", "cpuset.sched_load_balance")) as f:
        root_balances = f.read().strip() == "1"
    sb = hutchd.create_sandbox()
    try:
        r = sb.sh("grep Cpus_allowed_list /proc/self/status")
        assert r["code"] == 0, r
        allowed = r["stdout"].decode().split()[1]
        cs = [p for p in cgroup_dirs_for_sandbox(hutchd.cgroup_name, sb.id) if "/cpuset/" in p]
        assert len(cs) == 1, cs
        with open(os.path.join(cs[0], "cpuset.cpus")) as f:
            cpus = f.read().strip()
        with open(os.path.join(cs[0], "cpuset.mems")) as f:
            assert f.read().strip(), "no memory nodes: nothing could run in it"
        assert cpus and allowed == cpus, (allowed, cpus)
        with open(os.path.join(cs[0], "cpuset.sched_load_balance")) as f:
            balance = f.read().strip()
        # under a balancing root the flag is off (no rebuild per create), else as the kernel made it
        assert balance == ("0" if root_balances else "1"), balance
    finally:
        sb.ws.close()
