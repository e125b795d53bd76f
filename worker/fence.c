#include <stdlib.h>
#include <string.h>

#include "fence.h"
#include "log.h"

typedef struct held held_t;

struct held {
    held_t       *next;
    int           create;        /* else an update */
    char         *to;            /* create: to; update: the call's sid */
    char         *from;
    char         *instructions;
    char         *status_url;    /* create: status callback; update: status */
    int           ring_timeout_s;
    provider_cb   cb;
    void         *arg;
};

typedef struct {
    provider_t  base;            /* first: ops see a provider_t */
    provider_t *inner;
    lease_t    *lease;
    held_t     *head;
    held_t     *tail;
} fence_t;


static void
held_free(held_t *h)
{
    free(h->to);
    free(h->from);
    free(h->instructions);
    free(h->status_url);
    free(h);
}


static char *
dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}


static int
confirmed(const fence_t *f)
{
    return f->lease == NULL || lease_confirmed(f->lease);
}


static void
hold(fence_t *f, held_t *h)
{
    if (f->tail != NULL) {
        f->tail->next = h;
    } else {
        f->head = h;
    }
    f->tail = h;
}


static int
send_held(fence_t *f, const held_t *h)
{
    provider_call_req_t req;

    if (!h->create) {
        return f->inner->ops->update_call(f->inner, h->to, h->status_url,
                                          h->cb, h->arg);
    }
    req.to = h->to;
    req.from = h->from;
    req.instructions = h->instructions;
    req.status_callback = h->status_url;
    req.ring_timeout_s = h->ring_timeout_s;
    return f->inner->ops->create_call(f->inner, &req, h->cb, h->arg);
}


/* A request that cannot start now gets the answer the inner provider
 * gives one that could not start: nothing was sent. */
static void
report_not_sent(const held_t *h)
{
    provider_result_t res;

    memset(&res, 0, sizeof(res));
    res.failure = HR_FAIL_NOT_SENT;
    res.sid = "";
    h->cb(h->arg, &res);
}


void
fence_release(void *p)
{
    fence_t *f = p;
    held_t  *h;
    int      n = 0;

    while (confirmed(f) && (h = f->head) != NULL) {
        f->head = h->next;
        if (f->head == NULL) {
            f->tail = NULL;
        }
        if (send_held(f, h) != 0) {
            report_not_sent(h);
        }
        held_free(h);
        n++;
    }
    if (n > 0) {
        log_line("fence: lease confirmed; %d held provider request(s) sent",
                 n);
    }
}


static int
fence_create(provider_t *p, const provider_call_req_t *req, provider_cb cb,
             void *arg)
{
    fence_t *f = (fence_t *) p;
    held_t  *h;

    if (confirmed(f) && f->head == NULL) {
        return f->inner->ops->create_call(f->inner, req, cb, arg);
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return -1;
    }
    h->create = 1;
    h->to = dup_or_null(req->to);
    h->from = dup_or_null(req->from);
    h->instructions = dup_or_null(req->instructions);
    h->status_url = dup_or_null(req->status_callback);
    h->ring_timeout_s = req->ring_timeout_s;
    h->cb = cb;
    h->arg = arg;
    if (h->to == NULL || h->from == NULL || h->instructions == NULL
        || h->status_url == NULL)
    {
        held_free(h);
        return -1;
    }
    log_line("fence: lease not confirmed; call creation held");
    hold(f, h);
    return 0;
}


static int
fence_update(provider_t *p, const char *sid, const char *status,
             provider_cb cb, void *arg)
{
    fence_t *f = (fence_t *) p;
    held_t  *h;

    if (confirmed(f) && f->head == NULL) {
        return f->inner->ops->update_call(f->inner, sid, status, cb, arg);
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->to = strdup(sid)) == NULL
        || (h->status_url = strdup(status)) == NULL)
    {
        if (h != NULL) {
            held_free(h);
        }
        return -1;
    }
    h->cb = cb;
    h->arg = arg;
    hold(f, h);
    return 0;
}


static int
fence_fetch(provider_t *p, const char *sid, provider_cb cb, void *arg)
{
    fence_t *f = (fence_t *) p;

    return f->inner->ops->fetch_call(f->inner, sid, cb, arg);
}


static int
fence_find(provider_t *p, const char *to, int64_t since_ms, provider_cb cb,
           void *arg)
{
    fence_t *f = (fence_t *) p;

    return f->inner->ops->find_call(f->inner, to, since_ms, cb, arg);
}


static char *
fence_render_dial(provider_t *p, const char *phone, int timeout_s,
                  const char *action_url, const char *status_url)
{
    fence_t *f = (fence_t *) p;

    return f->inner->ops->render_dial(f->inner, phone, timeout_s, action_url,
                                      status_url);
}


static char *
fence_render_say(provider_t *p, const char *text)
{
    fence_t *f = (fence_t *) p;

    return f->inner->ops->render_say(f->inner, text);
}


static char *
fence_render_hangup(provider_t *p)
{
    fence_t *f = (fence_t *) p;

    return f->inner->ops->render_hangup(f->inner);
}


static void
fence_free(provider_t *p)
{
    fence_t *f = (fence_t *) p;
    held_t  *h;

    while ((h = f->head) != NULL) {
        f->head = h->next;
        held_free(h);
    }
    f->inner->ops->free(f->inner);
    free(f);
}


static const provider_ops_t fence_ops = {
    fence_create,      fence_update,     fence_fetch,
    fence_find,        fence_render_dial, fence_render_say,
    fence_render_hangup, fence_free,
};


provider_t *
fence_new(provider_t *inner)
{
    fence_t *f;

    if (inner == NULL) {
        return NULL;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        inner->ops->free(inner);
        return NULL;
    }
    f->base.ops = &fence_ops;
    f->inner = inner;
    return &f->base;
}


void
fence_set_lease(provider_t *p, lease_t *lease)
{
    ((fence_t *) p)->lease = lease;
}
