/* cgroup v1 (one directory per controller) and v2 (one unified directory)
 * behind one interface; the hierarchy is detected once at start. */
#include "daemon/sandbox/cgroup.h"
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

enum { C_MEMORY, C_CPU, C_PIDS, C_FREEZER, C_CPUACCT, C_CPUSET, C_N };
static const char *const ctrl_names[C_N] = {"memory", "cpu", "pids", "freezer", "cpuacct", "cpuset"};
static char ctrl_root[C_N][512];   /* v1: per-controller mount + /NAME; v2: all equal */
static char ctrl_mnt[C_N][400];    /* v1: the controller's mount point */
static bool v2;
/* v1: the hierarchy's root cpuset balances load across all its CPUs, so the
 * scheduler has one domain whatever a child cpuset says (the kernel's
 * generate_sched_domains), and a sandbox's cpuset can stop asking for one. */
static bool cpuset_root_balances;

bool cgroup_is_v2(void) { return v2; }

static int write_file(const char *path, const char *val, struct hx_err *e)
{
    autoclose int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return hx_fail(e, errno, "open %s: %m", path);
    size_t n = strlen(val);
    if (write(fd, val, n) != (ssize_t)n)
        return hx_fail(e, errno, "write \"%s\" to %s: %m", val, path);
    return 0;
}

static int read_small(const char *path, char *buf, size_t cap)
{
    autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, cap - 1);
    if (n < 0)
        return -errno;
    buf[n] = 0;
    return (int)n;
}

/* Finds the v1 mount point of a controller in /proc/self/mountinfo. */
static int find_v1_mount(const char *ctrl, char *out, size_t cap, bool *whole)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    char line[4096];
    int r = -ENOENT;
    while (fgets(line, sizeof line, f)) {
        char *sep = strstr(line, " - ");
        if (!sep || strncmp(sep, " - cgroup ", 10) != 0)
            continue;
        /* super options are the last field: "rw,memory" */
        char *opts = strrchr(sep, ' ');
        if (!opts)
            continue;
        opts++;
        opts[strcspn(opts, "\n")] = 0;
        bool has = false;
        char *save, *tok;
        for (tok = strtok_r(opts, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            if (strcmp(tok, ctrl) == 0)
                has = true;
        if (!has)
            continue;
        /* field 4 is the hierarchy's directory mounted there ("/": all of
         * it, so /proc/PID/cgroup paths are below the mount point) */
        char root[8];
        *whole = sscanf(line, "%*s %*s %*s %7s", root) == 1 && strcmp(root, "/") == 0;
        /* field 5 is the mount point */
        char *p = line;
        for (int i = 0; i < 4 && p; i++) {
            p = strchr(p, ' ');
            if (p)
                p++;
        }
        if (!p)
            continue;
        size_t len = strcspn(p, " ");
        if (len >= cap)
            continue;
        memcpy(out, p, len);
        out[len] = 0;
        r = 0;
        break;
    }
    fclose(f);
    return r;
}

/* `ip netns exec` gives its command a private mount namespace with a fresh
 * sysfs and no cgroup mounts. The hierarchies themselves are the host's
 * (one per controller set, shared by every mount of it), so mounting them
 * again here reaches the same cgroups, without touching the host's mounts. */
static void mount_hierarchies(void)
{
    char buf[4096];
    if (read_small("/proc/cgroups", buf, sizeof buf) <= 0)
        return;
    if (mount("cgroup-root", "/sys/fs/cgroup", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0)
        return;
    char names[32][128] = {{0}};
    char *save, *line;
    for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char sub[64];
        int hier = 0, num = 0, enabled = 0;
        if (line[0] == '#' || sscanf(line, "%63s %d %d %d", sub, &hier, &num, &enabled) != 4)
            continue;
        if (!enabled || hier <= 0 || hier >= 32)
            continue;
        size_t l = strlen(names[hier]);
        snprintf(names[hier] + l, sizeof names[hier] - l, "%s%s", l ? "," : "", sub);
    }
    for (int h = 1; h < 32; h++) {
        if (!names[h][0])
            continue;
        char p[300];
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s", names[h]);
        mkdir(p, 0755);
        mount("cgroup", p, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, names[h]);
    }
    mkdir("/sys/fs/cgroup/unified", 0755);
    mount("cgroup2", "/sys/fs/cgroup/unified", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

static bool any_cgroup_mounted(void)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return true;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, " - cgroup") != NULL;
    fclose(f);
    return found;
}

/* "MemTotal:       24607344 kB" */
static uint64_t keyed_value_colon(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p || p[strlen(key)] != ':')
        return 0;
    return strtoull(p + strlen(key) + 1, NULL, 10);
}

/* Every sandbox has its own limits, but they add up: 256 sandboxes of
 * 1024 pids would exhaust a host with pid_max 32768, and their memory
 * limits can exceed the machine's. The parent cgroup caps the sum, so a
 * fleet of fork bombs or allocators starves sandboxes, never the host
 * (hutchd itself is not in it). */
static void limit_all_sandboxes(void)
{
    char buf[256], p[600], v[64];
    uint64_t pid_max = 32768, mem_total_kib = 0;
    if (read_small("/proc/sys/kernel/pid_max", buf, sizeof buf) > 0)
        pid_max = strtoull(buf, NULL, 10);
    if (read_small("/proc/meminfo", buf, sizeof buf) > 0)
        mem_total_kib = keyed_value_colon(buf, "MemTotal");
    snprintf(v, sizeof v, "%" PRIu64, pid_max / 2);
    snprintf(p, sizeof p, "%s/pids.max", ctrl_root[C_PIDS]);
    write_file(p, v, NULL);
    if (mem_total_kib) {
        uint64_t cap = mem_total_kib * 1024 / 10 * 8; /* 80 % of RAM */
        snprintf(v, sizeof v, "%" PRIu64, cap);
        snprintf(p, sizeof p, "%s/%s", ctrl_root[C_MEMORY], v2 ? "memory.max" : "memory.limit_in_bytes");
        write_file(p, v, NULL);
    }
}

/* v1 cpuset: a new cgroup starts with no CPUs and no memory nodes (and
 * takes no task); copies the parent's. */
static int cpuset_inherit(const char *parent, const char *dir)
{
    char buf[4096], p[700];
    static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
    for (size_t i = 0; i < HX_ARRAY_LEN(files); i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (read_small(p, buf, sizeof buf) > 1)
            continue; /* already set */
        snprintf(p, sizeof p, "%s/%s", parent, files[i]);
        if (read_small(p, buf, sizeof buf) <= 0)
            return -1;
        buf[strcspn(buf, "\n")] = 0;
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (write_file(p, buf, NULL) < 0)
            return -1;
    }
    return 0;
}

/* v1: every sandbox's agent (hutch-init) runs in one cpu cgroup of its
 * own, NAME-agents beside NAME (not below it), weighted as two sandboxes
 * (AGENTS_CPU_SHARES: four times a hog's weight on each of two CPUs, at
 * most twice hutchd's autogroup when many agents are busy). Under EEVDF a
 * waking entity preempts the running one at once only when it is eligible
 * and its virtual deadline (slice / weight) comes first: an agent in its sandbox's cgroup, as heavy
 * as a hog's and below NAME, which the hog keeps busy, waited a tick
 * (4 ms here) or more per wake-up behind another sandbox's busy loops
 * (docs/performance/fairness.md, "CPU fairness"). The sandbox's own processes stay
 * in NAME/ID with its quota: hutch-init moves each child there before it
 * execs, through the `tasks` file: a single thread's move skips the
 * threadgroup lock whose RCU grace period made a cgroup.procs write take
 * 5-20 ms after a pause. */
#define AGENTS_CPU_SHARES 2048
static char agents_cg[520];

static void agents_cgroup_init(void)
{
    char p[600], v[32];
    snprintf(p, sizeof p, "%s-agents", ctrl_root[C_CPU]);
    if (mkdir(p, 0755) < 0 && errno != EEXIST)
        return;
    snprintf(v, sizeof v, "%d", AGENTS_CPU_SHARES);
    snprintf(p, sizeof p, "%s-agents/cpu.shares", ctrl_root[C_CPU]);
    if (write_file(p, v, NULL) == 0)
        snprintf(agents_cg, sizeof agents_cg, "%s-agents", ctrl_root[C_CPU]);
}

/* v1: hutchd's own cpu cgroup (NAME-daemon), and its process's cgroup
 * before it moved there (the cgroup.procs file to go back to). A loaded
 * host otherwise gives the event loop, which every stream and API call
 * passes through, one autogroup's weight beside every busy sandbox's and
 * agent's: at a load of hundreds the loop waited 1-1.5 s at a time for a
 * CPU (--loop-stall-ms; docs/performance/fairness.md). */
static char daemon_cg[520];
static char daemon_home[1100];
static const char *thread_cgroup_of(const char *text, const char *name, size_t *len);

int cgroup_daemon_enter(uint32_t shares, struct hx_err *e)
{
    if (v2 || !ctrl_root[C_CPU][0] || !ctrl_mnt[C_CPU][0])
        return hx_fail(e, ENOTSUP, "no cgroup v1 cpu hierarchy of hutchd's own to weigh it in");
    char text[4096], p[600], v[32];
    size_t len;
    const char *at = read_small("/proc/self/cgroup", text, sizeof text) > 0 ? thread_cgroup_of(text, "cpu", &len) : NULL;
    if (!at || len == 0 || len > 600 || at[0] != '/')
        return hx_fail(e, ENOENT, "cannot tell hutchd's cpu cgroup");
    snprintf(daemon_home, sizeof daemon_home, "%s%.*s/cgroup.procs", ctrl_mnt[C_CPU], len == 1 ? 0 : (int)len, at);
    snprintf(p, sizeof p, "%s-daemon", ctrl_root[C_CPU]);
    if (mkdir(p, 0755) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", p);
    snprintf(v, sizeof v, "%u", shares);
    snprintf(p, sizeof p, "%s-daemon/cpu.shares", ctrl_root[C_CPU]);
    int r = write_file(p, v, e);
    if (r < 0)
        return r;
    snprintf(p, sizeof p, "%s-daemon/cgroup.procs", ctrl_root[C_CPU]);
    if ((r = write_file(p, "0", e)) < 0) /* "0": the writer's whole process */
        return r;
    snprintf(daemon_cg, sizeof daemon_cg, "%s-daemon", ctrl_root[C_CPU]);
    return 0;
}

void cgroup_daemon_leave(void)
{
    if (!daemon_cg[0])
        return;
    struct hx_err e = {0};
    if (write_file(daemon_home, "0", &e) < 0)
        fprintf(stderr, "hutchd: could not leave its cpu cgroup: %s\n", e.msg);
    else {
        /* a helper told to stop may still be exiting: a second at most */
        int r;
        for (int i = 0; (r = rmdir(daemon_cg)) < 0 && errno == EBUSY && i < 50; i++)
            usleep(20000);
        if (r < 0 && errno != ENOENT)
            fprintf(stderr, "hutchd: rmdir %s: %s\n", daemon_cg, strerror(errno));
    }
    daemon_cg[0] = 0;
}

int cgroup_agent_cpu_paths(const char *id, char *agent, size_t acap, char *user, size_t ucap)
{
    if (v2 || !agents_cg[0])
        return -ENOTSUP;
    int a = snprintf(agent, acap, "%s/tasks", agents_cg);
    int u = snprintf(user, ucap, "%s/%s/tasks", ctrl_root[C_CPU], id);
    if (a < 0 || (size_t)a >= acap || u < 0 || (size_t)u >= ucap)
        return -ENAMETOOLONG;
    return 0;
}

int cgroup_init(const char *name, struct hx_err *e)
{
    if (!any_cgroup_mounted())
        mount_hierarchies();
    char buf[512];
    if (read_small("/sys/fs/cgroup/cgroup.controllers", buf, sizeof buf) >= 0 && strstr(buf, "memory")) {
        v2 = true;
        for (int c = 0; c < C_N; c++)
            snprintf(ctrl_root[c], sizeof ctrl_root[c], "/sys/fs/cgroup/%s", name);
        if (mkdir(ctrl_root[0], 0755) < 0 && errno != EEXIST)
            return hx_fail(e, errno, "mkdir %s: %m", ctrl_root[0]);
        /* Delegate the controllers to sandbox cgroups below NAME. */
        write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory +cpu +pids", NULL);
        char p[600];
        snprintf(p, sizeof p, "%s/cgroup.subtree_control", ctrl_root[0]);
        int r = write_file(p, "+memory +cpu +pids", e);
        if (r == 0)
            limit_all_sandboxes();
        return r;
    }
    for (int c = 0; c < C_N; c++) {
        char mnt[400];
        bool whole = false;
        if (find_v1_mount(ctrl_names[c], mnt, sizeof mnt, &whole) < 0) {
            if (c == C_FREEZER || c == C_CPUACCT || c == C_CPUSET) { ctrl_root[c][0] = 0; continue; }
            return hx_fail(e, ENOENT, "no cgroup v1 or v2 hierarchy with the %s controller", ctrl_names[c]);
        }
        snprintf(ctrl_root[c], sizeof ctrl_root[c], "%s/%s", mnt, name);
        if (whole) /* else cgroup_enter is off: a thread's paths would not be below mnt */
            snprintf(ctrl_mnt[c], sizeof ctrl_mnt[c], "%s", mnt);
        if (mkdir(ctrl_root[c], 0755) < 0 && errno != EEXIST)
            return hx_fail(e, errno, "mkdir %s: %m", ctrl_root[c]);
        if (c == C_CPUSET && cpuset_inherit(mnt, ctrl_root[c]) < 0)
            ctrl_root[c][0] = 0; /* views: CPU views then follow the host's CPUs */
        if (c == C_CPUSET && ctrl_root[c][0]) {
            char p[450], b[16];
            snprintf(p, sizeof p, "%s/cpuset.sched_load_balance", mnt);
            cpuset_root_balances = read_small(p, b, sizeof b) > 0 && b[0] == '1';
        }
    }
    agents_cgroup_init();
    limit_all_sandboxes();
    return 0;
}

static void path_of(int c, const char *id, const char *file, char *out, size_t cap)
{
    if (file)
        snprintf(out, cap, "%s/%s/%s", ctrl_root[c], id, file);
    else
        snprintf(out, cap, "%s/%s", ctrl_root[c], id);
}

int cgroup_create(const char *id, const struct cgroup_limits *l, struct hx_err *e)
{
    char p[700], v[64];
    int r;
    int n = v2 ? 1 : C_N;
    for (int c = 0; c < n; c++) {
        if (!ctrl_root[c][0])
            continue;
        path_of(c, id, NULL, p, sizeof p);
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return hx_fail(e, errno, "mkdir %s: %m", p);
    }
    if (v2) {
        snprintf(v, sizeof v, "%" PRIu64, l->memory_bytes);
        path_of(0, id, "memory.max", p, sizeof p);
        if ((r = write_file(p, v, e)) < 0) return r;
        path_of(0, id, "memory.swap.max", p, sizeof p);
        write_file(p, "0", NULL);
        snprintf(v, sizeof v, "%u 100000", l->cpu_millis * 100);
        path_of(0, id, "cpu.max", p, sizeof p);
        if ((r = write_file(p, v, e)) < 0) return r;
        snprintf(v, sizeof v, "%u", l->pids_max);
        path_of(0, id, "pids.max", p, sizeof p);
        return write_file(p, v, e);
    }
    snprintf(v, sizeof v, "%" PRIu64, l->memory_bytes);
    path_of(C_MEMORY, id, "memory.limit_in_bytes", p, sizeof p);
    if ((r = write_file(p, v, e)) < 0) return r;
    path_of(C_MEMORY, id, "memory.memsw.limit_in_bytes", p, sizeof p);
    write_file(p, v, NULL); /* absent without swap accounting */
    /* The quota is per the kernel's default period, 100000 us, which nothing
     * here changes: each write of either file walks every cpu cgroup of the
     * host (tg_set_cfs_bandwidth -> __cfs_schedulable) under a global mutex. */
    snprintf(v, sizeof v, "%u", l->cpu_millis * 100);
    path_of(C_CPU, id, "cpu.cfs_quota_us", p, sizeof p);
    if ((r = write_file(p, v, e)) < 0) return r;
    snprintf(v, sizeof v, "%u", l->pids_max);
    path_of(C_PIDS, id, "pids.max", p, sizeof p);
    if ((r = write_file(p, v, e)) < 0) return r;
    /* views: on v1, lxcfs reads the CPU quota at the cpuset cgroup's path
     * (LXC keeps every controller at one path); the CPUs are the
     * sandbox's affinity, which it cannot widen. */
    if (ctrl_root[C_CPUSET][0]) {
        /* A load-balanced v1 cpuset rebuilds the host's scheduling domains
         * on every change of its CPUs and on its removal (each rebuild walks
         * every task of the host: dl_rebuild_rd_accounting). Under a root
         * that balances all CPUs the domains come out the same, so the
         * flag goes first, while its CPUs are still empty (no rebuild
         * then), and its CPUs are written once. */
        if (cpuset_root_balances) {
            path_of(C_CPUSET, id, "cpuset.sched_load_balance", p, sizeof p);
            write_file(p, "0", NULL); /* an optimisation: the cpuset works either way */
        }
        if (l->cpus) {
            path_of(C_CPUSET, id, "cpuset.cpus", p, sizeof p);
            if ((r = write_file(p, l->cpus, e)) < 0) return r;
        }
        path_of(C_CPUSET, id, NULL, p, sizeof p);
        if (cpuset_inherit(ctrl_root[C_CPUSET], p) < 0) /* the parent's mems (and CPUs, when none given) */
            return hx_fail(e, EIO, "cgroup %s: cannot set up its cpuset", id);
    }
    return 0;
}

int cgroup_attach(const char *id, pid_t pid, struct hx_err *e)
{
    char p[700], v[32];
    int r;
    snprintf(v, sizeof v, "%d", (int)pid);
    int n = v2 ? 1 : C_N;
    for (int c = 0; c < n; c++) {
        if (!ctrl_root[c][0])
            continue;
        path_of(c, id, "cgroup.procs", p, sizeof p);
        if ((r = write_file(p, v, e)) < 0)
            return r;
    }
    return 0;
}

_Static_assert(C_N <= CGROUP_V1_MAX, "struct cgroup_home holds a path per v1 controller");

/* "4:cpu,cpuacct:/a/b" -> "/a/b" for controller NAME, from /proc/thread-self/cgroup. */
static const char *thread_cgroup_of(const char *text, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *l = text; *l; l += strcspn(l, "\n") + (l[strcspn(l, "\n")] == '\n')) {
        const char *ctl = strchr(l, ':');
        const char *end = l + strcspn(l, "\n");
        const char *path = ctl && ctl < end ? memchr(ctl + 1, ':', (size_t)(end - ctl - 1)) : NULL;
        if (!path)
            continue;
        for (const char *t = ctl + 1; t < path; t++) {
            size_t tl = strcspn(t, ",:");
            if (tl == nl && strncmp(t, name, nl) == 0) {
                *len = (size_t)(end - path - 1);
                return path + 1;
            }
            t += tl;
        }
    }
    return NULL;
}

int cgroup_leave(struct cgroup_home *home, struct hx_err *e)
{
    int ret = 0;
    for (int c = 0; c < C_N; c++) {
        if (home->tasks[c] < 0)
            continue;
        if (write(home->tasks[c], "0", 1) != 1 && ret == 0)
            ret = hx_fail(e, errno, "move back to its %s cgroup: %m", ctrl_names[c]);
        close(home->tasks[c]);
        home->tasks[c] = -1;
    }
    return ret;
}

int cgroup_enter(const char *id, struct cgroup_home *home, struct hx_err *e)
{
    for (int c = 0; c < CGROUP_V1_MAX; c++)
        home->tasks[c] = -1;
    if (v2)
        return hx_fail(e, ENOTSUP, "cgroup v2: a thread cannot move alone");
    char text[4096], p[1100];
    if (read_small("/proc/thread-self/cgroup", text, sizeof text) <= 0)
        return hx_fail(e, EIO, "read /proc/thread-self/cgroup");
    /* The way back is opened first: a thread that could not leave would
     * hold the sandbox's cgroups (and be bound by its limits). */
    int r = 0;
    for (int c = 0; c < C_N && r == 0; c++) {
        if (!ctrl_root[c][0])
            continue;
        size_t len;
        const char *at = thread_cgroup_of(text, ctrl_names[c], &len);
        if (!ctrl_mnt[c][0] || !at || len == 0 || len > 600 || at[0] != '/') {
            r = hx_fail(e, ENOENT, "no way back to this thread's %s cgroup", ctrl_names[c]);
            break;
        }
        snprintf(p, sizeof p, "%s%.*s/tasks", ctrl_mnt[c], len == 1 ? 0 : (int)len, at);
        home->tasks[c] = open(p, O_WRONLY | O_CLOEXEC);
        if (home->tasks[c] < 0)
            r = hx_fail(e, errno, "open %s: %m", p);
    }
    for (int c = 0; c < C_N && r == 0; c++) {
        if (!ctrl_root[c][0])
            continue;
        /* cpu: the agents' cgroup (hutch-init joins the sandbox's itself
         * before its cgroup namespace, setup.c enter_userns): in the
         * sandbox's, building its root would share the one weight all
         * sandboxes' busy processes share, and crawl on a loaded host */
        if (c == C_CPU && agents_cg[0])
            snprintf(p, sizeof p, "%s/tasks", agents_cg);
        else
            path_of(c, id, "tasks", p, sizeof p);
        r = write_file(p, "0", e);
    }
    if (r < 0) {
        struct hx_err le = {0};
        if (cgroup_leave(home, &le) < 0)
            fprintf(stderr, "hutchd: %s\n", le.msg);
    }
    return r;
}

static uint64_t keyed_value(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
            return strtoull(p + kl + 1, NULL, 10);
    }
    return 0;
}

int cgroup_oom_kills(const char *id, uint64_t *n)
{
    char p[700], buf[1024];
    path_of(C_MEMORY, id, v2 ? "memory.events" : "memory.oom_control", p, sizeof p);
    int r = read_small(p, buf, sizeof buf);
    if (r < 0)
        return r;
    *n = keyed_value(buf, "oom_kill");
    return 0;
}

int cgroup_usage(const char *id, uint64_t *mem, uint64_t *peak, uint64_t *cpu_ns)
{
    char p[700], buf[2048];
    *mem = *peak = *cpu_ns = 0;
    if (v2) {
        path_of(0, id, "memory.current", p, sizeof p);
        if (read_small(p, buf, sizeof buf) > 0) *mem = strtoull(buf, NULL, 10);
        path_of(0, id, "memory.peak", p, sizeof p);
        if (read_small(p, buf, sizeof buf) > 0) *peak = strtoull(buf, NULL, 10);
        path_of(0, id, "cpu.stat", p, sizeof p);
        if (read_small(p, buf, sizeof buf) > 0) *cpu_ns = keyed_value(buf, "usage_usec") * 1000;
        return 0;
    }
    path_of(C_MEMORY, id, "memory.usage_in_bytes", p, sizeof p);
    if (read_small(p, buf, sizeof buf) > 0) *mem = strtoull(buf, NULL, 10);
    path_of(C_MEMORY, id, "memory.max_usage_in_bytes", p, sizeof p);
    if (read_small(p, buf, sizeof buf) > 0) *peak = strtoull(buf, NULL, 10);
    if (ctrl_root[C_CPUACCT][0]) {
        path_of(C_CPUACCT, id, "cpuacct.usage", p, sizeof p);
        if (read_small(p, buf, sizeof buf) > 0) *cpu_ns = strtoull(buf, NULL, 10);
    }
    return 0;
}

static int kill_procs(const char *procs_path)
{
    char buf[65536];
    int n = read_small(procs_path, buf, sizeof buf);
    if (n <= 0)
        return n < 0 ? n : 0;
    int left = 0;
    for (char *s = buf; *s;) {
        char *end;
        long pid = strtol(s, &end, 10);
        if (end == s)
            break;
        if (pid > 1 && kill((pid_t)pid, SIGKILL) == 0)
            left++;
        s = end;
        while (*s == '\n')
            s++;
    }
    return left;
}

int cgroup_destroy(const char *id, struct hx_err *e)
{
    char p[700];
    int busy = 0;
    int n = v2 ? 1 : C_N;
    for (int c = 0; c < n; c++) {
        if (!ctrl_root[c][0])
            continue;
        path_of(c, id, "cgroup.procs", p, sizeof p);
        if (access(p, F_OK) != 0)
            continue;
        if (v2) {
            path_of(c, id, "cgroup.kill", p, sizeof p);
            if (write_file(p, "1", NULL) < 0) {
                path_of(c, id, "cgroup.procs", p, sizeof p);
                kill_procs(p);
            }
        } else {
            kill_procs(p);
        }
        path_of(c, id, NULL, p, sizeof p);
        if (rmdir(p) < 0 && errno != ENOENT) {
            if (errno == EBUSY)
                busy++;
            else
                return hx_fail(e, errno, "rmdir %s: %m", p);
        }
    }
    if (busy)
        return hx_fail(e, EBUSY, "cgroup of %s still has processes", id);
    return 0;
}

int cgroup_each(void (*cb)(const char *id, void *ud), void *ud)
{
    DIR *d = opendir(ctrl_root[v2 ? 0 : C_MEMORY]);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_type == DT_DIR && strncmp(de->d_name, "sbx_", 4) == 0)
            cb(de->d_name, ud);
    }
    closedir(d);
    return 0;
}

void cgroup_fini(void)
{
    if (agents_cg[0])
        rmdir(agents_cg); /* fails harmlessly while agents remain */
    for (int c = 0; c < C_N; c++)
        if (ctrl_root[c][0])
            rmdir(ctrl_root[c]); /* fails harmlessly while sandboxes remain */
}
