/*
 * The Redis side of store_pg's spool: kept writes that wait for PostgreSQL
 * are copied to the hash hamrahi:pgspool (field "consumer:run:seq", value
 * the job) and removed once committed. The worker that takes the lease
 * replays what earlier runs left there, so records are never lost to a
 * restart while PostgreSQL is down.
 */

#ifndef HAMRAHI_SPOOL_H
#define HAMRAHI_SPOOL_H

#include "rconn.h"
#include "rqueue.h"
#include "store_pg.h"

#define SPOOL_KEY  "hamrahi:pgspool"

typedef struct spool spool_t;

spool_t *spool_new(rconn_t *cmd, rqueue_t *redis, store_pg_t *pg,
                   const char *owner, void (*on_replayed)(void *arg),
                   void *arg);
/* Queue every write earlier runs left in the spool (on taking the lease);
 * call again until Redis answered once, then on_replayed runs. Reads of
 * PostgreSQL submitted after that see those writes. */
void spool_replay(spool_t *sp);
int spool_replayed(const spool_t *sp);
void spool_free(spool_t *sp);

#endif /* HAMRAHI_SPOOL_H */
