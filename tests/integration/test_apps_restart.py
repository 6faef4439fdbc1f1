"""Apps across a hutchd restart (issue 10): production and preview routes
come back at their stored names and wake their app at the first request; a
build that was running fails with the reason. Its own module: a private
hutchd that restarts, with no other hutchd alive in this network namespace
(two would compete for hutch-proxy's port)."""
import time

from apps_util import api, new_app
from expose_util import Ingress
from test_apps import GOOD, build_logs, deploy, domain, rt, wait_done


def test_after_a_restart_production_is_served_again_and_an_unfinished_build_failed(make_hutchd):
    h = make_hutchd(extra_args=["--app-build-timeout", "60", "--app-volume-size", "48", "--storage-size", "2GiB"])
    ing = Ingress(h)
    app = new_app(h)
    rev, _ = wait_done(h, deploy(h, app, {"main.ts": GOOD})["id"])
    assert rev["status"] == "succeeded", (rev, build_logs(h, rev["id"]), h.log_tail(30))
    before = domain(h, rev["id"])
    assert ing.get(before, "/before")[0:3:2] == (200, b"ok /before")
    slow = deploy(h, app, {"main.ts": GOOD}, rt("sleep 600"))["id"]
    time.sleep(1)
    h.restart()
    ing = Ingress(h)
    st, again = api(h, "GET", f"/api/v2/revisions/{slow}")
    assert (again["status"], again["failure_reason"]) == ("failed", "error"), again
    assert any("hutchd stopped during the build" in l["message"] or "hutchd restarted" in l["message"]
               for l in build_logs(h, slow)), build_logs(h, slow)
    # the production route is back (same name) and wakes the app at the first request
    st, tls = api(h, "GET", f"/api/v2/apps/{app['id']}/timelines")
    assert st == 200 and [t["context"]["slug"] for t in tls] == ["production"], tls
    url = "https://" + tls[0]["domains"][0]["domain"]
    assert url.rsplit("/", 1)[1] == before.rsplit("/", 1)[1]  # the route's name is kept (the port is new)
    assert ing.get(url, "/after")[0:3:2] == (200, b"ok /after"), h.log_tail(30)
