/* {pid} exposures: which port a sandbox process listens on. Read from the
 * host: /proc/N/status (NSpid: the pid as the sandbox sees it), the
 * socket inodes in /proc/N/fd, and the listening sockets of the sandbox's
 * network namespace in /proc/N/net/tcp{,6}. Nothing here trusts the agent. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "daemon/core/expose.h"

#define INODES_MAX 4096

static bool same_pidns(pid_t a, const char *b_link)
{
    char p[64], l[128];
    snprintf(p, sizeof p, "/proc/%d/ns/pid", a);
    ssize_t n = readlink(p, l, sizeof l - 1);
    if (n <= 0)
        return false;
    l[n] = 0;
    return strcmp(l, b_link) == 0;
}

/* the last NSpid field of host pid h, or -1 */
static int inner_pid(pid_t h)
{
    char p[64], line[512];
    snprintf(p, sizeof p, "/proc/%d/status", h);
    FILE *f = fopen(p, "re");
    if (!f)
        return -1;
    int last = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "NSpid:", 6) != 0)
            continue;
        char *save = NULL;
        for (char *t = strtok_r(line + 6, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save))
            last = atoi(t);
        break;
    }
    fclose(f);
    return last;
}

static pid_t host_pid_of(struct sandbox *sb, int pid)
{
    char p[64], ns[128];
    snprintf(p, sizeof p, "/proc/%d/ns/pid", sb->pid);
    ssize_t n = readlink(p, ns, sizeof ns - 1);
    if (n <= 0)
        return -1;
    ns[n] = 0;
    /* PID 1 of the sandbox is the agent's own process: never a target */
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    pid_t found = -1;
    struct dirent *de;
    while (found < 0 && (de = readdir(d))) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        pid_t h = (pid_t)atoi(de->d_name);
        if (h != sb->pid && same_pidns(h, ns) && inner_pid(h) == pid)
            found = h;
    }
    closedir(d);
    return found;
}

static int cmp_ul(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

static int listen_port(pid_t h, const char *file, const unsigned long *inodes, size_t n)
{
    char p[64], line[512];
    snprintf(p, sizeof p, "/proc/%d/net/%s", h, file);
    FILE *f = fopen(p, "re");
    if (!f)
        return -1;
    int port = -1;
    if (!fgets(line, sizeof line, f)) { /* header */
        fclose(f);
        return -1;
    }
    while (port < 0 && fgets(line, sizeof line, f)) {
        char local[80], remote[80];
        unsigned st;
        unsigned long inode;
        /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
        if (sscanf(line, "%*s %79s %79s %x %*s %*s %*s %*s %*s %lu", local, remote, &st, &inode) != 4 || st != 0x0A)
            continue;
        if (!bsearch(&inode, inodes, n, sizeof *inodes, cmp_ul))
            continue;
        char *colon = strrchr(local, ':');
        if (colon)
            port = (int)strtol(colon + 1, NULL, 16);
    }
    fclose(f);
    return port;
}

int expose_pid_port(struct sandbox *sb, int pid)
{
    if (pid <= 1)
        return -ESRCH;
    pid_t h = host_pid_of(sb, pid);
    if (h < 0)
        return -ESRCH;
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/fd", h);
    DIR *d = opendir(p);
    if (!d)
        return -ESRCH;
    unsigned long *inodes = malloc(INODES_MAX * sizeof *inodes);
    size_t n = 0;
    struct dirent *de;
    while (inodes && n < INODES_MAX && (de = readdir(d))) {
        char fp[128], l[64];
        snprintf(fp, sizeof fp, "/proc/%d/fd/%s", h, de->d_name);
        ssize_t k = readlink(fp, l, sizeof l - 1);
        if (k <= 0)
            continue;
        l[k] = 0;
        unsigned long ino;
        if (sscanf(l, "socket:[%lu]", &ino) == 1)
            inodes[n++] = ino;
    }
    closedir(d);
    if (!inodes)
        return -ENOMEM;
    qsort(inodes, n, sizeof *inodes, cmp_ul);
    int port = n ? listen_port(h, "tcp", inodes, n) : -1;
    if (port < 0 && n)
        port = listen_port(h, "tcp6", inodes, n);
    free(inodes);
    return port > 0 ? port : -ENOENT;
}
