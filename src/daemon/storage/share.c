/* Shared snapshot roots (share.h, docs/storage.md). */
#include "daemon/storage/share.h"
#include "daemon/storage/pool.h"
#include <fcntl.h>
#include <linux/mount.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct storage_share {
    struct storage_share *next;
    char id[32];
    struct storage_attach a; /* the image (holding the shared lock) on its loop device */
    int mnt;                 /* the detached ext4 mount; every sandbox's tree is a clone of it */
    unsigned refs;
    uint64_t idle_since_ms;
};

static pthread_mutex_t share_mu = PTHREAD_MUTEX_INITIALIZER;
static struct storage_share *shares;

static void share_close(struct storage_share *s)
{
    if (s->mnt >= 0)
        close(s->mnt); /* the loop device goes (autoclear) with the last clone of this mount */
    storage_attach_close(&s->a);
    free(s);
}

static int share_mount(struct storage_share *s, struct hx_err *e)
{
    autoclose int fs = (int)syscall(SYS_fsopen, "ext4", FSOPEN_CLOEXEC);
    if (fs < 0)
        return hx_fail(e, errno, "fsopen ext4: %m");
    /* ro + noload: a snapshot is never written, its journal never replayed */
    if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", s->a.dev, 0) < 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "noload", NULL, 0) < 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return hx_fail(e, errno, "mount snapshot %s (ext4 on %s): %m", s->id, s->a.dev);
    int m = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME);
    if (m < 0)
        return hx_fail(e, errno, "fsmount snapshot %s: %m", s->id);
    s->mnt = m;
    /* the mount holds the loop device now: drop our opener so that
     * autoclear frees the device with the mount's last clone */
    close(s->a.dev_fd);
    s->a.dev_fd = -1;
    return 0;
}

int storage_share_get(const char *id, int wait_ms, struct storage_share **out, struct hx_err *e)
{
    *out = NULL;
    if (!id || strlen(id) >= sizeof((struct storage_share *)0)->id)
        return hx_fail(e, EINVAL, "bad snapshot id");
    pthread_mutex_lock(&share_mu);
    struct storage_share *s;
    for (s = shares; s; s = s->next)
        if (strcmp(s->id, id) == 0)
            break;
    int r = 0;
    if (!s) {
        /* Made under the mutex: two sandboxes booting one snapshot at once
         * must not make two shares. Other snapshots wait a few ms. */
        s = calloc(1, sizeof *s);
        if (!s) {
            r = hx_fail(e, ENOMEM, "out of memory");
            goto out;
        }
        snprintf(s->id, sizeof s->id, "%s", id);
        s->a = (struct storage_attach)STORAGE_ATTACH_INIT;
        s->mnt = -1;
        if ((r = storage_image_attach(id, true, wait_ms, &s->a, e)) < 0 || (r = share_mount(s, e)) < 0) {
            share_close(s);
            goto out;
        }
        s->next = shares;
        shares = s;
    }
    s->refs++;
    *out = s;
out:
    pthread_mutex_unlock(&share_mu);
    return r;
}

int storage_share_adopt(const char *id, const char *dev, struct storage_share **out, struct hx_err *e)
{
    *out = NULL;
    if (!id || strlen(id) >= sizeof((struct storage_share *)0)->id || !dev ||
        strlen(dev) >= sizeof((struct storage_attach *)0)->dev)
        return hx_fail(e, EINVAL, "bad snapshot id or device");
    pthread_mutex_lock(&share_mu);
    struct storage_share *s;
    for (s = shares; s; s = s->next)
        if (strcmp(s->id, id) == 0 && strcmp(s->a.dev, dev) == 0)
            break;
    int r = 0;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            r = hx_fail(e, ENOMEM, "out of memory");
            goto out;
        }
        snprintf(s->id, sizeof s->id, "%s", id);
        snprintf(s->a.dev, sizeof s->a.dev, "%s", dev);
        s->a.file_fd = -1; /* the lock stays with the device's own file description */
        s->mnt = -1;
        /* held: the device cannot go or change file while we mount it, and
         * the mount reuses the superblock the sandboxes' clones are on */
        if ((r = storage_image_held(id, dev, true, e)) < 0) {
            free(s);
            goto out;
        }
        s->a.dev_fd = r;
        r = 0;
        if ((r = share_mount(s, e)) < 0) {
            share_close(s);
            goto out;
        }
        s->next = shares;
        shares = s;
    }
    s->refs++;
    *out = s;
out:
    pthread_mutex_unlock(&share_mu);
    return r;
}

int storage_share_tree(struct storage_share *s, struct hx_err *e)
{
    /* s->mnt stays open while s is referenced: no lock needed */
    int t = (int)syscall(SYS_open_tree, s->mnt, "", AT_EMPTY_PATH | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (t < 0)
        return hx_fail(e, errno, "clone the mount of snapshot %s: %m", s->id);
    return t;
}

const char *storage_share_dev(const struct storage_share *s)
{
    return s->a.dev;
}

void storage_share_put(struct storage_share *s, uint64_t now_ms)
{
    if (!s)
        return;
    pthread_mutex_lock(&share_mu);
    if (s->refs && --s->refs == 0)
        s->idle_since_ms = now_ms;
    pthread_mutex_unlock(&share_mu);
}

unsigned storage_share_reap(uint64_t linger_ms, uint64_t now_ms)
{
    unsigned idle = 0;
    pthread_mutex_lock(&share_mu);
    for (struct storage_share **pp = &shares; *pp;) {
        struct storage_share *s = *pp;
        if (s->refs == 0 && now_ms - s->idle_since_ms >= linger_ms) {
            *pp = s->next;
            share_close(s);
            continue;
        }
        idle += s->refs == 0;
        pp = &s->next;
    }
    pthread_mutex_unlock(&share_mu);
    return idle;
}

int storage_share_drop(const char *id)
{
    int r = 0;
    pthread_mutex_lock(&share_mu);
    for (struct storage_share **pp = &shares; *pp; pp = &(*pp)->next) {
        struct storage_share *s = *pp;
        if (strcmp(s->id, id) != 0)
            continue;
        if (s->refs) {
            r = -EBUSY;
        } else {
            *pp = s->next;
            share_close(s);
        }
        break;
    }
    pthread_mutex_unlock(&share_mu);
    return r;
}
