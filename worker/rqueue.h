/*
 * Redis writes that must not be lost to a short outage (panel updates,
 * call instructions, signalling abandons): sent in order over the command
 * connection, queued while it is down, resent when a reply was lost.
 * At-least-once: every command queued here must be safe to repeat.
 */

#ifndef HAMRAHI_RQUEUE_H
#define HAMRAHI_RQUEUE_H

#include <stddef.h>

#include "rconn.h"

typedef struct rqueue rqueue_t;

rqueue_t *rqueue_new(rconn_t *rc);

/* Copies argv. what names the write in error logs. */
void rqueue_push(rqueue_t *q, const char *what, int argc, const char **argv);

/* Call when the connection comes up: flushes what waited. */
void rqueue_flush(rqueue_t *q);

/* Commands queued or awaiting a reply. */
size_t rqueue_pending(const rqueue_t *q);
void rqueue_free(rqueue_t *q);

#endif /* HAMRAHI_RQUEUE_H */
