/*
 * Hook routes and bodies → events for the stream hamrahi:events
 * (docs/contracts.md). Pure: no nginx header, no I/O; jansson for JSON.
 */

#ifndef HAMRAHI_EVENT_H
#define HAMRAHI_EVENT_H

#include <stddef.h>


#define HAMRAHI_SESSION_ID_MAX  64
#define HAMRAHI_FORM_MAX_PARAMS 128


typedef enum {
    HAMRAHI_ROUTE_NONE = 0,
    HAMRAHI_ROUTE_ACTIVATED,
    HAMRAHI_ROUTE_STREAM,
    HAMRAHI_ROUTE_RELEASED,
    HAMRAHI_ROUTE_TELEPHONY_STATUS,
    HAMRAHI_ROUTE_TELEPHONY_DIAL,
    HAMRAHI_ROUTE_COUNT
} hamrahi_route_t;


/* one decoded name=value pair; the bytes belong to the caller's buffer */
typedef struct {
    const char  *name;
    size_t       name_len;
    const char  *value;
    size_t       value_len;
} hamrahi_kv_t;


typedef struct {
    const char  *type;        /* event type, a static string */
    char        *payload;     /* compact JSON text, NUL-terminated, malloc'ed */
    const char  *error;       /* on failure: "invalid_json", ... (static) */
    char         detail[160]; /* on failure: what the caller has to fix */
} hamrahi_event_t;


/* route name for logs and metrics: "activated", ..., "unknown" */
const char *hamrahi_route_name(hamrahi_route_t route);

/*
 * Match a request path. For the /v1/sos/sessions/{id}/... routes *session
 * points into path; a malformed session id gives HAMRAHI_ROUTE_NONE.
 */
hamrahi_route_t hamrahi_route_match(const char *path, size_t len,
    const char **session, size_t *session_len);

int hamrahi_session_id_valid(const char *s, size_t len);

int hamrahi_route_is_telephony(hamrahi_route_t route);

/*
 * Decode an application/x-www-form-urlencoded text in place ('+' is a space,
 * %XX a byte). Returns the number of pairs stored in out (at most cap), or -1
 * on a bad %-escape or more than cap pairs.
 */
int hamrahi_form_parse(char *text, size_t len, hamrahi_kv_t *out, size_t cap);

/* first value of name, or NULL */
const hamrahi_kv_t *hamrahi_kv_find(const hamrahi_kv_t *kv, size_t n,
    const char *name);

/*
 * Validate a signalling hook body (JSON object) for route and the session id
 * of its path. 0 and ev->type, ev->payload set, or -1 and ev->error,
 * ev->detail set. A body that names its session ("session_id") must name the
 * path's: the signature covers only the body, so this binds it to one session.
 */
int hamrahi_event_from_json(hamrahi_route_t route, const char *session,
    size_t session_len, const char *body, size_t len, hamrahi_event_t *ev);

/*
 * Build the event of a telephony callback: form holds the decoded body,
 * query the decoded query string (session, leg, step, attempt). The payload
 * is the form as a JSON object of strings plus "leg"/"step"/"attempt" from
 * the query. On success *session points into query.
 */
int hamrahi_event_from_form(hamrahi_route_t route, const hamrahi_kv_t *form,
    size_t nform, const hamrahi_kv_t *query, size_t nquery,
    const char **session, size_t *session_len, hamrahi_event_t *ev);

void hamrahi_event_free(hamrahi_event_t *ev);


#endif /* HAMRAHI_EVENT_H */
