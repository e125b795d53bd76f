/*
 * Hook handlers (see hamrahi_hooks.h). Every path out of a request ends in
 * exactly one response: 202 after Redis acknowledged the XADD, a JSON error
 * {"error","detail"}, or for the dial callback a TwiML document (the caller
 * is never hung up because Redis is unavailable).
 */

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "hamrahi_hooks.h"
#include "hamrahi_auth.h"
#include "hamrahi_event.h"
#include "hamrahi_metrics.h"
#include "hamrahi_redis.h"


#define NGX_HTTP_HAMRAHI_EVENTS_KEY      "hamrahi:events"
#define NGX_HTTP_HAMRAHI_TWIML_KEY       "hamrahi:twiml:"
#define NGX_HTTP_HAMRAHI_DIAL_HOLD_MAX   10    /* ~4 s each: Say + Pause */
#define NGX_HTTP_HAMRAHI_TWIML_MAX       65536
#define NGX_HTTP_HAMRAHI_REPLAY_KEY      "hamrahi:replay:"
#define NGX_HTTP_HAMRAHI_XADD_ARGS_MAX   16

/*
 * Replay protection and the append in one round trip: a signature seen
 * before answers with the stream id it was stored under, so a retry after a
 * 503 is accepted when the first try never reached the stream, and refused
 * (with the id) when it did. KEYS: stream, replay key; ARGV: MAXLEN, replay
 * lifetime in ms, then the entry's field/value pairs.
 */
static const char  ngx_http_hamrahi_xadd_once_lua[] =
    "local prev = redis.call('GET', KEYS[2]) "
    "if prev then return {0, prev} end "
    "local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', "
    "unpack(ARGV, 3)) "
    "redis.call('SET', KEYS[2], id, 'PX', ARGV[2]) "
    "return {1, id}";

/*
 * The script is sent by its SHA1 (EVALSHA): Redis then neither receives nor
 * hashes its text per event. A Redis that does not know it yet (restarted,
 * SCRIPT FLUSH) answers NOSCRIPT, and the command is sent again with EVAL,
 * which caches it.
 */
static u_char  ngx_http_hamrahi_xadd_once_sha[2 * SHA_DIGEST_LENGTH + 1];


typedef struct {
    ngx_http_request_t                 *request;
    hamrahi_route_t                     route;
    ngx_str_t                           session;
    ngx_http_hamrahi_redis_cmd_t       *cmd;
    ngx_http_hamrahi_redis_handler_pt   handler;
    int                                 argc;
    const char                        **argv;   /* kept to resend as EVAL */
    size_t                             *lens;
    uint64_t                            sent_usec;
    ngx_str_t                           replay_key;   /* signalling only */
    ngx_msec_t                          replay_ttl;
    ngx_str_t                           step;         /* dial only */
    ngx_str_t                           dial_status;  /* dial, may be empty */
    ngx_uint_t                          attempt;      /* dial only, from 1 */
} ngx_http_hamrahi_hooks_ctx_t;


static ngx_int_t ngx_http_hamrahi_hooks_send(ngx_http_request_t *r,
    hamrahi_route_t route, ngx_uint_t status, const char *type, u_char *body,
    size_t len);
static ngx_int_t ngx_http_hamrahi_hooks_error(ngx_http_request_t *r,
    hamrahi_route_t route, ngx_uint_t status, const char *code,
    const char *detail);
static ngx_int_t ngx_http_hamrahi_hooks_core_error(ngx_http_request_t *r,
    hamrahi_route_t route);
static ngx_int_t ngx_http_hamrahi_hooks_reject_early(ngx_http_request_t *r,
    hamrahi_route_t route, ngx_uint_t status, const char *code,
    const char *detail);
static ngx_uint_t ngx_http_hamrahi_hooks_type_is(ngx_http_request_t *r,
    const char *type);
static u_char *ngx_http_hamrahi_hooks_read_body(ngx_http_request_t *r,
    size_t max, size_t *len);
static void ngx_http_hamrahi_hooks_body_handler(ngx_http_request_t *r);
static void ngx_http_hamrahi_hooks_cleanup(void *data);
static ngx_int_t ngx_http_hamrahi_hooks_signalling(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, u_char *body, size_t len);
static ngx_int_t ngx_http_hamrahi_hooks_replay_key(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, u_char *mac, int64_t t);
static ngx_int_t ngx_http_hamrahi_hooks_telephony(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, u_char *body, size_t len);
static void ngx_http_hamrahi_hooks_dial_params(
    ngx_http_hamrahi_hooks_ctx_t *ctx, const hamrahi_kv_t *form,
    size_t nform, const hamrahi_kv_t *query, size_t nquery);
static ngx_int_t ngx_http_hamrahi_hooks_twilio_auth(ngx_http_request_t *r,
    hamrahi_kv_t *form, size_t nform);
static ngx_int_t ngx_http_hamrahi_hooks_unavailable(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_hamrahi_hooks_xadd(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, hamrahi_event_t *ev,
    ngx_http_hamrahi_redis_handler_pt handler);
static void ngx_http_hamrahi_hooks_arg(ngx_http_hamrahi_hooks_ctx_t *ctx,
    const char *arg, size_t len);
static const char *ngx_http_hamrahi_hooks_script_sha(void);
static ngx_int_t ngx_http_hamrahi_hooks_send_xadd(
    ngx_http_hamrahi_hooks_ctx_t *ctx);
static ngx_uint_t ngx_http_hamrahi_hooks_noscript(
    ngx_http_hamrahi_hooks_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_hamrahi_hooks_stored(
    ngx_http_hamrahi_hooks_ctx_t *ctx, redisReply *reply, ngx_str_t *id);
static ngx_int_t ngx_http_hamrahi_hooks_replayed(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, ngx_str_t *id);
static void ngx_http_hamrahi_hooks_xadd_done(redisReply *reply, void *data);
static void ngx_http_hamrahi_hooks_dial_xadd_done(redisReply *reply,
    void *data);
static void ngx_http_hamrahi_hooks_dial_twiml_done(redisReply *reply,
    void *data);
static ngx_int_t ngx_http_hamrahi_hooks_dial_hold(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, const char *why);
static void ngx_http_hamrahi_hooks_finalize(ngx_http_hamrahi_hooks_ctx_t *ctx,
    ngx_int_t rc);


ngx_int_t
ngx_http_hamrahi_hooks_handler(ngx_http_request_t *r)
{
    size_t                         session_len;
    ngx_int_t                      rc;
    const char                    *session, *type;
    hamrahi_route_t                route;
    ngx_http_cleanup_t            *cln;
    ngx_http_hamrahi_hooks_ctx_t  *ctx;
    ngx_http_hamrahi_loc_conf_t   *hlcf;

    route = hamrahi_route_match((const char *) r->uri.data, r->uri.len,
                                &session, &session_len);

    if (r->internal && r->err_status != 0) {
        return ngx_http_hamrahi_hooks_core_error(r, route);
    }

    if (route == HAMRAHI_ROUTE_NONE) {
        return ngx_http_hamrahi_hooks_reject_early(r, route,
                   NGX_HTTP_NOT_FOUND, "not_found",
                   "no hook at this path (session ids match "
                   "[A-Za-z0-9_-]{1,64})");
    }

    if (r->method != NGX_HTTP_POST) {
        return ngx_http_hamrahi_hooks_reject_early(r, route,
                   NGX_HTTP_NOT_ALLOWED, "method_not_allowed",
                   "hooks accept POST only");
    }

    type = hamrahi_route_is_telephony(route)
           ? "application/x-www-form-urlencoded" : "application/json";

    if (!ngx_http_hamrahi_hooks_type_is(r, type)) {
        return ngx_http_hamrahi_hooks_reject_early(r, route,
                   NGX_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                   hamrahi_route_is_telephony(route)
                   ? "Content-Type must be application/x-www-form-urlencoded"
                   : "Content-Type must be application/json");
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_hamrahi_module);

    if (r->headers_in.content_length_n > (off_t) hlcf->max_body) {
        return ngx_http_hamrahi_hooks_reject_early(r, route,
                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "body_too_large",
                   "the body is larger than the hook limit");
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_hamrahi_hooks_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->route = route;
    ctx->session.data = (u_char *) session;
    ctx->session.len = session_len;
    ngx_http_set_ctx(r, ctx, ngx_http_hamrahi_module);

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_hamrahi_hooks_cleanup;
    cln->data = ctx;

    rc = ngx_http_read_client_request_body(r,
                                          ngx_http_hamrahi_hooks_body_handler);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_hamrahi_hooks_cleanup(void *data)
{
    ngx_http_hamrahi_hooks_ctx_t  *ctx = data;

    /* the client went away before Redis answered */
    if (ctx->cmd != NULL) {
        ngx_http_hamrahi_redis_cancel(ctx->cmd);
        ctx->cmd = NULL;
    }
}


static void
ngx_http_hamrahi_hooks_body_handler(ngx_http_request_t *r)
{
    size_t                         len;
    u_char                        *body;
    ngx_int_t                      rc;
    ngx_http_hamrahi_hooks_ctx_t  *ctx;
    ngx_http_hamrahi_loc_conf_t   *hlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_hamrahi_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_hamrahi_module);

    body = ngx_http_hamrahi_hooks_read_body(r, hlcf->max_body, &len);

    if (body == NULL) {
        rc = ngx_http_hamrahi_hooks_error(r, ctx->route,
                 NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "body_too_large",
                 "the body is larger than the hook limit");

    } else if (hamrahi_route_is_telephony(ctx->route)) {
        rc = ngx_http_hamrahi_hooks_telephony(r, ctx, body, len);

    } else {
        rc = ngx_http_hamrahi_hooks_signalling(r, ctx, body, len);
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    /* waiting for Redis: notice a client that goes away meanwhile */
    r->read_event_handler = ngx_http_test_reading;
}


/* the body as one NUL-terminated buffer, or NULL when over max */
static u_char *
ngx_http_hamrahi_hooks_read_body(ngx_http_request_t *r, size_t max,
    size_t *len)
{
    size_t        total;
    u_char       *body, *p;
    ngx_chain_t  *cl;

    total = 0;

    if (r->request_body != NULL) {
        for (cl = r->request_body->bufs; cl != NULL; cl = cl->next) {
            /* the location's body buffer holds max: a file means more */
            if (cl->buf->in_file) {
                return NULL;
            }

            total += cl->buf->last - cl->buf->pos;
        }
    }

    if (total > max) {
        return NULL;
    }

    body = ngx_pnalloc(r->pool, total + 1);
    if (body == NULL) {
        return NULL;
    }

    p = body;

    if (r->request_body != NULL) {
        for (cl = r->request_body->bufs; cl != NULL; cl = cl->next) {
            /* an empty buffer (the last chunk) may have no memory at all */
            if (cl->buf->last != cl->buf->pos) {
                p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
            }
        }
    }

    *p = '\0';
    *len = total;

    return body;
}


static ngx_uint_t
ngx_http_hamrahi_hooks_type_is(ngx_http_request_t *r, const char *type)
{
    size_t   len;
    u_char  *v, *semi;

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    v = r->headers_in.content_type->value.data;
    len = r->headers_in.content_type->value.len;

    semi = ngx_strlchr(v, v + len, ';');
    if (semi != NULL) {
        len = semi - v;
    }

    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) {
        len--;
    }

    return len == ngx_strlen(type)
           && ngx_strncasecmp(v, (u_char *) type, len) == 0;
}


static ngx_int_t
ngx_http_hamrahi_hooks_signalling(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, u_char *body, size_t len)
{
    u_char                         mac[HAMRAHI_AUTH_SHA256_LEN];
    int64_t                        t;
    ngx_int_t                      rc;
    ngx_str_t                     *sig;
    ngx_table_elt_t               *hdr;
    hamrahi_event_t                ev;
    hamrahi_auth_result_t          res;
    ngx_http_hamrahi_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_hamrahi_module);

    hdr = ngx_http_hamrahi_request_header(r, "X-Hamrahi-Signature");
    sig = hdr ? &hdr->value : NULL;
    t = 0;

    res = hamrahi_auth_verify_hook(hmcf->hook_secret.data,
                                   hmcf->hook_secret.len,
                                   sig ? (const char *) sig->data : NULL,
                                   sig ? sig->len : 0, body, len,
                                   (int64_t) ngx_time(),
                                   HAMRAHI_AUTH_TOLERANCE_S, mac, &t);

    if (res != HAMRAHI_AUTH_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "hamrahi: %s hook refused: signature %s",
                      hamrahi_route_name(ctx->route),
                      hamrahi_auth_result_name(res));

        return ngx_http_hamrahi_hooks_error(r, ctx->route,
                   NGX_HTTP_UNAUTHORIZED, "bad_signature",
                   res == HAMRAHI_AUTH_MISSING
                   ? "X-Hamrahi-Signature header is missing"
                   : res == HAMRAHI_AUTH_MALFORMED
                   ? "X-Hamrahi-Signature must be t=<unix seconds>,v1=<hex>"
                   : res == HAMRAHI_AUTH_EXPIRED
                   ? "signature timestamp is more than 300 s from now"
                   : "signature does not match the body");
    }

    if (hamrahi_event_from_json(ctx->route, (const char *) ctx->session.data,
                                ctx->session.len, (const char *) body, len,
                                &ev)
        != 0)
    {
        return ngx_http_hamrahi_hooks_error(r, ctx->route,
                                            NGX_HTTP_BAD_REQUEST, ev.error,
                                            ev.detail);
    }

    if (ngx_http_hamrahi_hooks_replay_key(r, ctx, mac, t) != NGX_OK) {
        hamrahi_event_free(&ev);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_hamrahi_hooks_xadd(r, ctx, &ev,
                                     ngx_http_hamrahi_hooks_xadd_done);
    hamrahi_event_free(&ev);

    return ngx_http_hamrahi_hooks_unavailable(r, ctx, rc);
}


/*
 * Remember the signature for as long as it would be accepted. The signature
 * covers only t and the body, and two sessions may well be sent the same
 * body in the same second ({"state":"active"}): the key names the session
 * and the route too, so only a repeat of the same request is a replay.
 */
static ngx_int_t
ngx_http_hamrahi_hooks_replay_key(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, u_char *mac, int64_t t)
{
    u_char      *p;
    int64_t      ttl_s;
    const char  *route;

    route = hamrahi_route_name(ctx->route);

    ctx->replay_key.data = ngx_pnalloc(r->pool,
                                       sizeof(NGX_HTTP_HAMRAHI_REPLAY_KEY)
                                       + ctx->session.len + 1
                                       + ngx_strlen(route) + 1
                                       + 2 * HAMRAHI_AUTH_SHA256_LEN + 1);
    if (ctx->replay_key.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(ctx->replay_key.data, NGX_HTTP_HAMRAHI_REPLAY_KEY "%V:%s:",
                    &ctx->session, route);
    hamrahi_auth_hex(mac, HAMRAHI_AUTH_SHA256_LEN, (char *) p);
    ctx->replay_key.len = p + 2 * HAMRAHI_AUTH_SHA256_LEN
                          - ctx->replay_key.data;

    ttl_s = t + HAMRAHI_AUTH_TOLERANCE_S - (int64_t) ngx_time() + 1;
    ctx->replay_ttl = (ngx_msec_t) ngx_max(ttl_s, 1) * 1000;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hamrahi_hooks_telephony(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, u_char *body, size_t len)
{
    int                  nform, nquery;
    u_char              *args;
    ngx_int_t            rc;
    const char          *session;
    size_t               session_len;
    hamrahi_kv_t        *form, *query;
    hamrahi_event_t      ev;

    form = ngx_palloc(r->pool, 2 * HAMRAHI_FORM_MAX_PARAMS
                               * sizeof(hamrahi_kv_t));
    args = ngx_pnalloc(r->pool, r->args.len + 1);
    if (form == NULL || args == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    query = form + HAMRAHI_FORM_MAX_PARAMS;
    ngx_memcpy(args, r->args.data, r->args.len);

    nform = hamrahi_form_parse((char *) body, len, form,
                               HAMRAHI_FORM_MAX_PARAMS);
    nquery = hamrahi_form_parse((char *) args, r->args.len, query,
                                HAMRAHI_FORM_MAX_PARAMS);
    if (nform < 0 || nquery < 0) {
        return ngx_http_hamrahi_hooks_error(r, ctx->route,
                   NGX_HTTP_BAD_REQUEST, "invalid_form",
                   "the body or the query string is not valid form data");
    }

    rc = ngx_http_hamrahi_hooks_twilio_auth(r, form, (size_t) nform);
    if (rc != NGX_OK) {
        return ngx_http_hamrahi_hooks_error(r, ctx->route,
                   NGX_HTTP_UNAUTHORIZED, "bad_signature",
                   rc == NGX_ABORT
                   ? "X-Twilio-Signature header is missing"
                   : "X-Twilio-Signature does not match the URL and "
                     "parameters");
    }

    if (hamrahi_event_from_form(ctx->route, form, (size_t) nform, query,
                                (size_t) nquery, &session, &session_len,
                                &ev)
        != 0)
    {
        return ngx_http_hamrahi_hooks_error(r, ctx->route,
                                            NGX_HTTP_BAD_REQUEST, ev.error,
                                            ev.detail);
    }

    ctx->session.data = (u_char *) session;
    ctx->session.len = session_len;

    if (ctx->route != HAMRAHI_ROUTE_TELEPHONY_DIAL) {
        rc = ngx_http_hamrahi_hooks_xadd(r, ctx, &ev,
                                         ngx_http_hamrahi_hooks_xadd_done);
        hamrahi_event_free(&ev);
        return ngx_http_hamrahi_hooks_unavailable(r, ctx, rc);
    }

    ngx_http_hamrahi_hooks_dial_params(ctx, form, (size_t) nform, query,
                                       (size_t) nquery);

    rc = ngx_http_hamrahi_hooks_xadd(r, ctx, &ev,
                                     ngx_http_hamrahi_hooks_dial_xadd_done);
    hamrahi_event_free(&ev);

    if (rc == NGX_DECLINED || rc == NGX_ERROR) {
        return ngx_http_hamrahi_hooks_dial_hold(r, ctx, "redis unavailable");
    }

    return rc;
}


/* step, attempt and dial outcome of a dial callback, already validated */
static void
ngx_http_hamrahi_hooks_dial_params(ngx_http_hamrahi_hooks_ctx_t *ctx,
    const hamrahi_kv_t *form, size_t nform, const hamrahi_kv_t *query,
    size_t nquery)
{
    const hamrahi_kv_t  *kv;

    kv = hamrahi_kv_find(query, nquery, "step");
    ctx->step.data = (u_char *) kv->value;
    ctx->step.len = kv->value_len;

    kv = hamrahi_kv_find(query, nquery, "attempt");
    ctx->attempt = kv ? (ngx_uint_t) ngx_atoi((u_char *) kv->value,
                                              kv->value_len)
                      : 1;

    kv = hamrahi_kv_find(form, nform, "DialCallStatus");
    if (kv == NULL) {
        kv = hamrahi_kv_find(query, nquery, "DialCallStatus");
    }

    /* it goes back into a URL: only a plain token */
    if (kv != NULL && hamrahi_session_id_valid(kv->value, kv->value_len)) {
        ctx->dial_status.data = (u_char *) kv->value;
        ctx->dial_status.len = kv->value_len;
    }
}


/*
 * X-Twilio-Signature over the public URL (with and without its port):
 * NGX_OK, NGX_ABORT (no header) or NGX_DECLINED.
 */
static ngx_int_t
ngx_http_hamrahi_hooks_twilio_auth(ngx_http_request_t *r, hamrahi_kv_t *form,
    size_t nform)
{
    size_t                         lens[2];
    u_char                        *u0, *u1;
    ngx_str_t                     *sig;
    ngx_table_elt_t               *hdr;
    const char                    *urls[2];
    hamrahi_kv_t                  *sorted;
    hamrahi_auth_result_t          res;
    ngx_http_hamrahi_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_hamrahi_module);

    hdr = ngx_http_hamrahi_request_header(r, "X-Twilio-Signature");
    sig = hdr ? &hdr->value : NULL;

    lens[0] = hmcf->public_url_without_port.len + r->unparsed_uri.len;
    lens[1] = hmcf->public_url_with_port.len + r->unparsed_uri.len;

    u0 = ngx_pnalloc(r->pool, lens[0] + lens[1]);
    sorted = ngx_palloc(r->pool, (nform ? nform : 1) * sizeof(hamrahi_kv_t));
    if (u0 == NULL || sorted == NULL) {
        return NGX_ERROR;
    }

    u1 = ngx_cpymem(u0, hmcf->public_url_without_port.data,
                    hmcf->public_url_without_port.len);
    u1 = ngx_cpymem(u1, r->unparsed_uri.data, r->unparsed_uri.len);
    ngx_memcpy(ngx_cpymem(u1, hmcf->public_url_with_port.data,
                          hmcf->public_url_with_port.len),
               r->unparsed_uri.data, r->unparsed_uri.len);

    urls[0] = (const char *) u0;
    urls[1] = (const char *) u1;

    /* the signature check sorts: keep the payload in the provider's order */
    ngx_memcpy(sorted, form, nform * sizeof(hamrahi_kv_t));

    res = hamrahi_auth_verify_twilio(hmcf->twilio_token.data,
                                     hmcf->twilio_token.len, urls, lens, 2,
                                     sorted, nform,
                                     sig ? (const char *) sig->data : NULL,
                                     sig ? sig->len : 0);
    if (res != HAMRAHI_AUTH_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "hamrahi: telephony callback refused: signature %s",
                      hamrahi_auth_result_name(res));
        return res == HAMRAHI_AUTH_MISSING ? NGX_ABORT : NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_hamrahi_hooks_arg(ngx_http_hamrahi_hooks_ctx_t *ctx, const char *arg,
    size_t len)
{
    ctx->argv[ctx->argc] = arg;
    ctx->lens[ctx->argc++] = len;
}


/*
 * Build the append in the request's pool (it may have to be sent twice, see
 * ngx_http_hamrahi_xadd_once_sha) and send it: NGX_DONE, or NGX_DECLINED
 * when Redis is not connected, or NGX_ERROR.
 */
static ngx_int_t
ngx_http_hamrahi_hooks_xadd(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, hamrahi_event_t *ev,
    ngx_http_hamrahi_redis_handler_pt handler)
{
    u_char                        *at_ms, *ttl, *payload;
    size_t                         payload_len;
    ngx_http_hamrahi_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_hamrahi_module);

    payload_len = ngx_strlen(ev->payload);

    ctx->argv = ngx_palloc(r->pool, NGX_HTTP_HAMRAHI_XADD_ARGS_MAX
                                    * (sizeof(char *) + sizeof(size_t)));
    at_ms = ngx_pnalloc(r->pool, NGX_INT64_LEN + NGX_INT_T_LEN + payload_len);
    if (ctx->argv == NULL || at_ms == NULL) {
        return NGX_ERROR;
    }

    ctx->lens = (size_t *) (ctx->argv + NGX_HTTP_HAMRAHI_XADD_ARGS_MAX);
    ttl = at_ms + NGX_INT64_LEN;
    payload = ttl + NGX_INT_T_LEN;
    ngx_memcpy(payload, ev->payload, payload_len);

    ctx->argc = 0;
    ctx->handler = handler;

    if (ctx->replay_key.len) {
        ngx_http_hamrahi_hooks_arg(ctx, "EVALSHA", 7);
        ngx_http_hamrahi_hooks_arg(ctx, ngx_http_hamrahi_hooks_script_sha(),
                                   2 * SHA_DIGEST_LENGTH);
        ngx_http_hamrahi_hooks_arg(ctx, "2", 1);
        ngx_http_hamrahi_hooks_arg(ctx, NGX_HTTP_HAMRAHI_EVENTS_KEY,
                                   sizeof(NGX_HTTP_HAMRAHI_EVENTS_KEY) - 1);
        ngx_http_hamrahi_hooks_arg(ctx, (const char *) ctx->replay_key.data,
                                   ctx->replay_key.len);
        ngx_http_hamrahi_hooks_arg(ctx,
            (const char *) hmcf->stream_maxlen_text.data,
            hmcf->stream_maxlen_text.len);
        ngx_http_hamrahi_hooks_arg(ctx, (const char *) ttl,
            ngx_sprintf(ttl, "%M", ctx->replay_ttl) - ttl);

    } else {
        ngx_http_hamrahi_hooks_arg(ctx, "XADD", 4);
        ngx_http_hamrahi_hooks_arg(ctx, NGX_HTTP_HAMRAHI_EVENTS_KEY,
                                   sizeof(NGX_HTTP_HAMRAHI_EVENTS_KEY) - 1);
        ngx_http_hamrahi_hooks_arg(ctx, "MAXLEN", 6);
        ngx_http_hamrahi_hooks_arg(ctx, "~", 1);
        ngx_http_hamrahi_hooks_arg(ctx,
            (const char *) hmcf->stream_maxlen_text.data,
            hmcf->stream_maxlen_text.len);
        ngx_http_hamrahi_hooks_arg(ctx, "*", 1);
    }

    ngx_http_hamrahi_hooks_arg(ctx, "type", 4);
    ngx_http_hamrahi_hooks_arg(ctx, ev->type, ngx_strlen(ev->type));
    ngx_http_hamrahi_hooks_arg(ctx, "session_id", 10);
    ngx_http_hamrahi_hooks_arg(ctx, (const char *) ctx->session.data,
                               ctx->session.len);

    /* the watchdog's 5 s run from nginx's receive time (AC1) */
    ngx_http_hamrahi_hooks_arg(ctx, "at_ms", 5);
    ngx_http_hamrahi_hooks_arg(ctx, (const char *) at_ms,
        ngx_sprintf(at_ms, "%uL",
                    (uint64_t) r->start_sec * 1000 + r->start_msec)
        - at_ms);

    ngx_http_hamrahi_hooks_arg(ctx, "payload", 7);
    ngx_http_hamrahi_hooks_arg(ctx, (const char *) payload, payload_len);

    return ngx_http_hamrahi_hooks_send_xadd(ctx);
}


static const char *
ngx_http_hamrahi_hooks_script_sha(void)
{
    u_char  digest[SHA_DIGEST_LENGTH];

    if (ngx_http_hamrahi_xadd_once_sha[0] == '\0') {
        EVP_Digest(ngx_http_hamrahi_xadd_once_lua,
                   sizeof(ngx_http_hamrahi_xadd_once_lua) - 1, digest, NULL,
                   EVP_sha1(), NULL);
        hamrahi_auth_hex(digest, SHA_DIGEST_LENGTH,
                         (char *) ngx_http_hamrahi_xadd_once_sha);
    }

    return (const char *) ngx_http_hamrahi_xadd_once_sha;
}


static ngx_int_t
ngx_http_hamrahi_hooks_send_xadd(ngx_http_hamrahi_hooks_ctx_t *ctx)
{
    ctx->sent_usec = ngx_http_hamrahi_metrics_now_usec();
    ctx->cmd = ngx_http_hamrahi_redis_command(ctx->handler, ctx, ctx->argc,
                                              ctx->argv, ctx->lens);

    return ctx->cmd != NULL ? NGX_DONE : NGX_DECLINED;
}


/* NOSCRIPT: the command has been sent again with the script's text */
static ngx_uint_t
ngx_http_hamrahi_hooks_noscript(ngx_http_hamrahi_hooks_ctx_t *ctx,
    redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ERROR
        || reply->len < 8 || ngx_strncmp(reply->str, "NOSCRIPT", 8) != 0
        || ctx->lens[0] != sizeof("EVALSHA") - 1)
    {
        return 0;
    }

    ctx->argv[0] = "EVAL";
    ctx->lens[0] = 4;
    ctx->argv[1] = ngx_http_hamrahi_xadd_once_lua;
    ctx->lens[1] = sizeof(ngx_http_hamrahi_xadd_once_lua) - 1;

    return ngx_http_hamrahi_hooks_send_xadd(ctx) == NGX_DONE;
}


/* NGX_DECLINED from ngx_http_hamrahi_hooks_xadd: Redis is not connected */
static ngx_int_t
ngx_http_hamrahi_hooks_unavailable(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, ngx_int_t rc)
{
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_hamrahi_hooks_error(r, ctx->route,
                                        NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "redis_unavailable",
                                        "the event store is not reachable; "
                                        "retry later");
}


static void
ngx_http_hamrahi_hooks_finalize(ngx_http_hamrahi_hooks_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = ctx->request->connection;

    ngx_http_finalize_request(ctx->request, rc);
    ngx_http_run_posted_requests(c);
}


/*
 * What Redis said about an append: NGX_OK (stored as *id), NGX_DECLINED
 * (a replay, stored earlier as *id) or NGX_ERROR (not stored, logged).
 */
static ngx_int_t
ngx_http_hamrahi_hooks_stored(ngx_http_hamrahi_hooks_ctx_t *ctx,
    redisReply *reply, ngx_str_t *id)
{
    ngx_int_t    rc;
    ngx_log_t   *log = ctx->request->connection->log;
    redisReply  *str;

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "hamrahi: %s: redis did not acknowledge the event",
                      hamrahi_route_name(ctx->route));
        return NGX_ERROR;
    }

    rc = NGX_OK;
    str = reply;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_INTEGER)
    {
        rc = reply->element[0]->integer == 1 ? NGX_OK : NGX_DECLINED;
        str = reply->element[1];
    }

    if (str->type != REDIS_REPLY_STRING) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "hamrahi: %s: redis refused the event: %*s",
                      hamrahi_route_name(ctx->route),
                      reply->type == REDIS_REPLY_ERROR ? reply->len : 0,
                      reply->str);
        return NGX_ERROR;
    }

    ngx_http_hamrahi_metrics_xadd_latency(
        ngx_http_hamrahi_metrics_now_usec() - ctx->sent_usec);

    id->data = (u_char *) str->str;
    id->len = str->len;

    return rc;
}


/* 409, with the id the first delivery was stored under */
static ngx_int_t
ngx_http_hamrahi_hooks_replayed(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, ngx_str_t *id)
{
    u_char  *body, *p;

    static const char  fmt[] =
        "{\"error\":\"replayed\",\"detail\":\"this signed request was "
        "already accepted; the event is stored\",\"id\":\"%V\"}";

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "hamrahi: %s hook refused: replay of %V",
                  hamrahi_route_name(ctx->route), id);

    ngx_http_hamrahi_metrics_reject("replayed");

    body = ngx_pnalloc(r->pool, sizeof(fmt) + id->len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, fmt, id);

    return ngx_http_hamrahi_hooks_send(r, ctx->route, NGX_HTTP_CONFLICT,
                                       "application/json", body, p - body);
}


static void
ngx_http_hamrahi_hooks_xadd_done(redisReply *reply, void *data)
{
    ngx_http_hamrahi_hooks_ctx_t  *ctx = data;
    ngx_http_request_t            *r = ctx->request;
    u_char                        *body, *p;
    ngx_str_t                      id;
    ngx_int_t                      rc;

    ctx->cmd = NULL;

    if (ngx_http_hamrahi_hooks_noscript(ctx, reply)) {
        return;
    }

    rc = ngx_http_hamrahi_hooks_stored(ctx, reply, &id);

    if (rc == NGX_ERROR) {
        rc = ngx_http_hamrahi_hooks_error(r, ctx->route,
                 NGX_HTTP_SERVICE_UNAVAILABLE, "redis_unavailable",
                 "the event store did not acknowledge the event; retry");
        ngx_http_hamrahi_hooks_finalize(ctx, rc);
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_hamrahi_hooks_finalize(ctx,
            ngx_http_hamrahi_hooks_replayed(r, ctx, &id));
        return;
    }

    body = ngx_pnalloc(r->pool, sizeof("{\"id\":\"\"}") + id.len);
    if (body == NULL) {
        ngx_http_hamrahi_hooks_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = ngx_sprintf(body, "{\"id\":\"%V\"}", &id);

    rc = ngx_http_hamrahi_hooks_send(r, ctx->route, NGX_HTTP_ACCEPTED,
                                     "application/json", body, p - body);
    ngx_http_hamrahi_hooks_finalize(ctx, rc);
}


static void
ngx_http_hamrahi_hooks_dial_xadd_done(redisReply *reply, void *data)
{
    ngx_http_hamrahi_hooks_ctx_t  *ctx = data;
    ngx_http_request_t            *r = ctx->request;
    u_char                        *key;
    ngx_str_t                      id;
    const char                    *argv[2];
    size_t                         lens[2];

    ctx->cmd = NULL;

    if (ngx_http_hamrahi_hooks_stored(ctx, reply, &id) == NGX_ERROR) {
        ngx_http_hamrahi_hooks_finalize(ctx,
            ngx_http_hamrahi_hooks_dial_hold(r, ctx, "event not stored"));
        return;
    }

    key = ngx_pnalloc(r->pool, sizeof(NGX_HTTP_HAMRAHI_TWIML_KEY)
                               + ctx->session.len + 1 + ctx->step.len);
    if (key == NULL) {
        ngx_http_hamrahi_hooks_finalize(ctx,
            ngx_http_hamrahi_hooks_dial_hold(r, ctx, "out of memory"));
        return;
    }

    argv[0] = "GET";
    lens[0] = 3;
    argv[1] = (const char *) key;
    lens[1] = ngx_sprintf(key, NGX_HTTP_HAMRAHI_TWIML_KEY "%V:%V",
                          &ctx->session, &ctx->step)
              - key;

    ctx->cmd = ngx_http_hamrahi_redis_command(
                   ngx_http_hamrahi_hooks_dial_twiml_done, ctx, 2, argv,
                   lens);
    if (ctx->cmd == NULL) {
        ngx_http_hamrahi_hooks_finalize(ctx,
            ngx_http_hamrahi_hooks_dial_hold(r, ctx, "redis unavailable"));
    }
}


static void
ngx_http_hamrahi_hooks_dial_twiml_done(redisReply *reply, void *data)
{
    ngx_http_hamrahi_hooks_ctx_t  *ctx = data;
    ngx_http_request_t            *r = ctx->request;
    u_char                        *doc;
    ngx_int_t                      rc;

    ctx->cmd = NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_STRING || reply->len == 0
        || reply->len > NGX_HTTP_HAMRAHI_TWIML_MAX)
    {
        ngx_http_hamrahi_hooks_finalize(ctx,
            ngx_http_hamrahi_hooks_dial_hold(r, ctx,
                reply == NULL ? "redis unavailable"
                              : "no call instruction stored yet"));
        return;
    }

    doc = ngx_pnalloc(r->pool, reply->len);
    if (doc == NULL) {
        ngx_http_hamrahi_hooks_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(doc, reply->str, reply->len);

    rc = ngx_http_hamrahi_hooks_send(r, ctx->route, NGX_HTTP_OK, "text/xml",
                                     doc, reply->len);
    ngx_http_hamrahi_hooks_finalize(ctx, rc);
}


/*
 * TwiML that keeps the caller on the line and asks again after a pause, a
 * bounded number of times: an emergency caller is never hung up because of
 * us. The redirect carries the dial outcome, which Twilio does not resend.
 */
static ngx_int_t
ngx_http_hamrahi_hooks_dial_hold(ngx_http_request_t *r,
    ngx_http_hamrahi_hooks_ctx_t *ctx, const char *why)
{
    size_t                         len;
    u_char                        *doc, *p;
    ngx_http_hamrahi_main_conf_t  *hmcf;

    static const char  head[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>";
    static const char  last[] =
        "<Say>We are sorry, your call cannot be connected right now. "
        "Please call the emergency number directly.</Say></Response>\n";

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_hamrahi_module);

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "hamrahi: dial: holding the caller (attempt %ui): %s",
                  ctx->attempt, why);

    len = sizeof(head) + sizeof(last) + 256 + hmcf->public_base_url.len
          + r->uri.len + ctx->session.len + ctx->step.len
          + ctx->dial_status.len;

    doc = ngx_pnalloc(r->pool, len);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(doc, head, sizeof(head) - 1);

    if (ctx->attempt >= NGX_HTTP_HAMRAHI_DIAL_HOLD_MAX) {
        p = ngx_cpymem(p, last, sizeof(last) - 1);

    } else {
        p = ngx_sprintf(p, "<Say>Please stay on the line.</Say>"
                           "<Pause length=\"2\"/>"
                           "<Redirect method=\"POST\">%V%V?session=%V"
                           "&amp;step=%V&amp;attempt=%ui",
                        &hmcf->public_base_url, &r->uri, &ctx->session,
                        &ctx->step, ctx->attempt + 1);

        if (ctx->dial_status.len) {
            p = ngx_sprintf(p, "&amp;DialCallStatus=%V", &ctx->dial_status);
        }

        p = ngx_sprintf(p, "</Redirect></Response>\n");
    }

    return ngx_http_hamrahi_hooks_send(r, ctx->route, NGX_HTTP_OK, "text/xml",
                                       doc, p - doc);
}


static ngx_int_t
ngx_http_hamrahi_hooks_send(ngx_http_request_t *r, hamrahi_route_t route,
    ngx_uint_t status, const char *type, u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    ngx_http_hamrahi_metrics_request(route, status);

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_length_n = len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_hamrahi_hooks_error(ngx_http_request_t *r, hamrahi_route_t route,
    ngx_uint_t status, const char *code, const char *detail)
{
    size_t            dlen;
    u_char           *body, *p;
    ngx_table_elt_t  *h;

    ngx_http_hamrahi_metrics_reject(code);

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE
        || status == NGX_HTTP_NOT_ALLOWED)
    {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;

        if (status == NGX_HTTP_NOT_ALLOWED) {
            ngx_str_set(&h->key, "Allow");
            ngx_str_set(&h->value, "POST");

        } else {
            ngx_str_set(&h->key, "Retry-After");
            ngx_str_set(&h->value, "1");
        }
    }

    dlen = ngx_strlen(detail);

    body = ngx_pnalloc(r->pool, sizeof("{\"error\":\"\",\"detail\":\"\"}")
                                + ngx_strlen(code) + dlen
                                + ngx_escape_json(NULL, (u_char *) detail,
                                                  dlen));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"error\":\"%s\",\"detail\":\"", code);
    p = (u_char *) ngx_escape_json(p, (u_char *) detail, dlen);
    p = ngx_cpymem(p, "\"}", 2);

    return ngx_http_hamrahi_hooks_send(r, route, status, "application/json",
                                       body, p - body);
}


/* an error before the body was read: discard it, keep the connection */
static ngx_int_t
ngx_http_hamrahi_hooks_reject_early(ngx_http_request_t *r,
    hamrahi_route_t route, ngx_uint_t status, const char *code,
    const char *detail)
{
    ngx_int_t  rc;

    /* no 100 Continue: the body is refused before it is sent */
    r->expect_tested = 1;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_hamrahi_hooks_error(r, route, status, code, detail);
}


/*
 * nginx refused the body itself (the error_page set up in the module's merge
 * brought the request back here): say so in our JSON.
 */
static ngx_int_t
ngx_http_hamrahi_hooks_core_error(ngx_http_request_t *r,
    hamrahi_route_t route)
{
    ngx_uint_t  status;

    status = r->err_status;

    if (status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        return ngx_http_hamrahi_hooks_reject_early(r, route, status,
                   "body_too_large", "the body is larger than the hook limit");
    }

    if (status == NGX_HTTP_BAD_REQUEST) {
        return ngx_http_hamrahi_hooks_reject_early(r, route, status,
                   hamrahi_route_is_telephony(route) ? "invalid_form"
                                                     : "invalid_json",
                   "the body could not be read (broken chunked encoding)");
    }

    return status;
}
