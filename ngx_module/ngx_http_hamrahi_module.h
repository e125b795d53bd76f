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


typedef struct {
    ngx_str_t                 redis_host;     /* IP literal, or empty */
    ngx_uint_t                redis_port;
    ngx_str_t                 redis_unix;     /* unix socket path, or empty */
    ngx_msec_t                redis_timeout;
    /* the hook module adds its own fields below */
} ngx_http_hamrahi_main_conf_t;


extern ngx_module_t  ngx_http_hamrahi_module;
extern ngx_module_t  ngx_http_hamrahi_panel_module;


/*
 * Drive a hiredis async context from nginx's event loop (hamrahi_redis_adapter.c).
 * Call right after redisAsyncConnect*(); NGX_ERROR leaves ac to the caller.
 */
ngx_int_t ngx_http_hamrahi_redis_attach(redisAsyncContext *ac, ngx_log_t *log);


#endif /* NGX_HTTP_HAMRAHI_MODULE_H */
