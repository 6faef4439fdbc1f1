/* Apps in the core (issue 10; docs/apps.md): building revisions (the
 * source copied out of a sandbox or written from assets into an image in
 * the storage pool, install and build commands in a fresh build sandbox,
 * the result kept as a snapshot) and serving them (sandboxes booted from
 * the snapshot run the entrypoint with deno, reached through the ingress at
 * a stable URL per app and one per preview revision, restarted with backoff
 * when they crash, stopped when idle and woken by the next request). */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include "lib/err.h"

struct http_conn;
struct sandbox;

/* At start: the routes of apps that serve (their sandboxes start at the
 * first request), builds a previous hutchd left unfinished marked failed. */
void deploy_init(void);
void deploy_fini(void);
/* lifecycle.c: a sandbox is stopping (a build or an app instance may be its). */
void deploy_sandbox_stopped(struct sandbox *sb);

/* Starts building rev (a stored revision doc of app, status "queued"): the
 * source is src's directory path, or assets (an asset map, borrowed). */
int deploy_start(json_t *app, json_t *rev, struct sandbox *src, const char *path, json_t *assets, struct hx_err *e);
/* Cancels a build in progress; -EALREADY when it has finished. */
int deploy_cancel(const char *rev_id, struct hx_err *e);
/* SSE: the revision's progress docs, or its build logs (step: a filter or
 * NULL), until the build ends (at once for a finished one). */
void deploy_stream(struct http_conn *c, json_t *rev, bool logs, const char *step);
/* The timelines of an app, and those a revision is served on (new arrays). */
json_t *deploy_app_timelines(json_t *app);
json_t *deploy_revision_timelines(json_t *app, json_t *rev);
/* An app or revision is being deleted: its instances stop, its routes go,
 * its images are removed. */
void deploy_app_deleted(json_t *app);
void deploy_revision_deleted(json_t *rev);
/* The storage org that holds apps' images for org ("apps:" + org: never a
 * real org name, so they stay out of the org's volume lists). */
void deploy_storage_org(const char *org, char out[80]);
