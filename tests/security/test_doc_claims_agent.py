# docs/security.md: "hutchd parses every agent frame with bounds; a
# violation stops that sandbox only" — a taken-over agent hurts only its own
# sandbox. Sandbox root cannot reach hutch-init's socket (non-dumpable, see
# test_isolation.py), so the takeover is played by a test init: a wrapper
# that runs the real hutch-init as PID 1 behind a relay which, once code in
# that sandbox asks for it (a file in the sandbox's /tmp), sends hutchd a
# frame no agent may send. Every sandbox of this hutchd runs behind the relay.
import os
import subprocess
import tempfile

import pytest

from hutchlib import RpcFailure, Hutchd, WsClosed, hutch_init_path, wait_until

WRAPPER = r'''
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int full(int fd, void *buf, size_t n, int wr)
{
    for (size_t o = 0; o < n;) {
        ssize_t r = wr ? write(fd, (char *)buf + o, n - o) : read(fd, (char *)buf + o, n - o);
        if (r <= 0)
            return -1;
        o += (size_t)r;
    }
    return 0;
}

/* hutchd (fd 3) <-> the real hutch-init (s): bytes down as they come, whole
 * frames up, so that the hostile header lands on a frame boundary. */
static void relay(int s)
{
    static char buf[12 + 256 * 1024];
    struct pollfd p[2] = {{.fd = 3, .events = POLLIN}, {.fd = s, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, 100) < 0)
            continue;
        struct stat st;
        if (stat("/tmp/hx-take-over", &st) == 0) {   /* the sandbox's own /tmp, after pivot_root */
            unsigned char bad[12] = {0xff, 0xff, 0xff, 0xff, 18, 0, 0, 0, 0, 0, 0, 0}; /* len 4 GiB */
            full(3, bad, sizeof bad, 1);
            pause();
        }
        if (p[0].revents) {
            ssize_t n = read(3, buf, sizeof buf);
            if (n <= 0 || full(s, buf, (size_t)n, 1) < 0)
                _exit(0);
        }
        if (p[1].revents) {
            if (full(s, buf, 12, 0) < 0)
                _exit(0);
            uint32_t len = (uint32_t)(unsigned char)buf[0] | (uint32_t)(unsigned char)buf[1] << 8 |
                           (uint32_t)(unsigned char)buf[2] << 16 | (uint32_t)(unsigned char)buf[3] << 24;
            if (len > 256 * 1024 || full(s, buf + 12, len, 0) < 0 || full(3, buf, 12 + len, 1) < 0)
                _exit(0);
        }
    }
}

int main(void)
{
    char c;
    /* wait for HX_SETUP: hutchd has placed us in the sandbox's cgroups */
    if (recv(3, &c, 1, MSG_PEEK) != 1)
        return 2;
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
        return 2;
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        close(4);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        relay(sp[1]);
    }
    dup2(sp[0], 3);
    close(sp[0]);
    close(sp[1]);
    char *argv[] = {"hutch-init", NULL};
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    execve(REAL_INIT, argv, envp);
    return 2;
}
'''


@pytest.fixture(scope="module")
def hostile_hutchd():
    if os.geteuid() != 0:
        pytest.fail("needs root")
    real = os.path.abspath(hutch_init_path())
    assert os.path.exists(real), real
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "w.c"), os.path.join(d, "hostile-init")
        with open(src, "w") as f:
            f.write(WRAPPER)
        r = subprocess.run(["gcc", "-static", "-O2", f'-DREAL_INIT="{real}"', "-o", exe, src],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        # hutchd copies --init into a sealed memfd at start: the file may go after
        h = Hutchd(tag="hostile", extra_args=["--init", exe]).start()
    yield h
    h.stop()


def test_a_hostile_agent_frame_stops_only_its_own_sandbox(hostile_hutchd):
    h = hostile_hutchd
    a = h.create_sandbox({"allow_net": []})
    b = h.create_sandbox({"allow_net": []})
    try:
        # positive control: both work through the relay
        for sb in (a, b):
            r = sb.sh("echo ok")
            assert r["code"] == 0 and r["stdout"] == b"ok\n", r
        # a's "agent" is taken over: it sends a 4 GiB frame header
        # Either the connection goes with the sandbox first, or the spawn is
        # answered first with hutch's own "stopped before answering".
        try:
            a.sh("touch /tmp/hx-take-over; sleep 30", timeout=20)
            pytest.fail("the spawn finished although a's agent broke the protocol")
        except RpcFailure as f:
            assert f.error.get("code") == "EIO" and "the sandbox stopped before answering" in f.error["message"], f
        except (WsClosed, OSError, TimeoutError):
            pass
        assert wait_until(lambda: h.sandbox_status(a.id) == "stopped", 10), h.sandbox_status(a.id)
        assert f"hutchd: {a.id}: agent protocol violation: bad frame header; stopping the sandbox" in h.log_tail(200)
        # b, on the same daemon behind the same kind of relay, is untouched
        assert h.alive()
        assert h.sandbox_status(b.id) == "running"
        r = b.sh("echo still; cat /tmp/hx-take-over 2>&1; true")
        assert r["code"] == 0 and r["stdout"].startswith(b"still\n"), r
        assert b"No such file" in r["stdout"], r   # b's /tmp is its own
        c = h.create_sandbox({"allow_net": []})
        try:
            assert c.sh("echo new")["stdout"] == b"new\n"
        finally:
            c.ws.close()
    finally:
        a.ws.close()
        b.ws.close()
