/* The daemon's picture of a sandbox: lifecycle, the agent connection, the
 * processes it runs and the client sessions attached to it. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>
#include "daemon/config.h"
#include "daemon/sandbox/disk.h"
#include "lib/err.h"
#include "lib/lane.h"
#include "lib/wire.h"

struct ws_conn;
struct session;
struct sandbox;
struct store;
struct net_sb;
struct secret_set;
struct sb_storage;
struct proc_stats;
struct sb_samples;
struct sandbox_rec;
struct deno_sb;

enum sandbox_state { SB_STARTING, SB_RUNNING, SB_STOPPING, SB_STOPPED };

/* A waiter for processWait; its session may go away first (then s is NULL). */
struct waiter {
    struct waiter *next;
    struct session *s;
    json_t *rpc_id;
};

/* apps: a process hutchd itself runs in a sandbox (a build step, an app):
 * its output and exit go to these instead of a client. on_output with n == 0:
 * that stream ended. Neither is called after the sandbox stopped (watch
 * for that separately) or after sandbox_proc_unsink. */
struct proc_sink {
    /* false: not wanted any more (its owner stopped); the process then runs unobserved */
    bool (*on_spawned)(void *ud, uint32_t pid, const struct hx_err *err);
    void (*on_output)(void *ud, unsigned fd, const uint8_t *p, size_t n);
    void (*on_exit)(void *ud, int code, const char *signal, bool oom);
};

struct proc {
    struct proc *next;
    uint32_t pid;                 /* pid inside the sandbox */
    struct session *owner;        /* who gets the output; NULL once it left */
    uint64_t stream_id[2];        /* client-visible stream ids, 0 = not piped */
    bool stream_open[2];
    bool exited;
    int code;
    char signal[16];
    bool oom;
    bool reported;                /* a processWait got the status */
    bool deno_watch;              /* deno: a --watch process; hutchd reads its stderr for restarts */
    uint32_t inflight[2];         /* output bytes received, not yet credited back */
    int64_t exited_ms;
    struct waiter *waiters;
    const struct proc_sink *sink; /* apps: a process hutchd runs itself (no session), else NULL */
    void *sink_ud;
};

/* A stream the client sends to us (stdin of a process). Bytes that arrive
 * before the spawn that claims it are held, bounded. */
struct inbound {
    struct inbound *next;
    int64_t client_id;
    uint32_t pid;                 /* 0 until a spawn claims it */
    bool ended;
    bool bound_closed;            /* the process is gone: drop further data */
    size_t held_len;
    struct held_chunk *held, **held_tail;
};

/* A session without a WebSocket (SSH's channels, core/expose_ssh.c): rpc.c
 * hands it what it would have sent to a client. */
struct session_sink {
    void (*message)(struct session *s, json_t *msg);   /* a reply or notification (borrowed) */
    /* bytes of a process it spawned (fd 0 stdout, 1 stderr); len 0: that output ended */
    void (*output)(struct session *s, uint32_t pid, unsigned fd, const uint8_t *data, size_t len);
    size_t (*queued)(struct session *s);                /* output bytes not yet handed on (credit waits) */
    void (*set_reading)(struct session *s, bool on);   /* stdin back-pressure */
    void (*closed_by_sandbox)(struct session *s);      /* the sandbox stopped; s is unlinked (s->sb NULL) */
};

struct session {
    struct session *next;         /* in sb->sessions */
    struct sandbox *sb;
    struct ws_conn *ws;
    const struct session_sink *sink; /* instead of ws; sink_ud is its owner's */
    void *sink_ud;
    struct inbound *inbound;
    bool paused;                  /* not reading the client: too much stdin, or too many calls, in flight */
    bool binary;                  /* hutch's binary stream messages negotiated (docs/protocol.md) */
    unsigned calls;               /* agent calls it waits for (agent.c); at SESSION_CALLS_MAX its client is not read */
    void *deferred;               /* output credit held while the client socket is backed up */
    char token_id[32];            /* the token it was opened with ("" on the unix socket) */
};

typedef void (*agent_reply_cb)(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud);

struct pending_call {
    struct pending_call *next;
    uint32_t req;
    agent_reply_cb cb;
    struct session *s;            /* NULL when the session left */
    json_t *rpc_id;
    void *ud;
    bool raw_data_ok;             /* a reply {"ok":{"data":"<base64>"}} may go to the client as it is */
    /* Set: the reply's bytes go here unparsed (hostile: the callee checks them), not to cb;
     * cb still gets the NULL reply if the sandbox stops first. */
    void (*raw_reply)(struct sandbox *sb, const uint8_t *p, size_t n, void *ud);
};

/* Live restore (core/restore.c, docs/restore.md): what a sandbox needs to
 * outlive hutchd and to be adopted by the next one. */
struct sb_restore {
    int launch_fd;                /* the bound agent socket for the launch, -1 */
    uint64_t init_start;          /* PID 1's start time (clock ticks): a reused pid has another */
    bool restorable;              /* the store (and keyring) hold what an adoption needs */
    bool adopting;                /* taken over from a previous hutchd, waiting for its agent's hello */
    bool no_adopt;                /* its creator asked that it end with this hutchd (sandbox_params) */
};

typedef void (*sandbox_ready_cb)(struct sandbox *sb, const struct hx_err *err, void *ud);

struct sandbox {
    struct sandbox *next;         /* registry */
    char id[32];
    char org[64];
    enum sandbox_state state;
    uint32_t slot, uid_base;
    pid_t pid;
    int pidfd;
    uv_poll_t pidfd_poll;
    uv_pipe_t agent;
    bool agent_open;
    uint8_t *rbuf;                /* a frame the agent sent in part (agent.c): rlen of its rneed bytes are in; */
    size_t rneed, rcap;           /* rcap: the buffer's size; NULL once unused for a while */
    uint64_t rbuf_used_ms;        /* uv_now() when rbuf last held a frame */
    bool agent_overrun;           /* its socket's write queue passed the bound */
    double log_tokens;            /* HX_LOG rate limit */
    int64_t log_last_ms;
    unsigned log_suppressed;
    size_t rlen;
    uint32_t next_req;
    /* Bumped by every client message and agent frame of this sandbox except the
     * replies of fileRead's read-ahead (rpc_fs.c): read-ahead data is used only while
     * nothing else happened since it was asked for. */
    uint64_t io_epoch;
    struct pending_call *calls;
    struct proc *procs;
    uint32_t n_procs;
    struct session *sessions;
    uv_timer_t stop_timer;        /* duration timeout */
    uv_timer_t aux_timer;         /* start-up deadline, then teardown retries */
    int teardown_tries;
    /* Its cgroup directories are made and removed on hutchd's cgroup lane
     * (lifecycle.c), never on the loop: cg_job is queued there at most once
     * at a time; cg_rc and cg_err are written by the lane's thread. */
    struct hx_lane_job cg_job;
    int cg_rc;
    struct hx_err cg_err;
    char *cg_cpus;                /* for the create: its cpuset's CPUs ("0,1"), NULL = the parent's; owned */
    bool cg_made;                 /* its cgroup directories may exist */
    char gone_link[16];           /* at teardown: its veth, removed on the lane too (net_link_remove) */
    struct disk_layer gone_disk;  /* at teardown: its layer's fds, closed on the lane (the last close frees its extents) */
    int open_handles;
    int64_t created_ms, stop_at_ms;
    uint32_t memory_mb;
    uint32_t cpu_millis;          /* its CPU quota: the hutch.cpu_millis label, else --cpu-millis */
    json_t *labels;
    json_t *init_env;
    uint64_t oom_seen;
    size_t stdin_inflight;        /* bytes sent to the agent, not yet acknowledged */
    sandbox_ready_cb ready_cb;
    void *ready_ud;
    char stop_reason[128];
    /* net: the allowNet value as given (NULL/null = unrestricted, [] = no network) and the network state */
    json_t *allow_net;
    struct net_sb *net;
    struct secret_set *secrets;   /* secrets: values for the proxy, placeholders in init_env; owned */
    bool pooled;                  /* in the warm pool: nobody's yet, not listed */
    bool recorded;                /* has a row in the store */
    bool usage_recorded;
    uint64_t cpu_base_ns;         /* metering: CPU its cgroup had used when its owner got it (warm pool) */
    struct proc_stats *proc_stats; /* metering: its reaped processes' usage (procstats.c); owned, may be NULL */
    bool launching;               /* a worker thread is cloning its init */
    bool poll_init;               /* pidfd_poll initialised */
    uv_work_t launch_req;
    int launch_rc, launch_fd;     /* written by the worker thread */
    bool cg_entered;              /* by it too: init was cloned inside its cgroups (cgroup_enter) */
    bool plumbing;                /* a worker thread attaches its cgroups and makes its veth (plumb_req) */
    bool exit_seen;               /* PID 1 exited while plumbing: on_init_exit's work waits for plumb_done */
    uv_work_t plumb_req;
    int plumb_rc;                 /* written by that worker */
    struct hx_err plumb_err;
    struct hx_err launch_err;
    struct disk_layer disk;       /* its writable layer (daemon/sandbox/disk.h) */
    struct sb_storage *storage;   /* storage: its volumes and root (core/volumes.h); owned, may be NULL */
    uint64_t views_gen;           /* views: the lxcfs generation its /proc binds show (views_sync.c) */
    uint64_t launch_views_gen;    /* views: lxcfs's generation of the clones launch_work passed, 0 = none */
    bool views_busy;              /* views: a worker is re-binding them */
    json_t *views_cpus;           /* views: its CPUs (affinity, v1 cpuset), NULL = all */
    struct sb_samples *samples;   /* dashboard: its CPU and memory samples (sbstats.c); owned, may be NULL */
    struct sb_restore restore;    /* live restore (core/restore.c) */
    struct deno_sb *deno;         /* deno: its REPL control listener (rpc_deno.c); owned, may be NULL */
    uint64_t trace_ns[16];        /* HUTCH_CREATE_TRACE: when each step of its start ended (lifecycle.c) */
};

struct daemon_ctx {
    uv_loop_t *loop;
    struct config *cfg;
    struct store *store;
    int init_memfd;
    char image_root[4096];
    struct sandbox *sandboxes;
    uint32_t n_sandboxes;
    uint8_t *slots;               /* uid range slots in use */
    uint64_t next_stream_id;      /* daemon-wide: the SDK keeps one stream map per process */
    uint32_t n_claimed;           /* sandboxes held by users (the warm pool not counted) */
    bool shutting_down;
};

extern struct daemon_ctx g_daemon;

struct sandbox_params {
    const char *org;
    uint32_t memory_mb;
    uint32_t cpu_millis;          /* its CPU quota (sandbox_cpu_millis) */
    int64_t stop_at_ms;           /* 0 = session */
    json_t *labels;               /* borrowed */
    json_t *env;                  /* borrowed, may be NULL */
    json_t *allow_net;            /* net: borrowed, validated; NULL = unrestricted */
    struct secret_set *secrets;   /* secrets: moved into the sandbox when create or the pool takes it (then NULL) */
    bool pooled;                  /* pool: started ahead of demand, nobody's yet */
    bool pool_extra;              /* pool: beyond --warm (a burst): started only while the disk has room
                                   * for one more layer besides its own, which a create may need */
    struct sb_storage *storage;   /* storage: moved into the sandbox by sandbox_create (then NULL) */
    bool no_adopt;                /* restore: never left running for the next hutchd (its owner does not outlive us) */
};

int sandbox_create(const struct sandbox_params *p, sandbox_ready_cb cb, void *ud, struct hx_err *e);
/* The threads of their own that sandboxes' blocking steps run on (their
 * cgroup directories): started before the first create, stopped after the
 * loop has ended. */
int sandbox_lanes_start(struct hx_err *e);
void sandbox_lanes_stop(void);
/* The CPU quota a sandbox asks for with its labels: "hutch.cpu_millis" (the
 * SDK has no CPU option; labels it passes as they are), thousandths of a CPU,
 * 10 up to --cpu-millis, the default when absent. -EINVAL with a message. */
/* The longest path a file call takes (bytes): the fs RPCs (rpc_fs.c) and the
 * raw file channel (rest_files.c) refuse longer ones alike. */
#define SANDBOX_PATH_MAX 4096
#define SANDBOX_CPU_LABEL "hutch.cpu_millis"
int sandbox_cpu_millis(const json_t *labels, uint32_t *out, struct hx_err *e);
void sandbox_record(struct sandbox *sb);
uint32_t sandbox_disk_mb(const struct sandbox *sb);
void sandbox_disk_release(struct sandbox *sb);

/* The warm pool (pool.c): sandboxes started ahead of demand, so that a
 * create only has to hand one over. */
void pool_start(void);
void pool_kick(void);
unsigned pool_target(void); /* the size the pool is kept at now (--warm, more during a burst) */
/* Hands a ready pooled sandbox over to p's owner, or returns NULL (then
 * create one). */
struct sandbox *pool_take(const struct sandbox_params *p);
struct sandbox *sandbox_find(const char *id);
/* Stops and removes everything of the sandbox; idempotent. */
void sandbox_stop(struct sandbox *sb, const char *reason);
void sandbox_set_stop_at(struct sandbox *sb, int64_t stop_at_ms);
void sandbox_session_attach(struct sandbox *sb, struct session *s);
/* Detaches a session; a session-timeout sandbox stops with its last one. */
void sandbox_session_detach(struct session *s);
/* Cleans up what a previous hutchd left behind (cgroups, scratch dirs, records). */
void sandbox_cleanup_stale(void);
void sandbox_stop_all(void);
/* views (views_sync.c): the setup message's "views" member, and bringing a
 * running sandbox's /proc binds to the current lxcfs (or to none). */
json_t *sandbox_views_setup(struct sandbox *sb);
void sandbox_views_sync(struct sandbox *sb);
void sandbox_views_changed(void *ud);

/* Agent calls: params are stolen. cb runs exactly once (reply NULL if the sandbox died). */
int agent_call(struct sandbox *sb, const char *method, json_t *params, agent_reply_cb cb,
               struct session *s, json_t *rpc_id, void *ud);
/* The same with a descriptor passed along (SCM_RIGHTS): fd is consumed, also
 * on failure (hutch's raw file channel, rest_files.c). No session. */
int agent_call_fd(struct sandbox *sb, const char *method, json_t *params, int fd, agent_reply_cb cb, void *ud);
/* apps (rpc.c): runs command as app (uid 1000) with output piped to sink.
 * env: object of strings (borrowed) or NULL; cwd may be NULL. */
int sandbox_spawn_internal(struct sandbox *sb, const char *command, json_t *args, json_t *env, const char *cwd,
                           const struct proc_sink *sink, void *ud, struct hx_err *e);
void sandbox_proc_unsink(struct sandbox *sb, void *ud);
int agent_send(struct sandbox *sb, uint16_t type, uint32_t chan, const void *data, size_t len);
void agent_credit(struct sandbox *sb, uint32_t chan, uint32_t bytes);
/* A reply's bytes, checked: {"ok":..} or {"error":{..}}, else an EIO error object; NULL only
 * when out of memory. */
json_t *agent_reply_parse(const uint8_t *p, size_t n);
/* {"ok":{"data":"<base64>"}} exactly: may go to the client unparsed (agent_forward_raw). */
bool agent_reply_is_plain_data(const uint8_t *p, size_t n);
void agent_forward_raw(struct session *s, json_t *rpc_id, const uint8_t *p, size_t n);
struct proc *sandbox_proc(struct sandbox *sb, uint32_t pid);
/* Hooks the agent layer calls into (implemented by the RPC layer). */
void rpc_on_output(struct sandbox *sb, struct proc *p, unsigned fd, const uint8_t *data, size_t len);
void rpc_on_exit(struct sandbox *sb, struct proc *p);
void rpc_on_stdin_ack(struct sandbox *sb);
void rpc_session_closed_by_sandbox(struct session *s, const char *reason);

int64_t now_ms(void);
/* Close callback for every handle embedded in a sandbox: frees it after the last. */
void sandbox_on_handle_closed(uv_handle_t *h);
void sandbox_on_ready(struct sandbox *sb, json_t *msg);
int agent_start(struct sandbox *sb, int fd, struct hx_err *e);
/* restore: connects to an adopted sandbox's agent socket at path; the peer
 * must be its PID 1 (SO_PEERCRED) and say HX_HELLO first. */
int agent_reconnect(struct sandbox *sb, const char *path, struct hx_err *e);
/* restore: a sandbox of a previous hutchd, registered in state SB_STARTING
 * (adopting) with its PID 1 watched through pidfd (owned from here on). */
struct sandbox *sandbox_adopt(const struct sandbox_rec *rec, uint32_t slot, int pidfd, struct hx_err *e);
/* restore: forgets the sandbox without stopping it (hutchd exits, it runs on). */
void sandbox_release(struct sandbox *sb, const char *reason);
