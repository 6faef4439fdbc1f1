"""Metering: every stopped sandbox leaves a usage record (wall time, CPU,
peak memory) that its organization reads back from GET /api/v2/usage."""
import time

from hutchlib import wait_until


def usage(d, token=..., **q):
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    r = d.http("GET", "/api/v2/usage" + (f"?{qs}" if qs else ""), token=token)
    assert r.status == 200, r
    return r.json()


def test_a_stopped_sandbox_is_metered(make_hutchd):
    d = make_hutchd()
    before = usage(d)
    t0 = int(time.time() * 1000)
    sb = d.create_sandbox({"stop_at_ms": t0 + 120000})
    try:
        # ~0.3 s of CPU (its own CPU time: a wall-clock loop gets less on a busy machine,
        # and a warm-pool sandbox's boot is no longer billed) and ~64 MiB of memory
        r = sb.run("python3", ["-c", "import time\nb = bytearray(64 << 20)\nt = time.process_time()\n"
                                     "while time.process_time() - t < 0.3: pass"])
        assert r["code"] == 0, r
    finally:
        assert d.http("DELETE", f"/api/v3/sandbox/{sb.id}").status == 200
        sb.ws.close()
    assert wait_until(lambda: usage(d)["records"] == before["records"] + 1, 10)
    after = usage(d)
    assert after["cpuMs"] - before["cpuMs"] >= 200, after
    assert after["memPeakMb"] >= 60, after
    assert after["wallMs"] - before["wallMs"] >= 300, after
    # the range selects by start time
    assert usage(d, **{"from": t0 + 3600_000})["records"] == 0


def test_usage_is_per_organization_and_checked(make_hutchd):
    d = make_hutchd()
    r = d.http("POST", "/hutch/v1/tokens", body={"org": "other-org", "name": "metering"})
    assert r.status == 201, r
    other = r.json()["token"]
    sb = d.create_sandbox({"stop_at_ms": int(time.time() * 1000) + 60000})
    d.http("DELETE", f"/api/v3/sandbox/{sb.id}")
    sb.ws.close()
    assert wait_until(lambda: usage(d)["records"] >= 1, 10)
    assert usage(d, token=other)["records"] == 0
    assert d.http("GET", "/api/v2/usage?from=yesterday").status == 400
    assert d.http("GET", "/api/v2/usage", token=None).status == 401


def test_cli_usage_reads_the_same_numbers(make_hutchd):
    import json
    d = make_hutchd()
    sb = d.create_sandbox({"stop_at_ms": int(time.time() * 1000) + 60000})
    d.http("DELETE", f"/api/v3/sandbox/{sb.id}")
    sb.ws.close()
    assert wait_until(lambda: usage(d)["records"] == 1, 10)
    r = d.cli("usage", "--json", check=True)
    assert json.loads(r.stdout)["records"] == 1
    r = d.cli("usage", "--since", "1h", check=True)
    assert "sandboxes   1" in r.stdout
    r = d.cli("usage", "--since", "soon")
    assert r.returncode == 2 and "Invalid duration" in r.stderr
