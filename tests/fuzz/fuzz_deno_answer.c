/* A Deno REPL driver's answer line (src/daemon/core/deno_answer.c): sandbox
 * code can write anything on that channel. */
#include "fuzz.h"
#include <errno.h>
#include "daemon/core/deno_answer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t id;
    json_t *r = NULL;
    int rc = deno_answer_parse(data, size, &id, &r);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    if (rc < 0) {
        FUZZ_CHECK(r == NULL);
        return 0;
    }
    FUZZ_CHECK(json_is_object(r) && json_object_size(r) == 1);
    json_t *e = json_object_get(r, "error");
    if (e) {
        FUZZ_CHECK(json_object_size(e) == 5);
        const char *cn = json_string_value(json_object_get(e, "constructorName"));
        FUZZ_CHECK(cn && *cn && strlen(cn) <= 100 && strspn(cn, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$") == strlen(cn));
        FUZZ_CHECK(json_is_string(json_object_get(e, "message")) &&
                   json_string_length(json_object_get(e, "message")) <= DENO_ANSWER_TEXT_MAX);
        json_t *st = json_object_get(e, "stack");
        FUZZ_CHECK(json_is_null(st) || json_string_length(st) <= DENO_ANSWER_TEXT_MAX);
    } else {
        FUZZ_CHECK(json_object_get(r, "ok") != NULL);
    }
    char *t = json_dumps(r, JSON_COMPACT); /* what goes to the client must serialise */
    FUZZ_CHECK(t != NULL);
    free(t);
    json_decref(r);
    return 0;
}
