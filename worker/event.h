/*
 * A hamrahi:events stream entry (fields type, session_id, at_ms, payload)
 * turned into an hr_event_t. Pure apart from jansson's allocations.
 */

#ifndef HAMRAHI_EVENT_H
#define HAMRAHI_EVENT_H

#include <jansson.h>

#include "session.h"

typedef struct {
    char        stream_id[48];
    char        session_id[HR_ID_MAX];
    char        type[24];
    json_t     *payload;   /* owned: ev's strings point into it */
    hr_event_t  ev;
} event_msg_t;

/* 0, or -1 with err saying what is wrong (the entry is poison: ack it). */
int event_parse(event_msg_t *m, const char *stream_id, size_t nfields,
                const char *const *names, const char *const *values,
                char *err, size_t errlen);
void event_msg_free(event_msg_t *m);

#endif /* HAMRAHI_EVENT_H */
