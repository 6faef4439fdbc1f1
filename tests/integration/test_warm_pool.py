# The warm pool's size (src/daemon/core/pool.c): --warm while creates come
# one at a time; a burst (a create that finds the pool empty, or hand-overs
# less than a second apart) doubles it up to what --warm-memory holds
# (MiB / 1.25, here 8 MiB -> 6); 10 s after the burst it is --warm again and
# the sandboxes above it are stopped. Read from /metrics.
import time

from prometheus_client.parser import text_string_to_metric_families

from hutchlib import wait_until


def pool(d):
    r = d.http("GET", "/metrics")
    assert r.status == 200, r
    v = {}
    for f in text_string_to_metric_families(r.body.decode()):
        for s in f.samples:
            if s.name in ("hutch_pool_sandboxes", "hutch_pool_target"):
                v[s.name] = int(s.value)
    return v["hutch_pool_target"], v["hutch_pool_sandboxes"]


def test_a_burst_grows_the_pool_within_its_memory_bound_and_it_shrinks_back(make_hutchd):
    d = make_hutchd(extra_args=["--warm", "1", "--warm-memory", "8"])
    # control: at rest the pool is --warm
    assert wait_until(lambda: pool(d) == (1, 1), 60), pool(d)
    sbs = []
    try:
        for _ in range(4):
            sbs.append(d.create_sandbox())
        target, _ = pool(d)
        assert 2 <= target <= 6, target
        # the refill really starts more than --warm, and never more than the bound
        assert wait_until(lambda: pool(d)[1] >= 2, 60), pool(d)
        for sb in sbs:
            assert sb.sh("echo ok")["stdout"] == b"ok\n"
        seen = [pool(d) for _ in range(5)]
        assert all(t <= 6 and n <= 6 for t, n in seen), seen
    finally:
        for sb in sbs:
            sb.ws.close()
    # quiet for 10 s: back to one pooled sandbox, the others stopped
    t0 = time.monotonic()
    assert wait_until(lambda: pool(d) == (1, 1), 40), pool(d)
    assert time.monotonic() - t0 > 5, "shrank before the burst was over"
    # and a create is still a hand-over from it
    sb = d.create_sandbox()
    try:
        assert sb.sh("echo again")["stdout"] == b"again\n"
    finally:
        sb.ws.close()


def test_warm_zero_keeps_no_pool_even_in_a_burst(make_hutchd):
    d = make_hutchd(extra_args=["--warm", "0", "--warm-memory", "64"])
    sbs = [d.create_sandbox() for _ in range(3)]
    try:
        assert sbs[-1].sh("echo ok")["stdout"] == b"ok\n"  # control: creates work without a pool
        time.sleep(0.5)
        assert pool(d) == (0, 0), pool(d)
    finally:
        for sb in sbs:
            sb.ws.close()
