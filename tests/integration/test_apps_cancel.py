"""Cancelling a running build (issue 10), on a hutchd whose builds may take
minutes: the test acts while the build still runs, so it must not race the
5 s build limit test_apps.py uses (one hutchd per network namespace, hence a
module of its own). The build says when it began; cancel answers 200 with
cancellation_requested_at, the revision fails as "cancelled", and a second
cancel is refused with 409 REVISION_NOT_BUILDING."""
import http.client
import json

import pytest

from apps_util import api, new_app
from hutchlib import Hutchd
from test_apps import GOOD, deploy, rt, wait_done


@pytest.fixture(scope="module")
def d():
    h = Hutchd(tag="apps-cancel", extra_args=["--app-build-timeout", "300", "--storage-size", "2GiB"]).start()
    yield h
    h.stop()


def wait_build_log(d, rev_id, text, timeout=60):
    """Follows a running build's log stream until a line holds text."""
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
    try:
        conn.request("GET", f"/api/v2/revisions/{rev_id}/build_logs", headers={"Authorization": f"Bearer {d.token}"})
        r = conn.getresponse()
        assert r.status == 200, r.status
        seen = []
        while True:
            line = r.readline()
            assert line, f"the log stream ended before {text!r}: {seen}"
            seen.append(line)
            if text.encode() in line:
                return
    finally:
        conn.close()


def test_cancel_stops_a_build(d):
    app = new_app(d)
    rid = deploy(d, app, {"main.ts": GOOD}, rt("echo build-began; sleep 600"))["id"]
    assert api(d, "GET", f"/api/v2/revisions/{rid}")[1]["status"] == "building"
    wait_build_log(d, rid, "build-began")
    st, rev = api(d, "POST", f"/api/v2/revisions/{rid}/cancel")
    assert st == 200 and rev["cancellation_requested_at"], (rev, api(d, "GET", f"/api/v2/revisions/{rid}")[1],
                                                            d.log_tail(40))
    rev, _ = wait_done(d, rid)
    assert (rev["status"], rev["failure_reason"]) == ("failed", "cancelled"), rev
    st, again = api(d, "POST", f"/api/v2/revisions/{rid}/cancel")
    assert (st, again["code"]) == (409, "REVISION_NOT_BUILDING")
