/* A small set of static files (the web dashboard) loaded into memory once and served read-only:
 * GET/HEAD of "/" (index.html) and "/ui/NAME", with their content types and the security headers
 * (CSP without inline script, nosniff, no framing). Nothing is read from disk after loading. */
#pragma once
#include <stdbool.h>
#include "daemon/api/http.h"

#define STATIC_MAX_FILES 64
#define STATIC_MAX_BYTES (16u * 1024 * 1024)   /* all files together */

struct static_site;

/* Loads the regular files of dir whose names are [a-z0-9._-] with a known extension (.html .js .mjs
 * .css .svg .png .ico .txt); symlinks and other files are skipped. dir must hold index.html. */
int static_site_load(const char *dir, struct static_site **out, struct hx_err *e);
/* True when path is the site's ("/" or "/ui/..."): it answered (200, 304, 404 or 405). */
bool static_site_serve(const struct static_site *s, struct http_conn *c, const struct http_request *req);
/* The Content-Security-Policy every page answer carries. */
extern const char static_csp[];
size_t static_site_count(const struct static_site *s);
void static_site_free(struct static_site *s);
