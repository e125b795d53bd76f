/*
 * The consumer side of hamrahi:events (consumer group "fallback"): our own
 * pending entries first ("0"), then new ones (">"), and stale entries of
 * dead consumers claimed with XAUTOCLAIM. Reading runs on its own
 * connection (XREADGROUP BLOCK holds it); XACK goes over the command one.
 */

#ifndef HAMRAHI_STREAM_H
#define HAMRAHI_STREAM_H

#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "rconn.h"

typedef struct stream stream_t;

/* One entry. redelivered: it was handed out before (pending or claimed),
 * so its effects may already be durable. names/values NULL: deleted. */
typedef void (*stream_entry_cb)(void *arg, const char *id, size_t nfields,
                                const char *const *names,
                                const char *const *values, int redelivered);

stream_t *stream_new(uv_loop_t *loop, const config_t *cf, rconn_t *cmd,
                     stream_entry_cb cb, void *arg);
void stream_start(stream_t *st);
void stream_stop(stream_t *st);   /* no new reads; SIGTERM drain */
/* Claim every pending entry of other consumers now (after a takeover). */
void stream_claim_all(stream_t *st);
void stream_ack(stream_t *st, const char *id);
/* Stop and close; replies still due are dropped. stream_free() once the
 * loop has run dry (hiredis may still call back until then). */
void stream_close(stream_t *st);
void stream_free(stream_t *st);

#endif /* HAMRAHI_STREAM_H */
