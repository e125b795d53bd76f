/*
 * The SQL of the worker: what each HR_ACT_RECORD / HR_ACT_ESCALATE writes,
 * the directory lookup and the reload of open sessions. Every write is an
 * upsert or guarded insert, so replaying a job after a lost COMMIT reply is
 * harmless.
 */

#ifndef HAMRAHI_RECORDS_H
#define HAMRAHI_RECORDS_H

#include <stdint.h>

#include "session.h"
#include "store_pg.h"

/* Columns of the lookup and reload results. */
enum {
    LOOKUP_CITIZEN_PHONE,
    LOOKUP_OPERATOR_PHONE,
    LOOKUP_OPERATOR_ON_DUTY,
    LOOKUP_SUPERVISOR_PHONE,
    LOOKUP_STORED_STATE,
    LOOKUP_CALL_REF,
    RELOAD_ID,
    RELOAD_CITIZEN_ID,
    RELOAD_OPERATOR_ID,
    RELOAD_STATION_ID,
    RELOAD_ACTIVATED_MS
};

/* $1 citizen id, $2 operator id, $3 station id, $4 session id. */
extern const char records_lookup_sql[];
/* Open sessions a worker must watch again after a restart. */
extern const char records_reload_sql[];

int records_add(store_job_t *job, const session_t *s, const hr_action_t *a,
                int64_t now_ms);
int records_escalation(store_job_t *job, const session_t *s,
                       hr_escalation_t kind, int64_t now_ms);
int records_processed(store_job_t *job, const char *stream_id,
                      const char *session_id);

#endif /* HAMRAHI_RECORDS_H */
