/*
 * Prometheus text on metrics_listen (GET any path): event, call and
 * escalation counters, armed timers, sessions in memory, queued writes.
 */

#ifndef HAMRAHI_METRICS_H
#define HAMRAHI_METRICS_H

#include <uv.h>

#include "engine.h"
#include "rqueue.h"
#include "store_pg.h"

typedef struct metrics metrics_t;

/* NULL (and a log line) when listen is empty or cannot be bound. */
metrics_t *metrics_new(uv_loop_t *loop, const char *listen,
                       const engine_t *eng, const store_pg_t *pg,
                       const rqueue_t *redis);
void metrics_close(metrics_t *m);

/* One watchdog fired ms after its deadline (a histogram; process-wide). */
void metrics_watchdog_lateness(int64_t ms);

#endif /* HAMRAHI_METRICS_H */
