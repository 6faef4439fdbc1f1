#!/usr/bin/env python3
# Network bench (issue 4/5): bulk throughput through hutch-proxy vs a direct
# connection in the same run, added connect latency, many concurrent
# connections. Builds its own namespaces and hutchd (tests/integration/netenv.py);
# the upstream lives in a namespace it made. Prints JSON to stdout.
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from netenv import NetEnv, UP_A  # noqa: E402

MB = int(os.environ.get("NET_BENCH_MB", "1000"))
SINK = r'''
import socket, sys, threading
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(2048)
    while True:
        c, _ = s.accept()
        threading.Thread(target=fn, args=(c,), daemon=True).start()
def source(c):  # sends N MiB (first line from the client), then closes
    n = int(c.makefile().readline()) << 20; buf = b"\0" * (4 << 20)
    while n > 0:
        k = min(n, len(buf)); c.sendall(buf[:k]); n -= k
    c.close()
def hold(c):  # keeps the connection until the client closes
    c.recv(1); c.close()
threading.Thread(target=serve, args=(9000, source), daemon=True).start()
threading.Thread(target=serve, args=(9001, hold), daemon=True).start()
print("ready", flush=True); threading.Event().wait()
'''
CLIENT = r'''
import socket, sys, time
mb, host = int(sys.argv[1]), sys.argv[2]
t0 = time.monotonic(); s = socket.create_connection((host, 9000)); s.sendall(b"%d\n" % mb)
buf = bytearray(1 << 20); got = 0
while True:
    k = s.recv_into(buf)
    if not k: break
    got += k
dt = time.monotonic() - t0
lat = []
for _ in range(200):
    a = time.monotonic(); c = socket.create_connection((host, 9001)); lat.append(time.monotonic() - a); c.close()
lat.sort()
print(got / dt / 1e6, lat[len(lat) // 2] * 1e3)
'''
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
        script = os.path.join(env.tmp, "sink.py")
        with open(script, "w") as f:
            f.write(SINK)
        sink = subprocess.Popen(["ip", "netns", "exec", env.u, sys.executable, script, UP_A],
                                stdout=subprocess.PIPE, text=True)
        assert "ready" in sink.stdout.readline()
        env.start_hutchd(tag="nbench")
        # direct: the same client from hutchd's namespace, no proxy
        d = subprocess.run([sys.executable, "-c", CLIENT, str(MB), UP_A], capture_output=True, text=True, check=True)
        res["direct_mbps"], res["direct_connect_ms"] = map(float, d.stdout.split())
        sb = env.hutchd.create_sandbox({"allow_net": [UP_A]})
        r = sb.run("python3", ["-c", CLIENT, str(MB), UP_A], timeout=300)
        assert r["code"] == 0, r["stderr"]
        res["proxy_mbps"], res["proxy_connect_ms"] = map(float, r["stdout"].split())
        res["throughput_ratio"] = res["proxy_mbps"] / res["direct_mbps"]
        res["added_connect_ms"] = res["proxy_connect_ms"] - res["direct_connect_ms"]
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
