#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

#define REQUEST_MAX 4096
#define RENDER_MAX  8192

/* Watchdog lateness (fire time - deadline), in ms: AC1/AC2's accuracy. */
static const double lateness_le_ms[] = { 1, 2, 5, 10, 20, 50, 100, 250, 500,
                                         1000, 2000, 5000 };
#define LATENESS_BUCKETS (sizeof(lateness_le_ms) / sizeof(lateness_le_ms[0]))

static struct {
    uint64_t  le[LATENESS_BUCKETS];
    uint64_t  count;
    double    sum_ms;
} lateness;

struct metrics {
    uv_tcp_t          server;
    const engine_t   *eng;
    const store_pg_t *pg;
    const rqueue_t   *redis;
};

typedef struct {
    uv_tcp_t     tcp;
    metrics_t   *m;
    uv_write_t   write;
    char         req[REQUEST_MAX];
    size_t       len;
    char        *reply;
} client_t;


static void
on_client_closed(uv_handle_t *h)
{
    client_t *c = h->data;

    free(c->reply);
    free(c);
}


void
metrics_watchdog_lateness(int64_t ms)
{
    size_t i;

    for (i = 0; i < LATENESS_BUCKETS; i++) {
        if ((double) ms <= lateness_le_ms[i]) {
            lateness.le[i]++;
        }
    }
    lateness.count++;
    lateness.sum_ms += (double) ms;
}


static void
render_lateness(char *out, size_t size)
{
    size_t i, n = strlen(out);

    n += (size_t) snprintf(out + n, size - n,
                           "# TYPE hamrahi_worker_watchdog_lateness_seconds "
                           "histogram\n");
    for (i = 0; i < LATENESS_BUCKETS && n < size; i++) {
        n += (size_t) snprintf(out + n, size - n,
                               "hamrahi_worker_watchdog_lateness_seconds_"
                               "bucket{le=\"%g\"} %llu\n",
                               lateness_le_ms[i] / 1000,
                               (unsigned long long) lateness.le[i]);
    }
    if (n < size) {
        snprintf(out + n, size - n,
                 "hamrahi_worker_watchdog_lateness_seconds_bucket{le=\"+Inf\"}"
                 " %llu\nhamrahi_worker_watchdog_lateness_seconds_sum %.6f\n"
                 "hamrahi_worker_watchdog_lateness_seconds_count %llu\n",
                 (unsigned long long) lateness.count, lateness.sum_ms / 1000,
                 (unsigned long long) lateness.count);
    }
}


static char *
render(const metrics_t *m)
{
    const engine_stats_t *s = engine_stats(m->eng);
    char                 *out = malloc(RENDER_MAX);

    if (out == NULL) {
        return NULL;
    }
    snprintf(out, RENDER_MAX,
             "# TYPE hamrahi_worker_events_total counter\n"
             "hamrahi_worker_events_total{kind=\"applied\"} %llu\n"
             "hamrahi_worker_events_total{kind=\"duplicate\"} %llu\n"
             "hamrahi_worker_events_total{kind=\"malformed\"} %llu\n"
             "# TYPE hamrahi_worker_watchdogs_fired_total counter\n"
             "hamrahi_worker_watchdogs_fired_total %llu\n"
             "# TYPE hamrahi_worker_calls_total counter\n"
             "hamrahi_worker_calls_total{outcome=\"requested\"} %llu\n"
             "hamrahi_worker_calls_total{outcome=\"created\"} %llu\n"
             "hamrahi_worker_calls_total{outcome=\"failed\"} %llu\n"
             "# TYPE hamrahi_worker_escalations_total counter\n"
             "hamrahi_worker_escalations_total %llu\n"
             "# TYPE hamrahi_worker_panel_updates_total counter\n"
             "hamrahi_worker_panel_updates_total %llu\n"
             "# TYPE hamrahi_worker_timers_armed gauge\n"
             "hamrahi_worker_timers_armed %zu\n"
             "# TYPE hamrahi_worker_sessions gauge\n"
             "hamrahi_worker_sessions %zu\n"
             "# TYPE hamrahi_worker_pg_queue gauge\n"
             "hamrahi_worker_pg_queue %zu\n"
             "# TYPE hamrahi_worker_pg_up gauge\n"
             "hamrahi_worker_pg_up %d\n"
             "# TYPE hamrahi_worker_redis_queue gauge\n"
             "hamrahi_worker_redis_queue %zu\n",
             (unsigned long long) s->events_in,
             (unsigned long long) s->events_duplicate,
             (unsigned long long) s->events_malformed,
             (unsigned long long) s->watchdogs_fired,
             (unsigned long long) s->calls_requested,
             (unsigned long long) s->calls_created,
             (unsigned long long) s->calls_failed,
             (unsigned long long) s->escalations,
             (unsigned long long) s->panel_updates, engine_timers(m->eng),
             engine_sessions(m->eng), store_pg_queued(m->pg),
             store_pg_is_up(m->pg), rqueue_pending(m->redis));
    render_lateness(out, RENDER_MAX);
    return out;
}


static void
on_written(uv_write_t *req, int status)
{
    (void) status;
    uv_close((uv_handle_t *) req->handle, on_client_closed);
}


static void
respond(client_t *c)
{
    char     *body = render(c->m);
    uv_buf_t  buf;
    size_t    size;

    if (body == NULL) {
        uv_close((uv_handle_t *) &c->tcp, on_client_closed);
        return;
    }
    size = strlen(body) + 128;
    c->reply = malloc(size);
    if (c->reply == NULL) {
        free(body);
        uv_close((uv_handle_t *) &c->tcp, on_client_closed);
        return;
    }
    snprintf(c->reply, size,
             "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), body);
    free(body);
    buf = uv_buf_init(c->reply, (unsigned) strlen(c->reply));
    uv_read_stop((uv_stream_t *) &c->tcp);
    uv_write(&c->write, (uv_stream_t *) &c->tcp, &buf, 1, on_written);
}


static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    client_t *c = h->data;

    (void) suggested;
    *buf = uv_buf_init(c->req + c->len, (unsigned) (REQUEST_MAX - 1 - c->len));
}


static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    client_t *c = s->data;

    (void) buf;
    if (n < 0 || (n == 0 && c->len >= REQUEST_MAX - 1)) {
        uv_close((uv_handle_t *) s, on_client_closed);
        return;
    }
    c->len += (size_t) n;
    c->req[c->len] = '\0';
    if (strstr(c->req, "\r\n\r\n") != NULL) {
        respond(c);
    } else if (c->len >= REQUEST_MAX - 1) {
        uv_close((uv_handle_t *) s, on_client_closed);
    }
}


static void
on_connection(uv_stream_t *server, int status)
{
    metrics_t *m = server->data;
    client_t  *c;

    if (status < 0 || (c = calloc(1, sizeof(*c))) == NULL) {
        return;
    }
    c->m = m;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *) &c->tcp) != 0) {
        uv_close((uv_handle_t *) &c->tcp, on_client_closed);
        return;
    }
    uv_read_start((uv_stream_t *) &c->tcp, on_alloc, on_read);
}


metrics_t *
metrics_new(uv_loop_t *loop, const char *listen, const engine_t *eng,
            const store_pg_t *pg, const rqueue_t *redis)
{
    metrics_t          *m;
    struct sockaddr_in  addr;
    char                host[64];
    const char         *colon = strrchr(listen, ':');
    int                 rc;

    if (colon == NULL || (size_t) (colon - listen) >= sizeof(host)) {
        if (listen[0] != '\0') {
            log_line("metrics: bad metrics_listen \"%s\"; disabled", listen);
        }
        return NULL;
    }
    memcpy(host, listen, (size_t) (colon - listen));
    host[colon - listen] = '\0';
    if (uv_ip4_addr(host, atoi(colon + 1), &addr) != 0
        || (m = calloc(1, sizeof(*m))) == NULL)
    {
        log_line("metrics: bad metrics_listen \"%s\"; disabled", listen);
        return NULL;
    }
    m->eng = eng;
    m->pg = pg;
    m->redis = redis;
    uv_tcp_init(loop, &m->server);
    m->server.data = m;
    rc = uv_tcp_bind(&m->server, (const struct sockaddr *) &addr, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *) &m->server, 64, on_connection);
    }
    if (rc != 0) {
        log_line("metrics: cannot listen on %s: %s; disabled", listen,
                 uv_strerror(rc));
        metrics_close(m);
        return NULL;
    }
    return m;
}


static void
on_server_closed(uv_handle_t *h)
{
    free(h->data);
}


void
metrics_close(metrics_t *m)
{
    if (m != NULL) {
        uv_close((uv_handle_t *) &m->server, on_server_closed);
    }
}
