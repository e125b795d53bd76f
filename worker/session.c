/*
 * The session state machine. Pure: every input (event, now) is an argument,
 * every effect is an action in the caller's array. docs/worker-state-machine.md
 * is the table this file implements; keep them in step.
 */

#include <string.h>

#include "session.h"

#define RETRY_FIRST_MS  100
#define RETRY_CAP_MS    2000

typedef struct {
    hr_action_t *out;
    size_t       cap;
    size_t       n;
    hr_action_t  overflow; /* absorbs writes past cap; cap >= HR_ACT_MAX */
} emit_t;


static void
copy_str(char *dst, size_t size, const char *src)
{
    size_t len;

    if (src == NULL) {
        dst[0] = '\0';
        return;
    }
    len = strnlen(src, size - 1);
    memcpy(dst, src, len);
    dst[len] = '\0';
}


static hr_action_t *
emit(emit_t *e, hr_action_kind_t kind)
{
    hr_action_t *a = e->n < e->cap ? &e->out[e->n++] : &e->overflow;

    memset(a, 0, sizeof(*a));
    a->kind = kind;
    return a;
}


static void
emit_record(emit_t *e, hr_record_t record)
{
    emit(e, HR_ACT_RECORD)->record = record;
}


static void
emit_attempt_end(emit_t *e, hr_leg_t leg, const char *sid,
                 hr_call_status_t status)
{
    hr_action_t *a = emit(e, HR_ACT_RECORD);

    a->record = HR_REC_ATTEMPT_END;
    a->leg = leg;
    a->status = status;
    copy_str(a->call_sid, sizeof(a->call_sid), sid);
}


static void
arm(session_t *s, emit_t *e, hr_timer_t timer, int64_t at_ms)
{
    hr_action_t *a = emit(e, HR_ACT_ARM_TIMER);

    a->timer = timer;
    a->at_ms = at_ms;
    s->timers_armed |= 1u << timer;
}


static void
disarm(session_t *s, emit_t *e, hr_timer_t timer)
{
    if (s->timers_armed & (1u << timer)) {
        emit(e, HR_ACT_CANCEL_TIMER)->timer = timer;
        s->timers_armed &= ~(1u << timer);
    }
}


static void
disarm_all(session_t *s, emit_t *e)
{
    int t;

    for (t = 0; t < HR_TIMER_COUNT; t++) {
        disarm(s, e, (hr_timer_t) t);
    }
}


static void
call_action(session_t *s, emit_t *e, hr_action_kind_t kind)
{
    copy_str(emit(e, kind)->call_sid, HR_SID_MAX, s->call_sid);
}


/* Nothing more will happen to this session: no timer may stay armed. */
static void
finish(session_t *s, emit_t *e, hr_state_t final)
{
    disarm_all(s, e);
    s->state = final;
    s->forgotten = 1;
    emit(e, HR_ACT_FORGET);
}


static void
escalate(session_t *s, emit_t *e, hr_escalation_t kind)
{
    emit(e, HR_ACT_ESCALATE)->escalation = kind;
    s->escalated = 1;
}


static int64_t
retry_delay_ms(const session_t *s)
{
    int64_t      delay = RETRY_FIRST_MS;
    uint32_t     h = 2166136261u;
    const char  *p;
    int          i;

    for (i = 1; i < s->create_attempts && delay < RETRY_CAP_MS; i++) {
        delay *= 2;
    }
    if (delay > RETRY_CAP_MS) {
        delay = RETRY_CAP_MS;
    }

    /* Deterministic jitter (FNV-1a of id and attempt): sessions refused in
     * the same instant do not retry in lockstep, and tests stay exact. */
    for (p = s->id; *p; p++) {
        h = (h ^ (uint8_t) *p) * 16777619u;
    }
    h = (h ^ (uint32_t) s->create_attempts) * 16777619u;
    return delay + (int64_t) (h % (uint32_t) (delay / 2 + 1));
}


/* ---- routing (AC3, AC7) ---- */

static void
add_dial(session_t *s, hr_leg_t leg, const char *phone)
{
    if (phone == NULL || phone[0] == '\0' || s->ndial == HR_DIAL_MAX) {
        return;
    }
    if (s->ndial > 0 && strcmp(s->dial[s->ndial - 1].phone, phone) == 0) {
        return;
    }
    s->dial[s->ndial].leg = leg;
    copy_str(s->dial[s->ndial].phone, HR_PHONE_MAX, phone);
    s->ndial++;
}


/* The assigned operator first when on duty with a phone, then the station's
 * duty supervisor; an unavailable operator is skipped, not rung. */
static void
route(session_t *s, const hr_event_t *ev)
{
    s->ndial = 0;
    if (ev->operator_on_duty) {
        add_dial(s, HR_LEG_OPERATOR, ev->operator_phone);
    }
    add_dial(s, HR_LEG_SUPERVISOR, ev->supervisor_phone);
}


/* ---- the fallback (AC2, AC4) ---- */

static void
start_call(session_t *s, emit_t *e, int64_t now_ms)
{
    if (s->citizen_phone[0] == '\0') {
        escalate(s, e, HR_ESC_NO_VERIFIED_PHONE);
        emit_record(e, HR_REC_FALLBACK);
        s->fallback_recorded = 1;
        s->state = HR_ST_CLOSED;
        emit(e, HR_ACT_PUBLISH);
        finish(s, e, HR_ST_CLOSED);
        return;
    }
    if (s->recovered) {
        /* An earlier run may have created the call before it died. */
        s->state = HR_ST_FALLBACK;
        emit(e, HR_ACT_FIND_CALL);
        return;
    }
    if (s->create_attempts == 0) {
        emit(e, HR_ACT_PREPARE_DIAL);
        s->retry_started_ms = now_ms;
    }
    s->create_attempts++;
    s->call_initiated_at_ms = now_ms;
    s->state = HR_ST_CALLING;
    emit(e, HR_ACT_CREATE_CALL);
}


static void
fallback(session_t *s, emit_t *e, hr_reason_t reason, int64_t failed_at_ms,
         int64_t now_ms)
{
    disarm(s, e, HR_TIMER_WATCHDOG);
    s->reason = reason;
    s->webrtc_failed_at_ms = failed_at_ms;
    s->state = HR_ST_FALLBACK;
    if (s->contacts_known) {
        start_call(s, e, now_ms);
    }
    if (s->state == HR_ST_FALLBACK || s->state == HR_ST_CALLING) {
        /* AC5 counts from the decision: the operator learns of the switch
         * now, not after a slow provider has answered; the update with the
         * provider's reference follows when the call exists. */
        emit(e, HR_ACT_PUBLISH);
    }
}


/* The call exists (created now, or found after a restart). */
static void
call_exists(session_t *s, emit_t *e, const char *sid, int64_t now_ms)
{
    s->calls_created++;
    copy_str(s->call_sid, sizeof(s->call_sid), sid);

    switch (s->state) {
    case HR_ST_FALLBACK:
    case HR_ST_CALLING:
        s->state = HR_ST_RINGING;
        emit_record(e, HR_REC_FALLBACK);
        s->fallback_recorded = 1;
        emit(e, HR_ACT_PUBLISH);
        arm(s, e, HR_TIMER_BACKSTOP,
            now_ms + s->policy->ring_timeout_ms
                + s->policy->backstop_margin_ms);
        break;

    case HR_ST_WEBRTC_ACTIVE:
    case HR_ST_CANCELLING:
    case HR_ST_RELEASED:
        /* WebRTC won, or she released, while the request (or the search
         * for an earlier run's call) was in flight: the call must go. */
        if (s->state == HR_ST_WEBRTC_ACTIVE) {
            s->state = HR_ST_CANCELLING;
        }
        s->forgotten = 0;
        call_action(s, e, HR_ACT_CANCEL_CALL);
        arm(s, e, HR_TIMER_BACKSTOP, now_ms + s->policy->backstop_margin_ms);
        break;

    default:
        break;
    }
}


/* The stored row says another run already decided this session. */
static int
adopt_stored(session_t *s, emit_t *e, const hr_event_t *ev, int64_t now_ms)
{
    switch (ev->stored_state) {
    case HR_ST_NEW:
        return 0;

    case HR_ST_WATCHING:
    case HR_ST_FALLBACK:
    case HR_ST_CALLING:
        s->recovered = 1;
        return 0;

    case HR_ST_RINGING:
    case HR_ST_CONNECTED:
        disarm_all(s, e);
        s->state = ev->stored_state;
        s->calls_created = 1;
        s->fallback_recorded = 1;
        copy_str(s->call_sid, sizeof(s->call_sid), ev->call_sid);
        if (s->call_sid[0] == '\0') {
            finish(s, e, HR_ST_CLOSED);
        } else {
            arm(s, e, HR_TIMER_BACKSTOP, now_ms);
        }
        return 1;

    default:
        finish(s, e, ev->stored_state);
        return 1;
    }
}


static void
learn_contacts(session_t *s, const hr_event_t *ev)
{
    copy_str(s->citizen_phone, sizeof(s->citizen_phone), ev->citizen_phone);
    route(s, ev);
    s->contacts_known = 1;
}


/* ---- signalling events (AC1, AC8, AC10) ---- */

static void
on_activated(session_t *s, emit_t *e, const hr_event_t *ev, int64_t now_ms)
{
    const hr_policy_t *p = s->policy;

    if (s->state != HR_ST_NEW) {
        return; /* duplicate, or released before it was activated (AC10) */
    }
    copy_str(s->citizen_id, HR_ID_MAX, ev->citizen_id);
    copy_str(s->operator_id, HR_ID_MAX, ev->operator_id);
    copy_str(s->station_id, HR_ID_MAX, ev->station_id);
    s->activated_at_ms = ev->at_ms;
    s->deadline_ms = ev->at_ms + p->watchdog_ms;
    s->recovered = ev->redelivered ? 1 : 0;
    s->state = HR_ST_WATCHING;

    if (ev->stored_state == HR_ST_NEW) {
        emit_record(e, HR_REC_ACTIVATED);
    }
    if (now_ms - ev->at_ms > p->max_event_age_ms) {
        emit_record(e, HR_REC_CLOSED);
        finish(s, e, HR_ST_CLOSED);
        return;
    }
    if (ev->citizen_phone != NULL) {
        learn_contacts(s, ev);   /* reloaded from PostgreSQL with the row */
        if (adopt_stored(s, e, ev, now_ms)) {
            return;
        }
    } else {
        emit(e, HR_ACT_LOOKUP);
    }

    if (s->early_active) {
        s->state = HR_ST_WEBRTC_ACTIVE;
        emit_record(e, HR_REC_WEBRTC_ACTIVE);
        emit(e, HR_ACT_PUBLISH);
        finish(s, e, HR_ST_WEBRTC_ACTIVE);
        return;
    }
    if (s->early_failed) {
        emit(e, HR_ACT_PUBLISH);
        fallback(s, e, HR_REASON_SIGNALLING_ERROR,
                 s->webrtc_failed_at_ms > ev->at_ms ? s->webrtc_failed_at_ms
                                                    : ev->at_ms,
                 now_ms);
        return;
    }
    arm(s, e, HR_TIMER_WATCHDOG, s->deadline_ms);
    emit(e, HR_ACT_PUBLISH);
}


static void
on_stream_active(session_t *s, emit_t *e, const hr_event_t *ev)
{
    switch (s->state) {
    case HR_ST_NEW:
        s->early_active = 1;
        s->webrtc_active_at_ms = ev->at_ms;
        return;

    case HR_ST_WATCHING:
    case HR_ST_FALLBACK:
        /* Before any call was requested: no side effect beyond the note. */
        s->webrtc_active_at_ms = ev->at_ms;
        s->state = HR_ST_WEBRTC_ACTIVE;
        emit_record(e, HR_REC_WEBRTC_ACTIVE);
        emit(e, HR_ACT_PUBLISH);
        finish(s, e, HR_ST_WEBRTC_ACTIVE);
        return;

    case HR_ST_CALLING:
    case HR_ST_RINGING:
        /* AC8: the stream won before the call connected. */
        s->webrtc_active_at_ms = ev->at_ms;
        disarm_all(s, e);
        s->state = HR_ST_CANCELLING;
        if (s->call_sid[0] != '\0') {
            call_action(s, e, HR_ACT_CANCEL_CALL);
            arm(s, e, HR_TIMER_BACKSTOP,
                ev->at_ms + s->policy->backstop_margin_ms);
        }
        if (s->fallback_recorded) {
            emit_record(e, HR_REC_FALLBACK_CLEARED);
            s->fallback_recorded = 0;
        }
        emit_record(e, HR_REC_WEBRTC_ACTIVE);
        emit(e, HR_ACT_PUBLISH);
        return;

    default:
        return; /* connected first (AC9), or already over */
    }
}


static void
on_stream_failed(session_t *s, emit_t *e, const hr_event_t *ev,
                 int64_t now_ms)
{
    if (s->state == HR_ST_NEW) {
        s->early_failed = 1;
        s->webrtc_failed_at_ms = ev->at_ms;
    } else if (s->state == HR_ST_WATCHING) {
        fallback(s, e, HR_REASON_SIGNALLING_ERROR, ev->at_ms, now_ms);
    }
}


static void
on_released(session_t *s, emit_t *e, int64_t now_ms)
{
    hr_state_t before = s->state;

    switch (before) {
    case HR_ST_NEW:
    case HR_ST_WATCHING:
    case HR_ST_FALLBACK:
    case HR_ST_WEBRTC_ACTIVE:
        disarm_all(s, e);
        s->state = HR_ST_RELEASED;
        emit_record(e, HR_REC_RELEASED);
        if (before != HR_ST_NEW) {
            emit(e, HR_ACT_PUBLISH);
        }
        finish(s, e, HR_ST_RELEASED);
        return;

    case HR_ST_CALLING:
    case HR_ST_RINGING:
    case HR_ST_CANCELLING:
        disarm_all(s, e);
        s->release_wanted = 1;
        s->state = HR_ST_RELEASED;
        if (s->call_sid[0] != '\0') {
            call_action(s, e, HR_ACT_CANCEL_CALL);
            arm(s, e, HR_TIMER_BACKSTOP,
                now_ms + s->policy->backstop_margin_ms);
        }
        emit_record(e, HR_REC_RELEASED);
        emit(e, HR_ACT_PUBLISH);
        return;

    case HR_ST_CONNECTED:
        /* A live call with the police is never cut by an automated event:
         * the operator ends it. The release is recorded. */
        emit_record(e, HR_REC_RELEASED);
        return;

    default:
        return;
    }
}


/* ---- lookups and timers ---- */

static void
on_contacts(session_t *s, emit_t *e, const hr_event_t *ev, int64_t now_ms)
{
    if (s->contacts_known) {
        return;
    }
    learn_contacts(s, ev);
    if ((s->state == HR_ST_WATCHING || s->state == HR_ST_FALLBACK)
        && adopt_stored(s, e, ev, now_ms))
    {
        return;
    }
    if (s->state == HR_ST_FALLBACK) {
        start_call(s, e, now_ms);
    }
}


/* How often a connected call's status is fetched. */
static int64_t
connected_check_ms(const session_t *s)
{
    return s->policy->ring_timeout_ms + s->policy->backstop_margin_ms;
}


static void
on_timer(session_t *s, emit_t *e, const hr_event_t *ev, int64_t now_ms)
{
    if (!(s->timers_armed & (1u << ev->timer))) {
        return; /* cancelled after it was queued */
    }
    s->timers_armed &= ~(1u << ev->timer);

    switch (ev->timer) {
    case HR_TIMER_WATCHDOG:
        if (s->state == HR_ST_WATCHING) {
            fallback(s, e, HR_REASON_TIMEOUT, s->deadline_ms, now_ms);
        }
        return;

    case HR_TIMER_RETRY:
        if (s->state == HR_ST_FALLBACK) {
            start_call(s, e, now_ms);
        } else if ((s->state == HR_ST_CANCELLING
                    || s->state == HR_ST_RELEASED)
                   && s->call_sid[0] == '\0')
        {
            emit(e, HR_ACT_FIND_CALL);
        }
        return;

    case HR_TIMER_BACKSTOP:
        if (s->call_sid[0] != '\0') {
            call_action(s, e, HR_ACT_FETCH_CALL);
        }
        if (s->state == HR_ST_CONNECTED) {
            /* A lost final callback must not keep it open for ever. */
            arm(s, e, HR_TIMER_BACKSTOP, now_ms + connected_check_ms(s));
        }
        return;

    default:
        return;
    }
}


/* ---- provider results ---- */

static void
give_up_calling(session_t *s, emit_t *e)
{
    escalate(s, e, HR_ESC_PROVIDER_REJECTED);
    emit_record(e, HR_REC_FALLBACK);
    s->fallback_recorded = 1;
    s->state = HR_ST_CLOSED;
    emit(e, HR_ACT_PUBLISH);
    finish(s, e, HR_ST_CLOSED);
}


/* The search for an earlier call failed: search again after a pause that
 * grows with the time already lost, within the retry budget. */
static void
search_later(session_t *s, emit_t *e, int64_t now_ms)
{
    int64_t lost;

    if (s->retry_started_ms == 0) {
        s->retry_started_ms = now_ms; /* recovered: no create was tried */
    }
    lost = now_ms - s->retry_started_ms;
    if (lost >= s->policy->retry_budget_ms) {
        if (s->state == HR_ST_FALLBACK) {
            give_up_calling(s, e);
        } else {
            finish(s, e, s->state == HR_ST_CANCELLING ? HR_ST_WEBRTC_ACTIVE
                                                      : HR_ST_RELEASED);
        }
        return;
    }
    arm(s, e, HR_TIMER_RETRY,
        now_ms + (lost / 2 < RETRY_FIRST_MS  ? RETRY_FIRST_MS
                  : lost / 2 > RETRY_CAP_MS ? RETRY_CAP_MS
                                            : lost / 2));
}


static void
on_search_failed(session_t *s, emit_t *e, const hr_event_t *ev,
                 int64_t now_ms)
{
    if (ev->failure == HR_FAIL_REFUSED) {
        /* The search cannot be made at all: a second call is a lesser harm
         * than none. */
        s->recovered = 0;
        start_call(s, e, now_ms);
        return;
    }
    search_later(s, e, now_ms);
}


static void
on_call_rejected(session_t *s, emit_t *e, const hr_event_t *ev,
                 int64_t now_ms)
{
    if (s->state == HR_ST_CANCELLING || s->state == HR_ST_RELEASED) {
        if (ev->failure == HR_FAIL_UNCERTAIN) {
            search_later(s, e, now_ms); /* a call may ring: find, cancel */
        } else {
            finish(s, e, s->state == HR_ST_CANCELLING ? HR_ST_WEBRTC_ACTIVE
                                                      : HR_ST_RELEASED);
        }
        return;
    }
    if (s->state == HR_ST_FALLBACK) {
        /* Nothing else is in flight here: the search itself failed. */
        on_search_failed(s, e, ev, now_ms);
        return;
    }
    if (s->state != HR_ST_CALLING) {
        return;
    }
    if (ev->failure == HR_FAIL_REFUSED
        || now_ms - s->retry_started_ms >= s->policy->retry_budget_ms)
    {
        give_up_calling(s, e);
        return;
    }
    if (ev->failure == HR_FAIL_UNCERTAIN) {
        s->recovered = 1;
    }
    s->state = HR_ST_FALLBACK;
    arm(s, e, HR_TIMER_RETRY, now_ms + retry_delay_ms(s));
}


static void
on_call_found(session_t *s, emit_t *e, const hr_event_t *ev, int64_t now_ms)
{
    if (ev->call_sid != NULL && ev->call_sid[0] != '\0') {
        if (s->call_sid[0] == '\0') {
            if (ev->at_ms > 0) {
                /* The provider's time, to the second: the call cannot be
                 * older than the fallback decision within that second. */
                s->call_initiated_at_ms = ev->at_ms > s->webrtc_failed_at_ms
                                              ? ev->at_ms
                                              : s->webrtc_failed_at_ms;
            }
            call_exists(s, e, ev->call_sid, now_ms);
        }
        return;
    }
    s->recovered = 0;
    switch (s->state) {
    case HR_ST_FALLBACK:
        start_call(s, e, now_ms);
        return;
    case HR_ST_CANCELLING:
        finish(s, e, HR_ST_WEBRTC_ACTIVE);
        return;
    case HR_ST_RELEASED:
        finish(s, e, HR_ST_RELEASED);
        return;
    default:
        return;
    }
}


static void on_leg_status(session_t *s, emit_t *e, const hr_event_t *ev);


static int
is_final(hr_call_status_t st)
{
    return st == HR_CALL_COMPLETED || st == HR_CALL_BUSY
           || st == HR_CALL_NO_ANSWER || st == HR_CALL_FAILED
           || st == HR_CALL_CANCELED;
}


static void
close_call(session_t *s, emit_t *e, hr_call_status_t st, hr_state_t final)
{
    disarm_all(s, e);
    emit_attempt_end(e, HR_LEG_CITIZEN, s->call_sid, st);
    if (final == HR_ST_CLOSED) {
        s->state = HR_ST_CLOSED;
        emit_record(e, HR_REC_CLOSED);
        emit(e, HR_ACT_PUBLISH);
    }
    finish(s, e, final);
}


static void
on_ringing_status(session_t *s, emit_t *e, hr_call_status_t st,
                  int64_t now_ms)
{
    if ((st == HR_CALL_IN_PROGRESS || st == HR_CALL_COMPLETED)
        && s->ndial == 0)
    {
        /* AC7: nobody on duty to bridge her to; she only hears so. */
        escalate(s, e, HR_ESC_BRIDGE_FAILED);
    }
    if (st == HR_CALL_IN_PROGRESS) {
        /* AC9: the phone bridge won; WebRTC is abandoned, timers freed
         * but the one that checks the call in case its end goes unheard. */
        disarm_all(s, e);
        arm(s, e, HR_TIMER_BACKSTOP, now_ms + connected_check_ms(s));
        s->state = HR_ST_CONNECTED;
        emit_record(e, HR_REC_CONNECTED);
        emit(e, HR_ACT_PUBLISH);
        emit(e, HR_ACT_ABANDON_WEBRTC);
        return;
    }
    if (st == HR_CALL_COMPLETED) {
        /* Answered and over; the in-progress callback never came. */
        emit(e, HR_ACT_ABANDON_WEBRTC);
        close_call(s, e, st, HR_ST_CLOSED);
        return;
    }
    if (is_final(st)) {
        /* AC6: the citizen did not answer within the ring timeout. */
        emit_attempt_end(e, HR_LEG_CITIZEN, s->call_sid, st);
        escalate(s, e, HR_ESC_CITIZEN_UNANSWERED);
        disarm_all(s, e);
        s->state = HR_ST_CLOSED;
        emit_record(e, HR_REC_CLOSED);
        emit(e, HR_ACT_PUBLISH);
        finish(s, e, HR_ST_CLOSED);
        return;
    }
    if (!(s->timers_armed & (1u << HR_TIMER_BACKSTOP))) {
        arm(s, e, HR_TIMER_BACKSTOP, now_ms + s->policy->backstop_margin_ms);
    }
}


static void
on_call_status(session_t *s, emit_t *e, const hr_event_t *ev, int64_t now_ms)
{
    hr_call_status_t st = ev->call_status;

    if (ev->leg != HR_LEG_CITIZEN) {
        on_leg_status(s, e, ev);
        return;
    }
    if (s->forgotten || s->call_sid[0] == '\0'
        || (ev->call_sid != NULL && ev->call_sid[0] != '\0'
            && strcmp(ev->call_sid, s->call_sid) != 0))
    {
        return;
    }

    switch (s->state) {
    case HR_ST_RINGING:
        on_ringing_status(s, e, st, now_ms);
        return;

    case HR_ST_CONNECTED:
        if (is_final(st)) {
            if (s->dial_bridged == 0 && !s->escalated) {
                /* She hung up, or was cut off, before anyone answered:
                 * somebody must call her back. */
                escalate(s, e, HR_ESC_BRIDGE_FAILED);
            }
            close_call(s, e, st, HR_ST_CLOSED);
        }
        return;

    case HR_ST_CANCELLING:
    case HR_ST_RELEASED:
        if (st == HR_CALL_IN_PROGRESS) {
            /* Answered after the stream won (stream order decides, AC8),
             * or after she released: end the call. */
            call_action(s, e, HR_ACT_HANGUP_CALL);
        } else if (is_final(st)) {
            close_call(s, e, st, s->state == HR_ST_CANCELLING
                                     ? HR_ST_WEBRTC_ACTIVE
                                     : HR_ST_RELEASED);
        } else if (!(s->timers_armed & (1u << HR_TIMER_BACKSTOP))) {
            arm(s, e, HR_TIMER_BACKSTOP,
                now_ms + s->policy->backstop_margin_ms);
        }
        return;

    default:
        return;
    }
}


static int
dial_step_of(const session_t *s, hr_leg_t leg)
{
    int i;

    for (i = 0; i < s->ndial; i++) {
        if (s->dial[i].leg == leg) {
            return i + 1;
        }
    }
    return 0;
}


/* A bridge leg answered: once that conversation ends the citizen's call
 * must end too, not go on to the next number of the chain. */
static void
on_leg_status(session_t *s, emit_t *e, const hr_event_t *ev)
{
    int step = dial_step_of(s, ev->leg);

    if (step == 0 || ev->call_status != HR_CALL_IN_PROGRESS
        || (s->dial_bridged & (1u << step)))
    {
        return;
    }
    s->dial_bridged |= 1u << step;
    emit(e, HR_ACT_END_AFTER_STEP)->step = step;
}


static void
on_dial_result(session_t *s, emit_t *e, const hr_event_t *ev)
{
    hr_call_status_t st = ev->call_status;
    hr_leg_t         leg;

    /* The dial hook may report a step more than once (hold redirects). */
    if (ev->step < 1 || ev->step > s->ndial
        || (s->dial_reported & (1u << ev->step)))
    {
        return;
    }
    s->dial_reported |= 1u << ev->step;
    leg = s->dial[ev->step - 1].leg;
    emit_attempt_end(e, leg, ev->call_sid, st);

    /* AC7: the next step (already stored) dials the supervisor; only when
     * the chain is exhausted is the bridge failure escalated. */
    if (st != HR_CALL_COMPLETED && ev->step == s->ndial) {
        escalate(s, e, HR_ESC_BRIDGE_FAILED);
    }
}


static void
on_update_failed(session_t *s, emit_t *e, const hr_event_t *ev,
                 int64_t now_ms)
{
    if (s->call_sid[0] == '\0' || s->forgotten) {
        return;
    }
    if (ev->failed_op == HR_ACT_FETCH_CALL && ev->failure == HR_FAIL_REFUSED) {
        /* The provider does not know the call (404): it is over. */
        hr_event_t gone = *ev;

        gone.kind = HR_EV_CALL_STATUS;
        gone.leg = HR_LEG_CITIZEN;
        gone.call_sid = NULL;
        gone.call_status = HR_CALL_FAILED;
        on_call_status(s, e, &gone, now_ms);
        return;
    }
    if (ev->failure == HR_FAIL_REFUSED) {
        /* A cancel or hang-up of a call that already ended (21220): ask
         * how it ended. */
        call_action(s, e, HR_ACT_FETCH_CALL);
        return;
    }
    if (ev->failed_op == HR_ACT_CANCEL_CALL
        && (s->state == HR_ST_CANCELLING || s->state == HR_ST_RELEASED))
    {
        call_action(s, e, HR_ACT_HANGUP_CALL); /* ends any live state */
        return;
    }
    if (!(s->timers_armed & (1u << HR_TIMER_BACKSTOP))) {
        arm(s, e, HR_TIMER_BACKSTOP, now_ms + s->policy->backstop_margin_ms);
    }
}


/* ---- entry points ---- */

void
session_init(session_t *s, const char *id, const hr_policy_t *policy)
{
    memset(s, 0, sizeof(*s));
    s->policy = policy;
    copy_str(s->id, sizeof(s->id), id);
}


size_t
session_apply(session_t *s, const hr_event_t *ev, int64_t now_ms,
              hr_action_t *out, size_t cap)
{
    emit_t e = { out, cap, 0, { 0 } };

    switch (ev->kind) {
    case HR_EV_ACTIVATED:
        on_activated(s, &e, ev, now_ms);
        break;
    case HR_EV_STREAM_ACTIVE:
        on_stream_active(s, &e, ev);
        break;
    case HR_EV_STREAM_FAILED:
        on_stream_failed(s, &e, ev, now_ms);
        break;
    case HR_EV_RELEASED:
        on_released(s, &e, now_ms);
        break;
    case HR_EV_CONTACTS:
        on_contacts(s, &e, ev, now_ms);
        break;
    case HR_EV_TIMER:
        on_timer(s, &e, ev, now_ms);
        break;
    case HR_EV_CALL_CREATED:
        if (s->call_sid[0] == '\0') {
            if (ev->at_ms > 0) {
                s->call_initiated_at_ms = ev->at_ms;
            }
            call_exists(s, &e, ev->call_sid, now_ms);
        }
        break;
    case HR_EV_CALL_REJECTED:
        on_call_rejected(s, &e, ev, now_ms);
        break;
    case HR_EV_CALL_FOUND:
        on_call_found(s, &e, ev, now_ms);
        break;
    case HR_EV_CALL_STATUS:
        on_call_status(s, &e, ev, now_ms);
        break;
    case HR_EV_DIAL_RESULT:
        on_dial_result(s, &e, ev);
        break;
    case HR_EV_UPDATE_FAILED:
        on_update_failed(s, &e, ev, now_ms);
        break;
    }
    return e.n;
}


/* ---- names ---- */

const char *
session_state_name(hr_state_t st)
{
    switch (st) {
    case HR_ST_NEW:
        return "new";
    case HR_ST_WATCHING:
        return "watching";
    case HR_ST_WEBRTC_ACTIVE:
    case HR_ST_CANCELLING:
        return "webrtc_active";
    case HR_ST_FALLBACK:
    case HR_ST_CALLING:
    case HR_ST_RINGING:
        return "phone_fallback_active";
    case HR_ST_CONNECTED:
        return "phone_connected";
    case HR_ST_RELEASED:
        return "released";
    case HR_ST_CLOSED:
        return "closed";
    }
    return "closed";
}


int
session_state_parse(const char *text, hr_state_t *out)
{
    static const struct {
        const char *name;
        hr_state_t  st;
    } names[] = {
        { "watching", HR_ST_WATCHING },
        { "webrtc_active", HR_ST_WEBRTC_ACTIVE },
        { "phone_fallback_active", HR_ST_RINGING },
        { "phone_connected", HR_ST_CONNECTED },
        { "released", HR_ST_RELEASED },
        { "closed", HR_ST_CLOSED },
    };
    size_t i;

    for (i = 0; text != NULL && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].st;
            return 0;
        }
    }
    return -1;
}


const char *
session_mode_name(const session_t *s)
{
    switch (s->state) {
    case HR_ST_FALLBACK:
    case HR_ST_CALLING:
    case HR_ST_RINGING:
    case HR_ST_CONNECTED:
        return "phone";
    case HR_ST_CLOSED:
    case HR_ST_RELEASED:
        return s->calls_created > 0 || s->reason != HR_REASON_NONE ? "phone"
                                                                   : "webrtc";
    default:
        return "webrtc";
    }
}


const char *
session_reason_name(hr_reason_t r)
{
    switch (r) {
    case HR_REASON_TIMEOUT:
        return "timeout";
    case HR_REASON_SIGNALLING_ERROR:
        return "signalling_error";
    default:
        return NULL;
    }
}


const char *
session_leg_name(hr_leg_t leg)
{
    switch (leg) {
    case HR_LEG_OPERATOR:
        return "operator";
    case HR_LEG_SUPERVISOR:
        return "supervisor";
    default:
        return "citizen";
    }
}


static const char *const call_status_names[] = {
    [HR_CALL_UNKNOWN] = "unknown",
    [HR_CALL_QUEUED] = "queued",
    [HR_CALL_INITIATED] = "initiated",
    [HR_CALL_RINGING] = "ringing",
    [HR_CALL_IN_PROGRESS] = "in-progress",
    [HR_CALL_COMPLETED] = "completed",
    [HR_CALL_BUSY] = "busy",
    [HR_CALL_NO_ANSWER] = "no-answer",
    [HR_CALL_FAILED] = "failed",
    [HR_CALL_CANCELED] = "canceled",
};


const char *
session_call_status_name(hr_call_status_t st)
{
    return call_status_names[st];
}


hr_call_status_t
session_call_status_parse(const char *text)
{
    size_t i;

    if (text == NULL) {
        return HR_CALL_UNKNOWN;
    }
    /* DialCallStatus says "answered" for a bridged leg that is still up. */
    if (strcmp(text, "answered") == 0) {
        return HR_CALL_COMPLETED;
    }
    for (i = 1; i < sizeof(call_status_names) / sizeof(call_status_names[0]);
         i++)
    {
        if (strcmp(text, call_status_names[i]) == 0) {
            return (hr_call_status_t) i;
        }
    }
    return HR_CALL_UNKNOWN;
}


const char *
session_escalation_name(hr_escalation_t e)
{
    switch (e) {
    case HR_ESC_CITIZEN_UNANSWERED:
        return "citizen_unanswered";
    case HR_ESC_BRIDGE_FAILED:
        return "bridge_failed";
    case HR_ESC_PROVIDER_REJECTED:
        return "provider_rejected";
    default:
        return "no_verified_phone";
    }
}


int
session_is_open(const session_t *s)
{
    return !s->forgotten;
}
