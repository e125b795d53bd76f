/*
 * The per-worker Redis command connection of the hook module: connect in
 * init_process, reconnect with exponential backoff and jitter, and a timer per
 * command (hiredis 0.14 has no redisAsyncSetTimeout).
 */

#ifndef HAMRAHI_REDIS_H
#define HAMRAHI_REDIS_H

#include "ngx_http_hamrahi_module.h"
#include <hiredis/hiredis.h>


typedef struct ngx_http_hamrahi_redis_cmd_s  ngx_http_hamrahi_redis_cmd_t;

/*
 * reply is NULL when the connection failed or Redis did not answer within
 * redis_timeout: never treat that as success. The handler may finalize a
 * request; it must not free reply.
 */
typedef void (*ngx_http_hamrahi_redis_handler_pt)(redisReply *reply,
    void *data);


ngx_int_t ngx_http_hamrahi_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_hamrahi_main_conf_t *hmcf);
void ngx_http_hamrahi_redis_exit_process(void);

/*
 * Queue one command. NULL when not connected (answer 503 at once); otherwise
 * the handler runs exactly once, unless ngx_http_hamrahi_redis_cancel() comes
 * first. argv is copied before the call returns.
 */
ngx_http_hamrahi_redis_cmd_t *ngx_http_hamrahi_redis_command(
    ngx_http_hamrahi_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);

/* detach the handler (its request is gone); the reply is then dropped */
void ngx_http_hamrahi_redis_cancel(ngx_http_hamrahi_redis_cmd_t *cmd);


#endif /* HAMRAHI_REDIS_H */
