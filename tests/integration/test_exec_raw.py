# hutch's raw exec channel (docs/protocol.md "Raw exec channel"):
# GET /hutch/v1/sandboxes/ID/exec?cmd=..., a WebSocket of subprotocol
# hutch-exec.v1 whose binary messages are a 1-byte tag and raw bytes, and
# `hutch exec` on it. Byte-exact both ways, stderr apart, exit codes and
# signals, stdin EOF, a client that stops reading (the process blocks, hutchd
# does not grow), a client that leaves (the process is killed), hostile
# messages (each refusal's close code and reason, beside a valid message that
# works), tokens, spawn refusals, a sandbox killed in the middle, the channel
# limit, and the CLI's fallback against a hutchd without the channel.
import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

import pytest

from hutchlib import (OP_BIN, OP_TEXT, HandshakeError, WebSocket, WsClosed, hutch_cli_path,
                      wait_until)

STDIN, STDOUT, STDERR, EXIT, SIGNAL, RESIZE, CLOSE_STDIN = range(7)
PROTO = "hutch-exec.v1"
BIG = 50 * 1024 * 1024 + 4097


@pytest.fixture(scope="module")
def sid(hutchd):
    s = hutchd.cli_create()
    yield s
    hutchd.cli("kill", s)


def exec_path(sid, cmd, *args, **opts):
    q = [("cmd", cmd)] + [("arg", a) for a in args] + list(opts.items())
    return f"/hutch/v1/sandboxes/{sid}/exec?" + urllib.parse.urlencode(q)


class Chan:
    """A hutch-exec.v1 client in a few lines: what any WebSocket library does."""

    def __init__(self, hutchd, sid, cmd, *args, token=..., proto=PROTO, **opts):
        hdr = {"Sec-WebSocket-Protocol": proto} if proto else {}
        self.ws = hutchd.ws(exec_path(sid, cmd, *args, **opts), headers=hdr, token=token)
        assert self.ws.headers.get("sec-websocket-protocol") == PROTO
        self.pid = int(self.ws.headers["x-hutch-pid"])

    def send(self, tag, data=b""):
        self.ws.send_frame(OP_BIN, bytes([tag]) + data)

    def run(self, stdin=None, timeout=60):
        """stdin (then close-stdin), and everything until the close: (out, err, exit, close code)."""
        if stdin is not None:
            self.send(STDIN, stdin)
            self.send(CLOSE_STDIN)
        out, err, status, ended = bytearray(), bytearray(), None, set()
        try:
            while True:
                op, m = self.ws.recv(timeout)
                assert op == OP_BIN and status is None, (op, m[:40])
                if m[0] in (STDOUT, STDERR) and len(m) == 1:
                    ended.add(m[0])
                elif m[0] == STDOUT:
                    out += m[1:]
                elif m[0] == STDERR:
                    err += m[1:]
                else:
                    assert m[0] == EXIT, m[:40]
                    status = json.loads(m[1:])
        except WsClosed as c:
            return bytes(out), bytes(err), status, (c.code, c.reason), ended

    def close(self):
        self.ws.close()


def cli(hutchd, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=None, endpoint=None, timeout=120):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("DENO_", "HUTCH_"))}
    e.update({"HUTCH_ENDPOINT": endpoint or hutchd.url, "HUTCH_TOKEN": hutchd.token}, **(env or {}))
    return subprocess.run([hutch_cli_path(), *args], env=e, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                          timeout=timeout)


def alive_in(hutchd, sid, pid):
    r = cli(hutchd, "exec", sid, "--", "kill", "-0", str(pid))
    return r.returncode == 0


# ---------------------------------------------------------------- bytes


def test_cli_exec_cat_moves_50_mb_byte_exact_both_ways(hutchd, sid, tmp_path):
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    data = os.urandom(BIG)
    src.write_bytes(data)
    with open(src, "rb") as i, open(dst, "wb") as o:
        r = cli(hutchd, "exec", sid, "--", "cat", stdin=i, stdout=o, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert os.path.getsize(dst) == BIG
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_stdout_stderr_and_their_ends_come_apart_byte_exact(hutchd, sid):
    c = Chan(hutchd, sid, "sh", "-c", r"printf '\000\001\377\r\n'; printf 'e\000rr' >&2; exit 3")
    out, err, status, close, ended = c.run(stdin=b"")
    assert out == b"\x00\x01\xff\r\n"
    assert err == b"e\x00rr"
    assert status == {"code": 3, "signal": None, "oom": False}
    assert ended == {STDOUT, STDERR}  # an empty message ends each stream before the exit
    assert close == (1000, "exited")


def test_cli_exec_keeps_stderr_apart_and_exits_with_the_code(hutchd, sid):
    r = cli(hutchd, "exec", sid, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    r = cli(hutchd, "exec", sid, "--", "true")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_a_signal_death_is_reported_and_the_cli_exits_128_plus_n(hutchd, sid):
    c = Chan(hutchd, sid, "sh", "-c", "kill -TERM $$")
    _, _, status, close, _ = c.run(stdin=b"")
    assert status == {"code": 143, "signal": "SIGTERM", "oom": False}
    assert close == (1000, "exited")
    r = cli(hutchd, "exec", sid, "--", "sh", "-c", "kill -KILL $$")
    assert r.returncode == 137, r.stderr


def test_signal_message_reaches_the_process(hutchd, sid):
    c = Chan(hutchd, sid, "sleep", "1000")
    c.send(SIGNAL, b"SIGINT")
    _, _, status, close, _ = c.run()
    assert status["signal"] == "SIGINT" and status["code"] == 130
    c = Chan(hutchd, sid, "sleep", "1000")
    c.send(SIGNAL, b"USR1")  # without "SIG" too
    assert c.run()[2]["signal"] == "SIGUSR1"


def test_stdin_eof_ends_the_input(hutchd, sid):
    c = Chan(hutchd, sid, "wc", "-c")
    c.send(STDIN, b"x" * 100000)
    c.send(STDIN, b"y" * 5)
    c.send(STDIN)  # an empty stdin message is allowed and carries nothing
    c.send(CLOSE_STDIN)
    out, _, status, _, _ = c.run()
    assert out.strip() == b"100005" and status["code"] == 0
    r = subprocess.run([hutch_cli_path(), "exec", sid, "--", "wc", "-c"], input=b"abc", capture_output=True,
                       env={**os.environ, "HUTCH_ENDPOINT": hutchd.url, "HUTCH_TOKEN": hutchd.token}, timeout=60)
    assert r.stdout.strip() == b"3", r.stderr
    c = Chan(hutchd, sid, "wc", "-c", stdin="null")  # no stdin at all: /dev/null
    assert c.run()[0].strip() == b"0"


def test_options_env_cwd_clear_env_and_tty(hutchd, sid):
    c = Chan(hutchd, sid, "sh", "-c", 'echo "$A|$B|$(pwd)|${HOME:-none}"', env="A=1 2", cwd="/tmp")
    assert c.run(stdin=b"")[0] == b"1 2||/tmp|/home/app\n"
    c = Chan(hutchd, sid, "/bin/sh", "-c", 'echo "${HOME:-none}"', clearEnv="true")
    assert c.run(stdin=b"")[0] == b"none\n"
    c = Chan(hutchd, sid, "sh", "-c", "stty size; read x; stty size", tty="24x80")
    first = b""
    while b"24 80\r\n" not in first:
        op, m = c.ws.recv(30)
        assert m[0] == STDOUT
        first += m[1:]
    c.send(RESIZE, struct.pack("!HH", 30, 100))
    c.send(STDIN, b"\n")
    out, err, status, _, _ = c.run()
    assert first == b"24 80\r\n" and out.endswith(b"30 100\r\n"), (first, out)
    assert err == b"" and status["code"] == 0  # a terminal: everything on stdout


# ---------------------------------------------------------------- flow control


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_a_client_that_stops_reading_blocks_the_process_not_hutchd(hutchd, sid):
    script = ("rm -f /tmp/progress; n=0; while head -c 1048576 /dev/zero; do n=$((n+1)); "
              "echo $n > /tmp/progress; done")
    before = rss_kib(hutchd.pid)
    c = Chan(hutchd, sid, "sh", "-c", script, stdin="null")

    def progress():
        r = cli(hutchd, "exec", sid, "--", "cat", "/tmp/progress")
        return int(r.stdout or b"0")

    time.sleep(3)
    p1 = progress()
    time.sleep(2)
    p2 = progress()
    # kernel socket buffers, hutchd's 1 MiB queue and the agent's 512 KiB window: a few MiB, never more
    grown = rss_kib(hutchd.pid) - before
    print(f"stalled writer: {p2} MiB written before it blocked; hutchd RSS grew {grown} KiB")
    assert 0 < p1 == p2 <= 40, (p1, p2)
    assert grown < 64 * 1024
    # positive control: the process was held by us, not dead; reading lets it go on
    got = 0
    while got < 64 << 20:
        op, m = c.ws.recv(30)
        assert m[0] == STDOUT
        got += len(m) - 1
    assert wait_until(lambda: progress() > p2 + 16, 30)
    c.close()


def test_disconnect_kills_the_process(hutchd, sid):
    c = Chan(hutchd, sid, "sleep", "1000")
    assert alive_in(hutchd, sid, c.pid)  # positive control
    c.ws.sock.close()  # gone without a close frame
    assert wait_until(lambda: not alive_in(hutchd, sid, c.pid), 20)
    c = Chan(hutchd, sid, "sleep", "1000")
    assert alive_in(hutchd, sid, c.pid)
    c.close()  # a close frame before the exit is a disconnect too
    assert wait_until(lambda: not alive_in(hutchd, sid, c.pid), 20)


def test_disconnect_kills_what_the_process_started_too(hutchd, sid):
    def sleepers():  # the pattern does not match pgrep's own command line
        return cli(hutchd, "exec", sid, "--", "pgrep", "-f", "sleep 100[12]").returncode == 0

    c = Chan(hutchd, sid, "sh", "-c", "sleep 1001 & sleep 1002; wait", stdin="null")
    assert wait_until(sleepers, 20)  # positive control: both run
    c.ws.sock.close()
    assert wait_until(lambda: not sleepers(), 20)  # its process group went with it


# ---------------------------------------------------------------- hostile input

HOSTILE = [
    ("empty message", OP_BIN, b"", 1002, "a message starts with a 1-byte tag"),
    ("unknown tag", OP_BIN, b"\x7fabc", 1002, "unknown tag 127"),
    ("server tag", OP_BIN, bytes([STDOUT]) + b"x", 1002, "tag 1 is sent by the server only"),
    ("exit tag", OP_BIN, bytes([EXIT]) + b"{}", 1002, "tag 3 is sent by the server only"),
    ("text message", OP_TEXT, b"hello", 1003, "hutch-exec.v1 carries binary messages only"),
    ("oversized", OP_BIN, bytes([STDIN]) + b"z" * ((1 << 20) + 1), 1009, ""),
    ("close-stdin with bytes", OP_BIN, bytes([CLOSE_STDIN]) + b"x", 1007, "close-stdin carries no bytes"),
    ("bad signal", OP_BIN, bytes([SIGNAL]) + b"SIGFOO", 1007, "signal: not a signal name (e.g. SIGINT)"),
    ("signal junk", OP_BIN, bytes([SIGNAL]) + b"9; rm", 1007, "signal: not a signal name (e.g. SIGINT)"),
    ("resize length", OP_BIN, bytes([RESIZE]) + b"\x00\x18", 1007, "resize carries rows and cols, 2 bytes each"),
    ("resize zero", OP_BIN, bytes([RESIZE]) + b"\x00\x00\x00\x50", 1007, "resize: rows and cols must be 1..1000"),
    ("resize without tty", OP_BIN, bytes([RESIZE]) + struct.pack("!HH", 24, 80), 1002,
     "resize: the process has no terminal (tty=)"),
]


@pytest.mark.parametrize("name,op,payload,code,reason", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_message_closes_with_its_code_and_kills_the_process(hutchd, sid, name, op, payload, code, reason):
    c = Chan(hutchd, sid, "cat")
    c.send(STDIN, b"ping\n")  # positive control: the channel works before the bad message
    op_, m = c.ws.recv(30)
    assert (op_, m) == (OP_BIN, bytes([STDOUT]) + b"ping\n")
    c.ws.send_frame(op, payload)
    with pytest.raises(WsClosed) as ex:
        while True:
            _, m = c.ws.recv(30)
            assert m[0] in (STDOUT, STDERR) and len(m) == 1, m[:40]  # only the ends, no exit status
    assert (ex.value.code, ex.value.reason) == (code, reason)
    assert wait_until(lambda: not alive_in(hutchd, sid, c.pid), 20)


def test_stdin_after_close_stdin_is_refused(hutchd, sid):
    c = Chan(hutchd, sid, "sleep", "1000")
    c.send(CLOSE_STDIN)
    c.send(STDIN, b"late")
    with pytest.raises(WsClosed) as ex:
        c.ws.recv(30)
    assert (ex.value.code, ex.value.reason) == (1002, "stdin after close-stdin")
    c = Chan(hutchd, sid, "sleep", "1000", stdin="null")
    c.send(STDIN, b"x")
    with pytest.raises(WsClosed) as ex:
        c.ws.recv(30)
    assert (ex.value.code, ex.value.reason) == (1002, "stdin: the process has no stdin (stdin=null)")
    assert wait_until(lambda: not alive_in(hutchd, sid, c.pid), 20)


def test_messages_after_the_exit_are_not_answered(hutchd, sid):
    c = Chan(hutchd, sid, "true", stdin="null")
    op, m = c.ws.recv(30)
    while m[0] != EXIT:
        op, m = c.ws.recv(30)
    c.ws.send_frame(OP_BIN, bytes([STDIN]) + b"late")  # the server already closed: discarded
    c.ws.send_frame(OP_BIN, b"\x7f")
    with pytest.raises(WsClosed) as ex:
        c.ws.recv(30)
    assert (ex.value.code, ex.value.reason) == (1000, "exited")


# ---------------------------------------------------------------- refusals before the upgrade


def refused(hutchd, path, headers=None, token=...):
    with pytest.raises(HandshakeError) as ex:
        hutchd.ws(path, headers=headers, token=token)
    return ex.value.status, ex.value.json().get("code"), ex.value.json().get("message")


def test_token_is_required(hutchd, sid):
    p, h = exec_path(sid, "true", stdin="null"), {"Sec-WebSocket-Protocol": PROTO}
    assert refused(hutchd, p, h, token=None)[:2] == (401, "INVALID_TOKEN")
    assert refused(hutchd, p, h, token="ddo_" + "x" * 40)[:2] == (401, "INVALID_TOKEN")
    c = Chan(hutchd, sid, "true", stdin="null")  # positive control: the same request with the token
    assert c.run()[2]["code"] == 0


def test_bad_requests_are_refused_with_a_status(hutchd, sid):
    h = {"Sec-WebSocket-Protocol": PROTO}
    assert refused(hutchd, exec_path(sid, "true"), {"Sec-WebSocket-Protocol": "hutch.v1"})[:2] == \
        (400, "SUBPROTOCOL_REQUIRED")
    assert hutchd.http("GET", exec_path(sid, "true")).status == 400  # not a WebSocket
    assert refused(hutchd, f"/hutch/v1/sandboxes/{sid}/exec?arg=x", h) == \
        (400, "EINVAL", "EINVAL: the command is missing: ?cmd=NAME[&arg=...]")
    assert refused(hutchd, exec_path(sid, "true", bogus="1"), h)[:2] == (400, "EINVAL")
    assert refused(hutchd, f"/hutch/v1/sandboxes/{sid}/exec?cmd=echo&arg=a%00b", h) == \
        (400, "EINVAL", 'EINVAL: "arg" contains a NUL byte')
    assert refused(hutchd, f"/hutch/v1/sandboxes/{sid}/exec?cmd=echo&arg=%ff", h) == \
        (400, "EINVAL", 'EINVAL: "arg" is not UTF-8')  # JSON, and so spawn, cannot carry it: never dropped
    assert refused(hutchd, exec_path(sid, "true", tty="0x80"), h)[:2] == (400, "EINVAL")
    assert refused(hutchd, f"/hutch/v1/sandboxes/{sid}/exec?cmd=true&cwd=/a&cwd=/b", h) == \
        (400, "EINVAL", 'EINVAL: "cwd" given twice')
    st, code, msg = refused(hutchd, exec_path(sid, "no-such-command-here"), h)
    assert (st, code) == (404, "ENOENT") and "no-such-command-here" in msg
    assert refused(hutchd, exec_path("sbx_loc_" + "a" * 20, "true"), h)[:2] == (404, "SANDBOX_NOT_FOUND")
    # positive control: "%2500" is the text "%00", not a NUL
    c = Chan.__new__(Chan)
    c.ws = hutchd.ws(f"/hutch/v1/sandboxes/{sid}/exec?cmd=echo&arg=a%2500b+c&stdin=null", headers=h)
    assert c.run()[0] == b"a%00b c\n"
    r = cli(hutchd, "exec", sid, "--", "no-such-command-here")
    assert r.returncode == 127 and b"no-such-command-here" in r.stderr


def test_channels_per_sandbox_are_limited(hutchd):
    s = hutchd.cli_create()
    try:
        chans = [Chan(hutchd, s, "sleep", "1000", stdin="null") for _ in range(64)]
        st, code, msg = refused(hutchd, exec_path(s, "true", stdin="null"), {"Sec-WebSocket-Protocol": PROTO})
        assert (st, code) == (429, "EAGAIN") and "64 exec channels" in msg
        chans.pop().close()
        time.sleep(0.5)
        c = Chan(hutchd, s, "true", stdin="null")  # one closed: one more may open
        assert c.run()[2]["code"] == 0
        for c in chans:
            c.ws.sock.close()
    finally:
        hutchd.cli("kill", s)


def test_a_sandbox_killed_mid_stream_closes_the_channel(hutchd):
    s = hutchd.cli_create()
    c = Chan(hutchd, s, "cat")
    c.send(STDIN, b"before\n")
    assert c.ws.recv(30)[1] == bytes([STDOUT]) + b"before\n"
    cli_run = subprocess.Popen([hutch_cli_path(), "exec", s, "--", "sleep", "1000"], stdin=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env={**os.environ, "HUTCH_ENDPOINT": hutchd.url,
                                                             "HUTCH_TOKEN": hutchd.token})
    time.sleep(1)
    assert hutchd.http("DELETE", f"/api/v3/sandbox/{s}").status == 200
    with pytest.raises(WsClosed) as ex:
        while True:
            _, m = c.ws.recv(30)
            assert m[0] != EXIT
    assert ex.value.code == 1001 and ex.value.reason.startswith("the sandbox stopped"), ex.value.reason
    _, err = cli_run.communicate(timeout=30)
    assert cli_run.returncode == 125 and b"without an exit status" in err, err


# ---------------------------------------------------------------- the CLI against an older hutchd


class OldHutchd:
    """A TCP relay to hutchd that logs request lines and, when old, answers the
    exec route as a hutchd without it does (404 NOT_FOUND, "no route")."""

    def __init__(self, port, old):
        self.port, self.old, self.lines = port, old, []
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.srv.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.recv(65536)
            if not d:
                return c.close()
            head += d
        line = head.split(b"\r\n", 1)[0].decode()
        self.lines.append(line)
        if self.old and "/exec?" in line:
            body = json.dumps({"code": "NOT_FOUND", "message": "no route"}).encode()
            c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n%s" % (len(body), body))
            return c.close()
        u = socket.create_connection(("127.0.0.1", self.port))
        u.sendall(head)

        def pipe(a, b):
            try:
                while d := a.recv(1 << 20):
                    b.sendall(d)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pipe, args=(u, c), daemon=True)
        t.start()
        pipe(c, u)
        t.join(10)
        c.close()
        u.close()

    def close(self):
        self.srv.close()


@pytest.mark.parametrize("old", [False, True], ids=["new", "old"])
def test_cli_uses_the_raw_channel_and_falls_back_against_an_older_hutchd(hutchd, sid, old):
    relay = OldHutchd(hutchd.port, old)
    try:
        data = os.urandom(3 << 20)
        r = subprocess.run([hutch_cli_path(), "exec", sid, "--", "sh", "-c", "cat; echo e >&2; exit 5"],
                           input=data, capture_output=True, timeout=120,
                           env={**os.environ, "HUTCH_ENDPOINT": relay.url, "HUTCH_TOKEN": hutchd.token})
        assert (r.returncode, r.stdout == data, r.stderr) == (5, True, b"e\n")
        paths = [ln.split(" ")[1] for ln in relay.lines]
        assert any(p.startswith(f"/hutch/v1/sandboxes/{sid}/exec?cmd=sh&arg=-c") for p in paths), paths
        assert any(p == f"/api/v3/sandbox/{sid}/connect" for p in paths) == old, paths
    finally:
        relay.close()


def test_cli_takes_the_json_rpc_way_for_a_command_longer_than_a_request_head(hutchd, sid):
    relay = OldHutchd(hutchd.port, False)
    try:
        script = "echo " + "x" * 20000 + " | wc -c"
        r = subprocess.run([hutch_cli_path(), "sh", sid, script], capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL,
                           env={**os.environ, "HUTCH_ENDPOINT": relay.url, "HUTCH_TOKEN": hutchd.token})
        assert (r.returncode, r.stdout, r.stderr) == (0, b"20001\n", b"")
        paths = [ln.split(" ")[1] for ln in relay.lines]
        assert paths == [f"/api/v3/sandbox/{sid}/connect"], [p[:80] for p in paths]
    finally:
        relay.close()
