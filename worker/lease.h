/*
 * Active/standby through a Redis lease: SET key owner NX PX, renewed by the
 * holder every LEASE_RENEW_MS; a standby tries as often and takes over once
 * the holder stops renewing (within LEASE_TTL_MS + LEASE_RENEW_MS). Each
 * acquisition also takes a fencing token (INCR key:fence) for the logs;
 * what fences the holder's actions is lease_confirmed() (see fence.h).
 *
 * Losing the lease means another worker now owns the shard: the caller must
 * stop acting at once. A Redis outage is not a loss (no one else can take
 * the lease meanwhile), so fallback calls go on while Redis is away.
 */

#ifndef HAMRAHI_LEASE_H
#define HAMRAHI_LEASE_H

#include <uv.h>

#include "rconn.h"

typedef struct lease lease_t;

lease_t *lease_new(uv_loop_t *loop, rconn_t *cmd, const char *key,
                   const char *owner, void (*on_acquired)(void *arg),
                   void (*on_lost)(void *arg), void *arg);
int lease_held(const lease_t *l);
/* Held, and no other worker can have taken it: a renewal sent less than
 * the TTL ago succeeded (or Redis is unreachable, so no one can take it). */
int lease_confirmed(const lease_t *l);
/* fn runs after each successful acquisition or renewal. */
void lease_on_confirmed(lease_t *l, void (*fn)(void *arg), void *arg);
/* Give the lease up (SIGTERM), so a standby takes over at once. */
void lease_release(lease_t *l);
/* Close; lease_free() once the loop has run dry. */
void lease_close(lease_t *l);
void lease_free(lease_t *l);

#endif /* HAMRAHI_LEASE_H */
