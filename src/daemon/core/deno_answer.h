/* A REPL driver's answer line (deno_repl.c reads them from the sandbox:
 * hostile bytes), parsed alone so that it can be fuzzed (tests/fuzz). */
#pragma once
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define DENO_ANSWER_TEXT_MAX 65536     /* bytes of an error's message or stack passed on */

/* p[0..n): {"id": N, "ok": VALUE} or {"id": N, "error": {...}} (no newline).
 * On success returns 0, *id = N and *result = the SDK's result object,
 * {"ok": VALUE} or {"error": {constructorName, message, name, stack, code}}
 * with only those fields, as bounded strings (or null), constructorName made
 * of identifier characters ("Error" otherwise). Returns -EINVAL for anything
 * else (*result untouched). */
int deno_answer_parse(const uint8_t *p, size_t n, int64_t *id, json_t **result);
