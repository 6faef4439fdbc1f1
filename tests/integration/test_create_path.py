# The create path's shortcuts (docs/performance/create.md, "Create: third pass")
# keep what a create promised: a sandbox whose hutchd dies ends with every
# process in it (its PID 1 exits instead of walking the host with kill(-1));
# writable layers made ahead (nameless, synced) are as fresh as ones made on
# demand; hutch-init starts inside its sandbox's cgroups because the worker thread
# that clones it steps into them first and then back out (cgroup v1); a
# sandbox's cpuset stops asking the scheduler for a domain of its own (which
# only cost rebuilds) while still confining its processes to its CPUs.
import os
import threading
import time

import pytest

from hutchlib import (CGROUP_ROOT, cgroup_dirs_for_sandbox, loops_backed_by, pid_alive, sandbox_cgroup_pids,
                      wait_until)

V1 = os.path.isdir(os.path.join(CGROUP_ROOT, "memory")) and not os.path.exists(
    os.path.join(CGROUP_ROOT, "cgroup.controllers"))


def thread_cgroups(pid, tid):
    """{controller: path} of one thread, the named v1 hierarchies it uses."""
    out = {}
    with open(f"/proc/{pid}/task/{tid}/cgroup") as f:
        for ln in f:
            _, ctls, path = ln.rstrip("\n").split(":", 2)
            for c in ctls.split(","):
                if c in ("memory", "cpu", "cpuacct", "pids", "freezer", "cpuset"):
                    out[c] = path
    return out


def tasks_of(dirs):
    tids = set()
    for d in dirs:
        with open(os.path.join(d, "tasks")) as f:
            tids.update(int(x) for x in f.read().split())
    return tids


@pytest.mark.skipif(not V1, reason="the thread's own move is for cgroup v1 hierarchies")
def test_init_runs_in_its_cgroups_and_hutchds_threads_go_back_home(make_hutchd):
    d = make_hutchd(extra_args=["--warm", "0"])  # every create launches now, on a worker thread
    sbs = [d.create_sandbox() for _ in range(3)]
    try:
        for sb in sbs:
            assert sb.sh("echo ok")["stdout"] == b"ok\n"
            dirs = cgroup_dirs_for_sandbox(d.cgroup_name, sb.id)
            mem = [p for p in dirs if "/memory/" in p]
            assert mem, dirs
            inside = tasks_of(mem)
            # control: the probe sees the sandbox's own processes (hutch-init at least)
            assert inside, f"no tasks in {mem}"
        # every hutchd thread (the workers that cloned the inits included) is
        # where hutchd's main thread is, in every hierarchy
        main = thread_cgroups(d.pid, d.pid)
        assert main, "hutchd's cgroups not readable"
        threads = os.listdir(f"/proc/{d.pid}/task")
        assert len(threads) > 1, threads  # control: the worker threads exist
        for tid in threads:
            assert thread_cgroups(d.pid, tid) == main, tid
        # and no hutchd thread is in any sandbox cgroup
        all_dirs = [p for sb in sbs for p in cgroup_dirs_for_sandbox(d.cgroup_name, sb.id)]
        assert not tasks_of(all_dirs) & {int(t) for t in threads}
    finally:
        for sb in sbs:
            sb.ws.close()


@pytest.mark.skipif(not V1, reason="cgroup v1 cpusets")
def test_a_sandbox_cpuset_confines_it_without_a_sched_domain_of_its_own(make_hutchd):
    hutchd = make_hutchd()  # each test here has its own hutchd: they share the test's network namespace
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


def test_hutchds_death_ends_every_process_of_a_sandbox(make_hutchd):
    """Without --live-restore, hutch-init (PID 1 of the sandbox's pid
    namespace) exits when hutchd's socket closes, and the kernel kills
    everything left in the namespace: background, sudo and setsid ones."""
    d = make_hutchd(extra_args=["--warm", "0"])
    sb = d.create_sandbox({"stop_at_ms": int(time.time() * 1000) + 600000})
    for cmd in ("sleep 300 >/dev/null 2>&1 &", "sudo sleep 301 >/dev/null 2>&1 &",
                "setsid sleep 302 >/dev/null 2>&1 < /dev/null &"):
        assert sb.sh(cmd)["code"] == 0, cmd
    pids = sandbox_cgroup_pids(d.cgroup_name, sb.id)
    assert len(pids) >= 4, pids  # control: init and the three sleeps are there
    d.kill_hard()
    assert wait_until(lambda: not [p for p in pids if pid_alive(p)], 10), [p for p in pids if pid_alive(p)]
    sb.ws.sock.close()
    d.start()  # cleans up the stopped sandbox's cgroups for the fixture's census
    assert wait_until(lambda: not cgroup_dirs_for_sandbox(d.cgroup_name, sb.id), 10)


def test_layers_made_ahead_carry_nothing_of_an_earlier_sandbox(make_hutchd):
    d = make_hutchd(extra_args=["--warm", "0"])  # every create takes a layer now
    a = d.create_sandbox()
    try:
        r = a.sh("echo mine > /tmp/marker && sudo sh -c 'echo mine > /etc/marker' && cat /tmp/marker /etc/marker")
        assert r["stdout"] == b"mine\nmine\n", r  # control: the probe sees a layer's own writes
    finally:
        a.ws.close()
    # layers made ahead are nameless (O_TMPFILE) in the disk directory; made
    # on demand they carry the sandbox's name until the loop device holds them
    ahead = False
    for _ in range(6):
        sb = d.create_sandbox()
        try:
            r = sb.sh("test ! -e /tmp/marker && test ! -e /etc/marker && "
                      "test -z \"$(find / -xdev -newer /etc/hostname -name marker 2>/dev/null)\" && echo clean")
            assert r["stdout"] == b"clean\n", r
            ahead |= any(f"/{sb.id}.disk" not in ln for ln in loops_backed_by(d.state_dir)
                         if "(deleted)" in ln and "/#" in ln)
        finally:
            sb.ws.close()
    assert ahead, loops_backed_by(d.state_dir)


def test_a_create_held_in_its_cgroup_step_holds_no_other_sandbox(make_hutchd, monkeypatch, tmp_path):
    # A cgroup mkdir waits for the host-wide cgroup_mutex, for seconds when
    # another process holds it. hutchd makes cgroups on a thread of its own
    # (the cgroup lane), so while one create waits there, every other
    # sandbox's commands and the API answer. The wait is simulated with the
    # test-only gate HUTCH_TEST_CGROUP_GATE (the cgroup step waits for a file).
    gate = tmp_path / "gate"
    gate.touch()  # open: the first sandbox is made normally
    monkeypatch.setenv("HUTCH_TEST_CGROUP_GATE", str(gate))
    d = make_hutchd(extra_args=["--warm", "0"])  # every create makes its cgroups now
    sbdir = os.path.join(d.state_dir, "sandboxes")
    sb = d.create_sandbox()
    result = {}
    t = None
    try:
        assert sb.sh("echo before")["stdout"] == b"before\n"  # control: the probe works
        before = set(os.listdir(sbdir))
        gate.unlink()  # closed: the next create waits in its cgroup step

        def second():
            try:
                result["sb"] = d.create_sandbox(timeout=120)
            except Exception as e:  # reported below
                result["error"] = e
        t = threading.Thread(target=second)
        t.start()
        # the create is under way: its scratch dir exists (made before the cgroup step)
        assert wait_until(lambda: set(os.listdir(sbdir)) - before, 30), "the second create never started"
        # while it waits, the running sandbox answers and so does the API
        assert sb.sh("echo during", timeout=30)["stdout"] == b"during\n"
        ids = [s["id"] for s in d.list_sandboxes()]
        assert sb.id in ids
        assert t.is_alive() and not result, result  # the gate really held the create meanwhile
        gate.touch()
        t.join(120)
        assert "error" not in result, result.get("error")
        assert result["sb"].sh("echo after")["stdout"] == b"after\n"
    finally:
        gate.touch()
        if t:
            t.join(120)
        if "sb" in result:
            result["sb"].ws.close()
        sb.ws.close()
