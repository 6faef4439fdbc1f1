/* hutch-ssh's channel bytes toward the client (src/ssh/chanout.c): byte-exact
 * through frames split anywhere, partial writes down to one byte, a window
 * that shuts, and libssh's habit of running our callbacks again from inside
 * its own write (the nested call that duplicated and lost frames under
 * sftp; docs/ssh.md). The fake client below behaves as libssh 0.10 does:
 * asked for more than its window, it runs a turn of its loop (a window
 * adjust arrives, the socket drains, write_wontblock calls the pump) and
 * goes on; after a write it flushes, which may run a turn as well. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "ssh/chanout.h"

static uint64_t rng = 88172645463325252ull;

static uint32_t rnd(uint32_t n) /* 0..n-1 (xorshift64: the same run every time) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? (uint32_t)(rng % n) : 0;
}

struct client {
    struct chanout *o;
    const struct chanout_ops *ops;
    uint32_t window;
    unsigned partial_pct;      /* how often a write takes only part (often one byte) */
    unsigned nest_pct;         /* how often a write runs a nested turn of the loop */
    uint8_t *got[2];           /* stdout, stderr as the client saw them */
    size_t got_len[2], cap;
    unsigned past_window, exits, nested, fail_after;
    char exit_json[64];
};

static uint32_t c_window(void *ud)
{
    return ((struct client *)ud)->window;
}

static void c_turn(struct client *c)
{
    if (c->window < 1000 && rnd(3)) /* a window adjust came, or not */
        c->window += rnd(70000);
    c->nested++;
    assert_int_equal(chanout_pump(c->o, c->ops, c), 0);
}

static int c_write(void *ud, const uint8_t *p, uint32_t n, bool is_stderr)
{
    struct client *c = ud;
    if (c->fail_after && --c->fail_after == 0)
        return -1;
    if (n > c->window)
        c->past_window++;
    uint32_t want = n;
    if (rnd(100) < c->partial_pct)
        want = rnd(2) ? 1 : 1 + rnd(n);
    uint32_t done = 0;
    while (done < want) {
        if (c->window == 0) { /* libssh waits for window: a turn of its loop */
            c_turn(c);
            if (c->window == 0)
                break;
            continue;
        }
        uint32_t k = want - done < c->window ? want - done : c->window;
        size_t fd = is_stderr ? 1 : 0;
        assert_true(c->got_len[fd] + k <= c->cap);
        memcpy(c->got[fd] + c->got_len[fd], p + done, k);
        c->got_len[fd] += k;
        c->window -= k;
        done += k;
    }
    if (rnd(100) < c->nest_pct) /* the flush after a write: a turn of the loop too */
        c_turn(c);
    return (int)done;
}

static void c_exit(void *ud, const uint8_t *json, size_t n)
{
    struct client *c = ud;
    c->exits++;
    assert_true(n < sizeof c->exit_json);
    memcpy(c->exit_json, json, n);
    c->exit_json[n] = 0;
}

static const struct chanout_ops ops = {c_window, c_write, c_exit};

/* SSP frames of stdout and stderr (random sizes up to the maximum, a few
 * empty or for no stream, which carry nothing), then SSP_EXIT. */
struct stream {
    uint8_t *wire, *want[2];
    size_t wire_len, want_len[2];
};

static void make_stream(struct stream *s, size_t bytes)
{
    s->wire = malloc(bytes * 2 + 1024 * 1024);
    s->want[0] = malloc(bytes);
    s->want[1] = malloc(bytes);
    assert_non_null(s->wire);
    s->wire_len = s->want_len[0] = s->want_len[1] = 0;
    size_t total = 0;
    while (total < bytes) {
        uint32_t len = rnd(4) ? 1 + rnd(SSH_PROC_FRAME_MAX) : SSH_PROC_FRAME_MAX;
        if (len > bytes - total)
            len = (uint32_t)(bytes - total);
        uint32_t chan = rnd(5) ? 1 : 2;
        assert_true(s->wire_len + 2 * HX_FRAME_HDR + len + 64 <= bytes * 2 + 1024 * 1024);
        if (rnd(50) == 0) { /* nothing for the client: no stream, or empty */
            hx_frame_hdr_encode(s->wire + s->wire_len, SSP_OUT, rnd(2) ? 3 : 1, 0);
            s->wire_len += HX_FRAME_HDR;
        }
        hx_frame_hdr_encode(s->wire + s->wire_len, SSP_OUT, chan, len);
        for (uint32_t i = 0; i < len; i++) {
            uint8_t b = (uint8_t)rnd(256);
            s->wire[s->wire_len + HX_FRAME_HDR + i] = b;
            s->want[chan - 1][s->want_len[chan - 1]++] = b;
        }
        s->wire_len += HX_FRAME_HDR + len;
        total += len;
    }
    static const char ex[] = "{\"code\":3,\"signal\":null}";
    hx_frame_hdr_encode(s->wire + s->wire_len, SSP_EXIT, 0, sizeof ex - 1);
    memcpy(s->wire + s->wire_len + HX_FRAME_HDR, ex, sizeof ex - 1);
    s->wire_len += HX_FRAME_HDR + sizeof ex - 1;
}

static void free_stream(struct stream *s)
{
    free(s->wire);
    free(s->want[0]);
    free(s->want[1]);
}

/* Feeds the wire to the pump in reads of random sizes (often one byte), as
 * on_backend does, granting window between turns, as the client's adjusts do. */
static void run(struct stream *s, struct client *c, struct chanout *o)
{
    size_t fed = 0;
    unsigned turns = 0;
    while (fed < s->wire_len || !chanout_empty(o)) {
        assert_true(++turns < 50u * 1000 * 1000);
        if (fed < s->wire_len && chanout_can_read(o)) {
            size_t room = CHANOUT_RBUF - o->rlen;
            assert_true(room > 0); /* never full of a frame it did not cut */
            size_t k = rnd(3) ? 1 + rnd((uint32_t)room) : 1;
            if (k > s->wire_len - fed)
                k = s->wire_len - fed;
            memcpy(o->rbuf + o->rlen, s->wire + fed, k);
            o->rlen += k;
            fed += k;
        }
        if (c->window < 1000 && rnd(2)) /* the client read what it had: an adjust */
            c->window += rnd(70000);
        assert_int_equal(chanout_pump(o, c->ops, c), 0);
        assert_false(o->sending);
        assert_false(o->broken);
    }
}

static void check(struct stream *s, struct client *c)
{
    for (int fd = 0; fd < 2; fd++) {
        assert_int_equal(c->got_len[fd], s->want_len[fd]);
        assert_memory_equal(c->got[fd], s->want[fd], s->want_len[fd]);
    }
    assert_int_equal(c->exits, 1);
    assert_string_equal(c->exit_json, "{\"code\":3,\"signal\":null}");
}

static void setup(struct client *c, struct chanout *o, size_t cap)
{
    memset(o, 0, sizeof *o);
    o->framed = true;
    o->rbuf = malloc(CHANOUT_RBUF);
    o->pend = malloc(CHANOUT_PEND);
    memset(c, 0, sizeof *c);
    c->o = o;
    c->ops = &ops;
    c->cap = cap;
    c->got[0] = malloc(cap);
    c->got[1] = malloc(cap);
}

static void teardown(struct client *c, struct chanout *o)
{
    free(o->rbuf);
    free(o->pend);
    free(c->got[0]);
    free(c->got[1]);
}

static void test_frames_split_anywhere_reach_the_client_byte_exact(void **state)
{
    struct stream s;
    struct client c;
    struct chanout o;
    make_stream(&s, 4u << 20);
    setup(&c, &o, 4u << 20);
    run(&s, &c, &o);
    check(&s, &c);
    assert_int_equal(c.past_window, 0);
    teardown(&c, &o);
    free_stream(&s);
}

static void test_partial_writes_and_nested_calls_neither_duplicate_nor_lose_bytes(void **state)
{
    struct stream s;
    struct client c;
    struct chanout o;
    make_stream(&s, 8u << 20);
    setup(&c, &o, 8u << 20);
    c.partial_pct = 30;
    c.nest_pct = 40;
    run(&s, &c, &o);
    check(&s, &c);
    assert_true(c.nested > 100); /* the nested calls did happen, and changed nothing */
    assert_int_equal(c.past_window, 0); /* so libssh never had to wait for window */
    teardown(&c, &o);
    free_stream(&s);
}

static void test_raw_bytes_of_a_forward_pass_as_they_are(void **state)
{
    struct client c;
    struct chanout o;
    setup(&c, &o, 1u << 20);
    o.framed = false;
    c.partial_pct = 50;
    c.nest_pct = 40;
    uint8_t *want = malloc(1u << 20);
    size_t sent = 0;
    while (sent < (1u << 20)) {
        if (chanout_can_read(&o)) {
            size_t k = 1 + rnd(CHANOUT_PEND);
            if (k > (1u << 20) - sent)
                k = (1u << 20) - sent;
            for (size_t i = 0; i < k; i++)
                want[sent + i] = o.pend[i] = (uint8_t)rnd(256);
            chanout_took(&o, k);
            sent += k;
        }
        c.window += rnd(70000);
        assert_int_equal(chanout_pump(&o, &ops, &c), 0);
    }
    while (!chanout_empty(&o)) {
        c.window += rnd(70000);
        assert_int_equal(chanout_pump(&o, &ops, &c), 0);
    }
    assert_int_equal(c.got_len[0], 1u << 20);
    assert_memory_equal(c.got[0], want, 1u << 20);
    assert_int_equal(c.exits, 0);
    free(want);
    teardown(&c, &o);
}

static void test_a_shut_window_keeps_the_bytes_and_reads_nothing_more(void **state)
{
    struct client c;
    struct chanout o;
    setup(&c, &o, 1024);
    o.rlen = HX_FRAME_HDR + 5;
    hx_frame_hdr_encode(o.rbuf, SSP_OUT, 1, 5);
    memcpy(o.rbuf + HX_FRAME_HDR, "hello", 5);
    assert_int_equal(chanout_pump(&o, &ops, &c), 0); /* window 0 */
    assert_int_equal(c.got_len[0], 0);
    assert_false(chanout_can_read(&o)); /* the socket waits: it is not read into a full hand */
    assert_false(chanout_empty(&o));
    c.window = 3;
    assert_int_equal(chanout_pump(&o, &ops, &c), 0);
    assert_int_equal(c.got_len[0], 3);
    c.window = 100;
    assert_int_equal(chanout_pump(&o, &ops, &c), 0);
    assert_int_equal(c.got_len[0], 5);
    assert_memory_equal(c.got[0], "hello", 5);
    assert_true(chanout_empty(&o) && chanout_can_read(&o));
    teardown(&c, &o);
}

static void test_a_broken_frame_ends_the_stream_and_a_failed_write_is_reported(void **state)
{
    struct client c;
    struct chanout o;
    setup(&c, &o, 1024);
    c.window = 1000;
    hx_frame_hdr_encode(o.rbuf, SSP_OUT, 1, SSH_PROC_FRAME_MAX + 1); /* bigger than hutchd ever sends */
    o.rlen = HX_FRAME_HDR;
    assert_int_equal(chanout_pump(&o, &ops, &c), 0);
    assert_true(o.broken);
    assert_int_equal(o.rlen, 0);
    assert_false(chanout_can_read(&o));
    assert_int_equal(c.got_len[0], 0);
    /* a write that fails (the channel went) */
    o.broken = false;
    hx_frame_hdr_encode(o.rbuf, SSP_OUT, 1, 5);
    memcpy(o.rbuf + HX_FRAME_HDR, "hello", 5);
    o.rlen = HX_FRAME_HDR + 5;
    c.fail_after = 1;
    assert_int_equal(chanout_pump(&o, &ops, &c), -EPIPE);
    assert_false(o.sending);
    teardown(&c, &o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_split_anywhere_reach_the_client_byte_exact),
        cmocka_unit_test(test_partial_writes_and_nested_calls_neither_duplicate_nor_lose_bytes),
        cmocka_unit_test(test_raw_bytes_of_a_forward_pass_as_they_are),
        cmocka_unit_test(test_a_shut_window_keeps_the_bytes_and_reads_nothing_more),
        cmocka_unit_test(test_a_broken_frame_ends_the_stream_and_a_failed_write_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
