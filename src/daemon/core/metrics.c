/* Prometheus metrics in the text exposition format 0.0.4 (docs/metering.md
 * lists them). Counters live here and are bumped by one-line hooks; what
 * other layers count (WebSocket bytes, hutch-proxy's reports) is read from
 * them at scrape time. Label values are fixed strings, never client input. */
#include <errno.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include "daemon/api/ws.h"
#include "daemon/core/metrics.h"
#include "daemon/core/sandbox.h"
#include "daemon/net/net.h"

#define RPC_SERIES_MAX 256      /* method names are the tables' (about 60) */

static const double create_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define N_BUCKETS (sizeof create_buckets / sizeof *create_buckets)

static struct {
    uint64_t creates_ok, creates_failed;
    uint64_t create_bucket[N_BUCKETS]; /* not cumulative: summed when rendered */
    uint64_t create_count;
    double create_sum;
    uint64_t agent_in, agent_out;
    uint64_t raw_files[2][2];          /* raw file channel: [upload][ok] transfers, raw_bytes[upload] */
    uint64_t raw_bytes[2];
    uint64_t readahead[3];             /* hit, waited, undone */
    uint64_t ingress[3];               /* upstream connections: made, no such sandbox, refused */
    uint64_t ssh_logins[2];            /* refused, accepted */
    struct { const char *method; uint64_t n[RPC_OUTCOMES]; } rpc[RPC_SERIES_MAX];
    size_t n_rpc;
} m;

void metrics_ingress_upstream(int err)
{
    m.ingress[err == 0 ? 0 : err == ENOENT ? 1 : 2]++;
}

void metrics_ssh_login(bool ok)
{
    m.ssh_logins[ok]++;
}

void metrics_create_done(uint64_t t0_ns, bool ok)
{
    *(ok ? &m.creates_ok : &m.creates_failed) += 1;
    double s = (double)(uv_hrtime() - t0_ns) / 1e9;
    m.create_count++;
    m.create_sum += s;
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (s <= create_buckets[i]) {
            m.create_bucket[i]++;
            break;
        }
}

void metrics_rpc(const char *method, enum metrics_rpc_outcome outcome)
{
    const char *name = method ? method : "other";
    size_t i = 0;
    while (i < m.n_rpc && strcmp(m.rpc[i].method, name) != 0)
        i++;
    if (i == m.n_rpc) {
        if (m.n_rpc == RPC_SERIES_MAX)
            return;
        m.rpc[m.n_rpc++].method = name;
    }
    m.rpc[i].n[outcome]++;
}

void metrics_raw_file(bool upload, bool ok, uint64_t bytes)
{
    m.raw_files[upload][ok]++;
    m.raw_bytes[upload] += bytes;
}

void metrics_agent_bytes(bool in, size_t n)
{
    *(in ? &m.agent_in : &m.agent_out) += n;
}

void metrics_readahead(enum metrics_readahead what)
{
    m.readahead[what]++;
}

struct out {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    for (int tries = 0; !o->failed && tries < 2; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n) * 2;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->failed = true;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    uint64_t n = 0;
    if (!d)
        return 0;
    for (struct dirent *de; (de = readdir(d));)
        n += de->d_name[0] != '.';
    closedir(d);
    return n > 0 ? n - 1 : 0; /* not the one opendir holds */
}

static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long size = 0, rss = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

char *metrics_render(size_t *len)
{
    struct out o = {.cap = 8192};
    o.buf = malloc(o.cap);
    if (!o.buf)
        return NULL;
    o.buf[0] = 0;

    unsigned st[3] = {0}, pooled = 0;
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next) {
        if (sb->pooled)
            pooled += sb->state == SB_RUNNING;
        else if (sb->state <= SB_STOPPING)
            st[sb->state]++;
    }
    static const char *const state_names[] = {"starting", "running", "stopping"};
    family(&o, "hutch_sandboxes", "gauge", "Sandboxes held by users, by state (the warm pool not counted).");
    for (int i = 0; i < 3; i++)
        put(&o, "hutch_sandboxes{state=\"%s\"} %u\n", state_names[i], st[i]);
    family(&o, "hutch_pool_sandboxes", "gauge", "Warm-pool sandboxes ready to be handed over.");
    put(&o, "hutch_pool_sandboxes %u\n", pooled);
    family(&o, "hutch_pool_target", "gauge", "Warm-pool size hutchd keeps now (--warm; up to --warm-memory during a burst).");
    put(&o, "hutch_pool_target %u\n", pool_target());

    family(&o, "hutch_sandbox_creates_total", "counter", "Sandbox creates answered, by outcome.");
    put(&o, "hutch_sandbox_creates_total{outcome=\"ok\"} %llu\n", (unsigned long long)m.creates_ok);
    put(&o, "hutch_sandbox_creates_total{outcome=\"failed\"} %llu\n", (unsigned long long)m.creates_failed);
    family(&o, "hutch_sandbox_create_duration_seconds", "histogram",
           "Time from a create request to its answer (ready or failed).");
    uint64_t cum = 0;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += m.create_bucket[i];
        put(&o, "hutch_sandbox_create_duration_seconds_bucket{le=\"%g\"} %llu\n", create_buckets[i],
            (unsigned long long)cum);
    }
    put(&o, "hutch_sandbox_create_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)m.create_count);
    put(&o, "hutch_sandbox_create_duration_seconds_sum %.6f\n", m.create_sum);
    put(&o, "hutch_sandbox_create_duration_seconds_count %llu\n", (unsigned long long)m.create_count);

    static const char *const outcome_names[] = {"dispatched", "unknown_method", "sandbox_stopping", "invalid"};
    family(&o, "hutch_rpc_requests_total", "counter", "JSON-RPC requests from clients, by method and outcome.");
    for (size_t i = 0; i < m.n_rpc; i++)
        for (int k = 0; k < RPC_OUTCOMES; k++)
            if (m.rpc[i].n[k])
                put(&o, "hutch_rpc_requests_total{method=\"%s\",outcome=\"%s\"} %llu\n", m.rpc[i].method,
                    outcome_names[k], (unsigned long long)m.rpc[i].n[k]);

    family(&o, "hutch_agent_bytes_total", "counter", "Bytes between hutchd and the sandboxes' agents.");
    put(&o, "hutch_agent_bytes_total{direction=\"in\"} %llu\n", (unsigned long long)m.agent_in);
    put(&o, "hutch_agent_bytes_total{direction=\"out\"} %llu\n", (unsigned long long)m.agent_out);
    family(&o, "hutch_raw_file_transfers_total", "counter",
           "Transfers on hutch's raw file channel (GET/PUT /hutch/v1/sandboxes/ID/files), ended.");
    for (int up = 0; up < 2; up++)
        for (int ok = 0; ok < 2; ok++)
            put(&o, "hutch_raw_file_transfers_total{direction=\"%s\",outcome=\"%s\"} %llu\n", up ? "upload" : "download",
                ok ? "ok" : "failed", (unsigned long long)m.raw_files[up][ok]);
    family(&o, "hutch_raw_file_bytes_total", "counter", "Bytes of completed raw file transfers.");
    put(&o, "hutch_raw_file_bytes_total{direction=\"download\"} %llu\n", (unsigned long long)m.raw_bytes[0]);
    put(&o, "hutch_raw_file_bytes_total{direction=\"upload\"} %llu\n", (unsigned long long)m.raw_bytes[1]);
    family(&o, "hutch_fs_readahead_total", "counter",
           "fileRead calls answered by hutchd's read-ahead at once (hit) or once it came (waited), "
           "read-aheads given back to the file (undone).");
    put(&o, "hutch_fs_readahead_total{outcome=\"hit\"} %llu\n", (unsigned long long)m.readahead[0]);
    put(&o, "hutch_fs_readahead_total{outcome=\"waited\"} %llu\n", (unsigned long long)m.readahead[1]);
    put(&o, "hutch_fs_readahead_total{outcome=\"undone\"} %llu\n", (unsigned long long)m.readahead[2]);
    uint64_t wi, wo;
    ws_byte_counts(&wi, &wo);
    family(&o, "hutch_websocket_bytes_total", "counter", "WebSocket bytes (frames) from and to API clients.");
    put(&o, "hutch_websocket_bytes_total{direction=\"in\"} %llu\n", (unsigned long long)wi);
    put(&o, "hutch_websocket_bytes_total{direction=\"out\"} %llu\n", (unsigned long long)wo);

    struct net_counts nc;
    net_counts(&nc);
    family(&o, "hutch_proxy_connections_total", "counter",
           "Connections and DNS lookups from sandboxes that hutch-proxy judged, by verdict.");
    put(&o, "hutch_proxy_connections_total{verdict=\"allowed\"} %llu\n", (unsigned long long)nc.allowed);
    put(&o, "hutch_proxy_connections_total{verdict=\"blocked\"} %llu\n", (unsigned long long)nc.blocked);
    family(&o, "hutch_proxy_bytes_total", "counter", "Bytes hutch-proxy carried for sandboxes (out = to upstreams).");
    put(&o, "hutch_proxy_bytes_total{direction=\"out\"} %llu\n", (unsigned long long)nc.bytes_out);
    put(&o, "hutch_proxy_bytes_total{direction=\"in\"} %llu\n", (unsigned long long)nc.bytes_in);
    family(&o, "hutch_secret_substitutions_total", "counter", "Secret placeholders hutch-proxy replaced.");
    put(&o, "hutch_secret_substitutions_total %llu\n", (unsigned long long)nc.substitutions);

    family(&o, "hutch_ingress_upstream_connections_total", "counter",
           "Connections hutch-ingress asked hutchd to open to exposed ports and apps, by outcome.");
    put(&o, "hutch_ingress_upstream_connections_total{outcome=\"ok\"} %llu\n", (unsigned long long)m.ingress[0]);
    put(&o, "hutch_ingress_upstream_connections_total{outcome=\"no_sandbox\"} %llu\n", (unsigned long long)m.ingress[1]);
    put(&o, "hutch_ingress_upstream_connections_total{outcome=\"refused\"} %llu\n", (unsigned long long)m.ingress[2]);
    family(&o, "hutch_ssh_logins_total", "counter", "SSH login names presented to hutch-ssh, by outcome.");
    put(&o, "hutch_ssh_logins_total{outcome=\"accepted\"} %llu\n", (unsigned long long)m.ssh_logins[1]);
    put(&o, "hutch_ssh_logins_total{outcome=\"refused\"} %llu\n", (unsigned long long)m.ssh_logins[0]);
    family(&o, "process_resident_memory_bytes", "gauge", "hutchd's resident memory.");
    put(&o, "process_resident_memory_bytes %llu\n", (unsigned long long)resident_bytes());
    family(&o, "process_open_fds", "gauge", "hutchd's open file descriptors.");
    put(&o, "process_open_fds %llu\n", (unsigned long long)open_fds());
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}
