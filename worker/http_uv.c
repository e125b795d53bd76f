#include <stdlib.h>
#include <string.h>

#include "http_uv.h"
#include "log.h"

#define CONNECT_TIMEOUT_MS 1000
#define BODY_MAX           (1 << 20)

struct http {
    uv_loop_t  *loop;
    CURLM      *multi;
    uv_timer_t  timer;
    size_t      in_flight;
};

typedef struct {
    uv_poll_t      poll;
    curl_socket_t  fd;
    http_t        *h;
} http_sock_t;

typedef struct {
    CURL       *easy;
    http_cb     cb;
    void       *arg;
    char       *form;
    char       *body;
    size_t      len;
    char        error[CURL_ERROR_SIZE];
} http_req_t;


static size_t
on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    http_req_t *r = userp;
    size_t      n = size * nmemb;
    char       *grown;

    if (r->len + n > BODY_MAX) {
        return 0; /* aborts the transfer: no provider answer is that big */
    }
    grown = realloc(r->body, r->len + n + 1);
    if (grown == NULL) {
        return 0;
    }
    memcpy(grown + r->len, data, n);
    r->body = grown;
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}


static void
finish_done(http_t *h)
{
    CURLMsg          *msg;
    http_req_t       *r;
    http_response_t   res;
    int               left;

    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r);
        memset(&res, 0, sizeof(res));
        res.result = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE,
                          &res.status);
        res.body = r->body ? r->body : "";
        res.len = r->len;
        curl_multi_remove_handle(h->multi, msg->easy_handle);
        curl_easy_cleanup(msg->easy_handle);
        h->in_flight--;
        r->cb(r->arg, &res);
        free(r->form);
        free(r->body);
        free(r);
    }
}


static void
on_poll(uv_poll_t *handle, int status, int events)
{
    http_sock_t *s = handle->data;
    int          flags = 0, running;

    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    }
    if (events & UV_READABLE) {
        flags |= CURL_CSELECT_IN;
    }
    if (events & UV_WRITABLE) {
        flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(s->h->multi, s->fd, flags, &running);
    finish_done(s->h);
}


static void
on_sock_closed(uv_handle_t *handle)
{
    free(handle->data);
}


static int
on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    http_t      *h = userp;
    http_sock_t *s = socketp;
    int          events = 0;

    (void) easy;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            curl_multi_assign(h->multi, fd, NULL);
            uv_close((uv_handle_t *) &s->poll, on_sock_closed);
        }
        return 0;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL || uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->fd = fd;
        s->h = h;
        s->poll.data = s;
        curl_multi_assign(h->multi, fd, s);
    }
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) {
        events |= UV_READABLE;
    }
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) {
        events |= UV_WRITABLE;
    }
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}


static void
on_timeout(uv_timer_t *t)
{
    http_t *h = t->data;
    int     running;

    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    finish_done(h);
}


/* libcurl asks for a timer; 0 means "soon", never "call me right now". */
static int
on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    http_t *h = userp;

    (void) multi;
    if (timeout_ms < 0) {
        uv_timer_stop(&h->timer);
    } else {
        uv_timer_start(&h->timer, on_timeout, (uint64_t) timeout_ms, 0);
    }
    return 0;
}


http_t *
http_new(uv_loop_t *loop)
{
    http_t *h = calloc(1, sizeof(*h));

    if (h == NULL) {
        return NULL;
    }
    h->loop = loop;
    h->multi = curl_multi_init();
    if (h->multi == NULL) {
        free(h);
        return NULL;
    }
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}


int
http_request(http_t *h, const char *url, const char *userpwd,
             const char *form, long timeout_ms, http_cb cb, void *arg)
{
    http_req_t *r = calloc(1, sizeof(*r));

    if (r == NULL || (r->easy = curl_easy_init()) == NULL) {
        free(r);
        return -1;
    }
    r->cb = cb;
    r->arg = arg;
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->error);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long) CONNECT_TIMEOUT_MS);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (userpwd != NULL) {
        curl_easy_setopt(r->easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
        curl_easy_setopt(r->easy, CURLOPT_USERPWD, userpwd);
    }
    if (form != NULL) {
        r->form = strdup(form);
        if (r->form == NULL) {
            curl_easy_cleanup(r->easy);
            free(r);
            return -1;
        }
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->form);
    }
    if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
        curl_easy_cleanup(r->easy);
        free(r->form);
        free(r);
        return -1;
    }
    h->in_flight++;
    return 0;
}


size_t
http_in_flight(const http_t *h)
{
    return h->in_flight;
}


static void
on_timer_closed(uv_handle_t *handle)
{
    free(handle->data);
}


void
http_free(http_t *h)
{
    uv_timer_stop(&h->timer);
    curl_multi_cleanup(h->multi);
    uv_close((uv_handle_t *) &h->timer, on_timer_closed);
}
