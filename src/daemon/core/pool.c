/* The warm pool: sandboxes started ahead of demand (namespaces, overlay
 * root, veth, agent ready), so that creating one is a hand-over: set its
 * limits, owner, labels, environment and network policy. Pooled sandboxes
 * belong to nobody, are not listed, and count against their own slots, not
 * against --max-sandboxes.
 *
 * Its size: --warm while creates come one at a time. A burst (a create that
 * found the pool empty, or hand-overs less than POOL_BURST_MS apart) doubles
 * the target, up to cfg->warm_max (what --warm-memory holds at ~1.25 MiB per
 * idle sandbox); POOL_SHRINK_MS after the last such create it is --warm
 * again and the sandboxes above it are stopped. Refills run as many at once
 * as the machine has CPUs, each next one as soon as one is ready. */
#include <stdio.h>
#include <string.h>
#include "daemon/core/sandbox.h"
#include "daemon/core/metering.h"
#include "daemon/net/net.h"
#include "daemon/sandbox/cgroup.h"
#include "daemon/net/secrets.h"
#include "daemon/store/store.h"

#define POOL_RETRY_MS 5000   /* after a failed start, e.g. a missing image */
/* A refill starts this long after the first hand-over that asked for it,
 * and is not put off again by the ones that follow: starting a sandbox
 * costs ~10 ms of kernel work (new net, pid and mount namespaces, the
 * overlay, the veth) that would otherwise land on the first command of the
 * sandbox just handed out (measured: +18 ms on 2 cores), yet a burst of
 * creates must not keep the pool empty for as long as it lasts (a refill
 * that waited for 150 ms of quiet never ran during one). */
#define POOL_DELAY_MS 20
#define POOL_BURST_MS 1000   /* hand-overs closer than this are a burst */
#define POOL_SHRINK_MS 10000 /* back to --warm this long after the burst */

static uv_timer_t refill_timer, shrink_timer;
static bool started;
static int64_t failed_at;
static unsigned target;     /* what the pool is kept at now: cfg->warm .. cfg->warm_max */
static int64_t last_demand; /* the last hand-over or miss */

static unsigned pooled_count(unsigned *starting)
{
    unsigned n = 0, s = 0;
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next) {
        n += sb->pooled && sb->state <= SB_RUNNING;
        s += sb->pooled && sb->state < SB_RUNNING;
    }
    if (starting)
        *starting = s;
    return n;
}

unsigned pool_target(void)
{
    return started ? target : g_daemon.cfg->warm;
}

static void on_refill(uv_timer_t *t);

static void on_pooled_ready(struct sandbox *sb, const struct hx_err *err, void *ud)
{
    if (!sb) {
        fprintf(stderr, "hutchd: warm pool: %s\n", err->msg);
        failed_at = now_ms();
    }
    /* the next start at once: a refill runs as fast as the machine allows */
    if (!uv_is_active((uv_handle_t *)&refill_timer))
        on_refill(&refill_timer);
}

/* Up to the target, at most as many starting at once as there are CPUs: a
 * start's kernel work runs on a worker thread (lifecycle.c launch_work),
 * and a create that found the pool empty must not queue behind a dozen
 * refills for those threads. */
static void on_refill(uv_timer_t *t)
{
    unsigned starting, n = pooled_count(&starting);
    if (g_daemon.shutting_down || n >= target)
        return;
    if (failed_at && now_ms() - failed_at < POOL_RETRY_MS) {
        uv_timer_start(&refill_timer, on_refill, POOL_RETRY_MS, 0);
        return;
    }
    unsigned parallel = uv_available_parallelism();
    struct sandbox_params p = {.org = "", .memory_mb = g_daemon.cfg->memory_default_mb,
                               .cpu_millis = g_daemon.cfg->cpu_millis, .pooled = true};
    for (; n < target && starting < parallel; n++, starting++) {
        struct hx_err e = {0};
        p.pool_extra = n >= g_daemon.cfg->warm;
        if (sandbox_create(&p, on_pooled_ready, NULL, &e) < 0) {
            if (e.code != EAGAIN && e.code != ENOSPC) { /* a full node is not an error worth a line */
                fprintf(stderr, "hutchd: warm pool: %s\n", e.msg);
                failed_at = now_ms();
            }
            break;
        }
    }
}

/* The burst is over: back to --warm, the ready sandboxes above it stopped
 * (those still starting are stopped once ready, by the next shrink). */
static void on_shrink(uv_timer_t *t)
{
    if (g_daemon.shutting_down)
        return;
    int64_t quiet = now_ms() - last_demand;
    if (quiet < POOL_SHRINK_MS) {
        uv_timer_start(&shrink_timer, on_shrink, (uint64_t)(POOL_SHRINK_MS - quiet), 0);
        return;
    }
    target = g_daemon.cfg->warm;
    unsigned n = pooled_count(NULL);
    for (struct sandbox *sb = g_daemon.sandboxes, *next; sb && n > target; sb = next) {
        next = sb->next;
        if (sb->pooled && sb->state == SB_RUNNING && !sb->sessions) {
            sandbox_stop(sb, "warm pool: the burst is over");
            n--;
        }
    }
    if (n > target)
        uv_timer_start(&shrink_timer, on_shrink, POOL_SHRINK_MS, 0);
}

/* A create took a pooled sandbox (miss: found none ready). */
static void pool_demand(bool miss)
{
    int64_t now = now_ms();
    bool burst = miss || (last_demand && now - last_demand < POOL_BURST_MS);
    last_demand = now;
    if (burst && target < g_daemon.cfg->warm_max) {
        target = target * 2 > g_daemon.cfg->warm_max ? g_daemon.cfg->warm_max : target * 2;
        if (!uv_is_active((uv_handle_t *)&shrink_timer))
            uv_timer_start(&shrink_timer, on_shrink, POOL_SHRINK_MS, 0);
    }
    pool_kick();
}

void pool_kick(void)
{
    /* an armed timer stays as it is: later kicks do not put the refill off */
    if (started && !g_daemon.shutting_down && target > 0 && !uv_is_active((uv_handle_t *)&refill_timer))
        uv_timer_start(&refill_timer, on_refill, POOL_DELAY_MS, 0);
}

void pool_start(void)
{
    uv_timer_init(g_daemon.loop, &refill_timer);
    uv_unref((uv_handle_t *)&refill_timer);
    uv_timer_init(g_daemon.loop, &shrink_timer);
    uv_unref((uv_handle_t *)&shrink_timer);
    target = g_daemon.cfg->warm;
    started = true;
    if (target > 0)
        uv_timer_start(&refill_timer, on_refill, 0, 0);
}

static void on_env_set(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    json_t *err = reply ? json_object_get(reply, "error") : NULL;
    if (err)
        fprintf(stderr, "hutchd: %s: initial env: %s\n", sb->id,
                json_string_value(json_object_get(err, "message")) ?: "failed");
}

struct sandbox *pool_take(const struct sandbox_params *p)
{
    /* allowNet [] means no interface at all, which pooled sandboxes have. */
    if (p->allow_net && json_is_array(p->allow_net) && json_array_size(p->allow_net) == 0)
        return NULL;
    if (g_daemon.n_claimed >= g_daemon.cfg->max_sandboxes)
        return NULL;
    struct sandbox *sb = NULL;
    for (struct sandbox *x = g_daemon.sandboxes; x && !sb; x = x->next)
        if (x->pooled && x->state == SB_RUNNING && !x->sessions)
            sb = x;
    if (!sb) {
        if (g_daemon.cfg->warm > 0)
            pool_demand(true); /* the pool ran dry: a burst */
        return NULL;
    }
    /* Its CPU views (nproc, /proc/cpuinfo) were picked for its quota. */
    if ((p->cpu_millis ? p->cpu_millis : g_daemon.cfg->cpu_millis) != sb->cpu_millis)
        return NULL;
    /* A memory-backed writable layer was sized for the default memory. */
    if (!sb->disk.on_loop && p->memory_mb != sb->memory_mb)
        return NULL;
    struct hx_err e = {0};
    bool has_hosts = p->allow_net && !json_is_null(p->allow_net);
    if (p->secrets && !sb->net)
        return NULL; /* secrets: need the proxy, which a pooled sandbox without an interface lacks */
    sb->secrets = p->secrets; /* secrets: before the policy, which carries them to the proxy */
    if (sb->net) {
        if (net_sandbox_set_policy(sb, has_hosts ? p->allow_net : NULL, &e) < 0) {
            sb->secrets = NULL;
            return NULL;
        }
    } else if (has_hosts) {
        return NULL; /* the pooled one has no interface (networking off) */
    }
    if (p->memory_mb != sb->memory_mb) {
        struct cgroup_limits lim = {.memory_bytes = (uint64_t)p->memory_mb << 20,
                                    .cpu_millis = sb->cpu_millis, .pids_max = g_daemon.cfg->pids_max};
        if (cgroup_create(sb->id, &lim, &e) < 0) { /* rewrites the limits of the existing cgroup */
            fprintf(stderr, "hutchd: %s: warm pool hand-over: %s\n", sb->id, e.msg);
            sb->secrets = NULL; /* secrets: still the caller's */
            sandbox_stop(sb, "could not set its limits");
            return NULL;
        }
        sb->memory_mb = p->memory_mb;
    }
    const char *k;
    json_t *v;
    json_object_foreach(p->env, k, v)
        agent_call(sb, "envSet", json_pack("{s:s, s:O}", "key", k, "value", v), on_env_set, NULL, NULL, NULL);
    json_t *ph = secrets_env(p->secrets); /* secrets: placeholders, like other env */
    json_object_foreach(ph, k, v)
        agent_call(sb, "envSet", json_pack("{s:s, s:O}", "key", k, "value", v), on_env_set, NULL, NULL, NULL);
    json_decref(ph);
    sb->pooled = false;
    g_daemon.n_claimed++;
    snprintf(sb->org, sizeof sb->org, "%s", p->org);
    json_decref(sb->labels);
    sb->labels = p->labels ? json_deep_copy(p->labels) : json_object();
    json_decref(sb->allow_net);
    sb->allow_net = has_hosts ? json_deep_copy(p->allow_net) : NULL;
    sb->created_ms = now_ms();
    sb->cpu_base_ns = usage_cpu_ns(sb); /* metering: its boot in the pool is nobody's */
    sandbox_set_stop_at(sb, p->stop_at_ms);
    sandbox_record(sb);
    pool_demand(false);
    return sb;
}
