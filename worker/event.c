#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"


static const char *
field(size_t n, const char *const *names, const char *const *values,
      const char *name)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (names[i] != NULL && strcmp(names[i], name) == 0) {
            return values[i];
        }
    }
    return NULL;
}


static const char *
text(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}


static int
parse_int(const json_t *v, long long *out)
{
    char *end;

    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        errno = 0;
        *out = strtoll(json_string_value(v), &end, 10);
        return errno == 0 && end != json_string_value(v) && *end == '\0'
                   ? 0
                   : -1;
    }
    return -1;
}


static int
parse_leg(const char *name, hr_leg_t *leg)
{
    if (name == NULL || strcmp(name, "citizen") == 0) {
        *leg = HR_LEG_CITIZEN;
    } else if (strcmp(name, "operator") == 0) {
        *leg = HR_LEG_OPERATOR;
    } else if (strcmp(name, "supervisor") == 0) {
        *leg = HR_LEG_SUPERVISOR;
    } else {
        return -1;
    }
    return 0;
}


static int
parse_payload(event_msg_t *m, char *err, size_t errlen)
{
    hr_event_t   *ev = &m->ev;
    const json_t *p = m->payload;
    long long     step;

    if (strcmp(m->type, "activated") == 0) {
        ev->kind = HR_EV_ACTIVATED;
        ev->citizen_id = text(p, "citizen_id");
        ev->operator_id = text(p, "operator_id");
        ev->station_id = text(p, "station_id");
        if (ev->citizen_id == NULL || ev->operator_id == NULL
            || ev->station_id == NULL)
        {
            snprintf(err, errlen, "activated without citizen, operator "
                                  "and station ids");
            return -1;
        }
    } else if (strcmp(m->type, "stream_active") == 0) {
        ev->kind = HR_EV_STREAM_ACTIVE;
    } else if (strcmp(m->type, "stream_failed") == 0) {
        ev->kind = HR_EV_STREAM_FAILED;
        ev->reason = text(p, "reason");
    } else if (strcmp(m->type, "released") == 0) {
        ev->kind = HR_EV_RELEASED;
        ev->reason = text(p, "reason");
    } else if (strcmp(m->type, "call_status") == 0) {
        ev->kind = HR_EV_CALL_STATUS;
        ev->call_sid = text(p, "CallSid");
        ev->call_status = session_call_status_parse(text(p, "CallStatus"));
        if (parse_leg(text(p, "leg"), &ev->leg) != 0) {
            snprintf(err, errlen, "call_status with an unknown leg");
            return -1;
        }
    } else if (strcmp(m->type, "dial_result") == 0) {
        ev->kind = HR_EV_DIAL_RESULT;
        ev->call_sid = text(p, "DialCallSid");
        ev->call_status = session_call_status_parse(text(p,
                                                         "DialCallStatus"));
        if (parse_int(json_object_get(p, "step"), &step) != 0 || step < 1
            || step > 100)
        {
            snprintf(err, errlen, "dial_result without a valid step");
            return -1;
        }
        ev->step = (int) step;
    } else {
        snprintf(err, errlen, "unknown event type \"%.24s\"", m->type);
        return -1;
    }
    return 0;
}


int
event_parse(event_msg_t *m, const char *stream_id, size_t nfields,
            const char *const *names, const char *const *values, char *err,
            size_t errlen)
{
    const char   *type, *sid, *at, *payload;
    char         *end;
    json_error_t  jerr;

    memset(m, 0, sizeof(*m));
    snprintf(m->stream_id, sizeof(m->stream_id), "%s", stream_id);
    type = field(nfields, names, values, "type");
    sid = field(nfields, names, values, "session_id");
    at = field(nfields, names, values, "at_ms");
    payload = field(nfields, names, values, "payload");

    if (type == NULL || sid == NULL || at == NULL || sid[0] == '\0'
        || strlen(sid) >= sizeof(m->session_id) || strlen(type) >= sizeof(m->type))
    {
        snprintf(err, errlen, "missing or oversized type/session_id/at_ms");
        return -1;
    }
    snprintf(m->type, sizeof(m->type), "%s", type);
    snprintf(m->session_id, sizeof(m->session_id), "%s", sid);

    errno = 0;
    m->ev.at_ms = strtoll(at, &end, 10);
    if (errno != 0 || end == at || *end != '\0' || m->ev.at_ms <= 0) {
        snprintf(err, errlen, "bad at_ms");
        return -1;
    }

    m->payload = json_loads(payload ? payload : "{}", 0, &jerr);
    if (!json_is_object(m->payload)) {
        snprintf(err, errlen, "payload is not a JSON object");
        event_msg_free(m);
        return -1;
    }
    if (parse_payload(m, err, errlen) != 0) {
        event_msg_free(m);
        return -1;
    }
    return 0;
}


void
event_msg_free(event_msg_t *m)
{
    json_decref(m->payload);
    m->payload = NULL;
}
