# SSH benchmark (issue 8): the round trip of a trivial command through the
# real OpenSSH client (a new connection each time, and over one kept-open
# connection: ControlMaster) against `hutch exec` (a new WebSocket each time)
# and the SDK protocol's own spawn + wait on an open WebSocket, in one run.
# Run through the test harness, which gives it a network namespace:
#   HUTCH_TEST_ONLY=py HUTCH_PYTEST_TARGETS=bench/ssh_bench.py HUTCH_PYTEST_ARGS=-s scripts/test.sh
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from hutchlib import Hutchd, free_port  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "30"))


def timed(fn, runs=RUNS):
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out), sorted(out)[int(len(out) * 0.9) - 1]


def test_ssh_exec_round_trip_vs_hutch_exec():
    d = Hutchd(tag="sshbench", extra_args=["--ssh-port", str(free_port())]).start()
    tmp = tempfile.mkdtemp(prefix="hutch-sshbench-")
    master = None
    try:
        sb = d.create_sandbox()
        r = d.http("POST", f"/api/v3/sandbox/{sb.id}/expose/ssh", body=b"{}")
        info = r.json()
        kh = os.path.join(tmp, "known_hosts")
        with open(kh, "w") as f:
            f.write(f"[{info['hostname']}]:{info['port']} {info['hostKey']}\n")
        base = ["ssh", "-F", "/dev/null", "-p", str(info["port"]), "-o", f"UserKnownHostsFile={kh}", "-o",
                "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null"]
        dest = f"{info['username']}@{info['hostname']}"
        ctl = os.path.join(tmp, "ctl")
        master = subprocess.Popen(base + ["-N", "-o", "ControlMaster=yes", "-o", f"ControlPath={ctl}", dest])
        while not os.path.exists(ctl):
            time.sleep(0.05)

        def run(argv):
            assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0

        fresh = timed(lambda: run(base + [dest, "true"]))
        mux = timed(lambda: run(base + ["-o", f"ControlPath={ctl}", dest, "true"]))
        cli = timed(lambda: d.cli("ssh", sb.id, "--", "true", env={"HOME": tmp, "XDG_CONFIG_HOME": ""}))
        hexec = timed(lambda: d.cli("exec", sb.id, "--", "true"))
        rpc = timed(lambda: sb.run("true"))
        print(f"\nssh bench (median / p90 of {RUNS} runs of `true`, ms):")
        print(f"  ssh, a new connection (key exchange, login, exec):  {fresh[0]:7.1f} / {fresh[1]:7.1f}")
        print(f"  ssh over one open connection (ControlMaster):       {mux[0]:7.1f} / {mux[1]:7.1f}")
        print(f"  hutch ssh (expose/ssh + known_hosts + ssh):          {cli[0]:7.1f} / {cli[1]:7.1f}")
        print(f"  hutch exec (a new WebSocket):                       {hexec[0]:7.1f} / {hexec[1]:7.1f}")
        print(f"  spawn + processWait on an open WebSocket:           {rpc[0]:7.1f} / {rpc[1]:7.1f}")
        sb.ws.close()
    finally:
        if master:
            master.terminate()
            master.wait(timeout=10)
        d.stop()
