/* The shared frame writer: what it queues decodes as the same frame, and
 * oversized payloads are refused before anything is written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "lib/uvframe.h"
#include "lib/wire.h"

static void test_frame_arrives_whole_and_decodes(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_pipe_t p;
    uv_pipe_init(&loop, &p, 0);
    assert_int_equal(uv_pipe_open(&p, sv[0]), 0);
    static uint8_t payload[100000];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7);
    assert_int_equal(hx_uv_send_frame((uv_stream_t *)&p, HX_OUTPUT, 42, payload, sizeof payload, true, NULL), 0);
    static uint8_t got[HX_FRAME_HDR + sizeof payload];
    size_t n = 0;
    while (n < sizeof got) {
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t r = recv(sv[1], got + n, sizeof got - n, MSG_DONTWAIT);
        if (r > 0)
            n += (size_t)r;
    }
    struct hx_frame f;
    assert_int_equal(hx_frame_decode(got, n, &f), (int)n);
    assert_int_equal(f.type, HX_OUTPUT);
    assert_int_equal(f.chan, 42);
    assert_memory_equal(f.payload, payload, sizeof payload);
    uv_close((uv_handle_t *)&p, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    close(sv[1]);
}

static void test_oversized_payload_is_refused(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_pipe_t p;
    uv_pipe_init(&loop, &p, 0);
    assert_int_equal(uv_pipe_open(&p, sv[0]), 0);
    static uint8_t big[HX_FRAME_MAX + 1];
    assert_int_equal(hx_uv_send_frame((uv_stream_t *)&p, HX_OUTPUT, 1, big, sizeof big, false, NULL), UV_EMSGSIZE);
    assert_int_equal(uv_stream_get_write_queue_size((uv_stream_t *)&p), 0);
    uv_close((uv_handle_t *)&p, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_arrives_whole_and_decodes),
        cmocka_unit_test(test_oversized_payload_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
