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

size_t store_pg_queued(const store_pg_t *st);
int store_pg_is_up(const store_pg_t *st);
void store_pg_close(store_pg_t *st);

#endif /* HAMRAHI_STORE_PG_H */
