/* bench/spawn: runs a command N times (fork + execv + waitpid) and prints
 * {"n":N,"p50_us":..,"p99_us":..,"mean_us":..} — the bare-metal peer for hutch's numbers. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s N /path/to/cmd [args...]\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    if (n < 1 || n > 1000000)
        return 2;
    double *t = calloc((size_t)n, sizeof *t);
    if (!t)
        return 1;
    double sum = 0;
    for (long i = 0; i < n; i++) {
        double t0 = now_us();
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            execv(argv[2], argv + 2);
            _exit(127);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "spawn: %s failed (status 0x%x)\n", argv[2], st);
            return 1;
        }
        t[i] = now_us() - t0;
        sum += t[i];
    }
    qsort(t, (size_t)n, sizeof *t, cmp);
    long i99 = (long)((double)n * 0.99);
    if (i99 >= n)
        i99 = n - 1;
    printf("{\"n\":%ld,\"p50_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f}\n", n, t[n / 2], t[i99], sum / (double)n);
    free(t);
    return 0;
}
