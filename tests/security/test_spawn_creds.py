# What a spawned process starts with, read from its own /proc/self/status and
# /proc/self/limits: the capability sets, no_new_privs, the seccomp filter,
# ids, signal dispositions and rlimits that src/init/spawn.c promises
# (docs/security.md). The same values hold however hutch-init starts the
# child (fork, or clone with CLONE_VM|CLONE_VFORK and the bounding set
# dropped once in hutch-init).

# Docker's default set, which spawn.c keeps in the bounding set:
# CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7,
# SETPCAP 8, NET_BIND_SERVICE 10, SYS_CHROOT 18, AUDIT_WRITE 29, SETFCAP 31
KEPT = sum(1 << b for b in (0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31))


def status_of(sandbox, sudo):
    # cat itself installs no handler and ignores no signal: what it shows is what it got
    r = sandbox.run("sudo" if sudo else "cat", (["cat"] if sudo else []) + ["/proc/self/status", "/proc/self/limits"])
    assert r["code"] == 0, r
    text = r["stdout"].decode()
    fields = {}
    for ln in text.splitlines():
        if ":" in ln and not ln.startswith(("Limit", "Max ")):
            k, v = ln.split(":", 1)
            fields[k.strip()] = v.strip()
    limits = {ln[:26].strip(): ln[26:].split()[:2] for ln in text.splitlines() if ln.startswith("Max ")}
    return fields, limits


def test_spawned_app_process_has_no_capabilities_and_the_filter(sandbox):
    f, limits = status_of(sandbox, sudo=False)
    assert f["Uid"].split() == ["1000"] * 4 and f["Gid"].split() == ["1000"] * 4, f
    assert f["Groups"] == "", f
    for k in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(f[k], 16) == 0, (k, f[k])
    assert int(f["CapBnd"], 16) == KEPT, f["CapBnd"]
    # no_new_privs stays off (setuid sudo must work); one seccomp filter, hutch's
    assert f["NoNewPrivs"] == "0", f
    assert f["Seccomp"] == "2" and f["Seccomp_filters"] == "1", f
    # hutch-init ignores SIGPIPE and catches SIGCHLD; its children get the defaults, nothing blocked
    for k in ("SigBlk", "SigIgn", "SigCgt"):
        assert int(f[k], 16) == 0, (k, f[k])
    assert limits["Max core file size"] == ["0", "0"], limits
    nofile = limits["Max open files"]
    assert nofile[0] == nofile[1] and int(nofile[0]) >= 64, limits


def test_spawned_process_through_sudo_is_root_with_only_the_kept_capabilities(sandbox):
    f, _ = status_of(sandbox, sudo=True)
    assert f["Uid"].split() == ["0"] * 4, f
    # setuid root: the bounding set caps what root gets back
    assert int(f["CapBnd"], 16) == KEPT, f["CapBnd"]
    assert int(f["CapEff"], 16) == KEPT and int(f["CapPrm"], 16) == KEPT, f
    assert int(f["CapAmb"], 16) == 0 and int(f["CapInh"], 16) == 0, f
    assert f["NoNewPrivs"] == "0", f
    assert f["Seccomp"] == "2" and f["Seccomp_filters"] == "1", f


def test_spawned_process_cannot_regain_a_dropped_capability(sandbox):
    # positive control: a kept capability works as root (chown to another uid)
    r = sandbox.sh("sh -c 'touch /tmp/c && chown 1234 /tmp/c && stat -c %u /tmp/c'", sudo=True)
    assert r["stdout"].decode().split() == ["1234"], r
    # CAP_SYS_ADMIN is outside the bounding set: sethostname is refused with EPERM
    r = sandbox.sh("python3 -c 'import socket,errno\ntry:\n socket.sethostname(\"x\")\nexcept OSError as e:\n print(errno.errorcode[e.errno])'",
                   sudo=True)
    assert r["stdout"].decode().strip() == "EPERM", r
