#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "log.h"
#include "store_pg.h"

#define RETRY_FIRST_MS     200
#define RETRY_MAX_MS       2000
#define STATEMENT_MAX_MS   10000
#define QUEUE_WARN         10000

typedef struct store_stmt store_stmt_t;

struct store_stmt {
    store_stmt_t  *next;
    char          *sql;
    int            nparams;
    char         **params;
};

struct store_job {
    store_job_t   *next;
    char           what[48];
    store_stmt_t  *first;
    store_stmt_t  *last;
    int            count;
    int            urgent;
    int            keep;          /* spooled while it waits */
    char           spool_id[160]; /* "" until spooled */
    store_cb       cb;
    void          *arg;
};

typedef enum { PG_DOWN, PG_CONNECTING, PG_UP } pg_state_t;

struct store_pg {
    uv_loop_t     *loop;
    char          *dsn;
    PGconn        *conn;
    uv_poll_t     *poll;          /* NULL while there is no socket */
    int            poll_fd;
    uv_timer_t     retry;
    uv_timer_t     stuck;         /* a statement taking too long */
    pg_state_t     state;
    unsigned       backoff_ms;
    int            closing;
    int            open_handles;  /* freed when the last one closed */
    void         (*on_up)(void *arg);
    void          *arg;
    store_spool_t  spool;
    char           spool_prefix[128];
    unsigned long  spool_seq;
    /* the queue; head is the job running */
    store_job_t   *head;
    store_job_t   *tail;
    size_t         queued;
    /* the running job */
    int            running;
    int            step;          /* 0 BEGIN, 1..n statements, n+1 COMMIT */
    store_stmt_t  *stmt;
    int            failed;
    PGresult      *last;
};

static void connect_start(store_pg_t *st);
static void run_next(store_pg_t *st);
static void on_poll(uv_poll_t *handle, int status, int events);


/* ---- jobs ---- */

static void
stmt_free(store_stmt_t *s)
{
    int i;

    for (i = 0; i < s->nparams; i++) {
        free(s->params[i]);
    }
    free(s->params);
    free(s->sql);
    free(s);
}


void
store_job_free(store_job_t *job)
{
    store_stmt_t *s, *next;

    for (s = job->first; s != NULL; s = next) {
        next = s->next;
        stmt_free(s);
    }
    free(job);
}


store_job_t *
store_job_new(const char *what, store_cb cb, void *arg)
{
    store_job_t *job = calloc(1, sizeof(*job));

    if (job != NULL) {
        snprintf(job->what, sizeof(job->what), "%s", what);
        job->cb = cb;
        job->arg = arg;
    }
    return job;
}


int
store_job_add(store_job_t *job, const char *sql, int nparams,
              const char *const *params)
{
    store_stmt_t *s = calloc(1, sizeof(*s));
    int           i;

    if (s == NULL) {
        return -1;
    }
    s->sql = strdup(sql);
    s->params = calloc((size_t) nparams + 1, sizeof(char *));
    if (s->sql == NULL || s->params == NULL) {
        stmt_free(s);
        return -1;
    }
    for (i = 0; i < nparams; i++) {
        if (params[i] != NULL && (s->params[i] = strdup(params[i])) == NULL) {
            s->nparams = i;
            stmt_free(s);
            return -1;
        }
    }
    s->nparams = nparams;
    if (job->last != NULL) {
        job->last->next = s;
    } else {
        job->first = s;
    }
    job->last = s;
    job->count++;
    return 0;
}


/* ---- the spool: kept writes survive a restart ---- */

static char *
job_to_doc(const store_job_t *job)
{
    const store_stmt_t *s;
    json_t             *stmts = json_array(), *params, *doc;
    char               *text;
    int                 i;

    for (s = job->first; stmts != NULL && s != NULL; s = s->next) {
        params = json_array();
        for (i = 0; params != NULL && i < s->nparams; i++) {
            json_array_append_new(params, s->params[i]
                                              ? json_string(s->params[i])
                                              : json_null());
        }
        json_array_append_new(stmts, json_pack("[s,o]", s->sql, params));
    }
    doc = json_pack("{s:s,s:o}", "what", job->what, "stmts", stmts);
    text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}


static store_job_t *
job_from_doc(const char *text)
{
    json_t       *doc = json_loads(text, 0, NULL), *stmt, *p;
    store_job_t  *job = NULL;
    const char   *params[64];
    size_t        i, k;

    if (doc == NULL
        || (job = store_job_new("spooled write", NULL, NULL)) == NULL)
    {
        json_decref(doc);
        return NULL;
    }
    json_array_foreach(json_object_get(doc, "stmts"), i, stmt) {
        json_t *list = json_array_get(stmt, 1);

        if (!json_is_string(json_array_get(stmt, 0))
            || json_array_size(list) > 64)
        {
            continue;
        }
        json_array_foreach(list, k, p) {
            params[k] = json_string_value(p);
        }
        if (store_job_add(job, json_string_value(json_array_get(stmt, 0)),
                          (int) json_array_size(list), params)
            != 0)
        {
            store_job_free(job);
            job = NULL;
            break;
        }
    }
    json_decref(doc);
    return job;
}


static void
spool_job(store_pg_t *st, store_job_t *job)
{
    char *doc;

    if (!job->keep || job->spool_id[0] != '\0' || st->spool.put == NULL) {
        return;
    }
    doc = job_to_doc(job);
    if (doc == NULL) {
        log_line("postgres: %s cannot be spooled (out of memory)", job->what);
        return;
    }
    snprintf(job->spool_id, sizeof(job->spool_id), "%s%010lu",
             st->spool_prefix, ++st->spool_seq);
    st->spool.put(st->spool.arg, job->spool_id, doc);
    free(doc);
}


static void
spool_waiting(store_pg_t *st)
{
    store_job_t *job;

    for (job = st->head; job != NULL; job = job->next) {
        spool_job(st, job);
    }
}


void
store_pg_set_spool(store_pg_t *st, const store_spool_t *spool,
                   const char *prefix)
{
    st->spool = *spool;
    snprintf(st->spool_prefix, sizeof(st->spool_prefix), "%s", prefix);
}


void
store_job_keep(store_job_t *job)
{
    job->keep = 1;
}


int
store_pg_resubmit(store_pg_t *st, const char *id, const char *doc)
{
    store_job_t *job = job_from_doc(doc);

    if (job == NULL) {
        return -1;
    }
    job->keep = 1;
    snprintf(job->spool_id, sizeof(job->spool_id), "%s", id);
    store_pg_submit(st, job, 1);
    return 0;
}


/* ---- connection ---- */

static void
on_poll_closed(uv_handle_t *h)
{
    free(h);
}


static void
stop_poll(store_pg_t *st)
{
    if (st->poll != NULL) {
        uv_close((uv_handle_t *) st->poll, on_poll_closed);
        st->poll = NULL;
    }
}


/* Poll PQsocket for the given events; libpq may switch sockets while it
 * connects (another address, SSL retry), so re-create the handle then. */
static void
watch(store_pg_t *st, int events)
{
    int fd = PQsocket(st->conn);

    if (st->poll != NULL && st->poll_fd != fd) {
        stop_poll(st);
    }
    if (st->poll == NULL) {
        st->poll = calloc(1, sizeof(*st->poll));
        if (st->poll == NULL || uv_poll_init(st->loop, st->poll, fd) != 0) {
            free(st->poll);
            st->poll = NULL;
            return;
        }
        st->poll->data = st;
        st->poll_fd = fd;
    }
    uv_poll_start(st->poll, events, on_poll);
}


static void
on_retry(uv_timer_t *t)
{
    connect_start(t->data);
}


static void
lose_connection(store_pg_t *st, const char *why)
{
    if (st->state == PG_UP || st->backoff_ms == RETRY_FIRST_MS) {
        log_line("postgres: %s; %zu job(s) wait", why, st->queued);
    }
    uv_timer_stop(&st->stuck);
    stop_poll(st);
    if (st->conn != NULL) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
    PQclear(st->last);
    st->last = NULL;
    st->running = 0; /* the head job is retried from its first statement */
    st->state = PG_DOWN;
    spool_waiting(st);
    if (!st->closing) {
        uv_timer_start(&st->retry, on_retry, st->backoff_ms, 0);
        st->backoff_ms = st->backoff_ms * 2 > RETRY_MAX_MS
                             ? RETRY_MAX_MS
                             : st->backoff_ms * 2;
    }
}


static void
continue_connect(store_pg_t *st)
{
    switch (PQconnectPoll(st->conn)) {
    case PGRES_POLLING_READING:
        watch(st, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        watch(st, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        PQsetnonblocking(st->conn, 1);
        st->state = PG_UP;
        st->backoff_ms = RETRY_FIRST_MS;
        log_line("postgres: connected");
        watch(st, UV_READABLE);
        if (st->on_up != NULL) {
            st->on_up(st->arg);
        }
        run_next(st);
        return;
    default:
        lose_connection(st, PQerrorMessage(st->conn));
        return;
    }
}


static void
connect_start(store_pg_t *st)
{
    st->conn = PQconnectStart(st->dsn);
    if (st->conn == NULL || PQstatus(st->conn) == CONNECTION_BAD) {
        lose_connection(st, st->conn ? PQerrorMessage(st->conn)
                                     : "out of memory");
        return;
    }
    st->state = PG_CONNECTING;
    continue_connect(st);
}


/* ---- running jobs ---- */

static void
complete_head(store_pg_t *st, int ok)
{
    store_job_t *job = st->head;

    uv_timer_stop(&st->stuck);
    st->head = job->next;
    if (st->head == NULL) {
        st->tail = NULL;
    }
    st->queued--;
    st->running = 0;
    if (job->spool_id[0] != '\0' && st->spool.done != NULL) {
        st->spool.done(st->spool.arg, job->spool_id);
    }
    if (job->cb != NULL) {
        job->cb(job->arg, ok, ok ? st->last : NULL);
    }
    PQclear(st->last);
    st->last = NULL;
    store_job_free(job);
}


static void
on_stuck(uv_timer_t *t)
{
    lose_connection(t->data, "a statement took too long; reconnecting");
}


static int
send_statement(store_pg_t *st)
{
    store_job_t *job = st->head;
    int          txn = job->count > 1;
    int          rc;

    uv_timer_start(&st->stuck, on_stuck, STATEMENT_MAX_MS, 0);
    if (txn && st->step == 0) {
        rc = PQsendQuery(st->conn, "BEGIN");
    } else if (txn && st->stmt == NULL) {
        rc = PQsendQuery(st->conn, st->failed ? "ROLLBACK" : "COMMIT");
    } else {
        rc = PQsendQueryParams(st->conn, st->stmt->sql, st->stmt->nparams,
                               NULL, (const char *const *) st->stmt->params,
                               NULL, NULL, 0);
    }
    if (rc != 1) {
        return -1;
    }
    watch(st, PQflush(st->conn) == 1 ? UV_READABLE | UV_WRITABLE
                                     : UV_READABLE);
    return 0;
}


static void
run_next(store_pg_t *st)
{
    if (st->state != PG_UP || st->running || st->head == NULL) {
        return;
    }
    st->running = 1;
    st->failed = 0;
    st->stmt = st->head->first;
    st->step = st->head->count > 1 ? 0 : 1;
    if (send_statement(st) != 0) {
        lose_connection(st, PQerrorMessage(st->conn));
    }
}


/* One statement's results are all in: move to the next step. */
static void
statement_done(store_pg_t *st)
{
    store_job_t *job = st->head;
    int          txn = job->count > 1;

    if (st->step == 0) {
        st->step = 1;
    } else if (st->stmt != NULL) {
        st->stmt = st->failed ? NULL : st->stmt->next;
        st->step++;
    } else {
        complete_head(st, !st->failed);
        run_next(st);
        return;
    }
    if (!txn && st->stmt == NULL) {
        complete_head(st, !st->failed);
        run_next(st);
        return;
    }
    if (send_statement(st) != 0) {
        lose_connection(st, PQerrorMessage(st->conn));
    }
}


static void
take_result(store_pg_t *st, PGresult *res)
{
    ExecStatusType status = PQresultStatus(res);

    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
        if (st->stmt != NULL) {
            PQclear(st->last);
            st->last = res;
            return;
        }
    } else if (!st->failed) {
        st->failed = 1;
        log_line("postgres: %s failed: %s", st->head->what,
                 PQresultErrorMessage(res));
    }
    PQclear(res);
}


static void
read_results(store_pg_t *st)
{
    PGresult *res;

    if (PQconsumeInput(st->conn) != 1) {
        lose_connection(st, PQerrorMessage(st->conn));
        return;
    }
    while (st->running && !PQisBusy(st->conn)) {
        res = PQgetResult(st->conn);
        if (res == NULL) {
            statement_done(st);
            continue;
        }
        take_result(st, res);
    }
    if (st->state == PG_UP && PQstatus(st->conn) == CONNECTION_BAD) {
        lose_connection(st, "connection lost");
    }
}


static void
on_poll(uv_poll_t *handle, int status, int events)
{
    store_pg_t *st = handle->data;

    if (status < 0) {
        lose_connection(st, uv_strerror(status));
        return;
    }
    if (st->state == PG_CONNECTING) {
        continue_connect(st);
        return;
    }
    if ((events & UV_WRITABLE) && PQflush(st->conn) == 0) {
        watch(st, UV_READABLE);
    }
    if (events & UV_READABLE) {
        read_results(st);
    }
}


/* ---- public ---- */

store_pg_t *
store_pg_new(uv_loop_t *loop, const char *dsn, void (*on_up)(void *arg),
             void *arg)
{
    store_pg_t *st = calloc(1, sizeof(*st));

    if (st == NULL || (st->dsn = strdup(dsn)) == NULL) {
        free(st);
        return NULL;
    }
    st->loop = loop;
    st->on_up = on_up;
    st->arg = arg;
    st->backoff_ms = RETRY_FIRST_MS;
    uv_timer_init(loop, &st->retry);
    uv_timer_init(loop, &st->stuck);
    st->retry.data = st;
    st->stuck.data = st;
    connect_start(st);
    return st;
}


void
store_pg_submit(store_pg_t *st, store_job_t *job, int urgent)
{
    store_job_t *after;

    if (job->count == 0) {
        if (job->cb != NULL) {
            job->cb(job->arg, 1, NULL);
        }
        store_job_free(job);
        return;
    }
    job->urgent = urgent;
    if (urgent && st->head != NULL) {
        /* Behind the running job (it may be mid-transaction) and behind
         * earlier urgent jobs, ahead of the writes that wait. */
        after = st->head;
        while (after->next != NULL && after->next->urgent) {
            after = after->next;
        }
        job->next = after->next;
        after->next = job;
        if (st->tail == after) {
            st->tail = job;
        }
    } else {
        job->next = NULL;
        if (st->tail != NULL) {
            st->tail->next = job;
        } else {
            st->head = job;
        }
        st->tail = job;
    }
    st->queued++;
    if (st->state != PG_UP) {
        spool_job(st, job);
    }
    if (st->queued % QUEUE_WARN == 0) {
        log_line("postgres: %zu jobs waiting", st->queued);
    }
    run_next(st);
}


size_t
store_pg_queued(const store_pg_t *st)
{
    return st->queued;
}


int
store_pg_is_up(const store_pg_t *st)
{
    return st->state == PG_UP;
}


/* libuv runs close callbacks in no promised order: count them. */
static void
on_timer_closed(uv_handle_t *h)
{
    store_pg_t *st = h->data;

    if (--st->open_handles == 0) {
        free(st->dsn);
        free(st);
    }
}


void
store_pg_close(store_pg_t *st)
{
    store_job_t *job;

    st->closing = 1;
    lose_connection(st, "closing");
    while ((job = st->head) != NULL) {
        st->head = job->next;
        log_line("postgres: %s not written (shutdown)%s", job->what,
                 job->spool_id[0] ? "; left in the spool" : "");
        store_job_free(job);
    }
    uv_timer_stop(&st->retry);
    st->open_handles = 2;
    uv_close((uv_handle_t *) &st->retry, on_timer_closed);
    uv_close((uv_handle_t *) &st->stuck, on_timer_closed);
}
