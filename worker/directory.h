/*
 * A copy of the directory (citizens' verified phones, the staff roster) in
 * memory, refreshed from PostgreSQL and mirrored in Redis
 * (hamrahi:directory), so that a fallback call never waits for PostgreSQL:
 * when it is down or slow the engine routes from this copy, and a worker
 * restarted while it is down loads the copy from Redis.
 */

#ifndef HAMRAHI_DIRECTORY_H
#define HAMRAHI_DIRECTORY_H

#include <stddef.h>
#include <uv.h>

#include "rconn.h"
#include "rqueue.h"
#include "session.h"
#include "store_pg.h"

#define DIRECTORY_KEY  "hamrahi:directory"

typedef struct directory directory_t;

directory_t *directory_new(uv_loop_t *loop, store_pg_t *pg, rconn_t *cmd,
                           rqueue_t *redis, int refresh_ms);

/* PostgreSQL came up: load now (and then every refresh interval). */
void directory_refresh(directory_t *d);
/* Redis came up: load the mirror if nothing fresher is known yet. */
void directory_load_mirror(directory_t *d);

/* Fill ev's citizen phone and routing as records_lookup_sql would; the
 * strings point into the directory (valid until the next refresh). -1 when
 * the citizen is unknown here: only PostgreSQL can answer then. */
int directory_contacts(const directory_t *d, const char *citizen_id,
                       const char *operator_id, const char *station_id,
                       hr_event_t *ev);

size_t directory_citizens(const directory_t *d);
void directory_close(directory_t *d);

#endif /* HAMRAHI_DIRECTORY_H */
