#!/usr/bin/env python3
# Network bench (issue 4/5): bulk throughput both ways through hutch-proxy vs a
# direct connection in the same run, added latency to the first response byte,
# many concurrent connections. Source/sink: bench/net_blast.c (C, so Python is
# not the bottleneck), copied into the sandbox with `hutch cp`. Builds its own namespaces and hutchd (tests/integration/netenv.py);
# the upstream lives in a namespace it made. Prints JSON to stdout.
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from netenv import NetEnv, UP_A  # noqa: E402

MB = int(os.environ.get("NET_BENCH_MB", "1000"))
PINGS = 200
RUNS = 3
# bench/net_blast.c, built by bench/run.sh (NET_BLAST); built here when run alone
BLAST = os.environ.get("NET_BLAST", "")


def blast_binary(tmp):
    if BLAST:
        return BLAST
    out = os.path.join(tmp, "net_blast")
    subprocess.run(["cc", "-std=c17", "-O2", "-pthread", "-o", out, os.path.join(HERE, "net_blast.c")], check=True)
    return out


def measure(run):
    """run(args) -> stdout of net_blast with those args, on one side. Throughput
    is the median of RUNS transfers (another tenant of 2 cores -- hutchd filling
    its warm pool -- moves single runs by 30 %); latency: connect + 5-byte
    request until the first response byte, p50/p99 of PINGS."""
    r = {}
    for mode in ("get", "put"):
        r[mode + "_mbps"] = statistics.median(float(run([mode, UP_A, str(MB)])) for _ in range(RUNS))
    r["ping_p50_ms"], r["ping_p99_ms"] = map(float, run(["ping", UP_A, str(PINGS)]).split())
    return r


HOLD = r'''
import socket, sys, time
n, host = int(sys.argv[1]), sys.argv[2]; socks = []
for _ in range(n): socks.append(socket.create_connection((host, 9001), timeout=20))
time.sleep(2); print(len(socks), flush=True)
'''


def main():
    env = NetEnv().start()
    sink = None
    res = {}
    try:
        blast = blast_binary(env.tmp)
        sink = subprocess.Popen(["ip", "netns", "exec", env.u, blast, "serve", UP_A],
                                stdout=subprocess.PIPE, text=True)
        assert "ready" in sink.stdout.readline()
        hd = env.start_hutchd(tag="nbench")
        # direct: the same client from hutchd's namespace, no proxy
        d = measure(lambda a: subprocess.run([blast, *a], capture_output=True, text=True, check=True).stdout)
        sb = hd.create_sandbox({"allow_net": [UP_A]})
        hd.cli("cp", blast, f"{sb.id}:/tmp/net_blast", check=True)

        def in_sandbox(a):
            r = sb.run("/tmp/net_blast", a, timeout=300)
            assert r["code"] == 0, r["stderr"]
            return r["stdout"].decode()
        sb.run("chmod", ["755", "/tmp/net_blast"])
        p = measure(in_sandbox)
        for k, v in d.items():
            res["direct_" + k] = v
        for k, v in p.items():
            res["proxy_" + k] = v
        res["get_ratio"] = p["get_mbps"] / d["get_mbps"]
        res["put_ratio"] = p["put_mbps"] / d["put_mbps"]
        res["added_ping_p50_ms"] = p["ping_p50_ms"] - d["ping_p50_ms"]
        sb.ws.close()
        # 1000 concurrent connections from 10 sandboxes
        sbs = [env.hutchd.create_sandbox({"allow_net": [UP_A]}) for _ in range(10)]
        t0 = time.monotonic()
        rids = []
        for s in sbs:
            rids.append(s.call("spawn", {"command": "python3", "args": ["-c", HOLD, "100", UP_A],
                                         "stdout": "piped", "stderr": "piped"}))
        held = 0
        for s, sp in zip(sbs, rids):
            st = s.call("processWait", {"pid": sp["pid"]}, timeout=120)
            deadline = time.monotonic() + 10
            while sp["stdoutStreamId"] not in s.ended and time.monotonic() < deadline:
                s._pump_one(1)
            out = bytes(s.streams.get(sp["stdoutStreamId"], b"")).decode().strip()
            if st["code"] == 0 and out.isdigit():
                held += int(out)
        res["concurrent_held"] = held
        res["concurrent_s"] = time.monotonic() - t0
        for s in sbs:
            s.ws.close()
    finally:
        if sink:
            sink.kill()
            sink.wait()
        env.stop()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
