"""Apps (issue 10) under bad input and over time, on a hutchd with short
limits: a build that never ends is stopped at its time limit, one that fills
its disk fails with ENOSPC, a missing entrypoint fails the deploy, a crash
loop restarts with a growing backoff while other apps keep serving, a log
flood is bounded, cancel stops a build, an idle app scales to zero and the
next request wakes it, and the refusals (slugs, asset paths). Each failure
ends with a clear status and message; a positive control shows the same
path works with good input."""
import json
import subprocess
import time

import pytest

from apps_util import api, new_app
from expose_util import Ingress
from hutchlib import Hutchd, wait_until

GOOD = "export default { fetch(req) { return new Response('ok ' + new URL(req.url).pathname); } };\n"


@pytest.fixture(scope="module")
def d():
    h = Hutchd(tag="apps", extra_args=["--app-build-timeout", "5", "--app-idle", "3",
                                       "--app-volume-size", "48", "--storage-size", "2GiB"]).start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def ingress(d):
    return Ingress(d)


def deploy(d, app, assets, config=None, **kw):
    body = {"assets": {k: {"content": v} for k, v in assets.items()}, **kw}
    if config is not None:
        body["config"] = config
    st, rev = api(d, "POST", f"/api/v2/apps/{app['id']}/deploy", body)
    assert st == 200, rev
    return rev


def wait_done(d, rev_id, timeout=120):
    """Reads the progress stream to its end (as Build.done does), then the revision."""
    r = d.http("GET", f"/api/v2/revisions/{rev_id}/progress", timeout=timeout)
    assert r.status == 200 and r.headers["content-type"] == "text/event-stream", r
    events = [json.loads(x[5:]) for x in r.body.decode().split("\n") if x.startswith("data:")]
    assert events, r.body
    st, rev = api(d, "GET", f"/api/v2/revisions/{rev_id}")
    assert st == 200
    return rev, events


def build_logs(d, rev_id):
    r = d.http("GET", f"/api/v2/revisions/{rev_id}/build_logs")
    assert r.status == 200
    return [json.loads(x[5:]) for x in r.body.decode().split("\n") if x.startswith("data:")]


def domain(d, rev_id):
    st, tls = api(d, "GET", f"/api/v2/revisions/{rev_id}/timelines")
    assert st == 200 and tls, tls
    return "https://" + tls[0]["domains"][0]["domain"]


def rt(cmd):
    return {"install": cmd, "runtime": {"type": "dynamic", "entrypoint": "main.ts"}}


def test_a_good_deploy_is_served_then_an_idle_app_scales_to_zero_and_a_request_wakes_it(d, ingress):
    app = new_app(d)
    rev, events = wait_done(d, deploy(d, app, {"main.ts": GOOD})["id"])
    assert rev["status"] == "succeeded", rev
    assert events[-1]["deploying"]["status"] == "succeeded"
    url = domain(d, rev["id"])
    assert ingress.get(url, "/a")[0:3:2] == (200, b"ok /a")
    # curl, trusting the ingress CA as a user would
    c = subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", ingress.ca_file, url + "/curl"],
                       capture_output=True, text=True, timeout=60)
    assert (c.returncode, c.stdout) == (0, "ok /curl"), c.stderr
    running = lambda: [s for s in d.list_sandboxes(labels={"hutch.revision": rev["id"]}) if s["status"] == "running"]
    assert len(running()) == 1
    # no requests for --app-idle (3 s): its sandbox stops
    assert wait_until(lambda: not running(), 30), d.log_tail(20)
    assert "scaled to zero" in d.log_tail(200)
    # the next request wakes one from the snapshot and is answered
    status, _, body = ingress.get(url, "/woken")
    assert (status, body) == (200, b"ok /woken"), d.log_tail(30)
    assert len(running()) == 1


def test_a_build_that_never_ends_is_stopped_at_the_time_limit(d):
    app = new_app(d)
    rev, _ = wait_done(d, deploy(d, app, {"main.ts": GOOD}, rt("echo started; sleep 600"))["id"])
    assert (rev["status"], rev["failure_reason"]) == ("failed", "timed_out"), rev
    msgs = [l["message"] for l in build_logs(d, rev["id"])]
    assert "started" in msgs
    assert any("longer than 5 s" in m for m in msgs), msgs
    # no build sandbox left running
    assert wait_until(lambda: not [s for s in d.list_sandboxes(labels={"hutch.revision": rev["id"]})
                                   if s["status"] == "running"], 20)


def test_a_build_that_fills_its_disk_fails_with_enospc(d):
    app = new_app(d)
    rev, _ = wait_done(d, deploy(d, app, {"main.ts": GOOD},
                                 rt("dd if=/dev/zero of=big bs=1M count=200 status=none"))["id"])
    assert (rev["status"], rev["failure_reason"]) == ("failed", "error"), rev
    logs = build_logs(d, rev["id"])
    assert any("No space left on device" in l["message"] and l["level"] == "error" for l in logs), logs
    assert any("exited with code 1" in l["message"] for l in logs), logs
    # positive control: the same install within the limit succeeds
    ok, _ = wait_done(d, deploy(d, app, {"main.ts": GOOD}, rt("dd if=/dev/zero of=big bs=1M count=4 status=none"))["id"])
    assert ok["status"] == "succeeded", (ok, build_logs(d, ok["id"]))


def test_an_entrypoint_that_does_not_exist_fails_the_deploy(d):
    app = new_app(d)
    rev, _ = wait_done(d, deploy(d, app, {"main.ts": GOOD}, {"runtime": {"type": "dynamic", "entrypoint": "nope.ts"}})["id"])
    assert (rev["status"], rev["failure_reason"]) == ("failed", "error"), rev
    assert any("nope.ts does not exist" in l["message"] for l in build_logs(d, rev["id"]))
    st, tls = api(d, "GET", f"/api/v2/revisions/{rev['id']}/timelines")
    assert (st, tls) == (200, [])


def test_a_crash_loop_restarts_with_backoff_and_other_apps_keep_serving(d, ingress):
    steady = new_app(d)
    srev, _ = wait_done(d, deploy(d, steady, {"main.ts": GOOD})["id"])
    surl = domain(d, srev["id"])
    crashy = new_app(d)
    src = ("Deno.serve({port: 8000}, () => new Response('up'));\n"
           "setTimeout(() => { console.error('boom'); Deno.exit(7); }, 300);\n")
    rev, _ = wait_done(d, deploy(d, crashy, {"main.ts": src})["id"])
    assert rev["status"] == "succeeded", rev
    cid = crashy["id"]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))

    def restarts():
        st, body = api(d, "GET", f"/api/v2/apps/{cid}/logs?start={since}&query=restarting")
        assert st == 200, body
        return [l["message"] for l in body["logs"]]
    assert wait_until(lambda: len(restarts()) >= 2, 30), restarts()
    delays = [int(m.split(" ")[2]) for m in restarts()[:2]]
    assert delays[0] < delays[1], delays  # the backoff grows
    st, errs = api(d, "GET", f"/api/v2/apps/{cid}/logs?start={since}&level=error")
    assert any(l["message"] == "boom" for l in errs["logs"]), errs
    assert any("exited with code 7" in l["message"] for l in errs["logs"]), errs
    # the other app is untouched
    assert ingress.get(surl, "/x")[0:3:2] == (200, b"ok /x")
    assert d.http("GET", "/healthz").status == 200


def test_a_log_flood_is_bounded(d):
    app = new_app(d)
    src = ("Deno.serve({port: 8000}, () => new Response('ok'));\n"
           "for (let i = 0; i < 50000; i++) console.log('line ' + i);\n")
    rev, _ = wait_done(d, deploy(d, app, {"main.ts": src})["id"])
    assert rev["status"] == "succeeded", rev
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    time.sleep(2)
    n = 0
    cursor = ""
    while True:
        st, body = api(d, "GET", f"/api/v2/apps/{app['id']}/logs?start={since}&limit=1000{cursor}")
        assert st == 200
        n += len(body["logs"])
        if len(body["logs"]) < 1000:
            break
        r = d.http("GET", f"/api/v2/apps/{app['id']}/logs?start={since}&limit=1000{cursor}")
        link = r.headers.get("link", "")
        if "cursor=" not in link:
            break
        cursor = "&cursor=" + link.split("cursor=")[1].split("&")[0]
    assert 0 < n < 50000, n  # rate-limited, never all of it
    assert d.http("GET", "/healthz").status == 200


def test_refusals_slug_taken_and_asset_paths(d):
    app = new_app(d)
    st, body = api(d, "POST", "/api/v2/apps", {"slug": app["slug"]})
    assert (st, body["code"]) == (409, "SLUG_TAKEN"), body
    for path, why in [("../x.ts", ".."), ("/abs.ts", "absolute"), ("a/../../b", ".."), ("a//b", "empty")]:
        st, body = api(d, "POST", f"/api/v2/apps/{app['id']}/deploy", {"assets": {path: {"content": "x"}}})
        assert (st, body["code"]) == (400, "INVALID_ASSETS"), (path, body)
        assert why in body["message"], body
    st, body = api(d, "POST", f"/api/v2/apps/{app['id']}/deploy",
                   {"assets": {"l": {"kind": "symlink", "target": "/etc/passwd"}}})
    assert (st, body["code"]) == (400, "INVALID_ASSETS"), body
    st, body = api(d, "POST", "/api/v2/apps", {"slug": "x" * 40})
    assert (st, body["code"]) == (400, "INVALID_SLUG"), body
    st, body = api(d, "POST", f"/api/v2/apps/{app['id']}/deploy", b"{not json")
    assert (st, body["code"]) == (400, "INVALID_BODY"), body
    # positive control: a nested relative path is fine
    rev = deploy(d, app, {"lib/util.ts": "export const x = 1;\n", "main.ts": GOOD})
    done, _ = wait_done(d, rev["id"])
    assert done["status"] == "succeeded", done

