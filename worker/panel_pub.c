#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "log.h"
#include "panel_pub.h"

/* KEYS: seq counter, epoch, log stream, channel. ARGV: JSON object text,
 * this worker's random epoch prefix. When the counter starts again (Redis
 * lost its data) the epoch must change too, or a panel resuming with an old
 * seq would take the new, lower seqs for ones it has seen: so a new epoch is
 * taken whenever seq is 1, made unique by Redis's clock. The JSON is
 * spliced, not re-encoded: cjson would print at_ms as a float. */
static const char script[] =
    "local seq = redis.call('INCR', KEYS[1])\n"
    "local epoch = redis.call('GET', KEYS[2])\n"
    "if seq == 1 or not epoch then\n"
    "  local t = redis.call('TIME')\n"
    "  epoch = ARGV[2] .. t[1] .. t[2]\n"
    "  redis.call('SET', KEYS[2], epoch)\n"
    "end\n"
    "local text = '{\"seq\":' .. seq .. ',\"epoch\":\"' .. epoch .. '\",'"
    " .. string.sub(ARGV[1], 2)\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '0-' .. seq,"
    " 'data', text)\n"
    "redis.call('PUBLISH', KEYS[4], text)\n"
    "return seq\n";

struct panel_pub {
    rqueue_t  *q;
    char       epoch[33];
};


panel_pub_t *
panel_pub_new(rqueue_t *q)
{
    panel_pub_t   *p = calloc(1, sizeof(*p));
    unsigned char  raw[16];
    size_t         i;

    if (p == NULL) {
        return NULL;
    }
    p->q = q;
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t) sizeof(raw)) {
        free(p);
        return NULL;
    }
    for (i = 0; i < sizeof(raw); i++) {
        snprintf(p->epoch + 2 * i, 3, "%02x", raw[i]);
    }
    return p;
}


void
panel_pub_send(panel_pub_t *p, const char *json)
{
    const char *argv[] = { "EVAL", script, "4", "hamrahi:panel:seq",
                           "hamrahi:panel:epoch", "hamrahi:panel:log",
                           "hamrahi:panel", json, p->epoch };

    if (json[0] != '{' || json[1] == '}') {
        log_line("panel: refusing a malformed update");
        return;
    }
    rqueue_push(p->q, "panel update", 9, argv);
}


void
panel_pub_free(panel_pub_t *p)
{
    free(p);
}
