/*
 * hiredis <-> nginx event adapter: the five ev hooks of a redisAsyncContext
 * on an ngx_connection_t that wraps the hiredis socket, so nginx's event loop
 * drives it. Nothing else lives here.
 */

#include <sys/ioctl.h>

#include "ngx_http_hamrahi_module.h"
#include <hiredis/sds.h>


/*
 * nginx registers events edge-triggered (NGX_CLEAR_EVENT is EPOLLET on Linux)
 * while hiredis 0.14's redisBufferRead reads one 16 KiB chunk per call. So
 * after an edge we keep calling redisAsyncHandleRead until FIONREAD says the
 * socket buffer is empty (plus one last read when the peer's FIN is pending,
 * so a close that arrived with data is not missed). The loop is bounded: past
 * the bound the event is posted and the rest is read later in this cycle,
 * after other connections have had their turn.
 */
#define NGX_HTTP_HAMRAHI_REDIS_READS_PER_EVENT  64

/*
 * Writes: the write event stays registered (edge-triggered, it does not
 * spin). While the socket is writable (wev->ready), a new command posts the
 * write event instead of asking epoll, so every command queued in one cycle
 * leaves in one write(), with no epoll_ctl per command. A write that leaves
 * bytes behind means the socket buffer is full: ready is cleared and the
 * next EPOLLOUT edge resumes.
 */


static void ngx_http_hamrahi_redis_read_handler(ngx_event_t *rev);
static void ngx_http_hamrahi_redis_write_handler(ngx_event_t *wev);
static void ngx_http_hamrahi_redis_add_read(void *privdata);
static void ngx_http_hamrahi_redis_del_read(void *privdata);
static void ngx_http_hamrahi_redis_add_write(void *privdata);
static void ngx_http_hamrahi_redis_del_write(void *privdata);
static void ngx_http_hamrahi_redis_cleanup(void *privdata);


ngx_int_t
ngx_http_hamrahi_redis_attach(redisAsyncContext *ac, ngx_log_t *log)
{
    ngx_connection_t  *c;

    if (ac->ev.data != NULL || ac->c.fd < 0) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = ac;
    c->read->handler = ngx_http_hamrahi_redis_read_handler;
    c->write->handler = ngx_http_hamrahi_redis_write_handler;
    c->read->log = log;
    c->write->log = log;

    ac->ev.data = c;
    ac->ev.addRead = ngx_http_hamrahi_redis_add_read;
    ac->ev.delRead = ngx_http_hamrahi_redis_del_read;
    ac->ev.addWrite = ngx_http_hamrahi_redis_add_write;
    ac->ev.delWrite = ngx_http_hamrahi_redis_del_write;
    ac->ev.cleanup = ngx_http_hamrahi_redis_cleanup;

    return NGX_OK;
}


static void
ngx_http_hamrahi_redis_read_handler(ngx_event_t *rev)
{
    int                 pending;
    ngx_uint_t          i;
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = rev->data;
    ac = c->data;

    for (i = 0; i < NGX_HTTP_HAMRAHI_REDIS_READS_PER_EVENT; i++) {
        if (ac == NULL) {
            return;
        }

        redisAsyncHandleRead(ac);

        /* a reply callback or a read error may have freed the context */
        if (c->data != ac) {
            return;
        }

        if (ioctl(c->fd, FIONREAD, &pending) == -1) {
            return;
        }

        if (pending == 0) {
            if (!rev->pending_eof) {
                return;
            }

            rev->pending_eof = 0;
        }
    }

    ngx_post_event(rev, &ngx_posted_events);
}


static void
ngx_http_hamrahi_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = wev->data;
    ac = c->data;

    if (ac == NULL) {
        return;
    }

    redisAsyncHandleWrite(ac);

    /* a write error may have freed the context */
    if (c->data == ac && ac->c.obuf != NULL && sdslen(ac->c.obuf) > 0) {
        wev->ready = 0;

        if (wev->posted) {
            ngx_delete_posted_event(wev);
        }
    }
}


/* hiredis calls each hook any number of times: every hook is idempotent */

static void
ngx_http_hamrahi_redis_add_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        return;
    }

    if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_CLEAR_EVENT) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "hamrahi: redis: cannot watch the socket for reading");
    }
}


static void
ngx_http_hamrahi_redis_del_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (!c->read->active) {
        return;
    }

    /* the flags apply to the write event if it stays: keep it edge-triggered */
    if (ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLEAR_EVENT) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "hamrahi: redis: cannot stop reading the socket");
    }
}


static void
ngx_http_hamrahi_redis_add_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (!c->write->active
        && ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_CLEAR_EVENT)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "hamrahi: redis: cannot watch the socket for writing");
        return;
    }

    if (c->write->ready && !c->write->posted) {
        ngx_post_event(c->write, &ngx_posted_events);
    }
}


/* hiredis has nothing left to send: the edge-triggered registration stays */
static void
ngx_http_hamrahi_redis_del_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }
}


/*
 * Called by hiredis right before it closes the socket and frees the context:
 * unregister the fd, drop pending events and cut both back-pointers, so an
 * event already fetched by epoll in this cycle finds c->fd == -1 (stale) and
 * c->data == NULL.
 */
static void
ngx_http_hamrahi_redis_cleanup(void *privdata)
{
    ngx_connection_t   *c = privdata;
    redisAsyncContext  *ac;

    ac = c->data;

    if (c->read->active || c->write->active) {
        if (ngx_del_conn) {
            ngx_del_conn(c, 0);

        } else {
            ngx_http_hamrahi_redis_del_read(c);

            if (c->write->active) {
                (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
            }
        }
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (ac != NULL) {
        ac->ev.data = NULL;
    }

    c->data = NULL;
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}
