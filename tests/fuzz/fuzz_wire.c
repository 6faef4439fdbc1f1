/* Agent framing (src/lib/wire.c): hx_frame_decode over a byte stream the way
 * both ends read it (hutchd's on_agent_read, hutch-init's on_sock_read, the
 * fs worker's loop): frames one after another, any split. */
#include "fuzz.h"
#include <errno.h>
#include "lib/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        struct hx_frame f;
        int r = hx_frame_decode(data + off, size - off, &f);
        if (r == 0)
            break;
        if (r < 0) {
            FUZZ_CHECK(r == -EPROTO || r == -EMSGSIZE);
            break;
        }
        /* A frame is its header plus a payload that lies inside the input. */
        FUZZ_CHECK((size_t)r == HX_FRAME_HDR + f.len && (size_t)r <= size - off);
        FUZZ_CHECK(f.len <= HX_FRAME_MAX && f.type != 0 && f.flags == 0);
        FUZZ_CHECK(f.payload == data + off + HX_FRAME_HDR);
        /* It re-encodes to the same header. */
        uint8_t hdr[HX_FRAME_HDR];
        hx_frame_hdr_encode(hdr, f.type, f.chan, f.len);
        FUZZ_CHECK(memcmp(hdr, data + off, HX_FRAME_HDR) == 0);
        volatile uint8_t sum = 0;  /* touch every payload byte: ASan sees an overread */
        for (uint32_t i = 0; i < f.len; i++)
            sum ^= f.payload[i];
        (void)sum;
        off += (size_t)r;
    }
    return 0;
}
