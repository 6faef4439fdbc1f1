"""--log-format json (docs/dashboard.md "Logs"): every line hutchd writes is one
JSON object {time, level, msg, fields}; text stays the default. Its own module:
a daemon with sandbox networking must be the only one in the test netns."""
import json
import time

import pytest

from hutchlib import wait_until


def now_ms():
    return int(time.time() * 1000)


def test_log_format_json_writes_one_object_per_line(make_hutchd):
    h = make_hutchd(extra_args=["--log-format", "json"])
    sb = h.create_sandbox({"stop_at_ms": now_ms() + 60000})
    sid = sb.id
    assert h.http("DELETE", f"/api/v3/sandbox/{sid}").status == 200
    sb.ws.close()
    h.http("GET", "/api/v2/sandboxes")

    def lines():
        text = h._log_text()
        return [ln for ln in text[text.rfind("--- start #"):].splitlines()[1:] if ln.strip()]

    def has_stop():
        return any(f"{sid}" in ln and "stopped" in ln for ln in lines())
    assert wait_until(has_stop, 15), h.log_tail()
    objs = []
    for ln in lines():
        if "Sanitizer" in ln or ln.startswith(("==", "    #", "SUMMARY")):
            continue  # the sanitizers write to the fd directly
        o = json.loads(ln)  # every line is one JSON object
        assert set(o) == {"time", "level", "msg", "fields"}, o
        assert o["level"] in ("info", "warn")
        assert time.strptime(o["time"][:19], "%Y-%m-%dT%H:%M:%S") and o["time"].endswith("Z")
        assert isinstance(o["fields"].get("component"), str)
        objs.append(o)
    listening = [o for o in objs if o["msg"].startswith("listening on http://")]
    assert listening and listening[0]["fields"]["component"] == "hutchd" and listening[0]["level"] == "info"
    stopped = [o for o in objs if o["fields"].get("sandbox") == sid and "stopped" in o["msg"]]
    assert stopped, objs[-10:]
    created = [o for o in objs if o["fields"].get("sandbox") == sid and "created" in o["msg"]]
    assert created, objs[-10:]


def test_log_format_text_is_unchanged(make_hutchd):
    h = make_hutchd(extra_args=["--log-format", "text"])
    assert "hutchd: listening on http://" in h._log_text()


def test_log_format_other_is_refused(make_hutchd):
    from hutchlib import HutchdError
    with pytest.raises(HutchdError) as ei:
        make_hutchd(extra_args=["--log-format", "xml"])
    assert "--log-format wants text or json" in str(ei.value)
