#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <hiredis/hiredis.h>

#include "lease.h"
#include "log.h"

/* A standby takes over at most TTL + TRY after the holder's last renewal
 * (DESIGN.md: within 2 s of its death); the holder renews four times a TTL. */
#define LEASE_TTL_MS    "1200"
#define LEASE_TTL       1200
#define LEASE_RENEW_MS  300
#define LEASE_TRY_MS    100
/* Clocks of two hosts drift; the lease counts as ours this much less. */
#define LEASE_MARGIN_MS 200

/* Renew if ours; take it if free (Redis lost it); else report it lost. */
static const char renew_script[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1\n"
    "elseif v == false then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1\n"
    "end\n"
    "return 0\n";

static const char release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 0\n";

struct lease {
    uv_loop_t  *loop;
    uint64_t    asked_at;         /* loop ms the command out was sent */
    uint64_t    confirmed_until;  /* no one else can hold it before */
    void      (*on_confirmed)(void *arg);
    void       *confirmed_arg;
    rconn_t    *cmd;
    uv_timer_t  timer;
    char        key[160];
    char        fence_key[176];
    char        owner[200];
    int         held;
    int         asking;    /* a command is out: never two at once */
    int         closed;    /* replies still due are dropped */
    void      (*on_acquired)(void *arg);
    void      (*on_lost)(void *arg);
    void       *arg;
};


static void
on_fence(redisAsyncContext *ac, void *r, void *priv)
{
    lease_t          *l = priv;
    const redisReply *reply = r;

    (void) ac;
    if (!l->closed && reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        log_line("lease %s: acquired by %s, fencing token %lld", l->key,
                 l->owner, reply->integer);
    }
}


/* The reply to a command sent at asked_at says the lease is ours: nobody
 * can take it before asked_at + TTL, whatever happened since. */
static void
confirm(lease_t *l)
{
    l->confirmed_until = l->asked_at + LEASE_TTL - LEASE_MARGIN_MS;
    if (l->on_confirmed != NULL) {
        l->on_confirmed(l->confirmed_arg);
    }
}


static void
on_acquire(redisAsyncContext *ac, void *r, void *priv)
{
    lease_t          *l = priv;
    const redisReply *reply = r;
    const char       *argv[] = { "INCR", l->fence_key };

    (void) ac;
    l->asking = 0;
    if (l->closed || reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        return; /* held by another worker (nil), or Redis away */
    }
    l->held = 1;
    confirm(l);
    rconn_command(l->cmd, on_fence, l, 2, argv, NULL);
    l->on_acquired(l->arg);
}


static void
on_renew(redisAsyncContext *ac, void *r, void *priv)
{
    lease_t          *l = priv;
    const redisReply *reply = r;

    (void) ac;
    l->asking = 0;
    if (l->closed || reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        return; /* Redis away: nobody else can take it meanwhile */
    }
    if (reply->integer == 0 && l->held) {
        l->held = 0;
        log_line("lease %s: lost to another worker", l->key);
        l->on_lost(l->arg);
        return;
    }
    if (reply->integer == 1 && l->held) {
        confirm(l);
    }
}


static void
tick(uv_timer_t *t)
{
    lease_t    *l = t->data;
    const char *acquire[] = { "SET", l->key, l->owner, "NX", "PX",
                              LEASE_TTL_MS };
    const char *renew[] = { "EVAL", renew_script, "1", l->key, l->owner,
                            LEASE_TTL_MS };

    if (l->asking || !rconn_is_up(l->cmd)) {
        return;
    }
    if (l->held && uv_now(l->loop) - l->asked_at < LEASE_RENEW_MS) {
        return;
    }
    l->asked_at = uv_now(l->loop);
    if (l->held) {
        l->asking = rconn_command(l->cmd, on_renew, l, 6, renew, NULL) == 0;
    } else {
        l->asking = rconn_command(l->cmd, on_acquire, l, 6, acquire, NULL)
                    == 0;
    }
}


lease_t *
lease_new(uv_loop_t *loop, rconn_t *cmd, const char *key, const char *owner,
          void (*on_acquired)(void *arg), void (*on_lost)(void *arg),
          void *arg)
{
    lease_t       *l = calloc(1, sizeof(*l));
    unsigned char  raw[6];

    if (l == NULL || getrandom(raw, sizeof(raw), 0) != (ssize_t) sizeof(raw)) {
        free(l);
        return NULL;
    }
    l->loop = loop;
    l->cmd = cmd;
    snprintf(l->key, sizeof(l->key), "%s", key);
    snprintf(l->fence_key, sizeof(l->fence_key), "%s:fence", key);
    snprintf(l->owner, sizeof(l->owner), "%.150s:%02x%02x%02x%02x%02x%02x",
             owner, raw[0], raw[1], raw[2], raw[3], raw[4], raw[5]);
    l->on_acquired = on_acquired;
    l->on_lost = on_lost;
    l->arg = arg;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, tick, 0, LEASE_TRY_MS);
    return l;
}


int
lease_held(const lease_t *l)
{
    return l->held;
}


int
lease_confirmed(const lease_t *l)
{
    uv_loop_t *loop = l->loop;

    uv_update_time(loop); /* the cached time may predate a long pause */
    return l->held
           && (uv_now(loop) < l->confirmed_until || !rconn_is_up(l->cmd));
}


void
lease_on_confirmed(lease_t *l, void (*fn)(void *arg), void *arg)
{
    l->on_confirmed = fn;
    l->confirmed_arg = arg;
}


void
lease_release(lease_t *l)
{
    const char *argv[] = { "EVAL", release_script, "1", l->key, l->owner };

    uv_timer_stop(&l->timer);
    if (l->held) {
        l->held = 0;
        rconn_command(l->cmd, NULL, NULL, 5, argv, NULL);
        log_line("lease %s: released", l->key);
    }
}


void
lease_close(lease_t *l)
{
    l->closed = 1;
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *) &l->timer, NULL);
}


void
lease_free(lease_t *l)
{
    free(l);
}
