/*
 * Ham Rahi nginx module: what the hook module (ngx_http_hamrahi_module) shares
 * with the panel module (ngx_http_hamrahi_panel_module). Both live in the
 * same .so; see docs/contracts.md.
 */

#ifndef NGX_HTTP_HAMRAHI_MODULE_H
#define NGX_HTTP_HAMRAHI_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/async.h>


/*
 * Strings are NUL-terminated (ready for hiredis). redis_host is an IP
 * literal: a host name in hamrahi_redis is resolved once, at configuration
 * time, so nothing resolves names at run time.
 */
typedef struct {
    ngx_str_t                 redis_host;     /* IP literal, or empty */
    ngx_uint_t                redis_port;
    ngx_str_t                 redis_unix;     /* unix socket path, or empty */
    ngx_msec_t                redis_timeout;
    /* the hook module adds its own fields below */
    ngx_str_t                 hook_secret;
    ngx_str_t                 twilio_token;
    ngx_str_t                 public_base_url;
    ngx_str_t                 public_url_without_port;
    ngx_str_t                 public_url_with_port;
    ngx_uint_t                stream_maxlen;
    ngx_str_t                 stream_maxlen_text;
    ngx_flag_t                hooks_used;
    ngx_shm_zone_t           *metrics_zone;
} ngx_http_hamrahi_main_conf_t;


typedef struct {
    ngx_flag_t                hooks;
    size_t                    max_body;
} ngx_http_hamrahi_loc_conf_t;


extern ngx_module_t  ngx_http_hamrahi_module;
extern ngx_module_t  ngx_http_hamrahi_panel_module;


/*
 * Drive a hiredis async context from nginx's event loop
 * (hamrahi_redis_adapter.c).
 * Call right after redisAsyncConnect*(), and set the connect callback after
 * it: hiredis 0.14 arms the write event (which completes the connect) in
 * redisAsyncSetConnectCallback only when the hooks are already in place.
 * NGX_ERROR leaves ac to the caller. Never reconnect from inside a hiredis
 * callback: free and reconnect from a timer, so the adapter's read loop never
 * meets a context that replaced the one it was reading.
 */
ngx_int_t ngx_http_hamrahi_redis_attach(redisAsyncContext *ac, ngx_log_t *log);


/* A request header by name (case-insensitive), or NULL. */
ngx_table_elt_t *ngx_http_hamrahi_request_header(ngx_http_request_t *r,
    const char *name);

/* A cancelable timer event (never keeps a quitting worker alive). */
void ngx_http_hamrahi_timer_init(ngx_event_t *ev, ngx_event_handler_pt handler,
    void *data, ngx_log_t *log);


#endif /* NGX_HTTP_HAMRAHI_MODULE_H */
