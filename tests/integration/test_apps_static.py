"""Static runtimes, framework presets and several instances per revision
(issue 10; docs/apps.md): a `static` revision is served by hutch's static
file server in its instance sandbox with the right content types, index.html,
301 for a directory without "/", 404, an SPA fallback when asked, and no way
out of its directory (".." and its encodings are 400, symlinks the build left
pointing outside are 404); a preset fills the install and build commands and
the runtime, and explicit values win; an app labelled hutch.instances=2 runs
two sandboxes that share its requests, one crashing while the other serves,
both stopping when idle and one waking. Bad input is refused with the SDK's
{code, message}."""
import json
import time

import pytest

from apps_util import api, new_app
from expose_util import Ingress
from hutchlib import Hutchd, wait_until


@pytest.fixture(scope="module")
def d():
    h = Hutchd(tag="apps-static", extra_args=["--app-build-timeout", "120", "--app-idle", "4",
                                              "--app-volume-size", "48", "--storage-size", "2GiB"]).start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def ingress(d):
    return Ingress(d)


def assets(files):
    out = {}
    for k, v in files.items():
        out[k] = v if isinstance(v, dict) else {"content": v}
    return out


def deploy_ok(d, app, files, config):
    st, rev = api(d, "POST", f"/api/v2/apps/{app['id']}/deploy", {"assets": assets(files), "config": config})
    assert st == 200, rev
    r = d.http("GET", f"/api/v2/revisions/{rev['id']}/progress", timeout=240)
    assert r.status == 200
    st, rev = api(d, "GET", f"/api/v2/revisions/{rev['id']}")
    logs = d.http("GET", f"/api/v2/revisions/{rev['id']}/build_logs").body.decode()
    assert rev["status"] == "succeeded", (rev, logs)
    st, tls = api(d, "GET", f"/api/v2/revisions/{rev['id']}/timelines")
    return rev, "https://" + tls[0]["domains"][0]["domain"], logs


SITE = {
    "site/index.html": "<!doctype html><title>home</title><h1>static home</h1>\n",
    "site/app.js": "console.log('js');\n",
    "site/style.css": "body { color: red }\n",
    "site/data.json": '{"n": 1}\n',
    "site/logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>\n",
    "site/sub/index.html": "<p>sub index</p>\n",
    "site/alias.js": {"kind": "symlink", "target": "app.js"},
    "secret.txt": "TOPSECRET outside the static root\n",
}
# the build leaves symlinks that lead out of site/: to the sandbox's own /etc and to the app directory
ESCAPES = "ln -s /etc/passwd site/passwd && ln -s ../secret.txt site/up && ln -s /etc site/etcdir"


def test_a_static_runtime_serves_files_with_types_index_and_404_and_never_leaves_its_directory(d, ingress):
    app = new_app(d, "s")
    rev, url, logs = deploy_ok(d, app, SITE, {"build": ESCAPES, "runtime": {"type": "static", "cwd": "site"}})
    assert "as a static site" in logs, logs
    assert rev["config"]["runtime"] == {"type": "static", "cwd": "site"}, rev["config"]
    get = lambda p, **kw: ingress.get(url, p, **kw)
    st, h, body = get("/")
    assert (st, h["content-type"], body) == (200, ["text/html; charset=utf-8"], SITE["site/index.html"].encode())
    for p, ctype in [("/app.js", "text/javascript; charset=utf-8"), ("/style.css", "text/css; charset=utf-8"),
                     ("/data.json", "application/json"), ("/logo.svg", "image/svg+xml"),
                     ("/index.html", "text/html; charset=utf-8"), ("/alias.js", "text/javascript; charset=utf-8")]:
        st, h, body = get(p)
        key = "site" + p if p != "/alias.js" else "site/app.js"
        assert (st, h["content-type"][0], body) == (200, ctype, SITE[key].encode()), (p, st, h, body)
    st, h, _ = get("/sub")
    assert (st, h["location"]) == (301, ["./sub/"]), (st, h)
    assert get("/sub/")[0:3:2] == (200, b"<p>sub index</p>\n")
    st, h, body = get("/app.js", method="HEAD")
    assert (st, h["content-length"], body) == (200, [str(len(SITE["site/app.js"]))], b""), (st, h, body)
    assert get("/nope.html")[0:3:2] == (404, b"not found\n")
    st, h, _ = get("/", method="POST", body=b"x")
    assert (st, h["allow"]) == (405, ["GET, HEAD"])
    # symlinks the build left pointing outside site/: 404, nothing of the target in the answer
    for p in ["/passwd", "/up", "/etcdir/passwd", "/etcdir/"]:
        st, _, body = get(p)
        assert st == 404 and b"root:" not in body and b"TOPSECRET" not in body, (p, st, body)
    # ".." after decoding (encoded dots, encoded slashes): 400 from the static server
    for p in ["/..%2fsecret.txt", "/%2e%2e%2fsecret.txt", "/sub/..%2f..%2fsecret.txt", "/%2E%2E%2Fsecret.txt",
              "/a%00b", "/%zz", "/sub/..%5c..%5csecret.txt"]:
        st, _, body = get(p)
        assert st == 400 and body.startswith(b"bad path"), (p, st, body)
    # dot segments the URL parser resolves stay inside: /sub/../index.html is the home page
    assert get("/sub/%2e%2e/index.html")[0:3:2] == (200, SITE["site/index.html"].encode())
    # raw dot segments (the ingress strips /NAME and passes the rest as sent) resolve inside too
    for p in ["/%2e%2e/secret.txt", "/../secret.txt", "/../../../etc/passwd", "/sub/../../secret.txt"]:
        st, _, body = get(p)
        assert st == 404 and b"TOPSECRET" not in body and b"root:" not in body, (p, st, body)


def test_an_spa_answers_index_html_for_unknown_paths_but_not_for_bad_ones(d, ingress):
    app = new_app(d, "s")
    files = {"index.html": "<p>spa shell</p>\n", "main.js": "1;\n"}
    _, url, _ = deploy_ok(d, app, files, {"runtime": {"type": "static", "cwd": ".", "spa": True}})
    assert ingress.get(url, "/deep/client/route")[0:3:2] == (200, b"<p>spa shell</p>\n")
    assert ingress.get(url, "/main.js")[0:3:2] == (200, b"1;\n")
    assert ingress.get(url, "/..%2fetc%2fpasswd")[0] == 400


def test_a_static_directory_that_is_missing_or_leads_out_fails_the_deploy(d):
    app = new_app(d, "s")
    for cfg, why in [({"runtime": {"type": "static", "cwd": "dist"}}, "cannot be served"),
                     ({"build": "ln -s /etc dist", "runtime": {"type": "static", "cwd": "dist"}}, "leads out of")]:
        st, rev = api(d, "POST", f"/api/v2/apps/{app['id']}/deploy", {"assets": assets({"x.txt": "x"}), "config": cfg})
        assert st == 200, rev
        d.http("GET", f"/api/v2/revisions/{rev['id']}/progress", timeout=240)
        st, rev = api(d, "GET", f"/api/v2/revisions/{rev['id']}")
        logs = d.http("GET", f"/api/v2/revisions/{rev['id']}/build_logs").body.decode()
        assert (rev["status"], rev["failure_reason"]) == ("failed", "error"), rev
        assert why in logs, logs


LUME = {
    "deno.json": json.dumps({"tasks": {"build": "deno run --allow-read --allow-write build.ts"}}),
    "build.ts": ("await Deno.mkdir('_site', { recursive: true });\n"
                 "await Deno.writeTextFile('_site/index.html', `<p>built by deno ${Deno.version.deno}</p>`);\n"),
}


def test_a_preset_fills_commands_and_runtime_with_a_real_build_and_explicit_values_win(d, ingress):
    app = new_app(d, "s")
    rev, url, logs = deploy_ok(d, app, LUME, {"framework": "lume"})
    c = rev["config"]
    assert (c["framework"], c["install"], c["build"], c["runtime"]) == (
        "lume", "deno install", "deno task build", {"type": "static", "cwd": "_site"}), c
    assert "$ deno install" in logs and "$ deno task build" in logs, logs
    st, _, body = ingress.get(url, "/")
    assert st == 200 and body.startswith(b"<p>built by deno 2."), (st, body)
    # explicit build command and no install: the preset's runtime stays
    rev2, url2, logs2 = deploy_ok(d, app, LUME, {"framework": "lume", "install": None,
                                                 "build": "mkdir -p _site && echo custom > _site/index.html"})
    assert (rev2["config"]["install"], rev2["config"]["runtime"]["cwd"]) == (None, "_site")
    assert "$ deno install" not in logs2
    assert ingress.get(url2, "/")[0:3:2] == (200, b"custom\n")
    # a dynamic preset (fresh): the build writes the server module the preset names
    fresh = {"deno.json": json.dumps({"tasks": {"build": "mkdir -p _fresh && cp server.src _fresh/server.js"}}),
             "server.src": "export default { fetch: () => new Response('fresh server') };\n"}
    rev3, url3, _ = deploy_ok(d, new_app(d, "s"), fresh, {"framework": "fresh"})
    assert rev3["config"]["runtime"] == {"type": "dynamic", "entrypoint": "_fresh/server.js", "args": []}
    assert ingress.get(url3, "/")[0:3:2] == (200, b"fresh server")


def test_bad_static_preset_and_instance_settings_are_refused(d):
    app = new_app(d, "s")
    dep = lambda cfg: api(d, "POST", f"/api/v2/apps/{app['id']}/deploy", {"assets": assets({"a": "a"}), "config": cfg})
    for cfg, words in [({"framework": "rails"}, "unknown framework preset"),
                       ({"framework": "lume", "runtime": {"type": "static", "cwd": "x"}}, "mutually exclusive"),
                       ({"runtime": {"type": "static"}}, "cwd"),
                       ({"runtime": {"type": "static", "cwd": "../up"}}, "relative path"),
                       ({"runtime": {"type": "static", "cwd": "/etc"}}, "relative path"),
                       ({"runtime": {"type": "static", "cwd": "d", "spa": "yes"}}, "spa"),
                       ({"runtime": {"type": "static", "cwd": "d", "entrypoint": "m.ts"}}, "dynamic"),
                       ({"framework": 7}, "framework")]:
        st, body = dep(cfg)
        assert (st, body["code"]) == (400, "INVALID_CONFIG"), (cfg, body)
        assert words in body["message"], body
    for v in ["0", "9", "two"]:
        st, body = api(d, "POST", "/api/v2/apps", {"slug": f"bad-inst-{v}", "labels": {"hutch.instances": v}})
        assert (st, body["code"]) == (400, "INVALID_LABELS") and "hutch.instances" in body["message"], body
    st, body = api(d, "PATCH", f"/api/v2/apps/{app['id']}", {"labels": {"hutch.instances": "99"}})
    assert (st, body["code"]) == (400, "INVALID_LABELS"), body
    # positive control: the same routes take good values
    st, body = api(d, "PATCH", f"/api/v2/apps/{app['id']}", {"labels": {"hutch.instances": "2"}})
    assert st == 200 and body["labels"] == {"hutch.instances": "2"}, body
    st, body = dep({"runtime": {"type": "static", "cwd": "."}})
    assert st == 200 and body["status"] == "building", body


INST = ("const id = crypto.randomUUID();\n"
        "Deno.serve({ port: 8000 }, (req) => {\n"
        "  if (new URL(req.url).pathname === '/crash') setTimeout(() => Deno.exit(3), 100);\n"
        "  return new Response(id);\n"
        "});\n")


def test_two_instances_share_requests_survive_a_crash_scale_to_zero_and_wake_one(d, ingress):
    app = new_app(d, "s", labels={"hutch.instances": "2"})
    rev, url, logs = deploy_ok(d, app, {"main.ts": INST}, {"runtime": {"type": "dynamic", "entrypoint": "main.ts"}})
    assert "starting instance 2 of 2" in logs, logs
    running = lambda: [s for s in d.list_sandboxes(labels={"hutch.revision": rev["id"]}) if s["status"] == "running"]
    assert wait_until(lambda: len(running()) == 2, 60), running()
    seen = set()

    def two_ids():
        st, _, body = ingress.get(url, "/")
        assert st == 200, (st, body)
        seen.add(body)
        return len(seen) >= 2
    assert wait_until(two_ids, 60), seen
    assert len(seen) == 2, seen  # exactly two processes answer
    # one crashes: every request meanwhile is answered by the other
    st, _, crashed = ingress.get(url, "/crash")
    assert st == 200
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))

    def noted(q):
        st, body = api(d, "GET", f"/api/v2/apps/{app['id']}/logs?start={since}&query={q}")
        return [l["message"] for l in body["logs"]]
    # once hutchd saw the exit, it waits out its backoff: every request meanwhile goes to the other one
    assert wait_until(lambda: noted("exited%20with%20code%203"), 30), d.log_tail(20)
    answers = [ingress.get(url, "/") for _ in range(6)]
    assert all(a[0] == 200 for a in answers), answers
    assert any(m.startswith("restarting in 500 ms") for m in noted("restarting")), noted("restarting")
    # the crashed one comes back (a new process in the same sandbox): three ids seen in all
    assert wait_until(lambda: two_ids() and len(seen) >= 3, 60), seen
    assert crashed in seen and len(running()) == 2
    # idle for --app-idle (4 s): both stop; the next request wakes one
    assert wait_until(lambda: not running(), 60), running()
    st, _, body = ingress.get(url, "/")
    assert st == 200 and body not in seen, (st, body)
    assert len(running()) == 1
    # later requests bring the second one back
    def topped_up():
        ingress.get(url, "/")
        return len(running()) == 2
    assert wait_until(topped_up, 60), running()
