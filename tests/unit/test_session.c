/*
 * The session state machine (worker/session.c): one table per acceptance
 * criterion, one row per step applied to one session, then a seeded random
 * walk that checks the invariants over thousands of event orders.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "session.h"

#define NONE     ((hr_action_kind_t) -1)
#define SID      "CA0000000000000000000000000000001"

static const hr_policy_t policy = {
    .watchdog_ms = 5000,
    .ring_timeout_ms = 30000,
    .backstop_margin_ms = 10000,
    .max_event_age_ms = 3600000,
    .retry_budget_ms = 60000,
};

/* Contacts variants for HR_EV_CONTACTS rows. */
enum { ON_DUTY, OFF_DUTY, NO_PHONE, STORED_CLOSED, NOBODY_ON_DUTY };

typedef struct {
    hr_event_kind_t   ev;
    int64_t           now_ms;   /* also the event's at_ms */
    int               arg;      /* timer, call status, failure, contacts, op */
    int               step;     /* dial_result: step; call_status: leg */
    hr_state_t        to;
    hr_action_kind_t  act;      /* must be among the actions (or NONE) */
    hr_action_kind_t  never;    /* must not be (or NONE) */
} row_t;


static hr_event_t
make_event(const row_t *r)
{
    hr_event_t ev;

    memset(&ev, 0, sizeof(ev));
    ev.kind = r->ev;
    ev.at_ms = r->now_ms;
    ev.citizen_id = "cit-1";
    ev.operator_id = "op-1";
    ev.station_id = "st-1";
    ev.call_sid = SID;
    ev.leg = HR_LEG_CITIZEN;
    switch (r->ev) {
    case HR_EV_TIMER:
        ev.timer = (hr_timer_t) r->arg;
        break;
    case HR_EV_CONTACTS:
        ev.citizen_phone = r->arg == NO_PHONE ? "" : "+15550000001";
        ev.operator_phone = "+15550000101";
        ev.operator_on_duty = r->arg != OFF_DUTY && r->arg != NOBODY_ON_DUTY;
        ev.supervisor_phone = r->arg == NOBODY_ON_DUTY ? "" : "+15550000201";
        ev.stored_state = r->arg == STORED_CLOSED ? HR_ST_CLOSED : HR_ST_NEW;
        ev.call_sid = NULL;
        break;
    case HR_EV_CALL_STATUS:
        ev.call_status = (hr_call_status_t) r->arg;
        ev.leg = (hr_leg_t) r->step;
        break;
    case HR_EV_DIAL_RESULT:
        ev.call_status = (hr_call_status_t) r->arg;
        ev.step = r->step;
        break;
    case HR_EV_CALL_REJECTED:
        ev.failure = (hr_failure_t) r->arg;
        break;
    case HR_EV_CALL_FOUND:
        ev.call_sid = r->arg ? SID : "";
        break;
    case HR_EV_UPDATE_FAILED:
        ev.failed_op = (hr_action_kind_t) r->arg;
        break;
    default:
        break;
    }
    return ev;
}


static int
count_kind(const hr_action_t *acts, size_t n, hr_action_kind_t kind)
{
    size_t i;
    int    c = 0;

    for (i = 0; i < n; i++) {
        c += acts[i].kind == kind;
    }
    return c;
}


static const hr_action_t *
find_kind(const hr_action_t *acts, size_t n, hr_action_kind_t kind)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (acts[i].kind == kind) {
            return &acts[i];
        }
    }
    return NULL;
}


static void
run_table(session_t *s, const row_t *rows, size_t nrows)
{
    hr_action_t acts[HR_ACT_MAX];
    hr_event_t  ev;
    size_t      i, n;

    for (i = 0; i < nrows; i++) {
        ev = make_event(&rows[i]);
        n = session_apply(s, &ev, rows[i].now_ms, acts, HR_ACT_MAX);
        assert_true(n <= HR_ACT_MAX);
        if (s->state != rows[i].to) {
            fail_msg("row %zu: state %s, expected %s", i,
                     session_state_name(s->state),
                     session_state_name(rows[i].to));
        }
        if (rows[i].act != NONE && count_kind(acts, n, rows[i].act) == 0) {
            fail_msg("row %zu: expected action %d missing", i, rows[i].act);
        }
        if (rows[i].never != NONE && count_kind(acts, n, rows[i].never) > 0) {
            fail_msg("row %zu: forbidden action %d emitted", i,
                     rows[i].never);
        }
    }
}


static session_t *
new_session(void)
{
    static session_t s;

    session_init(&s, "s-1", &policy);
    return &s;
}


#define RUN(rows) run_table(new_session(), rows, sizeof(rows) / sizeof(rows[0]))
#define RUN_ON(s, rows) run_table(s, rows, sizeof(rows) / sizeof(rows[0]))

/* ---- AC1: watchdog from at_ms, cancelled by an active stream ---- */

static const row_t ac1_cancel[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, HR_ACT_ARM_TIMER, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_STREAM_ACTIVE, 4999, 0, 0, HR_ST_WEBRTC_ACTIVE,
      HR_ACT_CANCEL_TIMER, HR_ACT_CREATE_CALL },
    /* a watchdog already queued when it was cancelled is ignored */
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_WEBRTC_ACTIVE, NONE,
      HR_ACT_CREATE_CALL },
};


static void
test_ac1_stream_active_cancels(void **state)
{
    (void) state;
    RUN(ac1_cancel);
}


static void
test_ac1_deadline_from_at_ms(void **state)
{
    session_t         *s = new_session();
    hr_action_t        acts[HR_ACT_MAX];
    const hr_action_t *arm;
    row_t              r = { HR_EV_ACTIVATED, 1000, 0, 0, 0, 0, 0 };
    hr_event_t         ev = make_event(&r);
    size_t             n;

    (void) state;
    /* read 800 ms late: the deadline still counts from nginx's at_ms */
    n = session_apply(s, &ev, 1800, acts, HR_ACT_MAX);
    arm = find_kind(acts, n, HR_ACT_ARM_TIMER);
    assert_non_null(arm);
    assert_int_equal(arm->timer, HR_TIMER_WATCHDOG);
    assert_int_equal(arm->at_ms, 6000);
    assert_int_equal(count_kind(acts, n, HR_ACT_LOOKUP), 1);
}

/* ---- AC2 + AC4: the fallback call and its record ---- */

static const row_t ac2_timeout[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, HR_ACT_ARM_TIMER, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING,
      HR_ACT_CREATE_CALL, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, HR_ACT_PUBLISH,
      HR_ACT_CREATE_CALL },
};


static void
test_ac2_ac4_timeout_fallback(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac2_timeout);
    assert_int_equal(s->reason, HR_REASON_TIMEOUT);
    assert_int_equal(s->webrtc_failed_at_ms, 5000);
    assert_int_equal(s->call_initiated_at_ms, 5000);
    assert_string_equal(s->call_sid, SID);
    assert_true(s->fallback_recorded);
    assert_int_equal(s->calls_created, 1);
    assert_string_equal(session_state_name(s->state), "phone_fallback_active");
}


/* Activation, contacts (ON_DUTY or NO_PHONE), then the watchdog at 5000:
 * the actions of the expiry in acts, their number returned. */
static size_t
expire_watchdog(session_t *s, int contacts, hr_action_t *acts)
{
    const row_t  setup[] = {
        { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
        { HR_EV_CONTACTS, 20, contacts, 0, HR_ST_WATCHING, NONE, NONE },
    };
    row_t        r = { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, 0, 0, 0 };
    hr_event_t   ev = make_event(&r);

    RUN_ON(s, setup);
    return session_apply(s, &ev, 5000, acts, HR_ACT_MAX);
}


/* AC5: the panel hears of the fallback when it is decided, right after the
 * create-call request has been started (AC2 is not delayed by it), once. */
static void
test_ac5_published_at_the_decision(void **state)
{
    session_t    *s = new_session();
    hr_action_t   acts[HR_ACT_MAX];
    size_t        n;

    (void) state;
    n = expire_watchdog(s, ON_DUTY, acts);
    assert_int_equal(count_kind(acts, n, HR_ACT_PUBLISH), 1);
    assert_true(find_kind(acts, n, HR_ACT_CREATE_CALL)
                < find_kind(acts, n, HR_ACT_PUBLISH));
    assert_string_equal(session_state_name(s->state), "phone_fallback_active");
}


static const row_t ac4_signalling_error[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, HR_ACT_ARM_TIMER, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_STREAM_FAILED, 2000, 0, 0, HR_ST_CALLING, HR_ACT_CREATE_CALL,
      NONE },
    { HR_EV_CALL_CREATED, 2000, 0, 0, HR_ST_RINGING, HR_ACT_RECORD, NONE },
};


static void
test_ac4_signalling_error(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac4_signalling_error);
    assert_int_equal(s->reason, HR_REASON_SIGNALLING_ERROR);
    assert_int_equal(s->webrtc_failed_at_ms, 2000);
    assert_int_equal(s->timers_armed & (1u << HR_TIMER_WATCHDOG), 0);
}


/* PostgreSQL slow: the deadline passes before the phones are known. */
static const row_t ac2_contacts_late[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, HR_ACT_LOOKUP, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_FALLBACK, NONE,
      HR_ACT_CREATE_CALL },
    { HR_EV_CONTACTS, 5200, ON_DUTY, 0, HR_ST_CALLING, HR_ACT_CREATE_CALL,
      NONE },
};


static void
test_ac2_contacts_after_deadline(void **state)
{
    (void) state;
    RUN(ac2_contacts_late);
}


static const row_t ac2_retry[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING,
      HR_ACT_CREATE_CALL, NONE },
    { HR_EV_CALL_REJECTED, 5050, HR_FAIL_NOT_SENT, 0, HR_ST_FALLBACK,
      HR_ACT_ARM_TIMER, HR_ACT_CREATE_CALL },
    { HR_EV_TIMER, 5200, HR_TIMER_RETRY, 0, HR_ST_CALLING, HR_ACT_CREATE_CALL,
      NONE },
    /* a 5xx: the call may exist, so look before creating again */
    { HR_EV_CALL_REJECTED, 5300, HR_FAIL_UNCERTAIN, 0, HR_ST_FALLBACK,
      HR_ACT_ARM_TIMER, HR_ACT_CREATE_CALL },
    { HR_EV_TIMER, 5600, HR_TIMER_RETRY, 0, HR_ST_FALLBACK, HR_ACT_FIND_CALL,
      HR_ACT_CREATE_CALL },
    { HR_EV_CALL_FOUND, 5650, 0, 0, HR_ST_CALLING, HR_ACT_CREATE_CALL, NONE },
    { HR_EV_CALL_REJECTED, 5700, HR_FAIL_REFUSED, 0, HR_ST_CLOSED,
      HR_ACT_ESCALATE, HR_ACT_ARM_TIMER },
};


static void
test_ac2_provider_errors(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac2_retry);
    assert_int_equal(s->timers_armed, 0);
}

/* A failed search for an earlier call is retried after a pause, never
 * dropped (the session would wait for ever) nor repeated at once. */
static const row_t ac2_search_retry[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING,
      HR_ACT_CREATE_CALL, NONE },
    { HR_EV_CALL_REJECTED, 5050, HR_FAIL_UNCERTAIN, 0, HR_ST_FALLBACK,
      HR_ACT_ARM_TIMER, HR_ACT_CREATE_CALL },
    { HR_EV_TIMER, 5200, HR_TIMER_RETRY, 0, HR_ST_FALLBACK, HR_ACT_FIND_CALL,
      HR_ACT_CREATE_CALL },
    { HR_EV_CALL_REJECTED, 5210, HR_FAIL_UNCERTAIN, 0, HR_ST_FALLBACK,
      HR_ACT_ARM_TIMER, HR_ACT_FIND_CALL },
    { HR_EV_TIMER, 5400, HR_TIMER_RETRY, 0, HR_ST_FALLBACK, HR_ACT_FIND_CALL,
      HR_ACT_CREATE_CALL },
    { HR_EV_CALL_REJECTED, 5410, HR_FAIL_NOT_SENT, 0, HR_ST_FALLBACK,
      HR_ACT_ARM_TIMER, HR_ACT_FIND_CALL },
    { HR_EV_TIMER, 5600, HR_TIMER_RETRY, 0, HR_ST_FALLBACK, HR_ACT_FIND_CALL,
      HR_ACT_CREATE_CALL },
    /* the search itself is refused: better a second call than none */
    { HR_EV_CALL_REJECTED, 5610, HR_FAIL_REFUSED, 0, HR_ST_CALLING,
      HR_ACT_CREATE_CALL, HR_ACT_ESCALATE },
    { HR_EV_CALL_CREATED, 5620, 0, 0, HR_ST_RINGING, HR_ACT_RECORD, NONE },
};

/* The budget runs out while the provider cannot even be searched. */
static const row_t ac2_search_budget[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_REJECTED, 5050, HR_FAIL_UNCERTAIN, 0, HR_ST_FALLBACK,
      HR_ACT_ARM_TIMER, NONE },
    { HR_EV_TIMER, 5200, HR_TIMER_RETRY, 0, HR_ST_FALLBACK, HR_ACT_FIND_CALL,
      NONE },
    { HR_EV_CALL_REJECTED, 65000, HR_FAIL_UNCERTAIN, 0, HR_ST_CLOSED,
      HR_ACT_ESCALATE, HR_ACT_ARM_TIMER },
};

/* AC8 after a lost create answer: the search for the call to cancel is
 * retried with a pause, not in a tight loop against a failing provider. */
static const row_t ac8_search_retry[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_STREAM_ACTIVE, 5010, 0, 0, HR_ST_CANCELLING, NONE, NONE },
    { HR_EV_CALL_REJECTED, 5050, HR_FAIL_UNCERTAIN, 0, HR_ST_CANCELLING,
      HR_ACT_ARM_TIMER, HR_ACT_FIND_CALL },
    { HR_EV_TIMER, 5200, HR_TIMER_RETRY, 0, HR_ST_CANCELLING,
      HR_ACT_FIND_CALL, HR_ACT_CREATE_CALL },
    { HR_EV_CALL_REJECTED, 5210, HR_FAIL_UNCERTAIN, 0, HR_ST_CANCELLING,
      HR_ACT_ARM_TIMER, HR_ACT_FIND_CALL },
    { HR_EV_TIMER, 5400, HR_TIMER_RETRY, 0, HR_ST_CANCELLING,
      HR_ACT_FIND_CALL, NONE },
    { HR_EV_CALL_FOUND, 5410, 1, 0, HR_ST_CANCELLING, HR_ACT_CANCEL_CALL,
      HR_ACT_CREATE_CALL },
};


static void
test_ac2_search_errors(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac2_search_retry);
    assert_int_equal(s->calls_created, 1);
    RUN(ac2_search_budget);
    RUN(ac8_search_retry);
}

/* ---- AC3 + AC7: routing and the supervisor fallback chain ---- */

static void
test_ac3_routing(void **state)
{
    static const struct {
        int         contacts;
        int         ndial;
        hr_leg_t    first;
        const char *first_phone;
    } cases[] = {
        { ON_DUTY, 2, HR_LEG_OPERATOR, "+15550000101" },
        { OFF_DUTY, 1, HR_LEG_SUPERVISOR, "+15550000201" },
    };
    size_t i;

    (void) state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        session_t  *s = new_session();
        const row_t rows[] = {
            { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
            { HR_EV_CONTACTS, 20, cases[i].contacts, 0, HR_ST_WATCHING, NONE,
              NONE },
        };

        RUN_ON(s, rows);
        assert_int_equal(s->ndial, cases[i].ndial);
        assert_int_equal(s->dial[0].leg, cases[i].first);
        assert_string_equal(s->dial[0].phone, cases[i].first_phone);
        assert_string_equal(s->dial[s->ndial - 1].phone, "+15550000201");
    }
}


static const row_t ac7_chain[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING,
      HR_ACT_PREPARE_DIAL, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_CALL_STATUS, 7000, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED,
      HR_ACT_ABANDON_WEBRTC, NONE },
    /* operator busy: the stored step-2 instructions dial the supervisor */
    { HR_EV_DIAL_RESULT, 8000, HR_CALL_BUSY, 1, HR_ST_CONNECTED,
      HR_ACT_RECORD, HR_ACT_ESCALATE },
    /* supervisor does not answer either: the chain is exhausted */
    { HR_EV_DIAL_RESULT, 30000, HR_CALL_NO_ANSWER, 2, HR_ST_CONNECTED,
      HR_ACT_ESCALATE, NONE },
    { HR_EV_CALL_STATUS, 31000, HR_CALL_COMPLETED, 0, HR_ST_CLOSED,
      HR_ACT_FORGET, NONE },
};


static void
test_ac7_operator_then_supervisor(void **state)
{
    (void) state;
    RUN(ac7_chain);
}


static const row_t ac7_answered[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_CALL_STATUS, 7000, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED, NONE,
      NONE },
    /* the operator answers: after that conversation the call ends, it
     * does not go on to the supervisor */
    { HR_EV_CALL_STATUS, 9000, HR_CALL_IN_PROGRESS, HR_LEG_OPERATOR,
      HR_ST_CONNECTED, HR_ACT_END_AFTER_STEP, NONE },
    { HR_EV_CALL_STATUS, 9001, HR_CALL_IN_PROGRESS, HR_LEG_OPERATOR,
      HR_ST_CONNECTED, NONE, HR_ACT_END_AFTER_STEP },
    { HR_EV_DIAL_RESULT, 90000, HR_CALL_COMPLETED, 1, HR_ST_CONNECTED,
      HR_ACT_RECORD, HR_ACT_ESCALATE },
    /* the dial hook may report a step twice (hold redirects) */
    { HR_EV_DIAL_RESULT, 90100, HR_CALL_COMPLETED, 1, HR_ST_CONNECTED, NONE,
      HR_ACT_RECORD },
};


/* Nobody on duty to bridge her to: she hears so, and it is escalated. */
static const row_t ac7_nobody[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, NOBODY_ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING,
      HR_ACT_CREATE_CALL, HR_ACT_ESCALATE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, HR_ACT_ESCALATE },
    { HR_EV_CALL_STATUS, 7000, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED,
      HR_ACT_ESCALATE, NONE },
    { HR_EV_CALL_STATUS, 7100, HR_CALL_COMPLETED, 0, HR_ST_CLOSED,
      HR_ACT_FORGET, HR_ACT_ESCALATE },
};

/* The answer callback was lost: the final one escalates instead. */
static const row_t ac7_nobody_no_answer_callback[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, NOBODY_ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_CALL_STATUS, 7100, HR_CALL_COMPLETED, 0, HR_ST_CLOSED,
      HR_ACT_ESCALATE, NONE },
};


/* She answered, then hung up before any leg of the chain answered. */
static const row_t ac7_hung_up_before_bridge[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_CALL_STATUS, 7000, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED, NONE,
      HR_ACT_ESCALATE },
    { HR_EV_CALL_STATUS, 9000, HR_CALL_COMPLETED, 0, HR_ST_CLOSED,
      HR_ACT_ESCALATE, NONE },
    { HR_EV_DIAL_RESULT, 9001, HR_CALL_CANCELED, 1, HR_ST_CLOSED, NONE,
      HR_ACT_ESCALATE },
};

/* A bridged conversation that ended normally is not escalated. */
static const row_t ac3_bridged_and_over[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_CALL_STATUS, 7000, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED, NONE,
      NONE },
    { HR_EV_CALL_STATUS, 8000, HR_CALL_IN_PROGRESS, HR_LEG_OPERATOR,
      HR_ST_CONNECTED, HR_ACT_END_AFTER_STEP, NONE },
    { HR_EV_DIAL_RESULT, 60000, HR_CALL_COMPLETED, 1, HR_ST_CONNECTED,
      HR_ACT_RECORD, HR_ACT_ESCALATE },
    { HR_EV_CALL_STATUS, 60001, HR_CALL_COMPLETED, 0, HR_ST_CLOSED,
      HR_ACT_FORGET, HR_ACT_ESCALATE },
};


static void
test_ac7_hung_up_before_the_bridge(void **state)
{
    (void) state;
    RUN(ac7_hung_up_before_bridge);
    RUN(ac3_bridged_and_over);
}


static void
test_ac7_nobody_on_duty(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac7_nobody);
    assert_int_equal(s->ndial, 0);
    RUN(ac7_nobody_no_answer_callback);
}


static void
test_ac7_operator_answers(void **state)
{
    (void) state;
    RUN(ac7_answered);
}

/* ---- AC6: the citizen does not answer ---- */

static void
test_ac6_unanswered(void **state)
{
    static const hr_call_status_t outcomes[] = {
        HR_CALL_NO_ANSWER, HR_CALL_BUSY, HR_CALL_FAILED
    };
    size_t i;

    (void) state;
    for (i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++) {
        session_t  *s = new_session();
        const row_t rows[] = {
            { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
            { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
            { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE,
              NONE },
            { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
            { HR_EV_CALL_STATUS, 35000, (int) outcomes[i], 0, HR_ST_CLOSED,
              HR_ACT_ESCALATE, HR_ACT_ABANDON_WEBRTC },
        };

        RUN_ON(s, rows);
        assert_int_equal(s->timers_armed, 0);
        assert_true(s->escalated);
    }
}


/* No callback ever comes: the backstop fetches the status. */
static const row_t ac6_backstop[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, HR_ACT_ARM_TIMER, NONE },
    { HR_EV_TIMER, 45000, HR_TIMER_BACKSTOP, 0, HR_ST_RINGING,
      HR_ACT_FETCH_CALL, NONE },
    { HR_EV_CALL_STATUS, 45010, HR_CALL_NO_ANSWER, 0, HR_ST_CLOSED,
      HR_ACT_ESCALATE, NONE },
};


static void
test_ac6_backstop(void **state)
{
    (void) state;
    RUN(ac6_backstop);
}


/* The fetch says the provider has no such call (404): it is over. */
static const row_t backstop_unknown_call[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_CALL_STATUS, 7000, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED, NONE,
      NONE },
    { HR_EV_UPDATE_FAILED, 8000, HR_ACT_FETCH_CALL, 0, HR_ST_CLOSED,
      HR_ACT_FORGET, NONE },
};


static void
test_backstop_unknown_call(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, backstop_unknown_call);
    assert_int_equal(s->timers_armed, 0);
}

/* ---- AC8: the race at the deadline ---- */

static const row_t ac8_stream_first[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING,
      HR_ACT_CREATE_CALL, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, HR_ACT_RECORD, NONE },
    { HR_EV_STREAM_ACTIVE, 5300, 0, 0, HR_ST_CANCELLING, HR_ACT_CANCEL_CALL,
      HR_ACT_ABANDON_WEBRTC },
    /* answered anyway, after the stream won in stream order: hang up */
    { HR_EV_CALL_STATUS, 5400, HR_CALL_IN_PROGRESS, 0, HR_ST_CANCELLING,
      HR_ACT_HANGUP_CALL, HR_ACT_ABANDON_WEBRTC },
    { HR_EV_CALL_STATUS, 5500, HR_CALL_COMPLETED, 0, HR_ST_WEBRTC_ACTIVE,
      HR_ACT_FORGET, NONE },
};


static void
test_ac8_stream_wins(void **state)
{
    session_t   *s = new_session();
    hr_action_t  acts[HR_ACT_MAX];
    row_t        r = { HR_EV_STREAM_ACTIVE, 5300, 0, 0, 0, 0, 0 };
    hr_event_t   ev;
    size_t       n, i;
    int          cleared = 0;

    (void) state;
    RUN_ON(s, ac8_stream_first);
    assert_false(s->fallback_recorded);
    assert_int_equal(s->timers_armed, 0);

    /* the fallback record is cleared in the same step as the cancel */
    s = new_session();
    run_table(s, ac8_stream_first, 4);
    ev = make_event(&r);
    n = session_apply(s, &ev, 5300, acts, HR_ACT_MAX);
    for (i = 0; i < n; i++) {
        cleared += acts[i].kind == HR_ACT_RECORD
                   && acts[i].record == HR_REC_FALLBACK_CLEARED;
    }
    assert_int_equal(cleared, 1);
}


static const row_t ac8_request_in_flight[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_STREAM_ACTIVE, 5001, 0, 0, HR_ST_CANCELLING, HR_ACT_PUBLISH,
      HR_ACT_CANCEL_CALL },
    { HR_EV_CALL_CREATED, 5002, 0, 0, HR_ST_CANCELLING, HR_ACT_CANCEL_CALL,
      HR_ACT_PUBLISH },
    { HR_EV_CALL_STATUS, 5100, HR_CALL_CANCELED, 0, HR_ST_WEBRTC_ACTIVE,
      HR_ACT_FORGET, HR_ACT_ESCALATE },
};


static void
test_ac8_stream_wins_before_created(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac8_request_in_flight);
    assert_false(s->fallback_recorded);
}


static const row_t ac8_call_first[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_CALL_STATUS, 6000, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED,
      HR_ACT_ABANDON_WEBRTC, NONE },
    { HR_EV_STREAM_ACTIVE, 6001, 0, 0, HR_ST_CONNECTED, NONE,
      HR_ACT_CANCEL_CALL },
};


static void
test_ac8_ac9_call_wins(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac8_call_first);
    /* AC9: nothing of the session stays armed once the call connected but
     * the check of the call's status (its end may go unheard) */
    assert_int_equal(s->timers_armed, 1u << HR_TIMER_BACKSTOP);
    assert_true(s->fallback_recorded);
}


/* The final callback of a connected call is lost: the periodic status
 * check fetches the call, re-arms itself, and the fetched end closes it. */
static const row_t connected_end_unheard[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_CALL_STATUS, 6000, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED,
      NONE, NONE },
    { HR_EV_TIMER, 46000, HR_TIMER_BACKSTOP, 0, HR_ST_CONNECTED,
      HR_ACT_FETCH_CALL, NONE },
    { HR_EV_CALL_STATUS, 46100, HR_CALL_IN_PROGRESS, 0, HR_ST_CONNECTED,
      NONE, HR_ACT_FORGET },
    { HR_EV_TIMER, 86000, HR_TIMER_BACKSTOP, 0, HR_ST_CONNECTED,
      HR_ACT_FETCH_CALL, NONE },
    { HR_EV_CALL_STATUS, 86100, HR_CALL_COMPLETED, 0, HR_ST_CLOSED,
      HR_ACT_FORGET, NONE },
};


static void
test_connected_call_end_unheard_is_fetched(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, connected_end_unheard);
    assert_int_equal(s->timers_armed, 0);
}

/* ---- AC10: early release, never activated ---- */

static const row_t ac10_released[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_RELEASED, 1000, 0, 0, HR_ST_RELEASED, HR_ACT_CANCEL_TIMER,
      HR_ACT_CREATE_CALL },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_RELEASED, NONE,
      HR_ACT_CREATE_CALL },
    { HR_EV_STREAM_FAILED, 6000, 0, 0, HR_ST_RELEASED, NONE,
      HR_ACT_CREATE_CALL },
};


static void
test_ac10_release_before_deadline(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac10_released);
    assert_int_equal(s->timers_armed, 0);
}


static const row_t ac10_never_activated[] = {
    { HR_EV_STREAM_FAILED, 0, 0, 0, HR_ST_NEW, NONE, HR_ACT_ARM_TIMER },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_NEW, NONE,
      HR_ACT_CREATE_CALL },
    { HR_EV_RELEASED, 6000, 0, 0, HR_ST_RELEASED, NONE, HR_ACT_CREATE_CALL },
    /* activated after the release: still never a watchdog */
    { HR_EV_ACTIVATED, 7000, 0, 0, HR_ST_RELEASED, NONE, HR_ACT_ARM_TIMER },
};


static void
test_ac10_never_activated(void **state)
{
    (void) state;
    RUN(ac10_never_activated);
}


static const row_t ac10_release_ringing[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CALLING, NONE, NONE },
    { HR_EV_CALL_CREATED, 5000, 0, 0, HR_ST_RINGING, NONE, NONE },
    { HR_EV_RELEASED, 6000, 0, 0, HR_ST_RELEASED, HR_ACT_CANCEL_CALL, NONE },
    { HR_EV_CALL_STATUS, 6100, HR_CALL_CANCELED, 0, HR_ST_RELEASED,
      HR_ACT_FORGET, HR_ACT_ESCALATE },
};


static void
test_ac10_release_while_ringing(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, ac10_release_ringing);
    assert_int_equal(s->timers_armed, 0);
}

/* ---- duplicates, out of order, recovery ---- */

static const row_t out_of_order[] = {
    { HR_EV_STREAM_ACTIVE, 100, 0, 0, HR_ST_NEW, NONE, NONE },
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WEBRTC_ACTIVE, HR_ACT_FORGET,
      HR_ACT_ARM_TIMER },
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WEBRTC_ACTIVE, NONE, HR_ACT_ARM_TIMER },
};


static void
test_stream_active_before_activated(void **state)
{
    (void) state;
    RUN(out_of_order);
}


static const row_t failed_before_activated[] = {
    { HR_EV_STREAM_FAILED, 100, 0, 0, HR_ST_NEW, NONE, NONE },
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_FALLBACK, HR_ACT_LOOKUP,
      HR_ACT_ARM_TIMER },
    { HR_EV_CONTACTS, 30, ON_DUTY, 0, HR_ST_CALLING, HR_ACT_CREATE_CALL,
      NONE },
};


static void
test_stream_failed_before_activated(void **state)
{
    session_t *s = new_session();

    (void) state;
    RUN_ON(s, failed_before_activated);
    assert_int_equal(s->reason, HR_REASON_SIGNALLING_ERROR);
}


static const row_t duplicate_activation[] = {
    { HR_EV_ACTIVATED, 0, 0, 0, HR_ST_WATCHING, NONE, NONE },
    /* the row says another run finished this session long ago */
    { HR_EV_CONTACTS, 20, STORED_CLOSED, 0, HR_ST_CLOSED, HR_ACT_CANCEL_TIMER,
      HR_ACT_CREATE_CALL },
    { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_CLOSED, NONE,
      HR_ACT_CREATE_CALL },
};


static void
test_row_already_finished(void **state)
{
    (void) state;
    RUN(duplicate_activation);
}


static void
test_redelivered_activation_finds_first(void **state)
{
    session_t   *s = new_session();
    hr_action_t  acts[HR_ACT_MAX];
    row_t        r = { HR_EV_ACTIVATED, 0, 0, 0, 0, 0, 0 };
    hr_event_t   ev = make_event(&r);
    const row_t  rest[] = {
        { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
        { HR_EV_TIMER, 5000, HR_TIMER_WATCHDOG, 0, HR_ST_FALLBACK,
          HR_ACT_FIND_CALL, HR_ACT_CREATE_CALL },
        /* the dead run's call exists: adopt it, never a second one */
        { HR_EV_CALL_FOUND, 5050, 1, 0, HR_ST_RINGING, HR_ACT_RECORD,
          HR_ACT_CREATE_CALL },
    };

    (void) state;
    ev.redelivered = 1;
    session_apply(s, &ev, 10, acts, HR_ACT_MAX);
    RUN_ON(s, rest);
    assert_int_equal(s->calls_created, 1);
}


/* date_created has 1 s resolution: the adopted call's initiation time is
 * never recorded before the fallback decision. */
static void
test_found_call_not_older_than_the_fallback(void **state)
{
    session_t   *s = new_session();
    hr_action_t  acts[HR_ACT_MAX];
    row_t        r = { HR_EV_ACTIVATED, 0, 0, 0, 0, 0, 0 };
    row_t        found = { HR_EV_CALL_FOUND, 4000, 1, 0, 0, 0, 0 };
    hr_event_t   ev = make_event(&r);
    const row_t  rest[] = {
        { HR_EV_CONTACTS, 20, ON_DUTY, 0, HR_ST_WATCHING, NONE, NONE },
        { HR_EV_TIMER, 5300, HR_TIMER_WATCHDOG, 0, HR_ST_FALLBACK,
          HR_ACT_FIND_CALL, HR_ACT_CREATE_CALL },
    };

    (void) state;
    ev.redelivered = 1;
    session_apply(s, &ev, 300, acts, HR_ACT_MAX);
    RUN_ON(s, rest);
    ev = make_event(&found);
    session_apply(s, &ev, 5400, acts, HR_ACT_MAX);
    assert_int_equal(s->state, HR_ST_RINGING);
    assert_int_equal(s->webrtc_failed_at_ms, 5000); /* the deadline */
    assert_int_equal(s->call_initiated_at_ms, 5000);
}


static void
test_stale_activation(void **state)
{
    session_t   *s = new_session();
    hr_action_t  acts[HR_ACT_MAX];
    row_t        r = { HR_EV_ACTIVATED, 0, 0, 0, 0, 0, 0 };
    hr_event_t   ev = make_event(&r);
    size_t       n;

    (void) state;
    n = session_apply(s, &ev, policy.max_event_age_ms + 1, acts, HR_ACT_MAX);
    assert_int_equal(s->state, HR_ST_CLOSED);
    assert_int_equal(count_kind(acts, n, HR_ACT_ARM_TIMER), 0);
}


static void
test_no_verified_phone(void **state)
{
    session_t    *s = new_session();
    hr_action_t   acts[HR_ACT_MAX];
    size_t        n;

    (void) state;
    n = expire_watchdog(s, NO_PHONE, acts);
    assert_int_equal(s->state, HR_ST_CLOSED);
    assert_int_equal(count_kind(acts, n, HR_ACT_ESCALATE), 1);
    assert_int_equal(count_kind(acts, n, HR_ACT_CREATE_CALL), 0);
    /* closed is published once, not preceded by a phone_fallback_active */
    assert_int_equal(count_kind(acts, n, HR_ACT_PUBLISH), 1);
}


static void
test_names(void **state)
{
    static const char *const statuses[] = {
        "queued", "initiated", "ringing", "in-progress", "completed", "busy",
        "no-answer", "failed", "canceled",
    };
    hr_state_t st;
    size_t     i;

    (void) state;
    for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        assert_string_equal(session_call_status_name(
                                session_call_status_parse(statuses[i])),
                            statuses[i]);
    }
    assert_int_equal(session_call_status_parse("answered"), HR_CALL_COMPLETED);
    assert_int_equal(session_call_status_parse("bogus"), HR_CALL_UNKNOWN);
    assert_int_equal(session_state_parse("watching", &st), 0);
    assert_int_equal(st, HR_ST_WATCHING);
    assert_int_equal(session_state_parse("nope", &st), -1);
}

/* ---- invariants over random event orders ---- */

typedef struct {
    session_t  s;
    uint64_t   rng;
    int64_t    now;
    int64_t    timer_at[HR_TIMER_COUNT];
    int        pending_create;   /* a create request awaits its answer */
    int        pending_find;
    int        pending_update;   /* the action kind awaiting an answer */
    int        calls_at_provider;
    hr_call_status_t provider_status;
    int        released;         /* released was applied */
    int        won_before_fallback;
    int        activated;
    int        contacts_sent;
} walk_t;


static uint32_t
rnd(walk_t *w, uint32_t n)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return (uint32_t) (w->rng % n);
}


static void
walk_apply(walk_t *w, hr_event_t *ev)
{
    hr_action_t acts[HR_ACT_MAX];
    hr_state_t  before = w->s.state;
    size_t      n, i;

    ev->at_ms = w->now;
    n = session_apply(&w->s, ev, w->now, acts, HR_ACT_MAX);
    assert_true(n <= HR_ACT_MAX);
    if (ev->kind == HR_EV_RELEASED) {
        w->released = 1;
    }
    if (ev->kind == HR_EV_STREAM_ACTIVE
        && (before == HR_ST_NEW || before == HR_ST_WATCHING))
    {
        w->won_before_fallback = 1;
    }
    for (i = 0; i < n; i++) {
        switch (acts[i].kind) {
        case HR_ACT_ARM_TIMER:
            w->timer_at[acts[i].timer] = acts[i].at_ms;
            break;
        case HR_ACT_CANCEL_TIMER:
            w->timer_at[acts[i].timer] = -1;
            break;
        case HR_ACT_CREATE_CALL:
            /* invariants: one call at most, none after a release or a
             * stream that won, none without an activation */
            assert_int_equal(w->pending_create, 0);
            assert_int_equal(w->pending_find, 0);
            assert_int_equal(w->calls_at_provider, 0);
            assert_false(w->released);
            assert_false(w->won_before_fallback);
            assert_true(w->activated);
            w->pending_create = 1;
            break;
        case HR_ACT_FIND_CALL:
            w->pending_find = 1;
            break;
        case HR_ACT_CANCEL_CALL:
        case HR_ACT_HANGUP_CALL:
        case HR_ACT_FETCH_CALL:
            w->pending_update = (int) acts[i].kind;
            break;
        default:
            break;
        }
    }
    /* the session's own view of its timers matches what it asked for */
    for (i = 0; i < HR_TIMER_COUNT; i++) {
        assert_int_equal((w->s.timers_armed >> i) & 1,
                         w->timer_at[i] >= 0 ? 1 : 0);
    }
}


static int
walk_step(walk_t *w, int draining)
{
    hr_event_t ev;
    int        t, choice;

    memset(&ev, 0, sizeof(ev));
    ev.citizen_id = "cit-1";
    ev.operator_id = "op-1";
    ev.station_id = "st-1";
    ev.call_sid = SID;
    w->now += rnd(w, 3000);
    choice = (int) rnd(w, draining ? 6 : 12);

    if (choice == 0 && w->pending_create) {
        w->pending_create = 0;
        if (rnd(w, 3) == 0) {
            ev.kind = HR_EV_CALL_REJECTED;
            ev.failure = (hr_failure_t) rnd(w, 3);
            if (ev.failure == HR_FAIL_UNCERTAIN && rnd(w, 2)) {
                w->calls_at_provider++; /* created, but the answer was lost */
            }
        } else {
            ev.kind = HR_EV_CALL_CREATED;
            w->calls_at_provider++;
        }
        if (w->calls_at_provider) {
            w->provider_status = HR_CALL_QUEUED;
        }
    } else if (choice == 1 && w->pending_find) {
        w->pending_find = 0;
        ev.kind = HR_EV_CALL_FOUND;
        ev.call_sid = w->calls_at_provider ? SID : "";
    } else if (choice == 2 && w->calls_at_provider
               && w->provider_status < HR_CALL_COMPLETED)
    {
        /* the provider moves the call on; a callback may be lost */
        static const hr_call_status_t any[] = {
            HR_CALL_RINGING,   HR_CALL_IN_PROGRESS, HR_CALL_COMPLETED,
            HR_CALL_NO_ANSWER, HR_CALL_BUSY,        HR_CALL_CANCELED,
        };

        w->provider_status = draining ? HR_CALL_COMPLETED : any[rnd(w, 6)];
        if (rnd(w, 4) == 0) {
            return 0;
        }
        ev.kind = HR_EV_CALL_STATUS;
        ev.call_status = w->provider_status;
    } else if (choice == 3 && w->pending_update) {
        if (w->pending_update == HR_ACT_CANCEL_CALL
            && w->provider_status < HR_CALL_IN_PROGRESS)
        {
            w->provider_status = HR_CALL_CANCELED;
        } else if (w->pending_update == HR_ACT_HANGUP_CALL
                   && w->provider_status < HR_CALL_COMPLETED)
        {
            w->provider_status = HR_CALL_COMPLETED;
        }
        if (rnd(w, 4) == 0) {
            ev.kind = HR_EV_UPDATE_FAILED;
            ev.failed_op = (hr_action_kind_t) w->pending_update;
        } else {
            ev.kind = HR_EV_CALL_STATUS;
            ev.call_status = w->provider_status;
        }
        w->pending_update = 0;
    } else if (choice == 4 && w->activated && !w->contacts_sent) {
        w->contacts_sent = 1;
        ev.kind = HR_EV_CONTACTS;
        ev.citizen_phone = "+15550000001";
        ev.operator_phone = "+15550000101";
        ev.operator_on_duty = (int) rnd(w, 2);
        ev.supervisor_phone = "+15550000201";
        ev.call_sid = NULL;
    } else if (choice == 5) {
        /* the earliest armed timer fires */
        int64_t best = -1;

        ev.kind = HR_EV_TIMER;
        for (t = 0; t < HR_TIMER_COUNT; t++) {
            if (w->timer_at[t] >= 0 && (best < 0 || w->timer_at[t] < best)) {
                best = w->timer_at[t];
                ev.timer = (hr_timer_t) t;
            }
        }
        if (best < 0) {
            return 0;
        }
        if (w->now < best) {
            w->now = best;
        }
        w->timer_at[ev.timer] = -1;
    } else if (!draining && choice >= 6) {
        static const hr_event_kind_t signalling[] = {
            HR_EV_ACTIVATED, HR_EV_ACTIVATED,     HR_EV_STREAM_ACTIVE,
            HR_EV_STREAM_FAILED, HR_EV_RELEASED, HR_EV_DIAL_RESULT,
        };

        ev.kind = signalling[choice - 6];
        if ((ev.kind == HR_EV_RELEASED || ev.kind == HR_EV_STREAM_ACTIVE
             || ev.kind == HR_EV_STREAM_FAILED)
            && rnd(w, 6) != 0)
        {
            ev.kind = HR_EV_DIAL_RESULT; /* keep most walks past the deadline */
        }
        ev.step = 1 + (int) rnd(w, 2);
        ev.call_status = HR_CALL_BUSY;
        if (ev.kind == HR_EV_ACTIVATED && w->s.state == HR_ST_NEW
            && !w->released)
        {
            w->activated = 1;
        }
    } else {
        return 0;
    }
    walk_apply(w, &ev);
    return 1;
}


static void
test_random_invariants(void **state)
{
    uint64_t seed;
    int      i, t;

    (void) state;
    for (seed = 1; seed <= 20000; seed++) {
        walk_t w;

        memset(&w, 0, sizeof(w));
        session_init(&w.s, "s-rand", &policy);
        w.rng = seed * 0x9E3779B97F4A7C15ull;
        for (t = 0; t < HR_TIMER_COUNT; t++) {
            w.timer_at[t] = -1;
        }
        for (i = 0; i < 40; i++) {
            walk_step(&w, 0);
        }
        /* drain: answer everything, fire every timer, end every call */
        for (i = 0; i < 400; i++) {
            walk_step(&w, 1);
        }
        assert_true(w.calls_at_provider <= 1);
        if (w.s.timers_armed != 0) {
            fail_msg("seed %llu ends in %s with timers 0x%x armed",
                     (unsigned long long) seed, session_state_name(w.s.state),
                     w.s.timers_armed);
        }
    }
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ac1_stream_active_cancels),
        cmocka_unit_test(test_ac1_deadline_from_at_ms),
        cmocka_unit_test(test_ac2_ac4_timeout_fallback),
        cmocka_unit_test(test_ac5_published_at_the_decision),
        cmocka_unit_test(test_ac4_signalling_error),
        cmocka_unit_test(test_ac2_contacts_after_deadline),
        cmocka_unit_test(test_ac2_provider_errors),
        cmocka_unit_test(test_ac2_search_errors),
        cmocka_unit_test(test_ac3_routing),
        cmocka_unit_test(test_ac7_operator_then_supervisor),
        cmocka_unit_test(test_ac7_operator_answers),
        cmocka_unit_test(test_ac7_nobody_on_duty),
        cmocka_unit_test(test_ac7_hung_up_before_the_bridge),
        cmocka_unit_test(test_ac6_unanswered),
        cmocka_unit_test(test_ac6_backstop),
        cmocka_unit_test(test_backstop_unknown_call),
        cmocka_unit_test(test_ac8_stream_wins),
        cmocka_unit_test(test_ac8_stream_wins_before_created),
        cmocka_unit_test(test_ac8_ac9_call_wins),
        cmocka_unit_test(test_connected_call_end_unheard_is_fetched),
        cmocka_unit_test(test_ac10_release_before_deadline),
        cmocka_unit_test(test_ac10_never_activated),
        cmocka_unit_test(test_ac10_release_while_ringing),
        cmocka_unit_test(test_stream_active_before_activated),
        cmocka_unit_test(test_stream_failed_before_activated),
        cmocka_unit_test(test_row_already_finished),
        cmocka_unit_test(test_redelivered_activation_finds_first),
        cmocka_unit_test(test_found_call_not_older_than_the_fallback),
        cmocka_unit_test(test_stale_activation),
        cmocka_unit_test(test_no_verified_phone),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_random_invariants),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
