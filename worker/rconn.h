/*
 * One hiredis async connection on the libuv loop that reconnects by itself
 * (100 ms doubling to 2 s). Commands sent while it is down fail at once;
 * commands in flight when it drops get a NULL reply.
 */

#ifndef HAMRAHI_RCONN_H
#define HAMRAHI_RCONN_H

#include <stddef.h>
#include <hiredis/async.h>
#include <uv.h>

typedef struct rconn rconn_t;

/* up = 1 once connected, 0 when the connection is lost. */
typedef void (*rconn_state_cb)(rconn_t *rc, int up, void *arg);

rconn_t *rconn_new(uv_loop_t *loop, const char *host, int port,
                   const char *name, rconn_state_cb cb, void *arg);
int rconn_is_up(const rconn_t *rc);

/* 0 if queued (fn will run, with NULL if the connection drops), -1 if
 * the connection is down (fn will not run). */
int rconn_command(rconn_t *rc, redisCallbackFn *fn, void *privdata, int argc,
                  const char **argv, const size_t *argvlen);

/* Disconnect for good; pending callbacks run with NULL replies. */
void rconn_close(rconn_t *rc);

#endif /* HAMRAHI_RCONN_H */
