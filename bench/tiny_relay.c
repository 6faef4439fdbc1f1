/* The cheapest possible front door, for the ingress benchmark: a plain TCP
 * relay (one thread, epoll, read and write, TCP_NODELAY, no TLS, no HTTP
 * parsing). Run beside tiny_http in the sandbox, it measures what a second
 * hop alone costs on this machine, which bounds any reverse proxy from
 * above (bench/ingress_bench.py, docs/performance/ingress.md).
 * Usage: tiny_relay LISTEN_PORT TARGET_PORT (the target on 127.0.0.1). */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 4096

static int peer[MAXFD];

static void pair_close(int fd)
{
    int p = peer[fd];
    close(fd);
    close(p);
    peer[fd] = peer[p] = -1;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return fprintf(stderr, "usage: tiny_relay LISTEN_PORT TARGET_PORT\n"), 2;
    signal(SIGPIPE, SIG_IGN);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    struct sockaddr_in t = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1024) < 0)
        return perror("listen"), 1;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    static char buf[65536];
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c = accept(l, NULL, NULL);
                if (c < 0)
                    continue;
                int u = socket(AF_INET, SOCK_STREAM, 0);
                if (c >= MAXFD || u < 0 || u >= MAXFD || connect(u, (struct sockaddr *)&t, sizeof t) < 0) {
                    close(c);
                    if (u >= 0)
                        close(u);
                    continue;
                }
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                peer[c] = u;
                peer[u] = c;
                ev = (struct epoll_event){.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                ev.data.fd = u;
                epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev);
                continue;
            }
            if (peer[fd] < 0)
                continue;
            /* blocking writes: the bench's answers are small, a full socket just waits */
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                pair_close(fd);
                continue;
            }
            for (ssize_t off = 0; off < r;) {
                ssize_t w = write(peer[fd], buf + off, (size_t)(r - off));
                if (w <= 0) {
                    pair_close(fd);
                    break;
                }
                off += w;
            }
        }
    }
}
