/* File-system RPCs (issue: files). Registered in rpc.c's method tables. */
#include "daemon/core/rpc.h"

const struct rpc_method rpc_fs_methods[] = {
    {NULL, NULL},
};
