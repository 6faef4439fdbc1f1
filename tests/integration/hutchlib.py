# Test support shared by tests/integration and tests/security: starts a real
# hutchd, talks raw HTTP and WebSocket (stdlib only), and checks for leaks.
import base64
import contextlib
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SANDBOX_UID_MIN = 1000000000
SANDBOX_ID_RE = re.compile(r"^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$")
CGROUP_ROOT = "/sys/fs/cgroup"


# ---------------------------------------------------------------- binaries

def _find_binary(name, subdir):
    """HUTCH_BIN_DIR wins; then build/<name> (what `make` produces), then the
    meson location build/src/<subdir>/<name>."""
    env_dir = os.environ.get("HUTCH_BIN_DIR")
    build = os.environ.get("HUTCH_BUILD", os.path.join(REPO, "build"))
    candidates = []
    if env_dir:
        candidates += [os.path.join(env_dir, name)]
    candidates += [os.path.join(build, name), os.path.join(build, "src", subdir, name)]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return candidates[0]


def hutchd_path():
    """HUTCH_DAEMON names the hutchd to test (scripts/test.sh points it at the
    ASan+UBSan build, so every test also hunts memory errors)."""
    return os.environ.get("HUTCH_DAEMON") or _find_binary("hutchd", "daemon")


def hutch_cli_path():
    return _find_binary("hutch", "cli")


def hutch_init_path():
    return _find_binary("hutch-init", "init")


# ---------------------------------------------------------------- host state

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_with_sandbox_uids():
    """{pid: uid} of every process whose real or effective uid is in the
    sandbox range (>= 1e9)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uids = [int(x) for x in line.split()[1:]]
                        if max(uids) >= SANDBOX_UID_MIN:
                            out[int(d)] = uids[0]
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return out


def become_subreaper():
    """Orphans of a hutchd that died (a --live-restore sandbox's PID 1) come
    to this process instead of the machine's PID 1, which may reap late or
    never; reap_orphans() reaps them once they end."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_orphans():
    """Reaps our zombie children with a sandbox uid (never a child we started:
    those run as root)."""
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if rest[0] != "Z" or int(rest[1]) != me:
                continue
            with open(f"/proc/{d}/status") as f:
                uids = [int(x) for x in next(ln for ln in f if ln.startswith("Uid:")).split()[1:]]
            if max(uids) >= SANDBOX_UID_MIN:
                os.waitpid(int(d), os.WNOHANG)
        except (OSError, IndexError, StopIteration, ValueError, ChildProcessError):
            pass


def cgroup_parents(name):
    """Every directory where hutchd may create per-sandbox cgroups for `name`,
    on v1 (one per controller) or v2 (unified)."""
    paths = []
    for ctrl in sorted(os.listdir(CGROUP_ROOT)):
        p = os.path.join(CGROUP_ROOT, ctrl, name)
        paths.append(p)
    paths.append(os.path.join(CGROUP_ROOT, name))
    # v1: the agents' cpu cgroup beside it (src/daemon/sandbox/cgroup.c); no sandbox cgroups below
    paths.append(os.path.join(CGROUP_ROOT, "cpu", name + "-agents"))
    # and hutchd's own (--daemon-cpu-shares); nothing below it either
    paths.append(os.path.join(CGROUP_ROOT, "cpu", name + "-daemon"))
    return paths


def cgroup_dirs_for(name):
    """Sub-directories (sandbox cgroups) left under the hutchd cgroup `name`."""
    found = []
    for parent in cgroup_parents(name):
        if os.path.isdir(parent):
            for root, dirs, _ in os.walk(parent):
                for d in dirs:
                    found.append(os.path.join(root, d))
    return found


def cgroup_dirs_for_sandbox(name, sandbox_id):
    return [p for p in cgroup_dirs_for(name) if sandbox_id in p]


def remove_empty_cgroup_parents(name):
    """The fixture created the cgroup name; remove what is empty (deepest first)."""
    for parent in cgroup_parents(name):
        if not os.path.isdir(parent):
            continue
        for root, dirs, _ in sorted(os.walk(parent), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                os.rmdir(root)


def loops_backed_by(path):
    """Loop devices whose backing file lies under path (sandbox disks)."""
    out = []
    with contextlib.suppress(OSError):
        for dev in os.listdir("/sys/block"):
            if not dev.startswith("loop"):
                continue
            with contextlib.suppress(OSError):
                with open(f"/sys/block/{dev}/loop/backing_file") as f:
                    back = f.read().strip()
                if back.startswith(path.rstrip("/") + "/"):
                    out.append(f"/dev/{dev} -> {back}")
    return out


def mounts_mentioning(path):
    hits = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if path in line:
                hits.append(line.strip())
    return hits


def nft_table_name(cgroup_name):
    """hutchd's own nftables table for --cgroup-name (src/daemon/net/net.c):
    `inet hutch` for the default instance, `inet hutch_<name>` otherwise,
    every character outside [A-Za-z0-9] written as '_'."""
    if cgroup_name == "hutch":
        return "hutch"
    return "hutch_" + re.sub(r"[^A-Za-z0-9]", "_", cgroup_name)[:250]


def in_netns(ns_fd, *argv):
    """Runs argv (read-only inspection: nft list, ip link show) in the network
    namespace held open by ns_fd; None there means this thread's own."""
    if ns_fd is None:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    return subprocess.run(["nsenter", f"--net=/proc/self/fd/{ns_fd}", "--", *argv], capture_output=True,
                          text=True, timeout=30, pass_fds=(ns_fd,))


def nft_table_left(ns_fd, table):
    """The text of `inet <table>` if it still exists in that netns, else ''."""
    r = in_netns(ns_fd, "nft", "list", "table", "inet", table)
    return r.stdout.strip() if r.returncode == 0 else ""


def sandbox_links(ns_fd):
    """Names of hxs* links (hutchd's host ends of sandbox veths) in that netns."""
    r = in_netns(ns_fd, "ip", "-o", "link", "show")
    assert r.returncode == 0, f"ip link show: {r.stderr}"
    names = []
    for line in r.stdout.splitlines():
        m = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if m and m.group(1).startswith("hxs"):
            names.append(m.group(1))
    return names


def wait_until(pred, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# ---------------------------------------------------------------- hutchd

class HutchdError(Exception):
    pass


class Hutchd:
    """One hutchd process with its own state dir, port, socket and cgroup name.
    stop() asserts that nothing leaked; restart() keeps the state dir."""
    _count = 0

    def __init__(self, tag="t", extra_args=None):
        base = os.environ.get("HUTCH_TEST_TMP")
        if base:
            os.makedirs(base, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=f"hutch-{tag}-", dir=base)
        self.state_dir = os.path.join(self.tmp, "state")
        os.makedirs(self.state_dir)
        self.socket_path = os.path.join(self.tmp, "hutchd.sock")
        # scripts/test.sh sets HUTCH_TEST_RUN so its trap can find leftovers
        run = os.environ.get("HUTCH_TEST_RUN", str(os.getpid()))
        Hutchd._count += 1
        self.cgroup_name = f"hutch-test-{run}-{Hutchd._count}{tag}"
        self.port = free_port()
        self.extra_args = list(extra_args or [])
        self.proc = None
        self.token = None
        self.log_path = os.path.join(self.tmp, "hutchd.log")
        self.generation = 0
        self.preexisting_uid_pids = set(pids_with_sandbox_uids())
        # hutchd's network namespace (this thread's, which it inherits), held
        # open so that the census can look inside it after hutchd exited.
        self.netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.preexisting_links = set(sandbox_links(self.netns_fd))

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def argv(self):
        argv = [hutchd_path(), "--state-dir", self.state_dir,
                "--listen", f"127.0.0.1:{self.port}",
                "--socket", self.socket_path,
                "--cgroup-name", self.cgroup_name,
                # Each layer is promised in full (the disk promise): 1 GiB
                # layers keep a test daemon's sandboxes within a small CI
                # disk. A test that needs another size passes --disk (the
                # last one wins).
                "--disk", "1024"]
        init = hutch_init_path()
        if os.path.exists(init):
            argv += ["--init", init]
        cache = os.environ.get("HUTCH_IMAGE_CACHE")
        if cache:
            argv += ["--image-cache", cache]
        if "--dns-upstream" not in self.extra_args:
            # Names not given with --resolve go to a closed loopback port, never
            # to the machine's resolver (tests that need DNS run their own server).
            argv += ["--dns-upstream", "127.0.0.1:9"]
        return argv + self.extra_args

    def start(self, timeout=30):
        if not os.path.exists(hutchd_path()):
            raise HutchdError(f"hutchd binary not found at {hutchd_path()} (run `make`)")
        self.generation += 1
        if "--live-restore" in self.extra_args:
            become_subreaper()
        log = open(self.log_path, "ab")
        log.write(f"--- start #{self.generation}: {' '.join(self.argv())}\n".encode())
        log.flush()
        # ASan keeps up to 256 MiB of freed blocks by default: tests that
        # bound hutchd's memory would measure that quarantine, not hutchd
        # (as the SDK step, 16 MiB; use-after-free is still caught within it).
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16"
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, close_fds=True, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        start_mark = self._log_size_before_start()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HutchdError(f"hutchd exited with {self.proc.returncode} during start-up:\n"
                                  + self.log_tail())
            if "hutchd: listening on http://" in self._log_text()[start_mark:] or self._port_answers():
                break
            time.sleep(0.05)
        else:
            self.kill_hard()
            raise HutchdError("hutchd did not become ready in time:\n" + self.log_tail())
        tok = os.path.join(self.state_dir, "admin.token")
        if not wait_until(lambda: os.path.exists(tok), 5):
            raise HutchdError(f"{tok} was not written:\n" + self.log_tail())
        with open(tok) as f:
            self.token = f.read().strip()
        return self

    def _log_size_before_start(self):
        # The log is shared across restarts: only look at text after our start marker.
        text = self._log_text()
        return text.rfind(f"--- start #{self.generation}:")

    def _log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self._log_text().splitlines()[-n:])

    def _port_answers(self):
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        return False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=20):
        """SIGTERM by pid and wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                where = self._stacks()
                self.kill_hard()
                raise HutchdError(f"hutchd did not exit within {timeout}s of SIGTERM:\n"
                                  + self.log_tail() + "\n--- where its threads were:\n" + where)
        return self.proc.returncode

    def _stacks(self):
        """The stack of every thread of a hutchd that hangs (gdb, when the
        machine has it), so that a CI log says where it was stuck."""
        if not shutil.which("gdb"):
            return "(no gdb)"
        try:
            out = subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-nx", "-ex", "thread apply all bt 30"],
                                 capture_output=True, timeout=60, text=True)
            return "\n".join(x for x in out.stdout.splitlines() if x.startswith(("#", "Thread")))
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"(gdb: {e})"

    def kill_hard(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self):
        self.terminate()
        return self.start()

    def leaks(self, settle=5.0):
        """What this hutchd left behind (empty list = nothing)."""
        problems = []

        def another_daemons(pid):
            """pid or one of its ancestors is another live hutchd, or sits in
            another daemon's sandbox cgroup."""
            for _ in range(16):
                if pid in (0, 1, os.getpid(), self.pid):
                    return False
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if b"hutchd" in f.read().split(b"\0")[0]:
                            return True
                    with open(f"/proc/{pid}/cgroup") as f:
                        cg = f.read()
                    if "sbx_" in cg:
                        return f"/{self.cgroup_name}/" not in cg
                    with open(f"/proc/{pid}/stat") as f:
                        pid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    return False
            return False

        def our_uid_pids():
            reap_orphans()
            # Other hutchd instances on this machine use the same uid ranges:
            # a process is ours when it sits in our cgroups, or in no sandbox
            # cgroup at all (escaped), and was not there before we started.
            now = pids_with_sandbox_uids()
            out = {}
            for p, u in now.items():
                if p in self.preexisting_uid_pids:
                    continue
                try:
                    with open(f"/proc/{p}/cgroup") as f:
                        cg = f.read()
                except OSError:
                    continue
                if f"/{self.cgroup_name}/" in cg or "sbx_" not in cg:
                    # An exited process (zombie) shows no sandbox cgroup any
                    # more: it is ours only if we or our hutchd must reap it
                    # (another daemon's, e.g. a concurrent scale run, is not).
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        with open(f"/proc/{p}/stat") as f:
                            st = f.read().rsplit(")", 1)[1].split()
                        if st[0] == "Z" and int(st[1]) not in (os.getpid(), self.pid):
                            continue
                        # Not in a sandbox cgroup yet, below another live
                        # hutchd: that daemon's create in progress (ours were
                        # re-parented when our hutchd exited).
                        if "sbx_" not in cg and another_daemons(int(st[1])):
                            continue
                    out[p] = u
            return out

        left = wait_until(lambda: not cgroup_dirs_for(self.cgroup_name), settle)
        if not left:
            problems.append(f"cgroup dirs left: {cgroup_dirs_for(self.cgroup_name)}")
        # A leak stays; another daemon's process in transit does not: a pid
        # counts only when two looks 1 s apart both find it.
        seen = {}

        def lasting_uid_pids():
            first = our_uid_pids()
            if not first:
                return {}
            time.sleep(1)
            return {p: u for p, u in our_uid_pids().items() if p in first}

        def none_lasting():
            seen.clear()
            seen.update(lasting_uid_pids())
            return not seen

        if not wait_until(none_lasting, settle):
            procs = []
            for p, u in seen.items():
                with contextlib.suppress(OSError):
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ")[:80]
                    procs.append(f"pid {p} uid {u}: {cmd!r}")
            problems.append("sandbox-uid processes left: " + "; ".join(procs))
        # The nftables table is deleted at exit; a stale one still carries
        # sandbox rules and set elements (read-only look, hutchd's netns).
        table = nft_table_name(self.cgroup_name)
        left_table = nft_table_left(self.netns_fd, table)
        if left_table:
            problems.append(f"nftables table inet {table} left:\n" + left_table[:3000])
        new_links = lambda: sorted(set(sandbox_links(self.netns_fd)) - self.preexisting_links)  # noqa: E731
        # A daemon whose networking never came up (a second hutchd in a netns
        # whose proxy ports another one holds) made no veths: the hxs* links
        # that come and go then are the other daemon's. (The line below is
        # printed once the table and the proxy are up.)
        networked = "hutchd: sandbox network: nftables table" in self._log_text()
        if networked and not wait_until(lambda: not new_links(), settle):
            problems.append("sandbox veths left in hutchd's netns: " + ", ".join(new_links()))
        m = mounts_mentioning(self.state_dir)
        if m:
            problems.append("mounts left: " + " | ".join(m))
        if not wait_until(lambda: not loops_backed_by(self.state_dir), settle):
            problems.append("loop devices left: " + " | ".join(loops_backed_by(self.state_dir)))
        with contextlib.suppress(OSError):
            with open(self.log_path, "rb") as f:
                log = f.read().decode(errors="replace")
            for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "LeakSanitizer has encountered a fatal error",
                         "runtime error:", "Sanitizer: CHECK failed"):
                i = log.find(mark)
                if i >= 0:
                    problems.append("sanitizer report in hutchd's log:\n" + log[i:i + 3000])
                    break
        return problems

    def stop_sandboxes(self, timeout=20):
        """Kills every running sandbox through the API and waits until each is
        listed as stopped (a --live-restore hutchd leaves them running at
        SIGTERM, by design)."""
        ids = [sb["id"] for sb in self.list_sandboxes() if sb.get("status") == "running"]
        for i in ids:
            self.http("DELETE", f"/api/v3/sandbox/{i}")
        wait_until(lambda: not [sb for sb in self.list_sandboxes() if sb.get("status") == "running"], timeout)

    def stop(self, check_leaks=True):
        """SIGTERM, wait, then assert nothing leaked; clean the temp dir."""
        if "--live-restore" in self.extra_args and self.alive():
            with contextlib.suppress(Exception):
                self.stop_sandboxes()
        rc = self.terminate()
        try:
            problems = self.leaks() if check_leaks else []
        finally:
            if self.netns_fd is not None:
                os.close(self.netns_fd)
                self.netns_fd = None
        remove_empty_cgroup_parents(self.cgroup_name)
        if not problems and not mounts_mentioning(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            raise AssertionError(f"hutchd (exit {rc}) leaked:\n  " + "\n  ".join(problems)
                                 + f"\n(state kept at {self.tmp}; log tail:)\n" + self.log_tail(20))
        return rc

    # --- convenience
    def http(self, method, path, body=None, headers=None, token=..., timeout=30):
        return http_request(self.port, method, path, body=body, headers=headers,
                            token=self.token if token is ... else token, timeout=timeout)

    def ws(self, path, headers=None, token=..., timeout=30):
        return WebSocket.connect(self.port, path, headers=headers,
                                 token=self.token if token is ... else token, timeout=timeout)

    def create_sandbox(self, config=None, token=..., timeout=60):
        cfg = {"memory_mb": 1280}
        cfg.update(config or {})
        hdr = {"x-deno-sandbox-config": base64.b64encode(json.dumps(cfg).encode()).decode()}
        ws = self.ws("/api/v3/sandboxes/create", headers=hdr, token=token, timeout=timeout)
        return SandboxConn(ws)

    def connect_sandbox(self, sandbox_id, timeout=30):
        ws = self.ws(f"/api/v3/sandbox/{sandbox_id}/connect", timeout=timeout)
        return SandboxConn(ws, sandbox_id)

    def list_sandboxes(self, labels=None):
        q = ""
        if labels:
            from urllib.parse import urlencode
            q = "?" + urlencode({f"labels[{k}]": v for k, v in labels.items()})
        r = self.http("GET", "/api/v2/sandboxes" + q)
        assert r.status == 200, (r.status, r.body)
        return r.json()

    def sandbox_status(self, sandbox_id):
        for sb in self.list_sandboxes():
            if sb.get("id") == sandbox_id:
                return sb.get("status")
        return None

    def cli_create(self, *args):
        """`hutch create --timeout 10m ARGS`: the new sandbox's id."""
        r = self.cli("create", "--timeout", "10m", *args, check=True)
        sid = r.stdout.strip()
        assert SANDBOX_ID_RE.match(sid), r.stdout
        return sid

    def cli(self, *args, token=..., timeout=60, check=False, env=None, input=None):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(("DENO_", "HUTCH_TOKEN", "HUTCH_SOCKET"))}
        e["HUTCH_ENDPOINT"] = self.url
        tok = self.token if token is ... else token
        if tok is None:
            e.pop("HUTCH_TOKEN", None)
        else:
            e["HUTCH_TOKEN"] = tok
        e.update(env or {})
        r = subprocess.run([hutch_cli_path(), *args], env=e, capture_output=True, text=True,
                           timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"hutch {' '.join(args)} exited {r.returncode}:\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r


# ---------------------------------------------------------------- HTTP

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


def http_request(port, method, path, body=None, headers=None, token=None, timeout=30):
    h = {}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


# ---------------------------------------------------------------- WebSocket

class HandshakeError(Exception):
    def __init__(self, status, headers, body):
        super().__init__(f"WebSocket handshake refused: {status} {body[:300]!r}")
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class WsClosed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"WebSocket closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class WebSocket:
    """A minimal RFC 6455 client: masked frames out, fragmented messages in,
    answers pings, reports the close code."""

    def __init__(self, sock, headers, leftover=b""):
        self.sock = sock
        self.headers = headers
        self.buf = bytearray(leftover)
        self.close_code = None
        self.close_reason = None
        self.lock = threading.Lock()

    @classmethod
    def connect(cls, port, path, headers=None, token=None, timeout=30):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > 1 << 20:
                raise IOError("handshake response too large")
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *hlines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        hdrs = {}
        for ln in hlines:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status != 101:
            body = rest
            n = int(hdrs.get("content-length", "-1"))
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                while (n < 0 or len(body) < n):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            sock.close()
            raise HandshakeError(status, hdrs, body)
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if hdrs.get("sec-websocket-accept") != accept:
            sock.close()
            raise IOError(f"bad Sec-WebSocket-Accept: {hdrs.get('sec-websocket-accept')!r}")
        return cls(sock, hdrs, rest)

    # --- sending
    @staticmethod
    def frame(opcode, payload, fin=True, declared_len=None):
        n = len(payload) if declared_len is None else declared_len
        b0 = (0x80 if fin else 0) | opcode
        if n < 126:
            hdr = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
        mask = os.urandom(4)
        return hdr + mask, mask

    def send_frame(self, opcode, payload, fin=True):
        hdr, mask = self.frame(opcode, payload, fin)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload)) if len(payload) < 4096 \
            else _xor_mask(payload, mask)
        with self.lock:
            self.sock.sendall(hdr + masked)

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def close(self, code=1000):
        with contextlib.suppress(OSError):
            self.send_frame(OP_CLOSE, struct.pack("!H", code))
        # A protocol violation while draining (an AssertionError from
        # _read_frame) is a finding, not noise: only the socket's end is.
        with contextlib.suppress(OSError, WsClosed):
            self.sock.settimeout(2)
            while self.close_code is None:
                self.recv()
        with contextlib.suppress(Exception):
            self.sock.close()

    # --- receiving
    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise WsClosed(self.close_code or 1006, "connection closed without close frame")
            self.buf += chunk

    def _read_frame(self):
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        fin, op, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        assert not masked, "server frames must not be masked"
        assert n <= 256 << 20, f"frame of {n} bytes from server"
        self._need(off + n)
        payload = bytes(self.buf[off:off + n])
        del self.buf[:off + n]
        return bool(fin), op, payload

    def recv(self, timeout=None):
        """Next whole message as (opcode, bytes). Raises WsClosed on close."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        parts, first_op = [], None
        while True:
            fin, op, payload = self._read_frame()
            if op == OP_PING:
                with contextlib.suppress(OSError):
                    self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode(errors="replace")
                with contextlib.suppress(OSError):
                    self.send_frame(OP_CLOSE, payload[:2])
                raise WsClosed(self.close_code, self.close_reason)
            if op != OP_CONT:
                first_op = op
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def recv_json(self, timeout=None):
        while True:
            op, data = self.recv(timeout)
            if data == b"pong":
                continue
            return json.loads(data)


def _xor_mask(payload, mask):
    # Fast enough for tens of MiB: XOR as one big integer per 1 MiB block.
    out = bytearray()
    m = (mask * (1 << 18))
    for i in range(0, len(payload), 1 << 20):
        block = payload[i:i + (1 << 20)]
        mm = m[:len(block)]
        x = int.from_bytes(block, "little") ^ int.from_bytes(mm, "little")
        out += x.to_bytes(len(block), "little")
    return bytes(out)


# ---------------------------------------------------------------- sandbox RPC

class RpcFailure(Exception):
    def __init__(self, error):
        super().__init__(f"JSON-RPC error: {error}")
        self.error = error


class SandboxConn:
    """A WebSocket to one sandbox with the SDK's JSON-RPC conventions:
    results are {"ok": v} or {"error": e}; byte streams arrive as
    $sandbox.stream.* notifications (base64 data)."""

    def __init__(self, ws, sandbox_id=None):
        self.ws = ws
        self.id = sandbox_id or ws.headers.get("x-deno-sandbox-id")
        self.next_id = 1
        self.responses = {}
        self.streams = {}        # streamId -> bytearray
        self.ended = set()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.ws.close()

    def _pump_one(self, timeout):
        msg = self.ws.recv_json(timeout)
        if "id" in msg and ("result" in msg or "error" in msg):
            self.responses[msg["id"]] = msg
            return
        method = msg.get("method", "")
        p = msg.get("params") or {}
        if method == "$sandbox.stream.start":
            self.streams.setdefault(p["streamId"], bytearray())
        elif method == "$sandbox.stream.enqueue":
            self.streams.setdefault(p["streamId"], bytearray()).extend(base64.b64decode(p["data"]))
        elif method in ("$sandbox.stream.end", "$sandbox.stream.error"):
            self.streams.setdefault(p["streamId"], bytearray())
            self.ended.add(p["streamId"])

    def request(self, method, params=None, timeout=60):
        """Raw JSON-RPC response object for one call."""
        rid = self.next_id
        self.next_id += 1
        self.ws.send_json({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        return self.wait_response(rid, timeout)

    def wait_response(self, rid, timeout=60):
        deadline = time.monotonic() + timeout
        while rid not in self.responses:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no response to request {rid}")
            self._pump_one(left)
        return self.responses.pop(rid)

    def call(self, method, params=None, timeout=60):
        r = self.request(method, params, timeout)
        if "error" in r:
            raise RpcFailure(r["error"])
        res = r["result"]
        if isinstance(res, dict) and "error" in res:
            raise RpcFailure(res["error"])
        return res["ok"] if isinstance(res, dict) and "ok" in res else res

    def run(self, command, args=(), env=None, cwd=None, timeout=60, stdin=None):
        """Spawns and waits; returns dict(code, signal, oom, success, stdout, stderr)."""
        params = {"command": command, "args": list(args), "stdout": "piped", "stderr": "piped"}
        if env:
            params["env"] = env
        if cwd:
            params["cwd"] = cwd
        sid = None
        if stdin is not None:
            sid = 1000 + self.next_id
            self.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.start",
                               "params": {"streamId": sid}})
            params["stdinStreamId"] = sid
        sp = self.call("spawn", params, timeout)
        if stdin is not None:
            if stdin:
                self.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.enqueue",
                                   "params": {"streamId": sid,
                                              "data": base64.b64encode(stdin).decode()}})
            self.ws.send_json({"jsonrpc": "2.0", "method": "$sandbox.stream.end",
                               "params": {"streamId": sid}})
        st = self.call("processWait", {"pid": sp["pid"]}, timeout)
        outs = {}
        deadline = time.monotonic() + 10
        for name in ("stdout", "stderr"):
            s = sp.get(f"{name}StreamId")
            if s is None:
                outs[name] = b""
                continue
            while s not in self.ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{name} stream {s} never ended")
                self._pump_one(left)
            outs[name] = bytes(self.streams.pop(s, b""))
            self.ended.discard(s)
        return {**st, "pid": sp["pid"], **outs}

    def sh(self, script, sudo=False, timeout=60):
        """Like the SDK's sh: bash -c, optionally through sudo."""
        return self.run("bash", ["-c", ("sudo " if sudo else "") + script], timeout=timeout)


def b64cfg(obj):
    return base64.b64encode(json.dumps(obj).encode()).decode()


# ---------------------------------------------------------------- CLI helpers

TOKEN_RE = re.compile(r"\bddo_[A-Za-z0-9_\-]{8,}")


def cli_token_create(d, name, via_socket=False):
    """`hutch token create --name NAME`: (token, id). The token is on stdout,
    the id on stderr. via_socket: no token, hutchd's unix socket instead."""
    if via_socket:
        r = d.cli("token", "create", "--name", name, token=None,
                  env={"HUTCH_SOCKET": d.socket_path}, check=True)
    else:
        r = d.cli("token", "create", "--name", name, check=True)
    m = TOKEN_RE.search(r.stdout)
    assert m, f"no ddo_ token in `hutch token create` stdout: {r.stdout!r}"
    return m.group(0), r.stderr.strip().split()[-1] if r.stderr.strip() else None


def sandbox_cgroup_pids(cgroup_name, sandbox_id):
    """Pids in the sandbox's cgroup(s), read from cgroup.procs."""
    pids = set()
    for p in cgroup_dirs_for_sandbox(cgroup_name, sandbox_id):
        with contextlib.suppress(OSError):
            with open(os.path.join(p, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
    return pids


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False  # ProcessLookupError: reaped between the open and the read
