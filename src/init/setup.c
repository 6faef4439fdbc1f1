/* hutch-init setup stage: builds the sandbox's root filesystem and enters its
 * user namespace (docs/agent-protocol.md, "Start-up").
 *
 * Threat model. Everything below runs as real root in fresh mount/pid/net/
 * ipc/uts namespaces that real root owns, BEFORE joining the sandbox's user
 * namespace; afterwards code in the sandbox may be root in that user
 * namespace and is hostile. What each step stops:
 *  - MS_PRIVATE|MS_REC first: nothing we mount here propagates to the host,
 *    and host mount events do not leak in (no mounts left behind either).
 *  - "workdir" is hutchd's ext4 image on a loop device (or a tmpfs of
 *    disk_mb), nosuid,nodev: the writable layer has its own size limit and
 *    dies with the mount namespace.
 *  - image cloned with open_tree + idmapped (MOUNT_ATTR_IDMAP) and read-only:
 *    the shared image stays owned by real root on disk and is never
 *    writable from a sandbox, yet its files look root/app-owned inside.
 *  - overlay is nodev (no device nodes from the image or made by root
 *    inside) but not nosuid: the image's setuid sudo must work, and it only
 *    ever yields sandbox root.
 *  - pivot_root + detaching the old root: no path leads back to the host fs.
 *  - fresh /proc for the new pid ns; kcore/keys/timer_list/sched_debug/
 *    latency_stats masked with /dev/null, acpi/scsi/asound with an empty
 *    read-only tmpfs (host info leaks, kernel memory); /proc/sys,
 *    sysrq-trigger, bus, fs, irq read-only (host-wide knobs). No /sys at all.
 *  - /dev is a small tmpfs, noexec,nosuid, with only harmless host nodes
 *    bound in and a private devpts instance (no host terminals).
 *  - hostname, loopback, cgroup ns set up as real root: the uts/net ns are
 *    owned by the host user ns, so sandbox root cannot change them later.
 *  - setns(userns) last: sandbox root's capabilities then apply only in a
 *    user namespace that owns none of the other namespaces; so it cannot
 *    mount, unmount the masks, touch the network config or see host pids.
 *  - hutch-init's memory was created (exec) before setns, so it belongs to
 *    the host user namespace: with PR_SET_DUMPABLE 0, sandbox root lacks
 *    CAP_SYS_PTRACE over it (no ptrace, /proc/1/mem, /proc/1/fd/3). Never
 *    re-exec after setns. */
#include "init/init.h"
#include "init/views.h"
#include "lib/wire.h"
#include <fcntl.h>
#include <grp.h>
#include <arpa/inet.h>
#include <limits.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DISK_MB_MAX (1024u * 1024u) /* 1 TiB: a sanity bound, the daemon sets the real one */

/* secrets: where the sandbox's CA bundle is (Debian's path), with hutch's CA appended */
#define CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define CA_BUNDLE_MAX (4u << 20)
#define CA_PEM_MAX 8192
static const char *g_ca_pem; /* points into the setup message, which outlives setup */
static bool g_ca_layered;    /* the bundle came with hutchd's layer: nothing to write */
static int g_cpu_agent_fd = -1; /* the agents' cpu cgroup's tasks file until PID 1 has joined it */
static int g_cpu_user_fd = -1;  /* the sandbox's (spawn.c keeps it open for the children) */

static const char *str_member(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool u64_member(json_t *o, const char *k, uint64_t lo, uint64_t hi, uint64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        return false;
    json_int_t n = json_integer_value(v);
    if (n < 0 || (uint64_t)n < lo || (uint64_t)n > hi)
        return false;
    *out = (uint64_t)n;
    return true;
}

/* Absolute, no "..", bounded: the path is used in the host mount namespace. */
static bool path_ok(const char *p)
{
    if (!p || p[0] != '/' || strnlen(p, PATH_MAX) >= PATH_MAX - 64)
        return false;
    for (const char *s = p; (s = strstr(s, "..")) != NULL; s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == '/' || s[2] == '\0'))
            return false;
    return true;
}

static bool cgroup_tasks_ok(const char *p)
{
    static const char tail[] = "/tasks";
    size_t n = p ? strlen(p) : 0, t = sizeof tail - 1;
    return path_ok(p) && n > t && strcmp(p + n - t, tail) == 0;
}

static bool hostname_ok(const char *h)
{
    size_t n = h ? strnlen(h, 65) : 0;
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
    }
    return true;
}

int setup_parse(json_t *root, struct setup_cfg *c, struct hx_err *e)
{
    memset(c, 0, sizeof *c);
    if (!json_is_object(root))
        return hx_fail(e, EINVAL, "setup: not a JSON object");
    c->id = str_member(root, "id");
    c->hostname = str_member(root, "hostname");
    c->image = str_member(root, "image");
    c->workdir = str_member(root, "workdir");
    if (!c->id || strnlen(c->id, 128) >= 128)
        return hx_fail(e, EINVAL, "setup: bad id");
    if (!hostname_ok(c->hostname))
        return hx_fail(e, EINVAL, "setup: bad hostname");
    if (!path_ok(c->image) || !path_ok(c->workdir))
        return hx_fail(e, EINVAL, "setup: image and workdir must be absolute paths without ..");
    uint64_t base, count;
    if (!u64_member(root, "uid_base", 1, UINT32_MAX, &base) ||
        !u64_member(root, "uid_count", INIT_APP_UID + 1, 1u << 24, &count) || base + count > UINT32_MAX)
        return hx_fail(e, EINVAL, "setup: bad uid_base/uid_count");
    c->uid_base = (uint32_t)base;
    c->uid_count = (uint32_t)count;
    if (!u64_member(root, "disk_mb", 1, DISK_MB_MAX, &c->disk_mb))
        return hx_fail(e, EINVAL, "setup: bad disk_mb");
    int vr = views_parse(root, e); /* views: lxcfs and the CPU affinity (views.c) */
    if (vr < 0)
        return vr;
    json_t *hold = json_object_get(root, "hold");
    if (hold && !json_is_boolean(hold))
        return hx_fail(e, EINVAL, "setup: hold must be a boolean");
    c->hold = json_is_true(hold);
    c->vscode_layer = str_member(root, "vscode_layer");
    if (c->vscode_layer && !path_ok(c->vscode_layer))
        return hx_fail(e, EINVAL, "setup: vscode_layer must be an absolute path without ..");
    json_t *cg = json_object_get(root, "cpu_cgroup");
    if (cg && !json_is_null(cg)) {
        c->cpu_agent = str_member(cg, "agent");
        c->cpu_user = str_member(cg, "user");
        if (!json_is_object(cg) || !cgroup_tasks_ok(c->cpu_agent) || !cgroup_tasks_ok(c->cpu_user))
            return hx_fail(e, EINVAL, "setup: cpu_cgroup needs agent and user, absolute paths of tasks files without ..");
    }
    c->disk_dev = str_member(root, "disk_dev");
    if (c->disk_dev && (strncmp(c->disk_dev, "/dev/loop", 9) != 0 || !c->disk_dev[9] ||
                        strspn(c->disk_dev + 9, "0123456789") != strlen(c->disk_dev + 9) || strlen(c->disk_dev) > 20))
        return hx_fail(e, EINVAL, "setup: bad disk_dev");
    if (!json_object_get(root, "pids_max"))
        c->pids_max = 0;
    else if (!u64_member(root, "pids_max", 1, 1u << 22, &c->pids_max))
        return hx_fail(e, EINVAL, "setup: bad pids_max");
    if (!json_object_get(root, "nofile"))
        c->nofile = 65536;
    else if (!u64_member(root, "nofile", 64, 1u << 20, &c->nofile))
        return hx_fail(e, EINVAL, "setup: bad nofile");
    if (!json_object_get(root, "slice_us"))
        c->slice_us = 0;
    else if (!u64_member(root, "slice_us", 0, 100000, &c->slice_us) || (c->slice_us && c->slice_us < 100))
        return hx_fail(e, EINVAL, "setup: slice_us must be 0 or 100..100000");
    json_t *env = json_object_get(root, "env");
    if (env && !json_is_null(env)) {
        if (!json_is_object(env))
            return hx_fail(e, EINVAL, "setup: env must be an object");
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v) {
            if (!env_key_valid(k) || !json_is_string(v))
                return hx_fail(e, EINVAL, "setup: bad env entry");
        }
        c->env = env;
    }
    /* net: "net": {"dns4": addr, "dns6": addr}; the addresses go into a file */
    vr = setup_volumes_parse(root, c, e); /* storage: */
    if (vr < 0)
        return vr;
    json_t *net = json_object_get(root, "net");
    if (net && !json_is_null(net)) {
        uint8_t tmp[16];
        c->dns4 = str_member(net, "dns4");
        c->dns6 = str_member(net, "dns6");
        if (!c->dns4 || inet_pton(AF_INET, c->dns4, tmp) != 1 || !c->dns6 || inet_pton(AF_INET6, c->dns6, tmp) != 1)
            return hx_fail(e, EINVAL, "setup: bad net");
        /* secrets: the interception CA, trusted by every TLS library through the bundle and variables */
        const char *ca = str_member(net, "ca");
        if (ca) {
            if (strlen(ca) > CA_PEM_MAX || strncmp(ca, "-----BEGIN CERTIFICATE-----", 27) != 0 ||
                strstr(ca, "PRIVATE"))
                return hx_fail(e, EINVAL, "setup: bad ca");
            g_ca_pem = ca;
            /* the same bundle, written once by hutchd (ca_layer.c): an overlay lower instead of a copy */
            c->ca_layer = str_member(net, "ca_layer");
            if (c->ca_layer && !path_ok(c->ca_layer))
                return hx_fail(e, EINVAL, "setup: ca_layer must be an absolute path without ..");
            if (!c->env) {
                json_object_set_new(root, "env", json_object());
                c->env = json_object_get(root, "env");
            }
            static const char *const vars[] = {"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE",
                                               "CURL_CA_BUNDLE", "DENO_CERT", "GIT_SSL_CAINFO"};
            for (size_t i = 0; i < HX_ARRAY_LEN(vars); i++)
                if (!json_object_get(c->env, vars[i]))
                    json_object_set_new(c->env, vars[i], json_string(CA_BUNDLE));
        }
    }
    return 0;
}

/* net: /etc/resolv.conf in the writable layer (never the shared image)
 * names our DNS responder on the veth's host end. The image's file may be a
 * symlink (systemd-resolved): it is replaced, never followed. Owned by
 * sandbox root, like the rest of the upper layer. Interfaces, addresses and
 * routes were set up by hutchd before HX_SETUP (real root owns the netns). */
static int write_resolv_conf(const struct setup_cfg *c, struct hx_err *e)
{
    if (!c->dns4)
        return 0;
    if (mkdir("root/etc", 0755) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir /etc: %m");
    if (unlink("root/etc/resolv.conf") < 0 && errno != ENOENT)
        return hx_fail(e, errno, "unlink /etc/resolv.conf: %m");
    autoclose int fd = open("root/etc/resolv.conf", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return hx_fail(e, errno, "create /etc/resolv.conf: %m");
    char text[256];
    int n = snprintf(text, sizeof text, "# written by hutch: the sandbox's DNS (allowNet names only)\n"
                                        "nameserver %s\nnameserver %s\n", c->dns4, c->dns6);
    if (write(fd, text, (size_t)n) != n)
        return hx_fail(e, errno, "write /etc/resolv.conf: %m");
    if (fchown(fd, c->uid_base, c->uid_base) < 0 || fchmod(fd, 0644) < 0)
        return hx_fail(e, errno, "chown /etc/resolv.conf: %m");
    return 0;
}

/* secrets: the image's CA bundle plus our CA, as a new file in the sandbox's
 * own writable layer (the shared image is never written). Runs before the
 * sandbox exists: the upper layer holds nothing a sandbox made. */
static int add_ca_bundle(const struct setup_cfg *c, struct hx_err *e)
{
    if (!g_ca_pem || g_ca_layered)
        return 0;
    static const char *const dirs[] = {"root/etc", "root/etc/ssl", "root/etc/ssl/certs"};
    for (size_t i = 0; i < HX_ARRAY_LEN(dirs); i++) {
        if (mkdir(dirs[i], 0755) == 0) {
            if (chown(dirs[i], c->uid_base, c->uid_base) < 0)
                return hx_fail(e, errno, "chown %s: %m", dirs[i] + 4);
        } else if (errno != EEXIST) {
            return hx_fail(e, errno, "mkdir %s: %m", dirs[i] + 4);
        }
    }
    const char *path = "root" CA_BUNDLE, *tmp = "root/etc/ssl/certs/.hutch-ca-bundle";
    size_t cap = CA_BUNDLE_MAX, len = 0;
    autofree char *buf = malloc(cap + CA_PEM_MAX + 2);
    if (!buf)
        return hx_fail(e, ENOMEM, "out of memory");
    int in = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in >= 0) {
        ssize_t k;
        while (len < cap && (k = read(in, buf + len, cap - len)) > 0)
            len += (size_t)k;
        close(in);
    }
    if (len > 0 && buf[len - 1] != '\n')
        buf[len++] = '\n';
    size_t pl = strlen(g_ca_pem);
    memcpy(buf + len, g_ca_pem, pl);
    len += pl;
    if (buf[len - 1] != '\n')
        buf[len++] = '\n';
    unlink(tmp);
    autoclose int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return hx_fail(e, errno, "create the CA bundle: %m");
    if (write(fd, buf, len) != (ssize_t)len)
        return hx_fail(e, errno, "write the CA bundle: %m");
    if (fchown(fd, c->uid_base, c->uid_base) < 0 || fchmod(fd, 0644) < 0)
        return hx_fail(e, errno, "chown the CA bundle: %m");
    if (rename(tmp, path) < 0)
        return hx_fail(e, errno, "rename the CA bundle: %m");
    return 0;
}

static int mkdir_p1(const char *path, mode_t mode, struct hx_err *e)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", path);
    return 0;
}

static int mountx(const char *src, const char *dst, const char *type, unsigned long flags, const char *data,
                  struct hx_err *e)
{
    if (mount(src, dst, type, flags, data) < 0)
        return hx_fail(e, errno, "mount %s on %s (%s): %m", src ? src : "none", dst, type ? type : "bind");
    return 0;
}

/* Read-only bind of a path onto itself (a second step: MS_RDONLY is ignored
 * on the first MS_BIND). Missing paths are skipped: kernels differ. */
static int bind_ro(const char *p, struct hx_err *e)
{
    if (access(p, F_OK) < 0)
        return 0;
    int r = mountx(p, p, NULL, MS_BIND | MS_REC, NULL, e);
    if (r < 0)
        return r;
    return mountx(NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, e);
}

/* A host tree idmapped read-only (image files owned by host root look
 * root-owned inside) and moved onto `at` in the cwd. */
static int idmapped_lower(const char *src, const char *at, struct hx_err *e)
{
    autoclose int tree = (int)syscall(SYS_open_tree, AT_FDCWD, src,
                                      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0)
        return hx_fail(e, errno, "open_tree %s: %m", src);
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
        .userns_fd = INIT_USERNS_FD,
    };
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        return hx_fail(e, errno, "idmap %s: %m", src);
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, at, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return hx_fail(e, errno, "move_mount %s to %s: %m", src, at);
    return 0;
}

/* The image (or a snapshot) idmapped read-only under the writable layer;
 * over the builtin image, hutchd's CA layer when it sent one (the bundle
 * without a 220 KB copy into every writable layer). If that layer cannot
 * be mounted, add_ca_bundle writes the copy as before. */
static int overlay_root(const char *image, const char *ca_layer, struct hx_err *e)
{
    int r;
    if ((r = idmapped_lower(image, "lower", e)) < 0)
        return r;
    const char *opts = "lowerdir=lower,upperdir=upper,workdir=work";
    struct hx_err ce = {0};
    if (ca_layer && mkdir_p1("calower", 0755, &ce) == 0 && idmapped_lower(ca_layer, "calower", &ce) == 0) {
        opts = "lowerdir=calower:lower,upperdir=upper,workdir=work";
        g_ca_layered = true;
    }
    if ((r = mountx("overlay", "root", "overlay", MS_NODEV, opts, e)) < 0)
        return r;
    return 0;
}

/* Step 1: the writable layer and the idmapped image, overlaid on workdir/root. */
static int build_root(const struct setup_cfg *c, struct hx_err *e)
{
    char opts[96];
    int r;
    if (c->disk_dev) {
        /* hutchd's ext4 image on a loop device: a disk limit of its own,
         * outside the memory limit; gone (autoclear) with this namespace. */
        if ((r = mountx(c->disk_dev, c->workdir, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "", e)) < 0)
            return r;
    } else {
        snprintf(opts, sizeof opts, "size=%llum,mode=0755", (unsigned long long)c->disk_mb);
        if ((r = mountx("hutch-sandbox", c->workdir, "tmpfs", MS_NOSUID | MS_NODEV, opts, e)) < 0)
            return r;
    }
    /* Relative paths from here on: overlay options must not see commas or
     * colons that a workdir path could contain. */
    if (chdir(c->workdir) < 0)
        return hx_fail(e, errno, "chdir %s: %m", c->workdir);
    static const char *const dirs[] = {"upper", "work", "lower", "root"};
    for (size_t i = 0; i < HX_ARRAY_LEN(dirs); i++)
        if ((r = mkdir_p1(dirs[i], 0755, e)) < 0)
            return r;
    /* The upper dir's owner is the owner of "/" inside: sandbox root. */
    if (chown("upper", c->uid_base, c->uid_base) < 0)
        return hx_fail(e, errno, "chown upper: %m");

    /* storage: a snapshot is the lower layer instead of the image; a
     * writable root volume is the root itself (no overlay) */
    const char *image = c->image;
    bool root_done = false;
    if ((r = volumes_root(c, &image, &root_done, e)) < 0)
        return r;
    /* the CA layer goes over the builtin image only: a snapshot's bundle is its own */
    if (!root_done && (r = overlay_root(image, image == c->image ? c->ca_layer : NULL, e)) < 0)
        return r;
    /* The image is expected to have /tmp; make sure it is world-writable
     * and sticky whatever the image says. */
    if (mkdir("root/tmp", 01777) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir /tmp: %m");
    if (chmod("root/tmp", 01777) < 0)
        return hx_fail(e, errno, "chmod /tmp: %m");
    return 0;
}

/* The vscode layer (code-server and its Node.js, built once per machine by
 * scripts/build-vscode-layer.sh): read-only at INIT_VSCODE_DIR, two mounts
 * (microseconds), so only the `vscode` RPC pays for what is in it.
 * nosuid,nodev; its files belong to host root, unmapped here, so nobody in
 * the sandbox can write them whatever the mode says. A writable root volume
 * gets no layer: the mount point would be written into the user's volume. */
static int bind_vscode_layer(const struct setup_cfg *c, struct hx_err *e)
{
    if (!c->vscode_layer || c->root_writable)
        return 0;
    /* The root may be a snapshot a sandbox made: never follow its symlinks
     * (an /opt -> / would put the mount point on the host). */
    struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
    autoclose int dir = open("root", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return hx_fail(e, errno, "open root: %m");
    static const char *const parts[] = {"opt", "hutch", "vscode"};
    for (size_t i = 0; i < HX_ARRAY_LEN(parts); i++) {
        bool made = mkdirat(dir, parts[i], 0755) == 0;
        if (!made && errno != EEXIST)
            return hx_fail(e, errno, "mkdir %s in the sandbox: %m", parts[i]);
        int next = (int)syscall(SYS_openat2, dir, parts[i], &how, sizeof how);
        if (next < 0)
            return hx_fail(e, errno, "open %s in the sandbox (no symlinks): %m", parts[i]);
        close(dir);
        dir = next;
        /* sandbox root's, as upper is */
        if (made && fchownat(dir, "", c->uid_base, c->uid_base, AT_EMPTY_PATH) < 0)
            return hx_fail(e, errno, "chown %s: %m", parts[i]);
    }
    /* Not a bind at the mount point: a bind's root field in mountinfo would
     * show the host path of the layer to the sandbox. The layer goes to
     * "vsc" in this scratch dir (detached with the old root) and a read-only
     * overlay of it (with an empty second lower: overlayfs wants two lowers
     * without an upper) is what the sandbox sees, named by relative paths
     * only, as the root overlay is. */
    autoclose int tree = (int)syscall(SYS_open_tree, AT_FDCWD, c->vscode_layer, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0)
        return hx_fail(e, errno, "open_tree %s: %m", c->vscode_layer);
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        return hx_fail(e, errno, "read-only vscode layer: %m");
    if ((mkdir("vsc", 0700) < 0 && errno != EEXIST) || (mkdir("vsc-empty", 0700) < 0 && errno != EEXIST))
        return hx_fail(e, errno, "mkdir vsc: %m");
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, "vsc", MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return hx_fail(e, errno, "move_mount vscode layer: %m");
    char target[64];
    snprintf(target, sizeof target, "/proc/self/fd/%d", dir);
    return mountx("overlay", target, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, "lowerdir=vsc:vsc-empty", e);
}

/* Step 2: /dev (while the host's /dev is still reachable). */
static int build_dev(const struct setup_cfg *c, struct hx_err *e)
{
    char opts[128];
    int r;
    if ((r = mkdir_p1("root/dev", 0755, e)) < 0)
        return r;
    snprintf(opts, sizeof opts, "size=1m,nr_inodes=1024,mode=0755,uid=%u,gid=%u", c->uid_base, c->uid_base);
    if ((r = mountx("tmpfs", "root/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, opts, e)) < 0)
        return r;
    static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    char src[32], dst[64];
    for (size_t i = 0; i < HX_ARRAY_LEN(nodes); i++) {
        snprintf(src, sizeof src, "/dev/%s", nodes[i]);
        snprintf(dst, sizeof dst, "root/dev/%s", nodes[i]);
        int fd = open(dst, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
        if (fd < 0)
            return hx_fail(e, errno, "create %s: %m", dst);
        close(fd);
        if ((r = mountx(src, dst, NULL, MS_BIND, NULL, e)) < 0)
            return r;
        if ((r = mountx(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC, NULL, e)) < 0)
            return r;
    }
    if ((r = mkdir_p1("root/dev/pts", 0755, e)) < 0)
        return r;
    snprintf(opts, sizeof opts, "newinstance,ptmxmode=0666,mode=0620,gid=%u", c->uid_base + 5u);
    if ((r = mountx("devpts", "root/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, opts, e)) < 0)
        return r;
    if ((r = mkdir_p1("root/dev/shm", 01777, e)) < 0)
        return r;
    snprintf(opts, sizeof opts, "size=65536k,mode=1777,uid=%u,gid=%u", c->uid_base, c->uid_base);
    if ((r = mountx("shm", "root/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts, e)) < 0)
        return r;
    static const char *const links[][2] = {
        {"pts/ptmx", "root/dev/ptmx"},        {"/proc/self/fd", "root/dev/fd"},
        {"/proc/self/fd/0", "root/dev/stdin"}, {"/proc/self/fd/1", "root/dev/stdout"},
        {"/proc/self/fd/2", "root/dev/stderr"},
    };
    for (size_t i = 0; i < HX_ARRAY_LEN(links); i++)
        if (symlink(links[i][0], links[i][1]) < 0)
            return hx_fail(e, errno, "symlink %s: %m", links[i][1]);
    return 0;
}

/* Step 3: make root/ the root and drop every path to the host. */
static int enter_root(struct hx_err *e)
{
    if (chdir("root") < 0)
        return hx_fail(e, errno, "chdir root: %m");
    /* pivot_root(".", "."): the old root ends up stacked on "/", and
     * detaching "." then removes it (no temporary directory needed). */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return hx_fail(e, errno, "pivot_root: %m");
    if (umount2(".", MNT_DETACH) < 0)
        return hx_fail(e, errno, "detach old root: %m");
    if (chdir("/") < 0)
        return hx_fail(e, errno, "chdir /: %m");
    return 0;
}

/* Step 4: /proc with Docker's masks. */
static int build_proc(struct hx_err *e)
{
    int r;
    if ((r = mkdir_p1("/proc", 0555, e)) < 0)
        return r;
    if ((r = mountx("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, e)) < 0)
        return r;
    static const char *const masked_files[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list",
                                               "/proc/sched_debug", "/proc/latency_stats",
                                               "/proc/timer_stats"};
    for (size_t i = 0; i < HX_ARRAY_LEN(masked_files); i++) {
        if (access(masked_files[i], F_OK) < 0)
            continue;
        if ((r = mountx("/dev/null", masked_files[i], NULL, MS_BIND, NULL, e)) < 0)
            return r;
    }
    static const char *const masked_dirs[] = {"/proc/acpi", "/proc/scsi", "/proc/asound"};
    for (size_t i = 0; i < HX_ARRAY_LEN(masked_dirs); i++) {
        if (access(masked_dirs[i], F_OK) < 0)
            continue;
        if ((r = mountx("tmpfs", masked_dirs[i], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        "size=0,mode=0555", e)) < 0)
            return r;
    }
    static const char *const ro[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq"};
    for (size_t i = 0; i < HX_ARRAY_LEN(ro); i++)
        if ((r = bind_ro(ro[i], e)) < 0)
            return r;
    return 0;
}

static int loopback_up(struct hx_err *e)
{
    autoclose int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return hx_fail(e, errno, "socket: %m");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return hx_fail(e, errno, "SIOCGIFFLAGS lo: %m");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return hx_fail(e, errno, "SIOCSIFFLAGS lo: %m");
    return 0;
}

/* hutchd puts PID 1 in its cgroups and makes its veth while we build the
 * root; the cgroup namespace below must be made from those cgroups, and
 * nothing of the sandbox's may run before both: wait for HX_GO. Any other
 * frame, or the socket closing, fails the setup. */
static int wait_go(struct hx_err *e)
{
    uint8_t hdr[HX_FRAME_HDR];
    size_t got = 0;
    while (got < sizeof hdr) {
        ssize_t n = read(INIT_AGENT_FD, hdr + got, sizeof hdr - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return hx_fail(e, n < 0 ? errno : EPIPE, "waiting for HX_GO: %s", n < 0 ? strerror(errno) : "socket closed");
        got += (size_t)n;
    }
    struct hx_frame f;
    if (hx_frame_decode(hdr, sizeof hdr, &f) != HX_FRAME_HDR || f.type != HX_GO || f.len != 0)
        return hx_fail(e, EPROTO, "expected HX_GO after HX_SETUP");
    return 0;
}

/* Step 5: the last privileged steps, then become sandbox root. */
static int enter_userns(const struct setup_cfg *c, struct hx_err *e)
{
    if (sethostname(c->hostname, strlen(c->hostname)) < 0)
        return hx_fail(e, errno, "sethostname: %m");
    int r = loopback_up(e);
    if (r < 0)
        return r;
    /* Limits set while still real root (raising a hard limit needs host
     * CAP_SYS_RESOURCE); every spawned process inherits them. */
    struct rlimit nofile = {.rlim_cur = c->nofile, .rlim_max = c->nofile};
    if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
        return hx_fail(e, errno, "setrlimit NOFILE %llu: %m", (unsigned long long)c->nofile);
    struct rlimit core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &core) < 0)
        return hx_fail(e, errno, "setrlimit CORE: %m");
    spawn_set_nofile(c->nofile);
    spawn_set_slice(c->slice_us);
    /* The daemon put us in our cgroups: that becomes "/". On v1 it may
     * have started us in the agents' cpu cgroup (so that building the root
     * runs at the agents' weight, not within the sandboxes' share), so the
     * sandbox's cpu cgroup is joined first (a no-op when already there). */
    if (g_cpu_user_fd >= 0 && write(g_cpu_user_fd, "0", 1) != 1)
        return hx_fail(e, errno ? errno : EIO, "join the sandbox's cpu cgroup: %m");
    if (unshare(CLONE_NEWCGROUP) < 0)
        return hx_fail(e, errno, "unshare cgroup ns: %m");
    /* Then PID 1 alone moves to the agents' cpu cgroup (hutch's weight for
     * the control path); the namespace's root stays the sandbox's, and
     * every child goes back there (spawn_set_cpu_cgroup). */
    if (g_cpu_agent_fd >= 0) {
        if (write(g_cpu_agent_fd, "0", 1) != 1)
            return hx_fail(e, errno ? errno : EIO, "join the agents' cpu cgroup: %m");
        close(g_cpu_agent_fd);
        g_cpu_agent_fd = -1;
    }
    if (setns(INIT_USERNS_FD, CLONE_NEWUSER) < 0)
        return hx_fail(e, errno, "setns user ns: %m");
    if (setgroups(0, NULL) < 0)
        return hx_fail(e, errno, "setgroups: %m");
    if (setresgid(0, 0, 0) < 0)
        return hx_fail(e, errno, "setresgid 0: %m");
    if (setresuid(0, 0, 0) < 0)
        return hx_fail(e, errno, "setresuid 0: %m");
    /* After the id change (which resets it): no core, no ptrace by sandbox root. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return hx_fail(e, errno, "PR_SET_DUMPABLE: %m");
    close(INIT_USERNS_FD);
    return spawn_prepare(e);
}

/* Both `tasks` files are opened now, as real root and while the
 * host's cgroup mounts are still in our mount namespace (copied from
 * hutchd's): written through these fds after the cgroup ns, the user ns
 * and pivot_root. */
static int open_cpu_cgroups(const struct setup_cfg *c, struct hx_err *e)
{
    if (!c->cpu_agent)
        return 0;
    g_cpu_agent_fd = open(c->cpu_agent, O_WRONLY | O_CLOEXEC);
    if (g_cpu_agent_fd < 0)
        return hx_fail(e, errno, "open %s: %m", c->cpu_agent);
    int user = open(c->cpu_user, O_WRONLY | O_CLOEXEC);
    if (user < 0)
        return hx_fail(e, errno, "open %s: %m", c->cpu_user);
    spawn_set_cpu_cgroup(user); /* held for the agent's lifetime */
    g_cpu_user_fd = user;
    return 0;
}

int setup_sandbox(const struct setup_cfg *c, struct hx_err *e)
{
    int r;
    if ((r = open_cpu_cgroups(c, e)) < 0)
        return r;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return hx_fail(e, errno, "make / private: %m");
    if ((r = build_root(c, e)) < 0)
        return r;
    /* Optional: a root whose /opt cannot hold the mount point (a snapshot
     * with a symlink there) or a layer being rebuilt leaves this sandbox
     * without VS Code (the `vscode` RPC then says so), not without a start.
     * Before the volumes: a volume mounted at /opt hides the layer rather
     * than getting its mount point written into it. */
    struct hx_err ve = {0};
    (void)bind_vscode_layer(c, &ve);
    if ((r = volumes_mount(c, e)) < 0 || /* storage: */
        (r = write_resolv_conf(c, e)) < 0 || (r = add_ca_bundle(c, e)) < 0 ||
        (r = build_dev(c, e)) < 0 ||
        (r = views_prepare(e)) < 0 || /* views: before the host's paths go */
        (r = enter_root(e)) < 0 ||
        (r = build_proc(e)) < 0 ||
        (r = views_attach(e)) < 0)
        return r;
    if (c->hold && (r = wait_go(e)) < 0)
        return r;
    return enter_userns(c, e);
}
