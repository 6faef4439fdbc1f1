/* hutch-init, storage: volumes mounted at paths inside the sandbox and a
 * root other than the builtin image (docs/storage.md). Runs as real root
 * during setup, like the rest of setup.c, whose threat model applies:
 *  - the loop devices are hutchd's, named "/dev/loopN" only; the images
 *    hold ext4 file systems that only the kernel ever wrote (a sandbox sees
 *    a mounted file system, never the image);
 *  - every volume is mounted idmapped with the sandbox's user namespace:
 *    files keep the ids they have inside (0 root, 1000 app) on disk, so one
 *    volume works in any sandbox whatever its host uid range;
 *  - volumes are nodev,nosuid; a snapshot root is read-only;
 *  - a mount path is re-checked here ([A-Za-z0-9._-] components, no . or
 *    ..) and its directories are made one component at a time with
 *    O_NOFOLLOW: a bootable volume's tree was written by an earlier sandbox,
 *    and a symlink planted there must never lead real root onto the host. */
#include "init/init.h"
#include <fcntl.h>
#include <limits.h>
#include <linux/mount.h>
#include <stdio.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define VOL_PATH_MAX 200

static bool loop_dev_ok(const char *d)
{
    return d && strncmp(d, "/dev/loop", 9) == 0 && d[9] && strspn(d + 9, "0123456789") == strlen(d + 9) &&
           strlen(d) <= 20;
}

static bool vol_path_ok(const char *p)
{
    size_t n = p ? strnlen(p, VOL_PATH_MAX + 1) : 0;
    if (n < 2 || n > VOL_PATH_MAX || p[0] != '/')
        return false;
    for (const char *s = p; *s;) {
        s++;
        size_t len = strcspn(s, "/");
        if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.') ||
            strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") < len)
            return false;
        s += len;
    }
    static const char *const off[] = {"/proc", "/dev", "/sys"};
    for (size_t i = 0; i < HX_ARRAY_LEN(off); i++) {
        size_t l = strlen(off[i]);
        if (strncmp(p, off[i], l) == 0 && (p[l] == 0 || p[l] == '/'))
            return false;
    }
    return true;
}

int setup_volumes_parse(json_t *root, struct setup_cfg *c, struct hx_err *e)
{
    json_t *vols = json_object_get(root, "volumes");
    if (vols && !json_is_null(vols)) {
        if (!json_is_array(vols) || json_array_size(vols) > HX_ARRAY_LEN(c->vols))
            return hx_fail(e, EINVAL, "setup: bad volumes");
        size_t i;
        json_t *v;
        json_array_foreach(vols, i, v) {
            const char *dev = json_string_value(json_object_get(v, "dev"));
            const char *path = json_string_value(json_object_get(v, "path"));
            if (!loop_dev_ok(dev) || !vol_path_ok(path))
                return hx_fail(e, EINVAL, "setup: bad volume %zu", i);
            c->vols[c->n_vols++] = (struct setup_vol){dev, path};
        }
    }
    json_t *r = json_object_get(root, "root");
    if (r && !json_is_null(r)) {
        /* a bootable volume: {"dev": "/dev/loopN", "writable": true}; a
         * snapshot: {"fd": 7, "writable": false}, the mount hutchd passed */
        const char *dev = json_string_value(json_object_get(r, "dev"));
        json_t *w = json_object_get(r, "writable"), *fd = json_object_get(r, "fd");
        if (json_is_true(w) && loop_dev_ok(dev) && !fd) {
            c->root_dev = dev;
            c->root_writable = true;
        } else if (json_is_false(w) && !dev && json_is_integer(fd) && json_integer_value(fd) == INIT_ROOT_FD &&
                   fcntl(INIT_ROOT_FD, F_GETFD) >= 0) {
            c->root_tree = true;
        } else {
            return hx_fail(e, EINVAL, "setup: bad root");
        }
    }
    return 0;
}

/* Clones the mount at path, idmapped to the sandbox's user namespace. */
static int idmapped_clone(const char *path, bool readonly, struct hx_err *e)
{
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0)
        return hx_fail(e, errno, "open_tree %s: %m", path);
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : 0),
        .userns_fd = INIT_USERNS_FD,
    };
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
        int r = hx_fail(e, errno, "idmap %s: %m", path);
        close(tree);
        return r;
    }
    return tree;
}

int volumes_root(const struct setup_cfg *c, const char **image, bool *done, struct hx_err *e)
{
    *done = false;
    if (!c->root_dev && !c->root_tree)
        return 0;
    if (mkdir("base", 0700) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir base: %m");
    if (c->root_tree) {
        /* hutchd's clone of the snapshot's one shared mount (ext4 ro,
         * noload, nodev: never written, its journal never replayed) */
        int r = 0;
        if (syscall(SYS_move_mount, INIT_ROOT_FD, "", AT_FDCWD, "base", MOVE_MOUNT_F_EMPTY_PATH) < 0)
            r = hx_fail(e, errno, "move_mount snapshot root: %m");
        close(INIT_ROOT_FD);
        if (r < 0)
            return r;
        *image = "base"; /* the lower layer, idmapped and read-only like the image */
        return 0;
    }
    if (mount(c->root_dev, "base", "ext4", MS_NODEV | MS_NOATIME, "") < 0)
        return hx_fail(e, errno, "mount root %s: %m", c->root_dev);
    int tree = idmapped_clone("base", false, e);
    if (tree < 0)
        return tree;
    int r = 0;
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, "root", MOVE_MOUNT_F_EMPTY_PATH) < 0)
        r = hx_fail(e, errno, "move_mount root volume: %m");
    close(tree);
    umount2("base", MNT_DETACH);
    if (r < 0)
        return r;
    /* From here on, files made in root/ are made through the idmapped
     * mount, which has no id for host root: make them as sandbox root (on
     * disk: 0). A non-root fsuid also drops the file capabilities, so
     * nothing below can override a permission in the volume. */
    setfsgid(c->uid_base);
    setfsuid(c->uid_base);
    if ((uid_t)setfsuid((uid_t)-1) != c->uid_base)
        return hx_fail(e, EPERM, "setfsuid %u failed", c->uid_base);
    *done = true;
    return 0;
}

/* Opens root/path as a directory, making missing components (owned by
 * sandbox root) and refusing symlinks at every step. */
static int mkdir_walk(const struct setup_cfg *c, const char *path, struct hx_err *e)
{
    int fd = open("root", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return hx_fail(e, errno, "open root: %m");
    char comp[NAME_MAX + 1];
    for (const char *s = path; *s;) {
        s++;
        size_t len = strcspn(s, "/");
        if (len == 0 || len > NAME_MAX)
            break;
        memcpy(comp, s, len);
        comp[len] = 0;
        s += len;
        if (mkdirat(fd, comp, 0755) == 0) {
            if (fchownat(fd, comp, c->uid_base, c->uid_base, AT_SYMLINK_NOFOLLOW) < 0 && !c->root_writable) {
                int r = hx_fail(e, errno, "chown %s: %m", path);
                close(fd);
                return r;
            }
        } else if (errno != EEXIST) {
            int r = hx_fail(e, errno, "mkdir %s: %m", path);
            close(fd);
            return r;
        }
        int next = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        if (next < 0)
            return hx_fail(e, errno == ELOOP ? ENOTDIR : errno, "volume mount point %s: %m (a symlink is not followed)",
                           path);
        fd = next;
    }
    return fd;
}

int volumes_mount(const struct setup_cfg *c, struct hx_err *e)
{
    for (unsigned i = 0; i < c->n_vols; i++) {
        char stage[16];
        snprintf(stage, sizeof stage, "vol%u", i);
        /* the staging mount point is in workdir, made as real root */
        uid_t fsu = (uid_t)setfsuid(0);
        gid_t fsg = (gid_t)setfsgid(0);
        int r = 0;
        if (mkdir(stage, 0700) < 0 && errno != EEXIST)
            r = hx_fail(e, errno, "mkdir %s: %m", stage);
        else if (mount(c->vols[i].dev, stage, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "") < 0)
            r = hx_fail(e, errno, "mount volume %s at %s: %m", c->vols[i].dev, c->vols[i].path);
        setfsgid(fsg);
        setfsuid(fsu);
        if (r < 0)
            return r;
        int tree = idmapped_clone(stage, false, e);
        if (tree < 0)
            return tree;
        int at = mkdir_walk(c, c->vols[i].path, e);
        if (at < 0) {
            close(tree);
            return at;
        }
        if (syscall(SYS_move_mount, tree, "", at, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
            r = hx_fail(e, errno, "move_mount volume to %s: %m", c->vols[i].path);
        close(tree);
        close(at);
        umount2(stage, MNT_DETACH);
        if (r < 0)
            return r;
    }
    return 0;
}
