/*
 * Hook module metrics (see hamrahi_metrics.h). Counters are ngx_atomic_t in
 * one shared zone, so the numbers survive a reload and add up across
 * workers; the Redis state is one slot per worker.
 */

#include <time.h>

#include "hamrahi_metrics.h"


#define NGX_HTTP_HAMRAHI_METRICS_WORKERS  64
#define NGX_HTTP_HAMRAHI_METRICS_OUT_MAX  16384


static const ngx_uint_t  ngx_http_hamrahi_metrics_statuses[] = {
    200, 202, 400, 401, 404, 405, 409, 413, 415, 500, 503
};

static const char *const  ngx_http_hamrahi_metrics_reasons[] = {
    "bad_signature", "invalid_json", "missing_field", "invalid_field",
    "not_found", "method_not_allowed", "unsupported_media_type",
    "body_too_large", "invalid_form", "replayed", "redis_unavailable"
};

/* close codes a panel connection ends with; anything else counts as "other" */
static const ngx_uint_t  ngx_http_hamrahi_metrics_close_codes[] = {
    1000, 1001, 1002, 1006, 1007, 1008, 1009, 1011, 1013
};

/* upper bounds in microseconds; the text shows them in seconds */
static const uint64_t  ngx_http_hamrahi_metrics_buckets[] = {
    250, 500, 1000, 2000, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000
};

#define NGX_HTTP_HAMRAHI_N(a)  (sizeof(a) / sizeof((a)[0]))
#define NGX_HTTP_HAMRAHI_STATUSES \
    NGX_HTTP_HAMRAHI_N(ngx_http_hamrahi_metrics_statuses)
#define NGX_HTTP_HAMRAHI_REASONS \
    NGX_HTTP_HAMRAHI_N(ngx_http_hamrahi_metrics_reasons)
#define NGX_HTTP_HAMRAHI_BUCKETS \
    NGX_HTTP_HAMRAHI_N(ngx_http_hamrahi_metrics_buckets)
#define NGX_HTTP_HAMRAHI_CLOSE_CODES \
    NGX_HTTP_HAMRAHI_N(ngx_http_hamrahi_metrics_close_codes)


typedef struct {
    ngx_atomic_t  requests[HAMRAHI_ROUTE_COUNT][NGX_HTTP_HAMRAHI_STATUSES];
    ngx_atomic_t  rejections[NGX_HTTP_HAMRAHI_REASONS];
    ngx_atomic_t  redis_reconnects;
    ngx_atomic_t  redis_up[NGX_HTTP_HAMRAHI_METRICS_WORKERS];
    ngx_atomic_t  xadd_buckets[NGX_HTTP_HAMRAHI_BUCKETS];
    ngx_atomic_t  xadd_count;
    ngx_atomic_t  xadd_sum_usec;
    ngx_atomic_t  panels_connected;
    ngx_atomic_t  panels_opened;
    /* the last slot counts the codes missing from the table */
    ngx_atomic_t  panel_closes[NGX_HTTP_HAMRAHI_CLOSE_CODES + 1];
    ngx_atomic_t  panel_delivered;
    ngx_atomic_t  panel_resyncs;
    ngx_atomic_t  panel_slow_cuts;
} ngx_http_hamrahi_metrics_t;


static ngx_int_t ngx_http_hamrahi_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static u_char *ngx_http_hamrahi_metrics_print(u_char *p, u_char *end,
    ngx_http_hamrahi_metrics_t *m);
static u_char *ngx_http_hamrahi_metrics_print_panels(u_char *p, u_char *end,
    ngx_http_hamrahi_metrics_t *m);


static ngx_http_hamrahi_metrics_t  *ngx_http_hamrahi_metrics;


ngx_int_t
ngx_http_hamrahi_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_hamrahi_main_conf_t *hmcf)
{
    ngx_str_t  name = ngx_string("hamrahi_metrics");

    hmcf->metrics_zone = ngx_shared_memory_add(cf, &name,
                                               8 * ngx_pagesize,
                                               &ngx_http_hamrahi_module);
    if (hmcf->metrics_zone == NULL) {
        return NGX_ERROR;
    }

    hmcf->metrics_zone->init = ngx_http_hamrahi_metrics_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hamrahi_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t             *shpool;
    ngx_http_hamrahi_metrics_t  *m;

    if (data != NULL) {
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    m = ngx_slab_calloc(shpool, sizeof(ngx_http_hamrahi_metrics_t));
    if (m == NULL) {
        return NGX_ERROR;
    }

    shpool->data = m;
    zone->data = m;

    return NGX_OK;
}


void
ngx_http_hamrahi_metrics_init_process(ngx_http_hamrahi_main_conf_t *hmcf)
{
    if (hmcf->metrics_zone != NULL) {
        ngx_http_hamrahi_metrics = hmcf->metrics_zone->data;
    }
}


void
ngx_http_hamrahi_metrics_request(hamrahi_route_t route, ngx_uint_t status)
{
    ngx_uint_t  i;

    if (ngx_http_hamrahi_metrics == NULL || route >= HAMRAHI_ROUTE_COUNT) {
        return;
    }

    for (i = 0; i < NGX_HTTP_HAMRAHI_STATUSES; i++) {
        if (ngx_http_hamrahi_metrics_statuses[i] == status) {
            ngx_atomic_fetch_add(
                &ngx_http_hamrahi_metrics->requests[route][i], 1);
            return;
        }
    }
}


void
ngx_http_hamrahi_metrics_reject(const char *reason)
{
    ngx_uint_t  i;

    if (ngx_http_hamrahi_metrics == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_HAMRAHI_REASONS; i++) {
        if (ngx_strcmp(ngx_http_hamrahi_metrics_reasons[i], reason) == 0) {
            ngx_atomic_fetch_add(&ngx_http_hamrahi_metrics->rejections[i], 1);
            return;
        }
    }
}


void
ngx_http_hamrahi_metrics_redis_reconnect(void)
{
    if (ngx_http_hamrahi_metrics != NULL) {
        ngx_atomic_fetch_add(&ngx_http_hamrahi_metrics->redis_reconnects, 1);
    }
}


void
ngx_http_hamrahi_metrics_redis_state(ngx_uint_t up)
{
    if (ngx_http_hamrahi_metrics != NULL
        && ngx_worker < NGX_HTTP_HAMRAHI_METRICS_WORKERS)
    {
        ngx_http_hamrahi_metrics->redis_up[ngx_worker] = up ? 1 : 0;
    }
}


void
ngx_http_hamrahi_metrics_xadd_latency(uint64_t usec)
{
    ngx_uint_t                   i;
    ngx_http_hamrahi_metrics_t  *m = ngx_http_hamrahi_metrics;

    if (m == NULL) {
        return;
    }

    /* buckets are stored non-cumulative and summed when printed */
    for (i = 0; i < NGX_HTTP_HAMRAHI_BUCKETS; i++) {
        if (usec <= ngx_http_hamrahi_metrics_buckets[i]) {
            ngx_atomic_fetch_add(&m->xadd_buckets[i], 1);
            break;
        }
    }

    ngx_atomic_fetch_add(&m->xadd_count, 1);
    ngx_atomic_fetch_add(&m->xadd_sum_usec, (ngx_atomic_int_t) usec);
}


void
ngx_http_hamrahi_metrics_panel_open(void)
{
    if (ngx_http_hamrahi_metrics != NULL) {
        ngx_atomic_fetch_add(&ngx_http_hamrahi_metrics->panels_connected, 1);
        ngx_atomic_fetch_add(&ngx_http_hamrahi_metrics->panels_opened, 1);
    }
}


void
ngx_http_hamrahi_metrics_panel_close(ngx_uint_t code)
{
    ngx_uint_t                   i;
    ngx_http_hamrahi_metrics_t  *m = ngx_http_hamrahi_metrics;

    if (m == NULL) {
        return;
    }

    ngx_atomic_fetch_add(&m->panels_connected, (ngx_atomic_int_t) -1);

    for (i = 0; i < NGX_HTTP_HAMRAHI_CLOSE_CODES; i++) {
        if (ngx_http_hamrahi_metrics_close_codes[i] == code) {
            break;
        }
    }

    ngx_atomic_fetch_add(&m->panel_closes[i], 1);
}


void
ngx_http_hamrahi_metrics_panel_delivered(ngx_uint_t n)
{
    if (ngx_http_hamrahi_metrics != NULL) {
        ngx_atomic_fetch_add(&ngx_http_hamrahi_metrics->panel_delivered,
                             (ngx_atomic_int_t) n);
    }
}


void
ngx_http_hamrahi_metrics_panel_resync(void)
{
    if (ngx_http_hamrahi_metrics != NULL) {
        ngx_atomic_fetch_add(&ngx_http_hamrahi_metrics->panel_resyncs, 1);
    }
}


void
ngx_http_hamrahi_metrics_panel_slow_cut(void)
{
    if (ngx_http_hamrahi_metrics != NULL) {
        ngx_atomic_fetch_add(&ngx_http_hamrahi_metrics->panel_slow_cuts, 1);
    }
}


uint64_t
ngx_http_hamrahi_metrics_now_usec(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


static u_char *
ngx_http_hamrahi_metrics_print(u_char *p, u_char *end,
    ngx_http_hamrahi_metrics_t *m)
{
    ngx_uint_t        i, j, workers;
    ngx_atomic_uint_t  n, cumulative;
    ngx_core_conf_t  *ccf;

    p = ngx_slprintf(p, end,
            "# HELP hamrahi_hook_requests_total Hook requests by route and "
            "status.\n# TYPE hamrahi_hook_requests_total counter\n");

    for (i = 0; i < HAMRAHI_ROUTE_COUNT; i++) {
        for (j = 0; j < NGX_HTTP_HAMRAHI_STATUSES; j++) {
            n = m->requests[i][j];
            if (n == 0) {
                continue;
            }

            p = ngx_slprintf(p, end,
                    "hamrahi_hook_requests_total{route=\"%s\","
                    "status=\"%ui\"} %uA\n",
                    hamrahi_route_name((hamrahi_route_t) i),
                    ngx_http_hamrahi_metrics_statuses[j], n);
        }
    }

    p = ngx_slprintf(p, end,
            "# HELP hamrahi_hook_rejections_total Hooks refused, by "
            "reason.\n# TYPE hamrahi_hook_rejections_total counter\n");

    for (i = 0; i < NGX_HTTP_HAMRAHI_REASONS; i++) {
        p = ngx_slprintf(p, end,
                         "hamrahi_hook_rejections_total{reason=\"%s\"} %uA\n",
                         ngx_http_hamrahi_metrics_reasons[i],
                         m->rejections[i]);
    }

    p = ngx_slprintf(p, end,
            "# HELP hamrahi_redis_reconnects_total Redis command connections "
            "lost.\n# TYPE hamrahi_redis_reconnects_total counter\n"
            "hamrahi_redis_reconnects_total %uA\n", m->redis_reconnects);

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);
    workers = ngx_min((ngx_uint_t) ccf->worker_processes,
                      NGX_HTTP_HAMRAHI_METRICS_WORKERS);

    p = ngx_slprintf(p, end,
            "# HELP hamrahi_redis_up Whether a worker's Redis command "
            "connection is up.\n# TYPE hamrahi_redis_up gauge\n");

    for (i = 0; i < workers; i++) {
        p = ngx_slprintf(p, end, "hamrahi_redis_up{worker=\"%ui\"} %uA\n", i,
                         m->redis_up[i]);
    }

    p = ngx_slprintf(p, end,
            "# HELP hamrahi_xadd_latency_seconds Time from sending an event "
            "to Redis to its acknowledgement.\n"
            "# TYPE hamrahi_xadd_latency_seconds histogram\n");

    cumulative = 0;
    for (i = 0; i < NGX_HTTP_HAMRAHI_BUCKETS; i++) {
        cumulative += m->xadd_buckets[i];
        p = ngx_slprintf(p, end,
                         "hamrahi_xadd_latency_seconds_bucket{le=\"%uL.%06uL\"}"
                         " %uA\n",
                         ngx_http_hamrahi_metrics_buckets[i] / 1000000,
                         ngx_http_hamrahi_metrics_buckets[i] % 1000000,
                         cumulative);
    }

    n = m->xadd_sum_usec;

    p = ngx_slprintf(p, end,
                     "hamrahi_xadd_latency_seconds_bucket{le=\"+Inf\"} %uA\n"
                     "hamrahi_xadd_latency_seconds_sum %uA.%06uA\n"
                     "hamrahi_xadd_latency_seconds_count %uA\n",
                     m->xadd_count, n / 1000000, n % 1000000, m->xadd_count);

    return ngx_http_hamrahi_metrics_print_panels(p, end, m);
}


static u_char *
ngx_http_hamrahi_metrics_print_panels(u_char *p, u_char *end,
    ngx_http_hamrahi_metrics_t *m)
{
    ngx_uint_t  i;

    p = ngx_slprintf(p, end,
            "# HELP hamrahi_panel_connections Panel WebSockets open now.\n"
            "# TYPE hamrahi_panel_connections gauge\n"
            "hamrahi_panel_connections %A\n"
            "# HELP hamrahi_panel_opened_total Panel WebSockets opened.\n"
            "# TYPE hamrahi_panel_opened_total counter\n"
            "hamrahi_panel_opened_total %uA\n"
            "# HELP hamrahi_panel_closes_total Panel WebSockets closed, by "
            "close code.\n# TYPE hamrahi_panel_closes_total counter\n",
            (ngx_atomic_int_t) m->panels_connected, m->panels_opened);

    for (i = 0; i < NGX_HTTP_HAMRAHI_CLOSE_CODES; i++) {
        p = ngx_slprintf(p, end,
                         "hamrahi_panel_closes_total{code=\"%ui\"} %uA\n",
                         ngx_http_hamrahi_metrics_close_codes[i],
                         m->panel_closes[i]);
    }

    return ngx_slprintf(p, end,
            "hamrahi_panel_closes_total{code=\"other\"} %uA\n"
            "# HELP hamrahi_panel_frames_delivered_total Update frames sent "
            "to panels.\n# TYPE hamrahi_panel_frames_delivered_total counter\n"
            "hamrahi_panel_frames_delivered_total %uA\n"
            "# HELP hamrahi_panel_resync_required_total resync_required "
            "frames sent.\n# TYPE hamrahi_panel_resync_required_total counter\n"
            "hamrahi_panel_resync_required_total %uA\n"
            "# HELP hamrahi_panel_slow_consumer_cuts_total Panels closed with "
            "1008 for not reading.\n"
            "# TYPE hamrahi_panel_slow_consumer_cuts_total counter\n"
            "hamrahi_panel_slow_consumer_cuts_total %uA\n",
            m->panel_closes[NGX_HTTP_HAMRAHI_CLOSE_CODES], m->panel_delivered,
            m->panel_resyncs, m->panel_slow_cuts);
}


ngx_int_t
ngx_http_hamrahi_status_handler(ngx_http_request_t *r)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_hamrahi_metrics == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    b = ngx_create_temp_buf(r->pool, NGX_HTTP_HAMRAHI_METRICS_OUT_MAX);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_hamrahi_metrics_print(b->pos, b->end,
                                             ngx_http_hamrahi_metrics);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
