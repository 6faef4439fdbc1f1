/* The REPL driver's answers → the SDK's resultSchema (deno_answer.h). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include "daemon/core/deno_answer.h"

static json_t *str_or_null(json_t *v, size_t max)
{
    if (!json_is_string(v))
        return json_null();
    size_t n = json_string_length(v);
    if (n > max) { /* cut on a UTF-8 boundary: jansson refuses a broken sequence */
        n = max;
        const char *s = json_string_value(v);
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    json_t *r = json_stringn(json_string_value(v), n);
    return r ? r : json_null();
}

static bool ident(const char *s)
{
    if (!s || !*s || strlen(s) > 100)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '$'))
            return false;
    return true;
}

int deno_answer_parse(const uint8_t *p, size_t n, int64_t *id, json_t **result)
{
    json_error_t je;
    json_t *m = json_loadb((const char *)p, n, 0, &je);
    json_t *jid = json_object_get(m, "id");
    json_t *ok = json_object_get(m, "ok"), *err = json_object_get(m, "error");
    if (!json_is_object(m) || !json_is_integer(jid) || (ok == NULL) == (err == NULL) || (err && !json_is_object(err))) {
        json_decref(m);
        return -EINVAL;
    }
    json_t *r;
    if (ok) {
        r = json_pack("{s:O}", "ok", ok);
    } else {
        const char *cn = json_string_value(json_object_get(err, "constructorName"));
        json_t *msg = str_or_null(json_object_get(err, "message"), DENO_ANSWER_TEXT_MAX);
        if (json_is_null(msg)) {
            json_decref(msg);
            msg = json_string("the REPL threw a value without a message");
        }
        r = json_pack("{s:{s:s, s:o, s:o, s:o, s:o}}", "error", "constructorName", ident(cn) ? cn : "Error", "message",
                      msg, "name", str_or_null(json_object_get(err, "name"), 100), "stack",
                      str_or_null(json_object_get(err, "stack"), DENO_ANSWER_TEXT_MAX), "code",
                      str_or_null(json_object_get(err, "code"), 100));
    }
    *id = json_integer_value(jid);
    json_decref(m);
    if (!r)
        return -EINVAL; /* out of memory: as unusable as a bad line */
    *result = r;
    return 0;
}
