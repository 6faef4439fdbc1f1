#!/usr/bin/env python3
# BENCH_ONLY=exec: `hutch exec` throughput, 200 MB in (stdin), out (stdout) and
# through `cat` (both at once), over hutch's raw exec channel and over the
# JSON-RPC way (HUTCH_EXEC_RAW=0), beside a local cat and a local pipe, all in
# the same run. Env: HUTCH_CLI, HUTCH_ENDPOINT, HUTCH_TOKEN, EXEC_BENCH_DIR,
# EXEC_BENCH_MB (200), EXEC_BENCH_RUNS (3). Prints one JSON line (MB/s, medians).
import json
import os
import statistics
import subprocess
import sys
import time

CLI = os.environ["HUTCH_CLI"]
MB = int(os.environ.get("EXEC_BENCH_MB", "200"))
RUNS = int(os.environ.get("EXEC_BENCH_RUNS", "3"))
DIR = os.environ.get("EXEC_BENCH_DIR", "/tmp")
SIZE = MB * 1000 * 1000


HUTCHD = os.environ.get("HUTCHD_PID")


def daemon_cpu():
    """hutchd's CPU seconds so far (user + system), or 0 without HUTCHD_PID."""
    if not HUTCHD:
        return 0.0
    with open(f"/proc/{HUTCHD}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv, stdin_path=None, env=None):
    with open(stdin_path or os.devnull, "rb") as i, open(os.devnull, "wb") as o:
        c0, u0, t0 = daemon_cpu(), os.times(), time.monotonic()
        r = subprocess.run(argv, stdin=i, stdout=o, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        dt, u1, c1 = time.monotonic() - t0, os.times(), daemon_cpu()
    if r.returncode != 0:
        sys.exit(f"exec_bench: {argv} exited {r.returncode}: {r.stderr.decode()[-400:]}")
    client = u1.children_user + u1.children_system - u0.children_user - u0.children_system
    return dt, c1 - c0, client


def rate(out, key, argv, stdin_path=None, env=None):
    runs = [timed(argv, stdin_path, env) for _ in range(RUNS)]
    out[key + "_mbs"] = round(SIZE / 1e6 / statistics.median(r[0] for r in runs), 1)
    if HUTCHD and argv[0] == CLI:
        out[key + "_daemon_cpu_s"] = round(statistics.median(r[1] for r in runs), 2)
        out[key + "_client_cpu_s"] = round(statistics.median(r[2] for r in runs), 2)


def main():
    src = os.path.join(DIR, "exec_bench.bin")
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        left = SIZE
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
    sid = subprocess.run([CLI, "create", "--timeout", "10m"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        subprocess.run([CLI, "cp", "-q", src, f"{sid}:/tmp/big.bin"], check=True)
        out = {"size_mb": MB, "runs": RUNS}
        rate(out, "local_cat", ["cat", src])
        rate(out, "local_pipe", ["sh", "-c", 'cat "$0" | cat', src])
        # alternated, so that a change in the machine's load hits both ways alike
        for key, argv, stdin in (("in", ["--", "sh", "-c", "cat >/dev/null"], src),
                                 ("out", ["-n", "--", "cat", "/tmp/big.bin"], None), ("cat", ["--", "cat"], src)):
            for name, env in (("raw", {"HUTCH_EXEC_RAW": "1"}), ("json", {"HUTCH_EXEC_RAW": "0"})):
                rate(out, f"{name}_{key}", [CLI, "exec", sid, *argv], stdin, env)
        print(json.dumps(out))
    finally:
        subprocess.run([CLI, "kill", sid], capture_output=True)
        os.unlink(src)


main()
