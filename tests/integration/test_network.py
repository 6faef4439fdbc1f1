# Sandbox networking: allowNet by host name through the transparent proxy,
# DNS for allowed names only, audit and byte counts, plain tools without any
# proxy settings. hutchd runs in a throwaway network namespace (netenv.py).
import time
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netenv import running, out, wait_audit  # noqa: E402


@pytest.fixture(scope="module")
def net():
    with running() as env:
        yield env


@pytest.fixture
def sb_factory(net):
    made = []

    def make(allow_net=...):
        cfg = {} if allow_net is ... else {"allow_net": allow_net}
        sb = net.hutchd.create_sandbox(cfg)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.ws.close()


def test_table_is_ours_only(net):
    tables = net.nft_tables()
    assert f"table inet hutch_{net.hutchd.cgroup_name.replace('-', '_')}" in tables
    assert [t for t in tables.splitlines() if t.strip()] == [l for l in tables.splitlines() if "hutch" in l]


def test_allowed_name_over_http_https_and_both_families(sb_factory):
    sb = sb_factory(["example.test"])
    r = sb.sh("curl -sS -m 5 -4 http://example.test/ && curl -sS -m 5 -6 http://example.test/ && "
              "curl -sS -m 5 -k https://example.test/")
    assert r["code"] == 0, out(r)
    o = out(r)
    assert "hello from 192.0.2.2 host=example.test" in o
    assert "hello from 2001:db8::2 host=example.test" in o


def test_plain_tools_without_proxy_settings(sb_factory):
    sb = sb_factory(["example.test"])
    r = sb.sh("python3 -c 'import urllib.request;print(urllib.request.urlopen(\"http://example.test/\").read())' "
              "&& curl -sS -m5 --noproxy '*' http://example.test/ && env | grep -ci proxy || true")
    o = out(r)
    assert o.count("hello from") == 2, o
    assert o.strip().endswith("0"), o  # no proxy variables were needed


def test_dns_answers_only_allowed_names(sb_factory):
    sb = sb_factory(["example.test", "*.wild.test"])
    # each name alone: getent's status is that of the last name it was given
    for name, addr in (("example.test", "192.0.2.2"), ("a.wild.test", "192.0.2.2"), ("b.c.wild.test", "192.0.2.2")):
        r = sb.sh(f"getent ahostsv4 {name}")
        assert r["code"] == 0 and out(r).split()[0] == addr, (name, out(r))
    for name in ("other.test", "wild.test"):  # not allowed, and the wildcard's apex: NXDOMAIN
        r = sb.sh(f"getent hosts {name}")
        assert r["code"] == 2 and out(r) == "", (name, out(r))


def test_blocked_name_gets_403_naming_host(net, sb_factory):
    sb = sb_factory(["example.test"])
    r = sb.sh("curl -sS -m5 -w '%{http_code}' --resolve other.test:80:192.0.2.3 http://other.test/")
    o = out(r)
    assert "403" in o and "other.test" in o and "allowNet" in o, o
    rep = wait_audit(net.hutchd, sb.id, lambda rep: any(a["host"] == "other.test" for a in rep["audit"]))
    blocked = [a for a in rep["audit"] if a["host"] == "other.test"]
    assert blocked and blocked[-1]["verdict"] == "blocked" and blocked[-1]["port"] == 80, rep


def test_tls_to_blocked_sni_is_reset(sb_factory):
    sb = sb_factory(["example.test"])
    r = sb.sh("curl -sS -m5 -k --resolve other.test:443:192.0.2.2 https://other.test/; echo rc=$?")
    assert "rc=35" in out(r) and "Connection reset by peer" in out(r), out(r)


def test_port_restriction(sb_factory):
    sb = sb_factory(["example.test:443"])
    r = sb.sh("curl -sS -m5 -4 -k https://example.test/; curl -sS -m5 -4 http://example.test/")
    o = out(r)
    assert "hello from 192.0.2.2" in o and "403" not in o.split("hello")[0], o
    assert "port 80 is not in allowNet" in o, o


def test_ip_literal_rules(sb_factory):
    sb = sb_factory(["192.0.2.3:80", "[2001:db8::2]"])
    r = sb.sh("curl -sS -m5 http://192.0.2.3/; curl -sS -m5 'http://[2001:db8::2]/'; curl -sS -m5 http://192.0.2.2/")
    o = out(r)
    assert "hello from 192.0.2.3" in o and "hello from 2001:db8::2" in o, o
    assert "not in allowNet" in o, o


def test_absent_allow_net_is_unrestricted_but_audited(net, sb_factory):
    sb = sb_factory()
    r = sb.sh("curl -sS -m5 -4 http://other.test/")
    assert "hello from 192.0.2.3" in out(r), out(r)
    rep = wait_audit(net.hutchd, sb.id, lambda rep: rep["bytes_in"] > 0)
    assert any(a["host"] == "other.test" and a["verdict"] == "allowed" for a in rep["audit"]), rep
    d = [d for d in rep["destinations"] if d["host"] == "other.test"]
    assert d and d[0]["bytes_in"] > 0 and d[0]["bytes_out"] > 0, rep


def test_empty_allow_net_means_loopback_only(sb_factory):
    sb = sb_factory([])
    r = sb.sh("cat /sys/class/net/*/operstate 2>/dev/null; ls /sys/class/net 2>/dev/null; "
              "python3 -c 'import socket;print(socket.if_nameindex())'; curl -sS -m3 http://192.0.2.2/; echo rc=$?")
    o = out(r)
    assert "eth0" not in o and "rc=7" in o, o


def test_bulk_transfer_and_byte_counts(net, sb_factory):
    sb = sb_factory(["example.test"])
    r = sb.sh("curl -sS -m30 -4 -o /dev/null -w '%{size_download}' http://example.test/big/20000000")
    assert out(r).strip() == "20000000", out(r)
    rep = wait_audit(net.hutchd, sb.id, lambda rep: rep["bytes_in"] >= 20000000)
    assert rep["bytes_in"] >= 20000000, rep
    # metering keeps the counts once the sandbox is gone
    d = net.hutchd
    assert d.http("DELETE", f"/api/v3/sandbox/{sb.id}").status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        u = d.http("GET", "/api/v2/usage").json()
        if u["netRxBytes"] >= 20000000:
            break
        time.sleep(0.1)
    assert u["netRxBytes"] >= 20000000 and u["netTxBytes"] > 0, u


def test_post_body_and_keepalive_same_host(sb_factory):
    sb = sb_factory(["example.test"])
    r = sb.sh("head -c 300000 /dev/zero > /tmp/b; curl -sS -m10 -4 --data-binary @/tmp/b http://example.test/p "
              "--next -sS -m10 -4 http://example.test/again")
    o = out(r)
    assert "got 300000 host=example.test" in o and "hello from 192.0.2.2" in o, o


def test_invalid_allow_net_is_rejected(net):
    from hutchlib import HandshakeError
    for bad in (["exa mple.test"], ["ex\u00e4mple.test"], ["2130706433"], ["[::1"], ["a.test:0"], "example.test"):
        with pytest.raises(HandshakeError) as ei:
            net.hutchd.create_sandbox({"allow_net": bad})
        assert ei.value.status == 400, bad


def test_network_route_needs_own_sandbox(net, sb_factory):
    sb = sb_factory(["example.test"])
    r = net.hutchd.http("GET", f"/api/v2/sandboxes/{sb.id}/network", token="nope")
    assert r.status == 401
    r = net.hutchd.http("GET", "/api/v2/sandboxes/sbx_loc_00000000000000000000/network")
    assert r.status == 404
    rep = net.hutchd.http("GET", f"/api/v2/sandboxes/{sb.id}/network").json()
    assert rep["addresses"]["ipv4"].startswith("10.200.") and rep["allow_net"] == ["example.test"]
