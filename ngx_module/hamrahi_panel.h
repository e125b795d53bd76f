/*
 * The panel WebSocket (ngx_http_hamrahi_panel_module): configuration, one
 * panel connection (hamrahi_panel.c) and the frames shared between panels.
 */

#ifndef HAMRAHI_PANEL_H
#define HAMRAHI_PANEL_H

#include "ngx_http_hamrahi_module.h"
#include "hamrahi_redis.h"
#include "hamrahi_jwt.h"
#include "hamrahi_ws.h"


#define NGX_HTTP_HAMRAHI_PANEL_JWT_LEEWAY   30      /* seconds */
#define NGX_HTTP_HAMRAHI_PANEL_CLOSE_WAIT   3000    /* ms: the peer's close */
#define NGX_HTTP_HAMRAHI_PANEL_EPOCH_MAX    64      /* bytes of ?epoch= */


typedef struct {
    ngx_flag_t   ws;                /* hamrahi_panel_ws here */
    ngx_str_t    secret;
    size_t       max_message;
    size_t       send_queue;
    ngx_msec_t   ping_interval;
    ngx_array_t *origins;           /* of ngx_str_t; NULL: any origin */
} ngx_http_hamrahi_panel_loc_conf_t;

typedef struct {
    ngx_uint_t   used;              /* some location serves panels */
} ngx_http_hamrahi_panel_main_conf_t;


/* A complete server frame, built once and queued to many panels. */
typedef struct {
    ngx_uint_t   refs;
    size_t       len;
    u_char       data[];
} ngx_http_hamrahi_frame_t;

typedef struct ngx_http_hamrahi_out_s  ngx_http_hamrahi_out_t;

struct ngx_http_hamrahi_out_s {
    ngx_http_hamrahi_out_t    *next;
    ngx_http_hamrahi_frame_t  *frame;
    size_t                     sent;
    uint64_t                   seq;             /* held updates only */
    uint32_t                   epoch;           /* held updates only */
    unsigned                   droppable:1;     /* an update, not control */
};

/* c->data of a panel's connection, once detached from its request */
typedef struct {
    ngx_connection_t          *connection;
    ngx_queue_t                station_link;    /* hamrahi_fanout.c */
    void                      *station;         /* hamrahi_fanout.c */
    hamrahi_jwt_claims_t       claims;
    hamrahi_ws_parser_t        parser;

    ngx_http_hamrahi_out_t    *out;             /* send queue */
    ngx_http_hamrahi_out_t   **out_last;
    size_t                     queued;          /* bytes not yet sent */
    size_t                     queue_limit;
    ngx_msec_t                 ping_interval;
    ngx_msec_t                 send_timeout;
    uint16_t                   close_code;      /* first sent or received */

    /* resume (hamrahi_fanout.c): updates are sent once, in seq order */
    uint64_t                   last_seq;        /* newest sent or passed */
    uint32_t                   epoch;           /* crc32 of the log's epoch */
    uint64_t                   replay_cursor;   /* newest log entry read */
    /* as the client sent it, copied: the request's buffers are freed */
    u_char                     resume_epoch[NGX_HTTP_HAMRAHI_PANEL_EPOCH_MAX];
    size_t                     resume_epoch_len;
    ngx_http_hamrahi_redis_cmd_t  *replay_cmd;
    ngx_http_hamrahi_out_t    *held;            /* live updates during replay */
    ngx_http_hamrahi_out_t   **held_last;
    size_t                     held_bytes;

    unsigned                   ping_sent:1;     /* no reply yet */
    unsigned                   close_sent:1;    /* close frame queued */
    unsigned                   close_received:1;
    unsigned                   wait_for_peer:1; /* after our close frame */
    unsigned                   replaying:1;     /* live updates are held */
    unsigned                   replay_wait:1;   /* next page when drained */
    unsigned                   replay_from_oldest:1;    /* any first seq */
} ngx_http_hamrahi_panel_t;


extern ngx_module_t  ngx_http_hamrahi_panel_module;


/* content handler of `hamrahi_panel_ws` */
ngx_int_t ngx_http_hamrahi_panel_handler(ngx_http_request_t *r);

/*
 * Queue a frame (takes a reference). Never closes the panel at once, so it
 * is safe while walking the fan-out registry: a slow consumer gets its close
 * frame queued here and is finished later by its own write event.
 */
void ngx_http_hamrahi_panel_send(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_frame_t *f);

/*
 * An update with its log seq and epoch (crc32; 0 when the update has none):
 * held while the panel replays, else sent unless already sent. A new epoch
 * means the log was reset: {"type":"resync_required"} goes first.
 */
void ngx_http_hamrahi_panel_update(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_frame_t *f, uint64_t seq, uint32_t epoch);
/* the same, never held: for the replay itself */
void ngx_http_hamrahi_panel_deliver(ngx_http_hamrahi_panel_t *p,
    ngx_http_hamrahi_frame_t *f, uint64_t seq, uint32_t epoch);
void ngx_http_hamrahi_panel_resync(ngx_http_hamrahi_panel_t *p);
/* the replay is over: send the held updates, in order, without repeats */
void ngx_http_hamrahi_panel_go_live(ngx_http_hamrahi_panel_t *p);

ngx_http_hamrahi_frame_t *ngx_http_hamrahi_frame_create(int opcode,
    const u_char *payload, size_t len, ngx_log_t *log);
void ngx_http_hamrahi_frame_release(ngx_http_hamrahi_frame_t *f);


#endif /* HAMRAHI_PANEL_H */
