/* Plays hutchd against a real hutch-init: launches a sandbox with
 * sandbox_launch(), sends HX_SETUP and checks the isolation promises and the
 * agent protocol. Needs root and a built image.
 *
 *   agent_driver INIT_BINARY [IMAGE_ROOTFS]            self-test, prints "N passed, N failed"
 *   agent_driver INIT_BINARY IMAGE_ROOTFS -c 'script'   runs one bash script as app and prints its output */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include "daemon/sandbox/launch.h"
#include "lib/wire.h"

#define DEFAULT_IMAGE_CACHE "/var/cache/hutch/images"

static int g_fd = -1;
static pid_t g_init_pid;
static uint32_t g_uid_base;
static int g_pass, g_fail;
static uint32_t g_next_chan = 1;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    fflush(stdout);
    ok ? g_pass++ : g_fail++;
}

static void write_all(const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t r = write(g_fd, b, n);
        if (r <= 0) {
            perror("write agent socket");
            exit(2);
        }
        b += r;
        n -= (size_t)r;
    }
}

static void send_frame(uint16_t type, uint32_t chan, const void *p, uint32_t len)
{
    uint8_t hdr[HX_FRAME_HDR];
    hx_frame_hdr_encode(hdr, type, chan, len);
    write_all(hdr, sizeof hdr);
    if (len)
        write_all(p, len);
}

static void send_json(uint16_t type, uint32_t chan, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    send_frame(type, chan, s, (uint32_t)strlen(s));
    free(s);
}

static void send_credit(uint32_t chan, uint32_t n)
{
    uint8_t b[4];
    hx_put_u32(b, n);
    send_frame(HX_CREDIT, chan, b, 4);
}

/* Reads one frame; returns false on timeout (ms, -1 = forever) or EOF. */
struct frame {
    uint16_t type;
    uint32_t chan, len;
    uint8_t *data; /* malloc'd, NUL-terminated */
};

static bool read_full_to(uint8_t *p, size_t n, int timeout_ms)
{
    while (n) {
        struct pollfd pfd = {.fd = g_fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr <= 0)
            return false;
        ssize_t r = read(g_fd, p, n);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static bool read_frame(struct frame *f, int timeout_ms)
{
    uint8_t hdr[HX_FRAME_HDR];
    if (!read_full_to(hdr, sizeof hdr, timeout_ms))
        return false;
    struct hx_frame hf;
    if (hx_frame_decode(hdr, sizeof hdr, &hf) < 0) {
        fprintf(stderr, "bad frame header from agent\n");
        exit(2);
    }
    f->len = hx_get_u32(hdr);
    f->type = (uint16_t)(hdr[4] | hdr[5] << 8);
    f->chan = hx_get_u32(hdr + 8);
    f->data = malloc(f->len + 1);
    if (!read_full_to(f->data, f->len, 10000)) {
        fprintf(stderr, "short frame from agent\n");
        exit(2);
    }
    f->data[f->len] = 0;
    if (f->type == HX_LOG)
        fprintf(stderr, "[agent log] %s\n", (char *)f->data);
    return true;
}

/* Sends a call and waits for its reply, handling nothing else (callers use
 * it when no process output can interleave, or stash it). */
struct result {
    char *out, *err;
    size_t out_n, err_n;
    int code;
    char signal[32];
    bool exited;
    int eofs, want_eofs; /* output streams ended / to wait for */
};

static void result_free(struct result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

static void handle_stream_frame(struct frame *f, pid_t pid, struct result *res, bool credit)
{
    if (f->type == HX_OUTPUT && HX_STREAM_PID(f->chan) == (uint32_t)pid) {
        char **buf = HX_STREAM_FD(f->chan) ? &res->err : &res->out;
        size_t *n = HX_STREAM_FD(f->chan) ? &res->err_n : &res->out_n;
        *buf = realloc(*buf, *n + f->len + 1);
        memcpy(*buf + *n, f->data, f->len);
        *n += f->len;
        (*buf)[*n] = 0;
        if (f->len == 0)
            res->eofs++;
        if (credit && f->len)
            send_credit(f->chan, f->len);
    } else if (f->type == HX_EXIT && f->chan == (uint32_t)pid) {
        json_t *j = json_loadb((char *)f->data, f->len, 0, NULL);
        res->code = (int)json_integer_value(json_object_get(j, "code"));
        const char *s = json_string_value(json_object_get(j, "signal"));
        snprintf(res->signal, sizeof res->signal, "%s", s ? s : "");
        res->exited = true;
        json_decref(j);
    }
}

/* Makes a call; frames that are not its reply are handed to the stream
 * collector for pid (if any). Returns the reply JSON (owned). */
static json_t *call(const char *method, json_t *params, pid_t pid, struct result *res)
{
    uint32_t chan = g_next_chan++;
    send_json(HX_CALL, chan, json_pack("{s:s,s:o}", "method", method, "params", params));
    for (;;) {
        struct frame f;
        if (!read_frame(&f, 20000)) {
            fprintf(stderr, "no reply to %s\n", method);
            exit(2);
        }
        if (f.type == HX_REPLY && f.chan == chan) {
            json_t *j = json_loadb((char *)f.data, f.len, 0, NULL);
            free(f.data);
            return j;
        }
        if (res)
            handle_stream_frame(&f, pid, res, true);
        free(f.data);
    }
}

static pid_t spawn(json_t *params, json_t **err_out)
{
    json_t *r = call("spawn", params, 0, NULL);
    json_t *ok = json_object_get(r, "ok");
    pid_t pid = ok ? (pid_t)json_integer_value(json_object_get(ok, "pid")) : -1;
    if (err_out)
        *err_out = json_incref(json_object_get(r, "error"));
    else if (pid < 0) {
        char *s = json_dumps(r, 0);
        fprintf(stderr, "spawn failed: %s\n", s);
        free(s);
    }
    json_decref(r);
    return pid;
}

static void wait_exit(pid_t pid, struct result *res)
{
    while (!res->exited || res->eofs < res->want_eofs) {
        struct frame f;
        if (!read_frame(&f, 30000)) {
            fprintf(stderr, "timeout waiting for pid %d\n", (int)pid);
            exit(2);
        }
        handle_stream_frame(&f, pid, res, true);
        free(f.data);
    }
}

/* Runs `bash -c script` as uid and collects everything. */
static void run_as(const char *script, int uid, struct result *res)
{
    memset(res, 0, sizeof *res);
    pid_t pid = spawn(json_pack("{s:s,s:[s,s],s:b,s:b,s:b,s:i}", "command", "bash", "args", "-c", script,
                                "stdin", 0, "stdout", 1, "stderr", 1, "uid", uid),
                      NULL);
    if (pid < 0) {
        res->code = -1;
        res->exited = true;
        return;
    }
    res->want_eofs = 2;
    wait_exit(pid, res);
}

static void run(const char *script, struct result *res)
{
    run_as(script, 1000, res);
}

static bool out_is(const struct result *r, const char *want)
{
    return r->out && strcmp(r->out, want) == 0;
}

/* ---- the sandbox ---------------------------------------------------------- */

static int start_sandbox(const char *init, const char *image, const char *workdir, pid_t *pid, int *pidfd)
{
    struct hx_err e = {0};
    int memfd = sandbox_init_memfd(init, &e);
    if (memfd < 0) {
        fprintf(stderr, "init memfd: %s\n", e.msg);
        return -1;
    }
    g_uid_base = 1000000000u + 65536u * (uint32_t)(getpid() % 1000);
    struct launch_spec spec = {.id = "sbx_tst_driver", .uid_base = g_uid_base, .uid_count = 65536,
                               .init_memfd = memfd, .restore_fd = -1, .root_tree_fd = -1};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (sandbox_launch(&spec, &g_fd, pid, pidfd, &e) < 0) {
        fprintf(stderr, "launch: %s\n", e.msg);
        return -1;
    }
    close(memfd);
    send_json(HX_SETUP, 0,
              json_pack("{s:s,s:s,s:s,s:s,s:I,s:i,s:i,s:i,s:i,s:{s:s}}", "id", "sbx_tst_driver", "hostname",
                        "sbx-tst-driver", "image", image, "workdir", workdir, "uid_base", (json_int_t)g_uid_base,
                        "uid_count", 65536, "disk_mb", 256, "pids_max", 1024, "nofile", 4096, "env",
                        "HUTCH_TEST", "1"));
    struct frame f;
    if (!read_frame(&f, 20000) || f.type != HX_READY) {
        fprintf(stderr, "no HX_READY\n");
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "ready in %.1f ms: %s\n",
            (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6, (char *)f.data);
    bool ok = strstr((char *)f.data, "\"ok\"") != NULL;
    free(f.data);
    g_init_pid = *pid;
    return ok ? 0 : -1;
}

static uint32_t host_uid_of_child(void)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)g_init_pid, (int)g_init_pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    int child = 0;
    if (fscanf(fp, "%d", &child) != 1)
        child = 0;
    fclose(fp);
    if (!child)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/status", child);
    fp = fopen(path, "r");
    uint32_t uid = 0;
    while (fp && fgets(buf, sizeof buf, fp))
        if (sscanf(buf, "Uid: %u", &uid) == 1)
            break;
    if (fp)
        fclose(fp);
    return uid;
}

static void selftest(void)
{
    struct result r;

    run("id; ls /; cat /proc/1/status | head -3", &r);
    printf("--- id; ls /; head -3 /proc/1/status (exit %d)\n%s%s---\n", r.code, r.out ? r.out : "",
           r.err ? r.err : "");
    check(r.code == 0 && r.out && strstr(r.out, "uid=1000(app) gid=1000(app)"), "runs as app (uid 1000)");
    result_free(&r);

    run("id -u; sudo -n id -u", &r);
    check(out_is(&r, "1000\n0\n"), "sudo works: id -u -> 0 (got %s, err %s)", r.out, r.err);
    result_free(&r);

    run("sudo -n mount -t tmpfs x /mnt", &r);
    check(r.code != 0, "sudo mount fails (exit %d: %s)", r.code, r.err ? r.err : "");
    result_free(&r);

    run("sudo -n umount /proc/kcore", &r);
    check(r.code != 0, "sudo umount of a mask fails (exit %d)", r.code);
    result_free(&r);

    run("sudo -n head -c 16 /proc/kcore | wc -c", &r);
    check(out_is(&r, "0\n"), "/proc/kcore is masked (got %s)", r.out);
    result_free(&r);

    run("sudo -n sh -c 'echo x > /proc/sys/kernel/hostname'", &r);
    check(r.code != 0 && r.err && strstr(r.err, "Read-only"), "/proc/sys is read-only (%s)", r.err ? r.err : "");
    result_free(&r);

    run("sudo -n sh -c 'echo b > /proc/sysrq-trigger'", &r);
    check(r.code != 0, "/proc/sysrq-trigger is read-only");
    result_free(&r);

    run("hostname; stat -c '%a %U' /tmp /home/app /; test -e /sys/kernel && echo sys", &r);
    check(out_is(&r, "sbx-tst-driver\n1777 root\n700 app\n755 root\n"), "hostname, /tmp 1777, owners, no /sys (%s)",
          r.out);
    result_free(&r);

    run("ls /dev | tr '\\n' ' '; echo; stat -c '%a %G' /dev/pts/ptmx", &r);
    check(r.code == 0 && r.out && strstr(r.out, "null") && strstr(r.out, "urandom") && strstr(r.out, "ptmx"),
          "/dev contents: %s", r.out);
    result_free(&r);

    run("python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
        "c=socket.create_connection(s.getsockname()); print('lo up')\"",
        &r);
    check(out_is(&r, "lo up\n"), "loopback is up (%s)", r.err ? r.err : "");
    result_free(&r);

    run("sudo -n hostname evil", &r);
    check(r.code != 0, "sudo hostname fails");
    result_free(&r);

    run("unshare -U true", &r);
    check(r.code != 0, "unshare -U fails (seccomp)");
    result_free(&r);

    run("sudo -n unshare -m true", &r);
    check(r.code != 0, "sudo unshare -m fails");
    result_free(&r);

    /* raw syscalls: clone(CLONE_NEWUSER|SIGCHLD) EPERM, clone3 ENOSYS, io_uring_setup EPERM,
     * AF_VSOCK/AF_ALG sockets EPERM, as root too */
    run_as("python3 -c \"import ctypes, socket\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "def sc(*a):\n"
           "    r = libc.syscall(*a)\n"
           "    return ctypes.get_errno() if r < 0 else 0\n"
           "out = [sc(56, 0x10000000 | 17, 0, 0, 0, 0), sc(56, 0x40000000 | 17, 0, 0, 0, 0), sc(435, 0, 0),\n"
           "       sc(425, 1, 0), sc(323, 0), sc(250, 1, 0)]\n"
           "for fam in (40, 38):\n"
           "    try:\n"
           "        socket.socket(fam, socket.SOCK_SEQPACKET if fam == 38 else socket.SOCK_STREAM); out.append(0)\n"
           "    except OSError as e:\n"
           "        out.append(e.errno)\n"
           "print(out)\"",
           0, &r);
    check(out_is(&r, "[1, 1, 38, 1, 1, 1, 1, 1]\n"),
          "seccomp as root: clone NEWUSER/NEWNET, clone3, io_uring, userfaultfd, keyctl, vsock, alg (%s %s)", r.out,
          r.err);
    result_free(&r);

    run("setarch linux32 true && echo linux32-ok; setarch x86_64 -R true 2>/dev/null || echo no-aslr-denied", &r);
    check(out_is(&r, "linux32-ok\nno-aslr-denied\n"), "personality allow list (%s)", r.out);
    result_free(&r);

    run("sudo -n cat /proc/1/environ; sudo -n ls /proc/1/fd/", &r);
    check(r.code != 0 && (!r.out || !*r.out), "sandbox root cannot read PID 1's environ or fds (%s)",
          r.err ? r.err : "");
    result_free(&r);

    run("sudo -n kill -9 1; sudo -n kill -TERM 1; echo still", &r);
    check(out_is(&r, "still\n"), "signals to PID 1 from inside are ignored");
    result_free(&r);

    run("grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '", &r);
    check(out_is(&r, "CapEff: 0000000000000000\nCapBnd: 00000000a00405fb\nNoNewPrivs: 0\nSeccomp: 2\n"),
          "caps/seccomp of a spawned process:\n%s", r.out);
    result_free(&r);

    run("exit 3", &r);
    check(r.code == 3 && r.signal[0] == 0, "exit code 3 reported (%d %s)", r.code, r.signal);
    result_free(&r);

    run("kill -TERM $$", &r);
    check(r.code == 143 && strcmp(r.signal, "SIGTERM") == 0, "signal reported (%d %s)", r.code, r.signal);
    result_free(&r);

    /* kill method + host uid */
    memset(&r, 0, sizeof r);
    pid_t pid = spawn(json_pack("{s:s,s:[s],s:b,s:b,s:b}", "command", "sleep", "args", "30", "stdin", 0,
                                "stdout", 1, "stderr", 1),
                      NULL);
    usleep(100000);
    uint32_t hu = host_uid_of_child();
    check(hu == g_uid_base + 1000, "runs as uid_base+1000 on the host (%u)", hu);
    json_t *k = call("kill", json_pack("{s:i,s:i}", "pid", (int)pid, "signal", 9), pid, &r);
    check(json_object_get(k, "ok") != NULL, "kill call ok");
    json_decref(k);
    wait_exit(pid, &r);
    check(r.code == 137 && strcmp(r.signal, "SIGKILL") == 0, "SIGKILL reported (%d %s)", r.code, r.signal);
    result_free(&r);
    k = call("kill", json_pack("{s:i,s:i}", "pid", (int)pid, "signal", 9), 0, NULL);
    json_t *err = json_object_get(k, "error");
    check(err && strcmp(json_string_value(json_object_get(err, "code")), "ESRCH") == 0, "kill of a dead pid: ESRCH");
    json_decref(k);

    /* spawn errors */
    json_t *serr = NULL;
    pid = spawn(json_pack("{s:s,s:[]}", "command", "no-such-binary", "args"), &serr);
    const char *code = json_string_value(json_object_get(serr, "code"));
    const char *msg = json_string_value(json_object_get(serr, "message"));
    check(pid < 0 && code && strcmp(code, "ENOENT") == 0 && msg &&
              strcmp(msg, "spawn no-such-binary: No such file or directory") == 0,
          "spawn of a missing binary: %s %s", code, msg);
    json_decref(serr);
    pid = spawn(json_pack("{s:s,s:[],s:s}", "command", "true", "args", "cwd", "/nope"), &serr);
    code = json_string_value(json_object_get(serr, "code"));
    check(pid < 0 && code && strcmp(code, "ENOENT") == 0, "spawn with a missing cwd: %s", code);
    json_decref(serr);
    pid = spawn(json_pack("{s:s,s:[],s:i}", "command", "true", "args", "uid", 5), &serr);
    check(pid < 0 && serr, "spawn with uid 5 is refused");
    json_decref(serr);

    /* env */
    json_decref(call("envSet", json_pack("{s:s,s:s}", "key", "FOO", "value", "bar baz"), 0, NULL));
    run("echo \"$FOO|$HUTCH_TEST|$HOME|$PWD\"", &r);
    check(out_is(&r, "bar baz|1|/home/app|/home/app\n"), "env and cwd reach the spawn (%s)", r.out);
    result_free(&r);
    json_t *g = call("envGet", json_pack("{s:s}", "key", "FOO"), 0, NULL);
    check(json_is_string(json_object_get(g, "ok")), "envGet");
    json_decref(g);
    json_decref(call("envDelete", json_pack("{s:s}", "key", "FOO"), 0, NULL));
    g = call("envToObject", json_object(), 0, NULL);
    check(json_object_get(json_object_get(g, "ok"), "FOO") == NULL &&
              json_object_get(json_object_get(g, "ok"), "PATH") != NULL,
          "envDelete + envToObject");
    json_decref(g);
    g = call("bogus", json_object(), 0, NULL);
    check(json_object_get(g, "error") != NULL, "unknown method is an error");
    json_decref(g);

    /* stdin */
    memset(&r, 0, sizeof r);
    pid = spawn(json_pack("{s:s,s:[],s:b,s:b,s:b}", "command", "cat", "args", "stdin", 1, "stdout", 1, "stderr", 1),
                NULL);
    send_frame(HX_STDIN, (uint32_t)pid, "hello\n", 6);
    send_frame(HX_STDIN, (uint32_t)pid, NULL, 0);
    uint32_t acked = 0;
    while (!r.exited) {
        struct frame f;
        if (!read_frame(&f, 10000))
            break;
        if (f.type == HX_STDIN_ACK && f.chan == (uint32_t)pid && f.len == 4)
            acked += hx_get_u32(f.data);
        handle_stream_frame(&f, pid, &r, true);
        free(f.data);
    }
    check(out_is(&r, "hello\n") && acked == 6 && r.code == 0, "stdin round trip (acked %u)", acked);
    result_free(&r);

    /* 5 MB byte-exact, with the credit window enforced */
    memset(&r, 0, sizeof r);
    pid = spawn(json_pack("{s:s,s:[s,s],s:b,s:b,s:b}", "command", "seq", "args", "1", "750000", "stdin", 0,
                          "stdout", 1, "stderr", 1),
                NULL);
    size_t uncredited = 0;
    for (;;) { /* no credit: the agent must stop at the window */
        struct frame f;
        if (!read_frame(&f, 500))
            break;
        if (f.type == HX_OUTPUT)
            uncredited += f.len;
        handle_stream_frame(&f, pid, &r, false);
        free(f.data);
    }
    check(uncredited > 0 && uncredited <= HX_OUTPUT_WINDOW, "output stops at the window (%zu bytes)", uncredited);
    send_credit(HX_STREAM_CHAN(pid, 0), (uint32_t)uncredited);
    r.want_eofs = 2; /* the exit may come before the last output */
    wait_exit(pid, &r);
    FILE *fp = popen("seq 1 750000", "r");
    char *want = malloc(8 << 20);
    size_t wn = fread(want, 1, 8 << 20, fp);
    pclose(fp);
    check(r.code == 0 && r.out_n == wn && memcmp(r.out, want, wn) == 0, "%zu bytes arrive byte-exact (%zu)",
          wn, r.out_n);
    free(want);
    result_free(&r);

    /* the exit is reported at reap; a background child holding stdout still
     * delivers its output afterwards, then the streams end */
    run("(sleep 0.3; echo late) & echo early", &r);
    check(out_is(&r, "early\nlate\n") && r.code == 0, "output after the exit still arrives (%s)", r.out);
    result_free(&r);
    run("sleep 0.2; ps -eo stat= | grep -c Z || true", &r);
    check(out_is(&r, "0\n"), "no zombies left (%s)", r.out);
    result_free(&r);

    /* hostile or buggy frames must not take PID 1 down */
    send_frame(HX_CALL, 9999, "{not json", 9);
    send_frame(HX_CALL, 9998, "[1,2]", 5);
    static const char bad_args[] = "{\"method\":\"spawn\",\"params\":{\"command\":\"true\",\"args\":[1]}}";
    send_frame(HX_CALL, 9997, bad_args, sizeof bad_args - 1);
    send_frame(HX_CREDIT, 12345, "xy", 2);
    send_frame(HX_STDIN, 54321, "data", 4);
    send_frame(HX_SETUP, 0, "{}", 2);
    send_frame(77, 0, NULL, 0);
    int replies = 0, acks = 0;
    for (;;) {
        struct frame f;
        if (!read_frame(&f, 500))
            break;
        if (f.type == HX_REPLY && f.chan >= 9997 && strstr((char *)f.data, "\"error\""))
            replies++;
        if (f.type == HX_STDIN_ACK && f.chan == 54321)
            acks++;
        free(f.data);
    }
    check(replies == 3 && acks == 1, "bad calls get error replies, stray stdin is acked (%d %d)", replies, acks);
    run("echo alive", &r);
    check(out_is(&r, "alive\n"), "agent still serves after bad frames");
    result_free(&r);

    run_as("id -u; touch /etc/rootfile && stat -c %U /etc/rootfile", 0, &r);
    check(out_is(&r, "0\nroot\n"), "uid 0 spawn (%s %s)", r.out, r.err);
    result_free(&r);
}

static void cleanup_and_check(pid_t pid, int pidfd, const char *workdir)
{
    /* Close the socket: hutch-init must kill everything and exit. */
    close(g_fd);
    int st = 0;
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    bool exited = poll(&p, 1, 5000) == 1 && waitpid(pid, &st, 0) == pid;
    check(exited, "hutch-init exits when the socket closes (status 0x%x)", st);
    close(pidfd);
    char line[4096];
    bool leaked = false;
    FILE *fp = fopen("/proc/self/mountinfo", "r");
    while (fp && fgets(line, sizeof line, fp))
        if (strstr(line, workdir) || strstr(line, "hutch-sandbox"))
            leaked = true;
    if (fp)
        fclose(fp);
    check(!leaked, "nothing of the sandbox is mounted on the host");
    check(rmdir(workdir) == 0, "workdir is empty and removable");
}

/* A setup that cannot work must answer HX_READY with an error and exit 1.
 * root: a "root" member to add (then the error must be "setup: bad root",
 * given before the image is looked at), or NULL: a missing image. */
static void bad_setup(const char *init, const char *workdir, json_t *root)
{
    if (mkdir(workdir, 0700) < 0)
        return;
    pid_t pid;
    int pidfd;
    struct hx_err e = {0};
    int memfd = sandbox_init_memfd(init, &e);
    struct launch_spec spec = {.id = "sbx_tst_bad", .uid_base = g_uid_base, .uid_count = 65536, .init_memfd = memfd,
                               .restore_fd = -1, .root_tree_fd = -1};
    if (memfd < 0 || sandbox_launch(&spec, &g_fd, &pid, &pidfd, &e) < 0) {
        check(false, "launch for bad setup: %s", e.msg);
        return;
    }
    close(memfd);
    json_t *setup = json_pack("{s:s,s:s,s:s,s:s,s:I,s:i,s:i}", "id", "sbx_tst_bad", "hostname", "bad", "image",
                              "/nonexistent/rootfs", "workdir", workdir, "uid_base", (json_int_t)g_uid_base,
                              "uid_count", 65536, "disk_mb", 16);
    if (root)
        json_object_set_new(setup, "root", root);
    send_json(HX_SETUP, 0, setup);
    struct frame f = {0};
    bool got = read_frame(&f, 10000) && f.type == HX_READY;
    if (root)
        check(got && strstr((char *)f.data, "setup: bad root"), "bad root: HX_READY error (%s)",
              got ? (char *)f.data : "none");
    else
        check(got && strstr((char *)f.data, "\"ENOENT\"") && strstr((char *)f.data, "/nonexistent/rootfs"),
              "bad image: HX_READY error (%s)", got ? (char *)f.data : "none");
    free(f.data);
    int st = 0;
    waitpid(pid, &st, 0);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 1, "hutch-init exits 1 after a failed setup");
    close(pidfd);
    close(g_fd);
    check(rmdir(workdir) == 0, "bad setup leaves nothing in workdir");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s INIT_BINARY [IMAGE_ROOTFS] [-c SCRIPT]\n", argv[0]);
        return 2;
    }
    /* The image where the suite built it: HUTCH_IMAGE_CACHE, as for hutchd's
     * --image-cache, else the default cache. */
    char cached[PATH_MAX];
    const char *cache = getenv("HUTCH_IMAGE_CACHE");
    snprintf(cached, sizeof cached, "%s/debian-13/rootfs", cache && *cache ? cache : DEFAULT_IMAGE_CACHE);
    const char *image = argc > 2 ? argv[2] : cached;
    const char *script = argc > 4 && strcmp(argv[3], "-c") == 0 ? argv[4] : NULL;
    /* A failure, never a skip: a suite that cannot run this test has not
     * tested the agent (scripts/test.sh runs as root after `make image`). */
    if (geteuid() != 0 || access(image, F_OK) < 0) {
        fprintf(stderr, "agent_driver: FAIL: needs root and the image at %s (make image; set HUTCH_IMAGE_CACHE)\n",
                image);
        return 1;
    }
    char workdir[] = "/tmp/hutch-agent-XXXXXX";
    if (!mkdtemp(workdir)) {
        perror("mkdtemp");
        return 2;
    }
    pid_t pid;
    int pidfd;
    if (start_sandbox(argv[1], image, workdir, &pid, &pidfd) < 0) {
        rmdir(workdir);
        return 1;
    }
    if (script) {
        struct result r;
        run(script, &r);
        fwrite(r.out ? r.out : "", 1, r.out_n, stdout);
        fwrite(r.err ? r.err : "", 1, r.err_n, stderr);
        printf("[exit %d%s%s]\n", r.code, r.signal[0] ? " " : "", r.signal);
        result_free(&r);
    } else {
        selftest();
    }
    cleanup_and_check(pid, pidfd, workdir);
    if (!script) {
        bad_setup(argv[1], workdir, NULL);
        /* a snapshot root names fd 7, which this launch did not pass; a
         * read-only root by loop device is the old form, no longer taken */
        bad_setup(argv[1], workdir, json_pack("{s:i,s:b}", "fd", 7, "writable", false));
        bad_setup(argv[1], workdir, json_pack("{s:s,s:b}", "dev", "/dev/loop0", "writable", false));
        bad_setup(argv[1], workdir, json_pack("{s:i,s:b}", "fd", 5, "writable", false));
    }
    if (!script)
        printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
