#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>

#include "log.h"
#include "rqueue.h"

#define QUEUE_MAX 100000

typedef struct rq_item rq_item_t;

struct rq_item {
    rq_item_t  *next;
    rqueue_t   *q;
    char        what[32];
    int         argc;
    char      **argv;
};

struct rqueue {
    rconn_t    *rc;
    rq_item_t  *head;
    rq_item_t  *tail;
    size_t      queued;
    size_t      in_flight;
};


static void
item_free(rq_item_t *it)
{
    int i;

    for (i = 0; i < it->argc; i++) {
        free(it->argv[i]);
    }
    free(it->argv);
    free(it);
}


static void
append(rqueue_t *q, rq_item_t *it)
{
    it->next = NULL;
    if (q->tail != NULL) {
        q->tail->next = it;
    } else {
        q->head = it;
    }
    q->tail = it;
    q->queued++;
}


static void send_item(rqueue_t *q, rq_item_t *it);


static void
on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    rq_item_t        *it = priv;
    rqueue_t         *q = it->q;
    const redisReply *reply = r;

    (void) ac;
    q->in_flight--;
    if (reply == NULL) {
        append(q, it); /* lost with the connection: resend on reconnect */
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        log_line("redis: %s failed: %s", it->what, reply->str);
    }
    item_free(it);
}


static void
send_item(rqueue_t *q, rq_item_t *it)
{
    if (rconn_command(q->rc, on_reply, it, it->argc, (const char **) it->argv,
                      NULL)
        != 0)
    {
        append(q, it);
        return;
    }
    q->in_flight++;
}


void
rqueue_flush(rqueue_t *q)
{
    rq_item_t *it;

    while (q->head != NULL && rconn_is_up(q->rc)) {
        it = q->head;
        q->head = it->next;
        if (q->head == NULL) {
            q->tail = NULL;
        }
        q->queued--;
        send_item(q, it);
        if (!rconn_is_up(q->rc)) {
            break;
        }
    }
}


rqueue_t *
rqueue_new(rconn_t *rc)
{
    rqueue_t *q = calloc(1, sizeof(*q));

    if (q != NULL) {
        q->rc = rc;
    }
    return q;
}


void
rqueue_push(rqueue_t *q, const char *what, int argc, const char **argv)
{
    rq_item_t *it;
    int        i;

    if (q->queued >= QUEUE_MAX) {
        log_line("redis: queue full, %s dropped", what);
        return;
    }
    it = calloc(1, sizeof(*it));
    if (it == NULL || (it->argv = calloc((size_t) argc, sizeof(char *)))
                          == NULL)
    {
        log_line("redis: out of memory, %s dropped", what);
        free(it);
        return;
    }
    it->q = q;
    snprintf(it->what, sizeof(it->what), "%s", what);
    for (i = 0; i < argc; i++) {
        it->argv[i] = strdup(argv[i]);
        it->argc++;
        if (it->argv[i] == NULL) {
            log_line("redis: out of memory, %s dropped", what);
            item_free(it);
            return;
        }
    }
    if (q->head != NULL || !rconn_is_up(q->rc)) {
        append(q, it); /* keep the order behind what already waits */
        return;
    }
    send_item(q, it);
}


size_t
rqueue_pending(const rqueue_t *q)
{
    return q->queued + q->in_flight;
}


void
rqueue_free(rqueue_t *q)
{
    rq_item_t *it;

    while ((it = q->head) != NULL) {
        q->head = it->next;
        item_free(it);
    }
    free(q);
}
