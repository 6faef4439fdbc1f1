# The vscode layer's mount point on roots a sandbox wrote (issue 8): hutch-init
# makes /opt/hutch/vscode as real root before the sandbox starts, so a root
# whose /opt is a symlink must never lead it outside the sandbox's root, and
# a writable root volume must not get the mount point written into it.
# Skipped where the layer is not built on this machine (make vscode-layer).
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutchlib import Hutchd, RpcFailure, wait_until  # noqa: E402

LAYER = os.environ.get("HUTCH_VSCODE_LAYER", "/var/cache/hutch/layers/vscode-4.99.4")
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(LAYER, ".complete")),
                                reason=f"no vscode layer at {LAYER} (make vscode-layer)")


@pytest.fixture(scope="module")
def d():
    if os.geteuid() != 0:
        pytest.fail("hutchd tests need root (run scripts/test.sh as root)")
    h = Hutchd(tag="vscsnap", extra_args=["--storage-size", "2GiB", "--disk", "256"]).start()
    yield h
    h.stop()


def ok(r, status=200):
    assert r.status == status, (r.status, r.body)
    return r.json()


def run_ok(sb, script, sudo=False):
    r = sb.sh(script, sudo=sudo)
    assert r["code"] == 0, r
    return r["stdout"].decode()


def vscode_error(sb):
    with pytest.raises(RpcFailure) as ei:
        sb.call("vscode", {"path": "/home/app", "env": {}, "extensions": []}, timeout=120)
    return ei.value.error


def test_a_root_with_opt_symlinked_to_slash_starts_without_the_layer_and_host_untouched(d):
    assert not os.path.lexists("/hutch"), "/hutch exists on this host before the test"
    ok(d.http("POST", "/api/v2/volumes", body={"slug": "vsc-boot", "region": "loc", "capacity": "700MiB",
                                               "from": "builtin:debian-13"}, timeout=180))
    sb = d.create_sandbox({"root": {"volume": "vsc-boot"}})
    try:
        # a writable root volume gets no layer (nor its mount point written into it)
        assert run_ok(sb, "test -e /opt/hutch && echo yes || echo no").strip() == "no"
        err = vscode_error(sb)
        assert err["code"] == "ENOTSUP" and "no VS Code layer" in err["message"], err
        run_ok(sb, "rm -rf /opt && ln -s / /opt && ls -ld /opt", sudo=True)
    finally:
        sb.ws.close()
    ok(d.http("POST", "/api/v2/volumes/vsc-boot/snapshot", body={"slug": "vsc-snap"}))
    sb = d.create_sandbox({"root": {"volume": "vsc-snap"}})
    try:
        # it started; its /opt still points at its own root, where hutch made nothing
        assert run_ok(sb, "readlink /opt").strip() == "/"
        assert run_ok(sb, "test -e /hutch && echo yes || echo no").strip() == "no"
        err = vscode_error(sb)
        assert err["code"] == "ENOTSUP", err
        assert not os.path.lexists("/hutch"), "hutch-init followed the sandbox's /opt symlink onto the host"
    finally:
        sb.ws.close()
    # positive control: a sandbox from the image on the same host has the layer
    sb = d.create_sandbox()
    try:
        assert run_ok(sb, "/opt/hutch/vscode/node/bin/node --version").strip() == "v20.20.2"
    finally:
        sb.ws.close()
    assert wait_until(lambda: d.http("DELETE", "/api/v2/snapshots/vsc-snap").status == 200, 30)
    assert wait_until(lambda: d.http("DELETE", "/api/v2/volumes/vsc-boot").status == 200, 30)
