/*
 * HTTP client requests on the libuv loop: libcurl's multi_socket API driven
 * by one uv_poll_t per socket and one uv_timer_t. Never blocks the loop.
 */

#ifndef HAMRAHI_HTTP_UV_H
#define HAMRAHI_HTTP_UV_H

#include <stddef.h>
#include <curl/curl.h>
#include <uv.h>

typedef struct http http_t;

typedef struct {
    long        status;    /* HTTP status; 0 when none arrived */
    CURLcode    result;
    const char *body;      /* NUL-terminated */
    size_t      len;
} http_response_t;

typedef void (*http_cb)(void *arg, const http_response_t *res);

http_t *http_new(uv_loop_t *loop);

/* form: a urlencoded body for POST, NULL for GET. userpwd "user:password"
 * for Basic auth, or NULL. cb runs exactly once, never from inside this
 * call. Returns -1 (cb will not run) only when the request cannot start. */
int http_request(http_t *h, const char *url, const char *userpwd,
                 const char *form, long timeout_ms, http_cb cb, void *arg);

size_t http_in_flight(const http_t *h);
void http_free(http_t *h);

#endif /* HAMRAHI_HTTP_UV_H */
