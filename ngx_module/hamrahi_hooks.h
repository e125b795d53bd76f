/*
 * The hook handler of `hamrahi_hooks;`: signalling hooks and telephony
 * callbacks → checks → XADD hamrahi:events → 202 only once Redis has it.
 */

#ifndef HAMRAHI_HOOKS_H
#define HAMRAHI_HOOKS_H

#include "ngx_http_hamrahi_module.h"


#define NGX_HTTP_HAMRAHI_HOOK_MAX_BODY  16384

ngx_int_t ngx_http_hamrahi_hooks_handler(ngx_http_request_t *r);


#endif /* HAMRAHI_HOOKS_H */
