/*
 * hamrahi_event.c: route matching, form decoding and the validation that
 * turns a hook body into a stream event (docs/contracts.md, "Hook answers").
 * One table per function, one row per case.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hamrahi_event.h"


#define N(a)  (sizeof(a) / sizeof((a)[0]))

#define ID64 \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define STR128 \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"


static const struct route_row {
    const char       *path;
    hamrahi_route_t   route;
    const char       *session;      /* NULL: none */
} route_rows[] = {
    { "/v1/sos/sessions/s-1/activated", HAMRAHI_ROUTE_ACTIVATED, "s-1" },
    { "/v1/sos/sessions/A_b-9/stream", HAMRAHI_ROUTE_STREAM, "A_b-9" },
    { "/v1/sos/sessions/x/released", HAMRAHI_ROUTE_RELEASED, "x" },
    { "/v1/sos/sessions/" ID64 "/activated", HAMRAHI_ROUTE_ACTIVATED, ID64 },
    { "/v1/telephony/status", HAMRAHI_ROUTE_TELEPHONY_STATUS, NULL },
    { "/v1/telephony/dial", HAMRAHI_ROUTE_TELEPHONY_DIAL, NULL },

    { "/v1/sos/sessions/" ID64 "0/activated", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions//activated", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/s.1/activated", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/s%201/activated", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/s 1/activated", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/s-1/activated/", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/s-1/activate", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/s-1/activatedx", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/s-1", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/s-1/", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/sos/sessions/a/b/activated", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/telephony/", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/telephony/statusx", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/telephony/status/", HAMRAHI_ROUTE_NONE, NULL },
    { "/v1/telephony/calls", HAMRAHI_ROUTE_NONE, NULL },
    { "/V1/sos/sessions/s-1/activated", HAMRAHI_ROUTE_NONE, NULL },
    { "/", HAMRAHI_ROUTE_NONE, NULL },
    { "", HAMRAHI_ROUTE_NONE, NULL },
};


static void
test_route_match(void **state)
{
    size_t            i, len;
    const char       *session;
    hamrahi_route_t   route;

    (void) state;

    for (i = 0; i < N(route_rows); i++) {
        route = hamrahi_route_match(route_rows[i].path,
                                    strlen(route_rows[i].path), &session,
                                    &len);
        if (route != route_rows[i].route) {
            fail_msg("%s: route %d, expected %d", route_rows[i].path, route,
                     route_rows[i].route);
        }

        if (route_rows[i].session == NULL) {
            assert_null(session);
            assert_int_equal(len, 0);
            continue;
        }

        assert_int_equal(len, strlen(route_rows[i].session));
        assert_memory_equal(session, route_rows[i].session, len);
    }
}


/* the path is not NUL-terminated in nginx: nothing past len is read */
static void
test_route_match_respects_length(void **state)
{
    size_t       len;
    const char  *session;
    const char   path[] = "/v1/sos/sessions/s-1/activatedXYZ";

    (void) state;

    assert_int_equal(hamrahi_route_match(path, sizeof(path) - 4, &session,
                                         &len),
                     HAMRAHI_ROUTE_ACTIVATED);
    assert_int_equal(hamrahi_route_match(path, 20, &session, &len),
                     HAMRAHI_ROUTE_NONE);
}


static void
test_route_names(void **state)
{
    (void) state;

    assert_string_equal(hamrahi_route_name(HAMRAHI_ROUTE_ACTIVATED),
                        "activated");
    assert_string_equal(hamrahi_route_name(HAMRAHI_ROUTE_STREAM), "stream");
    assert_string_equal(hamrahi_route_name(HAMRAHI_ROUTE_RELEASED),
                        "released");
    assert_string_equal(hamrahi_route_name(HAMRAHI_ROUTE_TELEPHONY_STATUS),
                        "telephony_status");
    assert_string_equal(hamrahi_route_name(HAMRAHI_ROUTE_TELEPHONY_DIAL),
                        "telephony_dial");
    assert_string_equal(hamrahi_route_name(HAMRAHI_ROUTE_NONE), "unknown");
    assert_string_equal(hamrahi_route_name(HAMRAHI_ROUTE_COUNT), "unknown");

    assert_true(hamrahi_route_is_telephony(HAMRAHI_ROUTE_TELEPHONY_STATUS));
    assert_true(hamrahi_route_is_telephony(HAMRAHI_ROUTE_TELEPHONY_DIAL));
    assert_false(hamrahi_route_is_telephony(HAMRAHI_ROUTE_ACTIVATED));
    assert_false(hamrahi_route_is_telephony(HAMRAHI_ROUTE_NONE));
}


/* "name=value|name=value" renders the pairs for one comparison */
static void
render_pairs(const hamrahi_kv_t *kv, int n, char *out, size_t cap)
{
    int     i;
    size_t  len;

    out[0] = '\0';
    len = 0;

    for (i = 0; i < n; i++) {
        len += (size_t) snprintf(out + len, cap - len, "%s%.*s=%.*s",
                                 i ? "|" : "", (int) kv[i].name_len,
                                 kv[i].name, (int) kv[i].value_len,
                                 kv[i].value);
        assert_true(len < cap);
    }
}


static const struct form_row {
    const char  *text;
    int          n;
    const char  *pairs;     /* as render_pairs() prints them */
} form_rows[] = {
    { "", 0, "" },
    { "a=1", 1, "a=1" },
    { "a=1&b=2", 2, "a=1|b=2" },
    { "a=1&&b=2&", 2, "a=1|b=2" },
    { "&&&", 0, "" },
    { "a+b=c+d", 1, "a b=c d" },
    { "To=%2B15550000001", 1, "To=+15550000001" },
    { "x=%c3%a9%C3%A9", 1, "x=\xc3\xa9\xc3\xa9" },
    { "x=a%26b%3Dc", 1, "x=a&b=c" },
    { "flag", 1, "flag=" },
    { "flag=", 1, "flag=" },
    { "=v", 1, "=v" },
    { "a=b=c", 1, "a=b=c" },
    { "a=1&a=2", 2, "a=1|a=2" },
    { "a=%", -1, NULL },
    { "a=%4", -1, NULL },
    { "a=%G1", -1, NULL },
    { "a=%1G", -1, NULL },
    { "%zz=1", -1, NULL },
    { "a=1&b=%", -1, NULL },
};


static void
test_form_parse(void **state)
{
    int           n;
    size_t        i;
    char          buf[256], rendered[256];
    hamrahi_kv_t  kv[8];

    (void) state;

    for (i = 0; i < N(form_rows); i++) {
        strcpy(buf, form_rows[i].text);
        n = hamrahi_form_parse(buf, strlen(buf), kv, N(kv));

        if (n != form_rows[i].n) {
            fail_msg("\"%s\": %d pairs, expected %d", form_rows[i].text, n,
                     form_rows[i].n);
        }

        if (n < 0) {
            continue;
        }

        render_pairs(kv, n, rendered, sizeof(rendered));
        assert_string_equal(rendered, form_rows[i].pairs);
    }
}


static void
test_form_parse_capacity(void **state)
{
    char          buf[64];
    hamrahi_kv_t  kv[3];

    (void) state;

    strcpy(buf, "a=1&b=2&c=3");
    assert_int_equal(hamrahi_form_parse(buf, strlen(buf), kv, 3), 3);

    strcpy(buf, "a=1&b=2&c=3&d=4");
    assert_int_equal(hamrahi_form_parse(buf, strlen(buf), kv, 3), -1);

    /* a %00 decodes to a NUL byte inside the value, kept by length */
    strcpy(buf, "a=x%00y");
    assert_int_equal(hamrahi_form_parse(buf, strlen(buf), kv, 3), 1);
    assert_int_equal(kv[0].value_len, 3);
    assert_memory_equal(kv[0].value, "x\0y", 3);
}


static void
test_kv_find_first(void **state)
{
    char                 buf[64];
    hamrahi_kv_t         kv[8];
    const hamrahi_kv_t  *found;
    int                  n;

    (void) state;

    strcpy(buf, "step=1&ab=x&step=2&a=y");
    n = hamrahi_form_parse(buf, strlen(buf), kv, N(kv));
    assert_int_equal(n, 4);

    found = hamrahi_kv_find(kv, (size_t) n, "step");
    assert_non_null(found);
    assert_memory_equal(found->value, "1", 1);

    found = hamrahi_kv_find(kv, (size_t) n, "a");
    assert_non_null(found);
    assert_memory_equal(found->value, "y", 1);

    assert_null(hamrahi_kv_find(kv, (size_t) n, "st"));
    assert_null(hamrahi_kv_find(kv, 0, "step"));
}


static const struct json_row {
    hamrahi_route_t   route;
    const char       *body;
    const char       *type;        /* on success */
    const char       *payload;     /* on success */
    const char       *error;       /* on failure */
} json_rows[] = {
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\": \"cit-1\", \"operator_id\": \"op-1\",\n"
      " \"station_id\": \"st-1\"}",
      "activated",
      "{\"citizen_id\":\"cit-1\",\"operator_id\":\"op-1\","
      "\"station_id\":\"st-1\"}", NULL },
    /* extra fields are kept, in order */
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"station_id\":\"st-1\",\"citizen_id\":\"c\",\"operator_id\":\"o\","
      "\"extra\":[1,{\"k\":null}]}",
      "activated",
      "{\"station_id\":\"st-1\",\"citizen_id\":\"c\",\"operator_id\":\"o\","
      "\"extra\":[1,{\"k\":null}]}", NULL },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":\"" STR128 "\",\"operator_id\":\"o\","
      "\"station_id\":\"s\"}",
      "activated", NULL, NULL },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":\"x" STR128 "\",\"operator_id\":\"o\","
      "\"station_id\":\"s\"}",
      NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":\"\",\"operator_id\":\"o\",\"station_id\":\"s\"}",
      NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":7,\"operator_id\":\"o\",\"station_id\":\"s\"}",
      NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":null,\"operator_id\":\"o\",\"station_id\":\"s\"}",
      NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":\"c\",\"station_id\":\"s\"}",
      NULL, NULL, "missing_field" },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":\"c\",\"operator_id\":\"o\"}",
      NULL, NULL, "missing_field" },
    { HAMRAHI_ROUTE_ACTIVATED, "{}", NULL, NULL, "missing_field" },
    { HAMRAHI_ROUTE_ACTIVATED, "", NULL, NULL, "invalid_json" },
    { HAMRAHI_ROUTE_ACTIVATED, "   ", NULL, NULL, "invalid_json" },
    { HAMRAHI_ROUTE_ACTIVATED, "[]", NULL, NULL, "invalid_json" },
    { HAMRAHI_ROUTE_ACTIVATED, "\"text\"", NULL, NULL, "invalid_json" },
    { HAMRAHI_ROUTE_ACTIVATED, "{\"citizen_id\":", NULL, NULL,
      "invalid_json" },
    { HAMRAHI_ROUTE_ACTIVATED, "{} {}", NULL, NULL, "invalid_json" },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":\"c\",\"citizen_id\":\"d\",\"operator_id\":\"o\","
      "\"station_id\":\"s\"}",
      NULL, NULL, "invalid_json" },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":\"c\\u0000\",\"operator_id\":\"o\","
      "\"station_id\":\"s\"}",
      NULL, NULL, "invalid_json" },
    { HAMRAHI_ROUTE_ACTIVATED,
      "{\"citizen_id\":\"\xff\",\"operator_id\":\"o\",\"station_id\":\"s\"}",
      NULL, NULL, "invalid_json" },

    { HAMRAHI_ROUTE_STREAM, "{\"state\":\"active\"}", "stream_active",
      "{\"state\":\"active\"}", NULL },
    { HAMRAHI_ROUTE_STREAM, "{\"state\":\"active\",\"reason\":\"ok\"}",
      "stream_active", NULL, NULL },
    { HAMRAHI_ROUTE_STREAM, "{\"state\":\"failed\",\"reason\":\"ice\"}",
      "stream_failed", "{\"state\":\"failed\",\"reason\":\"ice\"}", NULL },
    { HAMRAHI_ROUTE_STREAM, "{\"state\":\"failed\"}", NULL, NULL,
      "missing_field" },
    { HAMRAHI_ROUTE_STREAM, "{\"state\":\"failed\",\"reason\":\"\"}", NULL,
      NULL, "invalid_field" },
    { HAMRAHI_ROUTE_STREAM, "{\"state\":\"failed\",\"reason\":1}", NULL,
      NULL, "invalid_field" },
    { HAMRAHI_ROUTE_STREAM, "{\"state\":\"ACTIVE\"}", NULL, NULL,
      "invalid_field" },
    { HAMRAHI_ROUTE_STREAM, "{\"state\":true}", NULL, NULL,
      "invalid_field" },
    { HAMRAHI_ROUTE_STREAM, "{\"reason\":\"x\"}", NULL, NULL,
      "missing_field" },

    /* a release is never refused for want of a reason (AC10) */
    { HAMRAHI_ROUTE_RELEASED, "{}", "released", "{}", NULL },
    { HAMRAHI_ROUTE_RELEASED, "{\"reason\":\"citizen_cancelled\"}",
      "released", "{\"reason\":\"citizen_cancelled\"}", NULL },
    { HAMRAHI_ROUTE_RELEASED, "{\"reason\":[]}", NULL, NULL,
      "invalid_field" },

    /* a body that names its session must name the path's ("s-1") */
    { HAMRAHI_ROUTE_RELEASED, "{\"session_id\":\"s-1\"}", "released",
      "{\"session_id\":\"s-1\"}", NULL },
    { HAMRAHI_ROUTE_STREAM, "{\"state\":\"active\",\"session_id\":\"s-2\"}",
      NULL, NULL, "session_mismatch" },
    { HAMRAHI_ROUTE_RELEASED, "{\"session_id\":\"s-1 \"}", NULL, NULL,
      "session_mismatch" },
    { HAMRAHI_ROUTE_RELEASED, "{\"session_id\":\"s-\"}", NULL, NULL,
      "session_mismatch" },
    { HAMRAHI_ROUTE_ACTIVATED, "{\"citizen_id\":\"c\",\"operator_id\":\"o\","
      "\"station_id\":\"s\",\"session_id\":1}", NULL, NULL,
      "session_mismatch" },

    { HAMRAHI_ROUTE_NONE, "{}", NULL, NULL, "not_found" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "{}", NULL, NULL, "not_found" },
};


static void
test_event_from_json(void **state)
{
    int               rc;
    size_t            i;
    hamrahi_event_t   ev;

    (void) state;

    for (i = 0; i < N(json_rows); i++) {
        rc = hamrahi_event_from_json(json_rows[i].route, "s-1", 3,
                                     json_rows[i].body,
                                     strlen(json_rows[i].body), &ev);

        if (json_rows[i].error != NULL) {
            if (rc != -1 || ev.error == NULL
                || strcmp(ev.error, json_rows[i].error) != 0)
            {
                fail_msg("row %zu: rc %d error %s, expected %s", i, rc,
                         ev.error ? ev.error : "(none)", json_rows[i].error);
            }

            assert_null(ev.payload);
            assert_null(ev.type);
            assert_true(strlen(ev.detail) > 0);
            continue;
        }

        if (rc != 0) {
            fail_msg("row %zu: refused with %s: %s", i, ev.error, ev.detail);
        }

        assert_string_equal(ev.type, json_rows[i].type);
        assert_non_null(ev.payload);

        if (json_rows[i].payload != NULL) {
            assert_string_equal(ev.payload, json_rows[i].payload);
        }

        hamrahi_event_free(&ev);
        assert_null(ev.payload);
    }
}


/* the body is taken by length: a NUL byte in it is not the end */
static void
test_event_from_json_embedded_nul(void **state)
{
    hamrahi_event_t  ev;
    const char       body[] = "{\"state\":\"active\"}\0garbage";

    (void) state;

    assert_int_equal(hamrahi_event_from_json(HAMRAHI_ROUTE_STREAM, "s-1", 3,
                                             body, sizeof(body) - 1, &ev),
                     -1);
    assert_string_equal(ev.error, "invalid_json");
}


typedef struct {
    hamrahi_route_t   route;
    const char       *form;
    const char       *query;
    const char       *type;        /* on success */
    const char       *payload;     /* on success */
    const char       *error;       /* on failure */
} form_case_t;


static const form_case_t form_cases[] = {
    { HAMRAHI_ROUTE_TELEPHONY_STATUS,
      "CallSid=CA1&CallStatus=ringing&To=%2B15550000001",
      "session=s-1&leg=citizen", "call_status",
      "{\"CallSid\":\"CA1\",\"CallStatus\":\"ringing\","
      "\"To\":\"+15550000001\",\"leg\":\"citizen\"}", NULL },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=in-progress",
      "leg=operator&session=s-1", "call_status",
      "{\"CallSid\":\"CA1\",\"CallStatus\":\"in-progress\","
      "\"leg\":\"operator\"}", NULL },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=ringing",
      "leg=citizen", NULL, NULL, "missing_field" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=ringing",
      "session=s.1&leg=citizen", NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=ringing",
      "session=" ID64 "0&leg=citizen", NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=ringing",
      "session=s-1", NULL, NULL, "missing_field" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=ringing",
      "session=s-1&leg=cit%20izen", NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallStatus=ringing",
      "session=s-1&leg=citizen", NULL, NULL, "missing_field" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1",
      "session=s-1&leg=citizen", NULL, NULL, "missing_field" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=%ff",
      "session=s-1&leg=citizen", NULL, NULL, "invalid_field" },
    /* the worker's JSON reader refuses NUL bytes: so do we */
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=ring%00ing",
      "session=s-1&leg=citizen", NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_TELEPHONY_STATUS, "CallSid=CA1&CallStatus=x&a%00b=1",
      "session=s-1&leg=citizen", NULL, NULL, "invalid_field" },

    { HAMRAHI_ROUTE_TELEPHONY_DIAL,
      "CallSid=CA1&DialCallStatus=busy&DialCallSid=CA2",
      "session=s-1&step=1", "dial_result",
      "{\"CallSid\":\"CA1\",\"DialCallStatus\":\"busy\","
      "\"DialCallSid\":\"CA2\",\"step\":\"1\"}", NULL },
    /* the hold redirect: attempt and the dial outcome come in the query */
    { HAMRAHI_ROUTE_TELEPHONY_DIAL, "CallSid=CA1&CallStatus=in-progress",
      "session=s-1&step=2&attempt=3&DialCallStatus=no-answer",
      "dial_result",
      "{\"CallSid\":\"CA1\",\"CallStatus\":\"in-progress\",\"step\":\"2\","
      "\"attempt\":\"3\",\"DialCallStatus\":\"no-answer\"}", NULL },
    /* the provider's own outcome wins over the one carried in the query */
    { HAMRAHI_ROUTE_TELEPHONY_DIAL, "CallSid=CA1&DialCallStatus=completed",
      "session=s-1&step=1&DialCallStatus=busy", "dial_result",
      "{\"CallSid\":\"CA1\",\"DialCallStatus\":\"completed\","
      "\"step\":\"1\"}", NULL },
    { HAMRAHI_ROUTE_TELEPHONY_DIAL, "CallSid=CA1", "session=s-1&step=x",
      NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_TELEPHONY_DIAL, "CallSid=CA1", "session=s-1&step=12345",
      NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_TELEPHONY_DIAL, "CallSid=CA1", "session=s-1", NULL,
      NULL, "missing_field" },
    { HAMRAHI_ROUTE_TELEPHONY_DIAL, "CallSid=CA1",
      "session=s-1&step=1&attempt=-1", NULL, NULL, "invalid_field" },
    { HAMRAHI_ROUTE_TELEPHONY_DIAL, "CallSid=CA1",
      "session=s-1&step=1&DialCallStatus=a%26b", NULL, NULL,
      "invalid_field" },
    { HAMRAHI_ROUTE_TELEPHONY_DIAL, "DialCallStatus=busy",
      "session=s-1&step=1", NULL, NULL, "missing_field" },

    { HAMRAHI_ROUTE_ACTIVATED, "CallSid=CA1&CallStatus=ringing",
      "session=s-1&leg=citizen", NULL, NULL, "not_found" },
};


static void
check_form_case(const form_case_t *fc)
{
    int               rc, nform, nquery;
    char              form_text[256], query_text[256];
    size_t            session_len;
    const char       *session;
    hamrahi_kv_t      form[16], query[16];
    hamrahi_event_t   ev;

    strcpy(form_text, fc->form);
    strcpy(query_text, fc->query);

    nform = hamrahi_form_parse(form_text, strlen(form_text), form, N(form));
    nquery = hamrahi_form_parse(query_text, strlen(query_text), query,
                                N(query));
    assert_true(nform >= 0 && nquery >= 0);

    session = NULL;
    rc = hamrahi_event_from_form(fc->route, form, (size_t) nform, query,
                                 (size_t) nquery, &session, &session_len,
                                 &ev);

    if (fc->error != NULL) {
        if (rc != -1 || ev.error == NULL || strcmp(ev.error, fc->error) != 0)
        {
            fail_msg("%s ? %s: rc %d error %s, expected %s", fc->form,
                     fc->query, rc, ev.error ? ev.error : "(none)",
                     fc->error);
        }

        assert_null(ev.payload);
        assert_null(session);
        return;
    }

    if (rc != 0) {
        fail_msg("%s ? %s: refused with %s: %s", fc->form, fc->query,
                 ev.error, ev.detail);
    }

    assert_string_equal(ev.type, fc->type);
    assert_string_equal(ev.payload, fc->payload);
    assert_int_equal(session_len, 3);
    assert_memory_equal(session, "s-1", 3);

    hamrahi_event_free(&ev);
}


static void
test_event_from_form(void **state)
{
    size_t  i;

    (void) state;

    for (i = 0; i < N(form_cases); i++) {
        check_form_case(&form_cases[i]);
    }
}


/* a repeated form name keeps its last value, as a JSON object must */
static void
test_event_from_form_repeated_name(void **state)
{
    static const form_case_t  fc = {
        HAMRAHI_ROUTE_TELEPHONY_STATUS,
        "CallSid=CA1&CallStatus=ringing&CallStatus=completed",
        "session=s-1&leg=citizen", "call_status",
        "{\"CallSid\":\"CA1\",\"CallStatus\":\"completed\","
        "\"leg\":\"citizen\"}", NULL
    };

    (void) state;

    check_form_case(&fc);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_route_match_respects_length),
        cmocka_unit_test(test_route_names),
        cmocka_unit_test(test_form_parse),
        cmocka_unit_test(test_form_parse_capacity),
        cmocka_unit_test(test_kv_find_first),
        cmocka_unit_test(test_event_from_json),
        cmocka_unit_test(test_event_from_json_embedded_nul),
        cmocka_unit_test(test_event_from_form),
        cmocka_unit_test(test_event_from_form_repeated_name),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
