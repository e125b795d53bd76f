/*
 * One panel WebSocket connection: the token and the handshake are checked
 * before the 101; after it the module owns the connection (own read and
 * write handlers) until the close handshake ends, the peer goes away, or
 * nginx quits (close 1001).
 *
 * Thousands of panels sit idle for hours, so the first event after the 101
 * detaches the panel from its HTTP request: the access log line is written,
 * the request pool and the header buffers are freed, and what is left is
 * the connection, its small pool and the panel itself (about 2 KiB).
 *
 * Nothing here closes a panel synchronously from outside its own events:
 * ngx_http_hamrahi_panel_send() and ..._close() queue and post the write
 * event, and only the panel's event handlers call ..._finish().
 */

#include "hamrahi_panel.h"
#include "hamrahi_fanout.h"
#include "hamrahi_metrics.h"


#define NGX_HTTP_HAMRAHI_PANEL_READS_PER_EVENT  16
#define NGX_HTTP_HAMRAHI_UPGRADE_REQUIRED       426     /* nginx has no name */


static ngx_int_t ngx_http_hamrahi_panel_reject(ngx_http_request_t *r,
    ngx_uint_t status, const char *error, const char *detail);
static ngx_int_t ngx_http_hamrahi_panel_add_header(ngx_http_request_t *r,
    const char *name, const char *value);
static ngx_uint_t ngx_http_hamrahi_panel_origin_allowed(ngx_http_request_t *r,
    ngx_array_t *origins);
static ngx_int_t ngx_http_hamrahi_panel_token(ngx_http_request_t *r,
    ngx_str_t *token);
static ngx_int_t ngx_http_hamrahi_panel_resume_args(ngx_http_request_t *r,
    uint64_t *since, ngx_str_t *epoch);
static ngx_int_t ngx_http_hamrahi_panel_check_upgrade(ngx_http_request_t *r,
    char *accept, const char **error, const char **detail);
static ngx_uint_t ngx_http_hamrahi_panel_has_token(ngx_table_elt_t *h,
    const char *token);
static ngx_int_t ngx_http_hamrahi_panel_start(ngx_http_request_t *r,
    ngx_http_hamrahi_panel_loc_conf_t *plcf, hamrahi_jwt_claims_t *claims,
    const char *accept, uint64_t since, ngx_str_t *epoch);
static void ngx_http_hamrahi_panel_upgraded(ngx_event_t *ev);
static void ngx_http_hamrahi_panel_detach(ngx_connection_t *c);
static void ngx_http_hamrahi_panel_free_buffers(ngx_connection_t *c,
    ngx_http_connection_t *hc);
static u_char *ngx_http_hamrahi_panel_log_error(ngx_log_t *log, u_char *buf,
    size_t len);
static void ngx_http_hamrahi_panel_read_event(ngx_event_t *rev);
static void ngx_http_hamrahi_panel_write_event(ngx_event_t *wev);
static ngx_int_t ngx_http_hamrahi_panel_timeout(ngx_http_hamrahi_panel_t *p);
static void ngx_http_hamrahi_panel_consume(ngx_http_hamrahi_panel_t *p,
    u_char *buf, size_t len);
static void ngx_http_hamrahi_panel_control(ngx_http_hamrahi_panel_t *p,
    int opcode, const u_char *payload, size_t len);
static void ngx_http_hamrahi_panel_close(ngx_http_hamrahi_panel_t *p,
    uint16_t code, const char *reason, ngx_uint_t wait_for_peer);
static ngx_int_t ngx_http_hamrahi_panel_queue(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_frame_t *f, ngx_uint_t droppable);
static void ngx_http_hamrahi_panel_drop_unsent(ngx_http_hamrahi_panel_t *p);
static ngx_int_t ngx_http_hamrahi_panel_flush(ngx_http_hamrahi_panel_t *p);
static void ngx_http_hamrahi_panel_free_list(ngx_http_hamrahi_out_t *out);
static void ngx_http_hamrahi_panel_finish(ngx_http_hamrahi_panel_t *p);
static ngx_http_hamrahi_frame_t *ngx_http_hamrahi_frame_alloc(size_t len,
    ngx_log_t *log);


/* a worker reads one connection at a time and parses all it read at once */
static u_char  ngx_http_hamrahi_panel_buf[16384];


ngx_int_t
ngx_http_hamrahi_panel_handler(ngx_http_request_t *r)
{
    uint64_t                            since;
    ngx_int_t                           rc;
    ngx_str_t                           token, epoch;
    hamrahi_jwt_status_t                st;
    hamrahi_jwt_claims_t                claims;
    const char                         *error, *detail;
    ngx_http_hamrahi_panel_loc_conf_t  *plcf;
    char                                accept[HAMRAHI_WS_ACCEPT_LEN + 1];

    if (r->method != NGX_HTTP_GET) {
        return ngx_http_hamrahi_panel_reject(r, NGX_HTTP_NOT_ALLOWED,
                   "method_not_allowed", "the panel WebSocket takes GET");
    }

    if (r->http_version != NGX_HTTP_VERSION_11) {
        return ngx_http_hamrahi_panel_reject(r, NGX_HTTP_BAD_REQUEST,
                   "http_version",
                   "a WebSocket upgrade needs HTTP/1.1 (not HTTP/2)");
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_hamrahi_panel_module);

    if (!ngx_http_hamrahi_panel_origin_allowed(r, plcf->origins)) {
        return ngx_http_hamrahi_panel_reject(r, NGX_HTTP_FORBIDDEN,
                   "forbidden_origin", "this Origin may not open the panel");
    }

    rc = ngx_http_hamrahi_panel_token(r, &token);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_hamrahi_panel_reject(r, NGX_HTTP_UNAUTHORIZED,
                   "unauthorized",
                   "no token: send Authorization: Bearer or access_token");
    }

    st = hamrahi_jwt_verify((const char *) token.data, token.len,
                            plcf->secret.data, plcf->secret.len, ngx_time(),
                            NGX_HTTP_HAMRAHI_PANEL_JWT_LEEWAY, &claims);
    if (st != HAMRAHI_JWT_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "hamrahi panel: token refused: %s",
                      hamrahi_jwt_reason(st));
        return ngx_http_hamrahi_panel_reject(r, NGX_HTTP_UNAUTHORIZED,
                   "unauthorized", hamrahi_jwt_reason(st));
    }

    rc = ngx_http_hamrahi_panel_check_upgrade(r, accept, &error, &detail);
    if (rc != NGX_OK) {
        return ngx_http_hamrahi_panel_reject(r, rc, error, detail);
    }

    rc = ngx_http_hamrahi_panel_resume_args(r, &since, &epoch);
    if (rc == NGX_ERROR) {
        return ngx_http_hamrahi_panel_reject(r, NGX_HTTP_BAD_REQUEST,
                   "bad_resume", "since must be a seq and come with epoch");
    }

    return ngx_http_hamrahi_panel_start(r, plcf, &claims, accept, since,
                                        rc == NGX_OK ? &epoch : NULL);
}


/* A JSON error, as the hooks answer: {"error":"<code>","detail":"..."}. */
static ngx_int_t
ngx_http_hamrahi_panel_reject(ngx_http_request_t *r, ngx_uint_t status,
    const char *error, const char *detail)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = sizeof("{\"error\":\"\",\"detail\":\"\"}\n") - 1
          + ngx_strlen(error) + ngx_strlen(detail);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last, "{\"error\":\"%s\",\"detail\":\"%s\"}\n",
                          error, detail);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = NGX_OK;

    if (status == NGX_HTTP_UNAUTHORIZED) {
        rc = ngx_http_hamrahi_panel_add_header(r, "WWW-Authenticate",
                                               "Bearer");
    } else if (status == NGX_HTTP_NOT_ALLOWED) {
        rc = ngx_http_hamrahi_panel_add_header(r, "Allow", "GET");

    } else if (status == NGX_HTTP_HAMRAHI_UPGRADE_REQUIRED) {
        ngx_str_set(&r->headers_out.status_line, "426 Upgrade Required");
        rc = ngx_http_hamrahi_panel_add_header(r, "Sec-WebSocket-Version",
                                               "13");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_hamrahi_panel_add_header(ngx_http_request_t *r, const char *name,
    const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


/*
 * Browsers always send Origin: a page of another site must not ride on a
 * panel's token (cross-site WebSocket hijacking). Other clients send none.
 */
static ngx_uint_t
ngx_http_hamrahi_panel_origin_allowed(ngx_http_request_t *r,
    ngx_array_t *origins)
{
    ngx_str_t        *allowed;
    ngx_uint_t        i;
    ngx_table_elt_t  *origin;

    if (origins == NULL) {
        return 1;
    }

    origin = ngx_http_hamrahi_request_header(r, "Origin");
    if (origin == NULL) {
        return 1;
    }

    allowed = origins->elts;

    for (i = 0; i < origins->nelts; i++) {
        if (allowed[i].len == origin->value.len
            && ngx_strncasecmp(allowed[i].data, origin->value.data,
                               origin->value.len) == 0)
        {
            return 1;
        }
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "hamrahi panel: origin \"%V\" not allowed", &origin->value);

    return 0;
}


/*
 * The token from "Authorization: Bearer", else from the access_token query
 * parameter (browsers cannot set headers on a WebSocket). NGX_DECLINED: none.
 */
static ngx_int_t
ngx_http_hamrahi_panel_token(ngx_http_request_t *r, ngx_str_t *token)
{
    u_char           *dst, *src;
    ngx_str_t         arg;
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h != NULL && h->value.len > 7
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0)
    {
        token->data = h->value.data + 7;
        token->len = h->value.len - 7;

        while (token->len && token->data[0] == ' ') {
            token->data++;
            token->len--;
        }

        return token->len ? NGX_OK : NGX_DECLINED;
    }

    if (ngx_http_arg(r, (u_char *) "access_token", 12, &arg) != NGX_OK
        || arg.len == 0)
    {
        return NGX_DECLINED;
    }

    dst = ngx_pnalloc(r->pool, arg.len);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    token->data = dst;
    src = arg.data;
    ngx_unescape_uri(&dst, &src, arg.len, 0);
    token->len = dst - token->data;

    /*
     * The request line shares these bytes and goes to the access and error
     * logs: a bearer token must not.
     */
    ngx_memset(arg.data, '*', arg.len);

    return token->len ? NGX_OK : NGX_DECLINED;
}


/*
 * ?since=<seq>&epoch=<epoch> (docs/contracts.md): NGX_OK with both,
 * NGX_DECLINED with neither, NGX_ERROR when they are malformed or alone.
 */
static ngx_int_t
ngx_http_hamrahi_panel_resume_args(ngx_http_request_t *r, uint64_t *since,
    ngx_str_t *epoch)
{
    size_t      i;
    ngx_str_t   seq, ep;
    ngx_uint_t  has_seq, has_epoch;

    has_seq = ngx_http_arg(r, (u_char *) "since", 5, &seq) == NGX_OK;
    has_epoch = ngx_http_arg(r, (u_char *) "epoch", 5, &ep) == NGX_OK;

    if (!has_seq && !has_epoch) {
        return NGX_DECLINED;
    }

    /* 19 digits cannot overflow 64 bits */
    if (!has_seq || !has_epoch || seq.len == 0 || seq.len > 19
        || ep.len == 0 || ep.len > NGX_HTTP_HAMRAHI_PANEL_EPOCH_MAX)
    {
        return NGX_ERROR;
    }

    *since = 0;

    for (i = 0; i < seq.len; i++) {
        if (seq.data[i] < '0' || seq.data[i] > '9') {
            return NGX_ERROR;
        }
        *since = *since * 10 + (seq.data[i] - '0');
    }

    for (i = 0; i < ep.len; i++) {
        if (ep.data[i] <= ' ' || ep.data[i] >= 0x7f || ep.data[i] == '%') {
            return NGX_ERROR;
        }
    }

    *epoch = ep;

    return NGX_OK;
}


/*
 * RFC 6455 section 4.2.1. NGX_OK and accept filled, or the HTTP status to
 * answer with *error and *detail.
 */
static ngx_int_t
ngx_http_hamrahi_panel_check_upgrade(ngx_http_request_t *r, char *accept,
    const char **error, const char **detail)
{
    ngx_table_elt_t  *version, *key, *connection;

    /* nginx keeps no pointer to Connection: look it up */
    connection = ngx_http_hamrahi_request_header(r, "Connection");

    if (!ngx_http_hamrahi_panel_has_token(r->headers_in.upgrade, "websocket")
        || !ngx_http_hamrahi_panel_has_token(connection, "upgrade"))
    {
        *error = "not_websocket";
        *detail = "expected Upgrade: websocket and Connection: Upgrade";
        return NGX_HTTP_BAD_REQUEST;
    }

    version = ngx_http_hamrahi_request_header(r, "Sec-WebSocket-Version");

    if (version == NULL || version->value.len != 2
        || ngx_strncmp(version->value.data, "13", 2) != 0)
    {
        *error = "websocket_version";
        *detail = "only Sec-WebSocket-Version 13";
        return NGX_HTTP_HAMRAHI_UPGRADE_REQUIRED;
    }

    key = ngx_http_hamrahi_request_header(r, "Sec-WebSocket-Key");

    if (key == NULL
        || hamrahi_ws_accept_key((const char *) key->value.data,
                                 key->value.len, accept) != 0)
    {
        *error = "websocket_key";
        *detail = "Sec-WebSocket-Key must be 16 bytes in base64";
        return NGX_HTTP_BAD_REQUEST;
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        *error = "not_websocket";
        *detail = "a WebSocket handshake has no body";
        return NGX_HTTP_BAD_REQUEST;
    }

    return NGX_OK;
}


/* Is token one of the comma-separated values of h (case-insensitive)? */
static ngx_uint_t
ngx_http_hamrahi_panel_has_token(ngx_table_elt_t *h, const char *token)
{
    size_t   n;
    u_char  *p, *end, *start;

    if (h == NULL) {
        return 0;
    }

    n = ngx_strlen(token);
    p = h->value.data;
    end = p + h->value.len;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }

        if ((size_t) (p - start) == n
            && ngx_strncasecmp(start, (u_char *) token, n) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Take over the connection: queue the 101 ourselves (the HTTP filters have
 * no business with what follows), count the request so that nginx does not
 * finalize it, and swap in our own event handlers.
 */
static ngx_int_t
ngx_http_hamrahi_panel_start(ngx_http_request_t *r,
    ngx_http_hamrahi_panel_loc_conf_t *plcf, hamrahi_jwt_claims_t *claims,
    const char *accept, uint64_t since, ngx_str_t *epoch)
{
    u_char                     *last;
    u_char                      head[256];
    ngx_connection_t           *c;
    ngx_http_hamrahi_frame_t   *f;
    ngx_http_hamrahi_panel_t   *p;
    ngx_http_core_loc_conf_t   *clcf;

    c = r->connection;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    /* outlives the request: freed by ngx_http_hamrahi_panel_finish() */
    p = ngx_calloc(sizeof(ngx_http_hamrahi_panel_t), c->log);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p->connection = c;
    p->send_timeout = clcf->send_timeout;
    p->claims = *claims;
    p->out_last = &p->out;
    p->held_last = &p->held;
    p->queue_limit = plcf->send_queue;
    p->ping_interval = plcf->ping_interval;
    hamrahi_ws_parser_init(&p->parser, plcf->max_message);

    last = ngx_sprintf(head, "HTTP/1.1 101 Switching Protocols" CRLF
                             "Upgrade: websocket" CRLF
                             "Connection: Upgrade" CRLF
                             "Sec-WebSocket-Accept: %s" CRLF CRLF, accept);

    f = ngx_http_hamrahi_frame_alloc(last - head, c->log);
    if (f == NULL) {
        ngx_free(p);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(f->data, head, f->len);

    if (epoch != NULL) {
        /* from now on live updates wait for the replay */
        p->replaying = 1;
        p->last_seq = since;
        p->resume_epoch_len = ngx_cpymem(p->resume_epoch, epoch->data,
                                         epoch->len)
                              - p->resume_epoch;
        p->epoch = ngx_crc32_short(epoch->data, epoch->len);
    }

    if (ngx_http_hamrahi_fanout_add(p) != NGX_OK) {
        ngx_http_hamrahi_frame_release(f);
        ngx_free(p);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_hamrahi_panel_queue(p, f, 0) != NGX_OK) {
        ngx_http_hamrahi_fanout_remove(p);
        ngx_http_hamrahi_frame_release(f);
        ngx_free(p);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_hamrahi_frame_release(f);
    ngx_http_set_ctx(r, p, ngx_http_hamrahi_panel_module);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->header_size = last - head;
    r->header_sent = 1;
    r->keepalive = 0;
    r->main->count++;

    c->log->action = "serving a panel websocket";
    /* the first event detaches the panel; the 101 queued above posts one */
    c->read->handler = ngx_http_hamrahi_panel_upgraded;
    c->write->handler = ngx_http_hamrahi_panel_upgraded;
    /* lets nginx's graceful shutdown call us with c->close set (1001) */
    c->idle = 1;

    if (clcf->tcp_nodelay) {
        /* updates are small and late ones are useless: no Nagle delay */
        (void) ngx_tcp_nodelay(c);
    }

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "hamrahi panel: open for \"%s\" (%s) of station \"%s\"",
                  p->claims.sub,
                  p->claims.role == HAMRAHI_ROLE_SUPERVISOR ? "supervisor"
                                                            : "operator",
                  p->claims.station);

    ngx_http_hamrahi_metrics_panel_open();

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (p->ping_interval) {
        ngx_add_timer(c->read, p->ping_interval);
    }

    /* frames the client sent right behind its request */
    if (r->header_in->pos < r->header_in->last) {
        ngx_http_hamrahi_panel_consume(p, r->header_in->pos,
                                       r->header_in->last - r->header_in->pos);
        r->header_in->pos = r->header_in->last;
    }

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    if (p->replaying && !p->close_sent) {
        ngx_http_hamrahi_fanout_replay(p);
    }

    return NGX_DONE;
}


/*
 * The first event of an upgraded connection. The content handler could not
 * let go of its request itself: nginx still uses it when the handler
 * returns.
 */
static void
ngx_http_hamrahi_panel_upgraded(ngx_event_t *ev)
{
    ngx_http_hamrahi_panel_detach(ev->data);

    if (ev->write) {
        ngx_http_hamrahi_panel_write_event(ev);

    } else {
        ngx_http_hamrahi_panel_read_event(ev);
    }
}


/*
 * From here on c->data is the panel. ngx_http_free_request() runs the log
 * phase (the access log line shows the 101) and destroys the request pool;
 * the connection stays, as it does for a keepalive request.
 */
static void
ngx_http_hamrahi_panel_detach(ngx_connection_t *c)
{
    ngx_http_request_t        *r;
    ngx_http_connection_t     *hc;
    ngx_http_hamrahi_panel_t  *p;

    r = c->data;
    hc = r->http_connection;
    p = ngx_http_get_module_ctx(r, ngx_http_hamrahi_panel_module);

    ngx_http_free_request(r, 0);

    c->data = p;
    ngx_http_hamrahi_panel_free_buffers(c, hc);

    c->log->action = "serving a panel websocket";
    c->log->handler = ngx_http_hamrahi_panel_log_error;
    c->log->data = p;
    c->read->handler = ngx_http_hamrahi_panel_read_event;
    c->write->handler = ngx_http_hamrahi_panel_write_event;
}


/*
 * The request's header buffers: c->buffer and the large ones, all from the
 * connection pool as large allocations. Their bytes were consumed by
 * ngx_http_hamrahi_panel_start(); reads now go to a buffer per worker.
 */
static void
ngx_http_hamrahi_panel_free_buffers(ngx_connection_t *c,
    ngx_http_connection_t *hc)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, *lists[2];
    ngx_uint_t    i;

    b = c->buffer;

    if (b != NULL && b->start != NULL
        && ngx_pfree(c->pool, b->start) == NGX_OK)
    {
        b->start = NULL;
        b->pos = NULL;
        b->last = NULL;
        b->end = NULL;
    }

    lists[0] = hc->busy;
    lists[1] = hc->free;

    for (i = 0; i < 2; i++) {
        for (cl = lists[i]; cl; cl = cl->next) {
            (void) ngx_pfree(c->pool, cl->buf->start);
        }
    }

    hc->busy = NULL;
    hc->free = NULL;
    hc->nbusy = 0;
}


/* ", client: ..., panel: "sub" of station "st"" after every error line */
static u_char *
ngx_http_hamrahi_panel_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char                    *p;
    ngx_http_hamrahi_panel_t  *panel;

    panel = log->data;
    p = buf;

    if (log->action) {
        p = ngx_snprintf(p, len, " while %s", log->action);
        len -= p - buf;
        buf = p;
    }

    p = ngx_snprintf(p, len, ", client: %V, panel: \"%s\" of station \"%s\"",
                     &panel->connection->addr_text, panel->claims.sub,
                     panel->claims.station);

    return p;
}


static void
ngx_http_hamrahi_panel_read_event(ngx_event_t *rev)
{
    ssize_t                    n;
    ngx_uint_t                 i, got;
    ngx_connection_t          *c;
    ngx_http_hamrahi_panel_t  *p;

    c = rev->data;
    p = c->data;

    if (c->error) {
        /* nginx gave up on us (worker_shutdown_timeout) */
        ngx_http_hamrahi_panel_finish(p);
        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;

        if (ngx_http_hamrahi_panel_timeout(p) == NGX_DONE) {
            return;
        }
    }

    if (c->close && !p->close_sent) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "hamrahi panel: nginx is shutting down, close 1001");
        ngx_http_hamrahi_panel_close(p, HAMRAHI_WS_CLOSE_GOING_AWAY,
                                     "server restarting", 1);

        /*
         * ngx_close_idle_connections() calls us outside the event loop: a
         * posted write would wait for the next I/O or timer (the close
         * wait), so send the close frame now. Its input comes as events.
         */
        ngx_http_hamrahi_panel_write_event(c->write);
        return;
    }

    got = 0;

    for (i = 0; rev->ready && i < NGX_HTTP_HAMRAHI_PANEL_READS_PER_EVENT; i++)
    {
        n = c->recv(c, ngx_http_hamrahi_panel_buf,
                    sizeof(ngx_http_hamrahi_panel_buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "hamrahi panel: client went away%s",
                          p->close_received ? "" : " without a close frame");

            /* a half-closed peer still reads: let our close frame go */
            if (n == 0 && p->close_sent) {
                (void) ngx_http_hamrahi_panel_flush(p);
            }

            ngx_http_hamrahi_panel_finish(p);
            return;
        }

        got = 1;
        ngx_http_hamrahi_panel_consume(p, ngx_http_hamrahi_panel_buf, n);
    }

    if (rev->ready && i == NGX_HTTP_HAMRAHI_PANEL_READS_PER_EVENT) {
        /* let other connections in before reading more */
        ngx_post_event(rev, &ngx_posted_events);
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_hamrahi_panel_finish(p);
        return;
    }

    if (got) {
        p->ping_sent = 0;

        if (p->ping_interval && !p->close_sent) {
            ngx_add_timer(rev, p->ping_interval);
        }
    }
}


/*
 * The read timer means, in this order: our close frame went unanswered; our
 * ping went unanswered (the peer is dead); the connection is idle (ping).
 */
static ngx_int_t
ngx_http_hamrahi_panel_timeout(ngx_http_hamrahi_panel_t *p)
{
    ngx_connection_t  *c;

    c = p->connection;

    if (p->close_sent) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "hamrahi panel: no close frame from the client");
        ngx_http_hamrahi_panel_finish(p);
        return NGX_DONE;
    }

    if (p->ping_sent) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "hamrahi panel: no answer to ping within %M ms",
                      p->ping_interval);
        c->timedout = 1;
        ngx_http_hamrahi_panel_finish(p);
        return NGX_DONE;
    }

    ngx_http_hamrahi_panel_control(p, HAMRAHI_WS_OP_PING, NULL, 0);
    p->ping_sent = 1;
    ngx_add_timer(c->read, p->ping_interval);

    return NGX_OK;
}


static void
ngx_http_hamrahi_panel_consume(ngx_http_hamrahi_panel_t *p, u_char *buf,
    size_t len)
{
    size_t              used;
    uint16_t            code;
    hamrahi_ws_event_t  ev;

    for ( ;; ) {
        used = hamrahi_ws_parse(&p->parser, buf, len, &ev);
        buf += used;
        len -= used;

        switch (ev.kind) {

        case HAMRAHI_WS_EV_NONE:
            return;

        case HAMRAHI_WS_EV_DATA:
            /* panels only listen: their messages are read and dropped */
            break;

        case HAMRAHI_WS_EV_PING:
            if (!p->close_sent) {
                ngx_http_hamrahi_panel_control(p, HAMRAHI_WS_OP_PONG,
                                               ev.data, ev.len);
            }
            break;

        case HAMRAHI_WS_EV_PONG:
            p->ping_sent = 0;
            break;

        case HAMRAHI_WS_EV_CLOSE:
            p->close_received = 1;
            code = ev.close_code == HAMRAHI_WS_CLOSE_NO_STATUS
                   ? HAMRAHI_WS_CLOSE_NORMAL : ev.close_code;
            ngx_http_hamrahi_panel_close(p, code, NULL, 0);
            break;

        case HAMRAHI_WS_EV_ERROR:
            ngx_log_error(NGX_LOG_INFO, p->connection->log, 0,
                          "hamrahi panel: %s, close %d", ev.error,
                          (int) ev.close_code);
            ngx_http_hamrahi_panel_close(p, ev.close_code, ev.error, 0);
            break;
        }
    }
}


static void
ngx_http_hamrahi_panel_control(ngx_http_hamrahi_panel_t *p, int opcode,
    const u_char *payload, size_t len)
{
    ngx_http_hamrahi_frame_t  *f;

    f = ngx_http_hamrahi_frame_create(opcode, payload, len,
                                      p->connection->log);
    if (f == NULL) {
        ngx_http_hamrahi_panel_close(p, HAMRAHI_WS_CLOSE_INTERNAL, NULL, 0);
        return;
    }

    ngx_http_hamrahi_panel_send(p, f);
    ngx_http_hamrahi_frame_release(f);
}


void
ngx_http_hamrahi_panel_send(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_frame_t *f)
{
    ssize_t                  n;
    ngx_connection_t        *c;

    if (p->close_sent) {
        return;
    }

    c = p->connection;

    /*
     * The common case, written at once: no queue entry, no posted event,
     * and the fan-out's latency is one send() per panel. An error goes on
     * to the queue below, where the write event meets it again.
     */
    if (p->out == NULL && c->write->ready) {
        n = c->send(c, f->data, f->len);

        if (n == (ssize_t) f->len) {
            if (f->data[0] == (0x80 | HAMRAHI_WS_OP_TEXT)) {
                ngx_http_hamrahi_metrics_panel_delivered(1);
            }
            return;
        }

        if (n > 0) {
            if (ngx_http_hamrahi_panel_queue(p, f, 1) != NGX_OK) {
                ngx_http_hamrahi_panel_close(p, HAMRAHI_WS_CLOSE_INTERNAL,
                                             NULL, 0);
                return;
            }

            p->out->sent = n;
            p->queued -= n;
            return;
        }
    }

    /*
     * A burst read from Redis is queued before the posted write event runs:
     * give the socket its chance before calling the client slow. An error
     * here is met again, and acted on, by the write event.
     */
    if (p->queued + f->len > p->queue_limit) {
        (void) ngx_http_hamrahi_panel_flush(p);
    }

    /* one frame is always let in, so a big update cannot cut everybody */
    if (p->queued && p->queued + f->len > p->queue_limit) {
        ngx_log_error(NGX_LOG_WARN, p->connection->log, 0,
                      "hamrahi panel: slow consumer, %uz bytes unsent, "
                      "close 1008", p->queued);
        ngx_http_hamrahi_metrics_panel_slow_cut();
        ngx_http_hamrahi_panel_close(p, HAMRAHI_WS_CLOSE_POLICY,
                                     "slow consumer", 0);
        return;
    }

    if (ngx_http_hamrahi_panel_queue(p, f, 1) != NGX_OK) {
        ngx_http_hamrahi_panel_close(p, HAMRAHI_WS_CLOSE_INTERNAL, NULL, 0);
    }
}


void
ngx_http_hamrahi_panel_update(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_frame_t *f, uint64_t seq, uint32_t epoch)
{
    ngx_http_hamrahi_out_t  *out;

    if (p->close_sent) {
        return;
    }

    if (!p->replaying) {
        ngx_http_hamrahi_panel_deliver(p, f, seq, epoch);
        return;
    }

    if (p->held_bytes + f->len > p->queue_limit) {
        ngx_log_error(NGX_LOG_WARN, p->connection->log, 0,
                      "hamrahi panel: %uz bytes of updates wait for the "
                      "replay, close 1008", p->held_bytes);
        ngx_http_hamrahi_metrics_panel_slow_cut();
        ngx_http_hamrahi_panel_close(p, HAMRAHI_WS_CLOSE_POLICY,
                                     "slow consumer", 0);
        return;
    }

    out = ngx_alloc(sizeof(ngx_http_hamrahi_out_t), p->connection->log);
    if (out == NULL) {
        ngx_http_hamrahi_panel_close(p, HAMRAHI_WS_CLOSE_INTERNAL, NULL, 0);
        return;
    }

    out->next = NULL;
    out->frame = f;
    out->sent = 0;
    out->seq = seq;
    out->epoch = epoch;
    out->droppable = 1;
    f->refs++;

    *p->held_last = out;
    p->held_last = &out->next;
    p->held_bytes += f->len;
}


/* The one place that decides whether an update reaches the panel. */
void
ngx_http_hamrahi_panel_deliver(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_frame_t *f, uint64_t seq, uint32_t epoch)
{
    if (epoch && p->epoch && epoch != p->epoch) {
        /* the log was reset: its seqs start over */
        ngx_http_hamrahi_panel_resync(p);
    }

    if (epoch) {
        p->epoch = epoch;
    }

    if (seq && seq <= p->last_seq) {
        return;
    }

    if (seq) {
        p->last_seq = seq;
    }

    ngx_http_hamrahi_panel_send(p, f);
}


void
ngx_http_hamrahi_panel_resync(ngx_http_hamrahi_panel_t *p)
{
    static const u_char        text[] = "{\"type\":\"resync_required\"}";
    ngx_http_hamrahi_frame_t  *f;

    ngx_log_error(NGX_LOG_INFO, p->connection->log, 0,
                  "hamrahi panel: resync_required after seq %uL",
                  p->last_seq);

    p->last_seq = 0;
    p->epoch = 0;

    ngx_http_hamrahi_metrics_panel_resync();

    f = ngx_http_hamrahi_frame_create(HAMRAHI_WS_OP_TEXT, text,
                                      sizeof(text) - 1, p->connection->log);
    if (f == NULL) {
        ngx_http_hamrahi_panel_close(p, HAMRAHI_WS_CLOSE_INTERNAL, NULL, 0);
        return;
    }

    ngx_http_hamrahi_panel_send(p, f);
    ngx_http_hamrahi_frame_release(f);
}


void
ngx_http_hamrahi_panel_go_live(ngx_http_hamrahi_panel_t *p)
{
    ngx_http_hamrahi_out_t  *out, *next;

    out = p->held;
    p->held = NULL;
    p->held_last = &p->held;
    p->held_bytes = 0;
    p->replaying = 0;
    p->replay_wait = 0;

    for ( /* void */ ; out; out = next) {
        next = out->next;

        if (!p->close_sent) {
            ngx_http_hamrahi_panel_deliver(p, out->frame, out->seq,
                                           out->epoch);
        }

        ngx_http_hamrahi_frame_release(out->frame);
        ngx_free(out);
    }
}


static void
ngx_http_hamrahi_panel_free_list(ngx_http_hamrahi_out_t *out)
{
    ngx_http_hamrahi_out_t  *next;

    for ( /* void */ ; out; out = next) {
        next = out->next;
        ngx_http_hamrahi_frame_release(out->frame);
        ngx_free(out);
    }
}


/*
 * Queue a close frame after whatever frame is half sent, dropping the
 * updates not started. With wait_for_peer the connection stays open for the
 * peer's close frame, bounded by NGX_HTTP_HAMRAHI_PANEL_CLOSE_WAIT.
 */
static void
ngx_http_hamrahi_panel_close(ngx_http_hamrahi_panel_t *p, uint16_t code,
    const char *reason, ngx_uint_t wait_for_peer)
{
    u_char                     buf[2 + HAMRAHI_WS_CONTROL_MAX];
    size_t                     len;
    ngx_event_t               *rev;
    ngx_http_hamrahi_frame_t  *f;

    rev = p->connection->read;

    if (p->close_sent) {
        /* the peer answered ours: finish once the queue is out */
        p->wait_for_peer = 0;
        ngx_post_event(p->connection->write, &ngx_posted_events);
        return;
    }

    p->close_sent = 1;
    p->close_code = code;
    p->wait_for_peer = wait_for_peer && !p->close_received;

    ngx_http_hamrahi_panel_drop_unsent(p);

    len = hamrahi_ws_close_frame(buf, code, reason);
    f = ngx_http_hamrahi_frame_alloc(len, p->connection->log);

    if (f != NULL) {
        ngx_memcpy(f->data, buf, len);

        if (ngx_http_hamrahi_panel_queue(p, f, 0) != NGX_OK) {
            p->wait_for_peer = 0;
        }

        ngx_http_hamrahi_frame_release(f);

    } else {
        p->wait_for_peer = 0;
    }

    /* from now on the read timer bounds the whole closing */
    ngx_add_timer(rev, NGX_HTTP_HAMRAHI_PANEL_CLOSE_WAIT);

    if (!p->connection->write->posted) {
        ngx_post_event(p->connection->write, &ngx_posted_events);
    }
}


static ngx_int_t
ngx_http_hamrahi_panel_queue(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_frame_t *f, ngx_uint_t droppable)
{
    ngx_http_hamrahi_out_t  *out;

    out = ngx_alloc(sizeof(ngx_http_hamrahi_out_t), p->connection->log);
    if (out == NULL) {
        return NGX_ERROR;
    }

    out->next = NULL;
    out->frame = f;
    out->sent = 0;
    out->droppable = droppable;
    f->refs++;

    *p->out_last = out;
    p->out_last = &out->next;
    p->queued += f->len;

    if (!p->connection->write->posted) {
        ngx_post_event(p->connection->write, &ngx_posted_events);
    }

    return NGX_OK;
}


/*
 * Drop queued updates that were not started. A frame half sent, the 101
 * and control frames stay: the peer must see whole frames, and the
 * handshake before any.
 */
static void
ngx_http_hamrahi_panel_drop_unsent(ngx_http_hamrahi_panel_t *p)
{
    ngx_http_hamrahi_out_t   *out, *next, **keep;

    keep = &p->out;

    for (out = p->out; out; out = next) {
        next = out->next;

        if (out->sent || !out->droppable) {
            *keep = out;
            keep = &out->next;
            continue;
        }

        p->queued -= out->frame->len;
        ngx_http_hamrahi_frame_release(out->frame);
        ngx_free(out);
    }

    *keep = NULL;
    p->out_last = keep;
}


static void
ngx_http_hamrahi_panel_write_event(ngx_event_t *wev)
{
    size_t                     before;
    ngx_int_t                  rc;
    ngx_connection_t          *c;
    ngx_http_hamrahi_panel_t  *p;

    c = wev->data;
    p = c->data;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "hamrahi panel: client stopped reading");
        c->timedout = 1;
        ngx_http_hamrahi_panel_finish(p);
        return;
    }

    before = p->queued;
    rc = ngx_http_hamrahi_panel_flush(p);

    if (rc == NGX_ERROR) {
        ngx_http_hamrahi_panel_finish(p);
        return;
    }

    /* a replay sends a page at a time, as the client takes them */
    if (p->replay_wait && p->queued <= p->queue_limit / 2) {
        ngx_http_hamrahi_fanout_replay_drained(p);
    }

    if (rc == NGX_AGAIN) {
        /* send_timeout runs from the last progress, as nginx's own */
        if (!wev->timer_set || p->queued < before) {
            ngx_add_timer(wev, p->send_timeout);
        }

        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_hamrahi_panel_finish(p);
        }

        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (p->close_sent && !p->wait_for_peer) {
        ngx_http_hamrahi_panel_finish(p);
    }
}


static ngx_int_t
ngx_http_hamrahi_panel_flush(ngx_http_hamrahi_panel_t *p)
{
    ssize_t                  n;
    ngx_int_t                rc;
    ngx_uint_t               texts;
    ngx_connection_t        *c;
    ngx_http_hamrahi_out_t  *out;

    c = p->connection;
    rc = NGX_OK;
    texts = 0;

    while (p->out) {
        if (!c->write->ready) {
            rc = NGX_AGAIN;
            break;
        }

        out = p->out;
        n = c->send(c, out->frame->data + out->sent,
                    out->frame->len - out->sent);

        if (n == NGX_ERROR || n == NGX_AGAIN) {
            rc = n;
            break;
        }

        out->sent += n;
        p->queued -= n;

        if (out->sent < out->frame->len) {
            continue;
        }

        /* the text frames are the updates (and resync_required) */
        if (out->frame->data[0] == (0x80 | HAMRAHI_WS_OP_TEXT)) {
            texts++;
        }

        p->out = out->next;
        if (p->out == NULL) {
            p->out_last = &p->out;
        }

        ngx_http_hamrahi_frame_release(out->frame);
        ngx_free(out);
    }

    if (texts) {
        ngx_http_hamrahi_metrics_panel_delivered(texts);
    }

    return rc;
}


/* The end of a panel: after this call neither p nor its connection exist. */
static void
ngx_http_hamrahi_panel_finish(ngx_http_hamrahi_panel_t *p)
{
    ngx_connection_t  *c;

    c = p->connection;

    ngx_http_hamrahi_fanout_remove(p);

    ngx_http_hamrahi_panel_free_list(p->out);
    ngx_http_hamrahi_panel_free_list(p->held);

    /* 1006: the connection ended without a close frame either way */
    ngx_http_hamrahi_metrics_panel_close(p->close_code ? p->close_code
                                                       : 1006);

    /* a TLS shutdown may outlive p and still log */
    c->log->handler = NULL;
    c->log->data = NULL;
    c->idle = 0;
    ngx_http_close_connection(c);

    ngx_free(p);
}


static ngx_http_hamrahi_frame_t *
ngx_http_hamrahi_frame_alloc(size_t len, ngx_log_t *log)
{
    ngx_http_hamrahi_frame_t  *f;

    f = ngx_alloc(sizeof(ngx_http_hamrahi_frame_t) + len, log);
    if (f == NULL) {
        return NULL;
    }

    f->refs = 1;
    f->len = len;

    return f;
}


ngx_http_hamrahi_frame_t *
ngx_http_hamrahi_frame_create(int opcode, const u_char *payload, size_t len,
    ngx_log_t *log)
{
    size_t                     n;
    uint8_t                    head[HAMRAHI_WS_HEADER_MAX];
    ngx_http_hamrahi_frame_t  *f;

    n = hamrahi_ws_frame_header(head, opcode, len);

    f = ngx_http_hamrahi_frame_alloc(n + len, log);
    if (f == NULL) {
        return NULL;
    }

    ngx_memcpy(f->data, head, n);
    if (len) {
        ngx_memcpy(f->data + n, payload, len);
    }

    return f;
}


void
ngx_http_hamrahi_frame_release(ngx_http_hamrahi_frame_t *f)
{
    if (--f->refs == 0) {
        ngx_free(f);
    }
}
