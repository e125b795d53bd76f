/*
 * PostgreSQL through libpq's asynchronous API on a uv_poll_t. Jobs (one or
 * more statements; several run in one transaction) are queued and run one at
 * a time; while PostgreSQL is down or stuck they wait and are retried after
 * the reconnect, never dropped. Nothing here ever blocks the loop, so a slow
 * database never delays a call.
 */

#ifndef HAMRAHI_STORE_PG_H
#define HAMRAHI_STORE_PG_H

#include <stddef.h>
#include <libpq-fe.h>
#include <uv.h>

typedef struct store_pg store_pg_t;
typedef struct store_job store_job_t;

/* ok = 0 when a statement failed for good (SQL error): the job is
 * dropped and logged. last: the last statement's result (NULL if !ok),
 * valid during the call only. */
typedef void (*store_cb)(void *arg, int ok, const PGresult *last);

store_pg_t *store_pg_new(uv_loop_t *loop, const char *dsn,
                         void (*on_up)(void *arg), void *arg);

store_job_t *store_job_new(const char *what, store_cb cb, void *arg);

/* Copies sql and params (a param may be NULL: SQL NULL). -1: ENOMEM. */
int store_job_add(store_job_t *job, const char *sql, int nparams,
                  const char *const *params);

/* A job never submitted (submitting hands it over). */
void store_job_free(store_job_t *job);

/* urgent: before the writes that wait (reads a call depends on). */
void store_pg_submit(store_pg_t *st, store_job_t *job, int urgent);

/* Writes that must survive a restart of the worker while PostgreSQL is
 * down. A job marked with store_job_keep() is handed to put() (as a text
 * document) as soon as it has to wait, and to done() once it committed or
 * failed for good; put() again is never called for it. */
typedef struct {
    void  (*put)(void *arg, const char *id, const char *doc);
    void  (*done)(void *arg, const char *id);
    void   *arg;
} store_spool_t;

/* Ids are "prefix:seq" (seq zero-padded: they sort in submission order). */
void store_pg_set_spool(store_pg_t *st, const store_spool_t *spool,
                        const char *prefix);
void store_job_keep(store_job_t *job);
/* Queue a write an earlier run spooled (doc as given to put) with the
 * urgent jobs, so that reads submitted after it see it; done(id) follows
 * its commit. -1 if doc cannot be read. */
int store_pg_resubmit(store_pg_t *st, const char *id, const char *doc);

size_t store_pg_queued(const store_pg_t *st);
int store_pg_is_up(const store_pg_t *st);
void store_pg_close(store_pg_t *st);

#endif /* HAMRAHI_STORE_PG_H */
