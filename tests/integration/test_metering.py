"""Metering (docs/metering.md): usage in the seed's units with cost, live
and historic, totals equal in every grouping; per-command usage from the
rusage hutch-init reaps; Prometheus /metrics; the audit of who did what."""
import json
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hutchlib import SANDBOX_ID_RE, wait_until

CPU_HOUR = 50000          # micro-dollars, Deno's published defaults
MEM_GIB_HOUR = 16000
MIB_MS_PER_GIB_HOUR = 1024 * 3600 * 1000
US_PER_HOUR = 3600 * 10**6

# Burns CPU time (not wall time) of its own process: immune to a busy machine.
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def now_ms():
    return int(time.time() * 1000)


def usage(d, token=..., **q):
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    r = d.http("GET", "/api/v2/usage" + (f"?{qs}" if qs else ""), token=token)
    assert r.status == 200, r
    return r.json()


def group(rep, key):
    found = [g for g in rep["groups"] if g["key"] == key]
    assert len(found) == 1, (key, rep["groups"])
    return found[0]


def make_token(d, org="default", name="metering"):
    r = d.http("POST", "/hutch/v1/tokens", body={"org": org, "name": name})
    assert r.status == 201, r
    return r.json()["token"], r.json()["id"]


def kill(d, sid):
    assert d.http("DELETE", f"/api/v3/sandbox/{sid}").status == 200


@pytest.fixture(scope="module")
def burned(hutchd):
    """A stopped sandbox (memory limit 1024 MiB, label team=a) that burned 2 CPU-seconds."""
    t_before = now_ms()
    sb = hutchd.create_sandbox({"memory_mb": 1024, "stop_at_ms": now_ms() + 300000, "labels": {"team": "a"}})
    t_created = now_ms()
    try:
        r = sb.run("python3", ["-c", BURN.format(s=2.0)])
        assert r["code"] == 0, r
        t_kill = now_ms()
        kill(hutchd, sb.id)
    finally:
        sb.ws.close()
    assert wait_until(lambda: any(g["key"] == sb.id and g["cpuUs"] > 0
                                  for g in usage(hutchd, by="sandbox")["groups"])
                      and sb.id not in [s["id"] for s in hutchd.list_sandboxes() if s["status"] == "running"], 20)
    assert wait_until(lambda: usage(hutchd)["records"] >= 1, 20)
    return {"id": sb.id, "before": t_before, "created": t_created, "kill": t_kill, "after": now_ms()}


def test_two_cpu_seconds_are_metered_and_priced(hutchd, burned):
    g = group(usage(hutchd, by="sandbox"), burned["id"])
    assert 1.8e6 <= g["cpuUs"] <= 2.2e6, g
    assert abs(g["cpuHours"] - g["cpuUs"] / US_PER_HOUR) < 1e-9
    # priced per UTC-day piece, each rounded down: one piece, or two if it ran over midnight
    exact = g["cpuUs"] * CPU_HOUR // US_PER_HOUR
    assert exact - 1 <= g["cpuCostMicroUsd"] <= exact, g
    assert 24 <= g["cpuCostMicroUsd"] <= 31, g  # 2 s at $0.05/h is 27.8 µ$


def test_memory_gib_hours_are_the_limit_over_the_lifetime(hutchd, burned):
    g = group(usage(hutchd, by="sandbox"), burned["id"])
    assert g["memoryMibMs"] % 1024 == 0, g        # 1024 MiB held for a whole number of ms
    lifetime = g["memoryMibMs"] // 1024
    assert burned["kill"] - burned["created"] <= lifetime <= burned["after"] - burned["before"], (g, burned)
    assert abs(g["memoryGibHours"] - lifetime / 3600000) < 1e-9
    exact = g["memoryMibMs"] * MEM_GIB_HOUR // MIB_MS_PER_GIB_HOUR
    assert exact - 1 <= g["memoryCostMicroUsd"] <= exact, g
    assert g["costMicroUsd"] == g["cpuCostMicroUsd"] + g["memoryCostMicroUsd"] + g["volumeCostMicroUsd"]


def test_totals_are_equal_in_every_grouping(hutchd, burned):
    # a second stopped sandbox with another label value, one with none
    for labels in ({"team": "b"}, {}):
        sb = hutchd.create_sandbox({"stop_at_ms": now_ms() + 120000, "labels": labels})
        try:
            assert sb.run("python3", ["-c", BURN.format(s=0.3)])["code"] == 0
            kill(hutchd, sb.id)
        finally:
            sb.ws.close()
    assert wait_until(lambda: usage(hutchd)["records"] >= 3, 20)
    assert wait_until(lambda: not [s for s in hutchd.list_sandboxes() if s["status"] == "running"], 20)
    to = now_ms()
    reps = {by: usage(hutchd, to=to, **q) for by, q in
            {"org": {}, "sandbox": {"by": "sandbox"}, "day": {"by": "day"},
             "label": {"by": "label", "label": "team"}}.items()}
    keys = ("cpuUs", "memoryMibMs", "volumeMibMs", "egressBytes", "cpuCostMicroUsd", "memoryCostMicroUsd",
            "volumeCostMicroUsd", "costMicroUsd")
    total = reps["org"]["total"]
    assert total["cpuUs"] > 2e6 and total["memoryMibMs"] > 0, total
    for by, rep in reps.items():
        assert rep["total"] == total or {k: rep["total"][k] for k in keys} == {k: total[k] for k in keys}, by
        for k in keys:
            assert sum(g[k] for g in rep["groups"]) == total[k], (by, k, rep["groups"])
    assert len(reps["sandbox"]["groups"]) == 3
    assert {g["key"] for g in reps["label"]["groups"]} == {"a", "b", None}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", g["key"]) for g in reps["day"]["groups"])
    # the old fields still answer as before
    assert reps["org"]["records"] == 3 and reps["org"]["cpuMs"] >= 2000
    # a range clips by time: nothing before the first sandbox, nothing after the last
    assert usage(hutchd, to=burned["before"] - 1)["total"]["memoryMibMs"] == 0
    assert usage(hutchd, **{"from": to + 1000, "to": to + 2000})["total"]["costMicroUsd"] == 0


def test_bad_grouping_is_refused(hutchd):
    r = hutchd.http("GET", "/api/v2/usage?by=week")
    assert r.status == 400 and r.json()["code"] == "INVALID_GROUPING", r
    r = hutchd.http("GET", "/api/v2/usage?by=label&label=no%20spaces")
    assert r.status == 400 and r.json()["code"] == "INVALID_GROUPING", r
    assert hutchd.http("GET", "/api/v2/usage?by=label&label=team").status == 200   # the control
    other, _ = make_token(hutchd, org="other-org", name="peek")
    r = hutchd.http("GET", "/api/v2/usage?org=default", token=other)
    assert r.status == 403 and r.json()["code"] == "FORBIDDEN", r
    assert hutchd.http("GET", "/api/v2/usage?org=other-org").status == 200            # an admin may


def test_a_running_sandbox_shows_up_live(hutchd):
    sb = hutchd.create_sandbox({"memory_mb": 1024, "stop_at_ms": now_ms() + 120000, "labels": {"team": "live"}})
    try:
        assert sb.run("python3", ["-c", BURN.format(s=0.5)])["code"] == 0
        first = group(usage(hutchd, by="sandbox"), sb.id)
        assert first["cpuUs"] >= 0.45e6 and first["memoryMibMs"] > 0, first
        rep = usage(hutchd, by="label", label="team")
        assert rep["total"]["running"] >= 1
        assert group(rep, "live")["cpuUs"] >= 0.45e6
        time.sleep(0.3)
        later = group(usage(hutchd, by="sandbox"), sb.id)
        assert later["memoryMibMs"] >= first["memoryMibMs"] + 1024 * 300, (first, later)
    finally:
        kill(hutchd, sb.id)
        sb.ws.close()


# ---------------------------------------------------------------- per-command usage

def processes(d, sid, **q):
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    r = d.http("GET", f"/api/v2/sandboxes/{sid}/processes" + (f"?{qs}" if qs else ""))
    assert r.status == 200, r
    return r.json()


def test_per_command_usage_of_a_known_allocation_and_burn(hutchd, sandbox):
    alloc = sandbox.run("python3", ["-c", "b = b'x' * (200 << 20)\nprint(len(b))"])
    assert alloc["code"] == 0, alloc
    burn = sandbox.run("python3", ["-c", BURN.format(s=1.0)])
    sleep = sandbox.run("sleep", ["0.5"])
    rep = processes(hutchd, sandbox.id)
    by_pid = {p["pid"]: p for p in rep["processes"]}
    a, b, s = by_pid[alloc["pid"]], by_pid[burn["pid"]], by_pid[sleep["pid"]]
    assert a["maxRssKib"] >= 200 * 1024, a
    assert 1.0e6 <= b["cpuUs"] <= 1.3e6, b
    assert b["cpuUs"] == b["cpuUserUs"] + b["cpuSystemUs"]
    assert b["wallUs"] >= b["cpuUs"] * 0.9, b
    assert s["wallUs"] >= 0.5e6 and s["cpuUs"] < 0.2e6, s
    assert b["maxRssKib"] < 200 * 1024, b                   # per command, not the sandbox's peak
    assert a["code"] == 0 and a["signal"] is None and rep["dropped"] == 0
    # ?pid= selects one
    assert [p["pid"] for p in processes(hutchd, sandbox.id, pid=burn["pid"])["processes"]] == [burn["pid"]]


def test_per_command_usage_is_bounded(hutchd, sandbox):
    # 1,000 kept: a thousand and five short commands drop the oldest five
    r = sandbox.run("bash", ["-c", "true"])
    first = r["pid"]
    for _ in range(1004):
        assert sandbox.run("true")["code"] == 0
    rep = processes(hutchd, sandbox.id)
    assert len(rep["processes"]) == 1000 and rep["dropped"] == 5, (len(rep["processes"]), rep["dropped"])
    assert first not in [p["pid"] for p in rep["processes"]]


def test_processes_of_another_orgs_sandbox_are_not_found(hutchd, sandbox):
    other, _ = make_token(hutchd, org="other-org", name="procs")
    r = hutchd.http("GET", f"/api/v2/sandboxes/{sandbox.id}/processes", token=other)
    assert r.status == 404 and r.json()["code"] == "SANDBOX_NOT_FOUND", r
    assert hutchd.http("GET", f"/api/v2/sandboxes/{sandbox.id}/processes").status == 200


# ---------------------------------------------------------------- /metrics

def scrape(d, token=...):
    r = d.http("GET", "/metrics", token=token)
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"), r.headers
    fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    samples = {}
    for f in fams.values():
        for s in f.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return fams, samples


def test_metrics_parse_and_counters_move(hutchd):
    fams, before = scrape(hutchd)
    types = {n: f.type for n, f in fams.items()}
    # the parser strips _total from counter family names
    for name, t in {"hutch_sandboxes": "gauge", "hutch_pool_sandboxes": "gauge",
                    "hutch_sandbox_creates": "counter", "hutch_sandbox_create_duration_seconds": "histogram",
                    "hutch_agent_bytes": "counter", "hutch_websocket_bytes": "counter",
                    "hutch_proxy_connections": "counter", "hutch_proxy_bytes": "counter",
                    "hutch_secret_substitutions": "counter", "process_resident_memory_bytes": "gauge",
                    "process_open_fds": "gauge"}.items():
        assert types.get(name) == t, (name, types.get(name))
    assert before[("process_open_fds", ())] > 3
    assert before[("process_resident_memory_bytes", ())] > 1 << 20

    def v(samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    sb = hutchd.create_sandbox({"stop_at_ms": now_ms() + 60000})
    try:
        assert sb.run("true")["code"] == 0
        _, mid = scrape(hutchd)
        assert v(mid, "hutch_sandboxes", state="running") >= 1
    finally:
        kill(hutchd, sb.id)
        sb.ws.close()
    _, after = scrape(hutchd)
    assert v(after, "hutch_sandbox_creates_total", outcome="ok") == v(before, "hutch_sandbox_creates_total",
                                                                       outcome="ok") + 1
    assert v(after, "hutch_sandbox_create_duration_seconds_count") == v(
        before, "hutch_sandbox_create_duration_seconds_count") + 1
    assert v(after, "hutch_sandbox_create_duration_seconds_bucket", le="+Inf") == v(
        after, "hutch_sandbox_create_duration_seconds_count")
    assert v(after, "hutch_rpc_requests_total", method="spawn", outcome="dispatched") >= v(
        before, "hutch_rpc_requests_total", method="spawn", outcome="dispatched") + 1
    assert v(after, "hutch_rpc_requests_total", method="processWait", outcome="dispatched") >= 1
    for d in ("in", "out"):
        assert v(after, "hutch_agent_bytes_total", direction=d) > v(before, "hutch_agent_bytes_total", direction=d)
        assert v(after, "hutch_websocket_bytes_total", direction=d) > v(before, "hutch_websocket_bytes_total",
                                                                        direction=d)


def test_metrics_need_the_admin_token(hutchd):
    user, _ = make_token(hutchd, name="not-admin")
    r = hutchd.http("GET", "/metrics", token=None)
    assert r.status == 401 and r.json()["code"] == "INVALID_TOKEN", r
    r = hutchd.http("GET", "/metrics", token=user)
    assert r.status == 403 and r.json()["code"] == "FORBIDDEN", r
    assert hutchd.http("GET", "/api/v2/sandboxes", token=user).status == 200   # the token itself works
    scrape(hutchd)                                                            # and the admin one scrapes


# ---------------------------------------------------------------- audit

def audit(d, token=..., **q):
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    r = d.http("GET", "/api/v2/audit" + (f"?{qs}" if qs else ""), token=token)
    assert r.status == 200, r
    return r.json()


def test_audit_names_the_token_that_created_extended_and_killed(hutchd):
    tok, tok_id = make_token(hutchd, name="auditor")
    since = now_ms()
    sb = hutchd.create_sandbox({"stop_at_ms": now_ms() + 60000}, token=tok)
    try:
        r = hutchd.http("PATCH", f"/api/v3/sandbox/{sb.id}", body={"stop_at_ms": now_ms() + 120000}, token=tok)
        assert r.status == 200, r
        assert hutchd.http("DELETE", f"/api/v3/sandbox/{sb.id}", token=tok).status == 200
    finally:
        sb.ws.close()
    entries = [e for e in audit(hutchd, since=since)["entries"] if e["target"] == sb.id]
    assert [e["action"] for e in entries] == ["create", "extend", "kill"], entries
    assert all(e["tokenId"] == tok_id for e in entries), entries
    assert entries[0]["timeMs"] >= since and "stop_at_ms" in entries[1]["detail"]
    # per organization: another org sees none of it; limit bounds the answer
    other, _ = make_token(hutchd, org="other-org", name="audit-peek")
    assert all(e["target"] != sb.id for e in audit(hutchd, token=other)["entries"])
    one = audit(hutchd, since=since, limit=1)
    assert len(one["entries"]) == 1 and one["more"] is True
    assert hutchd.http("GET", "/api/v2/audit?limit=0").status == 400
    assert hutchd.http("GET", "/api/v2/audit", token=None).status == 401


# ---------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def cli_sb(hutchd):
    r = hutchd.cli("create", "--timeout", "5m", "--label", "team=cli", check=True)
    sid = r.stdout.strip()
    assert SANDBOX_ID_RE.match(sid), r.stdout
    yield sid
    hutchd.cli("kill", sid)


def test_cli_exec_stats_prints_the_commands_usage(hutchd, cli_sb):
    r = hutchd.cli("exec", cli_sb, "--stats", "--", "python3", "-c", "b = b'x' * (200 << 20)")
    assert r.returncode == 0, r.stderr
    m = re.search(r"hutch: pid (\d+): cpu ([\d.]+) s .* peak rss (\d+) KiB, block read \d+ B, "
                  r"block write \d+ B, wall ([\d.]+) s", r.stderr)
    assert m, r.stderr
    assert int(m.group(3)) >= 200 * 1024
    assert r.stdout == ""                                   # stats go to stderr only
    r = hutchd.cli("exec", cli_sb, "--", "true")
    assert r.returncode == 0 and "peak rss" not in r.stderr  # and only when asked


def test_cli_usage_by_groupings(hutchd, cli_sb, burned):
    for by, key in (("sandbox", burned["id"]), ("day", time.strftime("%Y-%m-%d", time.gmtime())),
                    ("label=team", "a")):
        r = hutchd.cli("usage", "--by", by, check=True)
        assert re.search(rf"^{re.escape(key)}\s+[\d.]+", r.stdout, re.M), (by, r.stdout)
        assert re.search(r"^total\s+[\d.]+", r.stdout, re.M), r.stdout
        assert "CPU-h" in r.stdout and "TOTAL $" in r.stdout
    j = json.loads(hutchd.cli("usage", "--by", "label=team", "--json", check=True).stdout)
    assert j["by"] == "label" and j["label"] == "team" and j["prices"]["cpuHourMicroUsd"] == CPU_HOUR
    assert any(g["key"] == "cli" for g in j["groups"])       # the running CLI sandbox, live
    r = hutchd.cli("usage", "--by", "week")
    assert r.returncode == 2 and "--by" in r.stderr


def test_cli_audit_lists_the_create(hutchd, cli_sb):
    r = hutchd.cli("audit", "--since", "1h", check=True)
    assert re.search(rf"\bcreate\s+{cli_sb}\b", r.stdout), r.stdout
    j = json.loads(hutchd.cli("audit", "--json", "--limit", "1000", check=True).stdout)
    assert any(e["action"] == "create" and e["target"] == cli_sb for e in j["entries"])
    r = hutchd.cli("audit", "--limit", "0")
    assert r.returncode == 2
