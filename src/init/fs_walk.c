/* Directory listings of the fs worker as resumable jobs: readDir, walk and
 * expandGlob (the shapes and order of Deno's std/fs walk/expandGlob), each
 * streamed as one JSON object per line with backpressure, so a tree of a
 * million entries costs a bounded amount of memory anywhere. */
#include "init/init.h"
#include "init/fs_worker.h"
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <sys/stat.h>

#define WALK_MAX_DEPTH 128      /* open directories at once (fds) */
#define ENTRY_ROOM (40u * 1024u)  /* the largest line one entry can need (escaped 4 KiB path + name) */
#define MAX_PATTERNS 64
#define GLOB_MAX_SEGS 128

struct wframe {
    DIR *d;
    char *path;
    int64_t depth_left;
    dev_t dev;
    ino_t ino;
};

struct walk_state {
    /* options */
    int64_t max_depth;
    bool files, dirs, symlinks, follow, canonicalize, list_only;
    char *exts[MAX_PATTERNS];
    size_t n_exts;
    regex_t match[MAX_PATTERNS], skip[MAX_PATTERNS];
    size_t n_match, n_skip;
    bool has_match;
    /* expandGlob */
    bool glob, globstar, extended, casefold;
    char *pattern;
    size_t base_len;
    char *excl[MAX_PATTERNS];
    size_t n_excl;
    /* progress */
    char *root;
    bool started;
    struct wframe st[WALK_MAX_DEPTH];
    int sp;
};

/* ---- glob matching ---------------------------------------------------- */

static size_t split(char *s, char **segs, size_t max)
{
    size_t n = 0;
    for (char *tok = strtok(s, "/"); tok; tok = strtok(NULL, "/")) {
        if (strcmp(tok, ".") == 0)
            continue;
        if (n == max)
            return max + 1;
        segs[n++] = tok;
    }
    return n;
}

/* Matches pattern segments p against path segments s by dynamic
 * programming over (pattern index, path index): O(np * ns) fnmatch calls at
 * most, whatever mix of "**" a hostile pattern has. */
static bool match_segs(char **p, size_t np, char **s, size_t ns, bool globstar, int flags)
{
    /* ok[j] for the current i: p[i..] matches s[j..] */
    bool *next = calloc(ns + 1, sizeof *next), *cur = calloc(ns + 1, sizeof *cur);
    bool r = false;
    if (!next || !cur)
        goto out;
    next[ns] = true; /* empty pattern matches only the empty rest */
    for (size_t i = np; i-- > 0;) {
        bool star = globstar && strcmp(p[i], "**") == 0;
        cur[ns] = star ? next[ns] : false;
        for (size_t j = ns; j-- > 0;) {
            if (star)
                cur[j] = next[j] || cur[j + 1];  /* ** matches nothing, or s[j] and more */
            else
                cur[j] = next[j + 1] && fnmatch(p[i], s[j], flags) == 0;
        }
        bool *t = next;
        next = cur;
        cur = t;
    }
    r = next[0];
out:
    free(next);
    free(cur);
    return r;
}

bool fsw_glob_match(const char *pattern, const char *path, bool globstar, bool extended, bool casefold)
{
    char pb[FSW_PATH_MAX + 1], sb[FSW_PATH_MAX + 1];
    if (strlen(pattern) > FSW_PATH_MAX || strlen(path) > FSW_PATH_MAX)
        return false;
    strcpy(pb, pattern);
    strcpy(sb, path);
    char *p[GLOB_MAX_SEGS], *s[FSW_PATH_MAX / 2 + 1];
    size_t np = split(pb, p, GLOB_MAX_SEGS), ns = split(sb, s, FSW_PATH_MAX / 2);
    if (np > GLOB_MAX_SEGS || ns > FSW_PATH_MAX / 2)
        return false;
    int flags = (extended ? FNM_EXTMATCH : 0) | (casefold ? FNM_CASEFOLD : 0);
    /* Consecutive "**" match what one does: fold them so the search stays small. */
    size_t w = 0;
    for (size_t i = 0; i < np; i++)
        if (!(globstar && w > 0 && strcmp(p[i], "**") == 0 && strcmp(p[w - 1], "**") == 0))
            p[w++] = p[i];
    return match_segs(p, w, s, ns, globstar, flags);
}

static bool has_glob_chars(const char *seg, bool extended)
{
    for (const char *c = seg; *c; c++)
        if (*c == '*' || *c == '?' || *c == '[' || *c == '{' || (extended && strchr("+@!", *c) && c[1] == '('))
            return true;
    return false;
}

/* ---- options ---------------------------------------------------------- */

/* JavaScript regex source → POSIX ERE (glibc): the common escapes only. */
static int compile_regex(json_t *v, regex_t *out, struct hx_err *e)
{
    const char *src = json_string_value(json_object_get(v, "source"));
    const char *fl = json_string_value(json_object_get(v, "flags"));
    if (!src || strlen(src) > 4096)
        return hx_fail(e, EINVAL, "EINVAL: match/skip entries must be {source, flags}");
    char buf[4096 * 6 + 1];
    size_t n = 0;
    for (const char *c = src; *c; c++) {
        const char *rep = NULL;
        char one[3] = {0};
        if (c[0] == '\\' && c[1]) {
            switch (c[1]) {
            case 'd': rep = "[0-9]"; break;
            case 'D': rep = "[^0-9]"; break;
            case '/': rep = "/"; break;
            default: one[0] = '\\'; one[1] = c[1]; rep = one; break;
            }
            c++;
        } else {
            one[0] = *c;
            rep = one;
        }
        size_t l = strlen(rep);
        if (n + l >= sizeof buf)
            return hx_fail(e, EINVAL, "EINVAL: regular expression too long");
        memcpy(buf + n, rep, l);
        n += l;
    }
    buf[n] = 0;
    int flags = REG_EXTENDED | REG_NOSUB | (fl && strchr(fl, 'i') ? REG_ICASE : 0);
    if (regcomp(out, buf, flags) != 0)
        return hx_fail(e, EINVAL, "EINVAL: unsupported regular expression /%.200s/", src);
    return 0;
}

static void state_free(struct walk_state *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->sp; i++) {
        closedir(w->st[i].d);
        free(w->st[i].path);
    }
    for (size_t i = 0; i < w->n_exts; i++)
        free(w->exts[i]);
    for (size_t i = 0; i < w->n_match; i++)
        regfree(&w->match[i]);
    for (size_t i = 0; i < w->n_skip; i++)
        regfree(&w->skip[i]);
    for (size_t i = 0; i < w->n_excl; i++)
        free(w->excl[i]);
    free(w->pattern);
    free(w->root);
    free(w);
}

static void job_done(struct fsw_job *j)
{
    state_free(j->state);
}

static bool bool_opt(json_t *params, const char *k, bool dflt)
{
    json_t *v = json_object_get(params, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int parse_regexes(json_t *arr, regex_t *out, size_t *n, struct hx_err *e)
{
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > MAX_PATTERNS)
        return hx_fail(e, EINVAL, "EINVAL: match/skip must be arrays of at most %d expressions", MAX_PATTERNS);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        int r = compile_regex(v, &out[*n], e);
        if (r < 0)
            return r;
        (*n)++;
    }
    return 0;
}

/* ---- the walk --------------------------------------------------------- */

static bool include(struct walk_state *w, const char *path, bool use_exts, bool use_match)
{
    if (use_exts && w->n_exts) {
        bool any = false;
        size_t pl = strlen(path);
        for (size_t i = 0; i < w->n_exts && !any; i++) {
            size_t el = strlen(w->exts[i]);
            any = pl >= el && strcmp(path + pl - el, w->exts[i]) == 0;
        }
        if (!any)
            return false;
    }
    if (use_match && w->has_match) {
        bool any = false;
        for (size_t i = 0; i < w->n_match && !any; i++)
            any = regexec(&w->match[i], path, 0, NULL, 0) == 0;
        if (!any)
            return false;
    }
    for (size_t i = 0; i < w->n_skip; i++)
        if (regexec(&w->skip[i], path, 0, NULL, 0) == 0)
            return false;
    if (w->glob) {
        for (size_t i = 0; i < w->n_excl; i++)
            if (fsw_glob_match(w->excl[i], path, w->globstar, w->extended, w->casefold))
                return false;
    }
    return true;
}

/* expandGlob: an entry is yielded when its path below the base matches. */
static bool glob_ok(struct walk_state *w, const char *path)
{
    if (!w->glob)
        return true;
    const char *rel = path + w->base_len;
    while (*rel == '/')
        rel++;
    return *rel && fsw_glob_match(w->pattern, rel, w->globstar, w->extended, w->casefold);
}

static const char *base_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    const char *s = path + n;
    while (s > path && s[-1] != '/')
        s--;
    return s;
}

static bool emit(uint8_t *out, size_t cap, size_t *len, const char *path, const char *name, bool f, bool d, bool l)
{
    char *o = (char *)out;
    size_t n = *len;
    const char *keys[2] = {"{\"path\":", ",\"name\":"};
    const char *vals[2] = {path, name};
    for (int i = 0; i < 2; i++) {
        if (!path && i == 0) {
            memcpy(o + n, "{\"name\":", 8);
            n += 8;
            continue;
        }
        size_t kl = strlen(keys[i]);
        if (i == 1 && !path)
            kl = 0;
        if (n + kl > cap)
            return false;
        memcpy(o + n, keys[i], kl);
        n += kl;
        if (!fsw_json_str(o, cap, &n, vals[i]))
            return false;
    }
    int k = snprintf(o + n, cap - n, ",\"isFile\":%s,\"isDirectory\":%s,\"isSymlink\":%s}\n", f ? "true" : "false",
                     d ? "true" : "false", l ? "true" : "false");
    if (k < 0 || (size_t)k >= cap - n)
        return false;
    *len = n + (size_t)k;
    return true;
}

static int join(char *out, const char *dir, const char *name, struct hx_err *e)
{
    int n;
    if (strcmp(dir, ".") == 0)
        n = snprintf(out, FSW_PATH_MAX + 1, "%s", name);
    else if (dir[strlen(dir) - 1] == '/')
        n = snprintf(out, FSW_PATH_MAX + 1, "%s%s", dir, name);
    else
        n = snprintf(out, FSW_PATH_MAX + 1, "%s/%s", dir, name);
    if (n < 0 || n > FSW_PATH_MAX)
        return fsw_fail_path(e, ENAMETOOLONG, "walk", dir);
    return 0;
}

static int push_dir(struct walk_state *w, const char *path, int64_t depth_left, struct hx_err *e)
{
    if (w->sp == WALK_MAX_DEPTH)
        return fsw_fail_path(e, ELOOP, "walk (too deep)", path);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (w->follow ? 0 : O_NOFOLLOW));
    if (fd < 0)
        return fsw_fail_path(e, errno, "readdir", path);
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        close(fd);
        return fsw_fail_path(e, errno, "readdir", path);
    }
    /* A symlink loop (followSymlinks) would recurse forever: refuse a
     * directory that is already open above us. */
    for (int i = 0; i < w->sp; i++)
        if (w->st[i].dev == sb.st_dev && w->st[i].ino == sb.st_ino) {
            close(fd);
            return fsw_fail_path(e, ELOOP, "walk", path);
        }
    DIR *d = fdopendir(fd);
    char *p = strdup(path);
    if (!d || !p) {
        if (d)
            closedir(d);
        else
            close(fd);
        free(p);
        return hx_fail(e, ENOMEM, "ENOMEM: out of memory");
    }
    w->st[w->sp++] = (struct wframe){.d = d, .path = p, .depth_left = depth_left, .dev = sb.st_dev, .ino = sb.st_ino};
    return 0;
}

/* std's createWalkEntry: the entry for a directory we descend into, by stat. */
static int emit_dir_entry(struct walk_state *w, const char *path, uint8_t *out, size_t cap, size_t *len,
                          struct hx_err *e)
{
    struct stat sb;
    if (stat(path, &sb) < 0)
        return fsw_fail_path(e, errno, "stat", path);
    if (glob_ok(w, path))
        emit(out, cap, len, path, base_name(path), S_ISREG(sb.st_mode), S_ISDIR(sb.st_mode), false);
    return 0;
}

static int walk_step(struct fsw_job *j, uint8_t *out, size_t cap, size_t *len, struct hx_err *e)
{
    struct walk_state *w = j->state;
    if (!w->started) {
        w->started = true;
        if (w->max_depth < 0)
            return 0;
        if (w->dirs && !w->glob && include(w, w->root, true, true)) {
            int r = emit_dir_entry(w, w->root, out, cap, len, e);
            if (r < 0)
                return r;
        }
        if (w->max_depth < 1 || !include(w, w->root, false, false))
            return 0;
        int r = push_dir(w, w->root, w->max_depth, e);
        if (r < 0)
            return (w->glob && (r == -ENOENT || r == -ENOTDIR)) ? 0 : r;
    }
    char path[FSW_PATH_MAX + 1];
    while (w->sp > 0 && cap - *len >= ENTRY_ROOM) {
        struct wframe *top = &w->st[w->sp - 1];
        errno = 0;
        struct dirent *de = readdir(top->d);
        if (!de) {
            if (errno)
                return fsw_fail_path(e, errno, "readdir", top->path);
            closedir(top->d);
            free(top->path);
            w->sp--;
            continue;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        int r = join(path, top->path, de->d_name, e);
        if (r < 0)
            return r;
        unsigned char type = de->d_type;
        if (type == DT_UNKNOWN) {
            struct stat sb;
            if (fstatat(dirfd(top->d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
                continue; /* gone meanwhile */
            type = S_ISLNK(sb.st_mode) ? DT_LNK : S_ISDIR(sb.st_mode) ? DT_DIR : DT_REG;
        }
        bool is_link = type == DT_LNK, is_dir = type == DT_DIR;
        if (w->list_only) {
            emit(out, cap, len, NULL, de->d_name, !is_link && !is_dir, is_dir, is_link);
            continue;
        }
        if (is_link) {
            if (!w->follow) {
                if (w->symlinks && include(w, path, true, true) && glob_ok(w, path))
                    emit(out, cap, len, path, de->d_name, false, false, true);
                continue;
            }
            char *real = realpath(path, NULL);
            if (!real)
                return fsw_fail_path(e, errno, "realpath", path);
            struct stat sb;
            int sr = lstat(real, &sb);
            if (w->canonicalize && strlen(real) <= FSW_PATH_MAX)
                strcpy(path, real);
            free(real);
            if (sr < 0)
                return fsw_fail_path(e, errno, "lstat", path);
            is_link = S_ISLNK(sb.st_mode);
            is_dir = S_ISDIR(sb.st_mode);
        }
        if (is_link || is_dir) {
            int64_t d = top->depth_left - 1;
            if (d < 0)
                continue;
            if (w->dirs && include(w, path, true, true)) {
                r = emit_dir_entry(w, path, out, cap, len, e);
                if (r < 0)
                    return r;
            }
            if (d < 1 || !include(w, path, false, false))
                continue;
            r = push_dir(w, path, d, e);
            if (r < 0)
                return r;
        } else if (w->files && include(w, path, true, true) && glob_ok(w, path)) {
            emit(out, cap, len, path, de->d_name, true, false, false);
        }
    }
    return w->sp > 0;
}

static struct fsw_job *new_job(struct walk_state *w)
{
    struct fsw_job *j = calloc(1, sizeof *j);
    if (!j) {
        state_free(w);
        return NULL;
    }
    j->state = w;
    j->step = walk_step;
    j->done = job_done;
    return j;
}

struct fsw_job *fsw_readdir_job(json_t *params, struct hx_err *e)
{
    const char *path = fsw_path(params, "path", e);
    if (!path)
        return NULL;
    struct walk_state *w = calloc(1, sizeof *w);
    if (!w || !(w->root = strdup(path))) {
        free(w);
        hx_fail(e, ENOMEM, "ENOMEM: out of memory");
        return NULL;
    }
    w->list_only = w->started = true;
    w->follow = true; /* readDir of a symlink to a directory lists the directory */
    if (push_dir(w, path, 1, e) < 0) {
        state_free(w);
        return NULL;
    }
    return new_job(w);
}

static struct walk_state *common_opts(json_t *params, struct hx_err *e)
{
    struct walk_state *w = calloc(1, sizeof *w);
    if (!w) {
        hx_fail(e, ENOMEM, "ENOMEM: out of memory");
        return NULL;
    }
    w->max_depth = INT64_MAX;
    w->files = bool_opt(params, "includeFiles", true);
    w->dirs = bool_opt(params, "includeDirs", true);
    w->symlinks = bool_opt(params, "includeSymlinks", true);
    w->follow = bool_opt(params, "followSymlinks", false);
    w->canonicalize = bool_opt(params, "canonicalize", true);
    return w;
}

struct fsw_job *fsw_walk_job(json_t *params, struct hx_err *e)
{
    const char *path = fsw_path(params, "path", e);
    if (!path)
        return NULL;
    struct walk_state *w = common_opts(params, e);
    if (!w)
        return NULL;
    json_t *md = json_object_get(params, "maxDepth");
    if (json_is_integer(md))
        w->max_depth = json_integer_value(md);
    else if (json_is_real(md)) /* Infinity arrives as null; a float depth rounds down */
        w->max_depth = json_real_value(md) > 1e15 ? INT64_MAX : (int64_t)json_real_value(md);
    else if (md && !json_is_null(md)) {
        hx_fail(e, EINVAL, "EINVAL: \"maxDepth\" must be a number");
        goto fail;
    }
    json_t *exts = json_object_get(params, "exts");
    if (exts && !json_is_null(exts)) {
        if (!json_is_array(exts) || json_array_size(exts) > MAX_PATTERNS) {
            hx_fail(e, EINVAL, "EINVAL: \"exts\" must be an array of at most %d strings", MAX_PATTERNS);
            goto fail;
        }
        size_t i;
        json_t *v;
        json_array_foreach(exts, i, v) {
            const char *x = json_string_value(v);
            if (!x || strlen(x) > 255) {
                hx_fail(e, EINVAL, "EINVAL: \"exts\" must be strings");
                goto fail;
            }
            char *dup = malloc(strlen(x) + 2);
            if (!dup)
                goto fail;
            sprintf(dup, "%s%s", x[0] == '.' ? "" : ".", x);
            w->exts[w->n_exts++] = dup;
        }
    }
    json_t *match = json_object_get(params, "match");
    w->has_match = json_is_array(match);
    if (parse_regexes(match, w->match, &w->n_match, e) < 0 ||
        parse_regexes(json_object_get(params, "skip"), w->skip, &w->n_skip, e) < 0)
        goto fail;
    if (!(w->root = strdup(path)))
        goto fail;
    return new_job(w);
fail:
    if (!e->code)
        hx_fail(e, ENOMEM, "ENOMEM: out of memory");
    state_free(w);
    return NULL;
}

/* Makes p absolute against base ("/home/app" for relative roots). */
static char *absolute(const char *base, const char *p)
{
    char *out = malloc(FSW_PATH_MAX * 2 + 2);
    if (!out)
        return NULL;
    if (p[0] == '/')
        snprintf(out, FSW_PATH_MAX * 2 + 2, "%s", p);
    else
        snprintf(out, FSW_PATH_MAX * 2 + 2, "%s/%s", base, p);
    return out;
}

struct fsw_job *fsw_glob_job(json_t *params, struct hx_err *e)
{
    const char *glob = fsw_path(params, "glob", e);
    if (!glob)
        return NULL;
    autofree char *absroot = NULL;
    autofree char *full = NULL;
    struct walk_state *w = common_opts(params, e);
    if (!w)
        return NULL;
    w->glob = true;
    w->files = w->symlinks = true;
    w->globstar = bool_opt(params, "globstar", true);
    w->extended = bool_opt(params, "extended", true);
    w->casefold = bool_opt(params, "caseInsensitive", false);
    const char *root = "/home/app";
    json_t *jr = json_object_get(params, "root");
    if (jr && !json_is_null(jr) && !(root = fsw_path(params, "root", e)))
        goto fail;
    absroot = absolute("/home/app", root);
    full = absroot ? absolute(absroot, glob) : NULL;
    if (!full || strlen(full) > FSW_PATH_MAX) {
        fsw_fail_path(e, ENAMETOOLONG, "glob", glob);
        goto fail;
    }
    /* The longest leading run of segments without glob characters is the
     * directory the walk starts from; the rest is matched per entry. */
    size_t base_end = 0, nsegs = 0;
    bool deep = false, in_pattern = false;
    for (char *c = full; *c;) {
        while (*c == '/')
            c++;
        if (!*c)
            break;
        char *end = strchr(c, '/');
        size_t l = end ? (size_t)(end - c) : strlen(c);
        char seg[FSW_PATH_MAX + 1];
        memcpy(seg, c, l);
        seg[l] = 0;
        if (!in_pattern && has_glob_chars(seg, w->extended))
            in_pattern = true;
        if (in_pattern) {
            nsegs++;
            deep |= w->globstar && strcmp(seg, "**") == 0;
        } else {
            base_end = (size_t)(c - full) + l;
        }
        c += l;
    }
    w->root = strndup(full, base_end ? base_end : 1);
    if (!w->root)
        goto fail;
    if (base_end == 0)
        w->root[0] = '/';
    w->base_len = strlen(w->root);
    const char *pat = full + base_end;
    while (*pat == '/')
        pat++;
    if (!(w->pattern = strdup(pat)))
        goto fail;
    if (!*pat) {
        /* No glob characters at all: the path itself, if it exists. */
        w->max_depth = 0;
        w->glob = false;
        struct stat sb;
        if (lstat(w->root, &sb) < 0)
            w->max_depth = -1;
        w->dirs = true;
    } else {
        w->max_depth = deep ? INT64_MAX : (int64_t)nsegs;
        w->dirs = bool_opt(params, "includeDirs", true);
    }
    json_t *ex = json_object_get(params, "exclude");
    if (ex && !json_is_null(ex)) {
        if (!json_is_array(ex) || json_array_size(ex) > MAX_PATTERNS) {
            hx_fail(e, EINVAL, "EINVAL: \"exclude\" must be an array of at most %d globs", MAX_PATTERNS);
            goto fail;
        }
        size_t i;
        json_t *v;
        json_array_foreach(ex, i, v) {
            const char *x = json_string_value(v);
            if (!x || strlen(x) > FSW_PATH_MAX) {
                hx_fail(e, EINVAL, "EINVAL: \"exclude\" must be strings");
                goto fail;
            }
            if (!(w->excl[w->n_excl] = absolute(absroot, x)))
                goto fail;
            w->n_excl++;
        }
    }
    return new_job(w);
fail:
    if (!e->code)
        hx_fail(e, ENOMEM, "ENOMEM: out of memory");
    state_free(w);
    return NULL;
}
