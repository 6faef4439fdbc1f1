/* Client strings (src/lib/strparse.c): memory sizes, durations, sandbox ids,
 * org names, labels (keys, values and whole objects) and UTF-8 checks. The
 * first byte picks the parser, the rest is the string. */
#include "fuzz.h"
#include <errno.h>
#include <jansson.h>
#include "lib/strparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    uint8_t which = fuzz_u8(&in);
    char *s = fuzz_strndup(in.p, in.n);
    struct hx_err e = {0};
    switch (which % 7) {
    case 0: {
        uint32_t mib = 0;
        int r = hx_parse_memory_mib(s, &mib, &e);
        FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ERANGE);
        break;
    }
    case 1: {
        uint64_t ms = 0;
        int r = hx_parse_duration_ms(s, &ms, &e);
        FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ERANGE);
        if (r == 0)
            FUZZ_CHECK(ms > 0 && ms <= HX_DURATION_MAX_MS);
        break;
    }
    case 2:
        if (hx_sandbox_id_valid(s))
            FUZZ_CHECK(strlen(s) == HX_SANDBOX_ID_LEN);
        break;
    case 3:
        if (hx_org_name_valid(s))
            FUZZ_CHECK(strlen(s) >= 1 && strlen(s) <= HX_ORG_MAX && !strpbrk(s, "/. \n"));
        break;
    case 4:
        if (hx_label_key_valid(s))
            FUZZ_CHECK(strlen(s) <= HX_LABEL_KEY_MAX);
        if (hx_label_value_valid(s))
            FUZZ_CHECK(strlen(s) <= HX_LABEL_VALUE_MAX && hx_utf8_printable(s, strlen(s)));
        break;
    case 5:
        /* The bytes as given, NULs included. */
        if (hx_utf8_printable((const char *)in.p, in.n))
            FUZZ_CHECK(memchr(in.p, 0, in.n) == NULL);
        break;
    case 6: {
        /* A labels object as a client sends it in a create request. */
        json_error_t jerr;
        json_t *v = json_loadb((const char *)in.p, in.n, JSON_DECODE_ANY, &jerr);
        if (v) {
            int r = hx_labels_validate(v, &e);
            FUZZ_CHECK(r == 0 || r == -EINVAL);
            if (r == 0)
                FUZZ_CHECK(json_is_object(v) && json_object_size(v) <= HX_LABELS_MAX);
            json_decref(v);
        }
        break;
    }
    }
    free(s);
    return 0;
}
