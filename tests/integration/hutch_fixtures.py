# pytest fixtures shared by tests/integration and tests/security: each test
# module gets its own real hutchd (temp state dir, free port, own cgroup name);
# teardown asserts that it leaked nothing (cgroups, mounts, sandbox-uid processes).
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hutchlib import Hutchd  # noqa: E402


def _tag(request):
    name = request.module.__name__.rsplit(".", 1)[-1].replace("test_", "")
    return name[:16]


@pytest.fixture(scope="module")
def hutchd(request):
    if os.geteuid() != 0:
        pytest.fail("hutchd tests need root (run scripts/test.sh as root)")
    d = Hutchd(tag=_tag(request)).start()
    yield d
    d.stop()


@pytest.fixture
def make_hutchd(request):
    """Factory for a private hutchd (restart/crash tests); stopped and
    leak-checked at the end of the test."""
    made = []

    def make(**kw):
        d = Hutchd(tag=kw.pop("tag", "p" + _tag(request)[:10]), **kw).start()
        made.append(d)
        return d

    yield make
    errors = []
    for d in made:
        try:
            d.stop()
        except Exception as e:  # report every daemon, not just the first
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def sandbox(hutchd):
    """A session sandbox on the module's hutchd; closed (and so killed) after."""
    sb = hutchd.create_sandbox()
    try:
        yield sb
    finally:
        sb.ws.close()
