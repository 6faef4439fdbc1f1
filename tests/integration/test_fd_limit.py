# Issue 15 (5,000 alive at once): hutchd holds 3 descriptors per idle
# sandbox and 1 per client, under an RLIMIT_NOFILE it may not be allowed to
# raise. A create that would take it past that limit is refused up front with
# a clear 503, and everything already running keeps working; before, the
# create failed half way (EMFILE in socketpair, pidfd_open or the loop device)
# and accepts of the other sandboxes' clients with it. The test lowers the
# running hutchd's limit (prlimit on its pid: lowering needs no privilege)
# to leave room for a few sandboxes above the reserve.
import os
import resource

import pytest

from hutchlib import HandshakeError, wait_until

RESERVE = 256    # FD_RESERVE in src/daemon/core/lifecycle.c
CREATE_FDS = 8   # CREATE_FDS there
PER_SANDBOX = 4  # 3 held by hutchd for the sandbox + its client's socket


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def tight_hutchd(make_hutchd):
    d = make_hutchd(tag="fdlim", extra_args=["--warm", "0", "--max-sandboxes", "40"])
    pid = d.proc.pid
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    d.old_nofile = old
    yield d
    if d.proc.poll() is None:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)


def test_create_past_the_open_file_limit_is_refused_and_the_rest_keep_working(tight_hutchd):
    d = tight_hutchd
    pid = d.proc.pid
    first = d.create_sandbox()  # the proxy and the rest of what starts with the first sandbox
    held = [first]
    try:
        assert first.sh("echo first")["stdout"] == b"first\n"
        # room for about three more sandboxes with their clients above the reserve
        limit = open_fds(pid) + RESERVE + CREATE_FDS + 3 * PER_SANDBOX
        assert limit < d.old_nofile[0], (limit, d.old_nofile)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, d.old_nofile[1]))
        refusal = None
        for _ in range(12):
            try:
                sb = d.create_sandbox()
            except HandshakeError as e:
                refusal = e
                break
            held.append(sb)
        # positive control: creates went through under the lowered limit until it was near
        assert len(held) >= 2, f"no create fit under a limit of {limit}: {refusal}"
        assert refusal is not None, f"{len(held)} sandboxes were made under a limit of {limit}"
        assert refusal.status == 503, refusal
        body = refusal.json()
        assert body["code"] == "SANDBOX_CREATE_FAILED", body
        assert "no room for another sandbox" in body["message"], body
        assert f"of its {limit} open files in use" in body["message"], body
        assert "LimitNOFILE" in body["message"], body
        # the daemon and every sandbox it holds still work
        assert d.http("GET", "/healthz", token=None).status == 200
        listed = {s["id"] for s in d.list_sandboxes() if s["status"] == "running"}
        for i, sb in enumerate(held):
            assert sb.sh(f"echo still-{i}")["stdout"] == f"still-{i}\n".encode()
            assert sb.id in listed
        # refused again while nothing changed: it is the limit, not a hiccup
        with pytest.raises(HandshakeError) as again:
            d.create_sandbox()
        assert again.value.status == 503, again.value
        # one sandbox gone (its client closed: a session sandbox stops), its descriptors back: a create fits
        gone = held.pop()
        gone.ws.close()
        assert wait_until(lambda: d.sandbox_status(gone.id) != "running", 30)
        assert wait_until(lambda: open_fds(pid) + RESERVE + CREATE_FDS <= limit, 30), (open_fds(pid), limit)
        sb = d.create_sandbox()
        held.append(sb)
        assert sb.sh("echo after")["stdout"] == b"after\n"
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, d.old_nofile)
        for sb in held:
            sb.ws.close()
