/*
 * The engine: the table of sessions, and the executor of the actions the
 * state machine returns. It feeds session_apply() with stream events, timer
 * expiries, directory lookups and provider answers, and turns each action
 * into a timer, a PostgreSQL job, a provider request or a Redis write. It
 * decides nothing itself (session.c does).
 */

#ifndef HAMRAHI_ENGINE_H
#define HAMRAHI_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "directory.h"
#include "panel_pub.h"
#include "provider.h"
#include "rqueue.h"
#include "store_pg.h"
#include "stream.h"

typedef struct engine engine_t;

typedef struct {
    uv_loop_t       *loop;
    const config_t  *cf;
    store_pg_t      *pg;
    provider_t      *provider;
    rqueue_t        *redis;
    panel_pub_t     *panel;
    directory_t     *dir;      /* phones when PostgreSQL cannot answer */
} engine_deps_t;

typedef struct {
    uint64_t  events_in;
    uint64_t  events_duplicate;
    uint64_t  events_malformed;
    uint64_t  watchdogs_fired;
    uint64_t  calls_requested;
    uint64_t  calls_created;
    uint64_t  calls_failed;
    uint64_t  escalations;
    uint64_t  panel_updates;
} engine_stats_t;

engine_t *engine_new(const engine_deps_t *deps);
void engine_set_stream(engine_t *eng, stream_t *st);

/* stream_entry_cb */
void engine_on_entry(void *eng, const char *id, size_t nfields,
                     const char *const *names, const char *const *values,
                     int redelivered);

/* Load the open sessions from PostgreSQL and arm their deadlines (overdue
 * ones fire at once); done runs once that happened. */
void engine_reload(engine_t *eng, void (*done)(void *arg), void *arg);

/* Nothing in flight: no event waiting, no provider request, no write. */
int engine_idle(const engine_t *eng);
size_t engine_sessions(const engine_t *eng);
size_t engine_timers(const engine_t *eng);
const engine_stats_t *engine_stats(const engine_t *eng);
void engine_free(engine_t *eng);

int64_t engine_clock_ms(void);

#endif /* HAMRAHI_ENGINE_H */
