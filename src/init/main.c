/* hutch-init: PID 1 of every sandbox. Reads HX_SETUP from fd 3, builds the
 * sandbox (setup.c), answers HX_READY, then runs the agent loop (agent.c). */
#include "init/init.h"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include "lib/views.h"
#include "lib/wire.h"

const char *errno_name(int code)
{
    /* strerrorname_np (glibc 2.32+) gives "ENOENT"; a fallback keeps the reply well-formed. */
    const char *n = code > 0 ? strerrorname_np(code) : NULL;
    return n ? n : "EIO";
}

static int read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void send_ready(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!s)
        _exit(1);
    size_t n = strnlen(s, HX_FRAME_MAX);
    uint8_t hdr[HX_FRAME_HDR];
    hx_frame_hdr_encode(hdr, HX_READY, 0, (uint32_t)n);
    if (write_full(INIT_AGENT_FD, hdr, sizeof hdr) < 0 || write_full(INIT_AGENT_FD, s, n) < 0)
        _exit(1);
    free(s);
}

static _Noreturn void fail_setup(const struct hx_err *e)
{
    send_ready(json_pack("{s:{s:s,s:s}}", "error", "code", errno_name(e->code), "message", e->msg));
    _exit(1);
}

int main(void)
{
    struct hx_err e = {0};
    /* PID 1 must survive whatever happens to its stdio or socket peers. */
    signal(SIGPIPE, SIG_IGN);
    umask(022); /* whatever hutchd had: spawned processes inherit ours */
    if (getpid() != 1 || fcntl(INIT_AGENT_FD, F_GETFD) < 0 || fcntl(INIT_USERNS_FD, F_GETFD) < 0) {
        fputs("hutch-init: must be started by hutchd as PID 1 with fds 3 and 4\n", stderr);
        return 2;
    }
    fcntl(INIT_AGENT_FD, F_SETFD, FD_CLOEXEC);
    fcntl(INIT_USERNS_FD, F_SETFD, FD_CLOEXEC);
    /* Live restore: hutchd bound this socket; listening here makes the
     * credentials a returning hutchd reads with SO_PEERCRED this process's. */
    int restore_fd = -1;
    if (fcntl(INIT_RESTORE_FD, F_SETFD, FD_CLOEXEC) == 0 && listen(INIT_RESTORE_FD, 4) == 0)
        restore_fd = INIT_RESTORE_FD;
    fcntl(INIT_ROOT_FD, F_SETFD, FD_CLOEXEC); /* a snapshot root's mount, when hutchd passed one */
    for (int i = 0; i < HX_VIEW_N; i++) /* lxcfs's files, when hutchd passed them */
        fcntl(INIT_VIEWS_FD + i, F_SETFD, FD_CLOEXEC);

    /* The first frame must be HX_SETUP. Read exactly one frame, so that
     * whatever follows is left for the agent loop. */
    uint8_t hdr[HX_FRAME_HDR];
    if (read_full(INIT_AGENT_FD, hdr, sizeof hdr) < 0)
        return 1;
    struct hx_frame f;
    uint32_t len = hx_get_u32(hdr);
    if (len > HX_FRAME_MAX || hx_frame_decode(hdr, sizeof hdr, &f) < 0 ||
        (uint16_t)(hdr[4] | hdr[5] << 8) != HX_SETUP) {
        hx_fail(&e, EPROTO, "first frame must be HX_SETUP");
        fail_setup(&e);
    }
    char *payload = malloc(len ? len : 1);
    if (!payload || read_full(INIT_AGENT_FD, payload, len) < 0)
        return 1;
    json_error_t jerr;
    json_t *spec = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    free(payload);
    if (!spec) {
        hx_fail(&e, EINVAL, "setup: bad JSON: %s", jerr.text);
        fail_setup(&e);
    }
    struct setup_cfg cfg;
    if (setup_parse(spec, &cfg, &e) < 0)
        fail_setup(&e);
    /* "restore": {"wait_ms": N} (live restore) */
    json_t *jr = json_object_get(spec, "restore");
    json_int_t wait_ms = json_integer_value(json_object_get(jr, "wait_ms"));
    if (!jr || restore_fd < 0 || wait_ms <= 0) {
        if (restore_fd >= 0)
            close(restore_fd);
        restore_fd = -1;
    }

    env_init_defaults();
    if (cfg.env) {
        const char *k;
        json_t *v;
        json_object_foreach(cfg.env, k, v) {
            if (env_set(k, json_string_value(v), &e) < 0)
                fail_setup(&e);
        }
    }
    if (setup_sandbox(&cfg, &e) < 0)
        fail_setup(&e);
    json_decref(spec);
    landlock_probe();

    send_ready(json_pack("{s:b}", "ok", 1));
    int r = agent_run(INIT_AGENT_FD, restore_fd, (uint64_t)wait_ms);
    return r < 0 ? 1 : 0;
}
