/* JSON-RPC session layer: one struct session per client WebSocket. */
#pragma once
#include <stddef.h>
#include "daemon/core/sandbox.h"

void rpc_on_text(struct session *s, const char *data, size_t len);
void rpc_on_drain(struct session *s);
/* Detaches from the sandbox and frees the session (the ws is gone). */
void rpc_session_free(struct session *s);
int rpc_signal_number(const char *name);
