#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "directory.h"
#include "log.h"
#include "strmap.h"

/* Same rows from PostgreSQL and from the mirror: kind ('c' citizen, else
 * the staff role), id, phone, station, on duty. Sorted by id, so the first
 * on-duty supervisor of a station is the one records_lookup_sql picks. */
static const char load_sql[] =
    "SELECT 'c', id, verified_phone, NULL, false FROM citizens"
    " UNION ALL"
    " SELECT role, id, duty_phone, station_id, on_duty FROM staff"
    " ORDER BY 1, 2";

typedef struct {
    char  phone[HR_PHONE_MAX];
    int   on_duty;
} staff_t;

typedef struct {
    strmap_t *citizens;     /* id -> phone */
    strmap_t *staff;        /* id -> staff_t */
    strmap_t *supervisors;  /* station -> phone of its duty supervisor */
} snapshot_t;

struct directory {
    uv_timer_t   refresh;
    store_pg_t  *pg;
    rconn_t     *cmd;
    rqueue_t    *redis;
    snapshot_t   snap;
    int          from_pg;      /* the copy came from PostgreSQL */
    int          loading;      /* a PostgreSQL load is queued */
    int          asking;       /* a GET of the mirror is out */
    int          closed;
    int          handle_closed;
    uint64_t     mirror_hash;   /* of the last copy written to Redis */
    unsigned     unchanged;     /* refreshes since it was written */
};

/* An unchanged copy is written again only this often (in refreshes): the
 * mirror is rewritten in full, and Redis' AOF grows with every write. */
#define MIRROR_REWRITE_EVERY  30


static int
free_value(void *value, void *arg)
{
    (void) arg;
    free(value);
    return 0;
}


static void
snapshot_free(snapshot_t *s)
{
    strmap_t *maps[] = { s->citizens, s->staff, s->supervisors };
    size_t    i;

    for (i = 0; i < 3; i++) {
        if (maps[i] != NULL) {
            strmap_sweep(maps[i], free_value, NULL);
            strmap_free(maps[i]);
        }
    }
    memset(s, 0, sizeof(*s));
}


static int
snapshot_init(snapshot_t *s)
{
    s->citizens = strmap_new();
    s->staff = strmap_new();
    s->supervisors = strmap_new();
    if (s->citizens == NULL || s->staff == NULL || s->supervisors == NULL) {
        snapshot_free(s);
        return -1;
    }
    return 0;
}


static int
put_copy(strmap_t *m, const char *key, const char *text)
{
    char *copy = strdup(text);

    if (copy == NULL || strmap_put(m, key, copy) != 0) {
        free(copy);
        return -1;
    }
    return 0;
}


static int
add_row(snapshot_t *s, const char *kind, const char *id, const char *phone,
        const char *station, int on_duty)
{
    staff_t *st;

    if (strcmp(kind, "c") == 0) {
        return phone != NULL ? put_copy(s->citizens, id, phone) : 0;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return -1;
    }
    snprintf(st->phone, sizeof(st->phone), "%s", phone ? phone : "");
    st->on_duty = on_duty;
    if (strmap_put(s->staff, id, st) != 0) {
        free(st);
        return -1;
    }
    if (strcmp(kind, "supervisor") == 0 && on_duty && st->phone[0] != '\0'
        && station != NULL && strmap_get(s->supervisors, station) == NULL)
    {
        return put_copy(s->supervisors, station, st->phone);
    }
    return 0;
}


static void
install(directory_t *d, snapshot_t *fresh, const char *source)
{
    size_t citizens = directory_citizens(d);
    size_t staff = d->snap.staff ? strmap_count(d->snap.staff) : 0;

    snapshot_free(&d->snap);
    d->snap = *fresh;
    if (citizens != strmap_count(d->snap.citizens)
        || staff != strmap_count(d->snap.staff))
    {
        log_line("directory: %zu citizen(s), %zu staff from %s",
                 strmap_count(d->snap.citizens), strmap_count(d->snap.staff),
                 source);
    }
}


/* ---- PostgreSQL, and the mirror written from it ---- */

static uint64_t
fnv1a(const char *text)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *text != '\0'; text++) {
        h = (h ^ (unsigned char) *text) * 1099511628211ULL;
    }
    return h;
}


static void
write_mirror(directory_t *d, json_t *rows)
{
    char       *text = json_dumps(rows, JSON_COMPACT);
    const char *argv[] = { "SET", DIRECTORY_KEY, text };
    uint64_t    h;

    if (text == NULL) {
        log_line("directory: cannot encode the mirror");
        return;
    }
    h = fnv1a(text);
    if (h != d->mirror_hash || ++d->unchanged >= MIRROR_REWRITE_EVERY) {
        rqueue_push(d->redis, "directory mirror", 3, argv);
        d->mirror_hash = h;
        d->unchanged = 0;
    }
    free(text);
}


static const char *
value_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}


static void
on_loaded(void *arg, int ok, const PGresult *res)
{
    directory_t *d = arg;
    snapshot_t   fresh;
    json_t      *rows;
    int          i, n, failed = 0;

    d->loading = 0;
    if (!ok || res == NULL || d->closed || snapshot_init(&fresh) != 0) {
        return;
    }
    rows = json_array();
    n = PQntuples(res);
    for (i = 0; i < n && !failed; i++) {
        const char *kind = PQgetvalue(res, i, 0), *id = PQgetvalue(res, i, 1);
        const char *phone = value_or_null(res, i, 2);
        const char *station = value_or_null(res, i, 3);
        int         on_duty = PQgetvalue(res, i, 4)[0] == 't';

        failed = add_row(&fresh, kind, id, phone, station, on_duty) != 0;
        if (rows != NULL) {
            json_array_append_new(rows, json_pack("[s,s,s?,s?,b]", kind, id,
                                                  phone, station, on_duty));
        }
    }
    if (failed) {
        log_line("directory: out of memory; keeping the previous copy");
        snapshot_free(&fresh);
    } else {
        install(d, &fresh, "postgres");
        d->from_pg = 1;
        if (rows != NULL) {
            write_mirror(d, rows);
        }
    }
    json_decref(rows);
}


void
directory_refresh(directory_t *d)
{
    store_job_t *job;

    if (d->closed || d->loading || !store_pg_is_up(d->pg)) {
        return;
    }
    job = store_job_new("directory load", on_loaded, d);
    if (job == NULL || store_job_add(job, load_sql, 0, NULL) != 0) {
        if (job != NULL) {
            store_job_free(job);
        }
        return;
    }
    d->loading = 1;
    store_pg_submit(d->pg, job, 0);
}


static void
on_refresh_timer(uv_timer_t *t)
{
    directory_refresh(t->data);
}


/* ---- the mirror in Redis ---- */

static int
snapshot_from_json(snapshot_t *fresh, const json_t *rows)
{
    const json_t *row;
    size_t        i;

    json_array_foreach(rows, i, row) {
        const char *kind = json_string_value(json_array_get(row, 0));
        const char *id = json_string_value(json_array_get(row, 1));

        if (kind == NULL || id == NULL) {
            continue;
        }
        if (add_row(fresh, kind, id,
                    json_string_value(json_array_get(row, 2)),
                    json_string_value(json_array_get(row, 3)),
                    json_is_true(json_array_get(row, 4)))
            != 0)
        {
            return -1;
        }
    }
    return 0;
}


static void
on_mirror(redisAsyncContext *ac, void *r, void *priv)
{
    directory_t      *d = priv;
    const redisReply *reply = r;
    json_t           *rows;
    snapshot_t        fresh;

    (void) ac;
    d->asking = 0;
    if (d->closed) {
        if (d->handle_closed) {
            snapshot_free(&d->snap);
            free(d);
        }
        return;
    }
    if (reply == NULL || reply->type != REDIS_REPLY_STRING || d->from_pg) {
        return;
    }
    rows = json_loadb(reply->str, reply->len, 0, NULL);
    if (!json_is_array(rows) || snapshot_init(&fresh) != 0) {
        json_decref(rows);
        return;
    }
    if (snapshot_from_json(&fresh, rows) != 0) {
        snapshot_free(&fresh);
    } else {
        install(d, &fresh, "the redis mirror");
    }
    json_decref(rows);
}


void
directory_load_mirror(directory_t *d)
{
    const char *argv[] = { "GET", DIRECTORY_KEY };

    if (d->closed || d->from_pg || d->asking) {
        return;
    }
    d->asking = rconn_command(d->cmd, on_mirror, d, 2, argv, NULL) == 0;
}


/* ---- lookups ---- */

int
directory_contacts(const directory_t *d, const char *citizen_id,
                   const char *operator_id, const char *station_id,
                   hr_event_t *ev)
{
    const char    *phone;
    const staff_t *op;

    if (d->snap.citizens == NULL
        || (phone = strmap_get(d->snap.citizens, citizen_id)) == NULL)
    {
        return -1;
    }
    op = strmap_get(d->snap.staff, operator_id);
    ev->citizen_phone = phone;
    ev->operator_phone = op != NULL && op->phone[0] != '\0' ? op->phone : NULL;
    ev->operator_on_duty = op != NULL && op->on_duty;
    ev->supervisor_phone = strmap_get(d->snap.supervisors, station_id);
    ev->stored_state = HR_ST_NEW;
    ev->call_sid = NULL;
    return 0;
}


size_t
directory_citizens(const directory_t *d)
{
    return d->snap.citizens ? strmap_count(d->snap.citizens) : 0;
}


directory_t *
directory_new(uv_loop_t *loop, store_pg_t *pg, rconn_t *cmd, rqueue_t *redis,
              int refresh_ms)
{
    directory_t *d = calloc(1, sizeof(*d));

    if (d == NULL) {
        return NULL;
    }
    d->pg = pg;
    d->cmd = cmd;
    d->redis = redis;
    uv_timer_init(loop, &d->refresh);
    d->refresh.data = d;
    uv_timer_start(&d->refresh, on_refresh_timer, (uint64_t) refresh_ms,
                   (uint64_t) refresh_ms);
    return d;
}


static void
on_closed(uv_handle_t *h)
{
    directory_t *d = h->data;

    d->handle_closed = 1;
    if (!d->asking) {
        snapshot_free(&d->snap);
        free(d);
    }
}


/* After store_pg_close() (which drops the queued load without calling
 * back); a GET still out frees the directory when its reply comes. */
void
directory_close(directory_t *d)
{
    d->closed = 1;
    uv_close((uv_handle_t *) &d->refresh, on_closed);
}
