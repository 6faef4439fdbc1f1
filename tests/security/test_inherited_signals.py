# A signal hutchd's own parent left ignored must not reach the sandboxes: an
# ignored signal survives exec, and glibc's sigaction cannot reset the two
# it keeps for itself. (Its own module: it needs a hutchd of its own, and the
# one of test_spawn_creds.py would hold the proxy's ports.)


def _raw_sigaction(sig, handler):
    """rt_sigaction through the system call (glibc's sigaction, and so
    Python's signal module, refuses glibc's own signals 32 and 33)."""
    import ctypes
    import platform

    class KSigaction(ctypes.Structure):
        _fields_ = [("handler", ctypes.c_ulong), ("flags", ctypes.c_ulong), ("restorer", ctypes.c_ulong),
                    ("mask", ctypes.c_uint64)]
    nr = {"x86_64": 13, "aarch64": 134}[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    new, old = KSigaction(handler, 0, 0, 0), KSigaction()
    assert libc.syscall(nr, sig, ctypes.byref(new), ctypes.byref(old), 8) == 0, ctypes.get_errno()
    return old.handler


def sig_ign_mask(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln.split()[1] for ln in f if ln.startswith("SigIgn:")), 16)


def test_a_signal_hutchd_inherited_ignored_is_not_ignored_in_sandboxes(make_hutchd):
    # A CI runner started hutchd with signal 32 (glibc's SIGCANCEL) ignored; an
    # ignored signal survives exec, and glibc's sigaction cannot reset it, so
    # every sandboxed process had it ignored too.
    SIG_IGN = 1
    prev = _raw_sigaction(32, SIG_IGN)
    try:
        d = make_hutchd()
    finally:
        _raw_sigaction(32, prev)
    assert sig_ign_mask(d.pid) & (1 << 31), "the probe: hutchd itself has signal 32 ignored"
    sb = d.create_sandbox()
    try:
        r = sb.run("cat", ["/proc/self/status"])
        assert r["code"] == 0, r
        ign = next(ln.split()[1] for ln in r["stdout"].decode().splitlines() if ln.startswith("SigIgn:"))
        assert int(ign, 16) == 0, ign
    finally:
        sb.ws.close()
