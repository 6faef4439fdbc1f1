/* A minimal keep-alive HTTP/1.1 server for the ingress benchmark: one
 * thread, poll(2), a fixed 13-byte answer to every request head. Built on
 * the host and run inside a sandbox so that the server is not what is
 * measured. Usage: tiny_http PORT */
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXC 1024

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 9000;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1024) < 0)
        return perror("listen"), 1;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, bench\n";
    struct pollfd fds[MAXC + 1];
    static char buf[MAXC + 1][4096];
    static size_t have[MAXC + 1];
    int n = 1;
    fds[0] = (struct pollfd){.fd = l, .events = POLLIN};
    for (;;) {
        if (poll(fds, (nfds_t)n, -1) < 0)
            continue;
        if ((fds[0].revents & POLLIN) && n <= MAXC) {
            int c = accept(l, NULL, NULL);
            if (c >= 0) {
                fds[n] = (struct pollfd){.fd = c, .events = POLLIN};
                have[n++] = 0;
            }
        }
        for (int i = 1; i < n; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(fds[i].fd, buf[i] + have[i], sizeof buf[i] - have[i] - 1);
            if (r <= 0) {
                close(fds[i].fd);
                fds[i] = fds[--n];
                have[i] = have[n];
                memcpy(buf[i], buf[n], have[i]);
                i--;
                continue;
            }
            have[i] += (size_t)r;
            buf[i][have[i]] = 0;
            char *end;
            while ((end = strstr(buf[i], "\r\n\r\n"))) { /* requests without bodies */
                if (write(fds[i].fd, resp, sizeof resp - 1) < 0)
                    break;
                size_t used = (size_t)(end + 4 - buf[i]);
                memmove(buf[i], buf[i] + used, have[i] - used + 1);
                have[i] -= used;
            }
            if (have[i] >= sizeof buf[i] - 1)
                have[i] = 0;
        }
    }
}
