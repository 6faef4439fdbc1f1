# File operations must never reach the host: symlinks and hard links toward
# host paths, '..' escapes, /proc/1/root, a directory swapped for a symlink
# while `hutch cp` downloads it, and writes to root-owned files as app.
# Each test checks the host by path afterwards.
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from hutchlib import hutch_cli_path, wait_until


@pytest.fixture
def host_dir():
    """A host directory with a marker file that no sandbox must read or change."""
    d = tempfile.mkdtemp(prefix="hutch-fsesc-")
    with open(os.path.join(d, "marker"), "w") as f:
        f.write("host-only-secret\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def host_state(d):
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, d)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def rpc(sb, method, params):
    """{"ok": v} or {"error": e} of one fs call."""
    r = sb.request(method, params)
    assert "result" in r, r
    return r["result"]


def err_code(res):
    assert "error" in res, res
    return res["error"].get("code")


def b64(data):
    import base64
    return base64.b64encode(data).decode()


def sh(sb, script):
    r = sb.run("bash", ["-c", script])
    return r


def sh_ok(sb, script):
    r = sh(sb, script)
    assert r["code"] == 0, r
    return r


def test_symlink_to_host_path_reads_the_sandbox_not_the_host(sandbox, host_dir):
    marker = os.path.join(host_dir, "marker")
    sh_ok(sandbox, f"ln -s {marker} /home/app/to-host && ln -s {host_dir} /home/app/to-host-dir && "
                   "ln -s /etc/hostname /home/app/to-own")
    assert "ok" in rpc(sandbox, "readFile", {"path": "/home/app/to-own"})  # control: links are followed
    # inside the sandbox those host paths do not exist
    assert err_code(rpc(sandbox, "readFile", {"path": "/home/app/to-host"})) == "ENOENT"
    assert err_code(rpc(sandbox, "writeFile", {"path": "/home/app/to-host-dir/planted", "content": b64(b"x")})) == "ENOENT"
    assert err_code(rpc(sandbox, "writeFile", {"path": "/home/app/to-host", "content": b64(b"overwritten")})) == "ENOENT"
    assert not os.path.exists(os.path.join(host_dir, "planted"))
    with open(marker) as f:
        assert f.read() == "host-only-secret\n"


def test_dotdot_escapes_stay_inside(sandbox, host_dir):
    before = host_state(host_dir)
    deep = "/home/app/" + "../" * 40
    assert "ok" in rpc(sandbox, "readFile", {"path": deep + "etc/hostname"})  # control: '..' stops at the root
    res = rpc(sandbox, "readFile", {"path": deep + host_dir.lstrip("/") + "/marker"})
    assert err_code(res) == "ENOENT"
    res = rpc(sandbox, "writeFile", {"path": deep + host_dir.lstrip("/") + "/planted", "content": b64(b"x")})
    assert err_code(res) == "ENOENT"
    res = rpc(sandbox, "mkdir", {"path": "../../../../" + host_dir.lstrip("/") + "/newdir",
                                 "options": {"recursive": True}})
    assert res == {"ok": None}, res
    # made inside the sandbox, at the sandbox's own copy of that path
    assert rpc(sandbox, "stat", {"path": host_dir + "/newdir"})["ok"]["isDirectory"]
    assert host_state(host_dir) == before


def test_proc_1_root_is_not_a_way_out(sandbox, host_dir):
    assert "ok" in rpc(sandbox, "readFile", {"path": "/proc/self/root/etc/hostname"})  # control
    for p in ("/proc/1/root" + host_dir + "/marker", "/proc/1/root/etc/shadow", "/proc/1/cwd/etc/shadow"):
        assert err_code(rpc(sandbox, "readFile", {"path": p})) == "EACCES", p
    res = rpc(sandbox, "writeFile", {"path": "/proc/1/root" + host_dir + "/planted", "content": b64(b"x")})
    assert err_code(res) == "EACCES"
    assert not os.path.exists(os.path.join(host_dir, "planted"))


def test_writing_etc_passwd_as_app_is_permission_denied(sandbox):
    host_passwd = sha("/etc/passwd")
    res = rpc(sandbox, "writeFile", {"path": "/etc/passwd", "content": b64(b"root::0:0::/:/bin/sh\n")})
    assert err_code(res) == "EACCES"
    res = rpc(sandbox, "writeTextFile", {"path": "/etc/passwd", "content": "x", "options": {"append": True}})
    assert err_code(res) == "EACCES"
    assert "ok" in rpc(sandbox, "writeFile", {"path": "/home/app/mine", "content": b64(b"x")})  # control
    r = sandbox.run("head", ["-1", "/etc/passwd"])
    assert r["stdout"].startswith(b"root:x:0:0"), r
    assert sha("/etc/passwd") == host_passwd


def test_hard_link_to_root_file_is_refused(sandbox):
    host_passwd = sha("/etc/passwd")
    # fs.protected_hardlinks: app may not link a file it cannot write
    r = sh(sandbox, "ln /etc/passwd /home/app/hl")
    assert r["code"] == 1 and b"Operation not permitted" in r["stderr"], r
    assert err_code(rpc(sandbox, "link", {"target": "/etc/shadow", "path": "/home/app/hl2"})) == "EPERM"
    sh_ok(sandbox, "echo mine > /home/app/own && ln /home/app/own /home/app/own2")  # control: own files link
    assert rpc(sandbox, "link", {"target": "/home/app/own", "path": "/home/app/own3"}) == {"ok": None}
    r = sandbox.run("head", ["-c", "5", "/etc/passwd"])
    assert r["stdout"] == b"root:"
    assert sha("/etc/passwd") == host_passwd


def _cli(hutchd, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DENO_", "HUTCH_TOKEN", "HUTCH_SOCKET"))}
    env["HUTCH_ENDPOINT"] = hutchd.url
    env["HUTCH_TOKEN"] = hutchd.token
    return subprocess.run([hutch_cli_path(), *args], env=env, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_download_never_writes_through_a_local_symlink(hutchd, host_dir, tmp_path):
    """A previous download left d/sub -> host_dir; a new tree with a real
    directory d/sub must not put files into host_dir."""
    sb = hutchd.create_sandbox()
    try:
        sh(sb, "mkdir -p /home/app/d/sub && echo evil > /home/app/d/sub/planted")
        dest = tmp_path / "dl"
        os.makedirs(dest / "d")
        os.symlink(host_dir, dest / "d" / "sub")
        before = host_state(host_dir)
        r = _cli(hutchd, "cp", f"{sb.id}:/home/app/d", str(dest))
        # the directory is made with mkdirat beneath dest, which will not follow d/sub
        assert r.returncode == 1 and b"hutch: cp: mkdir d/sub: exists and is not a directory" in r.stderr, r
        assert host_state(host_dir) == before
        assert not os.path.exists(os.path.join(host_dir, "planted"))
    finally:
        sb.ws.close()


def test_download_race_dir_swapped_for_symlink(hutchd, host_dir, tmp_path):
    """Sandbox code swaps a directory for a symlink to a host path again and
    again while `hutch cp` downloads the tree: the host path stays untouched,
    and each copy holds what the sandbox had at some moment: the files, or
    the symlink itself, never a symlink's target (the sandbox's /etc, or a
    host path the link names)."""
    sb = hutchd.create_sandbox()
    try:
        sh_ok(sb, "mkdir -p /home/app/race/real && for i in $(seq 200); do echo $i > /home/app/race/real/f$i; done")
        racer = ("cd /home/app/race; n=0; end=$((SECONDS+60)); while [ $SECONDS -lt $end ]; do "
                 f"mv real tmpd 2>/dev/null; ln -sfn {host_dir} real; rm -f real; ln -sfn /etc real; rm -f real;"
                 " mv tmpd real 2>/dev/null;"
                 f" ln -sfn {host_dir} sub 2>/dev/null; rm -f sub; mkdir -p sub; echo x > sub/planted; rm -rf sub;"
                 " n=$((n+1)); echo $n > /home/app/rounds; done")
        pid = sb.call("spawn", {"command": "bash", "args": ["-c", racer], "stdout": "null", "stderr": "null"})["pid"]
        rounds = lambda: int(sb.sh("cat /home/app/rounds 2>/dev/null || echo 0")["stdout"] or 0)  # noqa: E731
        assert wait_until(lambda: rounds() > 0, 20), "the racer never ran"
        before = host_state(host_dir)
        start = rounds()
        outcomes = set()
        for i in range(15):
            dest = tmp_path / f"dl{i}"
            os.makedirs(dest)
            r = _cli(hutchd, "cp", f"{sb.id}:/home/app/race", str(dest))
            if r.returncode != 0:
                # the tree changed under the walk: a file gone, a symlink
                # where a directory was (refused, never followed), or the
                # other way round (readlink of what is a directory again)
                assert r.returncode == 1 and re.search(rb"ENOENT|a symlink is in the way|not a directory|"
                                                       rb"EINVAL: invalid argument, readlink", r.stderr), r
                outcomes.add("refused")
            real = dest / "race" / "real"
            if real.is_symlink():
                assert os.readlink(real) in (host_dir, "/etc"), os.readlink(real)
                outcomes.add("symlink")
            elif real.is_dir():
                files = sorted(os.listdir(real))
                # taken while moved away and back: any subset, but each file
                # whole, and none from a followed symlink (/etc's files)
                for n in files:
                    assert (real / n).read_text() == n[1:] + "\n", n
                outcomes.add("dir")
            else:
                outcomes.add("absent")  # between the mv and the ln
            assert host_state(host_dir) == before
        assert rounds() > start, "the racer stopped during the copies"
        sb.call("processKill", {"pid": pid, "signal": "SIGKILL"})
        assert host_state(host_dir) == before
        assert outcomes, outcomes
    finally:
        sb.ws.close()


def test_upload_of_tree_with_host_symlink_copies_the_link_not_the_target(hutchd, host_dir, tmp_path):
    sb = hutchd.create_sandbox()
    try:
        src = tmp_path / "up"
        os.makedirs(src)
        os.symlink(os.path.join(host_dir, "marker"), src / "link")
        r = _cli(hutchd, "cp", str(src), f"{sb.id}:/home/app/up")
        assert r.returncode == 0, r.stderr
        res = rpc(sb, "readLink", {"path": "/home/app/up/link"})
        assert res["ok"] == os.path.join(host_dir, "marker")
        assert err_code(rpc(sb, "readFile", {"path": "/home/app/up/link"})) == "ENOENT"
    finally:
        sb.ws.close()


def test_upload_stream_error_is_not_success(sandbox):
    """A client whose upload stream errors gets an error for writeFile, not ok."""
    sandbox.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.start", "params": {"streamId": 901}})
    rid = sandbox.next_id
    sandbox.next_id += 1
    sandbox.ws.send_json({"jsonrpc": "2.0", "id": rid, "method": "writeFile",
                          "params": {"path": "/home/app/partial", "contentStreamId": 901}})
    sandbox.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue",
                          "params": {"streamId": 901, "data": b64(b"half of it")}})
    time.sleep(0.2)
    sandbox.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.error",
                          "params": {"streamId": 901, "error": {"message": "boom"}}})
    r = sandbox.wait_response(rid)
    assert "error" in r["result"], r
    assert r["result"]["error"]["code"] == "EPIPE"


def test_upload_stream_error_before_the_call_is_not_success(sandbox):
    sandbox.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.start", "params": {"streamId": 902}})
    sandbox.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue",
                          "params": {"streamId": 902, "data": b64(b"abc")}})
    sandbox.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.error",
                          "params": {"streamId": 902, "error": {"message": "boom"}}})
    res = rpc(sandbox, "writeFile", {"path": "/home/app/p2", "contentStreamId": 902})
    assert err_code(res) == "EPIPE"
