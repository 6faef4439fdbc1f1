/* The CLI's tar reader (src/cli/tar.c: libarchive's tar formats and the path
 * checks on what it yields; 'hutch cp -' reads stdin) on a hostile archive:
 * every entry and all its data, from a memfd. Oracle: every path it yields is
 * relative, free of '..' and bounded; a file's data is as long as its size.
 * The system libarchive is not instrumented: coverage guides through tar.c,
 * the sanitizers and the oracle judge what libarchive hands back. */
#include "fuzz.h"
#include <sys/mman.h>
#include <unistd.h>
#include "cli/tar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0 && (fd = memfd_create("fuzz_tar", MFD_CLOEXEC)) < 0)
        abort();
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size || lseek(fd, 0, SEEK_SET) != 0)
        abort();
    struct hx_err e = {0};
    struct tar_reader *r = NULL;
    if (tar_reader_open(&r, fd, &e) < 0)
        return 0;
    struct tar_hdr *h = malloc(sizeof *h);
    char buf[4096];
    for (int entries = 0; entries < 10000; entries++) {
        int k = tar_next(r, h, &e);
        if (k <= 0)
            break;
        FUZZ_CHECK(h->path[0] != '/');
        FUZZ_CHECK(strcmp(h->path, "..") != 0 && strncmp(h->path, "../", 3) != 0 && !strstr(h->path, "/../"));
        size_t pl = strlen(h->path);
        FUZZ_CHECK(pl <= TAR_PATH_MAX && !(pl >= 3 && strcmp(h->path + pl - 3, "/..") == 0));
        FUZZ_CHECK(strcmp(h->path, ".") != 0 && strncmp(h->path, "./", 2) != 0 && !strstr(h->path, "//"));
        FUZZ_CHECK(strlen(h->link) <= TAR_PATH_MAX && (h->type == TAR_SYMLINK || !h->link[0]));
        FUZZ_CHECK((h->mode & ~07777u) == 0);
        if (h->type != TAR_FILE)
            continue; /* data only matters for files: the copy reads no other */
        ssize_t got;
        uint64_t total = 0;
        while ((got = tar_read(r, buf, sizeof buf, &e)) > 0)
            total += (uint64_t)got;
        if (got == 0)
            FUZZ_CHECK(total == h->size);
        if (got < 0)
            break;
    }
    tar_reader_free(r);
    free(h);
    return 0;
}
