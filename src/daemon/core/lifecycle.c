/* Sandbox lifecycle on the host: create (uid range, cgroups, launch of
 * hutch-init, setup), timeouts, and a teardown that leaves nothing behind. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include "daemon/core/sandbox.h"
#include "daemon/core/volumes.h"
#include "daemon/core/metering.h"
#include "daemon/core/sbstats.h"
#include "daemon/core/deno.h"
#include "daemon/core/expose.h"
#include "daemon/core/restore.h"
#include "daemon/core/deploy.h"
#include "daemon/core/vscode.h"
#include "daemon/net/ca_layer.h"
#include "daemon/net/net.h"
#include "daemon/net/secrets.h"
#include "daemon/sandbox/cgroup.h"
#include "daemon/sandbox/disk.h"
#include "daemon/sandbox/launch.h"
#include "daemon/sandbox/sched.h"
#include "daemon/sandbox/views.h"
#include "daemon/store/store.h"
#include "lib/fds.h"
#include "lib/views.h"
#include "lib/strparse.h"

struct daemon_ctx g_daemon;

#define UID_BASE0 1000000000u
#define UID_COUNT 65536u
#define STARTUP_DEADLINE_MS 15000

/* HUTCH_CREATE_TRACE=1: one line per started sandbox with the time each
 * step of its start took (docs/performance/create.md, "Create: where the time
 * goes"). Off by default: a clock read per step, nothing else. */
enum { TR_CREATE, TR_CGROUP, TR_WORK, TR_DISK, TR_LAUNCH, TR_DONE, TR_SETUP, TR_ATTACH, TR_NET, TR_READY, TR_N };
static const char *const tr_names[TR_N] = {"create", "cgroup", "queue", "disk", "launch", "back", "setup",
                                            "attach", "net", "init"};
static int trace_on = -1;

static void trace(struct sandbox *sb, int step)
{
    if (trace_on < 0)
        trace_on = getenv("HUTCH_CREATE_TRACE") != NULL;
    if (!trace_on)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sb->trace_ns[step] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void trace_print(struct sandbox *sb)
{
    if (trace_on <= 0)
        return;
    char line[400];
    size_t n = (size_t)snprintf(line, sizeof line, "create-trace %s%s (attach and net overlap init):", sb->id, sb->pooled ? " (pool)" : "");
    for (int i = 1; i < TR_N && n < sizeof line; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, " %s=%" PRIu64, tr_names[i],
                              sb->trace_ns[i] && sb->trace_ns[i - 1] ? (sb->trace_ns[i] - sb->trace_ns[i - 1]) / 1000 : 0);
    if (n < sizeof line)
        snprintf(line + n, sizeof line - n, " total=%" PRIu64 "us\n", (sb->trace_ns[TR_READY] - sb->trace_ns[TR_CREATE]) / 1000);
    fputs(line, stderr);
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct sandbox *sandbox_find(const char *id)
{
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next)
        if (strcmp(sb->id, id) == 0)
            return sb;
    return NULL;
}

static void workdir_path(const char *id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/sandboxes/%s", g_daemon.cfg->state_dir, id);
}

static int slot_alloc(uint32_t *slot)
{
    /* Capacity: the sandboxes users hold (--max-sandboxes) plus the warm pool. */
    for (uint32_t i = 0; i < g_daemon.cfg->max_sandboxes + g_daemon.cfg->warm_max; i++) {
        if (!g_daemon.slots[i]) {
            g_daemon.slots[i] = 1;
            *slot = i;
            return 0;
        }
    }
    return -EAGAIN;
}

void sandbox_on_handle_closed(uv_handle_t *h)
{
    struct sandbox *sb = h->data;
    if (--sb->open_handles > 0)
        return;
    json_decref(sb->labels);
    json_decref(sb->init_env);
    json_decref(sb->allow_net); /* net: */
    json_decref(sb->views_cpus); /* views: */
    procstats_free(sb);         /* metering: */
    sbstats_free(sb);           /* dashboard: */
    secrets_free(sb->secrets);  /* secrets: values zeroed */
    free(sb->rbuf);
    free(sb);
}

static void free_procs(struct sandbox *sb)
{
    while (sb->procs) {
        struct proc *p = sb->procs;
        sb->procs = p->next;
        while (p->waiters) {
            struct waiter *w = p->waiters;
            p->waiters = w->next;
            json_decref(w->rpc_id);
            free(w);
        }
        free(p);
    }
}

static void fail_calls(struct sandbox *sb)
{
    while (sb->calls) {
        struct pending_call *c = sb->calls;
        sb->calls = c->next;
        c->cb(sb, c->s, c->rpc_id, NULL, c->ud);
        json_decref(c->rpc_id);
        free(c);
    }
}

/* hutchd's cgroup lane: every sandbox's cgroup directories are made and
 * removed on this one thread, in order (a sandbox's removal always after
 * its making). A mkdir or rmdir of a cgroup waits for the host-wide
 * cgroup_mutex, for seconds when another process holds it across an RCU
 * grace period: on the loop that held every stream; on libuv's shared
 * workers it held the launches and plumbing queued behind it
 * (docs/performance/fairness.md). */
static struct hx_lane cg_lane;
/* HUTCH_TEST_CGROUP_GATE=PATH (tests only): a create's cgroup step waits
 * until PATH exists, as one waits for a cgroup_mutex another process holds
 * (tests/integration/test_create_path.py). */
static const char *cg_gate;

int sandbox_lanes_start(struct hx_err *e)
{
    cg_gate = getenv("HUTCH_TEST_CGROUP_GATE");
    int r = hx_lane_start(&cg_lane, g_daemon.loop, "hutchd-lane");
    return r < 0 ? hx_fail(e, -r, "cannot start the cgroup thread: %s", strerror(-r)) : 0;
}

void sandbox_lanes_stop(void)
{
    hx_lane_stop(&cg_lane);
}

#define SB_OF_CG_JOB(j) ((struct sandbox *)((char *)(j) - offsetof(struct sandbox, cg_job)))

/* Final step: the init is reaped; remove cgroups (retrying while the last
 * processes of the pid namespace exit), the scratch dir and the slot. */
static void teardown_finish(struct sandbox *sb);
static void teardown_rest(struct sandbox *sb);

static void on_teardown_retry(uv_timer_t *t);

/* Its layer's fds, its cgroups, then its veth: the last close of an image
 * frees its extents (seconds for one that wrote gigabytes), the others
 * wait for a host-wide lock (cgroup_mutex, rtnl_lock). The veth goes before
 * teardown_rest frees the slot, whose number is in its name. */
static void cg_destroy_work(struct hx_lane_job *j)
{
    struct sandbox *sb = SB_OF_CG_JOB(j);
    disk_layer_close(&sb->gone_disk); /* once: then its fds are -1 */
    sb->cg_rc = sb->cg_made ? cgroup_destroy(sb->id, &sb->cg_err) : 0;
    if (sb->cg_rc == -EBUSY)
        return; /* retried: the veth with the last try */
    if (sb->gone_link[0])
        net_link_remove(sb->gone_link, sb->id);
    sb->gone_link[0] = 0;
}

static void cg_destroy_done(struct hx_lane_job *j)
{
    struct sandbox *sb = SB_OF_CG_JOB(j);
    if (sb->cg_rc == -EBUSY && sb->teardown_tries++ < 200) {
        uv_timer_start(&sb->aux_timer, on_teardown_retry, 10, 0);
        return;
    }
    if (sb->cg_rc < 0)
        fprintf(stderr, "hutchd: %s: teardown: %s\n", sb->id, sb->cg_err.msg);
    sb->cg_made = false;
    teardown_rest(sb);
}

static void on_teardown_retry(uv_timer_t *t)
{
    struct sandbox *sb = t->data;
    hx_lane_queue(&cg_lane, &sb->cg_job, cg_destroy_work, cg_destroy_done);
}

/* Metering: what the sandbox used, from its cgroups before they go. */
static void record_usage(struct sandbox *sb)
{
    if (sb->usage_recorded || !sb->recorded)
        return;
    sb->usage_recorded = true;
    uint64_t mem = 0, peak = 0, cpu_ns = 0;
    cgroup_usage(sb->id, &mem, &peak, &cpu_ns);
    cpu_ns = cpu_ns > sb->cpu_base_ns ? cpu_ns - sb->cpu_base_ns : 0; /* metering: not its time in the pool */
    int64_t end = now_ms();
    struct usage_rec u = {.sandbox_id = sb->id, .org = sb->org, .start_ms = sb->created_ms, .end_ms = end,
                          .cpu_ms = cpu_ns / 1000000, .cpu_us = cpu_ns / 1000, .mem_peak_mb = (uint32_t)(peak >> 20)};
    net_sandbox_bytes(sb, &u.net_tx_bytes, &u.net_rx_bytes);
    struct hx_err e = {0};
    if (store_usage_add(g_daemon.store, &u, &e) < 0)
        fprintf(stderr, "hutchd: %s: usage: %s\n", sb->id, e.msg);
    printf("hutchd: %s stopped (%s) after %.1f s: cpu %" PRIu64 " ms, peak memory %u MiB\n", sb->id,
           sb->stop_reason[0] ? sb->stop_reason : "stopped", (double)(end - sb->created_ms) / 1000.0, u.cpu_ms,
           u.mem_peak_mb);
}

void sandbox_disk_release(struct sandbox *sb)
{
    if (sb->disk.dev_fd >= 0) {
        close(sb->disk.dev_fd); /* autoclear: the device goes with its last mount */
        sb->disk.dev_fd = -1;
    }
}

/* What the live layers may still write: each was promised its full size. */
static uint64_t disk_outstanding_mb(void)
{
    uint64_t sum = 0;
    for (struct sandbox *o = g_daemon.sandboxes; o; o = o->next) {
        if (!o->disk.promised_mb)
            continue;
        uint64_t used = disk_allocated_mb(o->disk.file_fd);
        sum += used < o->disk.promised_mb ? o->disk.promised_mb - used : 0;
    }
    return sum;
}

/* Set once a loop-backed disk could not be made (no loop devices here, no
 * mkfs.ext4): from then on writable layers are memory-backed tmpfs. */
static _Atomic bool disk_loop_off;

/* A sandbox fills only its own layer (ENOSPC), never the file system under
 * every layer and hutchd's database: a layer is made only while the free
 * space covers it and all that live layers may still grow by. Reads the
 * free space afresh, so space taken by others on that file system counts. */
static int disk_promise(uint32_t *promised_mb, bool headroom, struct hx_err *e)
{
    struct config *cfg = g_daemon.cfg;
    *promised_mb = 0;
    if (disk_loop_off)
        return 0; /* tmpfs layers live within the sandbox's memory limit */
    uint64_t avail, total;
    int r = disk_fs_space(cfg->disk_dir, &avail, &total, e);
    if (r < 0)
        return r;
    /* headroom: a pooled sandbox beyond --warm leaves room for one more */
    if ((r = disk_budget_check(avail, (uint64_t)cfg->disk_reserve_mb, disk_outstanding_mb(),
                               headroom ? cfg->disk_mb * 2 : cfg->disk_mb, cfg->disk_dir, e)) < 0)
        return r;
    *promised_mb = cfg->disk_mb;
    return 0;
}

/* hutchd holds 3 descriptors per idle sandbox (agent socket, pidfd, layer
 * image) and 1 per connected client, and a create opens up to 8 at its peak
 * (socketpair, pidfd, loop device, layer, cgroup and netlink files). Past
 * RLIMIT_NOFILE a create would fail half way with EMFILE, and so would the
 * accepts and file calls of the sandboxes already running: it is refused up
 * front instead, while FD_RESERVE are left for connections, files served and
 * the transient descriptors of other creates in flight. */
#define CREATE_FDS 8
#define FD_RESERVE 256
static int fd_room(struct hx_err *e)
{
    struct rlimit nofile;
    int open = hx_fds_open();
    if (open < 0 || getrlimit(RLIMIT_NOFILE, &nofile) < 0 || nofile.rlim_cur == RLIM_INFINITY)
        return 0; /* cannot tell: the create finds out itself */
    long limit = nofile.rlim_cur > (rlim_t)INT32_MAX ? INT32_MAX : (long)nofile.rlim_cur;
    if (hx_fds_room(open, limit, CREATE_FDS, FD_RESERVE) == 0)
        return 0;
    return hx_fail(e, EAGAIN, "no room for another sandbox: hutchd has %d of its %ld open files in use (3 per "
                   "sandbox, 1 per client); raise its limit (LimitNOFILE=) or lower --max-sandboxes", open, limit);
}

static void teardown_finish(struct sandbox *sb)
{
    record_usage(sb);
    /* The space comes back with the last mount and the last close, which
     * frees the image's extents inside close(2): on the lane, below. */
    sb->gone_disk = sb->disk;
    sb->disk.dev_fd = sb->disk.file_fd = -1;
    sb_storage_free(hx_steal(&sb->storage)); /* storage: sizes recorded, images let go */
    sb->disk.promised_mb = 0;
    if (!net_link_name(sb->net, sb->gone_link))
        sb->gone_link[0] = 0;
    if (sb->cg_made || sb->gone_link[0] || sb->gone_disk.dev_fd >= 0 || sb->gone_disk.file_fd >= 0) {
        /* teardown_rest once they are gone */
        hx_lane_queue(&cg_lane, &sb->cg_job, cg_destroy_work, cg_destroy_done);
        return;
    }
    teardown_rest(sb);
}

static void teardown_rest(struct sandbox *sb)
{
    struct hx_err e = {0};
    net_sandbox_detach(sb); /* net: policy out of the proxy, audit freed (the veth went on the lane) */
    secrets_free(sb->secrets); /* secrets: nobody needs the values any more */
    sb->secrets = NULL;
    restore_forget(sb->id); /* restore: its agent socket, kept secrets */
    char wd[4200];
    workdir_path(sb->id, wd, sizeof wd);
    if (rmdir(wd) < 0 && errno != ENOENT)
        fprintf(stderr, "hutchd: %s: rmdir %s: %s\n", sb->id, wd, strerror(errno));
    if (sb->recorded && store_sandbox_set_stopped(g_daemon.store, sb->id, now_ms(), &e) < 0)
        fprintf(stderr, "hutchd: %s: %s\n", sb->id, e.msg);
    g_daemon.slots[sb->slot] = 0;
    if (!sb->pooled)
        g_daemon.n_claimed--;
    pool_kick();
    for (struct sandbox **pp = &g_daemon.sandboxes; *pp; pp = &(*pp)->next) {
        if (*pp == sb) {
            *pp = sb->next;
            break;
        }
    }
    g_daemon.n_sandboxes--;
    sb->state = SB_STOPPED;
    uv_close((uv_handle_t *)&sb->stop_timer, sandbox_on_handle_closed);
    uv_close((uv_handle_t *)&sb->aux_timer, sandbox_on_handle_closed);
    if (sb->poll_init)
        uv_close((uv_handle_t *)&sb->pidfd_poll, sandbox_on_handle_closed);
}

static void reap_init(struct sandbox *sb)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    /* P_PIDFD: reaps exactly our child, never another process. */
    if (waitid(P_PIDFD, (id_t)sb->pidfd, &si, WEXITED | WNOHANG) < 0 && errno != ECHILD)
        fprintf(stderr, "hutchd: %s: waitid: %s\n", sb->id, strerror(errno));
    uv_poll_stop(&sb->pidfd_poll);
}

static void watch_init(struct sandbox *sb);

static void init_exited(struct sandbox *sb);

static void on_init_exit(uv_poll_t *h, int status, int events)
{
    struct sandbox *sb = h->data;
    if (sb->plumbing) { /* its worker still uses the pidfd and sb: plumb_done finishes this */
        uv_poll_stop(&sb->pidfd_poll);
        sb->exit_seen = true;
        return;
    }
    init_exited(sb);
}

static void init_exited(struct sandbox *sb)
{
    if (sb->state < SB_STOPPING)
        sandbox_stop(sb, "the sandbox's init process exited");
    reap_init(sb);
    /* Its poll handle closes before its fd does: closed later (the teardown
     * waits for the cgroup lane), it would take the fd's number out of
     * epoll after another handle reused it, and libuv aborts on that. */
    if (sb->poll_init) {
        sb->poll_init = false;
        uv_close((uv_handle_t *)&sb->pidfd_poll, sandbox_on_handle_closed);
    }
    close(sb->pidfd);
    sb->pidfd = -1;
    sb->teardown_tries = 0;
    uv_timer_stop(&sb->aux_timer);
    teardown_finish(sb);
}

void sandbox_stop(struct sandbox *sb, const char *reason)
{
    if (sb->state >= SB_STOPPING)
        return;
    bool was_starting = sb->state == SB_STARTING;
    sb->state = SB_STOPPING;
    expose_sandbox_stopped(sb); /* expose: its URLs answer 404 from now on */
    deploy_sandbox_stopped(sb); /* apps: a build or an app instance ends */
    deno_sandbox_stopped(sb); /* deno: REPL channels and their listener close */
    snprintf(sb->stop_reason, sizeof sb->stop_reason, "%s", reason);
    /* Listed as stopped from now on, even while the teardown finishes. */
    struct hx_err se = {0};
    if (sb->recorded && store_sandbox_set_stopped(g_daemon.store, sb->id, now_ms(), &se) < 0)
        fprintf(stderr, "hutchd: %s: %s\n", sb->id, se.msg);
    uv_timer_stop(&sb->stop_timer);
    uv_timer_stop(&sb->aux_timer);
    if (was_starting && sb->ready_cb) {
        struct hx_err e;
        hx_fail(&e, EIO, "sandbox %s failed to start: %s", sb->id, reason);
        sandbox_ready_cb cb = sb->ready_cb;
        sb->ready_cb = NULL;
        cb(NULL, &e, sb->ready_ud);
    }
    fail_calls(sb);
    while (sb->sessions) {
        struct session *s = sb->sessions;
        sb->sessions = s->next;
        s->sb = NULL;
        rpc_session_closed_by_sandbox(s, reason);
    }
    free_procs(sb);
    if (sb->agent_open) {
        sb->agent_open = false;
        uv_close((uv_handle_t *)&sb->agent, sandbox_on_handle_closed);
    }
    /* SIGKILL to PID 1 of the pid namespace kills every process in it.
     * (While launching, launch_done does it once the pidfd exists.) */
    if (!sb->launching && sb->pidfd >= 0 && syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
        fprintf(stderr, "hutchd: %s: pidfd_send_signal: %s\n", sb->id, strerror(errno));
}

static void on_stop_timer(uv_timer_t *t)
{
    sandbox_stop(t->data, "the sandbox's timeout expired");
}

void sandbox_set_stop_at(struct sandbox *sb, int64_t stop_at_ms)
{
    sb->stop_at_ms = stop_at_ms;
    restore_deadline_changed(sb); /* restore: its agent stops waiting for us at that time */
    if (stop_at_ms <= 0) {
        uv_timer_stop(&sb->stop_timer);
        return;
    }
    int64_t d = stop_at_ms - now_ms();
    uv_timer_start(&sb->stop_timer, on_stop_timer, d > 0 ? (uint64_t)d : 0, 0);
}

static void on_startup_deadline(uv_timer_t *t)
{
    struct sandbox *sb = t->data;
    if (sb->state == SB_STARTING)
        sandbox_stop(sb, "the sandbox did not become ready in time");
}

void sandbox_session_attach(struct sandbox *sb, struct session *s)
{
    s->sb = sb;
    s->next = sb->sessions;
    sb->sessions = s;
    if (sb->stop_at_ms == 0 && sb->state == SB_RUNNING)
        uv_timer_stop(&sb->stop_timer); /* restore: an adopted session sandbox got a connection back */
}

void sandbox_session_detach(struct session *s)
{
    struct sandbox *sb = s->sb;
    if (!sb)
        return;
    for (struct session **pp = &sb->sessions; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    for (struct pending_call *c = sb->calls; c; c = c->next)
        if (c->s == s)
            c->s = NULL;
    for (struct proc *p = sb->procs; p; p = p->next) {
        if (p->owner == s)
            p->owner = NULL;
        for (struct waiter *w = p->waiters; w; w = w->next)
            if (w->s == s)
                w->s = NULL;
    }
    s->sb = NULL;
    if (!sb->sessions && sb->stop_at_ms == 0 && sb->state == SB_RUNNING)
        sandbox_stop(sb, "the last connection of a session sandbox closed");
}

/* Called by the agent layer when HX_READY arrives. */
void sandbox_on_ready(struct sandbox *sb, json_t *msg)
{
    if (sb->state != SB_STARTING)
        return;
    json_t *err = json_object_get(msg, "error");
    if (err || !json_is_true(json_object_get(msg, "ok"))) {
        const char *m = json_string_value(json_object_get(err, "message"));
        char reason[200];
        snprintf(reason, sizeof reason, "setup failed: %.150s", m ? m : "malformed ready message");
        sandbox_stop(sb, reason);
        return;
    }
    uv_timer_stop(&sb->aux_timer);
    trace(sb, TR_READY);
    trace_print(sb);
    sandbox_disk_release(sb); /* mounted now: the mount holds the loop device */
    disk_drop_file_cache(&sb->disk);
    sb_storage_mounted(sb->storage); /* storage: likewise for volumes */
    sb->state = SB_RUNNING;
    sandbox_views_sync(sb); /* views: lxcfs died or came back during its setup */
    cgroup_oom_kills(sb->id, &sb->oom_seen);
    sandbox_set_stop_at(sb, sb->stop_at_ms);
    sandbox_ready_cb cb = sb->ready_cb;
    sb->ready_cb = NULL;
    if (cb)
        cb(sb, NULL, sb->ready_ud);
}


static void launch_work(uv_work_t *req)
{
    struct sandbox *sb = req->data;
    trace(sb, TR_WORK);
    if (sb->storage && (sb->launch_rc = sb_storage_attach(sb->storage, &sb->launch_err)) < 0)
        return; /* storage: volumes on loop devices */
    if (sb->disk.promised_mb) {
        struct hx_err de = {0};
        int r = disk_prepare(g_daemon.cfg->disk_dir, sb->id, sb->disk.promised_mb, &sb->disk, &de);
        if (r == -ENOENT || r == -ENODEV || r == -ENXIO) {
            if (!disk_loop_off) {
                disk_loop_off = true;
                fprintf(stderr, "hutchd: writable layers fall back to memory (tmpfs): %s\n", de.msg);
            }
        } else if (r < 0) { /* this sandbox's failure (no free loop device, mkfs ran out of space, ...) */
            sb->launch_err = de;
            sb->launch_rc = r;
            return;
        }
    }
    trace(sb, TR_DISK);
    /* views: lxcfs's files cloned here from fds held open, so that
     * hutch-init looks nothing up through lxcfs (views.h) */
    int vt[HX_VIEW_N];
    struct hx_err ve = {0};
    static _Atomic bool vt_told;
    if (views_clone_trees(vt, &sb->launch_views_gen, &ve) < 0 && !vt_told) {
        vt_told = true; /* hutch-init binds them by path, as before */
        fprintf(stderr, "hutchd: %s: %s; hutch-init binds lxcfs's files by their path\n", sb->id, ve.msg);
    }
    struct launch_spec ls = {.id = sb->id, .uid_base = sb->uid_base, .uid_count = UID_COUNT,
                             .init_memfd = g_daemon.init_memfd, .restore_fd = sb->restore.launch_fd,
                             .root_tree_fd = sb_storage_root_tree(sb->storage),
                             .view_trees = sb->launch_views_gen ? vt : NULL};
    /* v1: this thread steps into the sandbox's cgroups for the clone, so
     * hutch-init starts in them (its own move costs no grace period, a
     * cgroup.procs write does: ~10 ms). Else plumb_work attaches it. */
    struct cgroup_home home;
    struct hx_err ce = {0};
    sb->cg_entered = cgroup_enter(sb->id, &home, &ce) == 0;
    sb->launch_rc = sandbox_launch(&ls, &sb->launch_fd, &sb->pid, &sb->pidfd, &sb->launch_err);
    if (sb->cg_entered && cgroup_leave(&home, &ce) < 0)
        fprintf(stderr, "hutchd: %s: a worker thread could not leave its cgroups: %s\n", sb->id, ce.msg);
    for (int i = 0; sb->launch_views_gen && i < HX_VIEW_N; i++)
        close(vt[i]); /* hutch-init has its own */
    trace(sb, TR_LAUNCH);
}

/* On a worker thread, while hutch-init builds its root (HX_SETUP said
 * "hold"): its pid into its cgroups, the OOM shield, its veth. hutch-init
 * waits for HX_GO before it enters its cgroup namespace and says ready, so
 * nothing of the sandbox's runs outside its cgroups or before its network.
 * The cgroup attach may wait ~10 ms for an RCU grace period on v1
 * (docs/performance/create.md); overlapped with hutch-init's own set-up, a create
 * no longer waits for it and for the netlink round trips in turn. Touches
 * sb's plumb fields and reads what nobody changes meanwhile (id, pid,
 * pidfd, net: on_init_exit waits for plumb_done). */
static void plumb_work(uv_work_t *req)
{
    struct sandbox *sb = req->data;
    if (!sb->cg_entered && (sb->plumb_rc = cgroup_attach(sb->id, sb->pid, &sb->plumb_err)) < 0)
        return;
    /* The OOM killer takes the sandbox's processes, never its agent (spawn
     * puts its children back to 0). */
    char oom[64];
    snprintf(oom, sizeof oom, "/proc/%d/oom_score_adj", (int)sb->pid);
    int ofd = open(oom, O_WRONLY | O_CLOEXEC);
    if (ofd >= 0) {
        static _Atomic bool warned; /* needs CAP_SYS_RESOURCE, which some hosts withhold */
        if (write(ofd, "-1000", 5) != 5 && !warned) {
            warned = true;
            fprintf(stderr, "hutchd: cannot shield hutch-init from the OOM killer (oom_score_adj: %s)\n",
                    strerror(errno));
        }
        close(ofd);
    }
    /* The agent's wake-ups (a command arriving, a child's output or exit)
     * run ahead of other sandboxes' busy loops; its children, the
     * sandbox's own code, start at the kernel's default (reset on fork). */
    if (g_daemon.cfg->control_slice_us) {
        struct hx_err se = {0};
        static _Atomic bool slice_warned;
        if (sched_control_slice(sb->pid, g_daemon.cfg->control_slice_us, &se) < 0 && !slice_warned) {
            slice_warned = true;
            fprintf(stderr, "hutchd: agents keep the kernel's default slice: %s\n", se.msg);
        }
    }
    trace(sb, TR_ATTACH);
    if (sb->net) /* net: veth + addresses + routes, before the sandbox runs anything */
        sb->plumb_rc = net_sandbox_plumb(sb->net, sb->pid, sb->pidfd, &sb->plumb_err);
    trace(sb, TR_NET);
}

static void plumb_done(uv_work_t *req, int status)
{
    struct sandbox *sb = req->data;
    sb->plumbing = false;
    if (sb->exit_seen) { /* PID 1 is gone: what on_init_exit put off */
        init_exited(sb);
        return;
    }
    if (sb->state >= SB_STOPPING)
        return; /* killed already: on_init_exit tears down */
    if (sb->plumb_rc < 0 || status < 0) {
        sandbox_stop(sb, sb->plumb_rc < 0 ? sb->plumb_err.msg : "could not attach its cgroups");
        return;
    }
    if (agent_send(sb, HX_GO, 0, NULL, 0) < 0)
        sandbox_stop(sb, "could not send the go-ahead");
}

/* disk: the next writable layers made ahead, by one worker at a time, off
 * every create's path (disk.h, disk_stash_fill). */
static uv_work_t stash_req;
static bool stash_busy;

static void stash_work(uv_work_t *req)
{
    (void)req;
    struct hx_err e = {0};
    static _Atomic bool told;
    if (disk_stash_fill(g_daemon.cfg->disk_dir, g_daemon.cfg->disk_mb, &e) < 0 && !told) {
        told = true; /* creates make their layers themselves, as before */
        fprintf(stderr, "hutchd: writable layers are not made ahead: %s\n", e.msg);
    }
}

static void stash_kick(void);

static void stash_done(uv_work_t *req, int status)
{
    (void)req;
    stash_busy = false;
    if (status == 0)
        stash_kick(); /* the next one, unless full or shutting down */
}

static void stash_kick(void)
{
    if (stash_busy || disk_loop_off || g_daemon.shutting_down ||
        !disk_stash_wanted(g_daemon.cfg->disk_dir, g_daemon.cfg->disk_mb))
        return;
    stash_busy = true;
    uv_queue_work(g_daemon.loop, &stash_req, stash_work, stash_done);
}

/* Back on the loop: the record, the agent, the policy, HX_SETUP, then the
 * cgroups and the veth on a worker (plumb_work) while hutch-init sets up. */
static void launch_done(uv_work_t *req, int status)
{
    struct sandbox *sb = req->data;
    struct config *cfg = g_daemon.cfg;
    struct hx_err e = {0};
    trace(sb, TR_DONE);
    sb->launching = false;
    if (sb->restore.launch_fd >= 0) { /* restore: hutch-init has its own copy */
        close(sb->restore.launch_fd);
        sb->restore.launch_fd = -1;
    }
    sb->disk.on_loop = sb->disk.dev_fd >= 0;
    if (!sb->disk.on_loop)
        sb->disk.promised_mb = 0; /* a tmpfs layer takes no disk */
    else
        stash_kick(); /* the next create's layer, while this one starts */
    if (sb->launch_rc < 0 || status < 0) {
        sb->pidfd = -1;
        if (sb->state < SB_STOPPING)
            sandbox_stop(sb, sb->launch_err.msg[0] ? sb->launch_err.msg : "launch failed");
        teardown_finish(sb);
        return;
    }
    watch_init(sb);
    if (sb->state >= SB_STOPPING) { /* stopped while launching: kill it, reap it, tear down */
        close(sb->launch_fd);
        syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
        return;
    }
    int r;
    if (!sb->pooled)
        sandbox_record(sb);
    if ((r = agent_start(sb, sb->launch_fd, &e)) < 0) {
        sandbox_stop(sb, e.msg);
        return;
    }
    /* hutch-init cannot raise the hard limit above hutchd's own. */
    struct rlimit nofile;
    uint64_t nofile_max = 65536;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_max < nofile_max)
        nofile_max = nofile.rlim_max;
    /* net: the policy to the proxy (the veth comes with plumb_work) */
    json_t *setup_net = NULL;
    if ((r = net_sandbox_attach(sb, &setup_net, &e)) < 0) {
        sandbox_stop(sb, e.msg);
        return;
    }
    const char *ca = json_string_value(json_object_get(setup_net, "ca"));
    if (ca) { /* secrets: the bundle as a shared layer, not a copy per sandbox (ca_layer.h) */
        static bool told;
        struct hx_err ce = {0};
        const char *layer = ca_layer_get(cfg->state_dir, g_daemon.image_root, ca, &ce);
        if (layer)
            json_object_set_new(setup_net, "ca_layer", json_string(layer));
        else if (!told) {
            told = true;
            fprintf(stderr, "hutchd: %s; sandboxes get a copy of the CA bundle instead\n", ce.msg);
        }
    }
    char wd[4200];
    workdir_path(sb->id, wd, sizeof wd);
    json_t *setup = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:O}",
        "id", sb->id, "hostname", "sandbox", "image", g_daemon.image_root, "workdir", wd,
        "uid_base", (json_int_t)sb->uid_base, "uid_count", (json_int_t)UID_COUNT,
        "disk_mb", (json_int_t)sandbox_disk_mb(sb), "pids_max", (json_int_t)cfg->pids_max,
        "nofile", (json_int_t)nofile_max, "env", sb->init_env);
    if (setup_net)
        json_object_set_new(setup, "net", setup_net); /* net: */
    if (sb->disk.on_loop)
        json_object_set_new(setup, "disk_dev", json_string(sb->disk.dev));
    if (cfg->sandbox_slice_us) /* every process the agent spawns asks for it (spawn.c) */
        json_object_set_new(setup, "slice_us", json_integer(cfg->sandbox_slice_us));
    const char *vsl = vscode_layer_ready();
    if (vsl) /* a read-only bind at /opt/hutch/vscode (vscode.c) */
        json_object_set_new(setup, "vscode_layer", json_string(vsl));
    sb_storage_setup(sb->storage, setup); /* storage: */
    json_object_set_new(setup, "views", sandbox_views_setup(sb)); /* views: lxcfs, CPU affinity */
    json_t *rs = restore_setup();
    if (rs)
        json_object_set_new(setup, "restore", rs); /* restore: wait for a returning hutchd */
    json_object_set_new(setup, "hold", json_true()); /* wait for HX_GO (plumb_done) before entering the cgroup ns */
    char cg_agent[700], cg_user[700];
    if (cgroup_agent_cpu_paths(sb->id, cg_agent, sizeof cg_agent, cg_user, sizeof cg_user) == 0)
        /* hutch-init moves itself to the agents' cpu cgroup once its cgroup
         * ns is made, and each child it spawns back to the sandbox's */
        json_object_set_new(setup, "cpu_cgroup", json_pack("{s:s, s:s}", "agent", cg_agent, "user", cg_user));
    char *text = json_dumps(setup, JSON_COMPACT);
    json_decref(setup);
    r = text ? agent_send(sb, HX_SETUP, 0, text, strlen(text)) : -ENOMEM;
    free(text);
    if (r < 0) {
        sandbox_stop(sb, "could not send the setup message");
        return;
    }
    trace(sb, TR_SETUP);
    uv_timer_start(&sb->aux_timer, on_startup_deadline, STARTUP_DEADLINE_MS, 0);
    sb->plumbing = true;
    sb->plumb_req.data = sb;
    uv_queue_work(g_daemon.loop, &sb->plumb_req, plumb_work, plumb_done);
}

/* On a host without loop devices the writable layer is a tmpfs whose pages
 * count toward the sandbox's memory limit: past about 3/4 of it, a full
 * disk would OOM-kill the sandbox instead of failing with ENOSPC. */
uint32_t sandbox_disk_mb(const struct sandbox *sb)
{
    if (sb->disk.on_loop)
        return sb->disk.promised_mb; /* on its own ext4 image */
    uint32_t by_memory = sb->memory_mb / 4 * 3;
    return g_daemon.cfg->disk_mb < by_memory ? g_daemon.cfg->disk_mb : by_memory;
}

/* The sandbox's row in the store: written when a user gets it. */
void sandbox_record(struct sandbox *sb)
{
    struct config *cfg = g_daemon.cfg;
    sb->recorded = true;
    printf("hutchd: %s created for organization \"%s\" (%u MiB, %s)\n", sb->id, sb->org, sb->memory_mb,
           sb->stop_at_ms ? "until its timeout" : "while connected");
    struct sandbox_rec rec = {0};
    snprintf(rec.id, sizeof rec.id, "%s", sb->id);
    snprintf(rec.org, sizeof rec.org, "%s", sb->org);
    snprintf(rec.region, sizeof rec.region, "%s", cfg->node);
    rec.created_ms = sb->created_ms;
    rec.stop_at_ms = sb->stop_at_ms;
    rec.memory_mb = sb->memory_mb;
    rec.uid_base = sb->uid_base;
    rec.init_pid = sb->pid;
    rec.labels = sb->labels;
    struct hx_err se = {0};
    if (store_sandbox_insert(g_daemon.store, &rec, &se) < 0)
        fprintf(stderr, "hutchd: %s: %s\n", sb->id, se.msg);
    restore_keep(sb); /* restore: what the next hutchd needs to adopt it */
}

int sandbox_cpu_millis(const json_t *labels, uint32_t *out, struct hx_err *e)
{
    uint32_t max = g_daemon.cfg->cpu_millis;
    const char *v = json_string_value(json_object_get(labels, SANDBOX_CPU_LABEL));
    *out = max;
    if (!v)
        return 0;
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (!*v || *v < '0' || *v > '9' || *end || errno || n < 10 || n > max)
        return hx_fail(e, EINVAL, "label %s must be a whole number of thousandths of a CPU, 10 to %u (this hutchd's "
                       "--cpu-millis)", SANDBOX_CPU_LABEL, max);
    *out = (uint32_t)n;
    return 0;
}

/* On the cgroup lane: the sandbox's cgroups and their limits. */
static void cg_create_work(struct hx_lane_job *j)
{
    struct sandbox *sb = SB_OF_CG_JOB(j);
    while (cg_gate && access(cg_gate, F_OK) != 0)
        usleep(10000);
    struct cgroup_limits lim = {.memory_bytes = (uint64_t)sb->memory_mb << 20, .cpu_millis = sb->cpu_millis,
                                .pids_max = g_daemon.cfg->pids_max, .cpus = sb->cg_cpus};
    sb->cg_rc = cgroup_create(sb->id, &lim, &sb->cg_err);
}

/* Back on the loop: the launch on a libuv worker (launch_work, launch_done). */
static void cg_create_done(struct hx_lane_job *j)
{
    struct sandbox *sb = SB_OF_CG_JOB(j);
    free(sb->cg_cpus);
    sb->cg_cpus = NULL;
    trace(sb, TR_CGROUP);
    if (sb->cg_rc < 0 || sb->state >= SB_STOPPING) { /* failed, or stopped while it waited */
        sb->launching = false;
        if (sb->state < SB_STOPPING)
            sandbox_stop(sb, sb->cg_err.msg);
        teardown_finish(sb);
        return;
    }
    /* The clone of a new pid+net+mount namespace, its cgroup attach and its
     * veth take milliseconds of kernel time; done on worker threads
     * (launch_work, then plumb_work), they stall no other sandbox's
     * streams. The workers write only sb's launch and plumb fields. */
    sb->launch_req.data = sb;
    uv_queue_work(g_daemon.loop, &sb->launch_req, launch_work, launch_done);
}

int sandbox_create(const struct sandbox_params *p, sandbox_ready_cb cb, void *ud, struct hx_err *e)
{
    struct config *cfg = g_daemon.cfg;
    if (g_daemon.shutting_down)
        return hx_fail(e, ESHUTDOWN, "hutchd is shutting down");
    uint32_t slot;
    if (!p->pooled && g_daemon.n_claimed >= cfg->max_sandboxes)
        return hx_fail(e, EAGAIN, "this node runs its maximum of %u sandboxes", cfg->max_sandboxes);
    int r = fd_room(e);
    if (r < 0)
        return r;
    uint32_t disk_mb;
    r = disk_promise(&disk_mb, p->pooled && p->pool_extra, e);
    if (r < 0)
        return r;
    if (slot_alloc(&slot) < 0)
        return hx_fail(e, EAGAIN, "this node runs its maximum of %u sandboxes", cfg->max_sandboxes);
    struct sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        g_daemon.slots[slot] = 0;
        return hx_fail(e, ENOMEM, "out of memory");
    }
    if (hx_sandbox_id_new(cfg->node, sb->id) < 0) {
        g_daemon.slots[slot] = 0;
        free(sb);
        return hx_fail(e, EIO, "could not draw a sandbox id");
    }
    snprintf(sb->org, sizeof sb->org, "%s", p->org);
    sb->slot = slot;
    sb->uid_base = UID_BASE0 + slot * UID_COUNT;
    sb->pidfd = -1;
    sb->restore.launch_fd = -1;
    sb->disk.dev_fd = sb->disk.file_fd = -1;
    sb->disk.promised_mb = disk_mb; /* counted from here: a concurrent create sees it */
    sb->memory_mb = p->memory_mb;
    sb->cpu_millis = p->cpu_millis ? p->cpu_millis : cfg->cpu_millis;
    sb->stop_at_ms = p->stop_at_ms;
    sb->pooled = p->pooled;
    if (!sb->pooled)
        g_daemon.n_claimed++;
    sb->created_ms = now_ms();
    sb->labels = p->labels ? json_deep_copy(p->labels) : json_object();
    sb->init_env = p->env ? json_deep_copy(p->env) : json_object();
    sb->allow_net = p->allow_net && !json_is_null(p->allow_net) ? json_deep_copy(p->allow_net) : NULL; /* net: */
    if (p->secrets) { /* secrets: every process starts with the placeholders */
        json_t *ph = secrets_env(p->secrets);
        json_object_update(sb->init_env, ph);
        json_decref(ph);
    }
    sb->ready_cb = cb;
    sb->ready_ud = ud;
    sb->next_req = 1;
    sb->state = SB_STARTING;
    trace(sb, TR_CREATE);
    uv_timer_init(g_daemon.loop, &sb->stop_timer);
    uv_timer_init(g_daemon.loop, &sb->aux_timer);
    sb->stop_timer.data = sb->aux_timer.data = sb;
    sb->open_handles = 2; /* stop_timer, aux_timer; pidfd_poll once launched */

    char wd[4200];
    workdir_path(sb->id, wd, sizeof wd);
    sb->views_cpus = views_pick_cpus(sb->cpu_millis); /* views: as many CPUs as its quota */
    if (mkdir(wd, 0700) < 0) {
        r = hx_fail(e, errno, "mkdir %s: %m", wd);
        goto fail_early;
    }
    int rfd = restore_bind(sb->id, e); /* restore: -1 when live restore is off */
    if (rfd < -1) {
        r = rfd;
        goto fail_early;
    }
    sb->restore.launch_fd = rfd;
    sb->secrets = p->secrets; /* secrets: the net state borrows them; moved below */
    if ((r = net_sandbox_prepare(sb, e)) < 0) { /* net: whether it gets a veth (made by launch_work) */
        sb->secrets = NULL; /* still the caller's */
        goto fail_early;
    }
    sb->next = g_daemon.sandboxes;
    g_daemon.sandboxes = sb;
    g_daemon.n_sandboxes++;
    sb->secrets = p->secrets; /* secrets: moved (the caller forgets them on success) */
    sb->storage = p->storage; /* storage: moved likewise */
    sb->restore.no_adopt = p->no_adopt;
    /* Its cgroups on the cgroup lane, then the launch (cg_create_done). A
     * stop meanwhile waits for the lane, as for a launch. */
    sb->cg_cpus = views_cpus_list(sb->views_cpus);
    sb->cg_made = true;
    sb->launching = true;
    hx_lane_queue(&cg_lane, &sb->cg_job, cg_create_work, cg_create_done);
    return 0;

fail_early:
    net_sandbox_forget(sb); /* net: nothing made yet but its state */
    if (sb->restore.launch_fd >= 0)
        close(sb->restore.launch_fd);
    restore_forget(sb->id);
    rmdir(wd);
    g_daemon.slots[slot] = 0;
    if (!sb->pooled)
        g_daemon.n_claimed--;
    json_decref(sb->labels);
    json_decref(sb->init_env);
    json_decref(sb->allow_net); /* net: */
    sb->allow_net = NULL;
    /* two timers to close, then sb is freed */
    sb->open_handles = 2;
    sb->labels = sb->init_env = NULL;
    uv_close((uv_handle_t *)&sb->stop_timer, sandbox_on_handle_closed);
    uv_close((uv_handle_t *)&sb->aux_timer, sandbox_on_handle_closed);
    return r;
}

static void cleanup_stale_cgroup(const char *id, void *ud)
{
    (void)ud;
    if (sandbox_find(id))
        return;
    struct hx_err e = {0};
    for (int i = 0; i < 500; i++) {
        int r = cgroup_destroy(id, &e);
        if (r != -EBUSY)
            break;
        usleep(2000);
    }
    restore_forget(id); /* restore: its agent socket, kept secrets */
    char wd[4200];
    workdir_path(id, wd, sizeof wd);
    rmdir(wd);
}

static int mark_stale_stopped(const struct sandbox_rec *r, void *ud)
{
    (void)ud;
    if (sandbox_find(r->id))
        return 0; /* restore: adopted */
    fprintf(stderr, "hutchd: sandbox %s was running when hutchd stopped; removing it\n", r->id);
    cleanup_stale_cgroup(r->id, NULL);
    struct hx_err e = {0};
    store_sandbox_set_stopped(g_daemon.store, r->id, now_ms(), &e);
    return 0;
}

void sandbox_cleanup_stale(void)
{
    struct hx_err e = {0};
    /* hutch-init exits when its socket to hutchd closes, killing its pid
     * namespace; what can remain are cgroups, scratch dirs and records. */
    store_sandbox_each_running(g_daemon.store, mark_stale_stopped, NULL, &e);
    cgroup_each(cleanup_stale_cgroup, NULL);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/sandboxes", g_daemon.cfg->state_dir);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "sbx_", 4) == 0 && !sandbox_find(de->d_name)) {
            char p[4500];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (hx_sandbox_id_valid(de->d_name))
                restore_forget(de->d_name);
            rmdir(p);
        }
    }
    closedir(d);
}

void sandbox_stop_all(void)
{
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next)
        sandbox_stop(sb, "hutchd is shutting down");
}

/* ---- restore: adoption and release (core/restore.c decides) ------------- */

static void watch_init(struct sandbox *sb)
{
    uv_poll_init(g_daemon.loop, &sb->pidfd_poll, sb->pidfd);
    sb->pidfd_poll.data = sb;
    sb->poll_init = true;
    sb->open_handles++;
    uv_poll_start(&sb->pidfd_poll, UV_READABLE, on_init_exit);
}

struct sandbox *sandbox_adopt(const struct sandbox_rec *rec, uint32_t slot, int pidfd, struct hx_err *e)
{
    struct sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        hx_fail(e, ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(sb->id, sizeof sb->id, "%s", rec->id);
    snprintf(sb->org, sizeof sb->org, "%s", rec->org);
    sb->slot = slot;
    g_daemon.slots[slot] = 1;
    sb->uid_base = rec->uid_base;
    sb->pid = rec->init_pid;
    sb->pidfd = pidfd;
    sb->restore.launch_fd = -1;
    sb->disk.dev_fd = sb->disk.file_fd = -1;
    sb->memory_mb = rec->memory_mb;
    sb->stop_at_ms = rec->stop_at_ms;
    sb->created_ms = rec->created_ms;
    sb->labels = rec->labels ? json_deep_copy(rec->labels) : json_object();
    struct hx_err ce = {0};
    if (sandbox_cpu_millis(sb->labels, &sb->cpu_millis, &ce) < 0) /* what its cgroup was given at create */
        sb->cpu_millis = g_daemon.cfg->cpu_millis;
    sb->init_env = json_object();
    sb->next_req = 1;
    sb->state = SB_STARTING;
    sb->restore.adopting = true;
    sb->recorded = true;
    sb->cg_made = true; /* its cgroups are the previous hutchd's */
    g_daemon.n_claimed++;
    uv_timer_init(g_daemon.loop, &sb->stop_timer);
    uv_timer_init(g_daemon.loop, &sb->aux_timer);
    sb->stop_timer.data = sb->aux_timer.data = sb;
    sb->open_handles = 2;
    sb->next = g_daemon.sandboxes;
    g_daemon.sandboxes = sb;
    g_daemon.n_sandboxes++;
    watch_init(sb);
    return sb;
}

void sandbox_release(struct sandbox *sb, const char *reason)
{
    if (sb->state >= SB_STOPPING)
        return;
    sb->state = SB_STOPPING;
    expose_sandbox_stopped(sb);
    uv_timer_stop(&sb->stop_timer);
    uv_timer_stop(&sb->aux_timer);
    fail_calls(sb);
    while (sb->sessions) {
        struct session *s = sb->sessions;
        sb->sessions = s->next;
        s->sb = NULL;
        rpc_session_closed_by_sandbox(s, reason);
    }
    free_procs(sb);
    if (sb->agent_open) { /* hutch-init reads EOF and waits for the next hutchd */
        sb->agent_open = false;
        uv_close((uv_handle_t *)&sb->agent, sandbox_on_handle_closed);
    }
    if (sb->poll_init) {
        uv_poll_stop(&sb->pidfd_poll);
        uv_close((uv_handle_t *)&sb->pidfd_poll, sandbox_on_handle_closed);
    }
    if (sb->pidfd >= 0)
        close(sb->pidfd);
    sb->pidfd = -1;
    net_sandbox_forget(sb); /* its veth and addresses stay, for the next hutchd */
    disk_layer_close(&sb->disk);
    sb_storage_free(hx_steal(&sb->storage));
    g_daemon.slots[sb->slot] = 0;
    g_daemon.n_claimed--;
    for (struct sandbox **pp = &g_daemon.sandboxes; *pp; pp = &(*pp)->next) {
        if (*pp == sb) {
            *pp = sb->next;
            break;
        }
    }
    g_daemon.n_sandboxes--;
    printf("hutchd: %s left running for the next hutchd\n", sb->id);
    uv_close((uv_handle_t *)&sb->stop_timer, sandbox_on_handle_closed);
    uv_close((uv_handle_t *)&sb->aux_timer, sandbox_on_handle_closed);
}
