/* bench/net_blast.c: the network bench's TCP source/sink (bench/net_bench.py),
 * in C so that the measured throughput is the path's, not Python's.
 *
 *   net_blast serve ADDR        9000 source (client sends "N\n", gets N MiB), 9001 hold
 *                               (until the client closes), 9002 sink (counts to EOF, answers
 *                               the count), 9003 ping (1 byte answer per request), 9004 HTTP source
 *                               ("GET /N" gets N MiB with a Content-Length); prints "ready"
 *   net_blast get HOST MB       download MB MiB from 9000; prints MB/s and its own CPU seconds
 *   net_blast put HOST MB       upload MB MiB to 9002 (until the sink confirmed the count); prints MB/s
 *   net_blast ping HOST N       N x (connect, 5-byte request, first response byte); prints p50 p99 ms
 *   net_blast hget HOST MB      download MB MiB over HTTP/1.1 from 9004 (the proxy's HTTP path, which
 *                               checks every request head, instead of its splice relay); prints MB/s
 *
 * Bench code: a failure prints why and exits 1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)
#define CHUNK_MIB 1

static char zeros[BUF];

static void die(const char *what)
{
    fprintf(stderr, "net_blast: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* ---- server ---- */

struct job {
    int fd;
    int port;
};

static void serve_source(int fd)
{
    char line[32];
    size_t n = 0;
    while (n < sizeof line - 1) {
        ssize_t k = recv(fd, line + n, 1, 0);
        if (k <= 0)
            return;
        if (line[n++] == '\n')
            break;
    }
    line[n] = 0;
    long long left = atoll(line) << 20;
    while (left > 0) {
        size_t k = left < BUF ? (size_t)left : BUF;
        if (send_all(fd, zeros, k) < 0)
            return;
        left -= (long long)k;
    }
    shutdown(fd, SHUT_WR);
    char c;
    while (recv(fd, &c, 1, 0) > 0) /* the client closes first: TIME_WAIT stays on its side */
        ;
}

static void serve_sink(int fd)
{
    char *buf = malloc(BUF);
    if (!buf)
        return;
    unsigned long long got = 0;
    for (;;) {
        ssize_t k = recv(fd, buf, BUF, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (unsigned long long)k;
    }
    free(buf);
    char ans[32];
    int l = snprintf(ans, sizeof ans, "%llu\n", got);
    send_all(fd, ans, (size_t)l);
}

static void serve_http(int fd)
{
    char head[4096];
    size_t n = 0;
    while (n < sizeof head - 1) {
        ssize_t k = recv(fd, head + n, sizeof head - 1 - n, 0);
        if (k <= 0)
            return;
        n += (size_t)k;
        head[n] = 0;
        if (strstr(head, "\r\n\r\n"))
            break;
    }
    if (strncmp(head, "GET /", 5) != 0)
        return;
    long long left = atoll(head + 5) << 20;
    char resp[128];
    int l = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\nConnection: close\r\n\r\n", left);
    if (send_all(fd, resp, (size_t)l) < 0)
        return;
    while (left > 0) {
        size_t k = left < BUF ? (size_t)left : BUF;
        if (send_all(fd, zeros, k) < 0)
            return;
        left -= (long long)k;
    }
    shutdown(fd, SHUT_WR);
    char c;
    while (recv(fd, &c, 1, 0) > 0)
        ;
}

static void serve_ping(int fd)
{
    char req[64];
    for (;;) {
        ssize_t k = recv(fd, req, sizeof req, 0);
        if (k <= 0)
            return;
        if (send_all(fd, "p", 1) < 0)
            return;
    }
}

static void *serve_one(void *arg)
{
    struct job j = *(struct job *)arg;
    free(arg);
    int one = 1;
    setsockopt(j.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char c;
    switch (j.port) {
    case 9000: serve_source(j.fd); break;
    case 9001: while (recv(j.fd, &c, 1, 0) > 0) ; break;
    case 9002: serve_sink(j.fd); break;
    case 9004: serve_http(j.fd); break;
    default: serve_ping(j.fd); break;
    }
    close(j.fd);
    return NULL;
}

static pthread_attr_t small_stack;

static void *acceptor(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    int port = ntohs(sa.sin_port);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            die("accept");
        }
        struct job *j = malloc(sizeof *j);
        pthread_t t;
        if (!j)
            die("malloc");
        j->fd = fd;
        j->port = port;
        if (pthread_create(&t, &small_stack, serve_one, j) != 0) {
            close(fd);
            free(j);
        }
    }
    return NULL;
}

static int serve(const char *addr)
{
    pthread_attr_init(&small_stack);
    pthread_attr_setstacksize(&small_stack, 128 << 10);
    pthread_attr_setdetachstate(&small_stack, PTHREAD_CREATE_DETACHED);
    for (int port = 9000; port <= 9004; port++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        if (fd < 0 || inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
            die("socket or address");
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0)
            die("bind/listen");
        pthread_t t;
        if (pthread_create(&t, NULL, acceptor, (void *)(intptr_t)fd) != 0)
            die("pthread_create");
    }
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
    return 0;
}

/* ---- clients ---- */

/* The result line: MB/s, then this process's CPU seconds (user + system,
 * which with tick accounting includes the softirq work done in its context:
 * its own TCP stack's share of the path). */
static void report(double mbps)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                 ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    printf("%.1f %.3f\n", mbps, cpu);
}

static int dial(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        errno = EINVAL;
        die("address");
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        die("socket");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect");
    return fd;
}

static int get(const char *host, long long mb)
{
    char *buf = malloc(BUF), line[32];
    if (!buf)
        die("malloc");
    double t0 = now();
    int fd = dial(host, 9000);
    int l = snprintf(line, sizeof line, "%lld\n", mb);
    if (send_all(fd, line, (size_t)l) < 0)
        die("send");
    long long got = 0;
    for (;;) {
        ssize_t k = recv(fd, buf, BUF, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            die("recv");
        if (k == 0)
            break;
        got += k;
    }
    double dt = now() - t0;
    close(fd);
    if (got != mb << 20) {
        fprintf(stderr, "net_blast: got %lld bytes of %lld\n", got, mb << 20);
        return 1;
    }
    report((double)got / dt / 1e6);
    return 0;
}

static int hget(const char *host, long long mb)
{
    char *buf = malloc(BUF), req[160];
    if (!buf)
        die("malloc");
    double t0 = now();
    int fd = dial(host, 9004);
    int l = snprintf(req, sizeof req, "GET /%lld HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", mb, host);
    if (send_all(fd, req, (size_t)l) < 0)
        die("send");
    long long got = 0, body = -1;
    char head[512];
    size_t hn = 0;
    for (;;) {
        ssize_t k = recv(fd, buf, BUF, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            die("recv");
        if (k == 0)
            break;
        got += k;
        if (body < 0) { /* the head: its length is not counted */
            size_t take = (size_t)k < sizeof head - 1 - hn ? (size_t)k : sizeof head - 1 - hn;
            memcpy(head + hn, buf, take);
            hn += take;
            head[hn] = 0;
            char *e = strstr(head, "\r\n\r\n");
            if (e)
                body = (long long)(e + 4 - head);
            else if (hn == sizeof head - 1)
                die("response head");
        }
    }
    double dt = now() - t0;
    close(fd);
    if (body < 0 || strncmp(head, "HTTP/1.1 200", 12) != 0 || got - body != mb << 20) {
        fprintf(stderr, "net_blast: HTTP got %lld bytes (head %lld) of %lld\n", got, body, mb << 20);
        return 1;
    }
    report((double)(got - body) / dt / 1e6);
    return 0;
}

static int put(const char *host, long long mb)
{
    double t0 = now();
    int fd = dial(host, 9002);
    for (long long i = 0; i < mb; i += CHUNK_MIB)
        if (send_all(fd, zeros, BUF) < 0)
            die("send");
    shutdown(fd, SHUT_WR);
    char ans[32] = "";
    size_t n = 0;
    for (;;) {
        ssize_t k = recv(fd, ans + n, sizeof ans - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    double dt = now() - t0;
    close(fd);
    if (atoll(ans) != mb << 20) {
        fprintf(stderr, "net_blast: sink got %s of %lld bytes\n", ans, mb << 20);
        return 1;
    }
    report((double)(mb << 20) / dt / 1e6);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int ping(const char *host, int runs)
{
    double *lat = calloc((size_t)runs, sizeof *lat);
    if (!lat || runs < 1)
        die("runs");
    for (int i = -5; i < runs; i++) { /* 5 warm-up rounds */
        double t0 = now();
        int fd = dial(host, 9003);
        char c;
        if (send_all(fd, "ping\n", 5) < 0 || recv(fd, &c, 1, 0) != 1)
            die("ping");
        double dt = now() - t0;
        close(fd);
        if (i >= 0)
            lat[i] = dt;
    }
    qsort(lat, (size_t)runs, sizeof *lat, cmp_double);
    printf("%.4f %.4f\n", lat[runs / 2] * 1e3, lat[runs * 99 / 100] * 1e3);
    free(lat);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        return serve(argv[2]);
    if (argc == 4 && strcmp(argv[1], "get") == 0)
        return get(argv[2], atoll(argv[3]));
    if (argc == 4 && strcmp(argv[1], "hget") == 0)
        return hget(argv[2], atoll(argv[3]));
    if (argc == 4 && strcmp(argv[1], "put") == 0)
        return put(argv[2], atoll(argv[3]));
    if (argc == 4 && strcmp(argv[1], "ping") == 0)
        return ping(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: net_blast serve ADDR | get HOST MB | hget HOST MB | put HOST MB | ping HOST N\n");
    return 2;
}
