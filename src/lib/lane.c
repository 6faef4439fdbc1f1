/* A thread of its own for blocking jobs, in order (lane.h). */
#include "lib/lane.h"
#include <errno.h>
#include <signal.h>
#include <string.h>

/* Appends j to the list head..tail (under the lane's mutex). */
static void push(struct hx_lane_job **head, struct hx_lane_job **tail, struct hx_lane_job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static void *lane_main(void *arg)
{
    struct hx_lane *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->todo && !l->stop)
            pthread_cond_wait(&l->cond, &l->mu);
        if (l->stop)
            break;
        struct hx_lane_job *j = l->todo;
        l->todo = j->next;
        if (!l->todo)
            l->todo_tail = NULL;
        pthread_mutex_unlock(&l->mu);
        j->work(j);
        pthread_mutex_lock(&l->mu);
        push(&l->done, &l->done_tail, j);
        uv_async_send(&l->async);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void on_async(uv_async_t *h)
{
    struct hx_lane *l = h->data;
    pthread_mutex_lock(&l->mu);
    struct hx_lane_job *j = l->done;
    l->done = l->done_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    while (j) {
        struct hx_lane_job *next = j->next; /* done may queue j again */
        if (--l->pending == 0)
            uv_unref((uv_handle_t *)&l->async);
        j->done(j);
        j = next;
    }
}

int hx_lane_start(struct hx_lane *l, uv_loop_t *loop, const char *name)
{
    memset(l, 0, sizeof *l);
    l->loop = loop;
    int r = uv_async_init(loop, &l->async, on_async);
    if (r < 0)
        return r;
    l->async.data = l;
    uv_unref((uv_handle_t *)&l->async); /* an idle lane does not keep the loop alive */
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cond, NULL);
    /* Signals stay with the loop's thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    r = pthread_create(&l->thread, NULL, lane_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        uv_close((uv_handle_t *)&l->async, NULL);
        return -r;
    }
    pthread_setname_np(l->thread, name);
    l->started = true;
    return 0;
}

void hx_lane_queue(struct hx_lane *l, struct hx_lane_job *j, void (*work)(struct hx_lane_job *),
                   void (*done)(struct hx_lane_job *))
{
    j->work = work;
    j->done = done;
    if (l->pending++ == 0)
        uv_ref((uv_handle_t *)&l->async);
    pthread_mutex_lock(&l->mu);
    push(&l->todo, &l->todo_tail, j);
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mu);
}

void hx_lane_stop(struct hx_lane *l)
{
    if (!l->started)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->started = false;
    uv_close((uv_handle_t *)&l->async, NULL);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->mu);
}
