#!/usr/bin/env python3
# Prints bench/run.sh's table from its JSON results: hutch beside bwrap and a
# bare fork+exec measured in the same run, with ratios.
import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def main(d):
    hutch = load(f"{d}/hutch.json") or {}
    bwrap = load(f"{d}/bwrap.json")
    bare = load(f"{d}/bare.json")
    rows = []

    def ms(x, key):
        return f"{x[key]:.2f}" if x and key in x else "n/a"

    def us_as_ms(x, key):
        return f"{x[key] / 1000:.3f}" if x and key in x else "n/a"

    def ratio(a, b):
        return f"{a / b:.1f}x" if a and b else "n/a"

    c = hutch.get("create_first_cmd")
    rows.append(("create -> sh`true` done (SDK, paced)", ms(c, "p50_ms"), ms(c, "p99_ms"),
                 c and c.get("n"), "vs bwrap " + ratio(c and c["p50_ms"], bwrap and bwrap["p50_us"] / 1000)
                 + "; Deno Sandbox advertises 93 ms"))
    c = hutch.get("create_first_cmd_burst")
    rows.append(("create -> sh`true` done (SDK, burst)", ms(c, "p50_ms"), ms(c, "p99_ms"),
                 c and c.get("n"), "vs bwrap " + ratio(c and c["p50_ms"], bwrap and bwrap["p50_us"] / 1000)
                 + "; warm pool drained"))
    cb = load(f"{d}/create.json")
    if cb:
        cp = cb.get("creates_parallel")
        rows.append((f"create, {cp and cp.get('par')} in flight (SDK, each)", ms(cp, "p50_ms"), ms(cp, "p99_ms"),
                     cp and cp.get("n"), f"{cp and cp.get('creates_per_s')} creates/s (target 200/s, p50 50 ms); "
                     f"{cp and cp.get('cpu_ms_per_create')} ms CPU of hutchd's tree per create"))
        c = cb.get("create_first_cmd_burst")
        rows.append(("create -> sh`true` done (burst, create bench)", ms(c, "p50_ms"), ms(c, "p99_ms"),
                     c and c.get("n"), f"after the run above; target 12 ms; {c and c.get('cpu_ms_per_create')} ms CPU per create"))
    r = hutch.get("sh_true_roundtrip")
    rows.append(("sh`true` in live sandbox", ms(r, "p50_ms"), ms(r, "p99_ms"), r and r.get("n"),
                 "vs fork+exec " + ratio(r and r["p50_ms"], bare and bare["p50_us"] / 1000)))
    s = hutch.get("spawn_true_roundtrip")
    rows.append(("spawn /bin/true in live sandbox", ms(s, "p50_ms"), ms(s, "p99_ms"), s and s.get("n"),
                 "vs fork+exec " + ratio(s and s["p50_ms"], bare and bare["p50_us"] / 1000)))
    de = hutch.get("deno_eval_roundtrip")
    rows.append(('deno.eval("1+1") (new REPL each)', ms(de, "p50_ms"), ms(de, "p99_ms"), de and de.get("n"),
                 "deno start + channel + eval + close"))
    dr = hutch.get("deno_repl_eval_roundtrip")
    rows.append(('repl.eval("1+1") in a live REPL', ms(dr, "p50_ms"), ms(dr, "p99_ms"), dr and dr.get("n"),
                 "vs spawn /bin/true " + ratio(dr and dr["p50_ms"], s and s["p50_ms"])))
    k = hutch.get("kill")
    rows.append(("kill (DELETE until closed)", ms(k, "p50_ms"), ms(k, "p99_ms"), k and k.get("n"), ""))
    rows.append(("bwrap --unshare-all /bin/true", us_as_ms(bwrap, "p50_us"), us_as_ms(bwrap, "p99_us"),
                 bwrap and bwrap.get("n"), "peer"))
    rows.append(("bare fork+exec /bin/true", us_as_ms(bare, "p50_us"), us_as_ms(bare, "p99_us"),
                 bare and bare.get("n"), "peer"))
    fair = (load(f"{d}/fair.json") or {}).get("fair")
    if fair:
        for kind, name in (("echo", "sh`echo` in a quiet sandbox"), ("spawn_true", "spawn /bin/true in a quiet sandbox")):
            off, on = fair["hog_off"][kind], fair["hog_on"][kind]
            key = "echo" if kind == "echo" else "spawn"
            rows.append((f"{name}, CPU hog stopped", ms(off, "p50_ms"), ms(off, "p99_ms"), off["n"],
                         "peer for the next line: the same blocks alternated"))
            rows.append((f"{name}, CPU hog running", ms(on, "p50_ms"), ms(on, "p99_ms"), on["n"],
                         f"{fair['loops']} busy loops in another sandbox; running/stopped p50 "
                         f"{fair['ratio'][key + '_p50']}x, p99 {fair['ratio'][key + '_p99']}x (target <= 2x)"))
        w_on, w_off = fair["hog_on"]["wait_ms_per_trip"], fair["hog_off"]["wait_ms_per_trip"]
        rows.append(("CPU wait per round trip, hog running (ms)", "", "", "-",
                     "; ".join(f"{k} {w_on[k]:.3f} (stopped {w_off[k]:.3f})" for k in w_on) +
                     " (/proc/PID/schedstat run_delay)"))
    vol = load(f"{d}/volumes.json")
    if vol:
        bi, bs = vol.get("boot_image"), vol.get("boot_snapshot")
        rows.append(("create -> sh`true`, builtin image (cold)", ms(bi, "p50_ms"), ms(bi, "p99_ms"), bi and bi.get("n"),
                     "peer for the next line: allowNet [] (no warm pool for either)"))
        rows.append(("create -> sh`true`, root: snapshot (cold)", ms(bs, "p50_ms"), ms(bs, "p99_ms"), bs and bs.get("n"),
                     "vs builtin image " + ratio(bs and bs["p50_ms"], bi and bi["p50_ms"]) + " (target <= 1.2x)"))
        sn = vol.get("snapshot_1gb")
        rows.append(("snapshot of a volume with 1 GB written", ms(sn, "p50_ms"), ms(sn, "p99_ms"), sn and sn.get("n"),
                     "reflink: metadata only (target well under 1 s)"))
    apps = load(f"{d}/apps.json")
    if apps:
        dp, wr, cr = apps.get("deploy_to_first_request"), apps.get("warm_request"), apps.get("cold_request")
        rows.append(("sandbox.deploy() -> first served request", ms(dp, "p50_ms"), ms(dp, "p99_ms"), dp and dp.get("n"),
                     "small app, no install/build: copy, image, snapshot, boot, deno, route"))
        rows.append(("request to a served app (warm)", ms(wr, "p50_ms"), ms(wr, "p99_ms"), wr and wr.get("n"),
                     "peer for the next line: new TLS connection through the ingress"))
        rows.append(("request to an app scaled to zero (cold)", ms(cr, "p50_ms"), ms(cr, "p99_ms"), cr and cr.get("n"),
                     "wakes a sandbox from the snapshot; vs warm " + ratio(cr and cr["p50_ms"], wr and wr["p50_ms"])))
        sd, sw, sc = apps.get("static_deploy_to_first_request"), apps.get("static_warm_request"), apps.get("static_cold_request")
        if sd:
            rows.append(("apps.deploy() static site -> first served request", ms(sd, "p50_ms"), ms(sd, "p99_ms"),
                         sd.get("n"), "assets, no build; hutch's static file server; vs dynamic " +
                         ratio(sd["p50_ms"], dp and dp["p50_ms"])))
            rows.append(("request to a static site (warm)", ms(sw, "p50_ms"), ms(sw, "p99_ms"), sw and sw.get("n"),
                         "vs a dynamic app " + ratio(sw and sw["p50_ms"], wr and wr["p50_ms"])))
            rows.append(("request to a static site scaled to zero (cold)", ms(sc, "p50_ms"), ms(sc, "p99_ms"),
                         sc and sc.get("n"), "vs warm " + ratio(sc and sc["p50_ms"], sw and sw["p50_ms"])))
    vsc, bind = load(f"{d}/vscode.json"), load(f"{d}/bind.json")
    if bind:
        rows.append(("vscode layer bind (per create, in hutch-init)", us_as_ms(bind, "p50_us"), us_as_ms(bind, "p99_us"),
                     bind.get("n"), "open_tree + mount_setattr + move_mount: all other sandboxes pay"))
    if vsc:
        a, w, l = vsc.get("expose_answer"), vsc.get("workbench_shell"), vsc.get("workbench_loaded")
        rows.append(("exposeVscode() -> answered (code-server listens)", ms(a, "p50_ms"), ms(a, "p99_ms"), a and a.get("n"),
                     "fresh sandbox each run"))
        j = vsc.get("workbench_js")
        if j:
            rows.append(("GET workbench.js through the URL (curl)", ms(j, "p50_ms"), "", j.get("n"),
                         f"{j['bytes']} bytes gzip (11 MB plain); inside the sandbox, no ingress: "
                         f"{j.get('inside_p50_ms', 0):.0f} ms"))
        rows.append(("exposeVscode() -> workbench drawn (Chromium)", ms(w, "p50_ms"), ms(w, "p99_ms"), w and w.get("n"),
                     ".monaco-workbench in the page"))
        rows.append(("exposeVscode() -> workbench loaded (Chromium)", ms(l, "p50_ms"), ms(l, "p99_ms"), l and l.get("n"),
                     "explorer shows the folder's file"))
    net = load(f"{d}/net.json")
    if net:
        for way, what in (("get", "upstream -> sandbox"), ("put", "sandbox -> upstream"),
                          ("hget", "HTTP download")):
            if f"proxy_{way}_mbps" not in net:
                continue
            runs = net.get(f"{way}_runs") or [[0, 0]] * 3
            cpu = net.get(f"{way}_proxy_cpu_s_per_gb")
            dc, px = net.get(f"{way}_cpu_s_per_gb_direct"), net.get(f"{way}_cpu_s_per_gb_proxy")
            sides = ""
            if dc and px and net.get(f"{way}_cpu_ratio"):
                sides = (f"; CPU s/GB direct {dc['client']:.2f}+{dc['upstream']:.2f}, proxied"
                         f" {px['client']:.2f}+{px['upstream']:.2f}+proxy {px['proxy']:.2f}"
                         f" (client+upstream; proxied/direct {net[f'{way}_cpu_ratio']:.2f}x)")
            rows.append((f"proxy throughput {what} (MB/s)", f"{net[f'proxy_{way}_mbps']:.0f}", "", len(runs),
                         f"direct {net[f'direct_{way}_mbps']:.0f} MB/s; proxy/direct {net[f'{way}_ratio'] * 100:.0f}%"
                         " (median of interleaved pairs; target 90%)"
                         + (sides or (f"; hutch-proxy CPU {cpu:.2f} s/GB" if cpu is not None else ""))))
        rows.append(("first response byte via proxy (added)", f"{net['added_ping_p50_ms']:.3f}", "", 200,
                     f"direct p50 {net['direct_ping_p50_ms']:.3f} ms, proxy p50 {net['proxy_ping_p50_ms']:.3f}"
                     f" p99 {net['proxy_ping_p99_ms']:.3f} ms (target +0.3)"))
        rows.append(("concurrent connections held (10 sandboxes)", f"{net['concurrent_s'] * 1000:.0f}", "",
                     net["concurrent_held"], "of 1000 held without errors"))
    ig = load(f"{d}/ingress.json")
    if ig:
        h, t, i = ig["direct_http"], ig["direct_https"], ig["ingress"]
        n = ig["rounds"]
        rows.append((f"ingress req/s ({ig['conns']} conns, keep-alive)", f"{i['rps']:.0f}", "", n,
                     f"direct HTTP {h['rps']:.0f} = {i['rps'] / h['rps'] * 100:.0f}% (target 80%); "
                     f"direct HTTPS {t['rps']:.0f} = {i['rps'] / t['rps'] * 100:.0f}% (like for like)"))
        rows.append((f"ingress added p50 ({ig['conns']} conns)", f"{i['p50'] - h['p50']:.3f}", "", n,
                     f"ingress p50 {i['p50']:.3f} ms - direct HTTP {h['p50']:.3f} (target +0.5); "
                     f"vs direct HTTPS {i['p50'] - t['p50']:+.3f}"))
        rows.append(("ingress added p50 (1 conn, no queueing)", f"{i['p50_1'] - h['p50_1']:.3f}", "", n,
                     f"ingress p50 {i['p50_1']:.3f} ms - direct HTTP {h['p50_1']:.3f}; "
                     f"vs direct HTTPS {i['p50_1'] - t['p50_1']:+.3f}"))
        rows.append(("hutch-ingress CPU per request (us)", f"{ig['ingress_cpu_us_per_req']:.1f}", "", "-",
                     "user+system, at 16 conns"))
        r = ig.get("relay")
        if r:
            rows.append(("plain TCP relay in the sandbox req/s", f"{r['rps']:.0f}", "", n,
                         f"{r['rps'] / h['rps'] * 100:.0f}% of direct HTTP: a second hop and nothing else, the "
                         f"ceiling of any front door; the ingress made {i['rps'] / r['rps'] * 100:.0f}% of it"))

        def cpu(w):
            return sum(sum(v) for v in ig[w].get("cpu_us", {}).values())
        if "cpu_us" in i:
            ways = [w for w in ("direct_http", "direct_https", "relay", "ingress", "ingress_base") if w in ig]
            rows.append(("CPU per request, all processes (us)", f"{cpu('ingress'):.1f}", "", "-",
                         "; ".join(f"{w} {cpu(w):.1f}" for w in ways) + " (wrk + server + front door)"))
    w = max(len(x[0]) for x in rows)
    print(f"{'measurement':<{w}}  {'p50 ms':>9}  {'p99 ms':>9}  {'runs':>5}  notes")
    print("-" * (w + 40))
    for name, p50, p99, n, note in rows:
        print(f"{name:<{w}}  {p50:>9}  {p99:>9}  {str(n or '-'):>5}  {note}")
    rss = hutch.get("rss")
    if rss:
        print(f"\nhutchd RSS: {rss['before_kib']} KiB -> {rss['after_kib']} KiB with {rss['sandboxes']} idle "
              f"sandboxes = {rss['per_sandbox_kib']:.0f} KiB per idle sandbox")
        if "cgroup_kib_per_sandbox" in rss:
            print(f"each idle sandbox's own cgroup memory (hutch-init and its files): "
                  f"{rss['cgroup_kib_per_sandbox']:.0f} KiB")
    mem = load(f"{d}/mem.json")
    if mem:
        print(f"\nmemory (issue 15; docs/performance/memory.md \"Memory: per client and per sandbox\")")
        ic, st, idl = mem.get("idle_client"), mem.get("streaming"), mem.get("idle_sandbox")
        if ic:
            print(f"  hutchd per connected SDK client, {mem['clients']} on one sandbox: "
                  f"{ic['per_client_kib']:.1f} KiB ({ic['before_kib']} -> {ic['after_kib']} KiB RSS; target <= 64)")
        if st:
            print(f"  hutchd per client with its own sandbox streaming a line/s, {mem['sandboxes']} at once: "
                  f"{st['per_client_kib']:.1f} KiB ({st['before_kib']} -> {st['after_kib']} KiB RSS; "
                  f"{st['streams_delivering']} streams delivering; {st['hutchd_fds_per_sandbox']:.1f} hutchd fds each)")
        if idl:
            parts = ", ".join(f"{k.replace('_kib', '').replace('_', ' ')} {idl[k]:.0f}" for k in (
                "process_rss_kib_per_sandbox", "cgroup_kib_per_sandbox", "hutchd_kib_per_sandbox",
                "slab_unreclaimable_kib", "slab_reclaimable_kib", "page_tables_kib", "kernel_stack_kib",
                "shmem_kib", "percpu_kib", "buffers_kib", "cached_kib") if idl.get(k) is not None)
            if "charged_kib_per_sandbox" in idl:
                print(f"  host per idle sandbox, {mem['sandboxes']} alive, charged to memory cgroups "
                      f"(the sandbox's + hutchd's growth): {idl['charged_kib_per_sandbox']:.0f} KiB "
                      f"(target <= 1536) = anon {idl['charged_anon_kib']:.0f} + kernel {idl['charged_kernel_kib']:.0f}"
                      f" + page cache {idl['charged_file_kib']:.0f}; without the page cache "
                      f"{idl['charged_without_cache_kib']:.0f} KiB")
            print(f"  host per idle sandbox, {mem['sandboxes']} alive: MemAvailable drop "
                  f"{idl['memavailable_drop_per_sandbox_kib']:.0f} KiB (the whole machine's, other work included), "
                  f"{idl['processes_per_sandbox']} processes each")
            print(f"    its parts, KiB per sandbox: {parts}")
    fk = load(f"{d}/fivek.json")
    if fk:
        print(f"\n{fk['n']} sandboxes alive at once (issue 15; docs/performance/memory.md \"5,000 alive at once\")")
        print(f"  reached {fk.get('reached')} alive" + (f"; stopped: {fk['stop_reason']}" if fk.get("stop_reason") else "")
              + (f"; failure: {fk['failure'][:200]}" if fk.get("failure") else ""))
        for err in fk.get("errors") or []:
            print(f"    create {err['at']} failed with {err['alive']} alive: {err['message'][:200]}")
        c = fk.get("create_and_check") or {}
        if fk.get("create_all_s") is not None:
            print(f"  created in {fk['create_all_s']} s = {fk['creates_per_s']}/s, {fk['par']} in flight; create + "
                  f"first command p50 {c.get('p50_ms')} ms, p99 {c.get('p99_ms')} ms")
        for key in ("at_mid", "at_n"):
            m = fk.get(key)
            if m:
                print(f"  at {m['alive']}: charged {m['charged_kib_per_sandbox']} KiB per idle sandbox (target <= 1536) = "
                      f"anon {m['charged_anon_kib']} + kernel {m['charged_kernel_kib']} + page cache "
                      f"{m['charged_file_kib']}; MemAvailable drop {m['memavailable_drop_per_sandbox_kib']} KiB "
                      f"(now {m['memavailable_mib']} MiB)")
                print(f"    hutchd RSS {m['hutchd_rss_kib']} KiB ({m['hutchd_kib_per_sandbox']} KiB per sandbox), "
                      f"{m['hutchd_fds']} fds ({m['hutchd_fds_per_sandbox']} per sandbox); {m['tasks']} tasks on the "
                      f"machine ({m['tasks_per_sandbox']} per sandbox), {m['processes_per_sandbox']} processes in each")
        for key, name in (("list", "list (SDK: the newest 1,000)"), ("live_list", "GET /hutch/v1/live (all)"), ("connect", "Sandbox.connect"),
                          ("cmd_round_trip", "sh`echo` round trip")):
            x = fk.get(key)
            if x and x.get("n"):
                print(f"  {name}: p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms ({x['n']})")
        if fk.get("sampled_answered") is not None:
            print(f"  {fk['sampled_answered']} of {fk['sample']} sampled sandboxes answered")
        print(f"  kill all: {fk.get('kill_all_s')} s (all gone by {fk.get('gone_all_s')} s); census after: "
              f"{fk.get('census_after_kill')}; listed running: {fk.get('listed_running_after_kill')}")
    fsb = load(f"{d}/fs.json")
    if fsb:
        loc = fsb.get("local_cp_mbs")
        print(f"\nfile throughput, {fsb['size_mb']} MB (MB/s; target: within 1.5x of local cp)")
        for key, name in (("local_cp_mbs", "local cp (peer)"), ("sdk_write_mbs", "SDK writeFile (stream), Node"),
                          ("sdk_read_mbs", "SDK open + readable, Node"), ("deno_write_mbs", "SDK writeFile, Deno"),
                          ("deno_read_mbs", "SDK open + readable, Deno"), ("cp_up_mbs", "hutch cp LOCAL ID:PATH"),
                          ("cp_down_mbs", "hutch cp ID:PATH LOCAL"), ("exec_cat_mbs", "hutch exec cat"),
                          ("cp_tree_up_mbs", "hutch cp TREE ID:PATH"), ("cp_tree_down_mbs", "hutch cp ID:TREE LOCAL"),
                          ("tar_tree_up_mbs", "tar -c | hutch cp - ID:PATH"),
                          ("tar_tree_down_mbs", "hutch cp ID:TREE - | tar -x")):
            v = fsb.get(key)
            slow = f"{loc / v:.1f}x slower than local cp" if v and loc and key != "local_cp_mbs" else ""
            cpu = fsb.get(key.replace("_mbs", "_cpu_s"))
            ccpu = fsb.get(key.replace("_mbs", "_client_cpu_s"))
            cpu = f"  (hutchd + hutch-init + fs worker: {cpu} CPU s; client {ccpu})" if cpu is not None else ""
            print(f"  {name:<26} {v if v is not None else 'n/a':>8}  {slow}{cpu}")
            by = (fsb.get("cpu_by_process") or {}).get(key.replace("_mbs", ""))
            if by:
                print(f"  {'':<26} {'':>8}  CPU s by process: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
    ex = load(f"{d}/exec.json")
    if ex:
        pipe = ex.get("local_pipe_mbs")
        print(f"\nhutch exec throughput, {ex['size_mb']} MB (MB/s, median of {ex['runs']}; "
              "raw = hutch-exec.v1 channel, json = JSON-RPC with binary streams)")
        print(f"  {'local cat FILE (peer)':<34} {ex['local_cat_mbs']:>8}")
        print(f"  {'local cat FILE | cat (peer)':<34} {pipe:>8}")
        for way in ("raw", "json"):
            for key, name in (("in", "hutch exec cat >/dev/null < FILE"), ("out", "hutch exec cat FILE"),
                              ("cat", "hutch exec cat < FILE")):
                v = ex.get(f"{way}_{key}_mbs")
                vs = f"{pipe / v:.1f}x slower than the local pipe" if v and pipe else ""
                other = ex.get(f"{'json' if way == 'raw' else 'raw'}_{key}_mbs")
                if way == "raw" and v and other:
                    vs += f"; {v / other:.1f}x the JSON-RPC way"
                cpu = ex.get(f"{way}_{key}_daemon_cpu_s")
                if cpu is not None:
                    vs += f"; hutchd {cpu} CPU s, client {ex.get(f'{way}_{key}_client_cpu_s')}"
                print(f"  {way + ': ' + name:<34} {v if v is not None else 'n/a':>8}  {vs}")
    if fsb and fsb.get("readahead"):
        print("  fileRead read-ahead: " + ", ".join(f"{k} {v}" for k, v in fsb["readahead"].items()))
    wr = vol and vol.get("write")
    if wr:
        print(f"\nvolume write throughput, {wr['mb']} MB with fsync (MB/s, median of {wr['runs']})")
        print(f"  {'sandbox own disk (peer)':<26} {wr['own_disk_mbs']:>8.0f}")
        print(f"  {'volume (ext4 on XFS pool)':<26} {wr['volume_mbs']:>8.0f}  "
              f"{wr['volume_mbs'] / wr['own_disk_mbs'] * 100:.0f}% of the sandbox's own disk")
    if not (hutch or vol or fsb or net or ig or vsc or mem or fair or ex or fk):
        print("\n(hutch numbers missing: see the errors above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
