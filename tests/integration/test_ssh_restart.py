# SSH across a restart (docs/ssh.md): the host key is kept in the state dir;
# --ssh-port 0 turns SSH off. A module of its own: its private hutchd must not
# share the harness's network namespace with test_ssh.py's module daemon.
from hutchlib import free_port
from test_ssh import expose_ssh, ssh


def test_the_host_key_survives_a_restart_and_ssh_can_be_off(make_hutchd, tmp_path):
    port = free_port()
    h = make_hutchd(tag="sshkey", extra_args=["--ssh-port", str(port)])
    s = h.create_sandbox()
    first = expose_ssh(h, s)
    assert ssh(tmp_path, first, "exit 2").returncode == 2
    s.ws.close()
    h.restart()
    s = h.create_sandbox()
    again = expose_ssh(h, s)
    assert again["hostKey"] == first["hostKey"] and again["username"] != first["username"]
    assert ssh(tmp_path, again, "exit 3").returncode == 3  # the old known_hosts entry still matches
    s.ws.close()
    h.extra_args = ["--ssh-port", "0"]
    h.restart()
    s = h.create_sandbox()
    try:
        r = h.http("POST", f"/api/v3/sandbox/{s.id}/expose/ssh", body=b"{}")
        assert r.status == 503 and r.json()["code"] == "SSH_UNAVAILABLE", (r.status, r.body)
    finally:
        s.ws.close()
