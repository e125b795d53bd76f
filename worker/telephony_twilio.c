#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "log.h"
#include "telephony_twilio.h"

typedef struct {
    provider_t  base;           /* first: provider_t * casts to this */
    http_t     *http;
    char        calls_url[768]; /* .../Accounts/{sid}/Calls */
    char        userpwd[400];
    long        timeout_ms;
} twilio_t;

typedef enum { OP_CREATE, OP_UPDATE, OP_FETCH, OP_FIND } twilio_op_t;

typedef struct {
    twilio_op_t  op;
    provider_cb  cb;
    void        *arg;
    int64_t      since_ms;
} twilio_req_t;


/* ---- small text helpers ---- */

typedef struct {
    char   *s;
    size_t  len;
    size_t  cap;
    int     failed;
} sbuf_t;


static void
sbuf_add(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int     n;
    char   *grown;

    if (b->failed) {
        return;
    }
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0,
                      fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->s != NULL && b->len + (size_t) n < b->cap) {
            b->len += (size_t) n;
            return;
        }
        grown = realloc(b->s, b->cap + (size_t) n + 256);
        if (grown == NULL) {
            b->failed = 1;
            return;
        }
        b->s = grown;
        b->cap += (size_t) n + 256;
    }
}


static char *
sbuf_take(sbuf_t *b)
{
    if (b->failed) {
        free(b->s);
        return NULL;
    }
    return b->s;
}


static void
form_add(sbuf_t *b, const char *name, const char *value)
{
    char *enc = curl_easy_escape(NULL, value, 0);

    if (enc == NULL) {
        b->failed = 1;
        return;
    }
    sbuf_add(b, "%s%s=%s", b->len > 0 ? "&" : "", name, enc);
    curl_free(enc);
}


char *
twilio_xml_escape(const char *text)
{
    sbuf_t      b = { 0 };
    const char *p;

    sbuf_add(&b, "%s", "");
    for (p = text; *p; p++) {
        switch (*p) {
        case '&':
            sbuf_add(&b, "&amp;");
            break;
        case '<':
            sbuf_add(&b, "&lt;");
            break;
        case '>':
            sbuf_add(&b, "&gt;");
            break;
        case '"':
            sbuf_add(&b, "&quot;");
            break;
        case '\'':
            sbuf_add(&b, "&apos;");
            break;
        default:
            sbuf_add(&b, "%c", *p);
        }
    }
    return sbuf_take(&b);
}


/* ---- outcome classification ---- */

/* What a failed request tells us about the call (docs/contracts.md):
 * nothing sent or 429 -> retry; 5xx or a timeout -> it may exist; other
 * 4xx (21211 invalid To, ...) -> refused for good. */
hr_failure_t
twilio_classify(long http_status, CURLcode result, int error_code)
{
    if (result == CURLE_COULDNT_CONNECT || result == CURLE_COULDNT_RESOLVE_HOST
        || result == CURLE_COULDNT_RESOLVE_PROXY)
    {
        return HR_FAIL_NOT_SENT;
    }
    if (result != CURLE_OK || http_status == 0 || http_status >= 500) {
        return HR_FAIL_UNCERTAIN;
    }
    if (http_status == 429 || error_code == 20429) {
        return HR_FAIL_NOT_SENT;
    }
    return HR_FAIL_REFUSED;
}


static int64_t
parse_rfc2822_ms(const char *text)
{
    struct tm  tm;
    char      *end;

    if (text == NULL) {
        return 0;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(text, "%a, %d %b %Y %H:%M:%S %z", &tm);
    if (end == NULL) {
        return 0;
    }
    return ((int64_t) timegm(&tm) - tm.tm_gmtoff) * 1000;
}


static int
is_open_status(hr_call_status_t st)
{
    return st == HR_CALL_QUEUED || st == HR_CALL_INITIATED
           || st == HR_CALL_RINGING || st == HR_CALL_IN_PROGRESS;
}


/* The newest call in a Calls list made since since_ms. A call without a
 * parseable date counts only while it is still open. */
static json_t *
pick_call(json_t *calls, int64_t since_ms, int64_t *created_ms)
{
    json_t  *c, *created, *best = NULL;
    size_t   i;
    int64_t  t, best_t = -1;

    json_array_foreach(calls, i, c) {
        created = json_object_get(c, "date_created");
        t = parse_rfc2822_ms(json_string_value(created));
        if (t == 0) {
            if (!is_open_status(session_call_status_parse(
                    json_string_value(json_object_get(c, "status")))))
            {
                continue;
            }
            t = since_ms;
        }
        /* date_created has 1 s resolution: allow the second it fell in. */
        if (t + 1000 > since_ms && t > best_t) {
            best = c;
            best_t = t;
        }
    }
    *created_ms = best_t;
    return best;
}


/* ---- responses ---- */

static void
on_response(void *arg, const http_response_t *res)
{
    twilio_req_t      *r = arg;
    provider_result_t  out;
    json_t            *doc, *call;
    json_error_t       jerr;

    memset(&out, 0, sizeof(out));
    out.sid = "";
    out.http_status = res->status;
    doc = json_loadb(res->body, res->len, 0, &jerr);
    out.error_code = (int) json_integer_value(json_object_get(doc, "code"));
    call = doc;

    if (res->result != CURLE_OK || res->status < 200 || res->status > 299) {
        out.failure = twilio_classify(res->status, res->result,
                                      out.error_code);
        if (res->result != CURLE_OK) {
            log_line("provider: request failed: %s",
                     curl_easy_strerror(res->result));
        } else {
            log_line("provider: HTTP %ld code %d", res->status,
                     out.error_code);
        }
    } else if (r->op == OP_FIND) {
        out.ok = 1;
        call = pick_call(json_object_get(doc, "calls"), r->since_ms,
                         &out.created_ms);
    } else {
        out.ok = json_string_value(json_object_get(doc, "sid")) != NULL;
        out.failure = HR_FAIL_UNCERTAIN;
    }
    if (out.ok && call != NULL) {
        const char *sid = json_string_value(json_object_get(call, "sid"));

        out.sid = sid ? sid : "";
        out.status = session_call_status_parse(
            json_string_value(json_object_get(call, "status")));
    }
    r->cb(r->arg, &out);
    json_decref(doc);
    free(r);
}


static int
start(twilio_t *tw, twilio_op_t op, const char *url, const char *form,
      int64_t since_ms, provider_cb cb, void *arg)
{
    twilio_req_t *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        return -1;
    }
    r->op = op;
    r->cb = cb;
    r->arg = arg;
    r->since_ms = since_ms;
    if (http_request(tw->http, url, tw->userpwd, form, tw->timeout_ms,
                     on_response, r)
        != 0)
    {
        free(r);
        return -1;
    }
    return 0;
}


/* ---- provider_ops_t ---- */

static int
tw_create_call(provider_t *p, const provider_call_req_t *req, provider_cb cb,
               void *arg)
{
    twilio_t    *tw = (twilio_t *) p;
    sbuf_t       form = { 0 };
    char         url[800], timeout[16];
    char        *body;
    int          rc;
    static const char *const events[] = { "initiated", "ringing", "answered",
                                          "completed" };
    size_t       i;

    snprintf(timeout, sizeof(timeout), "%d", req->ring_timeout_s);
    form_add(&form, "To", req->to);
    form_add(&form, "From", req->from);
    form_add(&form, "Twiml", req->instructions);
    form_add(&form, "Timeout", timeout);
    form_add(&form, "StatusCallback", req->status_callback);
    form_add(&form, "StatusCallbackMethod", "POST");
    for (i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        form_add(&form, "StatusCallbackEvent", events[i]);
    }
    body = sbuf_take(&form);
    if (body == NULL) {
        return -1;
    }
    snprintf(url, sizeof(url), "%s.json", tw->calls_url);
    rc = start(tw, OP_CREATE, url, body, 0, cb, arg);
    free(body);
    return rc;
}


static int
tw_update_call(provider_t *p, const char *sid, const char *status,
               provider_cb cb, void *arg)
{
    twilio_t *tw = (twilio_t *) p;
    sbuf_t    form = { 0 };
    char      url[900];
    char     *body;
    int       rc;

    form_add(&form, "Status", status);
    body = sbuf_take(&form);
    if (body == NULL) {
        return -1;
    }
    snprintf(url, sizeof(url), "%s/%s.json", tw->calls_url, sid);
    rc = start(tw, OP_UPDATE, url, body, 0, cb, arg);
    free(body);
    return rc;
}


static int
tw_fetch_call(provider_t *p, const char *sid, provider_cb cb, void *arg)
{
    twilio_t *tw = (twilio_t *) p;
    char      url[900];

    snprintf(url, sizeof(url), "%s/%s.json", tw->calls_url, sid);
    return start(tw, OP_FETCH, url, NULL, 0, cb, arg);
}


static int
tw_find_call(provider_t *p, const char *to, int64_t since_ms, provider_cb cb,
             void *arg)
{
    twilio_t  *tw = (twilio_t *) p;
    char       url[1024], day[16];
    char      *enc;
    time_t     t = (time_t) (since_ms / 1000);
    struct tm  tm;
    int        rc;

    gmtime_r(&t, &tm);
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    enc = curl_easy_escape(NULL, to, 0);
    if (enc == NULL) {
        return -1;
    }
    /* StartTime>= filters by day only; pick_call() narrows it down. */
    snprintf(url, sizeof(url), "%s.json?To=%s&StartTime%%3E=%s&PageSize=50",
             tw->calls_url, enc, day);
    curl_free(enc);
    rc = start(tw, OP_FIND, url, NULL, since_ms, cb, arg);
    return rc;
}


static char *
tw_render_dial(provider_t *p, const char *phone, int timeout_s,
               const char *action_url, const char *status_url)
{
    sbuf_t  b = { 0 };
    char   *url = twilio_xml_escape(action_url);
    char   *status = twilio_xml_escape(status_url);
    char   *num = twilio_xml_escape(phone);

    (void) p;
    if (url != NULL && status != NULL && num != NULL) {
        sbuf_add(&b, "<Response><Dial timeout=\"%d\" action=\"%s\">"
                     "<Number statusCallbackEvent=\"answered\" "
                     "statusCallback=\"%s\">%s</Number></Dial></Response>",
                 timeout_s, url, status, num);
    } else {
        b.failed = 1;
    }
    free(url);
    free(status);
    free(num);
    return sbuf_take(&b);
}


static char *
tw_render_hangup(provider_t *p)
{
    (void) p;
    return strdup("<Response><Hangup/></Response>");
}


static char *
tw_render_say(provider_t *p, const char *text)
{
    sbuf_t  b = { 0 };
    char   *t = twilio_xml_escape(text);

    (void) p;
    if (t == NULL) {
        return NULL;
    }
    sbuf_add(&b, "<Response><Say>%s</Say><Hangup/></Response>", t);
    free(t);
    return sbuf_take(&b);
}


static void
tw_free(provider_t *p)
{
    free(p);
}


static const provider_ops_t twilio_ops = {
    tw_create_call, tw_update_call, tw_fetch_call,  tw_find_call,
    tw_render_dial, tw_render_say,  tw_render_hangup, tw_free,
};


provider_t *
twilio_new(http_t *http, const char *base_url, const char *account_sid,
           const char *auth_token, long timeout_ms)
{
    twilio_t *tw = calloc(1, sizeof(*tw));

    if (tw == NULL) {
        return NULL;
    }
    tw->base.ops = &twilio_ops;
    tw->http = http;
    tw->timeout_ms = timeout_ms;
    snprintf(tw->calls_url, sizeof(tw->calls_url),
             "%s/2010-04-01/Accounts/%s/Calls", base_url, account_sid);
    snprintf(tw->userpwd, sizeof(tw->userpwd), "%s:%s", account_sid,
             auth_token);
    return &tw->base;
}
