#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <jansson.h>

#include "engine.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "records.h"
#include "strmap.h"
#include "timers.h"

#define INTAKE_CHECK_MAX_MS  2000     /* a redelivery check never stalls more */
#define LOOKUP_RETRY_MS      1000
#define CONTACTS_PATIENCE_MS 200      /* then the directory copy routes */
#define SWEEP_EVERY_MS       60000
#define KEEP_FINISHED_MS     600000   /* tombstones absorb late duplicates */
#define KEEP_UNACTIVATED_MS  3600000
#define TWIML_TTL            "3600"
#define SIGNALLING_MAXLEN    "100000"

typedef struct esession esession_t;

typedef struct {
    timer_entry_t  entry;   /* first: the timer callback casts back */
    esession_t    *es;
    hr_timer_t     kind;
} etimer_t;

struct esession {
    session_t   s;
    engine_t   *eng;
    etimer_t    timers[HR_TIMER_COUNT];
    etimer_t    contacts_wait;   /* PostgreSQL slow: use the directory */
    int64_t     created_ms;
    int64_t     forgot_at_ms;
};

/* A stream entry waiting its turn: entries apply in stream order, and a
 * redelivered one waits until PostgreSQL says whether it was processed. */
typedef struct intake intake_t;

struct intake {
    intake_t    *next;
    engine_t    *eng;
    event_msg_t  msg;
    int          ready;
    int          processed;
    int          checking;    /* a processed_events query is out */
    int          orphan;      /* applied already; the check frees it */
    int64_t      since_ms;
};

/* Context of an asynchronous request made for one session. */
typedef struct {
    engine_t          *eng;
    char               id[HR_ID_MAX];
    hr_action_kind_t   op;
    int64_t            sent_ms;
    uv_timer_t         retry;
} req_ctx_t;

struct engine {
    uv_loop_t       *loop;
    const config_t  *cf;
    hr_policy_t      policy;
    timers_t         timers;
    store_pg_t      *pg;
    provider_t      *provider;
    rqueue_t        *redis;
    panel_pub_t     *panel;
    stream_t        *stream;
    strmap_t        *sessions;
    strmap_t        *in_flight;     /* stream ids taken, not yet acked */
    intake_t        *intake_head;
    intake_t        *intake_tail;
    uv_timer_t       intake_timer;
    uv_timer_t       sweep;
    int              open_handles;  /* freed when the last one closed */
    size_t           requests;      /* provider requests and lookups */
    size_t           acks_pending;
    engine_stats_t   stats;
    directory_t     *dir;
};

static void apply(engine_t *eng, esession_t *es, const hr_event_t *ev,
                  const char *stream_id);
static int call_owned_elsewhere(engine_t *eng, const char *sid,
                                const char *session_id);
static void on_contacts_wait(timer_entry_t *entry);


int64_t
engine_clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* ---- sessions ---- */

static void
on_session_timer(timer_entry_t *entry)
{
    etimer_t   *t = (etimer_t *) entry;
    hr_event_t  ev;

    memset(&ev, 0, sizeof(ev));
    ev.kind = HR_EV_TIMER;
    ev.timer = t->kind;
    ev.at_ms = entry->at_ms;
    if (t->kind == HR_TIMER_WATCHDOG) {
        t->es->eng->stats.watchdogs_fired++;
        metrics_watchdog_lateness(engine_clock_ms() - entry->at_ms);
    }
    apply(t->es->eng, t->es, &ev, NULL);
}


static esession_t *
session_get(engine_t *eng, const char *id, int create)
{
    esession_t *es = strmap_get(eng->sessions, id);
    int         i;

    if (es != NULL || !create) {
        return es;
    }
    es = calloc(1, sizeof(*es));
    if (es == NULL) {
        return NULL;
    }
    session_init(&es->s, id, &eng->policy);
    es->eng = eng;
    es->created_ms = engine_clock_ms();
    for (i = 0; i < HR_TIMER_COUNT; i++) {
        es->timers[i].es = es;
        es->timers[i].kind = (hr_timer_t) i;
        es->timers[i].entry.fire = on_session_timer;
    }
    es->contacts_wait.es = es;
    es->contacts_wait.entry.fire = on_contacts_wait;
    if (strmap_put(eng->sessions, id, es) != 0) {
        free(es);
        return NULL;
    }
    return es;
}


static int
keep_session(void *value, void *arg)
{
    esession_t *es = value;
    int64_t     now = *(const int64_t *) arg;
    int         i;

    if (es->s.forgotten ? now - es->forgot_at_ms < KEEP_FINISHED_MS
                        : es->s.state != HR_ST_NEW
                              || now - es->created_ms < KEEP_UNACTIVATED_MS)
    {
        return 1;
    }
    for (i = 0; i < HR_TIMER_COUNT; i++) {
        timers_cancel(&es->eng->timers, &es->timers[i].entry);
    }
    timers_cancel(&es->eng->timers, &es->contacts_wait.entry);
    free(es);
    return 0;
}


static void
sweep_sessions(uv_timer_t *t)
{
    engine_t *eng = t->data;
    int64_t   now = engine_clock_ms();

    strmap_sweep(eng->sessions, keep_session, &now);
}


static req_ctx_t *
req_new(engine_t *eng, const esession_t *es, hr_action_kind_t op)
{
    req_ctx_t *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        return NULL;
    }
    r->eng = eng;
    r->op = op;
    r->sent_ms = engine_clock_ms();
    snprintf(r->id, sizeof(r->id), "%s", es->s.id);
    eng->requests++;
    return r;
}


static void
req_done(req_ctx_t *r)
{
    r->eng->requests--;
    free(r);
}


/* ---- logging ---- */

static const char *
action_name(hr_action_kind_t k)
{
    static const char *const names[] = {
        [HR_ACT_ARM_TIMER] = "arm",        [HR_ACT_CANCEL_TIMER] = "disarm",
        [HR_ACT_LOOKUP] = "lookup",        [HR_ACT_RECORD] = "record",
        [HR_ACT_PREPARE_DIAL] = "prepare_dial",
        [HR_ACT_CREATE_CALL] = "create_call",
        [HR_ACT_FIND_CALL] = "find_call",  [HR_ACT_CANCEL_CALL] = "cancel_call",
        [HR_ACT_HANGUP_CALL] = "hangup_call",
        [HR_ACT_FETCH_CALL] = "fetch_call", [HR_ACT_PUBLISH] = "publish",
        [HR_ACT_ESCALATE] = "escalate",
        [HR_ACT_ABANDON_WEBRTC] = "abandon_webrtc",
        [HR_ACT_END_AFTER_STEP] = "end_after_step",
        [HR_ACT_FORGET] = "forget",
    };

    return names[k];
}


static const char *
event_name(const hr_event_t *ev)
{
    static const char *const names[] = {
        [HR_EV_ACTIVATED] = "activated",
        [HR_EV_STREAM_ACTIVE] = "stream_active",
        [HR_EV_STREAM_FAILED] = "stream_failed",
        [HR_EV_RELEASED] = "released",
        [HR_EV_CONTACTS] = "contacts",
        [HR_EV_TIMER] = "timer",
        [HR_EV_CALL_CREATED] = "call_created",
        [HR_EV_CALL_REJECTED] = "call_rejected",
        [HR_EV_CALL_FOUND] = "call_found",
        [HR_EV_CALL_STATUS] = "call_status",
        [HR_EV_DIAL_RESULT] = "dial_result",
        [HR_EV_UPDATE_FAILED] = "update_failed",
    };
    static const char *const timers[] = { "watchdog", "retry", "backstop" };

    return ev->kind == HR_EV_TIMER ? timers[ev->timer] : names[ev->kind];
}


static void
log_decision(const esession_t *es, const hr_event_t *ev, hr_state_t before,
             const hr_action_t *acts, size_t n)
{
    char   list[256];
    size_t i, len = 0;

    list[0] = '\0';
    for (i = 0; i < n && len < sizeof(list) - 32; i++) {
        if (acts[i].kind == HR_ACT_ARM_TIMER
            || acts[i].kind == HR_ACT_CANCEL_TIMER)
        {
            continue; /* visible in the state and the metrics */
        }
        len += (size_t) snprintf(list + len, sizeof(list) - len, "%s%s",
                                 len ? "," : "", action_name(acts[i].kind));
    }
    if (before == es->s.state && len == 0) {
        return;
    }
    log_line("session=%s event=%s%s%s %s -> %s%s%s", es->s.id,
             event_name(ev),
             ev->kind == HR_EV_CALL_STATUS || ev->kind == HR_EV_DIAL_RESULT
                 ? ":"
                 : "",
             ev->kind == HR_EV_CALL_STATUS || ev->kind == HR_EV_DIAL_RESULT
                 ? session_call_status_name(ev->call_status)
                 : "",
             session_state_name(before), session_state_name(es->s.state),
             len ? " do=" : "", list);
}


/* ---- Redis writes ---- */

static void
twiml_key(char *buf, size_t size, const session_t *s, int step)
{
    snprintf(buf, size, "hamrahi:twiml:%s:%d", s->id, step);
}


static char *
callback_url(const engine_t *eng, const char *path, const session_t *s,
             const char *name, int value_int, const char *value)
{
    char  buf[1024], num[16];
    char *id = curl_easy_escape(NULL, s->id, 0);

    if (id == NULL) {
        return NULL;
    }
    if (value == NULL) {
        snprintf(num, sizeof(num), "%d", value_int);
        value = num;
    }
    snprintf(buf, sizeof(buf), "%s%s?session=%s&%s=%s",
             eng->cf->callback_base_url, path, id, name, value);
    curl_free(id);
    return strdup(buf);
}


/* Instructions run when the citizen answers: dial step 1; the document
 * stored for step N is what the dial hook serves once step N's dial ended:
 * the next number, or a message when the chain is exhausted (AC7). */
static char *
render_step(engine_t *eng, const session_t *s, int step)
{
    provider_t *p = eng->provider;
    char       *action, *status, *doc;

    if (step >= s->ndial) {
        return p->ops->render_say(p, "We could not reach the police operator. "
                                     "Please stay on the line or call the "
                                     "emergency number directly.");
    }
    action = callback_url(eng, "/v1/telephony/dial", s, "step", step + 1,
                          NULL);
    status = callback_url(eng, "/v1/telephony/status", s, "leg", 0,
                          session_leg_name(s->dial[step].leg));
    doc = action && status ? p->ops->render_dial(p, s->dial[step].phone,
                                                 eng->cf->dial_timeout_s,
                                                 action, status)
                           : NULL;
    free(action);
    free(status);
    return doc;
}


static void
prepare_dial(engine_t *eng, const esession_t *es)
{
    char        key[160], *doc;
    const char *argv[5];
    int         step;

    for (step = 1; step <= es->s.ndial; step++) {
        doc = render_step(eng, &es->s, step);
        if (doc == NULL) {
            log_line("session=%s cannot render dial step %d", es->s.id, step);
            continue;
        }
        twiml_key(key, sizeof(key), &es->s, step);
        argv[0] = "SET";
        argv[1] = key;
        argv[2] = doc;
        argv[3] = "EX";
        argv[4] = TWIML_TTL;
        rqueue_push(eng->redis, "twiml", 5, argv);
        free(doc);
    }
}


/* The bridged leg of this step answered: after it, the call ends. */
static void
end_after_step(engine_t *eng, const esession_t *es, int step)
{
    char        key[160], *doc = eng->provider->ops->render_hangup(eng->provider);
    const char *argv[] = { "SET", key, doc, "EX", TWIML_TTL };

    if (doc == NULL) {
        return;
    }
    twiml_key(key, sizeof(key), &es->s, step);
    rqueue_push(eng->redis, "twiml", 5, argv);
    free(doc);
}


static void
forget_keys(engine_t *eng, const esession_t *es)
{
    char        key[160];
    const char *argv[2] = { "DEL", key };
    int         step;

    for (step = 1; step <= es->s.ndial; step++) {
        twiml_key(key, sizeof(key), &es->s, step);
        rqueue_push(eng->redis, "twiml delete", 2, argv);
    }
}


static void
abandon_webrtc(engine_t *eng, const esession_t *es, int64_t now)
{
    char        at[24];
    const char *argv[] = { "XADD", "hamrahi:signalling", "MAXLEN", "~",
                           SIGNALLING_MAXLEN, "*", "type", "abandon",
                           "session_id", es->s.id, "at_ms", at };

    snprintf(at, sizeof(at), "%lld", (long long) now);
    rqueue_push(eng->redis, "signalling abandon", 12, argv);
}


static void
publish_json(engine_t *eng, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    if (text == NULL) {
        log_line("panel: cannot encode an update");
    } else {
        panel_pub_send(eng->panel, text);
        eng->stats.panel_updates++;
    }
    free(text);
    json_decref(doc);
}


static void
publish_state(engine_t *eng, const esession_t *es, int64_t now)
{
    const session_t *s = &es->s;
    const char      *reason = session_reason_name(s->reason);
    json_t          *doc;

    doc = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "session_update",
                    "session_id", s->id, "station_id", s->station_id, "state",
                    session_state_name(s->state), "mode",
                    session_mode_name(s));
    if (doc == NULL) {
        return;
    }
    if (reason != NULL && s->state != HR_ST_WEBRTC_ACTIVE
        && s->state != HR_ST_CANCELLING)
    {
        json_object_set_new(doc, "reason", json_string(reason));
    }
    if (s->call_sid[0] != '\0' && s->state != HR_ST_CANCELLING
        && s->state != HR_ST_WEBRTC_ACTIVE)
    {
        json_object_set_new(doc, "provider_call_ref", json_string(s->call_sid));
    }
    json_object_set_new(doc, "at_ms", json_integer(now));
    publish_json(eng, doc);
}


static void
publish_escalation(engine_t *eng, const esession_t *es, hr_escalation_t kind,
                   int64_t now)
{
    publish_json(eng, json_pack("{s:s, s:s, s:s, s:s, s:I}", "type",
                                "supervisor_escalation", "session_id",
                                es->s.id, "station_id", es->s.station_id,
                                "kind", session_escalation_name(kind), "at_ms",
                                (json_int_t) now));
}


/* ---- provider ---- */

static void
on_provider_result(void *arg, const provider_result_t *res)
{
    req_ctx_t   *r = arg;
    engine_t    *eng = r->eng;
    esession_t  *es = session_get(eng, r->id, 0);
    hr_event_t   ev;

    memset(&ev, 0, sizeof(ev));
    ev.at_ms = engine_clock_ms();
    ev.call_sid = res->sid;
    ev.leg = HR_LEG_CITIZEN;

    switch (r->op) {
    case HR_ACT_CREATE_CALL:
        if (res->ok) {
            ev.kind = HR_EV_CALL_CREATED;
            ev.at_ms = r->sent_ms;
            eng->stats.calls_created++;
            log_line("session=%s call created ref=%s in %lld ms", r->id,
                     res->sid, (long long) (engine_clock_ms() - r->sent_ms));
        } else {
            ev.kind = HR_EV_CALL_REJECTED;
            ev.failure = res->failure;
            eng->stats.calls_failed++;
            log_line("session=%s call not created: HTTP %ld code %d", r->id,
                     res->http_status, res->error_code);
        }
        break;
    case HR_ACT_FIND_CALL:
        ev.kind = res->ok ? HR_EV_CALL_FOUND : HR_EV_CALL_REJECTED;
        ev.failure = res->failure;
        ev.at_ms = res->created_ms > 0 ? res->created_ms : 0;
        if (res->ok && res->sid[0] != '\0'
            && call_owned_elsewhere(eng, res->sid, r->id))
        {
            log_line("session=%s found call %s belongs to another session",
                     r->id, res->sid);
            ev.call_sid = "";
        }
        if (res->ok) {
            log_line("session=%s earlier call %s", r->id,
                     ev.call_sid[0] ? ev.call_sid : "none found");
        }
        break;
    default:
        ev.kind = res->ok ? HR_EV_CALL_STATUS : HR_EV_UPDATE_FAILED;
        ev.call_status = res->status;
        ev.failed_op = r->op;
        ev.failure = res->failure;
        break;
    }
    if (es != NULL) {
        apply(eng, es, &ev, NULL);
    }
    req_done(r);
}


static void
provider_failed_to_start(engine_t *eng, req_ctx_t *r)
{
    provider_result_t res;

    memset(&res, 0, sizeof(res));
    res.failure = HR_FAIL_NOT_SENT;
    res.sid = "";
    log_line("session=%s provider request could not start", r->id);
    (void) eng;
    on_provider_result(r, &res);
}


static void
create_call(engine_t *eng, const esession_t *es)
{
    const session_t     *s = &es->s;
    provider_call_req_t  req;
    req_ctx_t           *r = req_new(eng, es, HR_ACT_CREATE_CALL);
    char                *twiml, *status_url;
    char                 to[LOG_PHONE_BUF], via[LOG_PHONE_BUF];

    if (r == NULL) {
        return;
    }
    twiml = render_step(eng, s, 0);
    status_url = callback_url(eng, "/v1/telephony/status", s, "leg", 0,
                              "citizen");
    req.to = s->citizen_phone;
    req.from = eng->cf->provider_from_number;
    req.instructions = twiml;
    req.status_callback = status_url;
    req.ring_timeout_s = eng->cf->ring_timeout_s;

    log_line("session=%s calling citizen to=%s bridge=%s:%s reason=%s "
             "(%lld ms after the failure was detected)",
             s->id, log_phone(s->citizen_phone, to),
             s->ndial ? session_leg_name(s->dial[0].leg) : "none",
             s->ndial ? log_phone(s->dial[0].phone, via) : "-",
             session_reason_name(s->reason),
             (long long) (r->sent_ms - s->webrtc_failed_at_ms));
    eng->stats.calls_requested++;
    if (twiml == NULL || status_url == NULL
        || eng->provider->ops->create_call(eng->provider, &req,
                                           on_provider_result, r)
               != 0)
    {
        provider_failed_to_start(eng, r);
    }
    free(twiml);
    free(status_url);
}


/* The search looks back to the fallback decision (less the provider's 1 s
 * date resolution): a call of this session cannot be older. */
static void
find_call(engine_t *eng, const esession_t *es)
{
    req_ctx_t *r = req_new(eng, es, HR_ACT_FIND_CALL);
    int64_t    since = es->s.webrtc_failed_at_ms > 0 ? es->s.webrtc_failed_at_ms
                                                     : es->s.activated_at_ms;

    if (r != NULL
        && eng->provider->ops->find_call(eng->provider, es->s.citizen_phone,
                                         since - 1000, on_provider_result, r)
               != 0)
    {
        provider_failed_to_start(eng, r);
    }
}


typedef struct {
    const char *sid;
    const char *except;
    int         found;
} owner_query_t;


static int
check_owner(void *value, void *arg)
{
    const esession_t *es = value;
    owner_query_t    *q = arg;

    if (strcmp(es->s.call_sid, q->sid) == 0 && strcmp(es->s.id, q->except) != 0)
    {
        q->found = 1;
    }
    return 1;
}


/* A citizen with two sessions close together: a found call that another
 * session already owns is not this one's. */
static int
call_owned_elsewhere(engine_t *eng, const char *sid, const char *session_id)
{
    owner_query_t q = { sid, session_id, 0 };

    strmap_sweep(eng->sessions, check_owner, &q);
    return q.found;
}


static void
call_request(engine_t *eng, const esession_t *es, const hr_action_t *a)
{
    provider_t *p = eng->provider;
    req_ctx_t  *r = req_new(eng, es, a->kind);
    int         rc;

    if (r == NULL) {
        return;
    }
    switch (a->kind) {
    case HR_ACT_CANCEL_CALL:
        rc = p->ops->update_call(p, a->call_sid, "canceled",
                                 on_provider_result, r);
        break;
    case HR_ACT_HANGUP_CALL:
        rc = p->ops->update_call(p, a->call_sid, "completed",
                                 on_provider_result, r);
        break;
    default:
        rc = p->ops->fetch_call(p, a->call_sid, on_provider_result, r);
        break;
    }
    if (rc != 0) {
        provider_failed_to_start(eng, r);
    }
}


/* ---- directory lookup ---- */

static void lookup(engine_t *eng, const esession_t *es);


static const char *
column(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}


static void
contacts_from_row(hr_event_t *ev, const PGresult *res, int row)
{
    const char *state = column(res, row, LOOKUP_STORED_STATE);
    const char *duty = column(res, row, LOOKUP_OPERATOR_ON_DUTY);
    const char *citizen = column(res, row, LOOKUP_CITIZEN_PHONE);

    ev->citizen_phone = citizen ? citizen : "";
    ev->operator_phone = column(res, row, LOOKUP_OPERATOR_PHONE);
    ev->operator_on_duty = duty != NULL && duty[0] == 't';
    ev->supervisor_phone = column(res, row, LOOKUP_SUPERVISOR_PHONE);
    ev->call_sid = column(res, row, LOOKUP_CALL_REF);
    if (state == NULL || session_state_parse(state, &ev->stored_state) != 0) {
        ev->stored_state = HR_ST_NEW;
    }
}


static void
on_lookup_retry_closed(uv_handle_t *h)
{
    req_done(h->data);
}


static void
on_lookup_retry(uv_timer_t *t)
{
    req_ctx_t  *r = t->data;
    esession_t *es = session_get(r->eng, r->id, 0);

    if (es != NULL && !es->s.contacts_known) {
        lookup(r->eng, es);
    }
    uv_close((uv_handle_t *) t, on_lookup_retry_closed);
}


static void
on_lookup(void *arg, int ok, const PGresult *res)
{
    req_ctx_t  *r = arg;
    esession_t *es = session_get(r->eng, r->id, 0);
    hr_event_t  ev;

    if (!ok || res == NULL || PQntuples(res) != 1) {
        /* An SQL error, not an outage (those wait in the queue): retry
         * slowly rather than spin. */
        log_line("session=%s lookup failed; retrying", r->id);
        uv_timer_init(r->eng->loop, &r->retry);
        r->retry.data = r;
        uv_timer_start(&r->retry, on_lookup_retry, LOOKUP_RETRY_MS, 0);
        return;
    }
    if (es != NULL) {
        memset(&ev, 0, sizeof(ev));
        ev.kind = HR_EV_CONTACTS;
        ev.at_ms = engine_clock_ms();
        contacts_from_row(&ev, res, 0);
        apply(r->eng, es, &ev, NULL);
    }
    req_done(r);
}


static void
lookup(engine_t *eng, const esession_t *es)
{
    const session_t *s = &es->s;
    const char      *params[] = { s->citizen_id, s->operator_id,
                                  s->station_id, s->id };
    req_ctx_t       *r = req_new(eng, es, HR_ACT_LOOKUP);
    store_job_t     *job;

    if (r == NULL) {
        return;
    }
    job = store_job_new("lookup", on_lookup, r);
    if (job == NULL || store_job_add(job, records_lookup_sql, 4, params) != 0)
    {
        log_line("session=%s lookup: out of memory", s->id);
        store_job_free(job);
        req_done(r);
        return;
    }
    store_pg_submit(eng->pg, job, 1);
}


/* ---- applying events ---- */

typedef struct {
    engine_t *eng;
    char      stream_id[48];
} ack_ctx_t;


static void
on_event_durable(void *arg, int ok, const PGresult *res)
{
    ack_ctx_t *a = arg;

    (void) res;
    if (!ok) {
        log_line("stream: %s effects not stored (SQL error); acknowledged "
                 "to avoid a poison loop",
                 a->stream_id);
    }
    stream_ack(a->eng->stream, a->stream_id);
    strmap_del(a->eng->in_flight, a->stream_id);
    a->eng->acks_pending--;
    free(a);
}


static store_job_t *
job_for(engine_t *eng, store_job_t **job, const char *stream_id)
{
    ack_ctx_t *a;

    if (*job != NULL) {
        return *job;
    }
    if (stream_id == NULL) {
        *job = store_job_new("session record", NULL, NULL);
        if (*job != NULL) {
            store_job_keep(*job);
        }
        return *job;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return NULL;
    }
    a->eng = eng;
    snprintf(a->stream_id, sizeof(a->stream_id), "%s", stream_id);
    *job = store_job_new("event effects", on_event_durable, a);
    if (*job == NULL) {
        free(a);
        return NULL;
    }
    store_job_keep(*job);
    eng->acks_pending++;
    return *job;
}


static void
execute(engine_t *eng, esession_t *es, const hr_action_t *a, int64_t now,
        store_job_t **job, const char *stream_id)
{
    store_job_t *j;

    switch (a->kind) {
    case HR_ACT_ARM_TIMER:
        timers_arm(&eng->timers, &es->timers[a->timer].entry, a->at_ms);
        return;
    case HR_ACT_CANCEL_TIMER:
        timers_cancel(&eng->timers, &es->timers[a->timer].entry);
        return;
    case HR_ACT_LOOKUP:
        lookup(eng, es);
        return;
    case HR_ACT_RECORD:
        j = job_for(eng, job, stream_id);
        if (j == NULL || records_add(j, &es->s, a, now) != 0) {
            log_line("session=%s record: out of memory", es->s.id);
        }
        return;
    case HR_ACT_PREPARE_DIAL:
        prepare_dial(eng, es);
        return;
    case HR_ACT_CREATE_CALL:
        create_call(eng, es);
        return;
    case HR_ACT_FIND_CALL:
        find_call(eng, es);
        return;
    case HR_ACT_CANCEL_CALL:
    case HR_ACT_HANGUP_CALL:
    case HR_ACT_FETCH_CALL:
        call_request(eng, es, a);
        return;
    case HR_ACT_PUBLISH:
        publish_state(eng, es, now);
        return;
    case HR_ACT_ESCALATE:
        eng->stats.escalations++;
        log_line("session=%s escalation %s", es->s.id,
                 session_escalation_name(a->escalation));
        j = job_for(eng, job, stream_id);
        if (j == NULL || records_escalation(j, &es->s, a->escalation, now) != 0)
        {
            log_line("session=%s escalation record: out of memory", es->s.id);
        }
        publish_escalation(eng, es, a->escalation, now);
        return;
    case HR_ACT_ABANDON_WEBRTC:
        abandon_webrtc(eng, es, now);
        return;
    case HR_ACT_END_AFTER_STEP:
        end_after_step(eng, es, a->step);
        return;
    case HR_ACT_FORGET:
        es->forgot_at_ms = now;
        forget_keys(eng, es);
        return;
    }
}


/* Safety before bookkeeping: a decided fallback never waits for a slow or
 * absent PostgreSQL to name the phones; the directory copy answers. Without
 * the stored row a duplicate of a finished session is not recognised here,
 * and a redelivered activation still searches the provider first. */
static int
contacts_from_directory(engine_t *eng, esession_t *es)
{
    hr_event_t ev;

    memset(&ev, 0, sizeof(ev));
    if (eng->dir == NULL || es->s.contacts_known
        || directory_contacts(eng->dir, es->s.citizen_id, es->s.operator_id,
                              es->s.station_id, &ev)
               != 0)
    {
        return -1;
    }
    ev.kind = HR_EV_CONTACTS;
    ev.at_ms = engine_clock_ms();
    log_line("session=%s phones from the directory copy (postgres %s)",
             es->s.id, store_pg_is_up(eng->pg) ? "slow" : "down");
    apply(eng, es, &ev, NULL);
    return 0;
}


static void
on_contacts_wait(timer_entry_t *entry)
{
    esession_t *es = ((etimer_t *) entry)->es;

    contacts_from_directory(es->eng, es);
}


static void
wait_for_contacts(engine_t *eng, esession_t *es)
{
    if (!store_pg_is_up(eng->pg) && contacts_from_directory(eng, es) == 0) {
        return;
    }
    if (es->contacts_wait.entry.index == 0) {
        timers_arm(&eng->timers, &es->contacts_wait.entry,
                   engine_clock_ms() + CONTACTS_PATIENCE_MS);
    }
}


/* The actions are executed in order: the timer and the provider request
 * first as session.c emits them, the records after, in one job. */
static void
apply(engine_t *eng, esession_t *es, const hr_event_t *ev,
      const char *stream_id)
{
    hr_action_t   acts[HR_ACT_MAX];
    store_job_t  *job = NULL;
    int64_t       now = engine_clock_ms();
    hr_state_t    before = es->s.state;
    size_t        n, i;

    n = session_apply(&es->s, ev, now, acts, HR_ACT_MAX);
    log_decision(es, ev, before, acts, n);
    for (i = 0; i < n; i++) {
        execute(eng, es, &acts[i], now, &job, stream_id);
    }
    if (stream_id != NULL) {
        if (job_for(eng, &job, stream_id) == NULL
            || records_processed(job, stream_id, es->s.id) != 0)
        {
            log_line("stream: %s cannot be recorded: out of memory",
                     stream_id);
        }
    }
    if (job != NULL) {
        store_pg_submit(eng->pg, job, 0);
    }
    if (es->s.state == HR_ST_FALLBACK && !es->s.contacts_known) {
        wait_for_contacts(eng, es);
    }
}


/* ---- stream intake ---- */

static void
intake_pop(engine_t *eng)
{
    intake_t *in = eng->intake_head;

    eng->intake_head = in->next;
    if (eng->intake_head == NULL) {
        eng->intake_tail = NULL;
    }
    event_msg_free(&in->msg);
    if (in->checking) {
        in->orphan = 1; /* on_processed_check() frees it */
        return;
    }
    free(in);
}


static void
acknowledge_now(engine_t *eng, const char *stream_id)
{
    stream_ack(eng->stream, stream_id);
    strmap_del(eng->in_flight, stream_id);
}


static void
intake_apply(engine_t *eng, intake_t *in)
{
    esession_t *es;

    eng->stats.events_in++;
    if (in->processed) {
        eng->stats.events_duplicate++;
        log_line("stream: %s already processed; acknowledged",
                 in->msg.stream_id);
        acknowledge_now(eng, in->msg.stream_id);
        return;
    }
    es = session_get(eng, in->msg.session_id, 1);
    if (es == NULL) {
        log_line("stream: %s: out of memory; left pending",
                 in->msg.stream_id);
        strmap_del(eng->in_flight, in->msg.stream_id);
        return;
    }
    apply(eng, es, &in->msg.ev, in->msg.stream_id);
}


static void intake_drain(engine_t *eng);


static void
on_intake_timer(uv_timer_t *t)
{
    intake_drain(t->data);
}


static void
intake_drain(engine_t *eng)
{
    intake_t *in;
    int64_t   now = engine_clock_ms();

    while ((in = eng->intake_head) != NULL) {
        if (!in->ready && now - in->since_ms < INTAKE_CHECK_MAX_MS) {
            uv_timer_start(&eng->intake_timer, on_intake_timer,
                           (uint64_t) (INTAKE_CHECK_MAX_MS
                                       - (now - in->since_ms)),
                           0);
            return;
        }
        intake_apply(eng, in);
        intake_pop(eng);
    }
}


static void
on_processed_check(void *arg, int ok, const PGresult *res)
{
    intake_t *in = arg;

    in->checking = 0;
    if (in->orphan) {
        free(in); /* waited too long and was applied meanwhile */
        return;
    }
    in->ready = 1;
    in->processed = ok && res != NULL && PQntuples(res) > 0;
    intake_drain(in->eng);
}


static void
check_processed(engine_t *eng, intake_t *in)
{
    const char  *params[] = { in->msg.stream_id };
    store_job_t *job = store_job_new("processed check", on_processed_check,
                                     in);

    if (job == NULL
        || store_job_add(job,
                         "SELECT 1 FROM processed_events WHERE stream_id = $1",
                         1, params)
               != 0)
    {
        store_job_free(job);
        in->ready = 1;
        return;
    }
    in->checking = 1;
    store_pg_submit(eng->pg, job, 1);
}


void
engine_on_entry(void *arg, const char *id, size_t nfields,
                const char *const *names, const char *const *values,
                int redelivered)
{
    engine_t *eng = arg;
    intake_t *in;
    char      err[128];

    if (strmap_get(eng->in_flight, id) != NULL) {
        return; /* handed out again while we still work on it */
    }
    if (names == NULL) {
        stream_ack(eng->stream, id); /* trimmed before we read it */
        return;
    }
    in = calloc(1, sizeof(*in));
    if (in == NULL) {
        return; /* stays pending: redelivered later */
    }
    if (event_parse(&in->msg, id, nfields, names, values, err, sizeof(err))
        != 0)
    {
        eng->stats.events_malformed++;
        log_line("stream: %s malformed (%s); acknowledged", id, err);
        stream_ack(eng->stream, id);
        free(in);
        return;
    }
    in->eng = eng;
    in->msg.ev.redelivered = redelivered;
    in->since_ms = engine_clock_ms();
    in->ready = !redelivered;
    strmap_put(eng->in_flight, id, eng);
    if (redelivered) {
        check_processed(eng, in);
    }
    if (eng->intake_tail != NULL) {
        eng->intake_tail->next = in;
    } else {
        eng->intake_head = in;
    }
    eng->intake_tail = in;
    intake_drain(eng);
}


/* ---- reload, lifecycle ---- */

typedef struct {
    engine_t  *eng;
    void     (*done)(void *arg);
    void      *arg;
} reload_ctx_t;


static void
reload_row(engine_t *eng, const PGresult *res, int row)
{
    esession_t *es;
    hr_event_t  ev;
    const char *activated = column(res, row, RELOAD_ACTIVATED_MS);

    es = session_get(eng, PQgetvalue(res, row, RELOAD_ID), 1);
    if (es == NULL || es->s.state != HR_ST_NEW || activated == NULL) {
        return; /* already known from the stream */
    }
    memset(&ev, 0, sizeof(ev));
    ev.kind = HR_EV_ACTIVATED;
    ev.redelivered = 1;
    ev.at_ms = strtoll(activated, NULL, 10);
    ev.citizen_id = column(res, row, RELOAD_CITIZEN_ID);
    ev.operator_id = column(res, row, RELOAD_OPERATOR_ID);
    ev.station_id = column(res, row, RELOAD_STATION_ID);
    contacts_from_row(&ev, res, row);
    apply(eng, es, &ev, NULL);
}


static void
on_reload(void *arg, int ok, const PGresult *res)
{
    reload_ctx_t *rc = arg;
    int           i, n = ok && res != NULL ? PQntuples(res) : 0;

    if (!ok) {
        log_line("reload: open sessions could not be read");
    }
    for (i = 0; i < n; i++) {
        reload_row(rc->eng, res, i);
    }
    log_line("reload: %d open session(s), %zu timer(s) armed", n,
             timers_count(&rc->eng->timers));
    rc->done(rc->arg);
    free(rc);
}


void
engine_reload(engine_t *eng, void (*done)(void *arg), void *arg)
{
    reload_ctx_t *rc = calloc(1, sizeof(*rc));
    store_job_t  *job;

    if (rc == NULL) {
        done(arg);
        return;
    }
    rc->eng = eng;
    rc->done = done;
    rc->arg = arg;
    job = store_job_new("reload", on_reload, rc);
    if (job == NULL || store_job_add(job, records_reload_sql, 0, NULL) != 0) {
        if (job != NULL) {
            store_job_free(job);
        }
        free(rc);
        done(arg);
        return;
    }
    store_pg_submit(eng->pg, job, 1);
}


engine_t *
engine_new(const engine_deps_t *deps)
{
    engine_t *eng = calloc(1, sizeof(*eng));

    if (eng == NULL) {
        return NULL;
    }
    eng->loop = deps->loop;
    eng->cf = deps->cf;
    eng->pg = deps->pg;
    eng->provider = deps->provider;
    eng->redis = deps->redis;
    eng->panel = deps->panel;
    eng->dir = deps->dir;
    eng->policy.watchdog_ms = deps->cf->watchdog_ms;
    eng->policy.ring_timeout_ms = (int64_t) deps->cf->ring_timeout_s * 1000;
    eng->policy.backstop_margin_ms =
        (int64_t) deps->cf->backstop_margin_s * 1000;
    eng->policy.max_event_age_ms = (int64_t) deps->cf->max_event_age_s * 1000;
    eng->policy.retry_budget_ms = deps->cf->retry_budget_ms;
    eng->sessions = strmap_new();
    eng->in_flight = strmap_new();
    if (eng->sessions == NULL || eng->in_flight == NULL
        || timers_init(&eng->timers, eng->loop, engine_clock_ms) != 0)
    {
        if (eng->sessions != NULL) {
            strmap_free(eng->sessions);
        }
        if (eng->in_flight != NULL) {
            strmap_free(eng->in_flight);
        }
        free(eng);
        return NULL;
    }
    uv_timer_init(eng->loop, &eng->intake_timer);
    eng->intake_timer.data = eng;
    uv_timer_init(eng->loop, &eng->sweep);
    eng->sweep.data = eng;
    uv_timer_start(&eng->sweep, sweep_sessions, SWEEP_EVERY_MS,
                   SWEEP_EVERY_MS);
    return eng;
}


void
engine_set_stream(engine_t *eng, stream_t *st)
{
    eng->stream = st;
}


int
engine_idle(const engine_t *eng)
{
    return eng->intake_head == NULL && eng->requests == 0
           && eng->acks_pending == 0;
}


size_t
engine_sessions(const engine_t *eng)
{
    return strmap_count(eng->sessions);
}


size_t
engine_timers(const engine_t *eng)
{
    return timers_count(&eng->timers);
}


const engine_stats_t *
engine_stats(const engine_t *eng)
{
    return &eng->stats;
}


static int
drop_session(void *value, void *arg)
{
    (void) arg;
    free(value);
    return 0;
}


/* libuv runs close callbacks in no promised order: count them. */
static void
on_engine_closed(uv_handle_t *h)
{
    engine_t *eng = h->data;

    if (--eng->open_handles == 0) {
        free(eng);
    }
}


void
engine_free(engine_t *eng)
{
    while (eng->intake_head != NULL) {
        strmap_del(eng->in_flight, eng->intake_head->msg.stream_id);
        intake_pop(eng);
    }
    eng->open_handles = 3;
    eng->timers.uv.data = eng;
    timers_close(&eng->timers, on_engine_closed);
    strmap_sweep(eng->sessions, drop_session, NULL);
    strmap_free(eng->sessions);
    strmap_free(eng->in_flight);
    uv_close((uv_handle_t *) &eng->intake_timer, on_engine_closed);
    uv_close((uv_handle_t *) &eng->sweep, on_engine_closed);
}
