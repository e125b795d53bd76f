/*
 * hamrahi-worker: wiring only. Configuration, the libuv loop, the start
 * sequence (PostgreSQL reload before the stream), SIGTERM drain and the
 * systemd notifications. Decisions live in session.c.
 */

#include <getopt.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include "config.h"
#include "directory.h"
#include "engine.h"
#include "fence.h"
#include "http_uv.h"
#include "lease.h"
#include "log.h"
#include "metrics.h"
#include "panel_pub.h"
#include "rconn.h"
#include "rqueue.h"
#include "spool.h"
#include "store_pg.h"
#include "stream.h"
#include "telephony_twilio.h"

#define START_WAIT_MS   3000   /* reading waits this long for the reload */
#define DRAIN_CHECK_MS  50
#define DRAIN_MAX_MS    10000

typedef struct {
    uv_loop_t    *loop;
    config_t      cf;
    rconn_t      *cmd;
    rqueue_t     *redis;
    panel_pub_t  *panel;
    http_t       *http;
    provider_t   *provider;
    store_pg_t   *pg;
    directory_t  *dir;
    spool_t      *spool;
    engine_t     *engine;
    stream_t     *stream;
    metrics_t    *metrics;
    lease_t      *lease;
    uv_signal_t   sigterm;
    uv_signal_t   sigint;
    uv_timer_t    start_wait;
    uv_timer_t    watchdog;
    uv_timer_t    drain;
    int64_t       drain_started_ms;
    int           active;         /* holds the shard's lease */
    int           reloaded;
    int           reload_running;
    int           reading;
    int           draining;
} worker_t;

static worker_t W;


static void
start_reading(worker_t *w, const char *why)
{
    if (w->reading || w->draining) {
        return;
    }
    w->reading = 1;
    uv_timer_stop(&w->start_wait);
    log_line("reading %s as consumer %s (%s)", w->cf.stream_key,
             w->cf.consumer_name, why);
    stream_start(w->stream);
    stream_claim_all(w->stream); /* a dead worker's pending entries */
    sd_notify(0, "STATUS=active");
}


static void
on_reloaded(void *arg)
{
    worker_t *w = arg;

    w->reload_running = 0;
    w->reloaded = 1;
    start_reading(w, "open sessions reloaded");
}


/* PostgreSQL (re)connected, the lease won, or the spool replayed: once all
 * three, reload the open sessions (a standby holds no session before it
 * takes over; the spooled writes of a dead worker are queued before the
 * reload, so that it sees them). */
static void
on_pg_up(void *arg)
{
    worker_t *w = arg;

    if (w->dir != NULL) {
        directory_refresh(w->dir);
    }
    if (w->active && !w->reloaded && !w->reload_running
        && store_pg_is_up(w->pg) && spool_replayed(w->spool))
    {
        w->reload_running = 1;
        engine_reload(w->engine, on_reloaded, w);
    }
}


static void
on_start_wait(uv_timer_t *t)
{
    worker_t *w = t->data;

    /* Safety before bookkeeping: a new SOS must get its watchdog even
     * while PostgreSQL is away; the reload still runs when it returns. */
    log_line("postgres not reachable: reading without the reload for now");
    start_reading(w, "reload pending");
}


static void
on_lease_acquired(void *arg)
{
    worker_t *w = arg;

    if (w->draining) {
        return;
    }
    w->active = 1;
    log_line("active for %s", w->cf.stream_key);
    spool_replay(w->spool);
    uv_timer_start(&w->start_wait, on_start_wait, START_WAIT_MS, 0);
    on_pg_up(w);
}


/* Another worker owns the shard now: every timer and decision here is
 * stale. Leave at once; the records this run did not write are derived
 * again by the new owner (reload, then the provider's call list). */
static void
on_lease_lost(void *arg)
{
    (void) arg;
    log_line("lease lost: exiting so that only one worker acts");
    _exit(3);
}


static void
on_cmd_state(rconn_t *rc, int up, void *arg)
{
    worker_t *w = arg;

    (void) rc;
    if (up && w->redis != NULL) {
        rqueue_flush(w->redis);
    }
    if (up && w->dir != NULL) {
        directory_load_mirror(w->dir);
    }
    if (up && w->active) {
        spool_replay(w->spool); /* if Redis failed the first time */
    }
}


static void
on_watchdog(uv_timer_t *t)
{
    (void) t;
    sd_notify(0, "WATCHDOG=1");
}


static void
close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}


static void
shut_down(worker_t *w)
{
    log_line("stopped: %zu session(s) in memory, %zu write(s) not flushed",
             engine_sessions(w->engine), store_pg_queued(w->pg));
    lease_release(w->lease);
    lease_close(w->lease);
    stream_close(w->stream);
    engine_free(w->engine);
    store_pg_close(w->pg);
    directory_close(w->dir);
    spool_free(w->spool);
    http_free(w->http);
    w->provider->ops->free(w->provider);
    rconn_close(w->cmd);
    metrics_close(w->metrics);
    close_handle((uv_handle_t *) &w->sigterm);
    close_handle((uv_handle_t *) &w->sigint);
    close_handle((uv_handle_t *) &w->start_wait);
    close_handle((uv_handle_t *) &w->watchdog);
    close_handle((uv_handle_t *) &w->drain);
}


static int
drained(const worker_t *w)
{
    return engine_idle(w->engine) && store_pg_queued(w->pg) == 0
           && rqueue_pending(w->redis) == 0;
}


static void
on_drain_check(uv_timer_t *t)
{
    worker_t *w = t->data;

    if (drained(w)) {
        shut_down(w);
        return;
    }
    if (engine_clock_ms() - w->drain_started_ms > DRAIN_MAX_MS) {
        log_line("drain: gave up waiting after %d ms", DRAIN_MAX_MS);
        shut_down(w);
    }
}


/* SIGTERM: stop reading, let in-flight requests and writes finish, exit
 * 0. Armed deadlines stay in PostgreSQL for the next worker. */
static void
on_signal(uv_signal_t *sig, int signum)
{
    worker_t *w = sig->data;

    if (w->draining) {
        return;
    }
    w->draining = 1;
    log_line("signal %d: draining", signum);
    sd_notify(0, "STOPPING=1");
    stream_stop(w->stream);
    w->drain_started_ms = engine_clock_ms();
    uv_timer_start(&w->drain, on_drain_check, 0, DRAIN_CHECK_MS);
}


static void
start_watchdog(worker_t *w)
{
    uint64_t usec = 0;

    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        uv_timer_start(&w->watchdog, on_watchdog, 0, usec / 2000);
    }
}


static void
usage(FILE *out)
{
    fprintf(out, "usage: hamrahi-worker [-c FILE]\n"
                 "  -c FILE  configuration (key = value); HAMRAHI_<KEY> "
                 "environment variables override it\n");
}


static int
parse_args(int argc, char **argv, const char **conf)
{
    int opt;

    while ((opt = getopt(argc, argv, "c:h")) != -1) {
        switch (opt) {
        case 'c':
            *conf = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    return 0;
}


static int
wire(worker_t *w)
{
    engine_deps_t deps;
    char          lease_key[160];

    w->cmd = rconn_new(w->loop, w->cf.redis_host, w->cf.redis_port, "command",
                       on_cmd_state, w);
    w->redis = w->cmd ? rqueue_new(w->cmd) : NULL;
    w->panel = w->redis ? panel_pub_new(w->redis) : NULL;
    w->http = http_new(w->loop);
    w->provider = w->http ? fence_new(twilio_new(
                                w->http, w->cf.provider_base_url,
                                w->cf.provider_account_sid,
                                w->cf.provider_auth_token,
                                w->cf.provider_timeout_ms))
                          : NULL;
    w->pg = store_pg_new(w->loop, w->cf.pg_dsn, on_pg_up, w);
    w->dir = w->pg ? directory_new(w->loop, w->pg, w->cmd, w->redis,
                                     w->cf.directory_refresh_ms)
                     : NULL;
    w->spool = w->dir ? spool_new(w->cmd, w->redis, w->pg,
                                  w->cf.consumer_name, on_pg_up, w)
                      : NULL;
    if (w->panel == NULL || w->provider == NULL || w->spool == NULL) {
        return -1;
    }
    deps.loop = w->loop;
    deps.cf = &w->cf;
    deps.pg = w->pg;
    deps.provider = w->provider;
    deps.redis = w->redis;
    deps.panel = w->panel;
    deps.dir = w->dir;
    w->engine = engine_new(&deps);
    w->stream = w->engine ? stream_new(w->loop, &w->cf, w->cmd,
                                       engine_on_entry, w->engine)
                          : NULL;
    if (w->stream == NULL) {
        return -1;
    }
    engine_set_stream(w->engine, w->stream);
    snprintf(lease_key, sizeof(lease_key), "hamrahi:lease:%s",
             w->cf.stream_key);
    w->lease = lease_new(w->loop, w->cmd, lease_key, w->cf.consumer_name,
                         on_lease_acquired, on_lease_lost, w);
    if (w->lease == NULL) {
        return -1;
    }
    fence_set_lease(w->provider, w->lease);
    lease_on_confirmed(w->lease, fence_release, w->provider);
    w->metrics = metrics_new(w->loop, w->cf.metrics_listen, w->engine, w->pg,
                             w->redis);
    return 0;
}


static void
init_handles(worker_t *w)
{
    uv_signal_init(w->loop, &w->sigterm);
    uv_signal_init(w->loop, &w->sigint);
    w->sigterm.data = w;
    w->sigint.data = w;
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uv_timer_init(w->loop, &w->start_wait);
    uv_timer_init(w->loop, &w->watchdog);
    uv_timer_init(w->loop, &w->drain);
    w->start_wait.data = w;
    w->watchdog.data = w;
    w->drain.data = w;
}


int
main(int argc, char **argv)
{
    worker_t   *w = &W;
    const char *conf = NULL;
    char        err[1024];

    if (parse_args(argc, argv, &conf) != 0) {
        return 2;
    }
    if (config_load(&w->cf, conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "hamrahi-worker: configuration: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    w->loop = uv_default_loop();
    init_handles(w);
    if (wire(w) != 0) {
        fprintf(stderr, "hamrahi-worker: out of memory while starting\n");
        return 1;
    }
    log_line("started: redis %s:%d, provider %s, watchdog %d ms, ring "
             "timeout %d s, consumer %s",
             w->cf.redis_host, w->cf.redis_port, w->cf.provider_base_url,
             w->cf.watchdog_ms, w->cf.ring_timeout_s, w->cf.consumer_name);
    start_watchdog(w);
    /* Started: active or standby is decided by the lease, not by systemd. */
    sd_notify(0, "READY=1\nSTATUS=waiting for the lease");

    uv_run(w->loop, UV_RUN_DEFAULT);

    /* Only now: hiredis calls back until its contexts are gone. */
    stream_free(w->stream);
    lease_free(w->lease);
    rqueue_free(w->redis);
    panel_pub_free(w->panel);
    uv_loop_close(w->loop);
    curl_global_cleanup();
    log_line("exit");
    return 0;
}
