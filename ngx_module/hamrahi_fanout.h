/*
 * Per nginx worker: one SUBSCRIBE connection to the Redis channel
 * hamrahi:panel, and this worker's panels by station. Each published update
 * goes, as one shared text frame, to the panels of its station_id;
 * supervisor_escalation only to supervisors (docs/contracts.md).
 */

#ifndef HAMRAHI_FANOUT_H
#define HAMRAHI_FANOUT_H

#include "hamrahi_panel.h"


#define NGX_HTTP_HAMRAHI_FANOUT_CHANNEL  "hamrahi:panel"
#define NGX_HTTP_HAMRAHI_FANOUT_LOG      "hamrahi:panel:log"
#define NGX_HTTP_HAMRAHI_FANOUT_EPOCH    "hamrahi:panel:epoch"


ngx_int_t ngx_http_hamrahi_fanout_init_process(ngx_cycle_t *cycle);
void ngx_http_hamrahi_fanout_exit_process(ngx_cycle_t *cycle);

ngx_int_t ngx_http_hamrahi_fanout_add(ngx_http_hamrahi_panel_t *p);
/* safe to call for a panel that was never added, or twice */
void ngx_http_hamrahi_fanout_remove(ngx_http_hamrahi_panel_t *p);

/*
 * Resume a panel from p->last_seq in the epoch p->resume_epoch: replay the
 * log's newer updates of its station, then go live (p->replaying is set by
 * the caller, so live updates are held meanwhile). Any doubt — epoch changed,
 * log trimmed, Redis unreachable — sends resync_required instead.
 */
void ngx_http_hamrahi_fanout_replay(ngx_http_hamrahi_panel_t *p);
/* the panel's queue drained: fetch the next page if one is waiting */
void ngx_http_hamrahi_fanout_replay_drained(ngx_http_hamrahi_panel_t *p);


#endif /* HAMRAHI_FANOUT_H */
