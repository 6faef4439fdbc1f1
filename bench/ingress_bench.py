#!/usr/bin/env python3
# Ingress benchmark (issue 8 "Speed"): wrk against bench/tiny_http.c inside a
# sandbox, in one run, interleaved round by round:
#   direct HTTP   wrk in the sandbox's network namespace, plain HTTP to 127.0.0.1 (the "direct")
#   direct HTTPS  the same server with TLS (P-256 key, as the ingress): like for like, both terminate TLS
#   ingress       wrk to the exposed URL: TLS + hutch-ingress + the upstream hop
#   relay         wrk in the sandbox's namespace -> bench/tiny_relay.c -> the server: a second hop and nothing
#                 else (no TLS, no HTTP, no netfilter), the ceiling of any reverse proxy in a process of its
#                 own. The relay runs in the sandbox's network namespace but, like hutch-ingress and wrk,
#                 outside its cgroup: on a loaded machine the sandbox's cgroup gets one fair share of CPU
# Each at 16 keep-alive connections (requests per second, p50) and at 1
# connection (p50 with no queueing: the latency the hop itself adds). Also
# the CPU time per request of each process on each way (wrk, the server,
# hutch-ingress), user and kernel apart. Prints JSON (the last line) for
# bench/report.py. bench/run.sh runs it in its network namespace; alone:
#   ip netns add x && ip -n x link set lo up && nsenter --net=/run/netns/x python3 bench/ingress_bench.py
# INGRESS_BASELINE=/path/to/an/older/hutch-ingress adds the way "ingress_base":
# the same hutchd and sandbox, its ingress restarted on the other binary
# between runs, old and new alternating in each round (the machine's load
# falls on both alike).
import json
import resource
import signal
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from hutchlib import Hutchd, sandbox_cgroup_pids  # noqa: E402
from expose_util import Ingress, expose  # noqa: E402

SECS = os.environ.get("BENCH_SECS", "3")
CONNS = os.environ.get("BENCH_CONNS", "16")
ROUNDS = int(os.environ.get("INGRESS_ROUNDS", "3"))


def cpu_ticks(pid):
    """(user, system) clock ticks of a process."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return int(fields[11]), int(fields[12])


def children_cpu():
    """(user, system) seconds of the waited-for children: wrk (nsenter execs it)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


def pid_by_comm(pids, comm):
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == comm:
                    return p
        except OSError:
            pass
    return None


def ingress_pid(d):
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            if "(hutch-ingress)" in st and int(st[st.rindex(")") + 2:].split()[1]) == d.pid:
                return int(p)
    return None


def wrk(url, conns, netns=None):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{SECS}s", "--latency", url]
    if netns:
        cmd = ["nsenter", f"--net={netns}", "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, float(p50.group(1)) * scale, reqs


def build(tmp):
    src = os.path.join(HERE, "tiny_http.c")
    plain, tls = os.path.join(tmp, "tiny_http"), os.path.join(tmp, "tiny_https")
    subprocess.run(["cc", "-O2", "-o", plain, src], check=True)
    subprocess.run(["cc", "-O2", "-o", os.path.join(tmp, "tiny_relay"), os.path.join(HERE, "tiny_relay.c")], check=True)
    subprocess.run(["cc", "-O2", "-DTINY_TLS", "-o", tls, src, "-lssl", "-lcrypto"], check=True)
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    return plain, tls, cert, key


def use_ingress(d, bindir, binary, old_pid, url, ing):
    """Points bindir/hutch-ingress at binary and restarts the ingress on it (hutchd respawns it and resends
    the routes); returns the new pid once the URL answers again."""
    tmp = os.path.join(bindir, ".hutch-ingress.new")
    shutil.copy2(binary, tmp)
    os.replace(tmp, os.path.join(bindir, "hutch-ingress"))
    os.kill(old_pid, signal.SIGKILL)  # our own hutchd's child
    why = "no new process"
    for _ in range(200):
        time.sleep(0.05)
        pid = ingress_pid(d)
        if pid and pid != old_pid:
            try:
                st = ing.get(url, "/")[0]
                if st == 200:
                    return pid
                why = f"status {st}"
            except OSError as e:
                why = repr(e)
    raise AssertionError(f"hutch-ingress did not come back on {binary}: {why}")


def run():
    base = os.environ.get("HUTCH_TEST_TMP")
    if base:
        os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="hutch-ibench-", dir=base)
    plain, tls, cert, key = build(tmp)
    os.environ.pop("HUTCH_DAEMON", None)  # the optimized build, not the sanitizer one the tests use
    baseline = os.environ.get("INGRESS_BASELINE")
    bindir = None
    if baseline:  # a bin dir of our own whose hutch-ingress can be swapped under hutchd
        from hutchlib import _find_binary  # noqa: E402
        bindir = os.path.join(tmp, "bin")
        os.makedirs(bindir)
        current = _find_binary("hutch-ingress", "ingress")
        for name, sub in (("hutchd", "daemon"), ("hutch", "cli"), ("hutch-init", "init"), ("hutch-proxy", "proxy"),
                          ("hutch-ssh", "ssh"), ("hutch-ingress", "ingress")):
            shutil.copy2(_find_binary(name, sub), os.path.join(bindir, name))
        os.environ["HUTCH_BIN_DIR"] = bindir
    d = Hutchd(tag="ibench").start()
    relay_proc = None
    try:
        sb = d.create_sandbox()
        for path, dst in ((plain, "/tmp/tiny_http"), (tls, "/tmp/tiny_https"), (cert, "/tmp/cert.pem"),
                          (key, "/tmp/key.pem")):
            r = sb.run("bash", ["-c", f"cat > {dst} && chmod 755 {dst}"], stdin=open(path, "rb").read())
            assert r["code"] == 0, r
        sb.call("spawn", {"command": "/tmp/tiny_http", "args": ["9000"], "stdout": "null", "stderr": "null"})
        sb.call("spawn", {"command": "/tmp/tiny_https", "args": ["9443", "/tmp/cert.pem", "/tmp/key.pem"],
                          "stdout": "null", "stderr": "null"})
        time.sleep(0.5)
        url = expose(d, sb, 9000) + "/"
        ing = Ingress(d)
        assert ing.get(url, "/")[0] == 200
        pids = sorted(sandbox_cgroup_pids(d.cgroup_name, sb.id))
        netns = f"/proc/{pids[0]}/ns/net"
        servers = {"http": pid_by_comm(pids, "tiny_http"), "https": pid_by_comm(pids, "tiny_https")}
        relay_proc = subprocess.Popen(["nsenter", f"--net={netns}", "--", os.path.join(tmp, "tiny_relay"), "9100",
                                       "9000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        relay = relay_proc.pid  # nsenter execs the relay: the same process
        ipid = ingress_pid(d)
        ways = {"direct_http": ("http://127.0.0.1:9000/", netns, "http"),
                "direct_https": ("https://127.0.0.1:9443/", netns, "https"), "ingress": (url, None, "http"),
                "relay": ("http://127.0.0.1:9100/", netns, "http")}
        if baseline:
            ways["ingress_base"] = (url, None, "http")
        res = {k: {"rps": [], "p50": [], "p50_1": []} for k in ways}
        cpu = {k: {"reqs": 0, "wrk": [0.0, 0.0], "server": [0, 0], "front": [0, 0]} for k in ways}
        for rnd in range(ROUNDS):  # interleaved: load from other tenants falls on every way alike
            order = list(ways)
            if baseline and rnd % 2 == 1:  # old and new take turns going first
                order = ["direct_http", "ingress_base", "direct_https", "ingress", "relay"]
            elif baseline:
                order = ["direct_http", "ingress", "direct_https", "ingress_base", "relay"]
            for k in order:
                u, ns, srv = ways[k]
                sb.run("true", [])  # reads the session's pings: a silent session ends its sandbox after a minute
                if baseline and k.startswith("ingress"):
                    ipid = use_ingress(d, bindir, baseline if k == "ingress_base" else current, ipid, url, ing)
                    subprocess.run(["wrk", "-t1", f"-c{CONNS}", "-d1s", u], capture_output=True, timeout=60)  # warm
                front = relay if k == "relay" else ipid
                t0, s0, w0 = cpu_ticks(front), cpu_ticks(servers[srv]), children_cpu()
                rps, p50, n = wrk(u, CONNS, ns)
                t1, s1, w1 = cpu_ticks(front), cpu_ticks(servers[srv]), children_cpu()
                acc = cpu[k]
                acc["reqs"] += n
                for i in range(2):
                    acc["wrk"][i] += w1[i] - w0[i]
                    acc["server"][i] += s1[i] - s0[i]
                    if k.startswith("ingress") or k == "relay":
                        acc["front"][i] += t1[i] - t0[i]
                res[k]["rps"].append(rps)
                res[k]["p50"].append(p50)
                res[k]["p50_1"].append(wrk(u, 1, ns)[1])
        sb.ws.close()
    finally:
        if relay_proc:  # ours: started above
            relay_proc.kill()
            relay_proc.wait()
        leak = None
        try:
            d.stop()
        except AssertionError as e:  # the census counts every sandbox uid on the machine, others' too
            leak = e
        shutil.rmtree(tmp, ignore_errors=True)
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    ic = cpu["ingress"]
    out = {"conns": int(CONNS), "secs": float(SECS), "rounds": ROUNDS,
           "ingress_cpu_us_per_req": sum(ic["front"]) * tick / max(ic["reqs"], 1)}
    for k, v in res.items():
        out[k] = {m: statistics.median(x) for m, x in v.items()}
        out[k]["rps_all"] = v["rps"]
        c, n = cpu[k], max(cpu[k]["reqs"], 1)
        # CPU microseconds per request: [user, kernel] of each process
        out[k]["cpu_us"] = {"wrk": [round(x * 1e6 / n, 1) for x in c["wrk"]],
                            "server": [round(x * tick / n, 1) for x in c["server"]]}
        if k.startswith("ingress") or k == "relay":  # hutch-ingress, or tiny_relay
            out[k]["cpu_us"]["front"] = [round(x * tick / n, 1) for x in c["front"]]
    if leak:  # the numbers stand; the leak still fails the bench
        print(json.dumps(out))
        raise leak
    return out


def test_ingress_vs_direct():
    """Through the test harness: HUTCH_TEST_ONLY=py HUTCH_PYTEST_TARGETS=bench/ingress_bench.py
    HUTCH_PYTEST_ARGS=-s scripts/test.sh"""
    print("\n" + json.dumps(run()))


if __name__ == "__main__":
    print(json.dumps(run()))
