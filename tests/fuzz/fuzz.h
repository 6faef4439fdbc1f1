/* Shared by the libFuzzer targets (docs/fuzzing.md): the entry point's
 * prototype and a reader that splits one fuzz input into several parts, so
 * that one target can drive a sequence (messages, reads of a stream). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An oracle failed: the parser returned something its contract rules out.
 * abort() is what libFuzzer reports as a crash (and keeps the input). */
#define FUZZ_CHECK(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: fuzz oracle failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

struct fuzz_in {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
    uint16_t hi = fuzz_u8(in);
    return (uint16_t)(hi << 8 | fuzz_u8(in));
}

/* The next part: up to the separator "\n--\n" (kept out), or the rest. Seed
 * files stay readable text that way. */
static inline bool fuzz_part(struct fuzz_in *in, const uint8_t **p, size_t *n)
{
    if (!in->n)
        return false;
    static const char sep[] = "\n--\n";
    const uint8_t *s = in->p;
    for (size_t i = 0; i + 4 <= in->n; i++) {
        if (memcmp(s + i, sep, 4) == 0) {
            *p = s;
            *n = i;
            in->p += i + 4;
            in->n -= i + 4;
            return true;
        }
    }
    *p = s;
    *n = in->n;
    in->p += in->n;
    in->n = 0;
    return true;
}

/* A NUL-terminated copy of p[0..n) (the caller frees). */
static inline char *fuzz_strndup(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}
