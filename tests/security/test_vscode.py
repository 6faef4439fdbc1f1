# VS Code in sandboxes (issue 8): the `vscode` RPC's checks, what the
# read-only layer lets a sandbox do, `hutch vscode`, and a host without the
# layer. Each refusal has its positive control. Skipped where the layer is
# not built on this machine (make vscode-layer).
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutchlib import Hutchd, RpcFailure  # noqa: E402
from expose_util import Ingress  # noqa: E402

LAYER = os.environ.get("HUTCH_VSCODE_LAYER", "/var/cache/hutch/layers/vscode-4.99.4")
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(LAYER, ".complete")),
                                reason=f"no vscode layer at {LAYER} (make vscode-layer)")


@pytest.fixture(scope="module")
def d():
    if os.geteuid() != 0:
        pytest.fail("hutchd tests need root (run scripts/test.sh as root)")
    h = Hutchd(tag="vscode").start()
    yield h
    h.stop()


def rpc_error(sb, params):
    with pytest.raises(RpcFailure) as ei:
        sb.call("vscode", params, timeout=120)
    return ei.value.error


def code_servers(sb):
    r = sb.sh("ps -eo user=,args= | grep '[c]ode-server/out/node/entry.js' || true")
    return [ln for ln in r["stdout"].decode().splitlines() if ln.strip()]


def stop(sb, pid):
    sb.call("processKill", {"pid": pid, "vscode": True})
    st = sb.call("processWait", {"pid": pid, "vscode": True}, timeout=60)
    assert st["code"] == 0 or st["signal"] == "SIGTERM", st


def test_vscode_rpc_refuses_bad_requests_before_running_anything(d):
    sb = d.create_sandbox()
    try:
        base = {"path": "/home/app", "env": {}, "extensions": []}
        cases = [
            ({**base, "path": "/"}, "root directory"),
            ({**base, "path": "--help"}, "cannot start with '-'"),
            ({**base, "path": 7}, "\"path\" must be"),
            ({**base, "env": {"A": 1}}, "env \"A\" must be a string"),
            ({**base, "env": {"A=B": "x"}}, "must be a string (names without '=')"),
            ({**base, "extensions": ["--install-extension=x"]}, "not an extension id"),
            ({**base, "extensions": ["nodot"]}, "not an extension id"),
            ({**base, "extensions": ["a.b@"]}, "not an extension id"),
            ({**base, "extensions": [f"p.e{i}" for i in range(33)]}, "at most 32"),
            ({**base, "editorSettings": []}, "\"editorSettings\" must be an object"),
            ({**base, "editorSettings": {"x": "y" * 70000}}, "larger than 65536 bytes"),
            ({**base, "disableStopButton": "yes"}, "\"disableStopButton\" must be a boolean"),
            ({**base, "env": {"EXTENSIONS_GALLERY": "{not json"}, "extensions": ["a.b"]}, "EXTENSIONS_GALLERY"),
        ]
        for params, want in cases:
            err = rpc_error(sb, params)
            assert want in err["message"], (params, err)
        assert code_servers(sb) == []
        # positive control: the same call, well formed, starts VS Code
        ok = sb.call("vscode", {**base, "editorSettings": {"x": "y"}, "disableStopButton": True}, timeout=120)
        assert 20000 <= ok["port"] < 60000 and ok["pid"] > 0, ok
        assert len(code_servers(sb)) == 1
        stop(sb, ok["pid"])
    finally:
        sb.ws.close()


def test_vscode_layer_is_read_only_even_for_sandbox_root(d):
    sb = d.create_sandbox()
    try:
        # positive control: root inside can write elsewhere, and reads the layer
        assert sb.sh("sh -c 'touch /opt/probe && rm /opt/probe'", sudo=True)["code"] == 0
        r = sb.sh("test -x /opt/hutch/vscode/node/bin/node && /opt/hutch/vscode/node/bin/node --version")
        assert r["stdout"].decode().strip() == "v20.20.2", r
        for probe in ("touch /opt/hutch/vscode/x", "rm -f /opt/hutch/vscode/bin/hutch-vscode",
                      "chmod 777 /opt/hutch/vscode/bin"):
            r = sb.sh(probe, sudo=True)
            assert r["code"] != 0 and b"Read-only file system" in r["stderr"], (probe, r)
        r = sb.sh("umount /opt/hutch/vscode", sudo=True)
        assert r["code"] != 0, r
        assert sb.sh("test -x /opt/hutch/vscode/bin/hutch-vscode")["code"] == 0
        opts = sb.sh("awk '$5 == \"/opt/hutch/vscode\" {print $6}' /proc/self/mountinfo")["stdout"].decode().split(",")
        assert {"ro", "nosuid", "nodev"} <= set(opts), opts
    finally:
        sb.ws.close()


def test_vscode_that_exits_before_listening_is_an_error_with_its_stderr(d):
    sb = d.create_sandbox()
    try:
        err = rpc_error(sb, {"path": "/home/app", "env": {"NODE_OPTIONS": "--no-such-node-flag"}, "extensions": []})
        assert "exited before it listened" in err["message"], err
        assert "--no-such-node-flag" in err["message"], err
        # positive control: without the bad flag it listens
        ok = sb.call("vscode", {"path": "/home/app", "env": {}, "extensions": []}, timeout=120)
        stop(sb, ok["pid"])
    finally:
        sb.ws.close()


def test_cli_vscode_prints_a_working_url(d):
    ing = Ingress(d)
    sb = d.create_sandbox()
    try:
        assert sb.sh("mkdir -p /home/app/src")["code"] == 0
        r = d.cli("vscode", sb.id, "/home/app/src", check=True, timeout=180)
        url = r.stdout.strip()
        assert url.startswith("https://127.0.0.1:"), r.stdout
        st, h, _ = ing.get(url, "/")
        assert st == 302 and h["location"] == ["./?folder=/home/app/src"], (st, h)
        st, _, body = ing.get(url, "/?folder=/home/app/src")
        assert st == 200 and b"vs/code/browser/workbench/workbench" in body, (st, body[:200])
        assert len(code_servers(sb)) == 1 and code_servers(sb)[0].startswith("app ")
        gone = d.cli("vscode", "sbx_loc_aaaaaaaaaaaaaaaaaaaa")
        assert gone.returncode != 0
        bad = d.cli("vscode", sb.id, "/a", "/b")
        assert bad.returncode == 2, bad
    finally:
        sb.ws.close()
