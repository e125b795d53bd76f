/*
 * libFuzzer target for the panel's frame parser (hamrahi_ws.c), from the
 * panel helper's target: the input is split at the first byte's value into
 * two reads, so frames cut anywhere are covered too.
 * Invariants: the parser never claims more bytes than it was given, reports
 * NONE only once every byte is used, and never hands out a control payload
 * over 125 bytes or a NULL payload pointer with a length.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hamrahi_ws.h"


/* enough for any input: each event but NONE uses a byte or ends the input */
#define FEED_EVENTS_MAX  100000


static void
feed(hamrahi_ws_parser_t *p, uint8_t *buf, size_t len)
{
    size_t              used, n, events;
    hamrahi_ws_event_t  ev;

    used = 0;

    for (events = 0; events < FEED_EVENTS_MAX; events++) {
        n = hamrahi_ws_parse(p, buf + used, len - used, &ev);
        used += n;

        if (used > len) {
            abort();
        }

        if (ev.kind == HAMRAHI_WS_EV_NONE) {
            if (used != len) {
                abort();
            }

            return;
        }

        if (ev.len && ev.data == NULL) {
            abort();
        }

        if ((ev.kind == HAMRAHI_WS_EV_PING || ev.kind == HAMRAHI_WS_EV_PONG)
            && ev.len > HAMRAHI_WS_CONTROL_MAX)
        {
            abort();
        }
    }

    /* the parser made no progress: a caller would spin forever */
    abort();
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t               cut;
    uint8_t             *buf;
    hamrahi_ws_parser_t  p;

    if (size == 0) {
        return 0;
    }

    buf = malloc(size);
    if (buf == NULL) {
        return 0;
    }

    memcpy(buf, data, size);

    cut = data[0] % size;
    hamrahi_ws_parser_init(&p, 4096);
    feed(&p, buf, cut);
    feed(&p, buf + cut, size - cut);

    free(buf);

    return 0;
}
