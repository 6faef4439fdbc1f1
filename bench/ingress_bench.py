# Ingress benchmark (issue 8 "Speed"): wrk against a small C server inside a
# sandbox, through its exposed URL (TLS + hutch-ingress) and directly (wrk in
# the sandbox's network namespace, plain HTTP to 127.0.0.1), in one run.
# Run through the test harness, which gives it a network namespace:
#   HUTCH_TEST_ONLY=py HUTCH_PYTEST_TARGETS=bench/ingress_bench.py HUTCH_PYTEST_ARGS=-s scripts/test.sh
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from hutchlib import Hutchd, sandbox_cgroup_pids  # noqa: E402
from expose_util import Ingress, expose  # noqa: E402

SECS = os.environ.get("BENCH_SECS", "5")
CONNS = os.environ.get("BENCH_CONNS", "16")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def wrk(url, netns=None):
    cmd = ["wrk", "-t1", f"-c{CONNS}", f"-d{SECS}s", "--latency", url]
    if netns:
        cmd = ["nsenter", f"--net={netns}", "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return rps, float(p50.group(1)) * scale, out


def test_ingress_vs_direct():
    src = os.path.join(os.path.dirname(__file__), "tiny_http.c")
    os.makedirs(os.environ.get("HUTCH_TEST_TMP", "/tmp"), exist_ok=True)
    binary = os.path.join(os.environ.get("HUTCH_TEST_TMP", "/tmp"), "tiny_http")
    subprocess.run(["gcc", "-O2", "-o", binary, src], check=True)
    os.environ.pop("HUTCH_DAEMON", None)  # the optimized build, not the sanitizer one the tests use
    d = Hutchd(tag="ibench").start()
    try:
        sb = d.create_sandbox()
        r = sb.run("bash", ["-c", "cat > /tmp/tiny_http && chmod +x /tmp/tiny_http"],
                   stdin=open(binary, "rb").read())
        assert r["code"] == 0, r
        sb.call("spawn", {"command": "/tmp/tiny_http", "args": ["9000"], "stdout": "null", "stderr": "null"})
        time.sleep(0.5)
        url = expose(d, sb, 9000)
        Ingress(d).get(url, "/")
        pid = sorted(sandbox_cgroup_pids(d.cgroup_name, sb.id))[0]
        netns = f"/proc/{pid}/ns/net"
        import resource
        direct = wrk("http://127.0.0.1:9000/", netns)
        ipid = ingress_pid(d)
        c0, w0 = cpu_s(ipid), resource.getrusage(resource.RUSAGE_CHILDREN)
        perf = None
        if os.environ.get("BENCH_PERF"):  # a profile of the ingress while it serves
            perf = subprocess.Popen(["perf", "record", "-g", "-p", str(ipid), "-o", os.environ["BENCH_PERF"], "--",
                                     "sleep", SECS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        via = wrk(url + "/")
        if perf:
            perf.wait(timeout=60)
        c1, w1 = cpu_s(ipid), resource.getrusage(resource.RUSAGE_CHILDREN)
        secs = float(SECS)
        print(f"\ningress bench ({CONNS} connections, {SECS} s each, keep-alive):")
        print(f"  direct (plain HTTP in the sandbox's netns): {direct[0]:10.0f} req/s  p50 {direct[1]:.3f} ms")
        print(f"  through the exposed URL (TLS + ingress):    {via[0]:10.0f} req/s  p50 {via[1]:.3f} ms")
        print(f"  ratio {via[0] / direct[0] * 100:.0f} %, added p50 {via[1] - direct[1]:.3f} ms")
        print(f"  CPU while through the URL: hutch-ingress {(c1 - c0) / secs * 100:.0f} %, "
              f"wrk {((w1.ru_utime + w1.ru_stime) - (w0.ru_utime + w0.ru_stime)) / secs * 100:.0f} % "
              f"({os.cpu_count()} CPUs, shared with other work on this machine)")
        sb.ws.close()
    finally:
        d.stop()
