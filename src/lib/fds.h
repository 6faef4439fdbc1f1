/* This process's open file descriptors against its RLIMIT_NOFILE: whether
 * another piece of work that needs some more still fits. */
#pragma once

/* How many descriptors this process has open, or -errno. */
int hx_fds_open(void);

/* 0 when `want` more descriptors fit below `limit` with `reserve` of them
 * kept free beside the `open` ones, else -EMFILE. */
int hx_fds_room(long open, long limit, long want, long reserve);
