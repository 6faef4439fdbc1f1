/* Keeps every running sandbox's /proc binds on the lxcfs that serves now
 * (daemon/sandbox/views.c): after lxcfs died, none (the kernel's files, not
 * ENOTCONN); after it serves again, its files. One worker job per sandbox
 * at a time; a change while one runs is picked up when it ends. */
#include "daemon/core/sandbox.h"
#include "daemon/sandbox/views.h"
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

struct views_job {
    uv_work_t req;
    char id[32];
    int pidfd;                  /* our own dup: the sandbox may close its one meanwhile */
    char dir[PATH_MAX];         /* "" = remove the binds */
    uint64_t gen;
    int rc;
    struct hx_err e;
};

json_t *sandbox_views_setup(struct sandbox *sb)
{
    sb->views_gen = views_generation();
    json_t *v = json_object();
    const char *dir = views_dir();
    if (sb->launch_views_gen) {
        /* hutch-init got the clones at launch (fds 8..): what they show is
         * this generation's; at ready, sandbox_views_sync rebinds them if
         * lxcfs changed since */
        sb->views_gen = sb->launch_views_gen;
        json_object_set_new(v, "trees", json_integer(8));
    } else if (dir) {
        json_object_set_new(v, "lxcfs", json_string(dir));
    }
    if (sb->views_cpus)
        json_object_set(v, "cpus", sb->views_cpus);
    return v;
}

static void on_job(uv_work_t *req)
{
    struct views_job *j = req->data;
    j->rc = views_apply(j->pidfd, j->dir[0] ? j->dir : NULL, &j->e);
}

static void on_job_done(uv_work_t *req, int status)
{
    struct views_job *j = req->data;
    close(j->pidfd);
    struct sandbox *sb = sandbox_find(j->id);
    if (sb) {
        sb->views_busy = false;
        /* A failure is logged once per change, never retried in a loop. */
        sb->views_gen = j->gen;
        if (j->rc < 0 || status < 0)
            fprintf(stderr, "hutchd: %s: resource views: %s\n", sb->id, status < 0 ? "cancelled" : j->e.msg);
        sandbox_views_sync(sb);
    }
    free(j);
}

void sandbox_views_sync(struct sandbox *sb)
{
    if (sb->views_busy || sb->state != SB_RUNNING || sb->pidfd < 0 || sb->views_gen == views_generation())
        return;
    struct views_job *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->pidfd = fcntl(sb->pidfd, F_DUPFD_CLOEXEC, 0);
    if (j->pidfd < 0) {
        free(j);
        return;
    }
    snprintf(j->id, sizeof j->id, "%s", sb->id);
    const char *dir = views_dir();
    snprintf(j->dir, sizeof j->dir, "%s", dir ? dir : "");
    j->gen = views_generation();
    j->req.data = j;
    sb->views_busy = true;
    uv_queue_work(g_daemon.loop, &j->req, on_job, on_job_done);
}

void sandbox_views_changed(void *ud)
{
    (void)ud;
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next)
        sandbox_views_sync(sb);
}
