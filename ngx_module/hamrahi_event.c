/*
 * Hook routes and bodies → events (see hamrahi_event.h). Pure: no nginx
 * header, no I/O.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hamrahi_event.h"


#define HAMRAHI_EVENT_ID_FIELD_MAX  128
#define HAMRAHI_EVENT_TEXT_MAX      1024
#define HAMRAHI_EVENT_LEG_MAX       32
#define HAMRAHI_EVENT_NUMBER_MAX    4


static const char  hamrahi_sessions_prefix[] = "/v1/sos/sessions/";
static const char  hamrahi_telephony_prefix[] = "/v1/telephony/";


static int hamrahi_event_fail(hamrahi_event_t *ev, const char *error,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int hamrahi_event_string_field(json_t *obj, const char *name,
    size_t max, int required, hamrahi_event_t *ev);
static int hamrahi_event_check_json(hamrahi_route_t route, json_t *obj,
    hamrahi_event_t *ev);
static int hamrahi_event_check_session(json_t *obj, const char *session,
    size_t session_len, hamrahi_event_t *ev);
static int hamrahi_event_token_valid(const char *s, size_t len, size_t max,
    int digits_only);
static int hamrahi_event_query_field(const hamrahi_kv_t *query,
    size_t nquery, const char *name, size_t max, int digits_only,
    int required, json_t *payload, hamrahi_event_t *ev);
static int hamrahi_event_form_object(const hamrahi_kv_t *form, size_t nform,
    json_t *payload, hamrahi_event_t *ev);


const char *
hamrahi_route_name(hamrahi_route_t route)
{
    switch (route) {
    case HAMRAHI_ROUTE_ACTIVATED:
        return "activated";
    case HAMRAHI_ROUTE_STREAM:
        return "stream";
    case HAMRAHI_ROUTE_RELEASED:
        return "released";
    case HAMRAHI_ROUTE_TELEPHONY_STATUS:
        return "telephony_status";
    case HAMRAHI_ROUTE_TELEPHONY_DIAL:
        return "telephony_dial";
    default:
        return "unknown";
    }
}


int
hamrahi_session_id_valid(const char *s, size_t len)
{
    return hamrahi_event_token_valid(s, len, HAMRAHI_SESSION_ID_MAX, 0);
}


int
hamrahi_route_is_telephony(hamrahi_route_t route)
{
    return route == HAMRAHI_ROUTE_TELEPHONY_STATUS
           || route == HAMRAHI_ROUTE_TELEPHONY_DIAL;
}


static int
hamrahi_event_span_is(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}


hamrahi_route_t
hamrahi_route_match(const char *path, size_t len, const char **session,
    size_t *session_len)
{
    const char  *id, *slash, *end;
    size_t       plen;

    *session = NULL;
    *session_len = 0;

    plen = sizeof(hamrahi_telephony_prefix) - 1;
    if (len > plen && memcmp(path, hamrahi_telephony_prefix, plen) == 0) {
        if (hamrahi_event_span_is(path + plen, len - plen, "status")) {
            return HAMRAHI_ROUTE_TELEPHONY_STATUS;
        }

        if (hamrahi_event_span_is(path + plen, len - plen, "dial")) {
            return HAMRAHI_ROUTE_TELEPHONY_DIAL;
        }

        return HAMRAHI_ROUTE_NONE;
    }

    plen = sizeof(hamrahi_sessions_prefix) - 1;
    if (len <= plen || memcmp(path, hamrahi_sessions_prefix, plen) != 0) {
        return HAMRAHI_ROUTE_NONE;
    }

    id = path + plen;
    end = path + len;

    slash = memchr(id, '/', (size_t) (end - id));
    if (slash == NULL || !hamrahi_session_id_valid(id, (size_t) (slash - id)))
    {
        return HAMRAHI_ROUTE_NONE;
    }

    *session = id;
    *session_len = (size_t) (slash - id);
    slash++;

    if (hamrahi_event_span_is(slash, (size_t) (end - slash), "activated")) {
        return HAMRAHI_ROUTE_ACTIVATED;
    }

    if (hamrahi_event_span_is(slash, (size_t) (end - slash), "stream")) {
        return HAMRAHI_ROUTE_STREAM;
    }

    if (hamrahi_event_span_is(slash, (size_t) (end - slash), "released")) {
        return HAMRAHI_ROUTE_RELEASED;
    }

    *session = NULL;
    *session_len = 0;

    return HAMRAHI_ROUTE_NONE;
}


static int
hamrahi_event_hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* decode one %-encoded span in place; returns the decoded length or -1 */
static int
hamrahi_form_decode(char *s, size_t len)
{
    size_t  i, o;
    int     hi, lo;

    for (i = 0, o = 0; i < len; i++, o++) {
        if (s[i] == '+') {
            s[o] = ' ';

        } else if (s[i] == '%') {
            if (len - i < 3) {
                return -1;
            }

            hi = hamrahi_event_hex_value(s[i + 1]);
            lo = hamrahi_event_hex_value(s[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }

            s[o] = (char) (hi << 4 | lo);
            i += 2;

        } else {
            s[o] = s[i];
        }
    }

    return (int) o;
}


int
hamrahi_form_parse(char *text, size_t len, hamrahi_kv_t *out, size_t cap)
{
    char    *p, *end, *amp, *eq;
    size_t   n;
    int      name_len, value_len;

    p = text;
    end = text + len;
    n = 0;

    while (p < end) {
        amp = memchr(p, '&', (size_t) (end - p));
        if (amp == NULL) {
            amp = end;
        }

        if (amp == p) {
            p++;
            continue;
        }

        if (n == cap) {
            return -1;
        }

        eq = memchr(p, '=', (size_t) (amp - p));
        if (eq == NULL) {
            eq = amp;
        }

        name_len = hamrahi_form_decode(p, (size_t) (eq - p));
        value_len = eq < amp ? hamrahi_form_decode(eq + 1,
                                                   (size_t) (amp - eq - 1))
                             : 0;
        if (name_len < 0 || value_len < 0) {
            return -1;
        }

        out[n].name = p;
        out[n].name_len = (size_t) name_len;
        out[n].value = eq < amp ? eq + 1 : amp;
        out[n].value_len = (size_t) value_len;
        n++;

        p = amp + 1;
    }

    return (int) n;
}


const hamrahi_kv_t *
hamrahi_kv_find(const hamrahi_kv_t *kv, size_t n, const char *name)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (hamrahi_event_span_is(kv[i].name, kv[i].name_len, name)) {
            return &kv[i];
        }
    }

    return NULL;
}


static int
hamrahi_event_fail(hamrahi_event_t *ev, const char *error, const char *fmt,
    ...)
{
    va_list  args;

    ev->error = error;

    va_start(args, fmt);
    vsnprintf(ev->detail, sizeof(ev->detail), fmt, args);
    va_end(args);

    return -1;
}


static int
hamrahi_event_string_field(json_t *obj, const char *name, size_t max,
    int required, hamrahi_event_t *ev)
{
    json_t  *v;
    size_t   len;

    v = json_object_get(obj, name);

    if (v == NULL) {
        if (!required) {
            return 0;
        }

        return hamrahi_event_fail(ev, "missing_field",
                                  "field \"%s\" is required", name);
    }

    if (!json_is_string(v)) {
        return hamrahi_event_fail(ev, "invalid_field",
                                  "field \"%s\" must be a string", name);
    }

    len = json_string_length(v);

    if (len == 0 || len > max) {
        return hamrahi_event_fail(ev, "invalid_field",
                                  "field \"%s\" must be 1 to %zu bytes",
                                  name, max);
    }

    return 0;
}


static int
hamrahi_event_check_json(hamrahi_route_t route, json_t *obj,
    hamrahi_event_t *ev)
{
    const char  *state;

    switch (route) {

    case HAMRAHI_ROUTE_ACTIVATED:
        ev->type = "activated";
        if (hamrahi_event_string_field(obj, "citizen_id",
                                       HAMRAHI_EVENT_ID_FIELD_MAX, 1, ev)
            || hamrahi_event_string_field(obj, "operator_id",
                                          HAMRAHI_EVENT_ID_FIELD_MAX, 1, ev)
            || hamrahi_event_string_field(obj, "station_id",
                                          HAMRAHI_EVENT_ID_FIELD_MAX, 1, ev))
        {
            return -1;
        }

        return 0;

    case HAMRAHI_ROUTE_STREAM:
        if (hamrahi_event_string_field(obj, "state", 16, 1, ev) != 0) {
            return -1;
        }

        state = json_string_value(json_object_get(obj, "state"));

        if (strcmp(state, "active") == 0) {
            ev->type = "stream_active";
            return hamrahi_event_string_field(obj, "reason",
                                              HAMRAHI_EVENT_TEXT_MAX, 0, ev);
        }

        if (strcmp(state, "failed") == 0) {
            ev->type = "stream_failed";
            return hamrahi_event_string_field(obj, "reason",
                                              HAMRAHI_EVENT_TEXT_MAX, 1, ev);
        }

        return hamrahi_event_fail(ev, "invalid_field",
                                  "field \"state\" must be \"active\" or "
                                  "\"failed\"");

    case HAMRAHI_ROUTE_RELEASED:
        /* a release must never be refused for want of a reason (AC10) */
        ev->type = "released";
        return hamrahi_event_string_field(obj, "reason",
                                          HAMRAHI_EVENT_TEXT_MAX, 0, ev);

    default:
        return hamrahi_event_fail(ev, "not_found", "no such hook");
    }
}


/*
 * Optional in the body, so existing senders keep working; a sender that
 * includes it cannot have its signed body replayed against another session.
 */
static int
hamrahi_event_check_session(json_t *obj, const char *session,
    size_t session_len, hamrahi_event_t *ev)
{
    json_t  *v;

    v = json_object_get(obj, "session_id");
    if (v == NULL) {
        return 0;
    }

    if (!json_is_string(v) || json_string_length(v) != session_len
        || memcmp(json_string_value(v), session, session_len) != 0)
    {
        return hamrahi_event_fail(ev, "session_mismatch",
                                  "field \"session_id\" must equal the "
                                  "session id in the path");
    }

    return 0;
}


int
hamrahi_event_from_json(hamrahi_route_t route, const char *session,
    size_t session_len, const char *body, size_t len, hamrahi_event_t *ev)
{
    json_t        *obj;
    json_error_t   err;

    memset(ev, 0, sizeof(*ev));

    if (len == 0) {
        return hamrahi_event_fail(ev, "invalid_json",
                                  "the body must be a JSON object");
    }

    obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (obj == NULL) {
        return hamrahi_event_fail(ev, "invalid_json", "%s at byte %d",
                                  err.text, err.position);
    }

    if (!json_is_object(obj)) {
        json_decref(obj);
        return hamrahi_event_fail(ev, "invalid_json",
                                  "the body must be a JSON object");
    }

    if (hamrahi_event_check_json(route, obj, ev) != 0
        || hamrahi_event_check_session(obj, session, session_len, ev) != 0)
    {
        json_decref(obj);
        ev->type = NULL;
        return -1;
    }

    ev->payload = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);

    if (ev->payload == NULL) {
        ev->type = NULL;
        return hamrahi_event_fail(ev, "internal", "out of memory");
    }

    return 0;
}


static int
hamrahi_event_token_valid(const char *s, size_t len, size_t max,
    int digits_only)
{
    size_t  i;
    char    c;

    if (len == 0 || len > max) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c >= '0' && c <= '9') {
            continue;
        }

        if (digits_only) {
            return 0;
        }

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
            || c == '-')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/* copy a query parameter into the payload after checking its charset */
static int
hamrahi_event_query_field(const hamrahi_kv_t *query, size_t nquery,
    const char *name, size_t max, int digits_only, int required,
    json_t *payload, hamrahi_event_t *ev)
{
    const hamrahi_kv_t  *kv;

    kv = hamrahi_kv_find(query, nquery, name);

    if (kv == NULL) {
        if (!required) {
            return 0;
        }

        return hamrahi_event_fail(ev, "missing_field",
                                  "query parameter \"%s\" is required", name);
    }

    if (!hamrahi_event_token_valid(kv->value, kv->value_len, max,
                                   digits_only))
    {
        return hamrahi_event_fail(ev, "invalid_field",
                                  "query parameter \"%s\" must be %s of at "
                                  "most %zu characters", name,
                                  digits_only ? "digits" : "[A-Za-z0-9_-]",
                                  max);
    }

    if (json_object_set_new(payload, name,
                            json_stringn(kv->value, kv->value_len)) != 0)
    {
        return hamrahi_event_fail(ev, "internal", "out of memory");
    }

    return 0;
}


/* the form as a JSON object of strings; a repeated name keeps its last */
static int
hamrahi_event_form_object(const hamrahi_kv_t *form, size_t nform,
    json_t *payload, hamrahi_event_t *ev)
{
    size_t   i;
    json_t  *value;

    for (i = 0; i < nform; i++) {
        /* the worker reads the payload without JSON_ALLOW_NUL */
        if (memchr(form[i].name, '\0', form[i].name_len) != NULL
            || memchr(form[i].value, '\0', form[i].value_len) != NULL)
        {
            return hamrahi_event_fail(ev, "invalid_field",
                                      "form parameter %zu contains a NUL "
                                      "byte", i + 1);
        }

        value = json_stringn(form[i].value, form[i].value_len);

        if (value == NULL
            || json_object_setn_new(payload, form[i].name, form[i].name_len,
                                    value) != 0)
        {
            return hamrahi_event_fail(ev, "invalid_field",
                                      "form parameter %zu is not valid "
                                      "UTF-8", i + 1);
        }
    }

    return 0;
}


int
hamrahi_event_from_form(hamrahi_route_t route, const hamrahi_kv_t *form,
    size_t nform, const hamrahi_kv_t *query, size_t nquery,
    const char **session, size_t *session_len, hamrahi_event_t *ev)
{
    int                  dial;
    json_t              *payload;
    const hamrahi_kv_t  *kv;

    memset(ev, 0, sizeof(*ev));

    if (!hamrahi_route_is_telephony(route)) {
        return hamrahi_event_fail(ev, "not_found", "no such hook");
    }

    dial = (route == HAMRAHI_ROUTE_TELEPHONY_DIAL);

    kv = hamrahi_kv_find(query, nquery, "session");
    if (kv == NULL) {
        return hamrahi_event_fail(ev, "missing_field",
                                  "query parameter \"session\" is required");
    }

    if (!hamrahi_session_id_valid(kv->value, kv->value_len)) {
        return hamrahi_event_fail(ev, "invalid_field",
                                  "query parameter \"session\" must match "
                                  "[A-Za-z0-9_-]{1,64}");
    }

    if (hamrahi_kv_find(form, nform, "CallSid") == NULL) {
        return hamrahi_event_fail(ev, "missing_field",
                                  "form parameter \"CallSid\" is required");
    }

    if (!dial && hamrahi_kv_find(form, nform, "CallStatus") == NULL) {
        return hamrahi_event_fail(ev, "missing_field",
                                  "form parameter \"CallStatus\" is "
                                  "required");
    }

    payload = json_object();
    if (payload == NULL) {
        return hamrahi_event_fail(ev, "internal", "out of memory");
    }

    if (hamrahi_event_form_object(form, nform, payload, ev) != 0
        || hamrahi_event_query_field(query, nquery, dial ? "step" : "leg",
                                     dial ? HAMRAHI_EVENT_NUMBER_MAX
                                          : HAMRAHI_EVENT_LEG_MAX,
                                     dial, 1, payload, ev) != 0
        || hamrahi_event_query_field(query, nquery, "attempt",
                                     HAMRAHI_EVENT_NUMBER_MAX, 1, 0, payload,
                                     ev) != 0)
    {
        json_decref(payload);
        return -1;
    }

    /* the hold-the-line redirect carries the dial outcome in its query */
    if (dial && json_object_get(payload, "DialCallStatus") == NULL
        && hamrahi_event_query_field(query, nquery, "DialCallStatus", 32, 0,
                                     0, payload, ev) != 0)
    {
        json_decref(payload);
        return -1;
    }

    ev->type = dial ? "dial_result" : "call_status";
    ev->payload = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);

    if (ev->payload == NULL) {
        ev->type = NULL;
        return hamrahi_event_fail(ev, "internal", "out of memory");
    }

    *session = kv->value;
    *session_len = kv->value_len;

    return 0;
}


void
hamrahi_event_free(hamrahi_event_t *ev)
{
    free(ev->payload);
    ev->payload = NULL;
}
