/*
 * The per-session state machine: (session, event, now) -> (session', actions).
 *
 * Pure: no I/O, no clock, no malloc. Every rule of AC1-AC10 lives in
 * session.c; the adapters only execute the actions it returns. The
 * transition table is in docs/worker-state-machine.md.
 */

#ifndef HAMRAHI_SESSION_H
#define HAMRAHI_SESSION_H

#include <stddef.h>
#include <stdint.h>

#define HR_ID_MAX     64
#define HR_PHONE_MAX  20
#define HR_SID_MAX    64
#define HR_ACT_MAX    16   /* enough for any single transition */
#define HR_DIAL_MAX   2    /* operator, then the duty supervisor */


typedef enum {
    HR_ST_NEW = 0,       /* never activated: no watchdog may run (AC10) */
    HR_ST_WATCHING,      /* watchdog armed */
    HR_ST_WEBRTC_ACTIVE, /* stream confirmed: no fallback, ever */
    HR_ST_FALLBACK,      /* fallback decided, call not requested yet */
    HR_ST_CALLING,       /* create-call request in flight */
    HR_ST_RINGING,       /* call created, citizen not answered yet */
    HR_ST_CANCELLING,    /* WebRTC won the race: cancelling the call (AC8) */
    HR_ST_CONNECTED,     /* citizen answered: phone bridge (AC9) */
    HR_ST_RELEASED,      /* early release (AC10) */
    HR_ST_CLOSED         /* call over, or nothing more to do */
} hr_state_t;

typedef enum {
    HR_EV_ACTIVATED,     /* citizen_id, operator_id, station_id */
    HR_EV_STREAM_ACTIVE,
    HR_EV_STREAM_FAILED, /* reason */
    HR_EV_RELEASED,
    HR_EV_CONTACTS,      /* directory lookup (and the stored row's state) */
    HR_EV_TIMER,         /* timer */
    HR_EV_CALL_CREATED,  /* call_sid; at_ms = when the request was sent */
    HR_EV_CALL_REJECTED, /* provider error; failure says what is known */
    HR_EV_CALL_FOUND,    /* recovery search result: call_sid or "" */
    HR_EV_CALL_STATUS,   /* leg, call_sid, call_status */
    HR_EV_DIAL_RESULT,   /* step, call_sid (the dialled leg), call_status */
    HR_EV_UPDATE_FAILED  /* cancel/hang up/fetch refused or unanswered */
} hr_event_kind_t;

typedef enum {
    HR_TIMER_WATCHDOG,   /* the 5 s of AC1 */
    HR_TIMER_RETRY,      /* next create-call attempt after a provider error */
    HR_TIMER_BACKSTOP,   /* no callback came: fetch the call's status */
    HR_TIMER_COUNT
} hr_timer_t;

typedef enum {
    HR_CALL_UNKNOWN = 0,
    HR_CALL_QUEUED,
    HR_CALL_INITIATED,
    HR_CALL_RINGING,
    HR_CALL_IN_PROGRESS,
    HR_CALL_COMPLETED,
    HR_CALL_BUSY,
    HR_CALL_NO_ANSWER,
    HR_CALL_FAILED,
    HR_CALL_CANCELED
} hr_call_status_t;

typedef enum {
    HR_LEG_CITIZEN,
    HR_LEG_OPERATOR,
    HR_LEG_SUPERVISOR
} hr_leg_t;

typedef enum {
    HR_REASON_NONE,
    HR_REASON_TIMEOUT,
    HR_REASON_SIGNALLING_ERROR
} hr_reason_t;

typedef enum {
    HR_FAIL_REFUSED,     /* the provider said no for good (4xx): no retry */
    HR_FAIL_NOT_SENT,    /* nothing reached the provider, or 429: retry */
    HR_FAIL_UNCERTAIN    /* 5xx or timeout: the call may exist, look first */
} hr_failure_t;

typedef enum {
    HR_ESC_CITIZEN_UNANSWERED,
    HR_ESC_BRIDGE_FAILED,
    HR_ESC_PROVIDER_REJECTED,
    HR_ESC_NO_VERIFIED_PHONE
} hr_escalation_t;

typedef enum {
    HR_REC_ACTIVATED,        /* upsert the row: activation and deadline */
    HR_REC_WEBRTC_ACTIVE,    /* webrtc_active_at */
    HR_REC_FALLBACK,         /* AC4 fields + citizen call_attempts row */
    HR_REC_FALLBACK_CLEARED, /* AC8: WebRTC won, no fallback record stays */
    HR_REC_CONNECTED,        /* call_connected_at */
    HR_REC_ATTEMPT_END,      /* leg's outcome (call_sid of the action) */
    HR_REC_RELEASED,
    HR_REC_CLOSED
} hr_record_t;

typedef enum {
    HR_ACT_ARM_TIMER,     /* timer, at_ms */
    HR_ACT_CANCEL_TIMER,  /* timer */
    HR_ACT_LOOKUP,        /* fetch phones and duty roster -> HR_EV_CONTACTS */
    HR_ACT_RECORD,        /* record, leg, status */
    HR_ACT_PREPARE_DIAL,  /* store the later dial steps' instructions */
    HR_ACT_CREATE_CALL,   /* -> HR_EV_CALL_CREATED / HR_EV_CALL_REJECTED */
    HR_ACT_FIND_CALL,     /* a call already created? -> HR_EV_CALL_FOUND */
    HR_ACT_CANCEL_CALL,
    HR_ACT_HANGUP_CALL,
    HR_ACT_FETCH_CALL,    /* -> HR_EV_CALL_STATUS */
    HR_ACT_PUBLISH,       /* session_update with the current state */
    HR_ACT_ESCALATE,      /* escalation (row + supervisor panel update) */
    HR_ACT_ABANDON_WEBRTC,
    HR_ACT_END_AFTER_STEP, /* step's leg answered: when it ends, hang up */
    HR_ACT_FORGET         /* session over: free its keys and memory */
} hr_action_kind_t;

typedef struct {
    hr_action_kind_t  kind;
    int               step;
    hr_timer_t        timer;
    int64_t           at_ms;
    hr_record_t       record;
    hr_leg_t          leg;
    hr_call_status_t  status;
    hr_escalation_t   escalation;
    char              call_sid[HR_SID_MAX];
} hr_action_t;

typedef struct {
    hr_event_kind_t   kind;
    int64_t           at_ms;        /* when it happened (nginx receive time) */
    int               redelivered;  /* seen before: the outcome may exist */
    const char       *citizen_id;
    const char       *operator_id;
    const char       *station_id;
    const char       *reason;
    /* HR_EV_CONTACTS */
    const char       *citizen_phone;
    const char       *operator_phone;
    int               operator_on_duty;
    const char       *supervisor_phone;
    hr_state_t        stored_state; /* HR_ST_NEW when no row existed */
    /* timers and the provider */
    hr_timer_t        timer;
    hr_failure_t      failure;
    hr_leg_t          leg;
    int               step;
    const char       *call_sid;
    hr_call_status_t  call_status;
    hr_action_kind_t  failed_op;    /* HR_EV_UPDATE_FAILED: which request */
} hr_event_t;

typedef struct {
    int64_t  watchdog_ms;       /* AC1: 5000 */
    int64_t  ring_timeout_ms;   /* AC6: the citizen's ring timeout */
    int64_t  backstop_margin_ms;
    int64_t  max_event_age_ms;  /* older activations are history, not SOS */
    int64_t  retry_budget_ms;   /* keep retrying a refused create this long */
} hr_policy_t;

typedef struct {
    hr_leg_t  leg;
    char      phone[HR_PHONE_MAX];
} hr_dial_t;

typedef struct {
    const hr_policy_t *policy;
    hr_state_t         state;
    char               id[HR_ID_MAX];
    char               citizen_id[HR_ID_MAX];
    char               operator_id[HR_ID_MAX];
    char               station_id[HR_ID_MAX];
    char               citizen_phone[HR_PHONE_MAX];
    hr_dial_t          dial[HR_DIAL_MAX];   /* the bridge chain (AC3, AC7) */
    int                ndial;
    char               call_sid[HR_SID_MAX];
    hr_reason_t        reason;
    int64_t            activated_at_ms;
    int64_t            deadline_ms;
    int64_t            webrtc_active_at_ms;
    int64_t            webrtc_failed_at_ms;
    int64_t            call_initiated_at_ms;
    int64_t            retry_started_ms;
    int                create_attempts;
    int                calls_created;       /* invariant: never above 1 */
    unsigned           timers_armed;        /* bit per hr_timer_t */
    unsigned           dial_reported;       /* bit per dial step with a result */
    unsigned           dial_bridged;        /* bit per dial step answered */
    unsigned           contacts_known:1;
    unsigned           recovered:1;         /* a call may already exist */
    unsigned           early_active:1;      /* stream_active before activated */
    unsigned           early_failed:1;      /* stream_failed before activated */
    unsigned           release_wanted:1;    /* released while calling */
    unsigned           fallback_recorded:1;
    unsigned           escalated:1;
    unsigned           forgotten:1;
} session_t;


void session_init(session_t *s, const char *id, const hr_policy_t *policy);

/*
 * Apply one event at now_ms; write at most cap actions to out, in the order
 * they must be executed, and return how many. cap >= HR_ACT_MAX is always
 * enough.
 */
size_t session_apply(session_t *s, const hr_event_t *ev, int64_t now_ms,
                     hr_action_t *out, size_t cap);

/* The panel's vocabulary (docs/contracts.md): watching, webrtc_active, ... */
const char *session_state_name(hr_state_t st);
const char *session_mode_name(const session_t *s);
const char *session_reason_name(hr_reason_t r);
const char *session_leg_name(hr_leg_t leg);
const char *session_call_status_name(hr_call_status_t st);
const char *session_escalation_name(hr_escalation_t e);
hr_call_status_t session_call_status_parse(const char *text);
int session_state_parse(const char *text, hr_state_t *out);
int session_is_open(const session_t *s);


#endif /* HAMRAHI_SESSION_H */
