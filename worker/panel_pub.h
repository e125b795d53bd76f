/*
 * Panel updates: one Lua script numbers the update (hamrahi:panel:seq),
 * stamps the log's epoch, appends it to the capped hamrahi:panel:log with id
 * 0-<seq> and PUBLISHes the same text on hamrahi:panel, atomically
 * (docs/contracts.md "Redis keys").
 */

#ifndef HAMRAHI_PANEL_PUB_H
#define HAMRAHI_PANEL_PUB_H

#include "rqueue.h"

typedef struct panel_pub panel_pub_t;

panel_pub_t *panel_pub_new(rqueue_t *q);

/* json: an object's text without seq and epoch; the script adds them. */
void panel_pub_send(panel_pub_t *p, const char *json);
void panel_pub_free(panel_pub_t *p);

#endif /* HAMRAHI_PANEL_PUB_H */
