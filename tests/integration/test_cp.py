# `hutch cp` against a real hutchd: files and trees in, out and between
# sandboxes (modes, symlinks, empty files, a large binary), tar streams on
# stdin/stdout, and hostile archives that must not write outside their root.
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from hutchlib import hutch_cli_path


@pytest.fixture(scope="module")
def sbid(hutchd):
    sid = hutchd.cli_create()
    yield sid
    hutchd.cli("kill", sid)


@pytest.fixture(scope="module")
def sbid2(hutchd):
    sid = hutchd.cli_create()
    yield sid
    hutchd.cli("kill", sid)


@pytest.fixture
def tmp(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def sh(hutchd, sid, script):
    r = hutchd.cli("sh", sid, script, timeout=120)
    assert r.returncode == 0, (script, r.stdout, r.stderr)
    return r.stdout


def cp(hutchd, *args, check=True, input=None, timeout=300):
    r = hutchd.cli("cp", *args, check=check, input=input, timeout=timeout)
    return r


def _cp_raw(hutchd, args, data=b""):
    """hutch cp with binary stdin/stdout (hutchd.cli decodes text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DENO_", "HUTCH_TOKEN", "HUTCH_SOCKET"))}
    env["HUTCH_ENDPOINT"] = hutchd.url
    env["HUTCH_TOKEN"] = hutchd.token
    r = subprocess.run([hutch_cli_path(), "cp", *args], input=data, env=env, capture_output=True, timeout=120)
    r.stderr = r.stderr.decode(errors="replace")
    return r


def make_tree(root):
    """nested dirs, an empty file, an executable, relative and absolute
    symlinks, a read-only directory, a 3 MiB binary."""
    os.makedirs(root / "a" / "b" / "c")
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (root / "empty").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o750)
    (root / "secret").write_text("s\n")
    os.chmod(root / "secret", 0o600)
    os.symlink("a/b/c/deep.txt", root / "rel-link")
    os.symlink("/etc/hostname", root / "abs-link")
    os.symlink("does-not-exist", root / "dangling")
    os.makedirs(root / "ro")
    (root / "ro" / "inside").write_text("x")
    os.chmod(root / "ro", 0o555)
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))


def describe_local(root):
    """{relpath: (type, mode, content-hash or link target)} of a local tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", None, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), None)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest())
    return out


DESCRIBE_REMOTE = r'''
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    for n in dirnames + filenames:
        p = os.path.join(dirpath, n)
        rel = os.path.relpath(p, root)
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ["l", None, os.readlink(p)]
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ["d", stat.S_IMODE(st.st_mode), None]
        else:
            out[rel] = ["f", stat.S_IMODE(st.st_mode), hashlib.sha256(open(p, "rb").read()).hexdigest()]
print(json.dumps(out))
'''


def describe_remote(hutchd, sid, root):
    import json
    r = hutchd.cli("exec", sid, "--", "python3", "-c", DESCRIBE_REMOTE, root, timeout=120)
    assert r.returncode == 0, r.stderr
    return {k: tuple(v) for k, v in json.loads(r.stdout).items()}


def restore_perms(root):
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, 0o755)


def test_cp_file_roundtrip_is_byte_exact_with_mode(hutchd, sbid, tmp):
    src = tmp / "f.bin"
    data = os.urandom(5 * 1024 * 1024 + 3)
    src.write_bytes(data)
    os.chmod(src, 0o741)
    cp(hutchd, str(src), f"{sbid}:/home/app/f.bin")
    out = sh(hutchd, sbid, "sha256sum /home/app/f.bin; stat -c %a /home/app/f.bin")
    assert hashlib.sha256(data).hexdigest() in out
    assert out.split()[-1] == "741"
    back = tmp / "back.bin"
    cp(hutchd, f"{sbid}:f.bin", str(back))  # relative: /home/app
    assert back.read_bytes() == data
    assert stat.S_IMODE(os.lstat(back).st_mode) == 0o741


def test_cp_tree_up_and_down_keeps_modes_symlinks_and_empty_files(hutchd, sbid, tmp):
    src = tmp / "tree"
    make_tree(src)
    try:
        want = describe_local(src)
        cp(hutchd, str(src), f"{sbid}:/home/app/tree")
        assert describe_remote(hutchd, sbid, "/home/app/tree") == want
        down = tmp / "down"
        cp(hutchd, f"{sbid}:/home/app/tree", str(down))
        assert describe_local(down) == want
    finally:
        restore_perms(tmp)


def test_cp_into_existing_directory_uses_source_name(hutchd, sbid, tmp):
    (tmp / "note.txt").write_text("hello\n")
    sh(hutchd, sbid, "mkdir -p /home/app/into")
    cp(hutchd, str(tmp / "note.txt"), f"{sbid}:/home/app/into")
    assert sh(hutchd, sbid, "cat /home/app/into/note.txt") == "hello\n"
    os.makedirs(tmp / "local")
    cp(hutchd, f"{sbid}:/home/app/into", str(tmp / "local"))
    assert (tmp / "local" / "into" / "note.txt").read_text() == "hello\n"


def test_cp_overwrites_an_existing_file(hutchd, sbid, tmp):
    sh(hutchd, sbid, "printf 'old content that is longer' > /home/app/ow.txt")
    (tmp / "ow.txt").write_text("new")
    cp(hutchd, str(tmp / "ow.txt"), f"{sbid}:/home/app/ow.txt")
    assert sh(hutchd, sbid, "cat /home/app/ow.txt") == "new"


def test_cp_between_sandboxes(hutchd, sbid, sbid2, tmp):
    sh(hutchd, sbid, "mkdir -p /home/app/x2/sub && head -c 2000000 /dev/urandom > /home/app/x2/sub/r.bin"
                     " && ln -s sub/r.bin /home/app/x2/link && chmod 700 /home/app/x2/sub")
    want = describe_remote(hutchd, sbid, "/home/app/x2")
    cp(hutchd, f"{sbid}:/home/app/x2", f"{sbid2}:/home/app/x2")
    assert describe_remote(hutchd, sbid2, "/home/app/x2") == want


def test_cp_to_stdout_is_a_tar_stream(hutchd, sbid, tmp):
    sh(hutchd, sbid, "mkdir -p /home/app/t/d && echo one > /home/app/t/d/one && ln -sf d/one /home/app/t/l"
                     " && chmod 640 /home/app/t/d/one")
    r = _cp_raw(hutchd, [sbid + ":/home/app/t", "-"])
    assert r.returncode == 0, r.stderr
    tf = tarfile.open(fileobj=io.BytesIO(r.stdout))
    names = {m.name: m for m in tf.getmembers()}
    assert names["t/d/one"].isfile() and names["t/d/one"].mode & 0o777 == 0o640
    assert tf.extractfile("t/d/one").read() == b"one\n"
    assert names["t/l"].issym() and names["t/l"].linkname == "d/one"
    assert names["t"].isdir()


def _tar_bytes(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, payload in entries:
            ti = tarfile.TarInfo(name)
            if kind == "f":
                ti.size = len(payload)
                ti.mode = 0o640
                tf.addfile(ti, io.BytesIO(payload))
            elif kind == "d":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            elif kind == "l":
                ti.type = tarfile.SYMTYPE
                ti.linkname = payload
                tf.addfile(ti)
    return buf.getvalue()


def _cp_stdin(hutchd, dst, data):
    return _cp_raw(hutchd, ["-", dst], data)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_cp_from_stdin_unpacks_tar_with_long_names(hutchd, sbid, fmt):
    long_dir = "d" * 120 if fmt != tarfile.USTAR_FORMAT else "d" * 90
    long_name = f"{long_dir}/" + "n" * 150 if fmt != tarfile.USTAR_FORMAT else f"{long_dir}/short"
    data = _tar_bytes([("top", "d", None), ("top/f.txt", "f", b"hello"), ("top/implicit/deeper/x", "f", b"x"),
                       (long_name, "f", b"long"), ("top/lnk", "l", "f.txt")], fmt)
    dst = f"/home/app/untar{fmt}"
    r = _cp_stdin(hutchd, f"{sbid}:{dst}", data)
    assert r.returncode == 0, r.stderr
    assert sh(hutchd, sbid, f"cat {dst}/top/f.txt {dst}/top/implicit/deeper/x {dst}/{long_name}") == "helloxlong"
    assert sh(hutchd, sbid, f"readlink {dst}/top/lnk; stat -c %a {dst}/top/f.txt") == "f.txt\n640\n"


@pytest.mark.parametrize("entries", [
    [("../escape", "f", b"x")],
    [("/abs-escape", "f", b"x")],
    [("ok/../../escape", "f", b"x")],
    [("lnk", "l", "/home/app"), ("lnk/escape", "f", b"x")],
], ids=["dotdot", "absolute", "inner-dotdot", "through-own-symlink"])
def test_cp_from_stdin_refuses_escaping_entries(hutchd, sbid, entries):
    sh(hutchd, sbid, "rm -rf /home/app/jail /home/app/escape /abs-escape; mkdir -p /home/app/jail/in")
    r = _cp_stdin(hutchd, f"{sbid}:/home/app/jail/in", _tar_bytes(entries))
    assert r.returncode != 0
    assert "refused" in r.stderr or "symlink" in r.stderr, r.stderr
    assert sh(hutchd, sbid, "ls -A /home/app/jail/in | grep -v lnk; test ! -e /home/app/escape "
                            "&& test ! -e /home/app/jail/escape && test ! -e /abs-escape && echo clean") == "clean\n"


def test_cp_from_stdin_rejects_garbage(hutchd, sbid):
    r = _cp_stdin(hutchd, f"{sbid}:/home/app/garbage", os.urandom(4096))
    assert r.returncode != 0 and "tar" in r.stderr
    r = _cp_stdin(hutchd, f"{sbid}:/home/app/garbage", _tar_bytes([("f", "f", b"x" * 5000)])[:1500])
    assert r.returncode != 0 and "truncated" in r.stderr, r.stderr
    # cut between two entries (no end-of-archive block): libarchive alone calls that the end
    whole = _tar_bytes([("a", "f", b"x" * 512), ("b", "f", b"y")], tarfile.USTAR_FORMAT)
    r = _cp_stdin(hutchd, f"{sbid}:/home/app/cut", whole[:1024])
    assert r.returncode != 0 and "truncated at byte 1024" in r.stderr, r.stderr
    r = _cp_stdin(hutchd, f"{sbid}:/home/app/cut", whole)  # positive control: the whole archive
    assert r.returncode == 0, r.stderr
    assert sh(hutchd, sbid, "cat /home/app/cut/b") == "y"


def test_cp_non_ascii_names_both_ways(hutchd, sbid):
    data = _tar_bytes([("naïve", "d", None), ("naïve/ü.txt", "f", b"u"), ("naïve/l", "l", "ü.txt")])
    r = _cp_stdin(hutchd, f"{sbid}:/home/app/utf", data)
    assert r.returncode == 0, r.stderr
    assert sh(hutchd, sbid, "cat /home/app/utf/naïve/ü.txt; readlink /home/app/utf/naïve/l") == "uü.txt\n"
    r = _cp_raw(hutchd, [sbid + ":/home/app/utf/naïve", "-"])
    assert r.returncode == 0, r.stderr
    assert b"hdrcharset" not in r.stdout  # UTF-8 names as UTF-8 (GNU tar warns on hdrcharset=BINARY)
    tf = tarfile.open(fileobj=io.BytesIO(r.stdout))
    assert {m.name for m in tf.getmembers()} == {"naïve", "naïve/ü.txt", "naïve/l"}
    assert tf.extractfile("naïve/ü.txt").read() == b"u"


def test_cp_missing_source_and_bad_usage(hutchd, sbid, tmp):
    r = cp(hutchd, f"{sbid}:/home/app/nope", str(tmp / "x"), check=False)
    assert r.returncode == 1 and "ENOENT" in r.stderr or "no such" in r.stderr.lower(), r.stderr
    r = cp(hutchd, str(tmp / "nope"), f"{sbid}:/home/app/x", check=False)
    assert r.returncode == 1 and r.stderr.strip()
    r = cp(hutchd, str(tmp), str(tmp / "y"), check=False)
    assert r.returncode == 2 and "sandbox" in r.stderr
    r = cp(hutchd, "only-one", check=False)
    assert r.returncode == 2


def test_cp_upload_into_root_owned_dir_is_permission_denied(hutchd, sbid, tmp):
    (tmp / "p").write_text("x")
    r = cp(hutchd, str(tmp / "p"), f"{sbid}:/etc/passwd", check=False)
    assert r.returncode == 1 and ("EACCES" in r.stderr or "ermission" in r.stderr), r.stderr
    assert "root:" in sh(hutchd, sbid, "head -1 /etc/passwd")


def test_cp_large_file_both_ways(hutchd, sbid, tmp):
    src = tmp / "large.bin"
    with open(src, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    h = hashlib.sha256(src.read_bytes()).hexdigest()
    cp(hutchd, "-q", str(src), f"{sbid}:/tmp/large.bin")
    assert h in sh(hutchd, sbid, "sha256sum /tmp/large.bin")
    back = tmp / "large.back"
    cp(hutchd, f"{sbid}:/tmp/large.bin", str(back))
    assert hashlib.sha256(back.read_bytes()).hexdigest() == h
    sh(hutchd, sbid, "rm -f /tmp/large.bin")
