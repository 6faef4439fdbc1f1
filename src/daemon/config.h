/* hutchd configuration: command-line flags with embedded defaults. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "lib/err.h"
#include "lib/meter.h"

struct config {
    const char *state_dir;     /* /var/lib/hutch */
    const char *listen_host;   /* 127.0.0.1 */
    int listen_port;           /* 7070 */
    const char *socket_path;   /* /run/hutch/hutchd.sock */
    const char *image_cache;   /* /var/cache/hutch/images */
    const char *vscode_layer;  /* the VS Code layer, bound into sandboxes when built (vscode.c) */
    const char *init_path;     /* hutch-init next to hutchd */
    const char *cgroup_name;   /* hutch */
    char node[4];              /* three letters in sandbox ids */
    uint32_t memory_min_mb, memory_max_mb, memory_default_mb;
    uint32_t disk_mb;          /* writable layer limit */
    const char *disk_dir;      /* where the layers' images live [STATE/sandboxes] */
    int64_t disk_reserve_mb;   /* kept free on that file system; -1: disk_default_reserve_mb */
    char disk_dir_buf[4200];
    uint32_t pids_max;
    uint32_t cpu_millis;       /* CPU quota in thousandths of a CPU (2000 = 2 vCPU) */
    uint32_t control_slice_us; /* EEVDF slice of hutchd's loop and the agents, µs (0 = the kernel's) */
    uint32_t sandbox_slice_us; /* EEVDF slice of every sandbox process, inherited, µs (0 = the kernel's) */
    uint32_t loop_stall_ms;    /* log event loop iterations busier than this (0 = off) */
    uint32_t daemon_cpu_shares; /* v1: hutchd's own cpu cgroup's shares (0 = stay where started) */
    uint32_t max_sandboxes;
    uint32_t warm;             /* sandboxes kept started ahead of demand */
    uint32_t warm_memory_mb;   /* host memory the warm pool may hold during a burst (--warm-memory) */
    uint32_t warm_max;         /* the pool's bound during a burst: from warm_memory_mb, at least warm */
    uint32_t ws_idle_ms;       /* a silent client connection is closed after this */
    uint32_t max_conns;        /* API connections at once (TCP; the unix socket has its own) */
    uint32_t max_conns_per_ip; /* unauthenticated ones from one address */
    uint32_t request_timeout_ms; /* an unauthenticated connection's time to send a whole request */
    uint32_t deno_call_timeout_ms; /* deno: a REPL eval/call unanswered this long fails (docs/deno.md) */
    char self_dir[4096];       /* directory of the hutchd binary */
    char init_buf[4096];
    /* net: upstream name resolution for tests and air-gapped sites, address pools */
    const char *resolve[256];  /* "HOST=IP" */
    unsigned n_resolve;
    const char *hosts_file;
    const char *dns_upstream;  /* "IP:PORT" for names not in resolve/hosts_file, instead of resolv.conf's */
    const char *net_pool4;     /* 10.200.0.0/16 */
    const char *net_pool6;     /* fd68:7574:6368::/48 */
    bool net_host_ns;          /* allowed to manage nftables in the initial network namespace */
    const char *allow_range[64]; /* CIDRs sandboxes may reach although closed by default (src/proxy/ranges.c) */
    unsigned n_allow_range;
    /* secrets: TLS interception */
    const char *upstream_ca;   /* extra CA file the proxy trusts for upstreams (tests, private CAs) */
    bool rotate_ca;            /* make a new interception CA at start */
    /* restore: sandboxes outlive hutchd; seconds each waits for a returning one (0 = off, docs/restore.md) */
    uint32_t live_restore_s;
    /* storage: volumes and snapshots (docs/storage.md) */
    uint64_t storage_size;     /* bytes of the pool image STATE/storage/pool.img, allocated when first needed */
    uint64_t volume_min, volume_max; /* capacity range of one volume, bytes */
    const char *regions;       /* comma-separated region names volumes may name; NULL = any */
    const char *lxcfs_path;    /* views: lxcfs binary, "" = the kernel's /proc views */
    struct meter_prices prices; /* metering: micro-dollars per CPU-hour, GiB-hour, GiB-month */
    /* expose: the ingress (docs/expose.md) */
    const char *ingress_addr;  /* where exposures listen [127.0.0.1] */
    const char *ingress_domain; /* base domain: NAME.BASE per exposure on one port (else a port each) */
    int ingress_port;          /* host mode's port [443] */
    const char *ingress_cert, *ingress_key; /* the operator's certificate (chain) and key, PEM */
    uint32_t ingress_head_timeout_ms, ingress_upstream_timeout_ms;
    /* dashboard (docs/dashboard.md) */
    const char *dashboard_dir; /* the web dashboard's files; NULL = look beside hutchd, "" = off */
    uint32_t stats_interval_ms; /* CPU and memory samples of running sandboxes; 0 = off */
    uint32_t stats_samples;    /* kept per sandbox */
    bool log_json;             /* --log-format json */
    /* apps (docs/apps.md) */
    uint32_t app_build_timeout_s; /* install + build time limit [600] */
    uint32_t app_idle_s;       /* no requests this long: the app's sandboxes stop (0 = never) [900] */
    uint32_t app_volume_mb;    /* a revision's image [512] */
    /* ssh: hutch-ssh (docs/ssh.md) */
    const char *ssh_addr;      /* where the SSH port listens [127.0.0.1] */
    int ssh_port;              /* [2222]; 0 = SSH off (expose/ssh answers 503) */
    const char *ssh_host;      /* the host name exposeSsh returns [ssh_addr] */
};

/* Parses argv into cfg (defaults first). Returns 1 when --help was printed. */
int config_parse(struct config *cfg, int argc, char **argv, struct hx_err *e);
