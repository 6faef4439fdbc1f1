/* Secret substitution (src/proxy/subst.c): a request head rewritten with
 * placeholders replaced by values, and the response stream masked back,
 * across reads cut at "\n--\n". Oracle: no secret value ever reaches the
 * sandbox, and a rewritten head stays within its slack. */
#include "fuzz.h"
#include <errno.h>
#include "proxy/subst.h"

/* Two secrets like hutchd makes them (placeholders as long as values), one
 * applicable, and a third whose value shares a prefix with the first. */
static const char *const names[] = {"API_KEY", "TOKEN", "OTHER"};
static const char *const phs[] = {"HUTCH_PH_aaaaaaaaa", "HUTCH_PH_bbbb", "HUTCH_PH_ccccccccc"};
static const char *const vals[] = {"sk-live-0123456789", "ghp_abcdefghi", "sk-live-01234xyzab"};

static bool contains(const uint8_t *h, size_t hn, const char *needle)
{
    size_t nn = strlen(needle);
    for (size_t i = 0; i + nn <= hn; i++)
        if (memcmp(h + i, needle, nn) == 0)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct subst_secret s[3];
    for (int i = 0; i < 3; i++) {
        if (strlen(phs[i]) != strlen(vals[i]))
            abort(); /* the harness's own invariant, as hutchd's */
        s[i] = (struct subst_secret){.name = names[i], .ph = (const uint8_t *)phs[i],
                                     .val = (const uint8_t *)vals[i], .len = strlen(vals[i]), .applies = i != 1};
    }
    struct fuzz_in in = {data, size};
    const uint8_t *p;
    size_t n;
    if (!fuzz_part(&in, &p, &n))
        return 0;
    /* 1. the head */
    uint8_t *head = malloc(n ? n : 1);
    memcpy(head, p, n);
    size_t cap = n + SUBST_HEAD_SLACK;
    uint8_t *out = malloc(cap);
    uint64_t used = 0;
    long r = subst_request_head(head, n, s, 3, out, cap, &used);
    FUZZ_CHECK(r == -E2BIG || (r >= 0 && (size_t)r <= cap));
    FUZZ_CHECK((used & ~7ull) == 0);
    char method[17], path[201];
    subst_request_line(head, n, method, sizeof method, path, sizeof path);
    FUZZ_CHECK(strlen(method) < sizeof method && strlen(path) < sizeof path);
    free(out);
    free(head);
    /* 2. the response stream, read by read */
    struct mask_state *st = calloc(1, sizeof *st);
    size_t total = 0, ocap = 1 << 16;
    uint8_t *all = malloc(ocap);
    uint8_t *o = malloc(SUBST_HOLD_MAX + (1 << 16));
    while (fuzz_part(&in, &p, &n)) {
        if (n > (1 << 16))
            n = 1 << 16;
        uint8_t *chunk = malloc(n ? n : 1);
        memcpy(chunk, p, n);
        size_t k = mask_stream(st, s, 3, chunk, n, o);
        FUZZ_CHECK(k <= SUBST_HOLD_MAX + n && st->held <= SUBST_HOLD_MAX);
        free(chunk);
        if (total + k > ocap) {
            while (total + k > ocap)
                ocap *= 2;
            all = realloc(all, ocap);
        }
        memcpy(all + total, o, k);
        total += k;
    }
    size_t k = mask_flush(st, o);
    FUZZ_CHECK(k <= SUBST_HOLD_MAX && st->held == 0);
    if (total + k > ocap)
        all = realloc(all, total + k);
    memcpy(all + total, o, k);
    total += k;
    for (int i = 0; i < 3; i++) {
        char v[64];
        memcpy(v, vals[i], s[i].len);
        v[s[i].len] = 0;
        FUZZ_CHECK(!contains(all, total, v));
    }
    free(o);
    free(all);
    free(st);
    return 0;
}
