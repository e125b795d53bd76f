/*
 * Per-worker fan-out of panel updates; see hamrahi_fanout.h.
 *
 * The SUBSCRIBE connection is this worker's own hiredis context on nginx's
 * event loop (hamrahi_redis_adapter.c). It is connected in init_process and
 * reconnected with exponential backoff and jitter whenever it fails.
 */

#include <jansson.h>
#include <hiredis/hiredis.h>

#include "hamrahi_fanout.h"


#define NGX_HTTP_HAMRAHI_FANOUT_BACKOFF_MIN   100     /* ms */
#define NGX_HTTP_HAMRAHI_FANOUT_BACKOFF_MAX   1000    /* as the commands' */
#define NGX_HTTP_HAMRAHI_FANOUT_CONNECT_TIME  3000    /* hiredis has none */
#define NGX_HTTP_HAMRAHI_FANOUT_PAGE          "100"   /* log entries a read */
#define NGX_HTTP_HAMRAHI_FANOUT_PAGE_N        100
#define NGX_HTTP_HAMRAHI_FANOUT_SEQ           "hamrahi:panel:seq"
#define NGX_HTTP_HAMRAHI_FANOUT_HELD_MAX      10000
/*
 * Long enough for the command connection's longest backoff, several times,
 * and for a restarted Redis that answers LOADING while it reads its data.
 */
#define NGX_HTTP_HAMRAHI_FANOUT_CATCH_UP_TRIES  25
#define NGX_HTTP_HAMRAHI_FANOUT_CATCH_UP_DELAY  200  /* ms */


typedef struct {
    ngx_str_node_t   sn;            /* key: the station id */
    ngx_queue_t      panels;
} ngx_http_hamrahi_station_t;

typedef struct {
    uint64_t                      seq;        /* 0: the update has none */
    uint32_t                      epoch;      /* crc32; 0: none */
    ngx_uint_t                    supervisors_only;
    ngx_http_hamrahi_station_t   *station;    /* NULL: no panel here */
} ngx_http_hamrahi_update_t;

/* a live update that waits for the catch-up */
typedef struct {
    ngx_queue_t      queue;
    size_t           len;
    u_char           text[];
} ngx_http_hamrahi_held_t;

typedef struct {
    redisAsyncContext  *ac;
    ngx_uint_t          connected;      /* SUBSCRIBE confirmed */
    ngx_uint_t          exiting;
    ngx_msec_t          backoff;
    ngx_event_t         retry;          /* reconnect, or give up connecting */
    ngx_log_t          *log;

    char                host[NGX_SOCKADDR_STRLEN + 1];
    int                 port;
    char                path[NGX_MAX_PATH];     /* unix socket, or "" */

    ngx_rbtree_t        stations;
    ngx_rbtree_node_t   sentinel;

    uint64_t            last_seq;       /* newest update seen */
    uint32_t            epoch;          /* crc32 of its epoch */
    ngx_uint_t          catching_up;
    ngx_uint_t          catch_up_tries;
    ngx_uint_t          catch_up_epoch_checked;
    ngx_uint_t          catch_up_resynced;  /* panels told in this one */
    ngx_event_t         catch_up_timer;
    uint64_t            catch_up_cursor;
    ngx_http_hamrahi_redis_cmd_t  *catch_up_cmd;
    ngx_queue_t         held;
    ngx_uint_t          held_count;
    ngx_uint_t          held_overflow;
} ngx_http_hamrahi_fanout_t;


static void ngx_http_hamrahi_fanout_connect(void);
static void ngx_http_hamrahi_fanout_drop(const redisAsyncContext *ac,
    const char *why);
static void ngx_http_hamrahi_fanout_schedule(void);
static void ngx_http_hamrahi_fanout_retry_handler(ngx_event_t *ev);
static void ngx_http_hamrahi_fanout_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_hamrahi_fanout_on_disconnect(
    const redisAsyncContext *ac, int status);
static void ngx_http_hamrahi_fanout_on_message(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_http_hamrahi_station_t *ngx_http_hamrahi_fanout_station(
    const char *id, size_t len);
static ngx_int_t ngx_http_hamrahi_fanout_parse(const u_char *text,
    size_t len, ngx_http_hamrahi_update_t *u, ngx_log_t *log);
static ngx_uint_t ngx_http_hamrahi_fanout_wants(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_update_t *u);
static void ngx_http_hamrahi_fanout_deliver(const u_char *text, size_t len,
    ngx_uint_t live);
static void ngx_http_hamrahi_fanout_live(const u_char *text, size_t len);
static void ngx_http_hamrahi_fanout_resync_all(void);
static ngx_http_hamrahi_redis_cmd_t *ngx_http_hamrahi_fanout_read_log(
    uint64_t after, ngx_http_hamrahi_redis_handler_pt handler, void *data);
static uint64_t ngx_http_hamrahi_fanout_entry(redisReply *e,
    ngx_str_t *text);
static void ngx_http_hamrahi_fanout_catch_up(void);
static void ngx_http_hamrahi_fanout_catch_up_later(const char *why);
static void ngx_http_hamrahi_fanout_catch_up_handler(ngx_event_t *ev);
static ngx_http_hamrahi_redis_cmd_t *ngx_http_hamrahi_fanout_get_epoch(
    ngx_http_hamrahi_redis_handler_pt handler, void *data);
static ngx_http_hamrahi_redis_cmd_t *ngx_http_hamrahi_fanout_get_epoch_seq(
    ngx_http_hamrahi_redis_handler_pt handler, void *data);
static ngx_uint_t ngx_http_hamrahi_fanout_log_went_back(redisReply *reply);
static void ngx_http_hamrahi_fanout_on_catch_up_epoch(redisReply *reply,
    void *data);
static void ngx_http_hamrahi_fanout_on_catch_up(redisReply *reply,
    void *data);
static void ngx_http_hamrahi_fanout_caught_up(const char *why);
static void ngx_http_hamrahi_fanout_on_epoch(redisReply *reply, void *data);
static void ngx_http_hamrahi_fanout_replay_page(ngx_http_hamrahi_panel_t *p);
static void ngx_http_hamrahi_fanout_on_replay_page(redisReply *reply,
    void *data);
static void ngx_http_hamrahi_fanout_replay_failed(ngx_http_hamrahi_panel_t *p,
    const char *why);


static ngx_http_hamrahi_fanout_t  ngx_http_hamrahi_fanout;


ngx_int_t
ngx_http_hamrahi_fanout_init_process(ngx_cycle_t *cycle)
{
    ngx_http_hamrahi_fanout_t           *fo = &ngx_http_hamrahi_fanout;
    ngx_http_hamrahi_main_conf_t        *hmcf;
    ngx_http_hamrahi_panel_main_conf_t  *pmcf;

    ngx_memzero(fo, sizeof(ngx_http_hamrahi_fanout_t));
    ngx_rbtree_init(&fo->stations, &fo->sentinel, ngx_str_rbtree_insert_value);
    ngx_queue_init(&fo->held);

    fo->log = cycle->log;
    fo->backoff = NGX_HTTP_HAMRAHI_FANOUT_BACKOFF_MIN;
    ngx_http_hamrahi_timer_init(&fo->retry,
                                ngx_http_hamrahi_fanout_retry_handler, fo,
                                cycle->log);
    ngx_http_hamrahi_timer_init(&fo->catch_up_timer,
                                ngx_http_hamrahi_fanout_catch_up_handler, fo,
                                cycle->log);

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_hamrahi_panel_module);
    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_hamrahi_module);

    if (pmcf == NULL || !pmcf->used || hmcf == NULL) {
        return NGX_OK;
    }

    if (hmcf->redis_unix.len) {
        if (hmcf->redis_unix.len >= sizeof(fo->path)) {
            return NGX_ERROR;
        }
        ngx_memcpy(fo->path, hmcf->redis_unix.data, hmcf->redis_unix.len);

    } else {
        if (hmcf->redis_host.len == 0
            || hmcf->redis_host.len >= sizeof(fo->host))
        {
            return NGX_ERROR;
        }
        ngx_memcpy(fo->host, hmcf->redis_host.data, hmcf->redis_host.len);
        fo->port = (int) hmcf->redis_port;
    }

    ngx_http_hamrahi_fanout_connect();

    return NGX_OK;
}


void
ngx_http_hamrahi_fanout_exit_process(ngx_cycle_t *cycle)
{
    redisAsyncContext          *ac;
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    (void) cycle;

    fo->exiting = 1;

    if (fo->retry.timer_set) {
        ngx_del_timer(&fo->retry);
    }

    if (fo->catch_up_timer.timer_set) {
        ngx_del_timer(&fo->catch_up_timer);
    }

    if (fo->catch_up_cmd != NULL) {
        ngx_http_hamrahi_redis_cancel(fo->catch_up_cmd);
        fo->catch_up_cmd = NULL;
    }

    ngx_http_hamrahi_fanout_caught_up(NULL);

    ac = fo->ac;
    fo->ac = NULL;

    if (ac != NULL) {
        /* its socket must be closed before nginx checks for open ones */
        redisAsyncFree(ac);
    }
}


static void
ngx_http_hamrahi_fanout_connect(void)
{
    redisAsyncContext          *ac;
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    if (fo->path[0]) {
        ac = redisAsyncConnectUnix(fo->path);
    } else {
        ac = redisAsyncConnect(fo->host, fo->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, fo->log, 0,
                      "hamrahi fanout: no memory for a redis context");
        ngx_http_hamrahi_fanout_schedule();
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, fo->log, 0,
                      "hamrahi fanout: redis connect failed: %s", ac->errstr);
        redisAsyncFree(ac);
        ngx_http_hamrahi_fanout_schedule();
        return;
    }

    if (ngx_http_hamrahi_redis_attach(ac, fo->log) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_http_hamrahi_fanout_schedule();
        return;
    }

    redisAsyncSetConnectCallback(ac, ngx_http_hamrahi_fanout_on_connect);
    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_hamrahi_fanout_on_disconnect);

    if (redisAsyncCommand(ac, ngx_http_hamrahi_fanout_on_message, NULL,
                          "SUBSCRIBE " NGX_HTTP_HAMRAHI_FANOUT_CHANNEL)
        != REDIS_OK)
    {
        redisAsyncFree(ac);
        ngx_http_hamrahi_fanout_schedule();
        return;
    }

    fo->ac = ac;

    /* the same timer gives up on a connect that never completes */
    ngx_add_timer(&fo->retry, NGX_HTTP_HAMRAHI_FANOUT_CONNECT_TIME);
}


/*
 * Forget a context hiredis is freeing, and plan the next attempt; nothing to
 * do for one we let go of ourselves (fo->ac was cleared first).
 */
static void
ngx_http_hamrahi_fanout_drop(const redisAsyncContext *ac, const char *why)
{
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    if (ac != fo->ac) {
        return;
    }

    fo->ac = NULL;
    fo->connected = 0;

    if (fo->exiting) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, fo->log, 0,
                  "hamrahi fanout: redis subscription lost: %s", why);

    ngx_http_hamrahi_fanout_schedule();
}


static void
ngx_http_hamrahi_fanout_schedule(void)
{
    ngx_msec_t                  delay;
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    if (fo->exiting) {
        return;
    }

    /* jitter keeps the workers of all hosts from reconnecting in step */
    delay = fo->backoff / 2 + (ngx_msec_t) ngx_random() % (fo->backoff / 2 + 1);

    fo->backoff *= 2;
    if (fo->backoff > NGX_HTTP_HAMRAHI_FANOUT_BACKOFF_MAX) {
        fo->backoff = NGX_HTTP_HAMRAHI_FANOUT_BACKOFF_MAX;
    }

    ngx_add_timer(&fo->retry, delay);
}


static void
ngx_http_hamrahi_fanout_retry_handler(ngx_event_t *ev)
{
    redisAsyncContext          *ac;
    ngx_http_hamrahi_fanout_t  *fo = ev->data;

    if (fo->exiting) {
        return;
    }

    if (fo->ac == NULL) {
        ngx_http_hamrahi_fanout_connect();
        return;
    }

    if (!fo->connected) {
        ac = fo->ac;
        fo->ac = NULL;
        ngx_log_error(NGX_LOG_ERR, fo->log, 0,
                      "hamrahi fanout: redis did not answer within %M ms",
                      (ngx_msec_t) NGX_HTTP_HAMRAHI_FANOUT_CONNECT_TIME);
        redisAsyncFree(ac);
        ngx_http_hamrahi_fanout_schedule();
    }
}


static void
ngx_http_hamrahi_fanout_on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        /* hiredis frees the context after this, without on_disconnect */
        ngx_http_hamrahi_fanout_drop(ac, ac->errstr);
    }
}


static void
ngx_http_hamrahi_fanout_on_disconnect(const redisAsyncContext *ac,
    int status)
{
    ngx_http_hamrahi_fanout_drop(ac, status == REDIS_OK ? "closed"
                                                        : ac->errstr);
}


static void
ngx_http_hamrahi_fanout_on_message(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                 *reply = r;
    redisReply                 *kind;
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    (void) ac;
    (void) privdata;

    /* NULL: the context is going away; on_disconnect tells why */
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 3)
    {
        return;
    }

    kind = reply->element[0];

    if (kind->type != REDIS_REPLY_STRING) {
        return;
    }

    if (ngx_strcmp(kind->str, "subscribe") == 0) {
        fo->connected = 1;
        fo->backoff = NGX_HTTP_HAMRAHI_FANOUT_BACKOFF_MIN;

        if (fo->retry.timer_set) {
            ngx_del_timer(&fo->retry);
        }

        ngx_log_error(NGX_LOG_NOTICE, fo->log, 0,
                      "hamrahi fanout: subscribed to "
                      NGX_HTTP_HAMRAHI_FANOUT_CHANNEL);

        /* nothing seen yet: nothing this worker could have missed */
        if (fo->last_seq || fo->catching_up) {
            ngx_http_hamrahi_fanout_catch_up();
        }

        return;
    }

    if (ngx_strcmp(kind->str, "message") == 0
        && reply->element[2]->type == REDIS_REPLY_STRING)
    {
        ngx_http_hamrahi_fanout_live((u_char *) reply->element[2]->str,
                                     reply->element[2]->len);
    }
}


/* What routing and resume need to know of an update. */
static ngx_int_t
ngx_http_hamrahi_fanout_parse(const u_char *text, size_t len,
    ngx_http_hamrahi_update_t *u, ngx_log_t *log)
{
    json_t      *msg, *seq;
    const char  *station, *type, *epoch;

    msg = json_loadb((const char *) text, len, 0, NULL);

    station = json_string_value(json_object_get(msg, "station_id"));
    if (station == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "hamrahi fanout: update without station_id dropped");
        json_decref(msg);
        return NGX_ERROR;
    }

    type = json_string_value(json_object_get(msg, "type"));
    epoch = json_string_value(json_object_get(msg, "epoch"));
    seq = json_object_get(msg, "seq");

    u->station = ngx_http_hamrahi_fanout_station(station, ngx_strlen(station));
    u->supervisors_only = type
                          && ngx_strcmp(type, "supervisor_escalation") == 0;
    u->seq = json_is_integer(seq) && json_integer_value(seq) > 0
             ? (uint64_t) json_integer_value(seq) : 0;
    u->epoch = epoch ? ngx_crc32_short((u_char *) epoch, ngx_strlen(epoch))
                     : 0;

    json_decref(msg);

    return NGX_OK;
}


static ngx_uint_t
ngx_http_hamrahi_fanout_wants(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_update_t *u)
{
    return p->station == u->station
           && (!u->supervisors_only
               || p->claims.role == HAMRAHI_ROLE_SUPERVISOR);
}


/*
 * An update straight from the subscription (live), or one read back from
 * the log or held while the worker caught up after a resubscribe.
 */
static void
ngx_http_hamrahi_fanout_deliver(const u_char *text, size_t len,
    ngx_uint_t live)
{
    ngx_queue_t                 *q;
    ngx_http_hamrahi_frame_t    *f;
    ngx_http_hamrahi_panel_t    *p;
    ngx_http_hamrahi_update_t    u;
    ngx_http_hamrahi_fanout_t   *fo = &ngx_http_hamrahi_fanout;

    if (ngx_http_hamrahi_fanout_parse(text, len, &u, fo->log) != NGX_OK) {
        return;
    }

    if (u.epoch && u.epoch != fo->epoch) {
        fo->epoch = u.epoch;
        fo->last_seq = 0;

    } else if (live && u.seq && u.seq <= fo->last_seq) {
        /*
         * Pub/sub hands updates over once and in seq order: an old seq in
         * the same epoch means Redis lost its newest writes (a crash under
         * appendfsync everysec) and seqs the panels saw are used again. They
         * would drop the new updates as repeats: have them start over.
         */
        ngx_log_error(NGX_LOG_WARN, fo->log, 0,
                      "hamrahi fanout: seq %uL after %uL in the same epoch: "
                      "the panel log went back, panels are told to resync",
                      u.seq, fo->last_seq);
        ngx_http_hamrahi_fanout_resync_all();
        fo->last_seq = 0;
    }

    if (u.seq > fo->last_seq) {
        fo->last_seq = u.seq;
    }

    if (u.station == NULL) {
        return;
    }

    f = ngx_http_hamrahi_frame_create(HAMRAHI_WS_OP_TEXT, text, len, fo->log);
    if (f == NULL) {
        return;
    }

    /* panel_update never unlinks a panel, so the walk stays valid */
    for (q = ngx_queue_head(&u.station->panels);
         q != ngx_queue_sentinel(&u.station->panels);
         q = ngx_queue_next(q))
    {
        p = ngx_queue_data(q, ngx_http_hamrahi_panel_t, station_link);

        if (ngx_http_hamrahi_fanout_wants(p, &u)) {
            ngx_http_hamrahi_panel_update(p, f, u.seq, u.epoch);
        }
    }

    ngx_http_hamrahi_frame_release(f);
}


/* A live update: held while the worker catches up, else delivered. */
static void
ngx_http_hamrahi_fanout_live(const u_char *text, size_t len)
{
    ngx_http_hamrahi_held_t    *h;
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    if (!fo->catching_up) {
        ngx_http_hamrahi_fanout_deliver(text, len, 1);
        return;
    }

    if (fo->held_count >= NGX_HTTP_HAMRAHI_FANOUT_HELD_MAX) {
        fo->held_overflow = 1;
        return;
    }

    h = ngx_alloc(sizeof(ngx_http_hamrahi_held_t) + len, fo->log);
    if (h == NULL) {
        fo->held_overflow = 1;
        return;
    }

    h->len = len;
    ngx_memcpy(h->text, text, len);
    ngx_queue_insert_tail(&fo->held, &h->queue);
    fo->held_count++;
}


/* Every panel of this worker may have missed updates. */
static void
ngx_http_hamrahi_fanout_resync_all(void)
{
    ngx_queue_t                 *q;
    ngx_rbtree_node_t           *node, *root, *sentinel;
    ngx_http_hamrahi_station_t  *st;

    sentinel = ngx_http_hamrahi_fanout.stations.sentinel;
    root = ngx_http_hamrahi_fanout.stations.root;

    if (root == sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(root, sentinel);
         node;
         node = ngx_rbtree_next(&ngx_http_hamrahi_fanout.stations, node))
    {
        st = (ngx_http_hamrahi_station_t *) node;

        for (q = ngx_queue_head(&st->panels);
             q != ngx_queue_sentinel(&st->panels);
             q = ngx_queue_next(q))
        {
            ngx_http_hamrahi_panel_resync(
                ngx_queue_data(q, ngx_http_hamrahi_panel_t, station_link));
        }
    }
}


/* XRANGE hamrahi:panel:log (0-<after> + COUNT <page> */
static ngx_http_hamrahi_redis_cmd_t *
ngx_http_hamrahi_fanout_read_log(uint64_t after,
    ngx_http_hamrahi_redis_handler_pt handler, void *data)
{
    u_char       start[NGX_INT64_LEN + 4];
    size_t       lens[6];
    const char  *argv[6];

    argv[0] = "XRANGE";
    argv[1] = NGX_HTTP_HAMRAHI_FANOUT_LOG;
    argv[2] = (const char *) start;
    argv[3] = "+";
    argv[4] = "COUNT";
    argv[5] = NGX_HTTP_HAMRAHI_FANOUT_PAGE;

    lens[0] = sizeof("XRANGE") - 1;
    lens[1] = sizeof(NGX_HTTP_HAMRAHI_FANOUT_LOG) - 1;
    lens[2] = ngx_sprintf(start, "(0-%uL", after) - start;
    lens[3] = 1;
    lens[4] = sizeof("COUNT") - 1;
    lens[5] = sizeof(NGX_HTTP_HAMRAHI_FANOUT_PAGE) - 1;

    return ngx_http_hamrahi_redis_command(handler, data, 6, argv, lens);
}


/*
 * One XRANGE entry: [ "0-<seq>", [ "data", "<json>", ... ] ]. Returns the
 * seq (0 if the entry is not one of ours) and the text.
 */
static uint64_t
ngx_http_hamrahi_fanout_entry(redisReply *e, ngx_str_t *text)
{
    size_t       i;
    uint64_t     seq;
    redisReply  *id, *fields;

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) {
        return 0;
    }

    id = e->element[0];
    fields = e->element[1];

    if (id->type != REDIS_REPLY_STRING || id->len < 3 || id->len > 22
        || id->str[0] != '0' || id->str[1] != '-'
        || fields->type != REDIS_REPLY_ARRAY)
    {
        return 0;
    }

    seq = 0;
    for (i = 2; i < id->len; i++) {
        if (id->str[i] < '0' || id->str[i] > '9') {
            return 0;
        }
        seq = seq * 10 + (id->str[i] - '0');
    }

    for (i = 0; i + 1 < fields->elements; i += 2) {
        if (fields->element[i]->type == REDIS_REPLY_STRING
            && fields->element[i + 1]->type == REDIS_REPLY_STRING
            && ngx_strcmp(fields->element[i]->str, "data") == 0)
        {
            text->data = (u_char *) fields->element[i + 1]->str;
            text->len = fields->element[i + 1]->len;
            return seq;
        }
    }

    return 0;
}


/*
 * The worker resubscribed: what was published while it was not subscribed
 * is read back from the log, from the newest seq it had seen; live updates
 * wait meanwhile so that every panel gets them in order.
 */
static void
ngx_http_hamrahi_fanout_catch_up(void)
{
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    if (fo->catch_up_cmd != NULL) {
        return;
    }

    if (!fo->catching_up) {
        fo->catching_up = 1;
        fo->catch_up_tries = 0;
        fo->catch_up_epoch_checked = 0;
        fo->catch_up_resynced = 0;
        fo->catch_up_cursor = fo->last_seq;
    }

    if (fo->catch_up_epoch_checked) {
        fo->catch_up_cmd = ngx_http_hamrahi_fanout_read_log(
                               fo->catch_up_cursor,
                               ngx_http_hamrahi_fanout_on_catch_up, fo);
    } else {
        fo->catch_up_cmd = ngx_http_hamrahi_fanout_get_epoch_seq(
                               ngx_http_hamrahi_fanout_on_catch_up_epoch, fo);
    }

    if (fo->catch_up_cmd != NULL) {
        return;
    }

    /* the command connection often comes back a moment after this one */
    ngx_http_hamrahi_fanout_catch_up_later("redis commands unavailable");
}


/*
 * Try the catch-up again in a moment, as long as live updates may wait;
 * then give up and tell the panels to resync.
 */
static void
ngx_http_hamrahi_fanout_catch_up_later(const char *why)
{
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    if (++fo->catch_up_tries < NGX_HTTP_HAMRAHI_FANOUT_CATCH_UP_TRIES) {
        ngx_add_timer(&fo->catch_up_timer,
                      NGX_HTTP_HAMRAHI_FANOUT_CATCH_UP_DELAY);
        return;
    }

    ngx_http_hamrahi_fanout_caught_up(why);
}


static void
ngx_http_hamrahi_fanout_catch_up_handler(ngx_event_t *ev)
{
    if (!ngx_http_hamrahi_fanout.exiting) {
        ngx_http_hamrahi_fanout_catch_up();
    }
}


/*
 * A reset log (Redis lost its data), or one that went back in the same
 * epoch (Redis lost its newest writes), is caught up from its first update:
 * the seqs after the cursor may be new updates that reuse seqs already seen,
 * and the live ones held meanwhile would pass the seq check unseen.
 */
static void
ngx_http_hamrahi_fanout_on_catch_up_epoch(redisReply *reply, void *data)
{
    ngx_http_hamrahi_fanout_t  *fo = data;

    fo->catch_up_cmd = NULL;

    if (reply == NULL) {
        ngx_http_hamrahi_fanout_caught_up("redis did not answer");
        return;
    }

    /* LOADING (a restarted Redis reads its data): not a reset log */
    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_hamrahi_fanout_catch_up_later("redis answered an error");
        return;
    }

    if (ngx_http_hamrahi_fanout_log_went_back(reply)) {
        ngx_http_hamrahi_fanout_resync_all();
        fo->catch_up_resynced = 1;
        fo->last_seq = 0;
        fo->catch_up_cursor = 0;
    }

    fo->catch_up_epoch_checked = 1;
    ngx_http_hamrahi_fanout_catch_up();
}


static void
ngx_http_hamrahi_fanout_on_catch_up(redisReply *reply, void *data)
{
    size_t                      i;
    uint64_t                    seq;
    ngx_str_t                   text;
    ngx_http_hamrahi_fanout_t  *fo = data;

    fo->catch_up_cmd = NULL;

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        ngx_http_hamrahi_fanout_catch_up_later("redis answered an error");
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_http_hamrahi_fanout_caught_up("the log could not be read");
        return;
    }

    for (i = 0; i < reply->elements; i++) {
        seq = ngx_http_hamrahi_fanout_entry(reply->element[i], &text);
        if (seq == 0) {
            continue;
        }

        if (seq != fo->catch_up_cursor + 1 && !fo->catch_up_resynced) {
            /* trimmed past what we saw: say so, then give what is left */
            ngx_log_error(NGX_LOG_WARN, fo->log, 0,
                          "hamrahi fanout: updates %uL to %uL are gone from "
                          "the log: panels are told to resync",
                          fo->catch_up_cursor + 1, seq - 1);
            ngx_http_hamrahi_fanout_resync_all();
            fo->catch_up_resynced = 1;
        }

        fo->catch_up_cursor = seq;
        ngx_http_hamrahi_fanout_deliver(text.data, text.len, 0);
    }

    if (reply->elements == NGX_HTTP_HAMRAHI_FANOUT_PAGE_N) {
        ngx_http_hamrahi_fanout_catch_up();
        return;
    }

    ngx_http_hamrahi_fanout_caught_up(NULL);
}


/* The catch-up ended (why != NULL: it failed): release the held updates. */
static void
ngx_http_hamrahi_fanout_caught_up(const char *why)
{
    ngx_queue_t                *q;
    ngx_http_hamrahi_held_t    *h;
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    fo->catching_up = 0;

    if ((why != NULL || fo->held_overflow) && !fo->exiting) {
        ngx_log_error(NGX_LOG_WARN, fo->log, 0,
                      "hamrahi fanout: no catch-up after seq %uL (%s): "
                      "panels are told to resync", fo->last_seq,
                      why ? why : "too many updates held");
        ngx_http_hamrahi_fanout_resync_all();
    }

    fo->held_overflow = 0;

    while (!ngx_queue_empty(&fo->held)) {
        q = ngx_queue_head(&fo->held);
        ngx_queue_remove(q);
        h = ngx_queue_data(q, ngx_http_hamrahi_held_t, queue);
        fo->held_count--;

        if (!fo->exiting) {
            ngx_http_hamrahi_fanout_deliver(h->text, h->len, 0);
        }

        ngx_free(h);
    }
}


/*
 * The MGET of the epoch and the seq counter: did the log change under this
 * worker? Also remembers the log's epoch.
 */
static ngx_uint_t
ngx_http_hamrahi_fanout_log_went_back(redisReply *reply)
{
    uint32_t                    epoch;
    uint64_t                    seq;
    redisReply                 *e, *s;
    ngx_http_hamrahi_fanout_t  *fo = &ngx_http_hamrahi_fanout;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        return 0;
    }

    e = reply->element[0];
    s = reply->element[1];

    epoch = e->type == REDIS_REPLY_STRING
            ? ngx_crc32_short((u_char *) e->str, e->len) : 0;
    seq = s->type == REDIS_REPLY_STRING
          ? (uint64_t) ngx_atoof((u_char *) s->str, s->len) : 0;

    if (epoch != fo->epoch) {
        ngx_log_error(NGX_LOG_WARN, fo->log, 0,
                      "hamrahi fanout: the panel log was reset: panels are "
                      "told to resync");
        fo->epoch = epoch;
        return 1;
    }

    if (seq < fo->last_seq) {
        ngx_log_error(NGX_LOG_WARN, fo->log, 0,
                      "hamrahi fanout: seq %uL after %uL in the same epoch: "
                      "the panel log went back, panels are told to resync",
                      seq, fo->last_seq);
        return 1;
    }

    return 0;
}


/* MGET hamrahi:panel:epoch hamrahi:panel:seq */
static ngx_http_hamrahi_redis_cmd_t *
ngx_http_hamrahi_fanout_get_epoch_seq(
    ngx_http_hamrahi_redis_handler_pt handler, void *data)
{
    const char  *argv[3];
    size_t       lens[3];

    argv[0] = "MGET";
    argv[1] = NGX_HTTP_HAMRAHI_FANOUT_EPOCH;
    argv[2] = NGX_HTTP_HAMRAHI_FANOUT_SEQ;
    lens[0] = sizeof("MGET") - 1;
    lens[1] = sizeof(NGX_HTTP_HAMRAHI_FANOUT_EPOCH) - 1;
    lens[2] = sizeof(NGX_HTTP_HAMRAHI_FANOUT_SEQ) - 1;

    return ngx_http_hamrahi_redis_command(handler, data, 3, argv, lens);
}


static ngx_http_hamrahi_redis_cmd_t *
ngx_http_hamrahi_fanout_get_epoch(ngx_http_hamrahi_redis_handler_pt handler,
    void *data)
{
    const char  *argv[2];
    size_t       lens[2];

    argv[0] = "GET";
    argv[1] = NGX_HTTP_HAMRAHI_FANOUT_EPOCH;
    lens[0] = sizeof("GET") - 1;
    lens[1] = sizeof(NGX_HTTP_HAMRAHI_FANOUT_EPOCH) - 1;

    return ngx_http_hamrahi_redis_command(handler, data, 2, argv, lens);
}


void
ngx_http_hamrahi_fanout_replay(ngx_http_hamrahi_panel_t *p)
{
    p->replay_cursor = p->last_seq;
    p->replay_cmd = ngx_http_hamrahi_fanout_get_epoch(
                        ngx_http_hamrahi_fanout_on_epoch, p);

    if (p->replay_cmd == NULL) {
        ngx_http_hamrahi_fanout_replay_failed(p, "redis commands unavailable");
    }
}


static void
ngx_http_hamrahi_fanout_on_epoch(redisReply *reply, void *data)
{
    ngx_http_hamrahi_panel_t  *p = data;

    p->replay_cmd = NULL;

    if (reply == NULL) {
        ngx_http_hamrahi_fanout_replay_failed(p, "redis did not answer");
        return;
    }

    if (reply->type != REDIS_REPLY_STRING) {
        /* no epoch: nothing was ever logged, so there is nothing to send */
        ngx_http_hamrahi_fanout_replay_failed(p, "the log is empty");
        return;
    }

    if (reply->len != p->resume_epoch_len
        || ngx_strncmp(reply->str, p->resume_epoch, reply->len) != 0)
    {
        /* another log: its whole history, after telling the panel */
        ngx_log_error(NGX_LOG_INFO, p->connection->log, 0,
                      "hamrahi panel: resume in another epoch");
        ngx_http_hamrahi_panel_resync(p);
        p->replay_cursor = 0;
        p->replay_from_oldest = 1;
    }

    ngx_http_hamrahi_fanout_replay_page(p);
}


static void
ngx_http_hamrahi_fanout_replay_page(ngx_http_hamrahi_panel_t *p)
{
    p->replay_wait = 0;
    p->replay_cmd = ngx_http_hamrahi_fanout_read_log(p->replay_cursor,
                        ngx_http_hamrahi_fanout_on_replay_page, p);

    if (p->replay_cmd == NULL) {
        ngx_http_hamrahi_fanout_replay_failed(p, "redis commands unavailable");
    }
}


void
ngx_http_hamrahi_fanout_replay_drained(ngx_http_hamrahi_panel_t *p)
{
    if (p->replay_wait && p->replay_cmd == NULL && !p->close_sent) {
        ngx_http_hamrahi_fanout_replay_page(p);
    }
}


static void
ngx_http_hamrahi_fanout_on_replay_page(redisReply *reply, void *data)
{
    size_t                      i;
    uint64_t                    seq;
    ngx_str_t                   text;
    ngx_http_hamrahi_frame_t   *f;
    ngx_http_hamrahi_panel_t   *p = data;
    ngx_http_hamrahi_update_t   u;

    p->replay_cmd = NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_http_hamrahi_fanout_replay_failed(p, "the log could not be read");
        return;
    }

    for (i = 0; i < reply->elements && !p->close_sent; i++) {
        seq = ngx_http_hamrahi_fanout_entry(reply->element[i], &text);

        if (seq == 0) {
            continue;
        }

        /* the log's seqs are consecutive: a hole means it was trimmed */
        if (seq != p->replay_cursor + 1 && !p->replay_from_oldest) {
            ngx_log_error(NGX_LOG_INFO, p->connection->log, 0,
                          "hamrahi panel: updates %uL to %uL are gone from "
                          "the log", p->replay_cursor + 1, seq - 1);
            ngx_http_hamrahi_panel_resync(p);
        }

        p->replay_from_oldest = 0;
        p->replay_cursor = seq;

        if (ngx_http_hamrahi_fanout_parse(text.data, text.len, &u,
                                          p->connection->log)
            != NGX_OK
            || !ngx_http_hamrahi_fanout_wants(p, &u))
        {
            continue;
        }

        f = ngx_http_hamrahi_frame_create(HAMRAHI_WS_OP_TEXT, text.data,
                                          text.len, p->connection->log);
        if (f == NULL) {
            ngx_http_hamrahi_fanout_replay_failed(p, "no memory");
            return;
        }

        ngx_http_hamrahi_panel_deliver(p, f, seq, u.epoch);
        ngx_http_hamrahi_frame_release(f);
    }

    if (p->close_sent) {
        return;
    }

    if (reply->elements < NGX_HTTP_HAMRAHI_FANOUT_PAGE_N) {
        ngx_http_hamrahi_panel_go_live(p);
        return;
    }

    if (p->queued > p->queue_limit / 2) {
        p->replay_wait = 1;
        return;
    }

    ngx_http_hamrahi_fanout_replay_page(p);
}


static void
ngx_http_hamrahi_fanout_replay_failed(ngx_http_hamrahi_panel_t *p,
    const char *why)
{
    ngx_log_error(NGX_LOG_INFO, p->connection->log, 0,
                  "hamrahi panel: no replay after seq %uL: %s",
                  p->last_seq, why);

    ngx_http_hamrahi_panel_resync(p);
    ngx_http_hamrahi_panel_go_live(p);
}


static ngx_http_hamrahi_station_t *
ngx_http_hamrahi_fanout_station(const char *id, size_t len)
{
    ngx_str_t  key;

    key.data = (u_char *) id;
    key.len = len;

    return (ngx_http_hamrahi_station_t *) ngx_str_rbtree_lookup(
               &ngx_http_hamrahi_fanout.stations, &key,
               ngx_crc32_short(key.data, key.len));
}


ngx_int_t
ngx_http_hamrahi_fanout_add(ngx_http_hamrahi_panel_t *p)
{
    size_t                       len;
    ngx_http_hamrahi_station_t  *st;

    len = ngx_strlen(p->claims.station);
    st = ngx_http_hamrahi_fanout_station(p->claims.station, len);

    if (st == NULL) {
        st = ngx_alloc(sizeof(ngx_http_hamrahi_station_t) + len,
                       p->connection->log);
        if (st == NULL) {
            return NGX_ERROR;
        }

        st->sn.str.data = (u_char *) (st + 1);
        st->sn.str.len = len;
        ngx_memcpy(st->sn.str.data, p->claims.station, len);
        st->sn.node.key = ngx_crc32_short(st->sn.str.data, len);
        ngx_queue_init(&st->panels);
        ngx_rbtree_insert(&ngx_http_hamrahi_fanout.stations, &st->sn.node);
    }

    ngx_queue_insert_tail(&st->panels, &p->station_link);
    p->station = st;

    return NGX_OK;
}


void
ngx_http_hamrahi_fanout_remove(ngx_http_hamrahi_panel_t *p)
{
    ngx_http_hamrahi_station_t  *st;

    if (p->replay_cmd != NULL) {
        ngx_http_hamrahi_redis_cancel(p->replay_cmd);
        p->replay_cmd = NULL;
    }

    st = p->station;
    if (st == NULL) {
        return;
    }

    ngx_queue_remove(&p->station_link);
    p->station = NULL;

    if (ngx_queue_empty(&st->panels)) {
        ngx_rbtree_delete(&ngx_http_hamrahi_fanout.stations, &st->sn.node);
        ngx_free(st);
    }
}
