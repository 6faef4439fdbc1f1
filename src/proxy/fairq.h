/* Fair shares of a pool of concurrent slots (the proxy's upstream lookups):
 * a client runs at most per_client items at once and waits in its own FIFO
 * of at most queue_max; a freed slot goes to the next waiting client in turn
 * (round robin), so one client can fill neither the slots nor another's
 * queue. Pure bookkeeping, no I/O and no clock: the caller starts items. */
#pragma once
#include <stdbool.h>

struct fq_client;

struct fq_item {
    struct fq_item *next;
    struct fq_client *queued_in;  /* set while it waits in a client's FIFO */
};

struct fq_client {
    struct fq_client *ring_next, *ring_prev;  /* in the ring while queued > 0 */
    struct fq_item *head, *tail;
    unsigned running, queued;
};

struct fq {
    unsigned slots, per_client, queue_max;
    unsigned running;
    struct fq_client *ring;       /* the client served next */
};

enum fq_verdict { FQ_RUN, FQ_QUEUED, FQ_FULL };

/* FQ_RUN: start it now (counted as running). FQ_QUEUED: fq_next hands it out
 * later. FQ_FULL: the client's queue is full; nothing was kept. */
enum fq_verdict fq_submit(struct fq *q, struct fq_client *c, struct fq_item *it);
/* Would fq_submit run an item of c at once? */
bool fq_can_run(const struct fq *q, const struct fq_client *c);
/* A running item of c finished (c NULL: its client is gone). */
void fq_done(struct fq *q, struct fq_client *c);
/* The next queued item that may start, already counted as running for its
 * client, or NULL. Call until NULL after fq_done. */
struct fq_item *fq_next(struct fq *q);
/* Takes a queued item out of its client's FIFO (not counted anywhere after). */
void fq_cancel(struct fq *q, struct fq_item *it);
/* c goes away: returns its queued items as a list (next) for the caller to
 * fail; its running items stay counted in q until fq_done(q, NULL). */
struct fq_item *fq_client_remove(struct fq *q, struct fq_client *c);
