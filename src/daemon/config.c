/* hutchd command-line flags and their embedded defaults. */
#include "daemon/config.h"
#include <arpa/inet.h>
#include "daemon/storage/names.h"
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: hutchd [options]\n"
    "  --state-dir DIR       state (SQLite, admin.token) [/var/lib/hutch]\n"
    "  --listen HOST:PORT    API address [127.0.0.1:7070]\n"
    "  --socket PATH         root-only unix socket [/run/hutch/hutchd.sock]\n"
    "  --image-cache DIR     built images [/var/cache/hutch/images]\n"
    "  --vscode-layer DIR    the VS Code layer (scripts/build-vscode-layer.sh) [/var/cache/hutch/layers/vscode-4.99.4]\n"
    "  --init PATH           hutch-init binary [next to hutchd]\n"
    "  --cgroup-name NAME    cgroup directory for sandboxes [hutch]\n"
    "  --node ABC            three lowercase letters naming this node in sandbox ids [loc]\n"
    "  --memory-min MIB, --memory-max MIB, --memory-default MIB  [768, 4096, 1280]\n"
    "  --disk MIB            writable layer per sandbox, promised in full: sandboxes x MIB must fit the\n"
    "                        free space of --disk-dir [4096]\n"
    "  --disk-dir DIR        where writable layers' images live [STATE/sandboxes]\n"
    "  --disk-reserve MIB    space on --disk-dir never promised to sandboxes [5 %%, 64..4096]\n"
    "  --storage-size SIZE   volume pool (STATE/storage/pool.img, allocated in full when the first volume\n"
    "                        is made): the sum of volume capacities and snapshots must fit [8GiB]\n"
    "  --volume-max SIZE     largest capacity of one volume [the pool size]\n"
    "  --regions LIST        region names volumes may be created in, comma-separated [any]\n"
    "  --pids-max N          processes per sandbox [1024]\n"
    "  --max-sandboxes N     [256]\n"
    "  --warm N              sandboxes kept started ahead of demand, so create is a hand-over [2]\n"
    "  --warm-memory MIB     host memory the warm pool may hold while a burst of creates drains it: it\n"
    "                        grows to MIB / 1.25 (an idle sandbox's cost), at most 64, and shrinks back\n"
    "                        to --warm 10 s after the burst [32]\n"
    "  --ws-idle-timeout MS  close a client connection silent this long (clients ping every 2 s) [60000]\n"
    "  --deno-call-timeout MS  a Deno REPL eval or call unanswered this long fails with ETIMEDOUT [600000]\n"
    "  --max-conns N         API connections at once over TCP; when full, a new one displaces the\n"
    "                        oldest unauthenticated one [4096]\n"
    "  --max-conns-per-ip N  unauthenticated API connections from one address (IPv6: one /64) [1024]\n"
    "  --request-timeout MS  an unauthenticated connection must send its whole request within this\n"
    "                        time, however slowly it trickles in (checked each second) [10000]\n"
    "  --resolve HOST=IP     upstream address for HOST, before system DNS (repeatable)\n"
    "  --hosts-file FILE     upstream addresses in /etc/hosts format, before system DNS\n"
    "  --dns-upstream IP:PORT  the DNS server for other names, instead of /etc/resolv.conf's\n"
    "                        ([IPv6]:PORT for IPv6)\n"
    "  --net-pool4 CIDR      sandbox IPv4 addresses, 4 per sandbox [10.200.0.0/16]\n"
    "  --net-pool6 CIDR      sandbox IPv6 /64s [fd68:7574:6368::/48]\n"
    "  --net-host-ns         manage sandbox networking (nftables table inet hutch) in this network\n"
    "                        namespace even if it is not one named by `ip netns` (else: loopback only)\n"
    "  --allow-range CIDR    let sandboxes reach a range closed by default: private networks, CGNAT,\n"
    "                        link-local, cloud metadata, other special-purpose blocks (repeatable;\n"
    "                        docs/network.md). Loopback, the pools and hutchd's own addresses stay closed\n"
    "  --upstream-ca FILE    extra CA (PEM) trusted for upstream TLS when secrets are substituted\n"
    "  --rotate-ca           make a new interception CA (STATE/ca) at start\n"
    "  --live-restore SECS   sandboxes outlive hutchd (crash, kill -9, restart) and the next hutchd\n"
    "                        adopts them; each waits at most SECS for it (docs/restore.md) [0 = off]\n"
    "  --cpu-millis N        CPU quota per sandbox in thousandths of a CPU; its affinity and its\n"
    "                        /proc/cpuinfo show as many CPUs, rounded up [2000]\n"
    "  --control-slice-us N  EEVDF slice (Linux >= 6.12) of hutchd's event loop and every sandbox's\n"
    "                        agent, so their wake-ups run ahead of busy sandboxes; never inherited\n"
    "                        by sandbox processes (docs/performance/fairness.md) [100; 0 = the kernel's]\n"
    "  --sandbox-slice-us N  EEVDF slice of every process a sandbox runs (its children inherit it;\n"
    "                        any process may change its own) (docs/performance/fairness.md) [0 = the kernel's]\n"
    "  --loop-stall-ms N     log each event loop iteration busier than N ms, or that waited N ms for a\n"
    "                        CPU, with where the time went (a debug aid; docs/performance/fairness.md) [0 = off]\n"
    "  --daemon-cpu-shares N hutchd and its helpers run in a cpu cgroup of their own (NAME-daemon, cgroup\n"
    "                        v1) with N shares, so a host busy with sandboxes does not make the API and\n"
    "                        every stream wait for a CPU (docs/performance/fairness.md) [4096; 0 = stay put]\n"
    "  --lxcfs PATH          lxcfs binary for sandboxes' own /proc/meminfo, cpuinfo, stat, uptime,\n"
    "                        loadavg (hutchd runs its own on STATE/lxcfs; \"\" = off) [/usr/bin/lxcfs]\n"
    "  --price-cpu-hour USD  metering: price of a CPU-hour [0.05]\n"
    "  --price-memory-gib-hour USD  metering: price of a GiB-hour of memory limit [0.016]\n"
    "  --price-volume-gib-month USD  metering: price of a GiB-month (30 days) of volume storage [0.20]\n"
    "  --ingress-addr IP     where exposed ports listen, a port each, in URLs as https://IP:PORT/NAME [127.0.0.1]\n"
    "  --ingress-domain BASE exposures as https://NAME.BASE on one port (wildcard DNS for BASE to this host)\n"
    "  --ingress-port N      that port [443]\n"
    "  --ingress-cert FILE, --ingress-key FILE  certificate chain and key for *.BASE (PEM) [minted from\n"
    "                        the ingress CA in STATE/ingress-ca]\n"
    "  --ingress-head-timeout MS      a request head must arrive within [15000]\n"
    "  --ingress-upstream-timeout MS  the sandbox's server must start its answer within [60000]\n"
    "  --dashboard-dir DIR   the web dashboard's files, served at / (\"\" = off) [SELF/dashboard,\n"
    "                        SELF/../../dashboard (a build tree), SELF/../share/hutch/dashboard]\n"
    "  --stats-interval MS   sample running sandboxes' CPU and memory this often (0 = off) [2000]\n"
    "  --stats-samples N     samples kept per sandbox (a ring: the oldest go) [300]\n"
    "  --log-format FMT      text (as written) or json (one object per line) [text]\n"
    "  --app-build-timeout S   an app's install and build commands may take this long [600]\n"
    "  --app-idle S            an app with no requests this long stops its sandboxes (0: never) [900]\n"
    "  --app-volume-size MIB   a revision's files and build output may take this much [512]\n"
    "  --ssh-addr IP         where the SSH port listens (exposeSsh, hutch ssh) [127.0.0.1]\n"
    "  --ssh-port N          the SSH port, 0 = no SSH [2222]\n"
    "  --ssh-host NAME       the host name exposeSsh hands out [the --ssh-addr]\n";

static int parse_u32(const char *s, uint32_t *out, const char *what, struct hx_err *e)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v > UINT32_MAX)
        return hx_fail(e, EINVAL, "invalid %s: \"%s\"", what, s);
    *out = (uint32_t)v;
    return 0;
}

/* net: "192.0.2.1:53" or "[2001:db8::1]:53", as c-ares takes it */
static bool dns_upstream_ok(const char *s)
{
    char ip[64];
    const char *colon = strrchr(s, ':');
    bool v6 = s[0] == '[';
    if (!colon || (v6 && colon[-1] != ']'))
        return false;
    size_t n = (size_t)(colon - s) - (v6 ? 2 : 0);
    if (n == 0 || n >= sizeof ip)
        return false;
    memcpy(ip, s + (v6 ? 1 : 0), n);
    ip[n] = 0;
    uint8_t a[16];
    uint32_t port;
    struct hx_err e;
    return inet_pton(v6 ? AF_INET6 : AF_INET, ip, a) == 1 && parse_u32(colon + 1, &port, "port", &e) == 0 && port > 0 &&
           port <= 65535;
}

int config_parse(struct config *cfg, int argc, char **argv, struct hx_err *e)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->state_dir = "/var/lib/hutch";
    cfg->listen_host = "127.0.0.1";
    cfg->listen_port = 7070;
    cfg->socket_path = "/run/hutch/hutchd.sock";
    cfg->image_cache = "/var/cache/hutch/images";
    cfg->vscode_layer = "/var/cache/hutch/layers/vscode-4.99.4";
    cfg->cgroup_name = "hutch";
    strcpy(cfg->node, "loc");
    cfg->memory_min_mb = 768;
    cfg->memory_max_mb = 4096;
    cfg->memory_default_mb = 1280;
    cfg->disk_mb = 4096;
    cfg->disk_reserve_mb = -1;
    cfg->storage_size = 8ull << 30;
    cfg->volume_min = 16ull << 20; /* below this an ext4 with a journal is mostly metadata */
    cfg->pids_max = 1024;
    cfg->cpu_millis = 2000;
    cfg->control_slice_us = 100;
    cfg->daemon_cpu_shares = 4096;
    cfg->max_sandboxes = 256;
    cfg->warm = 2;
    cfg->warm_memory_mb = 32;
    cfg->ws_idle_ms = 60000;
    cfg->deno_call_timeout_ms = 600000;
    cfg->max_conns = 4096;
    cfg->max_conns_per_ip = 1024;
    cfg->request_timeout_ms = 10000;
    cfg->lxcfs_path = "/usr/bin/lxcfs";
    cfg->prices = (struct meter_prices){50000, 16000, 200000}; /* metering: Deno's published prices, in micro-dollars */
    cfg->ingress_addr = "127.0.0.1";
    cfg->ingress_port = 443;
    cfg->ingress_head_timeout_ms = 15000;
    cfg->ingress_upstream_timeout_ms = 60000;
    cfg->stats_interval_ms = 2000;
    cfg->stats_samples = 300;
    cfg->app_build_timeout_s = 600;  /* apps (docs/apps.md) */
    cfg->app_idle_s = 900;
    cfg->app_volume_mb = 512;
    cfg->ssh_addr = "127.0.0.1";
    cfg->ssh_port = 2222;

    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        snprintf(cfg->self_dir, sizeof cfg->self_dir, "%s", dirname(exe));
    }

    enum { O_STATE = 1, O_LISTEN, O_SOCKET, O_IMAGES, O_VSCODE, O_INIT, O_CGROUP, O_NODE, O_MEMMIN, O_MEMMAX,
           O_MEMDEF, O_DISK, O_PIDS, O_MAXSB, O_HELP, O_RESOLVE, O_HOSTS, O_POOL4, O_POOL6, O_HOSTNS, O_WARM, O_WARMMEM, O_WSIDLE, O_DENOCALL,
           O_UPCA, O_ROTCA, O_LIVERESTORE,
           O_DISKDIR,
           O_DISKRES,
           O_ALLOWRANGE,
           O_MAXCONNS,
           O_MAXCONNSIP,
           O_REQTIMEOUT,
           O_DNSUP,
           O_STORSIZE, O_VOLMAX, O_REGIONS,
           O_CPUMILLIS, O_CTLSLICE, O_SBSLICE, O_LOOPSTALL,
           O_LXCFS, O_DAEMONSHARES,
           O_PRICECPU,
           O_PRICEMEM,
           O_PRICEVOL,
           O_IGADDR,
           O_IGDOMAIN,
           O_IGPORT,
           O_IGCERT,
           O_IGKEY,
           O_IGHEADTO,
           O_IGUPTO,
           O_DASHDIR,
           O_STATSINT,
           O_STATSN,
           O_LOGFMT,
           O_APPBUILDTO, O_APPIDLE, O_APPVOL,
           O_SSHADDR, O_SSHPORT, O_SSHHOST,
    };
    static const struct option opts[] = {
        {"state-dir", required_argument, 0, O_STATE}, {"listen", required_argument, 0, O_LISTEN},
        {"socket", required_argument, 0, O_SOCKET}, {"image-cache", required_argument, 0, O_IMAGES},
        {"vscode-layer", required_argument, 0, O_VSCODE},
        {"init", required_argument, 0, O_INIT}, {"cgroup-name", required_argument, 0, O_CGROUP},
        {"node", required_argument, 0, O_NODE}, {"memory-min", required_argument, 0, O_MEMMIN},
        {"memory-max", required_argument, 0, O_MEMMAX}, {"memory-default", required_argument, 0, O_MEMDEF},
        {"disk", required_argument, 0, O_DISK}, {"pids-max", required_argument, 0, O_PIDS},
        {"max-sandboxes", required_argument, 0, O_MAXSB}, {"warm", required_argument, 0, O_WARM}, {"warm-memory", required_argument, 0, O_WARMMEM}, {"ws-idle-timeout", required_argument, 0, O_WSIDLE}, {"deno-call-timeout", required_argument, 0, O_DENOCALL}, {"help", no_argument, 0, O_HELP},
        {"resolve", required_argument, 0, O_RESOLVE}, {"hosts-file", required_argument, 0, O_HOSTS},
        {"net-pool4", required_argument, 0, O_POOL4}, {"net-pool6", required_argument, 0, O_POOL6},
        {"net-host-ns", no_argument, 0, O_HOSTNS}, {"upstream-ca", required_argument, 0, O_UPCA},
        {"rotate-ca", no_argument, 0, O_ROTCA},
        {"live-restore", required_argument, 0, O_LIVERESTORE},
        {"disk-dir", required_argument, 0, O_DISKDIR},
        {"disk-reserve", required_argument, 0, O_DISKRES},
        {"allow-range", required_argument, 0, O_ALLOWRANGE},
        {"max-conns", required_argument, 0, O_MAXCONNS},
        {"max-conns-per-ip", required_argument, 0, O_MAXCONNSIP},
        {"request-timeout", required_argument, 0, O_REQTIMEOUT},
        {"dns-upstream", required_argument, 0, O_DNSUP},
        {"storage-size", required_argument, 0, O_STORSIZE},
        {"volume-max", required_argument, 0, O_VOLMAX},
        {"regions", required_argument, 0, O_REGIONS},
        {"cpu-millis", required_argument, 0, O_CPUMILLIS},
        {"control-slice-us", required_argument, 0, O_CTLSLICE},
        {"sandbox-slice-us", required_argument, 0, O_SBSLICE},
        {"loop-stall-ms", required_argument, 0, O_LOOPSTALL},
        {"lxcfs", required_argument, 0, O_LXCFS},
        {"daemon-cpu-shares", required_argument, 0, O_DAEMONSHARES},
        {"price-cpu-hour", required_argument, 0, O_PRICECPU},
        {"price-memory-gib-hour", required_argument, 0, O_PRICEMEM},
        {"price-volume-gib-month", required_argument, 0, O_PRICEVOL},
        {"ingress-addr", required_argument, 0, O_IGADDR},
        {"ingress-domain", required_argument, 0, O_IGDOMAIN},
        {"ingress-port", required_argument, 0, O_IGPORT},
        {"ingress-cert", required_argument, 0, O_IGCERT},
        {"ingress-key", required_argument, 0, O_IGKEY},
        {"ingress-head-timeout", required_argument, 0, O_IGHEADTO},
        {"ingress-upstream-timeout", required_argument, 0, O_IGUPTO},
        {"dashboard-dir", required_argument, 0, O_DASHDIR},
        {"stats-interval", required_argument, 0, O_STATSINT},
        {"stats-samples", required_argument, 0, O_STATSN},
        {"log-format", required_argument, 0, O_LOGFMT},
        {"app-build-timeout", required_argument, 0, O_APPBUILDTO},
        {"app-idle", required_argument, 0, O_APPIDLE},
        {"app-volume-size", required_argument, 0, O_APPVOL},
        {"ssh-addr", required_argument, 0, O_SSHADDR},
        {"ssh-port", required_argument, 0, O_SSHPORT},
        {"ssh-host", required_argument, 0, O_SSHHOST},
        {0, 0, 0, 0}};
    int c, r;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_STATE: cfg->state_dir = optarg; break;
        case O_LISTEN: {
            const char *colon = strrchr(optarg, ':');
            if (!colon || colon == optarg)
                return hx_fail(e, EINVAL, "--listen wants HOST:PORT, got \"%s\"", optarg);
            uint32_t port;
            if ((r = parse_u32(colon + 1, &port, "port", e)) < 0)
                return r;
            if (port == 0 || port > 65535)
                return hx_fail(e, EINVAL, "port out of range: %u", port);
            static char host[256];
            size_t hl = (size_t)(colon - optarg);
            if (hl >= sizeof host)
                return hx_fail(e, EINVAL, "--listen host too long");
            memcpy(host, optarg, hl);
            host[hl] = 0;
            if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [::1]:7070 */
                memmove(host, host + 1, hl - 2);
                host[hl - 2] = 0;
            }
            cfg->listen_host = host;
            cfg->listen_port = (int)port;
            break;
        }
        case O_SOCKET: cfg->socket_path = optarg; break;
        case O_IMAGES: cfg->image_cache = optarg; break;
        case O_VSCODE:
            if (optarg[0] != '/' || strstr(optarg, ".."))
                return hx_fail(e, EINVAL, "--vscode-layer must be an absolute path without ..");
            cfg->vscode_layer = optarg;
            break;
        case O_INIT: cfg->init_path = optarg; break;
        case O_CGROUP:
            if (!*optarg || strchr(optarg, '/') || strlen(optarg) > 63 || optarg[0] == '.')
                return hx_fail(e, EINVAL, "invalid --cgroup-name \"%s\"", optarg);
            cfg->cgroup_name = optarg;
            break;
        case O_NODE:
            if (strlen(optarg) != 3 || strspn(optarg, "abcdefghijklmnopqrstuvwxyz") != 3)
                return hx_fail(e, EINVAL, "--node wants three lowercase letters, got \"%s\"", optarg);
            strcpy(cfg->node, optarg);
            break;
        case O_MEMMIN: if ((r = parse_u32(optarg, &cfg->memory_min_mb, "--memory-min", e)) < 0) return r; break;
        case O_MEMMAX: if ((r = parse_u32(optarg, &cfg->memory_max_mb, "--memory-max", e)) < 0) return r; break;
        case O_MEMDEF: if ((r = parse_u32(optarg, &cfg->memory_default_mb, "--memory-default", e)) < 0) return r; break;
        case O_DISK: if ((r = parse_u32(optarg, &cfg->disk_mb, "--disk", e)) < 0) return r; break;
        case O_DISKDIR: cfg->disk_dir = optarg; break;
        case O_DISKRES: {
            uint32_t v;
            if ((r = parse_u32(optarg, &v, "--disk-reserve", e)) < 0)
                return r;
            cfg->disk_reserve_mb = v;
            break;
        }
        case O_PIDS: if ((r = parse_u32(optarg, &cfg->pids_max, "--pids-max", e)) < 0) return r; break;
        case O_MAXSB: if ((r = parse_u32(optarg, &cfg->max_sandboxes, "--max-sandboxes", e)) < 0) return r; break;
        case O_WARM: if ((r = parse_u32(optarg, &cfg->warm, "--warm", e)) < 0) return r; break;
        case O_WARMMEM: if ((r = parse_u32(optarg, &cfg->warm_memory_mb, "--warm-memory", e)) < 0) return r; break;
        case O_WSIDLE: if ((r = parse_u32(optarg, &cfg->ws_idle_ms, "--ws-idle-timeout", e)) < 0) return r; break;
        case O_DENOCALL: if ((r = parse_u32(optarg, &cfg->deno_call_timeout_ms, "--deno-call-timeout", e)) < 0) return r; break;
        case O_HELP: case 'h': fputs(usage, stdout); return 1;
        case O_RESOLVE: /* net: checked in net_init */
            if (cfg->n_resolve >= sizeof cfg->resolve / sizeof cfg->resolve[0] || !strchr(optarg, '='))
                return hx_fail(e, EINVAL, "--resolve wants HOST=IP (at most 256 times), got \"%s\"", optarg);
            cfg->resolve[cfg->n_resolve++] = optarg;
            break;
        case O_HOSTS: cfg->hosts_file = optarg; break;
        case O_DNSUP:
            if (!dns_upstream_ok(optarg))
                return hx_fail(e, EINVAL, "--dns-upstream wants IP:PORT or [IPv6]:PORT, got \"%s\"", optarg);
            cfg->dns_upstream = optarg;
            break;
        case O_POOL4: cfg->net_pool4 = optarg; break;
        case O_POOL6: cfg->net_pool6 = optarg; break;
        case O_HOSTNS: cfg->net_host_ns = true; break;
        case O_UPCA: /* secrets: the proxy reads it before confining itself */
            if (access(optarg, R_OK) != 0)
                return hx_fail(e, errno, "--upstream-ca %s: %m", optarg);
            cfg->upstream_ca = optarg;
            break;
        case O_ROTCA: cfg->rotate_ca = true; break;
        case O_LIVERESTORE: if ((r = parse_u32(optarg, &cfg->live_restore_s, "--live-restore", e)) < 0) return r; break;
        case O_STORSIZE: if ((r = vol_parse_capacity(optarg, &cfg->storage_size, e)) < 0) return hx_wrap(e, "--storage-size"); break;
        case O_VOLMAX: if ((r = vol_parse_capacity(optarg, &cfg->volume_max, e)) < 0) return hx_wrap(e, "--volume-max"); break;
        case O_REGIONS: cfg->regions = optarg; break;
        case O_ALLOWRANGE: /* net: the CIDR is checked in net_init */
            if (cfg->n_allow_range >= sizeof cfg->allow_range / sizeof cfg->allow_range[0])
                return hx_fail(e, EINVAL, "--allow-range: at most 64 ranges");
            cfg->allow_range[cfg->n_allow_range++] = optarg;
            break;
        case O_MAXCONNS: if ((r = parse_u32(optarg, &cfg->max_conns, "--max-conns", e)) < 0) return r; break;
        case O_MAXCONNSIP: if ((r = parse_u32(optarg, &cfg->max_conns_per_ip, "--max-conns-per-ip", e)) < 0) return r; break;
        case O_REQTIMEOUT: if ((r = parse_u32(optarg, &cfg->request_timeout_ms, "--request-timeout", e)) < 0) return r; break;
        case O_CPUMILLIS:
            if ((r = parse_u32(optarg, &cfg->cpu_millis, "--cpu-millis", e)) < 0)
                return r;
            if (cfg->cpu_millis < 10 || cfg->cpu_millis > 1024000)
                return hx_fail(e, EINVAL, "--cpu-millis must be 10..1024000");
            break;
        case O_CTLSLICE: /* the kernel's bounds: 0.1 ms .. 100 ms */
            if ((r = parse_u32(optarg, &cfg->control_slice_us, "--control-slice-us", e)) < 0)
                return r;
            if (cfg->control_slice_us && (cfg->control_slice_us < 100 || cfg->control_slice_us > 100000))
                return hx_fail(e, EINVAL, "--control-slice-us must be 0 or 100..100000");
            break;
        case O_SBSLICE:
            if ((r = parse_u32(optarg, &cfg->sandbox_slice_us, "--sandbox-slice-us", e)) < 0)
                return r;
            if (cfg->sandbox_slice_us && (cfg->sandbox_slice_us < 100 || cfg->sandbox_slice_us > 100000))
                return hx_fail(e, EINVAL, "--sandbox-slice-us must be 0 or 100..100000");
            break;
        case O_LOOPSTALL:
            if ((r = parse_u32(optarg, &cfg->loop_stall_ms, "--loop-stall-ms", e)) < 0)
                return r;
            if (cfg->loop_stall_ms > 600000)
                return hx_fail(e, EINVAL, "--loop-stall-ms must be 0..600000");
            break;
        case O_LXCFS: cfg->lxcfs_path = optarg; break;
        case O_DAEMONSHARES: /* v1 cpu.shares bounds */
            if ((r = parse_u32(optarg, &cfg->daemon_cpu_shares, "--daemon-cpu-shares", e)) < 0)
                return r;
            if (cfg->daemon_cpu_shares && (cfg->daemon_cpu_shares < 2 || cfg->daemon_cpu_shares > 262144))
                return hx_fail(e, EINVAL, "--daemon-cpu-shares must be 0 or 2..262144");
            break;
        case O_PRICECPU: if ((r = meter_parse_price(optarg, &cfg->prices.cpu_hour, e)) < 0) return hx_wrap(e, "--price-cpu-hour"); break;
        case O_PRICEMEM: if ((r = meter_parse_price(optarg, &cfg->prices.mem_gib_hour, e)) < 0) return hx_wrap(e, "--price-memory-gib-hour"); break;
        case O_PRICEVOL: if ((r = meter_parse_price(optarg, &cfg->prices.vol_gib_month, e)) < 0) return hx_wrap(e, "--price-volume-gib-month"); break;
        case O_IGADDR: cfg->ingress_addr = optarg; break; /* expose: checked in ingress_start */
        case O_IGDOMAIN:
            if (!*optarg || strlen(optarg) > 200 || strspn(optarg, "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(optarg))
                return hx_fail(e, EINVAL, "--ingress-domain wants a lowercase DNS name, got \"%s\"", optarg);
            cfg->ingress_domain = optarg;
            break;
        case O_IGPORT: {
            uint32_t v;
            if ((r = parse_u32(optarg, &v, "--ingress-port", e)) < 0 || v == 0 || v > 65535)
                return r < 0 ? r : hx_fail(e, EINVAL, "--ingress-port out of range");
            cfg->ingress_port = (int)v;
            break;
        }
        case O_IGCERT: cfg->ingress_cert = optarg; break;
        case O_IGKEY: cfg->ingress_key = optarg; break;
        case O_IGHEADTO: if ((r = parse_u32(optarg, &cfg->ingress_head_timeout_ms, "--ingress-head-timeout", e)) < 0) return r; break;
        case O_IGUPTO: if ((r = parse_u32(optarg, &cfg->ingress_upstream_timeout_ms, "--ingress-upstream-timeout", e)) < 0) return r; break;
        case O_DASHDIR: cfg->dashboard_dir = optarg; break;
        case O_STATSINT:
            if ((r = parse_u32(optarg, &cfg->stats_interval_ms, "--stats-interval", e)) < 0)
                return r;
            if (cfg->stats_interval_ms && cfg->stats_interval_ms < 50)
                return hx_fail(e, EINVAL, "--stats-interval must be 0 (off) or at least 50 ms");
            break;
        case O_STATSN:
            if ((r = parse_u32(optarg, &cfg->stats_samples, "--stats-samples", e)) < 0)
                return r;
            if (cfg->stats_samples < 2 || cfg->stats_samples > 100000)
                return hx_fail(e, EINVAL, "--stats-samples must be 2..100000");
            break;
        case O_LOGFMT:
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0)
                return hx_fail(e, EINVAL, "--log-format wants text or json, got \"%s\"", optarg);
            cfg->log_json = strcmp(optarg, "json") == 0;
            break;
        case O_APPBUILDTO: if ((r = parse_u32(optarg, &cfg->app_build_timeout_s, "--app-build-timeout", e)) < 0) return r; break;
        case O_APPIDLE: if ((r = parse_u32(optarg, &cfg->app_idle_s, "--app-idle", e)) < 0) return r; break;
        case O_APPVOL:
            if ((r = parse_u32(optarg, &cfg->app_volume_mb, "--app-volume-size", e)) < 0) return r;
            if (cfg->app_volume_mb < 32) return hx_fail(e, EINVAL, "--app-volume-size: at least 32 (MiB)");
            break;
        case O_SSHADDR: cfg->ssh_addr = optarg; break; /* ssh: checked in sshd_start */
        case O_SSHPORT: {
            uint32_t v;
            if ((r = parse_u32(optarg, &v, "--ssh-port", e)) < 0 || v > 65535)
                return r < 0 ? r : hx_fail(e, EINVAL, "--ssh-port out of range");
            cfg->ssh_port = (int)v;
            break;
        }
        case O_SSHHOST:
            if (!*optarg || strlen(optarg) > 253 || strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != strlen(optarg))
                return hx_fail(e, EINVAL, "--ssh-host wants a host name or address, got \"%.100s\"", optarg);
            cfg->ssh_host = optarg;
            break;
        default: return hx_fail(e, EINVAL, "unknown option (see hutchd --help)");
        }
    }
    if (optind < argc)
        return hx_fail(e, EINVAL, "unexpected argument \"%s\"", argv[optind]);
    if (cfg->memory_min_mb > cfg->memory_default_mb || cfg->memory_default_mb > cfg->memory_max_mb)
        return hx_fail(e, EINVAL, "memory limits must satisfy min <= default <= max");
    if (cfg->disk_mb < 16 || cfg->disk_mb > 1048576)
        return hx_fail(e, EINVAL, "--disk must be 16..1048576 MiB");
    if (!cfg->disk_dir) {
        snprintf(cfg->disk_dir_buf, sizeof cfg->disk_dir_buf, "%s/sandboxes", cfg->state_dir);
        cfg->disk_dir = cfg->disk_dir_buf;
    }
    if (cfg->storage_size < (512ull << 20)) /* XFS needs 300 MiB; a pool smaller than that holds little */
        return hx_fail(e, EINVAL, "--storage-size must be at least 512MiB");
    if (!cfg->volume_max || cfg->volume_max > cfg->storage_size)
        cfg->volume_max = cfg->storage_size;
    if (!cfg->ingress_cert != !cfg->ingress_key || (cfg->ingress_cert && !cfg->ingress_domain))
        return hx_fail(e, EINVAL, "--ingress-cert and --ingress-key go together, with --ingress-domain");
    if (cfg->warm > 64)
        return hx_fail(e, EINVAL, "--warm must be 0..64");
    if (cfg->warm_memory_mb > 1048576)
        return hx_fail(e, EINVAL, "--warm-memory must be 0..1048576 MiB");
    /* An idle pooled sandbox holds ~1.1 MiB of host memory (docs/performance/memory.md,
     * "Memory": its cgroup plus what hutchd's grew by); 1.25 MiB leaves room.
     * No pool at all with --warm 0. */
    uint64_t by_memory = (uint64_t)cfg->warm_memory_mb * 4 / 5;
    cfg->warm_max = cfg->warm == 0 ? 0 : by_memory > 64 ? 64 : by_memory < cfg->warm ? cfg->warm : (uint32_t)by_memory;
    if (cfg->max_sandboxes == 0 || cfg->max_sandboxes + cfg->warm_max > 50000)
        return hx_fail(e, EINVAL, "--max-sandboxes must be 1..50000");
    if (cfg->max_conns == 0 || cfg->max_conns > 1000000 || cfg->max_conns_per_ip == 0)
        return hx_fail(e, EINVAL, "--max-conns must be 1..1000000 and --max-conns-per-ip at least 1");
    if (cfg->request_timeout_ms < 1000 || cfg->request_timeout_ms > 600000)
        return hx_fail(e, EINVAL, "--request-timeout must be 1000..600000 ms");
    if (!cfg->init_path) {
        snprintf(cfg->init_buf, sizeof cfg->init_buf, "%s/hutch-init", cfg->self_dir);
        if (access(cfg->init_buf, X_OK) != 0)
            snprintf(cfg->init_buf, sizeof cfg->init_buf, "%s/../init/hutch-init", cfg->self_dir);
        if (access(cfg->init_buf, X_OK) != 0)
            snprintf(cfg->init_buf, sizeof cfg->init_buf, "%s/../libexec/hutch/hutch-init", cfg->self_dir);
        cfg->init_path = cfg->init_buf;
    }
    return 0;
}
