#!/usr/bin/env python3
"""`hutch cp` of one file both ways, with the CPU it costs (issue 15): wall
MB/s, the client's CPU seconds (rusage of the hutch process), and the CPU
seconds of hutchd and its sandboxes' processes (hutch-init, the fs worker:
/proc/PID/stat of hutchd's process tree before and after), beside a local
`cp` of the same file in the same minute. CPU seconds hold on a loaded
machine where wall times do not.

usage: bench/cp_cpu.py [--mb 200] [--rounds 2] NAME=BINDIR [NAME=BINDIR ...]
  BINDIR holds hutchd, hutch and hutch-init (build/ or a meson build dir's
  src/ layout). The sets run alternately, each with its own hutchd (state dir
  and port of its own) in the current network namespace: run it inside a
  throwaway one (scripts/test.sh's way, or `ip netns exec`).
Prints one JSON line per run and a table at the end."""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")


def find(bindir, name, sub):
    for c in (os.path.join(bindir, name), os.path.join(bindir, "src", sub, name)):
        if os.access(c, os.X_OK):
            return c
    sys.exit(f"{name} not found in {bindir}")


def tree_cpu(root):
    """utime+stime (s) of root and its descendants now."""
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        f = st[st.rindex(")") + 2:].split()
        kids.setdefault(int(f[1]), []).append((int(p), int(f[11]) + int(f[12])))
    total, todo = 0, [root]
    with open(f"/proc/{root}/stat") as f:
        st = f.read()
    f = st[st.rindex(")") + 2:].split()
    total += int(f[11]) + int(f[12])
    while todo:
        for pid, t in kids.get(todo.pop(), []):
            total += t
            todo.append(pid)
    return total / TICK


def run_cli(cli, env, args):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"hutch {' '.join(args)}: {r.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), r.stdout


def one(name, bindir, src, size, port):
    hutchd, cli, init = find(bindir, "hutchd", "daemon"), find(bindir, "hutch", "cli"), find(bindir, "hutch-init", "init")
    tmp = tempfile.mkdtemp(prefix=f"cpcpu-{name}-")
    state = os.path.join(tmp, "state")
    os.makedirs(state)
    log = open(os.path.join(tmp, "hutchd.log"), "wb")
    d = subprocess.Popen([hutchd, "--state-dir", state, "--listen", f"127.0.0.1:{port}", "--socket",
                          os.path.join(tmp, "s.sock"), "--cgroup-name", f"cpcpu-{os.getpid()}-{name}",
                          "--disk", "2048", "--init", init],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        tok = os.path.join(state, "admin.token")
        for _ in range(300):
            if os.path.exists(tok):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DENO_", "HUTCH_"))}
        env.update(HUTCH_ENDPOINT=f"http://127.0.0.1:{port}", HUTCH_TOKEN=open(tok).read().strip())
        _, _, out = run_cli(cli, env, ["create", "--timeout", "10m"])
        sid = out.strip()
        res = {"set": name}
        # local cp (the peer), page cache warm as for the copies
        t0 = time.monotonic()
        subprocess.run(["cp", src, os.path.join(tmp, "local.bin")], check=True)
        res["local_cp_mbs"] = round(size / 1e6 / (time.monotonic() - t0), 1)
        os.unlink(os.path.join(tmp, "local.bin"))
        for what, args in (("up", ["cp", "-q", src, f"{sid}:/tmp/big.bin"]),
                           ("down", ["cp", "-q", f"{sid}:/tmp/big.bin", os.path.join(tmp, "down.bin")])):
            c0 = tree_cpu(d.pid)
            wall, ccpu, _ = run_cli(cli, env, args)
            res[f"{what}_mbs"] = round(size / 1e6 / wall, 1)
            res[f"{what}_client_cpu_s"] = round(ccpu, 3)
            res[f"{what}_server_cpu_s"] = round(tree_cpu(d.pid) - c0, 3)
        if os.path.getsize(os.path.join(tmp, "down.bin")) != size:
            raise RuntimeError("download: wrong size")
        run_cli(cli, env, ["kill", sid])
        return res
    finally:
        d.terminate()
        try:
            d.wait(30)
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("sets", nargs="+")
    a = ap.parse_args()
    sets = [s.split("=", 1) for s in a.sets]
    size = a.mb * 1_000_000
    srcdir = tempfile.mkdtemp(prefix="cpcpu-src-")
    src = os.path.join(srcdir, "big.bin")
    with open(src, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    rows = []
    try:
        port = 17500 + os.getpid() % 1000
        for r in range(a.rounds):
            for name, bindir in sets:
                res = one(name, bindir, src, size, port)
                port += 1
                res["round"] = r
                print(json.dumps(res), flush=True)
                rows.append(res)
    finally:
        shutil.rmtree(srcdir, ignore_errors=True)
    keys = ["local_cp_mbs", "up_mbs", "up_client_cpu_s", "up_server_cpu_s", "down_mbs", "down_client_cpu_s",
            "down_server_cpu_s"]
    print("| set | round | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for row in rows:
        print(f"| {row['set']} | {row['round']} | " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
