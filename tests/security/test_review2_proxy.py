# Review 2: the transparent proxy's HTTP/1 framing (src/proxy/http1.c,
# tcp.c pipe_http): a later request on a kept-alive plain-HTTP connection must
# name the host the connection was allowed for.
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from netenv import out, running  # noqa: E402

PY = "python3 -c "


@pytest.fixture(scope="module")
def net():
    with running(tag="rv2p") as env:
        yield env


@pytest.fixture(scope="module")
def sb(net):
    s = net.hutchd.create_sandbox({"allow_net": ["example.test"]})
    yield s
    s.ws.close()


def _two_requests(sb, first_extra):
    # a.wild.test resolves to the same address as example.test but is not allowed
    script = (PY + "'import socket,time\ns=socket.create_connection((\"192.0.2.2\",80),3)\n"
              "s.sendall(b\"GET / HTTP/1.1\\r\\nHost: example.test\\r\\n" + first_extra + "\\r\\n\");"
              "time.sleep(0.5);print(s.recv(4096))\n"
              "s.sendall(b\"GET / HTTP/1.1\\r\\nHost: a.wild.test\\r\\n\\r\\n\");time.sleep(0.5);print(s.recv(4096))'")
    return out(sb.sh(script))


def test_second_host_blocked_after_plain_request(sb):
    o = _two_requests(sb, "")
    assert "host=example.test" in o and "host=a.wild.test" not in o, o


def test_second_host_blocked_after_an_ignored_upgrade(sb):
    o = _two_requests(sb, "Upgrade: foo\\r\\nConnection: Upgrade\\r\\n")
    assert "host=example.test" in o and "host=a.wild.test" not in o, o
