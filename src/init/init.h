/* hutch-init internals shared by its files: setup, seccomp, spawn, env store, agent loop. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>
#include <linux/filter.h>
#include "lib/err.h"

#define INIT_AGENT_FD 3   /* socket to hutchd */
#define INIT_USERNS_FD 4  /* the sandbox's user namespace (closed after setup) */
#define INIT_RESTORE_FD 6 /* live restore: a bound unix socket a returning hutchd connects to (optional) */
#define INIT_ROOT_FD 7    /* a snapshot root: a detached clone of hutchd's shared mount of it (optional) */
#define INIT_VIEWS_FD 8   /* views: HX_VIEW_N detached clones of lxcfs's files, fds 8.. (optional) */
#define INIT_APP_UID 1000u

/* HX_SETUP, validated (setup.c). Strings point into the JSON object. */
struct setup_cfg {
    const char *id, *hostname, *image, *workdir;
    uint32_t uid_base, uid_count;
    uint64_t disk_mb;
    const char *disk_dev; /* "/dev/loopN" with an ext4 writable layer, or NULL: a tmpfs of disk_mb */
    uint64_t pids_max, nofile;
    uint64_t slice_us; /* EEVDF slice of every spawned process, µs (0 = the kernel's) */
    json_t *env; /* object of strings, or NULL */
    const char *dns4, *dns6; /* net: the host end of the veth (our DNS), NULL = no network */
    const char *ca_layer;    /* secrets: hutchd's tree holding the CA bundle, laid over the image, or NULL */
    /* storage: volumes (ext4 on loop devices) and a root other than the image */
    struct setup_vol { const char *dev, *path; } vols[8];
    unsigned n_vols;
    const char *root_dev;    /* a bootable volume on a loop device: the root itself, written in place */
    bool root_writable;      /* root_dev is set (a volume); false with root_tree */
    bool root_tree;          /* a snapshot: the read-only lower layer is the mount at INIT_ROOT_FD */
    const char *vscode_layer; /* host dir bound read-only at INIT_VSCODE_DIR, or NULL (docs/expose.md) */
    bool hold;               /* wait for HX_GO (cgroups and veth done) before the cgroup ns and HX_READY */
    /* v1: `tasks` of the agents' cpu cgroup (PID 1 joins it after its
     * cgroup ns is made) and of the sandbox's (its children), or NULL */
    const char *cpu_agent, *cpu_user;
};
#define INIT_VSCODE_DIR "/opt/hutch/vscode"


/* setup.c */
int setup_parse(json_t *root, struct setup_cfg *c, struct hx_err *e);
/* Builds the root filesystem and namespaces, then enters the user namespace
 * as its root. Only returns success with everything done. */
int setup_sandbox(const struct setup_cfg *c, struct hx_err *e);

/* volumes.c (storage): "volumes" and "root" of HX_SETUP, validated. */
int setup_volumes_parse(json_t *root, struct setup_cfg *c, struct hx_err *e);
/* In workdir (the cwd), before the overlay: puts a snapshot's mount
 * (INIT_ROOT_FD) on "base" for the lower layer (*image then names it), or
 * mounts a volume (root_dev) as "root" itself (*done set: no overlay). */
int volumes_root(const struct setup_cfg *c, const char **image, bool *done, struct hx_err *e);
/* After the root is built: each volume at its path inside root/. */
int volumes_mount(const struct setup_cfg *c, struct hx_err *e);

/* seccomp.c: loads the filter generated at build time; async-signal-safe
 * (used between fork and exec). */
int seccomp_apply(void); /* returns 0 or -errno */

/* envs.c: the sandbox environment (ordered map of strings). */
void env_init_defaults(void);
int env_set(const char *key, const char *value, struct hx_err *e);
const char *env_get(const char *key);
bool env_delete(const char *key);
json_t *env_to_json(void);
bool env_key_valid(const char *key);
/* A NULL-terminated "K=V" array for a spawn: sandbox env (unless clear) +
 * extra (object of strings, may be NULL). Free with env_free_block(). */
char **env_build(bool clear, json_t *extra, struct hx_err *e);
void env_free_block(char **block);

/* spawn.c */
struct spawn_req {
    const char *command;
    const char *const *argv; /* argv[0] = command, NULL-terminated */
    char **envp;
    const char *cwd;
    uid_t uid;
    bool pipe_in, pipe_out, pipe_err;
    /* a pseudo-terminal instead (hutch's own extension, docs/protocol.md):
     * stdin, stdout and stderr are its slave, the parent keeps the master */
    bool pty;
    unsigned short rows, cols;
};
struct spawn_res {
    pid_t pid;
    int in_fd, out_fd, err_fd; /* parent ends, -1 when not piped (O_CLOEXEC); a pty: in_fd and out_fd are the master */
};
void spawn_set_nofile(uint64_t nofile);
void spawn_set_slice(uint64_t slice_us);
/* FD (O_WRONLY, opened as real root): the `tasks` file of the sandbox's cpu
 * cgroup (v1; a thread's move, which skips the threadgroup lock's RCU
 * wait); each child writes itself there before anything of the sandbox's
 * runs, so none stays in the agents' cgroup. -1 = stay where PID 1 is. */
void spawn_set_cpu_cgroup(int fd);
/* Once, as sandbox root after the user namespace is entered: the bounding
 * set cut to Docker's capabilities, the ambient and inheritable sets
 * emptied (every spawned process inherits them), the children's stack. */
int spawn_prepare(struct hx_err *e);
int spawn_process(const struct spawn_req *r, struct spawn_res *out, struct hx_err *e);

/* agent.c */
/* restore_fd: INIT_RESTORE_FD, listening, or -1; wait_ms: how long, once
 * hutchd is gone, to wait for another before ending the sandbox. */
int agent_run(int fd, int restore_fd, uint64_t wait_ms);

/* main.c */
const char *errno_name(int code);

/* ---- files (fs_relay.c, fsops.c, fs_walk.c; docs/agent-protocol.md "Files") ---- */
/* agent.c: one frame to hutchd (used by the fs relay). */
struct uv_pipe_s *agent_take_fd(void);
void agent_send_frame(uint16_t type, uint32_t chan, const void *p, size_t len);
/* fs_relay.c: true when the call is a file method (then it was forwarded to
 * the fs worker or answered with an error). */
bool fsrelay_call(uint32_t chan, const char *method, const uint8_t *payload, uint32_t len);
/* fs_relay.c: true when chan is an fs stream (HX_STDIN/HX_CREDIT relayed). */
bool fsrelay_frame(uint16_t type, uint32_t chan, const uint8_t *payload, uint32_t len);
/* fs_relay.c: hutchd went away: the worker and its transfers end (the next call starts one). */
void fsrelay_reset(void);
/* fsops.c: the fs worker's main loop, in a child of PID 1; never returns. */
_Noreturn void fs_worker_main(int sock);

/* landlock.c: probe once at start; apply between fork and exec. */
void landlock_probe(void);
int landlock_abi(void);
int landlock_apply(void);
