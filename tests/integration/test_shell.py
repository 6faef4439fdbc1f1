# hutch shell (issue 8): a shell on a pseudo-terminal in the sandbox, hutch's
# own protocol extension (spawn "pty", ptyResize). Driven under tmux with a
# private server socket, so nothing touches anyone else's tmux.
import os
import shlex
import subprocess
import time

from hutchlib import hutch_cli_path


def test_shell_runs_on_a_terminal_and_returns_the_status(hutchd, sandbox):
    r = hutchd.cli("shell", sandbox.id, "--", "bash", "-c", "tty; stty size; echo out; echo err >&2; exit 7")
    assert r.returncode == 7, (r.returncode, r.stdout, r.stderr)
    lines = r.stdout.replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/pts/"), r.stdout          # a terminal, not a pipe
    assert lines[1] == "24 80"                                 # the default size without a local tty
    assert "out" in lines and "err" in lines                   # one output: stderr joins stdout
    # positive control: without the shell verb the same command has no terminal
    p = sandbox.run("bash", ["-c", "tty"])
    assert p["code"] == 1 and b"not a tty" in p["stdout"]


def _tmux(sock, *args):
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=30)


def _wait_pane(sock, needle, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = _tmux(sock, "capture-pane", "-p", "-t", "t").stdout
        if needle in out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never showed in the pane:\n{out}")


def test_interactive_shell_under_tmux_follows_resizes(hutchd, sandbox, tmp_path):
    sock = f"hutch-test-{os.getpid()}"
    status = tmp_path / "status"
    cmd = (f"env HUTCH_ENDPOINT=http://127.0.0.1:{hutchd.port} HUTCH_TOKEN={hutchd.token} "
           f"{shlex.quote(hutch_cli_path())} shell {sandbox.id}; echo $? > {status}; sleep 60")
    r = _tmux(sock, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "100", "-y", "30", cmd)
    assert r.returncode == 0, r.stderr
    try:
        _wait_pane(sock, ":~$")  # the shell's prompt: typing earlier may be flushed by readline
        _tmux(sock, "send-keys", "-t", "t", "stty size; echo M$((6*7))", "Enter")
        out = _wait_pane(sock, "M42")
        assert "30 100" in out, out
        _tmux(sock, "resize-window", "-t", "t", "-x", "120", "-y", "40")
        deadline = time.monotonic() + 30
        while True:  # the resize travels: SIGWINCH -> ptyResize -> TIOCSWINSZ
            _tmux(sock, "send-keys", "-t", "t", "clear; stty size; echo S$((5*5))", "Enter")
            out = _wait_pane(sock, "S25")
            if "40 120" in out or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "40 120" in out, out
        _tmux(sock, "send-keys", "-t", "t", "sleep 100", "Enter")
        time.sleep(0.5)
        _tmux(sock, "send-keys", "-t", "t", "C-c", "")        # ^C reaches the sandbox's foreground job
        _tmux(sock, "send-keys", "-t", "t", "echo after$((1+1))", "Enter")
        _wait_pane(sock, "after2")
        _tmux(sock, "send-keys", "-t", "t", "exit 3", "Enter")
        deadline = time.monotonic() + 30
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status.read_text().strip() == "3"
    finally:
        _tmux(sock, "kill-server")
