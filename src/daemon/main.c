/* hutchd: the API server and sandbox manager. One libuv loop, no threads. */
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <uv.h>
#include "daemon/core/deploy.h"
#include "daemon/api/http.h"
#include "daemon/api/ws.h"
#include "daemon/config.h"
#include "daemon/sandbox/sched.h"
#include "daemon/log.h"
#include "daemon/api/static.h"
#include "daemon/core/sbstats.h"
#include "daemon/core/routes.h"
#include "daemon/core/rest_files.h"
#include "daemon/core/sandbox.h"
#include "daemon/core/restore.h"
#include "daemon/net/net.h"
#include "daemon/ingress/ingress.h"
#include "daemon/ssh/sshd.h"
#include "daemon/sandbox/cgroup.h"
#include "daemon/sandbox/disk.h"
#include "daemon/sandbox/launch.h"
#include "daemon/sandbox/views.h"
#include "daemon/store/store.h"
#include "lib/loopwatch.h"

static struct http_server *tcp_server, *unix_server;
static uv_signal_t sig_term, sig_int;
static uv_timer_t shutdown_timer;

static int mkdir_p(const char *path, mode_t mode, struct hx_err *e)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return hx_fail(e, errno, "mkdir %s: %m", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", buf);
    return 0;
}

/* First start: an admin token for the "default" organization, written to
 * DIR/admin.token (0600) so that only root can read it. */
static int ensure_admin_token(struct hx_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/admin.token", g_daemon.cfg->state_dir);
    int n = 0, r;
    if ((r = store_token_count(g_daemon.store, &n, e)) < 0)
        return r;
    if (n > 0 && access(path, F_OK) == 0)
        return 0;
    char tok[64], id[32];
    if ((r = store_token_create(g_daemon.store, "default", "admin", true, tok, id, e)) < 0)
        return r;
    autoclose int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return hx_fail(e, errno, "create %s: %m", path);
    fchmod(fd, 0600);
    char line[80];
    int len = snprintf(line, sizeof line, "%s\n", tok);
    if (write(fd, line, (size_t)len) != len)
        return hx_fail(e, errno, "write %s: %m", path);
    printf("hutchd: created an admin access token (organization \"default\") in %s\n", path);
    return 0;
}

static void on_shutdown_tick(uv_timer_t *t)
{
    if (g_daemon.cfg->live_restore_s > 0)
        restore_release_all(); /* restore: what a worker held at the signal */
    if (g_daemon.sandboxes == NULL) {
        uv_timer_stop(t);
        uv_stop(g_daemon.loop);
    }
}

/* --loop-stall-ms: one line per stalled iteration (docs/performance/fairness.md) */
static void on_loop_stall(const struct loopwatch_stall *s, void *arg)
{
    (void)arg;
    char line[400];
    loopwatch_format(s, line, sizeof line);
    fprintf(stderr, "hutchd: %s\n", line);
}

static void on_signal(uv_signal_t *h, int signum)
{
    if (g_daemon.shutting_down) {
        fprintf(stderr, "hutchd: second signal, exiting now\n");
        uv_stop(g_daemon.loop);
        return;
    }
    bool live = g_daemon.cfg->live_restore_s > 0;
    fprintf(stderr, "hutchd: %s: %s, then exiting\n", strsignal(signum),
            live ? "leaving sandboxes running for the next hutchd (live restore)" : "stopping every sandbox");
    g_daemon.shutting_down = true;
    net_stopping();
    ingress_stopping();
    if (tcp_server)
        http_server_close(tcp_server);
    if (unix_server)
        http_server_close(unix_server);
    tcp_server = unix_server = NULL;
    deploy_fini(); /* apps: instances stop and their images go */
    if (live)
        restore_release_all(); /* restore: the others are stopped */
    else
        sandbox_stop_all();
    uv_timer_start(&shutdown_timer, on_shutdown_tick, 0, 20);
}

/* Settles --disk-reserve and says how many sandboxes the disk promise allows. */
static int disk_space_announce(struct config *cfg, struct hx_err *e)
{
    uint64_t avail, total;
    int r = disk_fs_space(cfg->disk_dir, &avail, &total, e);
    if (r < 0)
        return r;
    if (cfg->disk_reserve_mb < 0)
        cfg->disk_reserve_mb = (int64_t)disk_default_reserve_mb(total);
    uint64_t usable = avail > (uint64_t)cfg->disk_reserve_mb ? avail - (uint64_t)cfg->disk_reserve_mb : 0;
    printf("hutchd: sandbox disks in %s: %" PRIu64 " MiB free, %" PRId64 " MiB kept free, room for %" PRIu64
           " sandboxes of %u MiB (--disk)\n", cfg->disk_dir, avail, cfg->disk_reserve_mb, usable / cfg->disk_mb,
           cfg->disk_mb);
    return 0;
}

/* dashboard: the web dashboard's files (--dashboard-dir, else the first of the places it is built or
 * installed), loaded into memory once; without them "/" answers that it is not installed. */
static struct static_site *site;
static void dashboard_load(const struct config *cfg)
{
    struct hx_err e = {0};
    if (cfg->dashboard_dir) {
        if (!*cfg->dashboard_dir)
            return;
        if (static_site_load(cfg->dashboard_dir, &site, &e) < 0)
            fprintf(stderr, "hutchd: dashboard off: %s\n", e.msg);
    } else {
        static const char *const rel[] = {"dashboard", "../../dashboard", "../share/hutch/dashboard"};
        for (size_t i = 0; i < HX_ARRAY_LEN(rel) && !site; i++) {
            char dir[4200];
            snprintf(dir, sizeof dir, "%s/%s", cfg->self_dir, rel[i]);
            if (access(dir, F_OK) == 0 && static_site_load(dir, &site, &e) < 0)
                fprintf(stderr, "hutchd: dashboard off: %s\n", e.msg);
        }
        if (!site)
            fprintf(stderr, "hutchd: no dashboard files beside %s (make dashboard, or --dashboard-dir)\n", cfg->self_dir);
    }
    if (site)
        printf("hutchd: dashboard: %zu files\n", static_site_count(site));
    routes_set_site(site);
}

int main(int argc, char **argv)
{
    static struct config cfg;
    struct hx_err e = {0};
    int r = config_parse(&cfg, argc, argv, &e);
    if (r == 1)
        return 0;
    if (r < 0) {
        fprintf(stderr, "hutchd: %s\n", e.msg);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (log_init(cfg.log_json ? LOG_JSON : LOG_TEXT, &e) < 0) { /* log: before anything is printed */
        fprintf(stderr, "hutchd: %s\n", e.msg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (geteuid() != 0) {
        fprintf(stderr, "hutchd: must run as root (it creates namespaces, cgroups and mounts)\n");
        return 1;
    }
    umask(022);
    /* The event loop's thread only: every thread and process hutchd starts
     * afterwards (libuv's workers, hutch-init, helpers) begins at the
     * kernel's default slice. */
    if (cfg.control_slice_us && sched_control_slice(0, cfg.control_slice_us, &e) < 0)
        fprintf(stderr, "hutchd: the event loop keeps the kernel's default slice: %s\n", e.msg);
    /* One fd per client connection and a few per sandbox (agent socket, pidfd,
     * disk image: 4 with its client's socket). A hard limit below what
     * --max-sandboxes needs is raised (root may, up to fs.nr_open): 5,000
     * sandboxes with their clients need 20,000 fds where shells often give 20,000
     * in all. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
        rlim_t want = (rlim_t)(cfg.max_sandboxes + cfg.warm_max) * 8 + 4096;
        unsigned long nr_open = 0;
        FILE *f = fopen("/proc/sys/fs/nr_open", "re");
        if (f) {
            if (fscanf(f, "%lu", &nr_open) != 1)
                nr_open = 0;
            fclose(f);
        }
        if (nr_open && want > nr_open)
            want = nr_open;
        if (nofile.rlim_max < want)
            nofile.rlim_max = want;
        nofile.rlim_cur = nofile.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &nofile) < 0 && getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
            nofile.rlim_cur = nofile.rlim_max; /* the old way: the soft limit up to the hard one */
            setrlimit(RLIMIT_NOFILE, &nofile);
        }
    }
    g_daemon.loop = uv_default_loop();
    log_start(g_daemon.loop);
    if (cfg.loop_stall_ms && (r = loopwatch_start(g_daemon.loop, cfg.loop_stall_ms, on_loop_stall, NULL)) < 0)
        fprintf(stderr, "hutchd: --loop-stall-ms: %s\n", uv_strerror(r));
    g_daemon.cfg = &cfg;
    g_daemon.init_memfd = -1;
    g_daemon.slots = calloc(cfg.max_sandboxes + cfg.warm_max, 1);
    char sbdir[4200];
    snprintf(sbdir, sizeof sbdir, "%s/sandboxes", cfg.state_dir);
    snprintf(g_daemon.image_root, sizeof g_daemon.image_root, "%s/debian-13/rootfs", cfg.image_cache);
    struct stat st;
    if (stat(g_daemon.image_root, &st) < 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "hutchd: image builtin:debian-13 not found at %s; build it with `make image`\n",
                g_daemon.image_root);
        return 1;
    }
    if ((r = mkdir_p(cfg.state_dir, 0700, &e)) < 0 || (r = mkdir_p(sbdir, 0700, &e)) < 0 ||
        (r = mkdir_p(cfg.disk_dir, 0700, &e)) < 0 || (r = disk_space_announce(&cfg, &e)) < 0 ||
        (r = store_open(cfg.state_dir, &g_daemon.store, &e)) < 0 || (r = ensure_admin_token(&e)) < 0 ||
        (r = restore_check_config(&e)) < 0 || (r = cgroup_init(cfg.cgroup_name, &e)) < 0 ||
        (g_daemon.init_memfd = sandbox_init_memfd(cfg.init_path, &e)) < 0 || (r = sandbox_lanes_start(&e)) < 0) {
        fprintf(stderr, "hutchd: %s\n", e.msg);
        return 1;
    }
    if (cfg.daemon_cpu_shares) { /* before hutchd starts its helpers: they go along */
        struct hx_err de = {0};
        if (cgroup_daemon_enter(cfg.daemon_cpu_shares, &de) < 0)
            fprintf(stderr, "hutchd: keeps its CPU weight (--daemon-cpu-shares): %s\n", de.msg);
    }
    restore_adopt_all(); /* restore: a previous hutchd's sandboxes that still run */
    sandbox_cleanup_stale();
    char views_mnt[4200];
    snprintf(views_mnt, sizeof views_mnt, "%s/lxcfs", cfg.state_dir);
    views_start(g_daemon.loop, cfg.lxcfs_path, views_mnt, sandbox_views_changed, NULL);
    /* Replaces a stale nftables table of ours and starts hutch-proxy
     * (retried at the first sandbox if it fails here). */
    if (net_init(&cfg, g_daemon.loop, &e) < 0)
        fprintf(stderr, "hutchd: sandbox network: %s\n", e.msg);
    restore_connect_all(); /* restore: their agents, before the API opens */
    pool_start();
    deploy_init(); /* apps: routes of served apps (their sandboxes start at the first request) */

    char sockdir[4096];
    snprintf(sockdir, sizeof sockdir, "%s", cfg.socket_path);
    char *slash = strrchr(sockdir, '/');
    if (slash && slash != sockdir) {
        *slash = 0;
        mkdir_p(sockdir, 0755, NULL);
    }
    unlink(cfg.socket_path);
    if ((r = http_server_listen_tcp(g_daemon.loop, cfg.listen_host, cfg.listen_port, routes_on_request, NULL,
                                    &tcp_server, &e)) < 0 ||
        (r = http_server_listen_unix(g_daemon.loop, cfg.socket_path, routes_on_request, NULL, &unix_server, &e)) < 0) {
        fprintf(stderr, "hutchd: %s\n", e.msg);
        return 1;
    }
    ws_set_idle_timeout(cfg.ws_idle_ms);
    http_server_set_raw_body(tcp_server, rest_files_raw_body); /* raw file channel: uploads stream */
    http_server_set_raw_body(unix_server, rest_files_raw_body);
    dashboard_load(&cfg); /* dashboard: */
    sbstats_start(g_daemon.loop, cfg.stats_interval_ms, cfg.stats_samples);
    /* The unix socket keeps the default budget, its own: a TCP flood never reaches it. */
    http_server_set_limits(tcp_server, &(struct http_limits){cfg.max_conns, cfg.max_conns_per_ip,
                                                             cfg.request_timeout_ms});
    uv_signal_init(g_daemon.loop, &sig_term);
    uv_signal_init(g_daemon.loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_timer_init(g_daemon.loop, &shutdown_timer);

    const char *host = cfg.listen_host;
    bool v6 = strchr(host, ':') != NULL;
    printf("hutchd: listening on http://%s%s%s:%d (and %s for root)\n", v6 ? "[" : "", host, v6 ? "]" : "",
           cfg.listen_port, cfg.socket_path);
    printf("hutchd: use it with the SDK or the CLI:\n"
           "  export DENO_SANDBOX_ENDPOINT=http://%s%s%s:%d DENO_DEPLOY_ENDPOINT=http://%s%s%s:%d\n"
           "  export DENO_DEPLOY_TOKEN=$(cat %s/admin.token) HUTCH_TOKEN=$(cat %s/admin.token)\n",
           v6 ? "[" : "", host, v6 ? "]" : "", cfg.listen_port, v6 ? "[" : "", host, v6 ? "]" : "",
           cfg.listen_port, cfg.state_dir, cfg.state_dir);
    uv_run(g_daemon.loop, UV_RUN_DEFAULT);
    sandbox_lanes_stop();
    unlink(cfg.socket_path);
    net_fini_keep(restore_left_running()); /* our table goes when hutchd goes, unless sandboxes stay */
    views_stop(); /* lxcfs and its mount go too */
    ingress_fini();
    sshd_fini();
    cgroup_daemon_leave(); /* its helpers have exited */
    if (!g_daemon.sandboxes && !restore_left_running())
        cgroup_fini();
    store_close(g_daemon.store);
    static_site_free(site);
    printf("hutchd: stopped\n");
    return 0;
}
