/*
 * The provider as only the lease holder may use it: a create or update of
 * a call waits while the lease is not confirmed (the last successful
 * renewal was sent more than its TTL ago, e.g. after the process was
 * paused), and goes out once a renewal confirms it. If the renewal finds
 * the lease lost, the worker exits and the held requests never leave. A
 * Redis outage confirms nothing but blocks nothing either: no other worker
 * can take the lease meanwhile.
 */

#ifndef HAMRAHI_FENCE_H
#define HAMRAHI_FENCE_H

#include "lease.h"
#include "provider.h"

/* Wraps inner (freed with it); the lease is set once it exists. */
provider_t *fence_new(provider_t *inner);
void fence_set_lease(provider_t *p, lease_t *lease);
/* The lease was confirmed: send what waited. */
void fence_release(void *p);

#endif /* HAMRAHI_FENCE_H */
