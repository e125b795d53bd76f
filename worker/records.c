#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "records.h"

#define TS(p) "to_timestamp(" p "::float8 / 1000)"

const char records_lookup_sql[] =
    "SELECT c.verified_phone, o.duty_phone, COALESCE(o.on_duty, false),"
    " (SELECT duty_phone FROM staff WHERE station_id = $3"
    "   AND role = 'supervisor' AND on_duty AND duty_phone IS NOT NULL"
    "   ORDER BY id LIMIT 1),"
    " s.state, s.provider_call_ref"
    " FROM (SELECT 1) AS one"
    " LEFT JOIN citizens c ON c.id = $1"
    " LEFT JOIN staff o ON o.id = $2"
    " LEFT JOIN sos_sessions s ON s.id = $4";

const char records_reload_sql[] =
    "SELECT c.verified_phone, o.duty_phone, COALESCE(o.on_duty, false),"
    " (SELECT duty_phone FROM staff WHERE station_id = s.station_id"
    "   AND role = 'supervisor' AND on_duty AND duty_phone IS NOT NULL"
    "   ORDER BY id LIMIT 1),"
    " s.state, s.provider_call_ref,"
    " s.id, s.citizen_id, s.operator_id, s.station_id,"
    " (extract(epoch FROM s.activated_at) * 1000)::bigint"
    " FROM sos_sessions s"
    " LEFT JOIN citizens c ON c.id = s.citizen_id"
    " LEFT JOIN staff o ON o.id = s.operator_id"
    " WHERE s.closed_at IS NULL AND s.released_at IS NULL"
    " AND s.activated_at IS NOT NULL"
    " AND s.state IN ('watching', 'phone_fallback_active', 'phone_connected')"
    " ORDER BY s.activated_at";

typedef struct {
    const char *name;
    int         is_time;   /* value is ms since the epoch */
    const char *value;     /* NULL: SQL NULL */
} column_t;


static const char *
ms_text(char *buf, size_t size, int64_t ms)
{
    if (ms <= 0) {
        return NULL;
    }
    snprintf(buf, size, "%lld", (long long) ms);
    return buf;
}


static const char *
nonempty(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}


/* INSERT the session's identity with its state and the given columns;
 * on conflict overwrite only those. Writes replayed in order after an
 * outage therefore leave the same row. */
static int
upsert_session(store_job_t *job, const session_t *s, const column_t *cols,
               int ncols)
{
    char        sql[2048], act[24], dl[24];
    const char *params[16];
    size_t      n;
    int         i, np = 7;

    params[0] = s->id;
    params[1] = nonempty(s->citizen_id);
    params[2] = nonempty(s->operator_id);
    params[3] = nonempty(s->station_id);
    params[4] = ms_text(act, sizeof(act), s->activated_at_ms);
    params[5] = ms_text(dl, sizeof(dl), s->activated_at_ms ? s->deadline_ms
                                                            : 0);
    params[6] = session_state_name(s->state);

    n = (size_t) snprintf(sql, sizeof(sql),
                          "INSERT INTO sos_sessions (id, citizen_id, "
                          "operator_id, station_id, activated_at, "
                          "watchdog_deadline, state");
    for (i = 0; i < ncols; i++) {
        n += (size_t) snprintf(sql + n, sizeof(sql) - n, ", %s", cols[i].name);
    }
    n += (size_t) snprintf(sql + n, sizeof(sql) - n,
                           ") VALUES ($1, $2, $3, $4, " TS("$5") ", "
                           TS("$6") ", $7");
    for (i = 0; i < ncols; i++) {
        params[np++] = cols[i].value;
        n += (size_t) snprintf(sql + n, sizeof(sql) - n,
                               cols[i].is_time
                                   ? ", to_timestamp($%d::float8 / 1000)"
                                   : ", $%d",
                               np);
    }
    n += (size_t) snprintf(sql + n, sizeof(sql) - n,
                           ") ON CONFLICT (id) DO UPDATE SET "
                           "state = EXCLUDED.state");
    for (i = 0; i < ncols; i++) {
        n += (size_t) snprintf(sql + n, sizeof(sql) - n, ", %s = EXCLUDED.%s",
                               cols[i].name, cols[i].name);
    }
    if (n >= sizeof(sql)) {
        return -1;
    }
    return store_job_add(job, sql, np, params);
}


static int
record_activated(store_job_t *job, const session_t *s)
{
    char        act[24], dl[24];
    const char *params[] = {
        s->id, nonempty(s->citizen_id), nonempty(s->operator_id),
        nonempty(s->station_id), ms_text(act, sizeof(act), s->activated_at_ms),
        ms_text(dl, sizeof(dl), s->deadline_ms), "watching",
    };

    /* The first writer wins: a replayed activation never rewinds a row
     * that has moved on. */
    return store_job_add(job,
                         "INSERT INTO sos_sessions (id, citizen_id, "
                         "operator_id, station_id, activated_at, "
                         "watchdog_deadline, state) VALUES ($1, $2, $3, $4, "
                         TS("$5") ", " TS("$6") ", $7) "
                         "ON CONFLICT (id) DO NOTHING",
                         7, params);
}


static const char *
leg_phone(const session_t *s, hr_leg_t leg)
{
    int i;

    if (leg == HR_LEG_CITIZEN) {
        return s->citizen_phone;
    }
    for (i = 0; i < s->ndial; i++) {
        if (s->dial[i].leg == leg) {
            return s->dial[i].phone;
        }
    }
    return NULL;
}


static int
leg_step(const session_t *s, hr_leg_t leg)
{
    int i;

    for (i = 0; leg != HR_LEG_CITIZEN && i < s->ndial; i++) {
        if (s->dial[i].leg == leg) {
            return i + 1;
        }
    }
    return 0;
}


static const char *
outcome_name(hr_call_status_t st)
{
    switch (st) {
    case HR_CALL_COMPLETED:
    case HR_CALL_BUSY:
    case HR_CALL_NO_ANSWER:
    case HR_CALL_FAILED:
    case HR_CALL_CANCELED:
        return session_call_status_name(st);
    default:
        return NULL;
    }
}


static int
record_attempt_start(store_job_t *job, const session_t *s)
{
    char        started[24];
    const char *params[] = {
        s->id, nonempty(s->citizen_phone), s->call_sid,
        ms_text(started, sizeof(started), s->call_initiated_at_ms),
    };

    return store_job_add(job,
                         "INSERT INTO call_attempts (session_id, leg, step, "
                         "to_phone, provider_call_ref, started_at) VALUES "
                         "($1, 'citizen', 0, $2, $3, "
                         "COALESCE(" TS("$4") ", now())) "
                         "ON CONFLICT (provider_call_ref) WHERE "
                         "provider_call_ref IS NOT NULL DO NOTHING",
                         4, params);
}


static int
record_attempt_end(store_job_t *job, const session_t *s, const hr_action_t *a,
                   int64_t now_ms)
{
    char        step[8], ended[24];
    const char *params[7];

    snprintf(step, sizeof(step), "%d", leg_step(s, a->leg));
    params[0] = s->id;
    params[1] = session_leg_name(a->leg);
    params[2] = step;
    params[3] = nonempty(leg_phone(s, a->leg));
    params[4] = nonempty(a->call_sid);
    params[5] = outcome_name(a->status);
    params[6] = ms_text(ended, sizeof(ended), now_ms);

    if (params[4] == NULL) {
        return store_job_add(job,
                             "INSERT INTO call_attempts (session_id, leg, "
                             "step, to_phone, outcome, started_at, ended_at) "
                             "VALUES ($1, $2, $3::int, $4, $6, " TS("$7") ", "
                             TS("$7") ") ",
                             7, params);
    }
    return store_job_add(job,
                         "INSERT INTO call_attempts (session_id, leg, step, "
                         "to_phone, provider_call_ref, outcome, started_at, "
                         "ended_at) VALUES ($1, $2, $3::int, $4, $5, $6, "
                         TS("$7") ", " TS("$7") ") "
                         "ON CONFLICT (provider_call_ref) WHERE "
                         "provider_call_ref IS NOT NULL DO UPDATE SET "
                         "outcome = EXCLUDED.outcome, "
                         "ended_at = EXCLUDED.ended_at",
                         7, params);
}


static int
record_fallback(store_job_t *job, const session_t *s, int clear)
{
    char     failed[24], initiated[24];
    column_t cols[] = {
        { "webrtc_failed_at", 1,
          clear ? NULL
                : ms_text(failed, sizeof(failed), s->webrtc_failed_at_ms) },
        { "fallback_reason", 0,
          clear ? NULL : session_reason_name(s->reason) },
        { "call_initiated_at", 1,
          clear ? NULL
                : ms_text(initiated, sizeof(initiated),
                          s->call_initiated_at_ms) },
        { "provider_call_ref", 0, clear ? NULL : nonempty(s->call_sid) },
    };

    if (upsert_session(job, s, cols, 4) != 0) {
        return -1;
    }
    if (!clear && s->call_sid[0] != '\0') {
        return record_attempt_start(job, s);
    }
    return 0;
}


static int
record_time(store_job_t *job, const session_t *s, const char *column,
            int64_t ms)
{
    char     buf[24];
    column_t col = { column, 1, ms_text(buf, sizeof(buf), ms) };

    return upsert_session(job, s, &col, 1);
}


int
records_add(store_job_t *job, const session_t *s, const hr_action_t *a,
            int64_t now_ms)
{
    switch (a->record) {
    case HR_REC_ACTIVATED:
        return record_activated(job, s);
    case HR_REC_WEBRTC_ACTIVE:
        return record_time(job, s, "webrtc_active_at", s->webrtc_active_at_ms);
    case HR_REC_FALLBACK:
        return record_fallback(job, s, 0);
    case HR_REC_FALLBACK_CLEARED:
        return record_fallback(job, s, 1);
    case HR_REC_CONNECTED:
        return record_time(job, s, "call_connected_at", now_ms);
    case HR_REC_ATTEMPT_END:
        return record_attempt_end(job, s, a, now_ms);
    case HR_REC_RELEASED:
        return record_time(job, s, "released_at", now_ms);
    case HR_REC_CLOSED:
        return record_time(job, s, "closed_at", now_ms);
    }
    return -1;
}


int
records_escalation(store_job_t *job, const session_t *s, hr_escalation_t kind,
                   int64_t now_ms)
{
    char        raised[24], *detail;
    const char *params[4];
    json_t     *doc;
    int         rc;

    doc = json_pack("{s:s, s:s?}", "station_id", s->station_id,
                    "provider_call_ref", nonempty(s->call_sid));
    detail = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (detail == NULL) {
        return -1;
    }
    params[0] = s->id;
    params[1] = session_escalation_name(kind);
    params[2] = ms_text(raised, sizeof(raised), now_ms);
    params[3] = detail;

    rc = store_job_add(job,
                         "INSERT INTO escalations (session_id, kind, "
                         "raised_at, detail) SELECT $1, $2, " TS("$3")
                         ", $4::jsonb WHERE NOT EXISTS (SELECT 1 FROM "
                         "escalations WHERE session_id = $1 AND kind = $2)",
                         4, params);
    free(detail);
    return rc;
}


int
records_processed(store_job_t *job, const char *stream_id,
                  const char *session_id)
{
    const char *params[] = { stream_id, session_id };

    return store_job_add(job,
                         "INSERT INTO processed_events (stream_id, "
                         "session_id) VALUES ($1, $2) "
                         "ON CONFLICT (stream_id) DO NOTHING",
                         2, params);
}
