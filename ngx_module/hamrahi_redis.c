/*
 * The per-worker Redis command connection (see hamrahi_redis.h).
 *
 * Replies come back in command order, so when the oldest command outlives
 * redis_timeout nothing behind it can be answered either: the connection is
 * then dropped (every pending command gets reply == NULL) and rebuilt.
 */

#include "hamrahi_redis.h"
#include "hamrahi_metrics.h"


#define NGX_HTTP_HAMRAHI_REDIS_BACKOFF_MIN  50      /* ms */
#define NGX_HTTP_HAMRAHI_REDIS_BACKOFF_MAX  1000    /* ms */


typedef enum {
    NGX_HTTP_HAMRAHI_REDIS_DOWN = 0,
    NGX_HTTP_HAMRAHI_REDIS_CONNECTING,
    NGX_HTTP_HAMRAHI_REDIS_UP
} ngx_http_hamrahi_redis_state_e;


struct ngx_http_hamrahi_redis_cmd_s {
    ngx_http_hamrahi_redis_handler_pt   handler;    /* NULL: detached */
    void                               *data;
    ngx_event_t                         timer;
    ngx_queue_t                         queue;      /* in pending */
};


typedef struct {
    redisAsyncContext                  *ac;
    ngx_http_hamrahi_redis_state_e      state;
    ngx_http_hamrahi_main_conf_t       *conf;
    ngx_log_t                          *log;
    ngx_msec_t                          backoff;
    ngx_uint_t                          failures;   /* connects in a row */
    ngx_event_t                         reconnect;
    ngx_event_t                         connect_timer;
    ngx_queue_t                         pending;
    ngx_uint_t                          exiting;
} ngx_http_hamrahi_redis_t;


static void ngx_http_hamrahi_redis_connect(void);
static void ngx_http_hamrahi_redis_log_failure(const char *why);
static void ngx_http_hamrahi_redis_schedule(void);
static void ngx_http_hamrahi_redis_drop(const char *why);
static void ngx_http_hamrahi_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_hamrahi_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_hamrahi_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_hamrahi_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_http_hamrahi_redis_on_reply(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_hamrahi_redis_command_timeout(ngx_event_t *ev);
static void ngx_http_hamrahi_redis_set_state(
    ngx_http_hamrahi_redis_state_e state);


static ngx_http_hamrahi_redis_t  ngx_http_hamrahi_redis;


ngx_int_t
ngx_http_hamrahi_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_hamrahi_main_conf_t *hmcf)
{
    ngx_http_hamrahi_redis_t  *rd = &ngx_http_hamrahi_redis;

    ngx_memzero(rd, sizeof(ngx_http_hamrahi_redis_t));

    rd->conf = hmcf;
    rd->log = cycle->log;
    ngx_queue_init(&rd->pending);

    ngx_http_hamrahi_timer_init(&rd->reconnect,
                                ngx_http_hamrahi_redis_reconnect_handler, rd,
                                cycle->log);
    ngx_http_hamrahi_timer_init(&rd->connect_timer,
                                ngx_http_hamrahi_redis_connect_timeout, rd,
                                cycle->log);

    ngx_http_hamrahi_redis_connect();

    return NGX_OK;
}


void
ngx_http_hamrahi_redis_exit_process(void)
{
    ngx_queue_t                   *q;
    ngx_http_hamrahi_redis_t      *rd = &ngx_http_hamrahi_redis;
    ngx_http_hamrahi_redis_cmd_t  *cmd;

    rd->exiting = 1;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    /* requests are being torn down: nobody is left to answer */
    for (q = ngx_queue_head(&rd->pending);
         q != ngx_queue_sentinel(&rd->pending);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_http_hamrahi_redis_cmd_t, queue);
        ngx_http_hamrahi_redis_cancel(cmd);
    }

    ngx_http_hamrahi_redis_drop(NULL);
}


static void
ngx_http_hamrahi_redis_set_state(ngx_http_hamrahi_redis_state_e state)
{
    ngx_http_hamrahi_redis.state = state;
    ngx_http_hamrahi_metrics_redis_state(state
                                         == NGX_HTTP_HAMRAHI_REDIS_UP);
}


static void
ngx_http_hamrahi_redis_connect(void)
{
    redisAsyncContext             *ac;
    ngx_http_hamrahi_redis_t      *rd = &ngx_http_hamrahi_redis;
    ngx_http_hamrahi_main_conf_t  *conf = rd->conf;

    if (conf->redis_unix.len) {
        ac = redisAsyncConnectUnix((const char *) conf->redis_unix.data);

    } else {
        ac = redisAsyncConnect((const char *) conf->redis_host.data,
                               (int) conf->redis_port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "hamrahi: redis: cannot allocate a connection");
        ngx_http_hamrahi_redis_schedule();
        return;
    }

    if (ac->err) {
        ngx_http_hamrahi_redis_log_failure(ac->errstr);
        redisAsyncFree(ac);
        ngx_http_hamrahi_redis_schedule();
        return;
    }

    if (ngx_http_hamrahi_redis_attach(ac, rd->log) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_http_hamrahi_redis_schedule();
        return;
    }

    rd->ac = ac;
    ngx_http_hamrahi_redis_set_state(NGX_HTTP_HAMRAHI_REDIS_CONNECTING);

    redisAsyncSetConnectCallback(ac, ngx_http_hamrahi_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_hamrahi_redis_on_disconnect);

    ngx_add_timer(&rd->connect_timer, conf->redis_timeout);
}


/* the first failure of an outage is an error, the repeats are noise */
static void
ngx_http_hamrahi_redis_log_failure(const char *why)
{
    ngx_uint_t                 level;
    ngx_http_hamrahi_redis_t  *rd = &ngx_http_hamrahi_redis;

    level = rd->failures++ ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, rd->log, 0, "hamrahi: redis: connect failed: %s",
                  why);
}


/* exponential backoff with jitter: [d/2, d], d doubling up to the max */
static void
ngx_http_hamrahi_redis_schedule(void)
{
    ngx_msec_t                 delay;
    ngx_http_hamrahi_redis_t  *rd = &ngx_http_hamrahi_redis;

    if (rd->exiting || rd->reconnect.timer_set) {
        return;
    }

    if (rd->backoff == 0) {
        rd->backoff = NGX_HTTP_HAMRAHI_REDIS_BACKOFF_MIN;

    } else {
        rd->backoff = ngx_min(rd->backoff * 2,
                              NGX_HTTP_HAMRAHI_REDIS_BACKOFF_MAX);
    }

    delay = rd->backoff / 2 + (ngx_msec_t) ngx_random() % (rd->backoff / 2 + 1);

    ngx_http_hamrahi_redis_set_state(NGX_HTTP_HAMRAHI_REDIS_DOWN);
    ngx_add_timer(&rd->reconnect, delay);
}


/*
 * Free the context (outside any hiredis callback): its pending commands get
 * reply == NULL. why == NULL: no reconnect (the worker is exiting).
 */
static void
ngx_http_hamrahi_redis_drop(const char *why)
{
    redisAsyncContext         *ac;
    ngx_http_hamrahi_redis_t  *rd = &ngx_http_hamrahi_redis;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    ac = rd->ac;
    rd->ac = NULL;
    ngx_http_hamrahi_redis_set_state(NGX_HTTP_HAMRAHI_REDIS_DOWN);

    if (ac != NULL) {
        redisAsyncFree(ac);
    }

    if (why != NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "hamrahi: redis: connection dropped: %s", why);
        ngx_http_hamrahi_metrics_redis_reconnect();
        ngx_http_hamrahi_redis_schedule();
    }
}


static void
ngx_http_hamrahi_redis_reconnect_handler(ngx_event_t *ev)
{
    (void) ev;

    ngx_http_hamrahi_redis_connect();
}


static void
ngx_http_hamrahi_redis_connect_timeout(ngx_event_t *ev)
{
    (void) ev;

    ngx_http_hamrahi_redis_drop("connect timed out");
}


static void
ngx_http_hamrahi_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_hamrahi_redis_t  *rd = &ngx_http_hamrahi_redis;

    if (ac != rd->ac) {
        return;
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context once we return */
        ngx_http_hamrahi_redis_log_failure(ac->errstr);
        rd->ac = NULL;
        ngx_http_hamrahi_redis_schedule();
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "hamrahi: redis: connected (after %ui failed attempts)",
                  rd->failures);

    rd->backoff = 0;
    rd->failures = 0;
    ngx_http_hamrahi_redis_set_state(NGX_HTTP_HAMRAHI_REDIS_UP);
}


static void
ngx_http_hamrahi_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_hamrahi_redis_t  *rd = &ngx_http_hamrahi_redis;

    if (ac != rd->ac) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, 0, "hamrahi: redis: disconnected: %s",
                  status == REDIS_OK ? "closed" : ac->errstr);

    rd->ac = NULL;
    ngx_http_hamrahi_metrics_redis_reconnect();
    ngx_http_hamrahi_redis_schedule();
}


ngx_http_hamrahi_redis_cmd_t *
ngx_http_hamrahi_redis_command(ngx_http_hamrahi_redis_handler_pt handler,
    void *data, int argc, const char **argv, const size_t *argvlen)
{
    ngx_http_hamrahi_redis_t      *rd = &ngx_http_hamrahi_redis;
    ngx_http_hamrahi_redis_cmd_t  *cmd;

    if (rd->state != NGX_HTTP_HAMRAHI_REDIS_UP || rd->ac == NULL) {
        return NULL;
    }

    cmd = ngx_calloc(sizeof(ngx_http_hamrahi_redis_cmd_t), rd->log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;

    /* fails while hiredis is tearing the context down */
    if (redisAsyncCommandArgv(rd->ac, ngx_http_hamrahi_redis_on_reply, cmd,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_free(cmd);
        return NULL;
    }

    cmd->timer.handler = ngx_http_hamrahi_redis_command_timeout;
    cmd->timer.data = cmd;
    cmd->timer.log = rd->log;
    ngx_add_timer(&cmd->timer, rd->conf->redis_timeout);

    ngx_queue_insert_tail(&rd->pending, &cmd->queue);

    return cmd;
}


void
ngx_http_hamrahi_redis_cancel(ngx_http_hamrahi_redis_cmd_t *cmd)
{
    cmd->handler = NULL;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }
}


static void
ngx_http_hamrahi_redis_on_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_hamrahi_redis_cmd_t       *cmd = privdata;
    ngx_http_hamrahi_redis_handler_pt   handler;

    (void) ac;

    ngx_queue_remove(&cmd->queue);

    handler = cmd->handler;
    ngx_http_hamrahi_redis_cancel(cmd);

    if (handler != NULL) {
        handler(reply, cmd->data);
    }

    ngx_free(cmd);
}


static void
ngx_http_hamrahi_redis_command_timeout(ngx_event_t *ev)
{
    ngx_http_hamrahi_redis_cmd_t       *cmd = ev->data;
    ngx_http_hamrahi_redis_handler_pt   handler;

    handler = cmd->handler;
    cmd->handler = NULL;

    if (handler != NULL) {
        handler(NULL, cmd->data);
    }

    /* cmd itself is freed by its reply callback, with NULL, in the drop */
    ngx_http_hamrahi_redis_drop("a command timed out");
}
