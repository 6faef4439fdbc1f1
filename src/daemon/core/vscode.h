/* VS Code in the browser (issue 8): the `vscode` RPC (its method table and
 * hooks are in rpc.h) and the layer it runs from. docs/expose.md. */
#pragma once
#include "daemon/core/sandbox.h"

/* The vscode layer's host directory if it is built (its .complete stamp
 * exists), else NULL: new sandboxes get it bound at /opt/hutch/vscode. */
const char *vscode_layer_ready(void);
