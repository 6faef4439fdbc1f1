/* Fair-share admission to a pool of slots (see fairq.h). */
#include "proxy/fairq.h"
#include <stddef.h>

static void ring_add(struct fq *q, struct fq_client *c)
{
    if (!q->ring) {
        c->ring_next = c->ring_prev = c;
        q->ring = c;
        return;
    }
    /* joins at the back: just before the client served next */
    c->ring_next = q->ring;
    c->ring_prev = q->ring->ring_prev;
    c->ring_prev->ring_next = c;
    q->ring->ring_prev = c;
}

static void ring_del(struct fq *q, struct fq_client *c)
{
    if (c->ring_next == c) {
        q->ring = NULL;
    } else {
        c->ring_prev->ring_next = c->ring_next;
        c->ring_next->ring_prev = c->ring_prev;
        if (q->ring == c)
            q->ring = c->ring_next;
    }
    c->ring_next = c->ring_prev = NULL;
}

bool fq_can_run(const struct fq *q, const struct fq_client *c)
{
    return c->queued == 0 && c->running < q->per_client && q->running < q->slots;
}

enum fq_verdict fq_submit(struct fq *q, struct fq_client *c, struct fq_item *it)
{
    it->next = NULL;
    it->queued_in = NULL;
    if (fq_can_run(q, c)) {
        c->running++;
        q->running++;
        return FQ_RUN;
    }
    if (c->queued >= q->queue_max)
        return FQ_FULL;
    if (c->tail)
        c->tail->next = it;
    else
        c->head = it;
    c->tail = it;
    it->queued_in = c;
    if (c->queued++ == 0)
        ring_add(q, c);
    return FQ_QUEUED;
}

void fq_done(struct fq *q, struct fq_client *c)
{
    if (q->running)
        q->running--;
    if (c && c->running)
        c->running--;
}

static struct fq_item *pop(struct fq *q, struct fq_client *c)
{
    struct fq_item *it = c->head;
    c->head = it->next;
    if (!c->head)
        c->tail = NULL;
    it->next = NULL;
    it->queued_in = NULL;
    if (--c->queued == 0)
        ring_del(q, c);
    return it;
}

struct fq_item *fq_next(struct fq *q)
{
    if (q->running >= q->slots || !q->ring)
        return NULL;
    struct fq_client *c = q->ring;
    do {
        if (c->running < q->per_client) {
            struct fq_client *after = c->ring_next;
            struct fq_item *it = pop(q, c);
            if (c->queued) /* the next turn is the following client's */
                q->ring = after;
            c->running++;
            q->running++;
            return it;
        }
        c = c->ring_next;
    } while (c != q->ring);
    return NULL;
}

void fq_cancel(struct fq *q, struct fq_item *it)
{
    struct fq_client *c = it->queued_in;
    if (!c)
        return;
    struct fq_item **pp = &c->head, *prev = NULL;
    while (*pp && *pp != it) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = it->next;
    if (c->tail == it)
        c->tail = prev;
    it->next = NULL;
    it->queued_in = NULL;
    if (--c->queued == 0)
        ring_del(q, c);
}

struct fq_item *fq_client_remove(struct fq *q, struct fq_client *c)
{
    struct fq_item *list = c->head;
    for (struct fq_item *it = list; it; it = it->next)
        it->queued_in = NULL;
    if (c->queued)
        ring_del(q, c);
    c->head = c->tail = NULL;
    c->queued = 0;
    return list;
}
