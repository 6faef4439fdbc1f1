/* Live restore (docs/restore.md): sandboxes outlive hutchd, and the next
 * hutchd adopts the ones that should still run and cleans up the others.
 * On --live-restore, each sandbox's hutch-init listens on a socket hutchd
 * bound in the sandbox's scratch dir; its row in the store says what the
 * adoption needs; its secrets wait in the kernel keyring. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include "lib/err.h"

struct sandbox;

/* The socket a returning hutchd connects to: STATE/sandboxes/ID/agent.sock. */
void restore_agent_path(const char *id, char *out, size_t cap);
/* At create, with live restore on: the socket bound (not listening: hutch-init
 * listens, so SO_PEERCRED names it), for the launch. -1 when off. */
int restore_bind(const char *id, struct hx_err *e);
/* The HX_SETUP "restore" member ({"wait_ms"}), or NULL when off. */
json_t *restore_setup(void);
/* When a user gets the sandbox (sandbox_record): what the adoption needs. */
void restore_keep(struct sandbox *sb);
/* lifecycle.c: the sandbox's timeout changed; its agent learns it, so that
 * waiting for a hutchd never keeps the sandbox past it. */
void restore_deadline_changed(struct sandbox *sb);
/* expose.c: the sandbox's exposures changed (kept in its row). */
void restore_exposures_changed(struct sandbox *sb);
/* At teardown: the socket and the kept secrets go. */
void restore_forget(const char *id);

/* At start: with live restore on, the agent sockets' paths must fit a
 * unix socket address (a state dir of at most about 60 bytes). */
int restore_check_config(struct hx_err *e);
/* At start, before the stale-state sweep: registers every sandbox of the
 * previous hutchd whose PID 1 is still the one it launched; the sweep then
 * removes whatever else is left. */
void restore_adopt_all(void);
/* After the network is up: reconnects to the adopted sandboxes' agents and
 * waits (bounded) for their hellos, so that the API opens with them ready. */
void restore_connect_all(void);
/* agent.c: the adopted sandbox's agent said HX_HELLO (validated JSON object). */
void restore_on_hello(struct sandbox *sb, json_t *hello);
/* At SIGTERM with live restore: lets every adoptable sandbox go on running
 * without us (its agent waits for the next hutchd) and stops the others.
 * Called again on each shutdown tick: a sandbox a worker thread still holds
 * is let go once it is free. */
void restore_release_all(void);
/* True when sandboxes were left running (then our nftables table stays). */
bool restore_left_running(void);
