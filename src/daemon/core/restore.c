/* Live restore: what a sandbox leaves for the next hutchd, and the adoption
 * of what a previous hutchd left running (docs/restore.md). Nothing read
 * back is trusted: the row says which pid to look at, the kernel says
 * whether that pid is still the PID 1 we launched, and the agent's words
 * after the reconnect are checked like any other agent message. */
#include "daemon/core/restore.h"
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include "daemon/core/sandbox.h"
#include "daemon/core/expose.h"
#include "daemon/core/volumes.h"
#include "daemon/net/net.h"
#include "daemon/net/secrets.h"
#include "daemon/sandbox/cgroup.h"
#include "daemon/store/store.h"
#include "lib/strparse.h"

#define ADOPT_DEADLINE_MS 10000  /* from the reconnect to the agent's hello */
#define SESSION_GRACE_MS 10000   /* an adopted session sandbox waits this long for a connection */
#define UID_BASE0 1000000000u    /* as lifecycle.c */
#define UID_COUNT 65536u

static bool left_running;

static bool enabled(void)
{
    return g_daemon.cfg->live_restore_s > 0;
}

void restore_agent_path(const char *id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/sandboxes/%s/agent.sock", g_daemon.cfg->state_dir, id);
}

static void key_desc(const char *id, char *out, size_t cap)
{
    snprintf(out, cap, "hutch:%s:%s", g_daemon.cfg->cgroup_name, id);
}

static int sockaddr_for(const char *id, struct sockaddr_un *sa, struct hx_err *e)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    char path[4200];
    restore_agent_path(id, path, sizeof path);
    if (strlen(path) >= sizeof sa->sun_path)
        return hx_fail(e, ENAMETOOLONG, "live restore: %s is longer than a unix socket path may be", path);
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return 0;
}

int restore_bind(const char *id, struct hx_err *e)
{
    if (!enabled())
        return -1;
    struct sockaddr_un sa;
    int r = sockaddr_for(id, &sa, e);
    if (r < 0)
        return r;
    autoclose int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hx_fail(e, errno, "socket: %m");
    unlink(sa.sun_path);
    /* in the scratch dir (0700 root): only root on the host reaches it */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return hx_fail(e, errno, "bind %s: %m", sa.sun_path);
    chmod(sa.sun_path, 0600);
    return hx_steal_fd(&fd);
}

json_t *restore_setup(void)
{
    if (!enabled())
        return NULL;
    return json_pack("{s:I}", "wait_ms", (json_int_t)g_daemon.cfg->live_restore_s * 1000);
}

/* /proc/PID/stat field 22, read after the last ')' (the name may hold any byte). */
static int proc_start_time(pid_t pid, uint64_t *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return -EIO;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -EIO;
    p++;
    /* fields 3.. follow: field 22 is the 20th of them */
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return -EIO;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p + 1, &end, 10);
    if (errno || end == p + 1)
        return -EIO;
    *out = v;
    return 0;
}

/* The row's restore column: rewritten whole on every change. */
static void write_row(struct sandbox *sb)
{
    struct hx_err e = {0};
    const char *ssh = expose_ssh_login(sb->id);
    json_t *j = json_pack("{s:b, s:I, s:O?, s:b, s:I, s:b, s:o, s:I, s:O?, s:o?, s:s?}", "adoptable",
                          sb->restore.restorable, "slot", (json_int_t)sb->slot, "allow_net", sb->allow_net, "secrets",
                          sb->secrets != NULL, "disk_mb", (json_int_t)sb->disk.promised_mb, "disk_on_loop",
                          sb->disk.on_loop, "exposures", expose_sandbox_saved(sb->id), "cpu_base_ns",
                          (json_int_t)(sb->cpu_base_ns & INT64_MAX), "views_cpus", sb->views_cpus, "storage",
                          sb_storage_saved(sb->storage), "ssh", ssh);
    if (!j || store_sandbox_set_restore(g_daemon.store, sb->id, sb->restore.init_start, j, &e) < 0) {
        fprintf(stderr, "hutchd: %s: live restore: %s\n", sb->id, j ? e.msg : "out of memory");
        sb->restore.restorable = false;
    }
    json_decref(j);
}

void restore_keep(struct sandbox *sb)
{
    if (!enabled() || !sb->recorded)
        return;
    struct hx_err e = {0};
    uint64_t start = 0;
    if (proc_start_time(sb->pid, &start) < 0) {
        fprintf(stderr, "hutchd: %s: live restore: cannot read its init's start time\n", sb->id);
        return;
    }
    bool secrets_kept = true;
    if (sb->secrets) {
        char desc[128];
        key_desc(sb->id, desc, sizeof desc);
        if (secrets_keep(sb->secrets, desc, &e) < 0) {
            fprintf(stderr, "hutchd: %s: live restore: %s (it will be stopped, not adopted)\n", sb->id, e.msg);
            secrets_kept = false;
        }
    }
    sb->restore.restorable = secrets_kept && !sb->restore.no_adopt;
    sb->restore.init_start = start;
    write_row(sb);
}

static void on_deadline_set(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    (void)s, (void)rpc_id, (void)ud;
    json_t *err = reply ? json_object_get(reply, "error") : NULL;
    if (err)
        fprintf(stderr, "hutchd: %s: live restore: the agent refused its deadline\n", sb->id);
}

void restore_deadline_changed(struct sandbox *sb)
{
    if (!enabled() || !sb->agent_open || sb->state != SB_RUNNING)
        return;
    agent_call(sb, "restoreDeadline", json_pack("{s:I}", "at_ms", (json_int_t)(sb->stop_at_ms > 0 ? sb->stop_at_ms : 0)),
               on_deadline_set, NULL, NULL, NULL);
}

void restore_exposures_changed(struct sandbox *sb)
{
    if (enabled() && sb->recorded && sb->restore.init_start)
        write_row(sb);
}

void restore_forget(const char *id)
{
    char path[4200], desc[128];
    restore_agent_path(id, path, sizeof path);
    unlink(path);
    key_desc(id, desc, sizeof desc);
    secrets_forget(desc);
}

/* ---- adoption ----------------------------------------------------------- */

static bool in_our_cgroup(pid_t pid, const char *id)
{
    char path[64], buf[4096], want[200];
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    snprintf(want, sizeof want, "/%s/%s", g_daemon.cfg->cgroup_name, id);
    autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return false;
    buf[n] = 0;
    size_t wl = strlen(want);
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        if (ll >= wl && memcmp(line + ll - wl, want, wl) == 0)
            return true;
        line = nl ? nl + 1 : NULL;
    }
    return false;
}

/* PID 1 of its own pid namespace: the last NSpid value is 1. */
static bool is_ns_init(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return false;
    buf[n] = 0;
    char *l = strstr(buf, "\nNSpid:");
    if (!l)
        return false;
    char *end = strchr(l + 1, '\n');
    if (end)
        *end = 0;
    char *last = strrchr(l, '\t');
    int fields = 0;
    for (char *p = l; (p = strchr(p + 1, '\t'));)
        fields++;
    return last && fields >= 2 && strcmp(last + 1, "1") == 0;
}

/* A pidfd for the sandbox's PID 1 if rec's pid is still the process we
 * launched (same start time, PID 1 of a pid namespace, in the sandbox's
 * cgroup), else -1. The pidfd is taken first and checked alive after the
 * checks, so a pid reused in between cannot pass. */
static int init_pidfd(pid_t pid, uint64_t start, const char *id)
{
    if (pid <= 1)
        return -1;
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -1;
    uint64_t st = 0;
    if (proc_start_time(pid, &st) < 0 || st != start || !is_ns_init(pid) || !in_our_cgroup(pid, id) ||
        syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) < 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

static int adopt_one(const struct sandbox_rec *rec, void *ud)
{
    (void)ud;
    struct config *cfg = g_daemon.cfg;
    struct hx_err e = {0};
    uint64_t start = 0;
    json_t *rj = NULL;
    if (!hx_sandbox_id_valid(rec->id) ||
        store_sandbox_get_restore(g_daemon.store, rec->id, &start, &rj, &e) < 0 || !rj || !start)
        goto no; /* not made for live restore: the sweep removes it */
    if (!json_is_true(json_object_get(rj, "adoptable"))) {
        fprintf(stderr, "hutchd: sandbox %s cannot be adopted (its secrets were not kept); removing it\n", rec->id);
        goto no;
    }
    json_int_t slot = json_integer_value(json_object_get(rj, "slot"));
    uint32_t cap = cfg->max_sandboxes + cfg->warm_max;
    if (rec->uid_base < UID_BASE0 || (rec->uid_base - UID_BASE0) % UID_COUNT != 0 || slot < 0 || slot >= cap ||
        (rec->uid_base - UID_BASE0) / UID_COUNT != (uint32_t)slot || g_daemon.slots[slot] ||
        g_daemon.n_claimed >= cfg->max_sandboxes) {
        fprintf(stderr, "hutchd: sandbox %s: its slot does not fit this hutchd's limits; removing it\n", rec->id);
        goto no;
    }
    json_t *allow = json_object_get(rj, "allow_net");
    if (allow && !json_is_null(allow) && net_allow_validate(allow, &e) < 0) {
        fprintf(stderr, "hutchd: sandbox %s: its allowNet no longer validates (%s); removing it\n", rec->id, e.msg);
        goto no;
    }
    struct secret_set *secrets = NULL;
    if (json_is_true(json_object_get(rj, "secrets"))) {
        char desc[128];
        key_desc(rec->id, desc, sizeof desc);
        if (secrets_recall(desc, &secrets, &e) < 0) {
            fprintf(stderr, "hutchd: sandbox %s: %s; removing it\n", rec->id, e.msg);
            goto no;
        }
    }
    int pidfd = init_pidfd(rec->init_pid, start, rec->id);
    if (pidfd < 0) {
        secrets_free(secrets);
        fprintf(stderr, "hutchd: sandbox %s ended while hutchd was away; removing it\n", rec->id);
        goto no;
    }
    /* Its volumes: each loop device must still hold its image, locked as
     * the attach locked it, before anyone is told the sandbox holds it. */
    struct sb_storage *storage = NULL;
    if (sb_storage_adopt(json_object_get(rj, "storage"), rec->init_pid, &storage, &e) < 0) {
        secrets_free(secrets);
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        close(pidfd);
        fprintf(stderr, "hutchd: sandbox %s: its volumes cannot be taken back (%s); removing it\n", rec->id, e.msg);
        goto no;
    }
    struct sandbox *sb = sandbox_adopt(rec, (uint32_t)slot, pidfd, &e);
    if (!sb) {
        sb_storage_forget(storage);
        secrets_free(secrets);
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        close(pidfd);
        fprintf(stderr, "hutchd: sandbox %s: %s; removing it\n", rec->id, e.msg);
        goto no;
    }
    sb->restore.init_start = start;
    sb->restore.restorable = true;
    sb->secrets = secrets;
    sb->storage = storage; /* storage: its volumes are held again (a second create is refused as before) */
    sb->allow_net = allow && !json_is_null(allow) ? json_deep_copy(allow) : NULL;
    json_int_t dmb = json_integer_value(json_object_get(rj, "disk_mb"));
    sb->disk.promised_mb = dmb > 0 && dmb <= UINT32_MAX ? (uint32_t)dmb : 0; /* counted in full: its image is unlinked */
    sb->disk.on_loop = json_is_true(json_object_get(rj, "disk_on_loop"));
    json_t *cpus = json_object_get(rj, "views_cpus"); /* views: its CPUs, as its cgroup's cpuset says */
    if (json_is_array(cpus) && json_array_size(cpus) > 0 && json_array_size(cpus) <= 1024) {
        bool ok = true;
        size_t i;
        json_t *c;
        json_array_foreach(cpus, i, c) ok &= json_is_integer(c) && json_integer_value(c) >= 0 &&
                                             json_integer_value(c) < 1024;
        if (ok)
            sb->views_cpus = json_deep_copy(cpus);
    }
    json_int_t cpu_base = json_integer_value(json_object_get(rj, "cpu_base_ns"));
    sb->cpu_base_ns = cpu_base > 0 ? (uint64_t)cpu_base : 0; /* metering: its time in the warm pool is nobody's */
    if (rec->stop_at_ms > 0 && rec->stop_at_ms <= now_ms()) {
        json_decref(rj);
        sandbox_stop(sb, "its timeout passed while hutchd was away");
        return 0;
    }
    /* Same names, same ports: its URLs work again once it is running
     * (until then the ingress answers for a sandbox not running). */
    expose_sandbox_restore(sb, json_object_get(rj, "exposures"));
    /* ssh: the same login name (it is the credential the user was given) */
    json_t *ssh = json_object_get(rj, "ssh");
    if (ssh && !json_is_null(ssh))
        expose_ssh_restore(sb, json_string_value(ssh));
    json_decref(rj);
    write_row(sb); /* what changed on the way back (an exposure moved to another port) */
    printf("hutchd: %s adopted from the previous hutchd (init pid %d)\n", sb->id, (int)sb->pid);
    return 0;
no:
    json_decref(rj);
    return 0;
}

int restore_check_config(struct hx_err *e)
{
    struct sockaddr_un sa;
    /* the longest id has the same length as any: check with a made-up one */
    return enabled() ? sockaddr_for("sbx_xxx_00000000000000000000", &sa, e) : 0;
}

void restore_adopt_all(void)
{
    struct hx_err e = {0};
    if (store_sandbox_each_running(g_daemon.store, adopt_one, NULL, &e) < 0)
        fprintf(stderr, "hutchd: live restore: %s\n", e.msg);
}

static void on_adopt_deadline(uv_timer_t *t)
{
    struct sandbox *sb = t->data;
    if (sb->restore.adopting && sb->state == SB_STARTING)
        sandbox_stop(sb, "its agent did not answer after hutchd came back");
}

void restore_connect_all(void)
{
    unsigned waiting = 0;
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next) {
        if (!sb->restore.adopting || sb->state != SB_STARTING)
            continue;
        struct sockaddr_un sa;
        struct hx_err e = {0};
        if (sockaddr_for(sb->id, &sa, &e) < 0 || agent_reconnect(sb, sa.sun_path, &e) < 0) {
            sandbox_stop(sb, e.msg);
            continue;
        }
        uv_timer_start(&sb->aux_timer, on_adopt_deadline, ADOPT_DEADLINE_MS, 0);
        waiting++;
    }
    if (!waiting)
        return;
    /* Before the API opens: Sandbox.connect(id) works at once after a
     * restart. Each adoption ends (hello or stop) within its deadline. */
    for (;;) {
        bool busy = false;
        for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next)
            busy |= sb->restore.adopting && sb->state == SB_STARTING;
        if (!busy)
            break;
        uv_run(g_daemon.loop, UV_RUN_ONCE);
    }
}

static void on_session_grace(uv_timer_t *t)
{
    struct sandbox *sb = t->data;
    if (!sb->sessions && sb->stop_at_ms == 0 && sb->state == SB_RUNNING)
        sandbox_stop(sb, "no connection came back to a session sandbox after hutchd restarted");
}

void restore_on_hello(struct sandbox *sb, json_t *hello)
{
    json_t *pids = json_object_get(hello, "pids");
    json_t *held = json_object_get(hello, "held");
    /* Only logged; still checked, as everything from the agent. */
    if (!json_is_array(pids) || json_array_size(pids) > 65536 || !json_is_integer(held) ||
        json_integer_value(held) < 0) {
        fprintf(stderr, "hutchd: %s: agent protocol violation: malformed hello; stopping the sandbox\n", sb->id);
        sandbox_stop(sb, "the sandbox's agent misbehaved");
        return;
    }
    uv_timer_stop(&sb->aux_timer);
    sb->restore.adopting = false;
    sb->state = SB_RUNNING;
    struct hx_err e = {0};
    if (net_sandbox_adopt(sb, &e) < 0) {
        sandbox_stop(sb, e.msg);
        return;
    }
    sandbox_views_sync(sb); /* views: binds to the lxcfs this hutchd runs */
    cgroup_oom_kills(sb->id, &sb->oom_seen);
    if (sb->stop_at_ms > 0) {
        sandbox_set_stop_at(sb, sb->stop_at_ms);
    } else {
        uv_timer_start(&sb->stop_timer, on_session_grace, SESSION_GRACE_MS, 0);
    }
    printf("hutchd: %s re-adopted: %zu processes running, %" PRId64 " bytes of output held while hutchd was away\n",
           sb->id, json_array_size(pids), (int64_t)json_integer_value(held));
}

void restore_release_all(void)
{
    struct sandbox *next;
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = next) {
        next = sb->next;
        if (sb->state >= SB_STOPPING || sb->views_busy)
            continue; /* going already, or a views worker still holds it: the next shutdown tick */
        if (sb->restore.restorable && sb->state == SB_RUNNING && sb->recorded && !sb->pooled) {
            left_running = true;
            sandbox_release(sb, "hutchd is restarting; the sandbox keeps running (reconnect)");
        } else {
            sandbox_stop(sb, "hutchd is shutting down");
        }
    }
}

bool restore_left_running(void)
{
    return left_running;
}
