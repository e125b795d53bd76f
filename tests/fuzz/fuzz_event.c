/*
 * libFuzzer target for hamrahi_event.c: the JSON event validator, the form
 * decoder and the telephony event builder, with the route matcher on the way.
 * Input: byte 0 picks the route; for signalling routes the rest is the body,
 * for telephony routes the rest is "query\nform".
 * Invariants: an accepted event has a type and a payload that is a JSON
 * object; a refused one has an error code and a NUL-terminated detail.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hamrahi_event.h"


static void
check_result(int rc, hamrahi_event_t *ev)
{
    json_t  *payload;

    if (rc != 0) {
        if (rc != -1 || ev->error == NULL || ev->payload != NULL
            || memchr(ev->detail, '\0', sizeof(ev->detail)) == NULL)
        {
            abort();
        }

        return;
    }

    if (ev->type == NULL || ev->payload == NULL) {
        abort();
    }

    payload = json_loads(ev->payload, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(payload)) {
        abort();
    }

    json_decref(payload);
    hamrahi_event_free(ev);
}


static void
fuzz_form(hamrahi_route_t route, char *text, size_t len)
{
    int               nform, nquery, rc;
    char             *nl;
    size_t            qlen, session_len;
    const char       *session;
    hamrahi_kv_t      form[HAMRAHI_FORM_MAX_PARAMS];
    hamrahi_kv_t      query[HAMRAHI_FORM_MAX_PARAMS];
    hamrahi_event_t   ev;

    nl = memchr(text, '\n', len);
    qlen = nl ? (size_t) (nl - text) : len;

    nquery = hamrahi_form_parse(text, qlen, query, HAMRAHI_FORM_MAX_PARAMS);
    nform = nl ? hamrahi_form_parse(nl + 1, len - qlen - 1, form,
                                    HAMRAHI_FORM_MAX_PARAMS)
               : 0;
    if (nform < 0 || nquery < 0) {
        return;
    }

    session = NULL;
    rc = hamrahi_event_from_form(route, form, (size_t) nform, query,
                                 (size_t) nquery, &session, &session_len,
                                 &ev);

    if (rc == 0 && !hamrahi_session_id_valid(session, session_len)) {
        abort();
    }

    check_result(rc, &ev);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               rc;
    char             *text;
    size_t            session_len;
    const char       *session;
    hamrahi_route_t   route;
    hamrahi_event_t   ev;

    if (size == 0) {
        return 0;
    }

    route = (hamrahi_route_t) (data[0] % HAMRAHI_ROUTE_COUNT);

    /* an exact-size copy, so ASan sees any read past the end */
    text = malloc(size - 1 ? size - 1 : 1);
    if (text == NULL) {
        return 0;
    }

    memcpy(text, data + 1, size - 1);

    if (hamrahi_route_match(text, size - 1, &session, &session_len)
        != HAMRAHI_ROUTE_NONE
        && session != NULL
        && !hamrahi_session_id_valid(session, session_len))
    {
        abort();
    }

    if (hamrahi_route_is_telephony(route)) {
        fuzz_form(route, text, size - 1);

    } else {
        rc = hamrahi_event_from_json(route, "s-1", 3, text, size - 1, &ev);
        check_result(rc, &ev);
    }

    free(text);

    return 0;
}
