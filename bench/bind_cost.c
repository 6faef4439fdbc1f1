/* What the vscode layer costs every sandbox create: hutch-init's read-only
 * bind of it (open_tree + mount_setattr + move_mount, as src/init/setup.c
 * does), measured in a private mount namespace, then undone. Prints one
 * JSON line: {"n", "p50_us", "p99_us"}. Usage: bind_cost RUNS LAYER_DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int n = atoi(argv[1]);
    if (n < 1 || n > 100000)
        return 2;
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        perror("unshare/private");
        return 1;
    }
    char dir[] = "/tmp/hutch-bind-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    int target = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    double *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int tree = (int)syscall(SYS_open_tree, AT_FDCWD, argv[2], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
        if (tree < 0 || syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0 ||
            syscall(SYS_move_mount, tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
            perror("bind");
            return 1;
        }
        close(tree);
        clock_gettime(CLOCK_MONOTONIC, &b);
        t[i] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
        if (umount2(dir, MNT_DETACH) < 0) {
            perror("umount");
            return 1;
        }
    }
    rmdir(dir);
    qsort(t, (size_t)n, sizeof *t, cmp);
    printf("{\"n\": %d, \"p50_us\": %.1f, \"p99_us\": %.1f}\n", n, t[n / 2], t[(size_t)n * 99 / 100]);
    return 0;
}
