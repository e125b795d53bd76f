#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>

#include "log.h"
#include "stream.h"

#define GROUP        "fallback"
#define READ_COUNT   "100"
#define BLOCK_MS     "500"
#define CLAIM_EVERY  1000
/* After an error reply (e.g. LOADING while Redis reads its AOF back after a
 * restart) the group creation or the read is tried again this much later:
 * the reader must never stop. */
#define RETRY_MS     100
#define MAX_FIELDS   16

struct stream {
    const config_t *cf;
    rconn_t        *reader;
    rconn_t        *cmd;
    uv_timer_t      claim;
    uv_timer_t      retry;        /* after an error reply */
    stream_entry_cb cb;
    void           *arg;
    char            cursor[48];   /* "0..." while replaying pending, ">" after */
    int             running;
    int             reading;      /* an XREADGROUP is in flight */
    int             group_ready;
    int             claiming;     /* an XAUTOCLAIM pass is in flight */
    int             closed;       /* replies still due are dropped */
    int             claim_idle;   /* ms of the pass in flight */
};

static void read_next(stream_t *st);


static int
command(rconn_t *rc, redisCallbackFn *fn, void *priv, int argc,
        const char **argv)
{
    return rconn_command(rc, fn, priv, argc, argv, NULL);
}


static void
deliver_entry(stream_t *st, const redisReply *entry, int redelivered)
{
    const char        *names[MAX_FIELDS], *values[MAX_FIELDS];
    const redisReply  *kv;
    size_t             i, n = 0;

    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2
        || entry->element[0]->type != REDIS_REPLY_STRING)
    {
        return;
    }
    kv = entry->element[1];
    if (kv->type != REDIS_REPLY_ARRAY) {
        /* Pending, but trimmed away from the stream: nothing to apply. */
        st->cb(st->arg, entry->element[0]->str, 0, NULL, NULL, redelivered);
        return;
    }
    for (i = 0; i + 1 < kv->elements && n < MAX_FIELDS; i += 2) {
        if (kv->element[i]->type == REDIS_REPLY_STRING
            && kv->element[i + 1]->type == REDIS_REPLY_STRING)
        {
            names[n] = kv->element[i]->str;
            values[n] = kv->element[i + 1]->str;
            n++;
        }
    }
    st->cb(st->arg, entry->element[0]->str, n, names, values, redelivered);
}


/* Returns the number of entries delivered; sets the cursor while
 * replaying our own pending entries. */
static size_t
deliver_entries(stream_t *st, const redisReply *entries, int redelivered)
{
    const redisReply *last;
    size_t            i;

    if (entries == NULL || entries->type != REDIS_REPLY_ARRAY) {
        return 0;
    }
    for (i = 0; i < entries->elements; i++) {
        deliver_entry(st, entries->element[i], redelivered);
    }
    if (redelivered && st->cursor[0] != '>' && entries->elements > 0) {
        last = entries->element[entries->elements - 1];
        if (last->type == REDIS_REPLY_ARRAY && last->elements > 0
            && last->element[0]->type == REDIS_REPLY_STRING)
        {
            snprintf(st->cursor, sizeof(st->cursor), "%s",
                     last->element[0]->str);
        }
    }
    return entries->elements;
}


static void create_group(stream_t *st);


static void
on_retry(uv_timer_t *t)
{
    stream_t *st = t->data;

    if (st->closed || !rconn_is_up(st->reader)) {
        return; /* the reconnect starts over with the group */
    }
    if (!st->group_ready) {
        create_group(st);
    } else {
        read_next(st);
    }
}


static void
retry_later(stream_t *st)
{
    if (!st->closed) {
        uv_timer_start(&st->retry, on_retry, RETRY_MS, 0);
    }
}


static void
on_read(redisAsyncContext *ac, void *r, void *priv)
{
    stream_t         *st = priv;
    const redisReply *reply = r;
    const redisReply *entries = NULL;
    int               replaying = st->cursor[0] != '>';
    size_t            n;

    (void) ac;
    st->reading = 0;
    if (reply == NULL || st->closed) {
        return; /* connection lost: the reconnect restarts from "0" */
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        log_line("stream: XREADGROUP failed: %s", reply->str);
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            st->group_ready = 0;
        }
        retry_later(st);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
        && reply->element[0]->type == REDIS_REPLY_ARRAY
        && reply->element[0]->elements == 2)
    {
        entries = reply->element[0]->element[1];
    }
    n = deliver_entries(st, entries, replaying);
    if (replaying && n == 0) {
        strcpy(st->cursor, ">"); /* our pending entries are all handed out */
    }
    read_next(st);
}


static void
read_next(stream_t *st)
{
    const char *argv[] = { "XREADGROUP", "GROUP", GROUP, st->cf->consumer_name,
                           "COUNT", READ_COUNT, "BLOCK", BLOCK_MS, "STREAMS",
                           st->cf->stream_key, st->cursor };

    if (!st->running || st->reading || !st->group_ready) {
        return;
    }
    if (command(st->reader, on_read, st, 11, argv) == 0) {
        st->reading = 1;
    }
}


static void
on_group(redisAsyncContext *ac, void *r, void *priv)
{
    stream_t         *st = priv;
    const redisReply *reply = r;

    (void) ac;
    if (reply == NULL) {
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR
        && strncmp(reply->str, "BUSYGROUP", 9) != 0)
    {
        log_line("stream: XGROUP CREATE failed: %s", reply->str);
        retry_later(st);
        return;
    }
    st->group_ready = 1;
    strcpy(st->cursor, "0");
    if (!st->running) {
        /* A standby shows up as a consumer of the group before it reads. */
        const char *argv[] = { "XGROUP", "CREATECONSUMER", st->cf->stream_key,
                               GROUP, st->cf->consumer_name };

        command(st->reader, NULL, NULL, 5, argv);
    }
    read_next(st);
}


/* From id 0: activations that arrived before this group existed are
 * still SOS sessions (the state machine ignores ones too old to matter). */
static void
create_group(stream_t *st)
{
    const char *argv[] = { "XGROUP", "CREATE", st->cf->stream_key, GROUP, "0",
                           "MKSTREAM" };

    command(st->reader, on_group, st, 6, argv);
}


static void
on_reader_state(rconn_t *rc, int up, void *arg)
{
    stream_t *st = arg;

    (void) rc;
    st->reading = 0;
    st->group_ready = 0;
    if (up) {
        create_group(st);
    }
}


static void claim_from(stream_t *st, const char *cursor);


static void
on_claim(redisAsyncContext *ac, void *r, void *priv)
{
    stream_t         *st = priv;
    const redisReply *reply = r;
    const redisReply *next;

    (void) ac;
    st->claiming = 0;
    if (reply == NULL || st->closed || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 2)
    {
        return;
    }
    if (reply->element[1]->elements > 0) {
        log_line("stream: claimed %zu pending entries of other consumers",
                 reply->element[1]->elements);
    }
    deliver_entries(st, reply->element[1], 1);
    next = reply->element[0];
    if (next->type == REDIS_REPLY_STRING && strcmp(next->str, "0-0") != 0) {
        claim_from(st, next->str); /* more to scan */
    }
}


static void
claim_from(stream_t *st, const char *cursor)
{
    char        idle[24];
    const char *argv[] = { "XAUTOCLAIM", st->cf->stream_key, GROUP,
                           st->cf->consumer_name, idle, cursor, "COUNT",
                           READ_COUNT };

    if (!st->running || !st->group_ready || st->claiming) {
        return;
    }
    snprintf(idle, sizeof(idle), "%d", st->claim_idle);
    st->claiming = command(st->cmd, on_claim, st, 8, argv) == 0;
}


static void
claim_stale(uv_timer_t *t)
{
    stream_t *st = t->data;

    st->claim_idle = st->cf->claim_idle_ms;
    claim_from(st, "0-0");
}


void
stream_claim_all(stream_t *st)
{
    st->claim_idle = 0;
    claim_from(st, "0-0");
}


stream_t *
stream_new(uv_loop_t *loop, const config_t *cf, rconn_t *cmd,
           stream_entry_cb cb, void *arg)
{
    stream_t *st = calloc(1, sizeof(*st));

    if (st == NULL) {
        return NULL;
    }
    st->cf = cf;
    st->cmd = cmd;
    st->cb = cb;
    st->arg = arg;
    strcpy(st->cursor, "0");
    uv_timer_init(loop, &st->claim);
    st->claim.data = st;
    uv_timer_init(loop, &st->retry);
    st->retry.data = st;
    st->reader = rconn_new(loop, cf->redis_host, cf->redis_port, "reader",
                           on_reader_state, st);
    if (st->reader == NULL) {
        free(st);
        return NULL;
    }
    return st;
}


void
stream_start(stream_t *st)
{
    st->running = 1;
    uv_timer_start(&st->claim, claim_stale, CLAIM_EVERY, CLAIM_EVERY);
    strcpy(st->cursor, "0");
    read_next(st);
}


void
stream_stop(stream_t *st)
{
    st->running = 0;
    uv_timer_stop(&st->claim);
}


static void
on_ack(redisAsyncContext *ac, void *r, void *priv)
{
    const redisReply *reply = r;

    (void) ac;
    (void) priv;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        /* Stays pending: redelivered on reconnect, then skipped as
         * processed and acknowledged again. */
        log_line("stream: XACK failed: %s", reply ? reply->str : "no reply");
    }
}


void
stream_ack(stream_t *st, const char *id)
{
    const char *argv[] = { "XACK", st->cf->stream_key, GROUP, id };

    if (command(st->cmd, on_ack, NULL, 4, argv) != 0) {
        log_line("stream: XACK %s deferred: redis is down", id);
    }
}


void
stream_close(stream_t *st)
{
    stream_stop(st);
    st->closed = 1;
    rconn_close(st->reader);
    uv_close((uv_handle_t *) &st->claim, NULL);
    uv_close((uv_handle_t *) &st->retry, NULL);
}


void
stream_free(stream_t *st)
{
    free(st);
}
