/* worker/event.c: stream entries into events; malformed ones rejected. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "event.h"

typedef struct {
    const char       *type;
    const char       *session;
    const char       *at;
    const char       *payload;
    int               ok;
    hr_event_kind_t   kind;
} row_t;

static const row_t rows[] = {
    { "activated", "s-1", "1000",
      "{\"citizen_id\":\"c\",\"operator_id\":\"o\",\"station_id\":\"st\"}", 1,
      HR_EV_ACTIVATED },
    { "activated", "s-1", "1000", "{\"citizen_id\":\"c\"}", 0, 0 },
    { "stream_active", "s-1", "1000", "{\"state\":\"active\"}", 1,
      HR_EV_STREAM_ACTIVE },
    { "stream_failed", "s-1", "1000", "{\"state\":\"failed\",\"reason\":\"x\"}",
      1, HR_EV_STREAM_FAILED },
    { "released", "s-1", "1000", "{\"reason\":\"user\"}", 1, HR_EV_RELEASED },
    { "call_status", "s-1", "1000",
      "{\"CallSid\":\"CA1\",\"CallStatus\":\"in-progress\",\"leg\":\"citizen\"}",
      1, HR_EV_CALL_STATUS },
    { "call_status", "s-1", "1000", "{\"CallSid\":\"CA1\",\"leg\":\"martian\"}",
      0, 0 },
    { "dial_result", "s-1", "1000",
      "{\"DialCallStatus\":\"busy\",\"step\":\"2\"}", 1, HR_EV_DIAL_RESULT },
    { "dial_result", "s-1", "1000", "{\"DialCallStatus\":\"busy\"}", 0, 0 },
    { "bogus", "s-1", "1000", "{}", 0, 0 },
    { "released", "", "1000", "{}", 0, 0 },
    { "released", "s-1", "12x", "{}", 0, 0 },
    { "released", "s-1", "1000", "[1]", 0, 0 },
    { "released", "s-1", "1000", "{not json", 0, 0 },
};


static void
test_rows(void **state)
{
    size_t i;

    (void) state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *names[] = { "type", "session_id", "at_ms", "payload" };
        const char *values[] = { rows[i].type, rows[i].session, rows[i].at,
                                 rows[i].payload };
        event_msg_t m;
        char        err[128];
        int         rc;

        rc = event_parse(&m, "1-0", 4, names, values, err, sizeof(err));
        if ((rc == 0) != rows[i].ok) {
            fail_msg("row %zu: parse returned %d", i, rc);
        }
        if (rc == 0) {
            assert_int_equal(m.ev.kind, rows[i].kind);
            assert_int_equal(m.ev.at_ms, 1000);
            assert_string_equal(m.session_id, "s-1");
            event_msg_free(&m);
        }
    }
}


static void
test_fields(void **state)
{
    const char *names[] = { "type", "session_id", "at_ms", "payload" };
    static const char payload[] = "{\"DialCallStatus\":\"no-answer\","
                                  "\"step\":1,\"DialCallSid\":\"CA7\"}";
    const char *values[] = { "dial_result", "s-9", "1764000000000", payload };
    event_msg_t m;
    char        err[128];

    (void) state;
    assert_int_equal(event_parse(&m, "5-1", 4, names, values, err,
                                 sizeof(err)),
                     0);
    assert_int_equal(m.ev.at_ms, 1764000000000LL);
    assert_int_equal(m.ev.step, 1);
    assert_int_equal(m.ev.call_status, HR_CALL_NO_ANSWER);
    assert_string_equal(m.ev.call_sid, "CA7");
    assert_string_equal(m.stream_id, "5-1");
    event_msg_free(&m);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_fields),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
