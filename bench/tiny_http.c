/* A minimal keep-alive HTTP/1.1 server for the ingress benchmark: one
 * thread, poll(2), a fixed 13-byte answer to every request head. Built on
 * the host and run inside a sandbox so that the server is not what is
 * measured. Usage: tiny_http PORT [CERT KEY]
 * With CERT and KEY (PEM) it serves HTTPS instead (built with -DTINY_TLS,
 * linked with -lssl -lcrypto): the like-for-like peer of the ingress, which
 * also terminates TLS (bench/ingress_bench.py, docs/performance/ingress.md). */
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef TINY_TLS
#include <openssl/ssl.h>
#endif

#define MAXC 1024

static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, bench\n";

struct client {
    size_t have;
    char buf[4096];
#ifdef TINY_TLS
    SSL *ssl;
#endif
};

static struct client cl[MAXC + 1];

#ifdef TINY_TLS
static SSL_CTX *ctx;
#endif

/* Reads what the connection has; <0: close it. */
static ssize_t conn_read(int i, int fd, char *p, size_t n)
{
#ifdef TINY_TLS
    if (ctx) {
        int r = SSL_read(cl[i].ssl, p, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(cl[i].ssl, r);
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
#endif
    (void)i;
    ssize_t r = read(fd, p, n);
    return r > 0 ? r : -1;
}

static int conn_write(int i, int fd)
{
#ifdef TINY_TLS
    if (ctx)
        return SSL_write(cl[i].ssl, resp, sizeof resp - 1) > 0 ? 0 : -1;
#endif
    (void)i;
    return write(fd, resp, sizeof resp - 1) < 0 ? -1 : 0;
}

static void conn_free(int i)
{
#ifdef TINY_TLS
    SSL_free(cl[i].ssl);
    cl[i].ssl = NULL;
#endif
    (void)i;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 9000;
    signal(SIGPIPE, SIG_IGN);
#ifdef TINY_TLS
    if (argc > 3) {
        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1)
            return fprintf(stderr, "tiny_http: bad certificate or key\n"), 1;
    }
#else
    if (argc > 3)
        return fprintf(stderr, "tiny_http: built without TLS\n"), 1;
#endif
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1024) < 0)
        return perror("listen"), 1;
    struct pollfd fds[MAXC + 1];
    int n = 1;
    fds[0] = (struct pollfd){.fd = l, .events = POLLIN};
    for (;;) {
        if (poll(fds, (nfds_t)n, -1) < 0)
            continue;
        if ((fds[0].revents & POLLIN) && n <= MAXC) {
            int c = accept(l, NULL, NULL);
            if (c >= 0) {
                fds[n] = (struct pollfd){.fd = c, .events = POLLIN};
                cl[n].have = 0;
#ifdef TINY_TLS
                if (ctx) {
                    fcntl(c, F_SETFL, O_NONBLOCK);
                    cl[n].ssl = SSL_new(ctx);
                    SSL_set_fd(cl[n].ssl, c);
                    SSL_set_accept_state(cl[n].ssl);
                }
#endif
                n++;
            }
        }
        for (int i = 1; i < n; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            struct client *k = &cl[i];
            ssize_t r;
            /* TLS: one readable socket may hold several records */
            while ((r = conn_read(i, fds[i].fd, k->buf + k->have, sizeof k->buf - k->have - 1)) > 0) {
                k->have += (size_t)r;
                k->buf[k->have] = 0;
                char *end;
                while ((end = strstr(k->buf, "\r\n\r\n"))) { /* requests without bodies */
                    if (conn_write(i, fds[i].fd) < 0)
                        break;
                    size_t used = (size_t)(end + 4 - k->buf);
                    memmove(k->buf, k->buf + used, k->have - used + 1);
                    k->have -= used;
                }
                if (k->have >= sizeof k->buf - 1)
                    k->have = 0;
#ifdef TINY_TLS
                if (!ctx || SSL_pending(k->ssl) == 0)
                    break;
#else
                break;
#endif
            }
            if (r < 0) {
                close(fds[i].fd);
                conn_free(i);
                fds[i] = fds[--n];
                cl[i] = cl[n];
#ifdef TINY_TLS
                cl[n].ssl = NULL;
#endif
                i--;
            }
        }
    }
}
