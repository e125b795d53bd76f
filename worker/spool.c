#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <hiredis/hiredis.h>

#include "log.h"
#include "spool.h"

struct spool {
    rconn_t     *cmd;
    rqueue_t    *redis;
    store_pg_t  *pg;
    char         prefix[128];  /* "consumer:run-ms:" of this run */
    int          asking;
    int          replayed;
    int          closed;
    void       (*on_replayed)(void *arg);
    void        *arg;
};


static void
spool_put(void *arg, const char *id, const char *doc)
{
    spool_t    *sp = arg;
    const char *argv[] = { "HSET", SPOOL_KEY, id, doc };

    rqueue_push(sp->redis, "spool put", 4, argv);
}


static void
spool_done(void *arg, const char *id)
{
    spool_t    *sp = arg;
    const char *argv[] = { "HDEL", SPOOL_KEY, id };

    rqueue_push(sp->redis, "spool done", 3, argv);
}


typedef struct {
    const char *id;
    const char *doc;
} entry_t;


static int
by_id(const void *a, const void *b)
{
    return strcmp(((const entry_t *) a)->id, ((const entry_t *) b)->id);
}


/* Ids sort as consumer, run, sequence: each run's writes replay in the
 * order they were made. This run's own entries wait in memory already. */
static void
replay_entries(spool_t *sp, const redisReply *reply)
{
    entry_t *e;
    size_t   i, n = 0, queued = 0;

    e = calloc(reply->elements / 2 + 1, sizeof(*e));
    if (e == NULL) {
        return;
    }
    for (i = 0; i + 1 < reply->elements; i += 2) {
        if (reply->element[i]->type == REDIS_REPLY_STRING
            && reply->element[i + 1]->type == REDIS_REPLY_STRING
            && strncmp(reply->element[i]->str, sp->prefix,
                       strlen(sp->prefix)) != 0)
        {
            e[n].id = reply->element[i]->str;
            e[n].doc = reply->element[i + 1]->str;
            n++;
        }
    }
    qsort(e, n, sizeof(*e), by_id);
    for (i = 0; i < n; i++) {
        if (store_pg_resubmit(sp->pg, e[i].id, e[i].doc) == 0) {
            queued++;
        } else {
            log_line("spool: %s unreadable; left in place", e[i].id);
        }
    }
    free(e);
    if (n > 0) {
        log_line("spool: %zu write(s) of earlier runs queued", queued);
    }
}


static void
on_entries(redisAsyncContext *ac, void *r, void *priv)
{
    spool_t          *sp = priv;
    const redisReply *reply = r;

    (void) ac;
    sp->asking = 0;
    if (sp->closed) {
        free(sp);
        return;
    }
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return; /* Redis away: spool_replay() is called again */
    }
    sp->replayed = 1;
    replay_entries(sp, reply);
    sp->on_replayed(sp->arg);
}


int
spool_replayed(const spool_t *sp)
{
    return sp->replayed;
}


void
spool_replay(spool_t *sp)
{
    const char *argv[] = { "HGETALL", SPOOL_KEY };

    if (sp->replayed || sp->asking) {
        return;
    }
    sp->asking = rconn_command(sp->cmd, on_entries, sp, 2, argv, NULL) == 0;
}


spool_t *
spool_new(rconn_t *cmd, rqueue_t *redis, store_pg_t *pg, const char *owner,
          void (*on_replayed)(void *arg), void *arg)
{
    spool_t        *sp = calloc(1, sizeof(*sp));
    store_spool_t   hooks;
    struct timespec ts;

    if (sp == NULL) {
        return NULL;
    }
    sp->cmd = cmd;
    sp->redis = redis;
    sp->pg = pg;
    sp->on_replayed = on_replayed;
    sp->arg = arg;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(sp->prefix, sizeof(sp->prefix), "%.100s:%013lld:", owner,
             (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    hooks.put = spool_put;
    hooks.done = spool_done;
    hooks.arg = sp;
    store_pg_set_spool(pg, &hooks, sp->prefix);
    return sp;
}


/* After store_pg_close(); a HGETALL still out frees it on its reply. */
void
spool_free(spool_t *sp)
{
    if (sp->asking) {
        sp->closed = 1;
        return;
    }
    free(sp);
}
