/* hutch-init's reading of hutchd's frames (src/init/agent.c): the frame
 * loop (on_sock_read), dispatch and on_call's parsing of every call, with
 * the environment methods run for real (envs.c). Parts cut at "\n--\n" are
 * successive reads of the agent socket.
 *
 * A seam without touching agent.c: it is included here, with kill() and
 * _exit() redirected (its shutdown path is kill(-1, SIGKILL): never on this
 * machine), spawn_process() refusing after all of call_spawn's checks (no
 * process is started, so call_kill finds none to signal), and the fs relay
 * declining (the fs worker has its own target, fuzz_fsops). Oracle: every
 * frame init sends back is well formed, and a malformed frame ends the
 * agent (shutdown_all) instead of being misread. */
#include "fuzz.h"
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>
#include "init/init.h"

static jmp_buf g_jmp;
static int g_shutdowns;
static int fuzz_kill(pid_t pid, int sig)
{
    FUZZ_CHECK(pid == -1);  /* only shutdown_all may get here: no process is ever ours */
    return 0;
}
static _Noreturn void fuzz_exit(int code)
{
    g_shutdowns++;
    longjmp(g_jmp, 1);
}
#define kill fuzz_kill
#define _exit fuzz_exit
#include "../../src/init/agent.c"
#undef kill
#undef _exit

const char *errno_name(int code)
{
    const char *n = code > 0 ? strerrorname_np(code) : NULL;
    return n ? n : "EIO";
}
int spawn_process(const struct spawn_req *r, struct spawn_res *out, struct hx_err *e)
{
    FUZZ_CHECK(r->command && *r->command && r->argv && r->argv[0] && r->envp && r->cwd);
    return hx_fail(e, EPERM, "fuzz: no process is started");
}
bool fsrelay_call(uint32_t chan, const char *method, const uint8_t *payload, uint32_t len) { return false; }
bool fsrelay_frame(uint16_t type, uint32_t chan, const uint8_t *payload, uint32_t len) { return false; }
void fsrelay_reset(void) {}

static int g_peer = -1;

static void drain(void)
{
    static uint8_t buf[HX_FRAME_HDR + HX_FRAME_MAX + 65536];
    static size_t len;
    for (;;) {
        ssize_t k = read(g_peer, buf + len, sizeof buf - len);
        if (k <= 0)
            break;
        len += (size_t)k;
        size_t off = 0;
        for (;;) {
            struct hx_frame f;
            int r = hx_frame_decode(buf + off, len - off, &f);
            FUZZ_CHECK(r >= 0);
            if (r == 0)
                break;
            if (f.type == HX_REPLY) {
                json_error_t jerr;
                json_t *v = json_loadb((const char *)f.payload, f.len, 0, &jerr);
                FUZZ_CHECK(v && (json_object_get(v, "ok") || json_object_get(v, "error")));
                json_decref(v);
            }
            off += (size_t)r;
        }
        memmove(buf, buf + off, len - off);
        len -= off;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    g_loop = uv_default_loop();
    g_rbuf = malloc(RBUF_CAP);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    g_peer = sv[1];
    fcntl(g_peer, F_SETFL, O_NONBLOCK);
    g_sock = malloc(sizeof *g_sock);
    g_relink.tail = &g_relink.head;
    if (!g_sock || uv_pipe_init(g_loop, g_sock, 0) < 0 || uv_pipe_open(g_sock, sv[0]) < 0)
        abort();
    env_init_defaults();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    const uint8_t *p;
    size_t n;
    g_rlen = 0;
    if (setjmp(g_jmp) == 0) {
        while (fuzz_part(&in, &p, &n)) {
            /* a read as libuv hands it over: into g_rbuf after what is held */
            while (n) {
                uv_buf_t b;
                sock_alloc((uv_handle_t *)g_sock, 65536, &b);
                size_t k = n < b.len ? n : b.len;
                memcpy(b.base, p, k);
                on_sock_read((uv_stream_t *)g_sock, (ssize_t)k, &b);
                p += k;
                n -= k;
                uv_run(g_loop, UV_RUN_NOWAIT);
                drain();
            }
        }
    }
    g_rlen = 0;
    for (int i = 0; i < 3; i++) {
        uv_run(g_loop, UV_RUN_NOWAIT);
        drain();
    }
    /* the environment starts over (envSet/envDelete of one input must not steer the next) */
    json_t *env = env_to_json();
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v) env_delete(k);
    json_decref(env);
    env_init_defaults();
    return 0;
}
