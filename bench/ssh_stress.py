# SSH byte-exactness under stress (not a speed benchmark; not in the suite):
# rounds of N parallel sftp put+get of 20 MiB each, then an `ssh HOST cat`
# of the same 20 MiB read slowly (16 KiB, then 1 ms), every copy compared
# with what was sent; a difference is reported with its first offset. It is
# how the hutch-ssh pump that nested in libssh's loop was caught (docs/ssh.md,
# "Byte order"): with that hutch-ssh, 3 of 15 sftp transfers failed at load
# 230 ("Received message too long", hutch-ssh crashed), 8 of 9 slow reads.
# Run through the test harness, which gives it a network namespace:
#   SSH_STRESS_ROUNDS=8 SSH_STRESS_PAR=3 HUTCH_TEST_ONLY=py \
#     HUTCH_PYTEST_TARGETS=bench/ssh_stress.py HUTCH_PYTEST_ARGS=-s scripts/test.sh
import os
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from hutchlib import Hutchd, free_port  # noqa: E402
from test_ssh import expose_ssh, sftp_batch, ssh_argv  # noqa: E402

ROUNDS = int(os.environ.get("SSH_STRESS_ROUNDS", "5"))
PAR = int(os.environ.get("SSH_STRESS_PAR", "3"))


@pytest.fixture(scope="module")
def d():
    h = Hutchd(tag="sshstress", extra_args=["--ssh-port", str(free_port())]).start()
    yield h
    h.stop()


def first_diff(a, b):
    """The first offset where a and b differ (the shorter one's length if one is a prefix), or -1."""
    n = min(len(a), len(b))
    i = next((i for i in range(0, n, 65536) if a[i:i + 65536] != b[i:i + 65536]), None)
    if i is not None:
        return next(j for j in range(i, min(i + 65536, n)) if a[j] != b[j])
    return -1 if len(a) == len(b) else n


def slow_cat(tmp_path, info, path):
    p = subprocess.Popen(ssh_argv(tmp_path, info) + [f"cat {path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(300, p.kill)
    watchdog.start()
    out = bytearray()
    try:
        while chunk := p.stdout.read1(16384):
            out += chunk
            time.sleep(0.001)
        err = p.stderr.read()
        return p.wait(timeout=60), bytes(out), err
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()


def test_parallel_sftp_and_slow_reads_stay_byte_exact(d, tmp_path):
    sb = d.create_sandbox()
    try:
        info = expose_ssh(d, sb)
        data = os.urandom(20 << 20)
        src = tmp_path / "big"
        src.write_bytes(data)
        fails = []
        for rnd in range(ROUNDS):
            results = {}

            def sftp_job(k):
                sub = tmp_path / f"j{k}"
                sub.mkdir(exist_ok=True)
                back = sub / "back"
                back.unlink(missing_ok=True)
                r = sftp_batch(sub, info, f"put {src} /tmp/big{k}\nget /tmp/big{k} {back}\n", timeout=600)
                got = back.read_bytes() if back.exists() else b""
                results[f"sftp{k}"] = (r.returncode, first_diff(data, got), r.stderr[-300:])

            jobs = [threading.Thread(target=sftp_job, args=(k,)) for k in range(PAR)]
            for t in jobs:
                t.start()
            for t in jobs:
                t.join()
            sub = tmp_path / "cat"
            sub.mkdir(exist_ok=True)
            rc, out, err = slow_cat(sub, info, "/tmp/big0")
            results["slow cat"] = (rc, first_diff(data, out), err[-300:])
            print(f"round {rnd}: " + ", ".join(f"{k} rc={v[0]} diff@{v[1]}" for k, v in sorted(results.items())),
                  flush=True)
            fails += [(rnd, k, v) for k, v in results.items() if v[0] != 0 or v[1] != -1]
        assert not fails, (fails, d.log_tail(60))
    finally:
        sb.ws.close()
