#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <hiredis/adapters/libuv.h>

#include "log.h"
#include "rconn.h"

#define BACKOFF_FIRST_MS  100
/* Small cap: after an outage the worker must read the events stored since
 * (a stream_active that cancels a ringing call, AC8) within about a second. */
#define BACKOFF_MAX_MS    1000
#define CONNECT_MAX_MS    1000
/* The socket is looked at this often: a refused connect, or a connection
 * the server closed, is noticed within it. */
#define CHECK_EVERY_MS    50
#define PING_EVERY_MS     1000
#define READY_EVERY_MS    100   /* PING while Redis answers LOADING */
#define PING_MAX_MS       3000

struct rconn {
    uv_loop_t          *loop;
    redisAsyncContext  *ac;
    uv_timer_t          retry;
    uv_timer_t          health;     /* socket checks, timeouts, PINGs */
    uint64_t            ping_sent;  /* loop ms; 0: none outstanding */
    uint64_t            connect_started;  /* loop ms of the last attempt */
    uint64_t            ping_next;  /* loop ms the next PING is due */
    int                 connected;  /* TCP up; "up" once PING got PONG */
    char                host[256];
    int                 port;
    char                name[32];
    int                 up;
    int                 closing;
    int                 open_handles;  /* freed when the last one closed */
    unsigned            backoff_ms;
    rconn_state_cb      cb;
    void               *arg;
};

static void connect_now(rconn_t *rc);


static void
on_retry(uv_timer_t *t)
{
    connect_now(t->data);
}


static void
schedule_retry(rconn_t *rc)
{
    uint64_t  delay;

    if (rc->closing) {
        return;
    }
    /* Jitter in [backoff/2, backoff] so the workers do not retry in step. */
    delay = rc->backoff_ms / 2 + uv_hrtime() % (rc->backoff_ms / 2 + 1);
    uv_timer_start(&rc->retry, on_retry, delay, 0);
    rc->backoff_ms = rc->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                         : rc->backoff_ms * 2;
}


/* The connection is gone (rc->ac already detached): tell the user if it
 * had been handed out, and try again later. */
static void
lose(rconn_t *rc)
{
    int  was_up = rc->up;

    rc->up = 0;
    rc->connected = 0;
    rc->ping_sent = 0;
    if (was_up) {
        rc->cb(rc, 0, rc->arg);
    }
    schedule_retry(rc);
}


static void
drop(rconn_t *rc, const char *why)
{
    redisAsyncContext *ac = rc->ac;

    log_line("redis %s: %s; reconnecting", rc->name, why);
    uv_timer_stop(&rc->health);
    rc->ac = NULL;
    if (ac != NULL) {
        ac->data = NULL;       /* no disconnect callback into us */
        redisAsyncFree(ac);    /* pending callbacks run with NULL replies */
    }
    lose(rc);
}


static void
become_ready(rconn_t *rc)
{
    log_line("redis %s: ready", rc->name);
    rc->up = 1;
    rc->backoff_ms = BACKOFF_FIRST_MS;
    rc->cb(rc, 1, rc->arg);
}


/*
 * A connection is only handed out ("up") once Redis answers PING with PONG:
 * right after a restart it accepts connections but answers LOADING to
 * every command until it has read its data back, and a command refused then
 * (a queued panel update, the stream group) would be lost.
 */
static void
on_pong(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t          *rc = priv;
    const redisReply *reply = r;

    if (reply == NULL || ac->data != rc) {
        return;
    }
    rc->ping_sent = 0;
    if (reply->type == REDIS_REPLY_ERROR) {
        if (!rc->up) {
            log_line("redis %s: not ready: %s", rc->name, reply->str);
        }
        rc->ping_next = uv_now(rc->loop) + READY_EVERY_MS;
        return;
    }
    rc->ping_next = uv_now(rc->loop) + PING_EVERY_MS;
    if (!rc->up) {
        become_ready(rc);
    }
}


/*
 * hiredis 0.14's libuv adapter ignores a poll error (libuv reports
 * EPOLLERR as status UV_EBADF and stops the handle), so a refused connect or
 * a reset socket would hang forever. So the socket itself is polled (a
 * refused connect or a closed connection is seen within CHECK_EVERY_MS); a
 * connect timeout and a PING that must come back bound the rest; drop() then
 * frees the context from outside hiredis. Returns 1, why filled in, when
 * the socket failed or the server closed it.
 */
static int
socket_failed(rconn_t *rc, char *why, size_t size)
{
    int        err = 0;
    char       byte;
    socklen_t  len = sizeof(err);

    if (getsockopt(rc->ac->c.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0
        && err != 0)
    {
        snprintf(why, size, "%s failed: %s",
                 rc->connected ? "connection" : "connect", strerror(err));
        return 1;
    }
    if (rc->connected
        && recv(rc->ac->c.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
    {
        snprintf(why, size, "connection closed by the server");
        return 1;
    }
    return 0;
}


static void
send_ping(rconn_t *rc, uint64_t now)
{
    if (redisAsyncCommand(rc->ac, on_pong, rc, "PING") == REDIS_OK) {
        rc->ping_sent = now;
    }
}


static void
on_health(uv_timer_t *t)
{
    rconn_t  *rc = t->data;
    uint64_t  now = uv_now(rc->loop);
    char      why[96];

    if (socket_failed(rc, why, sizeof(why))) {
        drop(rc, why);
        return;
    }
    if (!rc->connected) {
        if (now - rc->connect_started >= CONNECT_MAX_MS) {
            drop(rc, "connect timed out");
        }
        return;
    }
    if (rc->ping_sent != 0) {
        if (now - rc->ping_sent > PING_MAX_MS) {
            drop(rc, "no answer to PING");
        }
        return;
    }
    if (now >= rc->ping_next) {
        send_ping(rc, now);
    }
}


static void
on_connect(const redisAsyncContext *ac, int status)
{
    rconn_t *rc = ac->data;

    if (rc == NULL) {
        return; /* closed by rconn_close() */
    }
    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback returns. */
        log_line("redis %s: connect to %s:%d failed: %s", rc->name, rc->host,
                 rc->port, ac->errstr);
        uv_timer_stop(&rc->health);
        rc->ac = NULL;
        schedule_retry(rc);
        return;
    }
    log_line("redis %s: connected to %s:%d", rc->name, rc->host, rc->port);
    rc->connected = 1;
    send_ping(rc, uv_now(rc->loop));
}


static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn_t *rc = ac->data;

    if (rc == NULL) {
        return; /* closed by rconn_close() */
    }
    rc->ac = NULL;
    uv_timer_stop(&rc->health);
    log_line("redis %s: connection lost (%s)", rc->name,
             status == REDIS_OK ? "closed" : ac->errstr);
    lose(rc);
}


static void
connect_now(rconn_t *rc)
{
    redisAsyncContext *ac;

    if (rc->closing || rc->ac != NULL) {
        return;
    }
    ac = redisAsyncConnect(rc->host, rc->port);
    if (ac == NULL || ac->err) {
        log_line("redis %s: cannot connect to %s:%d: %s", rc->name, rc->host,
                 rc->port, ac ? ac->errstr : "out of memory");
        if (ac != NULL) {
            redisAsyncFree(ac);
        }
        schedule_retry(rc);
        return;
    }
    ac->data = rc;
    if (redisLibuvAttach(ac, rc->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    rc->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rc->connect_started = uv_now(rc->loop);
    uv_timer_start(&rc->health, on_health, CHECK_EVERY_MS, CHECK_EVERY_MS);
}


rconn_t *
rconn_new(uv_loop_t *loop, const char *host, int port, const char *name,
          rconn_state_cb cb, void *arg)
{
    rconn_t *rc = calloc(1, sizeof(*rc));

    if (rc == NULL) {
        return NULL;
    }
    rc->loop = loop;
    snprintf(rc->host, sizeof(rc->host), "%s", host);
    snprintf(rc->name, sizeof(rc->name), "%s", name);
    rc->port = port;
    rc->cb = cb;
    rc->arg = arg;
    rc->backoff_ms = BACKOFF_FIRST_MS;
    uv_timer_init(loop, &rc->retry);
    uv_timer_init(loop, &rc->health);
    rc->retry.data = rc;
    rc->health.data = rc;
    connect_now(rc);
    return rc;
}


int
rconn_is_up(const rconn_t *rc)
{
    return rc->up;
}


int
rconn_command(rconn_t *rc, redisCallbackFn *fn, void *privdata, int argc,
              const char **argv, const size_t *argvlen)
{
    if (!rc->up || rc->ac == NULL) {
        return -1;
    }
    if (redisAsyncCommandArgv(rc->ac, fn, privdata, argc, argv, argvlen)
        != REDIS_OK)
    {
        return -1;
    }
    return 0;
}


/* libuv runs close callbacks in no promised order: count them. */
static void
on_retry_closed(uv_handle_t *h)
{
    rconn_t *rc = h->data;

    if (--rc->open_handles == 0) {
        free(rc);
    }
}


void
rconn_close(rconn_t *rc)
{
    rc->closing = 1;
    rc->up = 0;
    rc->connected = 0;
    uv_timer_stop(&rc->retry);
    uv_timer_stop(&rc->health);
    if (rc->ac != NULL) {
        rc->ac->data = NULL;
        redisAsyncDisconnect(rc->ac);
        rc->ac = NULL;
    }
    rc->open_handles = 2;
    uv_close((uv_handle_t *) &rc->retry, on_retry_closed);
    uv_close((uv_handle_t *) &rc->health, on_retry_closed);
}
