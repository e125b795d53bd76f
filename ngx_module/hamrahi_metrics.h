/*
 * Hook module counters in a shared memory zone (all workers add to the same
 * numbers) and the Prometheus text handler of `hamrahi_status;`.
 */

#ifndef HAMRAHI_METRICS_H
#define HAMRAHI_METRICS_H

#include "ngx_http_hamrahi_module.h"
#include "hamrahi_event.h"


ngx_int_t ngx_http_hamrahi_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_hamrahi_main_conf_t *hmcf);
void ngx_http_hamrahi_metrics_init_process(
    ngx_http_hamrahi_main_conf_t *hmcf);

void ngx_http_hamrahi_metrics_request(hamrahi_route_t route,
    ngx_uint_t status);
/* reason: the error code of the answer ("bad_signature", ...) */
void ngx_http_hamrahi_metrics_reject(const char *reason);
void ngx_http_hamrahi_metrics_redis_reconnect(void);
void ngx_http_hamrahi_metrics_redis_state(ngx_uint_t up);
void ngx_http_hamrahi_metrics_xadd_latency(uint64_t usec);

/*
 * Panel WebSocket counters (called by the panel module). Like the others they
 * are no-ops when no shared zone exists (no hamrahi_hooks/hamrahi_status).
 */
void ngx_http_hamrahi_metrics_panel_open(void);
/* code: the close code sent or received (1000, 1001, 1008, ...) */
void ngx_http_hamrahi_metrics_panel_close(ngx_uint_t code);
void ngx_http_hamrahi_metrics_panel_delivered(ngx_uint_t n);
void ngx_http_hamrahi_metrics_panel_resync(void);
void ngx_http_hamrahi_metrics_panel_slow_cut(void);

/* a monotonic clock in microseconds, for latencies */
uint64_t ngx_http_hamrahi_metrics_now_usec(void);

ngx_int_t ngx_http_hamrahi_status_handler(ngx_http_request_t *r);


#endif /* HAMRAHI_METRICS_H */
