/* Intrusive doubly linked list for the transport's connection bookkeeping: removal is O(1). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

struct link {
    struct link *prev, *next;
};

static inline void link_init(struct link *l) { l->prev = l->next = l; }
static inline bool link_empty(const struct link *l) { return l->next == l; }
static inline void link_add(struct link *head, struct link *l)  /* at the tail: oldest first */
{
    l->next = head;
    l->prev = head->prev;
    head->prev->next = l;
    head->prev = l;
}
static inline void link_del(struct link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}
#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))
