/* The hutch-ingress process on hutchd's side: started on first use,
 * restarted on a crash with every route, fed its certificate, listening
 * sockets and routes, and answering its requests for upstream sockets
 * through the callbacks the core registers. docs/expose.md. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "lib/err.h"

struct ingress_ops {
    /* the ingress asks for a socket to exposure `name`: answer with ingress_connected(req, ...) */
    void (*connect)(const char *name, uint32_t req);
    /* the ingress (re)started: push every route again with ingress_route */
    void (*resend)(void);
};

/* Idempotent: the CA, the certificate, the process. */
int ingress_start(const struct ingress_ops *ops, struct hx_err *e);
/* hutchd is shutting down: a hutch-ingress that exits now stays down. */
void ingress_stopping(void);
void ingress_fini(void);

/* The base domain (host mode) or NULL (port mode: a port per exposure). */
const char *ingress_base_domain(void);
/* The domain the SDK turns into "https://" + domain: port mode
 * "ADDR:PORT/NAME", host mode "NAME.BASE[:PORT]". */
void ingress_domain(const char *name, uint16_t port, char *out, size_t cap);
/* Port mode: a new listening socket on the ingress address (the kernel picks
 * the port). Returns the fd (O_CLOEXEC) or -errno. */
int ingress_listen(uint16_t *port, struct hx_err *e);
/* Live restore: a listening socket on that very port (an adopted exposure's
 * URL stays the same). -errno (EADDRINUSE when taken meanwhile). */
int ingress_listen_at(uint16_t port, struct hx_err *e);

/* Adds or updates a route; listen_fd (port mode, else -1) is borrowed: a
 * duplicate travels to the ingress the first time. */
void ingress_route(const char *name, const char *sandbox, uint16_t port, int target, int listen_fd, bool first,
                   bool gone);
/* The sandbox stopped: its connections close, its requests get 404. */
void ingress_gone(const char *name);
void ingress_unroute(const char *name);
/* The answer to a connect: fd (owned from here; closed after sending) or -1 and err (an errno). */
void ingress_connected(uint32_t req, int fd, int err);
