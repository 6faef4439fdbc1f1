# The `hutch` CLI against a real hutchd: sandbox verbs, exit codes, stdin,
# and token create/list/revoke (over the API and over the unix socket).
import datetime
import hashlib
import json
import os

import pytest

from hutchlib import SANDBOX_ID_RE, TOKEN_RE, cli_token_create, wait_until


@pytest.fixture(scope="module")
def sbid(hutchd):
    r = hutchd.cli("create", "--memory", "1GiB", "--timeout", "5m", "--label", "suite=cli",
                   "--label", f"run={os.getpid()}", "--env", "FOO=bar baz", check=True)
    sid = r.stdout.strip()
    assert SANDBOX_ID_RE.match(sid), r.stdout
    yield sid
    hutchd.cli("kill", sid)


def test_help(hutchd):
    r = hutchd.cli("--help")
    assert r.returncode == 0
    for verb in ("create", "ls", "exec", "sh", "kill", "extend", "token"):
        assert verb in r.stdout + r.stderr


def test_no_token(hutchd):
    r = hutchd.cli("ls", token=None)
    assert r.returncode != 0
    assert r.stderr.strip()


def test_bad_token(hutchd):
    r = hutchd.cli("ls", token="ddo_definitely-not-valid")
    assert r.returncode != 0
    assert "INVALID_TOKEN" in r.stderr or "invalid" in r.stderr.lower(), r.stderr


def test_unknown_verb(hutchd):
    r = hutchd.cli("frobnicate")
    assert r.returncode != 0 and r.stderr.strip()


def test_ls(hutchd, sbid):
    r = hutchd.cli("ls", check=True)
    line = [ln for ln in r.stdout.splitlines() if sbid in ln]
    assert line and "running" in line[0], r.stdout
    r = hutchd.cli("ls", "--json", "--label", "suite=cli", "--label", f"run={os.getpid()}", check=True)
    listed = json.loads(r.stdout)
    assert [s["id"] for s in listed] == [sbid]
    assert listed[0]["labels"] == {"suite": "cli", "run": str(os.getpid())}
    r = hutchd.cli("ls", "--json", "--label", "suite=nothing", check=True)
    assert json.loads(r.stdout) == []


def test_exec_output_and_status(hutchd, sbid):
    r = hutchd.cli("exec", sbid, "--", "echo", "hello", "world")
    assert (r.returncode, r.stdout) == (0, "hello world\n"), r
    r = hutchd.cli("exec", sbid, "--", "sh", "-c", "echo to-err >&2; exit 7")
    assert r.returncode == 7, r
    assert r.stderr == "to-err\n", r.stderr


def test_exec_env_cwd_user(hutchd, sbid):
    assert hutchd.cli("exec", sbid, "--", "printenv", "FOO").stdout == "bar baz\n"
    r = hutchd.cli("exec", sbid, "--env", "X=1", "--cwd", "/tmp", "--", "sh", "-c", "echo $X $PWD")
    assert r.stdout == "1 /tmp\n", r
    assert hutchd.cli("exec", sbid, "--", "whoami").stdout == "app\n"
    assert hutchd.cli("exec", sbid, "--sudo", "--", "id", "-u").stdout == "0\n"


def test_exec_stdin_roundtrip(hutchd, sbid):
    data = os.urandom(3 << 20)
    r = subprocess_with_input(hutchd, ["exec", sbid, "--", "sha256sum"], data)
    assert r.returncode == 0, r
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def subprocess_with_input(hutchd, args, data):
    import subprocess
    from hutchlib import hutch_cli_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("DENO_")}
    env.update(HUTCH_ENDPOINT=hutchd.url, HUTCH_TOKEN=hutchd.token)
    return subprocess.run([hutch_cli_path(), *args], input=data, capture_output=True, env=env, timeout=120)


def test_exec_large_output(hutchd, sbid):
    r = hutchd.cli("exec", sbid, "--", "sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' y")
    assert r.returncode == 0
    assert len(r.stdout) == 5000000 and set(r.stdout) == {"y"}


def test_exec_exit_codes(hutchd, sbid):
    assert hutchd.cli("exec", sbid, "--", "/no/such/binary").returncode == 127
    assert hutchd.cli("exec", sbid, "--", "sh", "-c", "kill -9 $$").returncode == 128 + 9
    assert hutchd.cli("exec", "sbx_loc_" + "b" * 20, "--", "true").returncode == 125


def test_sh(hutchd, sbid):
    r = hutchd.cli("sh", sbid, "echo $((6*7)) | tr 4 X")
    assert (r.returncode, r.stdout) == (0, "X2\n"), r


def test_extend(hutchd, sbid):
    r = hutchd.cli("extend", sbid, "20m", check=True)
    when = datetime.datetime.fromisoformat(r.stdout.strip().replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert when > now + datetime.timedelta(minutes=5), r.stdout


def test_kill(hutchd):
    sid = hutchd.cli("create", "--timeout", "2m", check=True).stdout.strip()
    assert hutchd.cli("exec", sid, "--", "true").returncode == 0
    r = hutchd.cli("kill", sid)
    assert r.returncode == 0, r
    assert wait_until(lambda: hutchd.sandbox_status(sid) == "stopped", 10)
    assert hutchd.cli("exec", sid, "--", "true").returncode == 125
    assert hutchd.cli("kill", sid).returncode != 0


def test_tokens(hutchd):
    tok, tid = cli_token_create(hutchd, "cli-user")
    assert tok.startswith("ddo_")
    # a plain token can use the API but cannot manage tokens
    assert hutchd.cli("ls", token=tok).returncode == 0
    assert hutchd.cli("token", "create", "--name", "nope", token=tok).returncode != 0
    # over the unix socket, with no token at all
    sock_tok, _ = cli_token_create(hutchd, "via-socket", via_socket=True)
    assert hutchd.cli("ls", token=sock_tok).returncode == 0

    r = hutchd.cli("token", "list", "--json", check=True)
    assert not TOKEN_RE.search(r.stdout.replace(hutchd.token, "")), "list shows a secret"
    assert hutchd.token not in r.stdout and tok not in r.stdout
    tokens = json.loads(r.stdout)
    mine = [t for t in tokens if t.get("name") == "cli-user"]
    assert len(mine) == 1 and (tid is None or mine[0]["id"] == tid), (tokens, tid)
    human = hutchd.cli("token", "list", check=True).stdout
    assert "cli-user" in human and "via-socket" in human

    assert hutchd.cli("token", "revoke", mine[0]["id"]).returncode == 0
    assert hutchd.cli("ls", token=tok).returncode != 0
    assert hutchd.cli("token", "revoke", mine[0]["id"]).returncode != 0
    assert hutchd.cli("token", "revoke", "no-such-id").returncode != 0
    names = [t.get("name") for t in json.loads(hutchd.cli("token", "list", "--json", check=True).stdout)]
    assert "cli-user" not in names and "via-socket" in names
