# How spawn finds and starts a command (src/init/spawn.c exec_search): the
# PATH of the spawn's own environment, execvpe's rules (an entry that says
# EACCES is remembered, ENOENT goes on to the next), a script without #!
# run by /bin/sh, and the error code and message of each refusal.
import pytest

from hutchlib import RpcFailure


def spawn_error(sandbox, params):
    with pytest.raises(RpcFailure) as ei:
        sandbox.call("spawn", {"args": [], "stdout": "piped", "stderr": "piped", **params})
    return ei.value.error


def test_command_is_found_on_the_spawns_own_path(sandbox):
    r = sandbox.sh("mkdir -p /tmp/p1 /tmp/p2 && printf '#!/bin/sh\\necho one\\n' >/tmp/p1/hx && "
                   "printf '#!/bin/sh\\necho two \"$@\"\\n' >/tmp/p2/hx && chmod +x /tmp/p1/hx /tmp/p2/hx")
    assert r["code"] == 0, r
    r = sandbox.run("hx", ["a"], env={"PATH": "/tmp/nope:/tmp/p2:/tmp/p1"})
    assert r["code"] == 0 and r["stdout"] == b"two a\n", r
    r = sandbox.run("hx", env={"PATH": "/tmp/p1:/tmp/p2"})
    assert r["stdout"] == b"one\n", r
    # control: not on the default PATH
    assert spawn_error(sandbox, {"command": "hx"})["code"] == "ENOENT"


def test_script_without_shebang_runs_under_bin_sh(sandbox):
    r = sandbox.sh("mkdir -p /tmp/p3 && printf 'echo \"plain $0 $1 $2\"\\n' >/tmp/p3/plain && chmod +x /tmp/p3/plain")
    assert r["code"] == 0, r
    r = sandbox.run("plain", ["x", "y"], env={"PATH": "/tmp/p3"})
    assert r["code"] == 0 and r["stdout"] == b"plain /tmp/p3/plain x y\n", r
    r = sandbox.run("/tmp/p3/plain", ["z"])
    assert r["stdout"] == b"plain /tmp/p3/plain z \n", r


def test_non_executable_on_path_is_eacces_unless_a_later_entry_runs(sandbox):
    r = sandbox.sh("mkdir -p /tmp/p4 /tmp/p5 && printf '#!/bin/sh\\necho ok\\n' >/tmp/p4/hy && chmod 644 /tmp/p4/hy && "
                   "printf '#!/bin/sh\\necho five\\n' >/tmp/p5/hy && chmod 755 /tmp/p5/hy")
    assert r["code"] == 0, r
    err = spawn_error(sandbox, {"command": "hy", "env": {"PATH": "/tmp/p4:/tmp/nope"}})
    assert err["code"] == "EACCES", err
    assert "spawn hy: Permission denied" in err["message"], err
    r = sandbox.run("hy", env={"PATH": "/tmp/p4:/tmp/p5"})
    assert r["code"] == 0 and r["stdout"] == b"five\n", r


def test_missing_command_and_cwd_are_enoent_with_their_messages(sandbox):
    err = spawn_error(sandbox, {"command": "no-such-command-hx"})
    assert err["code"] == "ENOENT" and "spawn no-such-command-hx: No such file or directory" in err["message"], err
    err = spawn_error(sandbox, {"command": "true", "cwd": "/no/such/dir"})
    assert err["code"] == "ENOENT" and "chdir /no/such/dir" in err["message"], err
    # the sandbox still spawns afterwards
    assert sandbox.run("true")["code"] == 0
