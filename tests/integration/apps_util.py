"""What the apps tests share: their JSON API calls and a fresh app."""
import itertools
import json
import time

_seq = itertools.count(1)


def api(d, method, path, body=None):
    """(status, the body as JSON or, if it is not JSON, as bytes)."""
    r = d.http(method, path, body=body)
    try:
        return r.status, json.loads(r.body or b"null")
    except ValueError:
        return r.status, r.body


def new_app(d, prefix="t", **kw):
    """A new app with a slug of its own (prefix, a count, the time)."""
    st, app = api(d, "POST", "/api/v2/apps", {"slug": f"{prefix}{next(_seq)}-{int(time.time()) % 100000}", **kw})
    assert st == 200, app
    return app
