/*
 * The telephony provider seen by the engine: create, cancel, hang up, fetch
 * and find calls, and render call instructions. A struct of function
 * pointers so that a second provider can be added beside Twilio
 * (telephony_twilio.c). Every request is asynchronous; cb runs once.
 */

#ifndef HAMRAHI_PROVIDER_H
#define HAMRAHI_PROVIDER_H

#include <stdint.h>

#include "session.h"

typedef struct {
    const char *to;
    const char *from;
    const char *instructions;     /* rendered by render_dial/render_say */
    const char *status_callback;  /* absolute URL */
    int         ring_timeout_s;
} provider_call_req_t;

typedef struct {
    int               ok;
    hr_failure_t      failure;      /* when !ok */
    long              http_status;  /* 0: no answer at all */
    int               error_code;   /* the provider's own code, 0 if none */
    const char       *sid;          /* "" when none */
    hr_call_status_t  status;
    int64_t           created_ms;   /* find_call: when the call was made */
} provider_result_t;

typedef void (*provider_cb)(void *arg, const provider_result_t *res);

typedef struct provider provider_t;

typedef struct {
    int  (*create_call)(provider_t *p, const provider_call_req_t *req,
                        provider_cb cb, void *arg);
    /* status: "canceled" (queued or ringing) or "completed" (hang up) */
    int  (*update_call)(provider_t *p, const char *sid, const char *status,
                        provider_cb cb, void *arg);
    int  (*fetch_call)(provider_t *p, const char *sid, provider_cb cb,
                       void *arg);
    /* The newest call to `to` made since since_ms, sid "" if none. */
    int  (*find_call)(provider_t *p, const char *to, int64_t since_ms,
                      provider_cb cb, void *arg);
    /* Instructions (malloc'd text): dial phone, report its answer to
     * status_url, then ask action_url for what comes next. */
    char *(*render_dial)(provider_t *p, const char *phone, int timeout_s,
                         const char *action_url, const char *status_url);
    /* Instructions: say text, then hang up. */
    char *(*render_say)(provider_t *p, const char *text);
    /* Instructions: hang up. */
    char *(*render_hangup)(provider_t *p);
    void (*free)(provider_t *p);
} provider_ops_t;

struct provider {
    const provider_ops_t *ops;
};

#endif /* HAMRAHI_PROVIDER_H */
