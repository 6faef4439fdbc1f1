# A host without the vscode layer (issue 8): the `vscode` RPC says how to
# get it, and sandboxes get no /opt/hutch. Its own module: two hutchds in one
# test namespace would share hutch-proxy's port. The positive control (a host
# with the layer) is tests/security/test_vscode.py.
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutchlib import Hutchd, RpcFailure  # noqa: E402


def test_host_without_the_layer_answers_enotsup_and_binds_nothing():
    if os.geteuid() != 0:
        pytest.fail("hutchd tests need root (run scripts/test.sh as root)")
    h = Hutchd(tag="novscode", extra_args=["--vscode-layer", "/nonexistent/vscode-layer"]).start()
    try:
        sb = h.create_sandbox()
        try:
            with pytest.raises(RpcFailure) as ei:
                sb.call("vscode", {"path": "/home/app", "env": {}, "extensions": []})
            err = ei.value.error
            assert err["code"] == "ENOTSUP" and "make vscode-layer" in err["message"], err
            assert sb.sh("test -e /opt/hutch")["code"] != 0
            assert sb.sh("true")["code"] == 0  # the sandbox itself is fine
        finally:
            sb.ws.close()
    finally:
        h.stop()
