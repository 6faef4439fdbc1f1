/* The fs worker's requests (src/init/fsops.c, fs_walk.c): frames from init
 * (calls with their JSON, upload bytes, credit) dispatched as the worker's
 * loop does, every operation run for real, and the streaming jobs
 * (readFile, readDir, walk, expandGlob) pumped. Parts cut at "\n--\n" are
 * successive reads. A part starting with 'G' instead tests fsw_glob_match:
 * 'G', a flags byte, pattern, NUL, path.
 *
 * Confinement (the operations are real; see LLVMFuzzerInitialize): a private
 * mount namespace, a chroot into a fresh tmpfs, uid/gid 1000 and
 * no_new_privs, as the real worker runs; a small tree (/home/app/...) is
 * made before each input and removed after it. The corpus paths on the
 * command line are bound read-only: new corpus entries and crash-* files
 * cannot be written (scripts/fuzz.sh does not need them; a crash's input is
 * printed on stderr, as hex and base64, by libFuzzer).
 *
 * fsops.c is included, with writev() (its only output) checked instead of
 * written: every frame the worker sends is well formed. */
#include "fuzz.h"
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <sched.h>
#include <setjmp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static jmp_buf g_jmp;
static _Noreturn void fuzz_exit(int code)
{
    longjmp(g_jmp, 1);
}
static ssize_t fuzz_writev(int fd, const struct iovec *iov, int cnt);
#define _exit fuzz_exit
#define writev fuzz_writev
#include "../../src/init/fsops.c"
#undef _exit
#undef writev

/* fsw_send's frames: header + payload in one call */
static ssize_t fuzz_writev(int fd, const struct iovec *iov, int cnt)
{
    FUZZ_CHECK(cnt >= 1 && iov[0].iov_len == HX_FRAME_HDR);
    struct hx_frame f;
    size_t plen = cnt > 1 ? iov[1].iov_len : 0;
    uint8_t *buf = malloc(HX_FRAME_HDR + plen);
    memcpy(buf, iov[0].iov_base, HX_FRAME_HDR);
    if (plen)
        memcpy(buf + HX_FRAME_HDR, iov[1].iov_base, plen);
    int r = hx_frame_decode(buf, HX_FRAME_HDR + plen, &f);
    FUZZ_CHECK(r == (int)(HX_FRAME_HDR + plen));
    if (f.type == HX_REPLY) {
        json_error_t jerr;
        json_t *v = json_loadb((const char *)f.payload, f.len, 0, &jerr);
        FUZZ_CHECK(v && (json_object_get(v, "ok") || json_object_get(v, "error")));
        json_decref(v);
    }
    free(buf);
    return (ssize_t)(HX_FRAME_HDR + plen);
}

/* seccomp_apply is the worker's own filter (init/seccomp.c): not here. */
int seccomp_apply(void) { return 0; }
const char *errno_name(int code)
{
    const char *n = code > 0 ? strerrorname_np(code) : NULL;
    return n ? n : "EIO";
}

static char g_cwd[4096];

/* mkdir -p */
static void mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *q = tmp + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            mkdir(tmp, 0755);
            *q = '/';
        }
    mkdir(tmp, 0755);
}

/* Binds host path `what` read-only at the same path under dir. */
static void bind_ro(const char *dir, const char *what)
{
    char rp[4096], at[8192];
    if (!realpath(what, rp))
        return;
    snprintf(at, sizeof at, "%s%s", dir, rp);
    struct stat st;
    if (stat(rp, &st) < 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        mkdirs(at);
    } else {
        char *slash = strrchr(at, '/');
        *slash = 0;
        mkdirs(at);
        *slash = '/';
        FILE *f = fopen(at, "w");
        if (f)
            fclose(f);
    }
    if (mount(rp, at, NULL, MS_BIND | MS_REC, NULL) < 0 ||
        mount(NULL, at, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0) {
        fprintf(stderr, "fuzz_fsops: bind %s: %s\n", rp, strerror(errno));
        abort();
    }
}

/* Before libFuzzer reads anything: a private mount namespace (gone with the
 * process), an empty temp dir as root with /proc (LeakSanitizer reads it)
 * and the corpus paths of argv bound read-only at their own paths, chroot,
 * then app's uid/gid. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (geteuid() != 0) {
        fprintf(stderr, "fuzz_fsops: must run as root (it confines itself to a chroot as uid %d)\n", INIT_APP_UID);
        exit(1);
    }
    if (!getcwd(g_cwd, sizeof g_cwd))
        abort();
    char dir[] = "/tmp/hutch-fuzz-fs.XXXXXX";
    if (!mkdtemp(dir))
        abort();
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        perror("fuzz_fsops: private mount namespace");
        abort();
    }
    /* tmpfs: the tree the operations see, bounded and gone with the namespace */
    if (mount("fuzzfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0755") < 0) {
        perror("fuzz_fsops: tmpfs");
        abort();
    }
    bind_ro(dir, "/proc");
    mkdirs(strcat(strcpy((char[8192]){0}, dir), g_cwd));  /* relative corpus paths resolve from here */
    for (int i = 1; i < *argc; i++)
        if ((*argv)[i][0] != '-')
            bind_ro(dir, (*argv)[i]);
    if (chdir(dir) < 0 || chroot(dir) < 0 || chdir(g_cwd) < 0) {
        perror("fuzz_fsops: chroot");
        abort();
    }
    if (setgroups(0, NULL) < 0 || setresgid(INIT_APP_UID, INIT_APP_UID, INIT_APP_UID) < 0 ||
        setresuid(INIT_APP_UID, INIT_APP_UID, INIT_APP_UID) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        abort();
    fprintf(stderr, "fuzz_fsops: confined to a tmpfs chroot at %s (private mount namespace), uid %d\n", dir,
            INIT_APP_UID);
    g_sock = 1; /* never written: see fuzz_writev */
    for (unsigned i = 0; i < FSW_MAX_HANDLES; i++)
        g_handles[i].fd = -1;
    umask(022);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    if (ftw->level > 0)
        remove(path);
    return 0;
}

static void fixture(void)
{
    mkdir("/home", 0755);
    mkdir("/home/app", 0755);
    mkdir("/home/app/dir", 0755);
    FILE *f = fopen("/home/app/a.txt", "w");
    if (f) {
        fputs("hello\n", f);
        fclose(f);
    }
    f = fopen("/home/app/dir/b.js", "w");
    if (f)
        fclose(f);
    symlink("a.txt", "/home/app/link");
    symlink("/", "/home/app/root");
    chdir("/home/app");
}

static void reset(void)
{
    for (unsigned i = 0; i < FSW_MAX_HANDLES; i++)
        if (g_handles[i].fd >= 0) {
            close(g_handles[i].fd);
            g_handles[i].fd = -1;
        }
    while (g_writes)
        write_free(g_writes);
    while (g_jobs)
        job_free(g_jobs);
    chmod("/home/app", 0755);
    chdir(g_cwd);
    nftw("/", rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT); /* FTW_MOUNT: not into /proc or the corpus */
}

static void glob(const uint8_t *p, size_t n)
{
    if (n < 1 || n > 8192)
        return;
    uint8_t fl = p[0];
    char *s = fuzz_strndup(p + 1, n - 1);
    const char *path = s + strlen(s) + 1 <= s + (n - 1) ? s + strlen(s) + 1 : "";
    (void)fsw_glob_match(s, path, fl & 1, fl & 2, fl & 4);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fixture();
    static uint8_t *rbuf;
    if (!rbuf)
        rbuf = malloc(FSW_RBUF);
    size_t rlen = 0;
    struct fuzz_in in = {data, size};
    const uint8_t *p;
    size_t n;
    if (setjmp(g_jmp) == 0) {
        while (fuzz_part(&in, &p, &n)) {
            if (n && p[0] == 'G') {
                glob(p + 1, n - 1);
                continue;
            }
            if (n > FSW_RBUF - rlen)
                n = FSW_RBUF - rlen;
            memcpy(rbuf + rlen, p, n);
            rlen += n;
            size_t off = 0;
            for (;;) {
                struct hx_frame f;
                int r = hx_frame_decode(rbuf + off, rlen - off, &f);
                if (r <= 0) {
                    if (r < 0)
                        rlen = off = 0;  /* the worker exits on a bad frame */
                    break;
                }
                dispatch(&f);
                off += (size_t)r;
            }
            memmove(rbuf, rbuf + off, rlen - off);
            rlen -= off;
            for (int i = 0; i < 16 && pump_jobs(); i++)
                ;
        }
    }
    reset();
    return 0;
}
