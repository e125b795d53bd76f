/*
 * ngx_http_hamrahi_module: directives, configuration, worker init/exit of the
 * hook half. The handlers live in hamrahi_hooks.c and hamrahi_metrics.c.
 */

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ngx_http_hamrahi_module.h"
#include "hamrahi_auth.h"
#include "hamrahi_hooks.h"
#include "hamrahi_metrics.h"
#include "hamrahi_panel.h"
#include "hamrahi_redis.h"


#define NGX_HTTP_HAMRAHI_SECRET_MAX  4096


static void *ngx_http_hamrahi_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_hamrahi_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_hamrahi_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_hamrahi_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_hamrahi_json_error_pages(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf);
static char *ngx_http_hamrahi_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hamrahi_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hamrahi_public_base_url(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hamrahi_hooks(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hamrahi_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_uint_t ngx_http_hamrahi_redis_needed(ngx_cycle_t *cycle,
    ngx_http_hamrahi_main_conf_t *hmcf);
static ngx_int_t ngx_http_hamrahi_init_process(ngx_cycle_t *cycle);
static void ngx_http_hamrahi_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_http_hamrahi_maxlen_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000000
};


/* clang-format off */
static ngx_command_t  ngx_http_hamrahi_commands[] = {

    { ngx_string("hamrahi_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hamrahi_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hamrahi_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hamrahi_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("hamrahi_hook_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hamrahi_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hamrahi_main_conf_t, hook_secret),
      NULL },

    { ngx_string("hamrahi_twilio_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hamrahi_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hamrahi_main_conf_t, twilio_token),
      NULL },

    { ngx_string("hamrahi_public_base_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hamrahi_public_base_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hamrahi_stream_maxlen"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hamrahi_main_conf_t, stream_maxlen),
      &ngx_http_hamrahi_maxlen_bounds },

    { ngx_string("hamrahi_hooks"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_hamrahi_hooks,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hamrahi_hook_max_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hamrahi_loc_conf_t, max_body),
      NULL },

    { ngx_string("hamrahi_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_hamrahi_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_hamrahi_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_hamrahi_create_main_conf,     /* create main configuration */
    ngx_http_hamrahi_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_hamrahi_create_loc_conf,      /* create location configuration */
    ngx_http_hamrahi_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_hamrahi_module = {
    NGX_MODULE_V1,
    &ngx_http_hamrahi_module_ctx,          /* module context */
    ngx_http_hamrahi_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_hamrahi_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_hamrahi_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};
/* clang-format on */


static void *
ngx_http_hamrahi_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_hamrahi_main_conf_t  *hmcf;

    hmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hamrahi_main_conf_t));
    if (hmcf == NULL) {
        return NULL;
    }

    hmcf->redis_port = NGX_CONF_UNSET_UINT;
    hmcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    hmcf->stream_maxlen = NGX_CONF_UNSET_UINT;

    return hmcf;
}


static char *
ngx_http_hamrahi_require(ngx_conf_t *cf, ngx_str_t *value, const char *name)
{
    if (value->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hamrahi_hooks\" requires \"%s\"", name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hamrahi_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_hamrahi_main_conf_t  *hmcf = conf;

    u_char  *p;

    ngx_conf_init_uint_value(hmcf->redis_port, 6379);
    ngx_conf_init_msec_value(hmcf->redis_timeout, 1000);
    ngx_conf_init_uint_value(hmcf->stream_maxlen, 1000000);

    p = ngx_pnalloc(cf->pool, NGX_INT_T_LEN + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    hmcf->stream_maxlen_text.data = p;
    hmcf->stream_maxlen_text.len = ngx_sprintf(p, "%ui", hmcf->stream_maxlen)
                                   - p;
    p[hmcf->stream_maxlen_text.len] = '\0';

    if (!hmcf->hooks_used) {
        return NGX_CONF_OK;
    }

    if (hmcf->redis_host.len == 0 && hmcf->redis_unix.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hamrahi_hooks\" requires \"hamrahi_redis\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_hamrahi_require(cf, &hmcf->hook_secret,
                                 "hamrahi_hook_secret_file") != NGX_CONF_OK
        || ngx_http_hamrahi_require(cf, &hmcf->twilio_token,
                                    "hamrahi_twilio_token_file")
           != NGX_CONF_OK
        || ngx_http_hamrahi_require(cf, &hmcf->public_base_url,
                                    "hamrahi_public_base_url")
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_hamrahi_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_hamrahi_loc_conf_t  *hlcf;

    hlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hamrahi_loc_conf_t));
    if (hlcf == NULL) {
        return NULL;
    }

    hlcf->max_body = NGX_CONF_UNSET_SIZE;

    return hlcf;
}


static char *
ngx_http_hamrahi_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_hamrahi_loc_conf_t  *prev = parent;
    ngx_http_hamrahi_loc_conf_t  *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_size_value(conf->max_body, prev->max_body,
                              NGX_HTTP_HAMRAHI_HOOK_MAX_BODY);

    if (!conf->hooks) {
        return NGX_CONF_OK;
    }

    /*
     * A body that fits the limit must stay in memory (no temp file, no
     * blocking read): the core module is merged first, so raise its value.
     */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->client_body_buffer_size < conf->max_body) {
        clcf->client_body_buffer_size = conf->max_body;
    }

    /* a chunked body is cut at the limit while it is read, not spooled */
    if (clcf->client_max_body_size == 0
        || clcf->client_max_body_size > (off_t) conf->max_body)
    {
        clcf->client_max_body_size = conf->max_body;
    }

    return ngx_http_hamrahi_json_error_pages(cf, clcf);
}


/*
 * nginx itself refuses a body over client_max_body_size (413) or with broken
 * chunked framing (400), with an HTML page. Send those back into the hook
 * handler (error_page CODE $uri), which sees r->err_status and answers the
 * caller with our JSON instead. Error pages configured for the location win.
 */
static char *
ngx_http_hamrahi_json_error_pages(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *clcf)
{
    ngx_str_t                          uri = ngx_string("$uri");
    ngx_uint_t                         i, k;
    ngx_array_t                       *pages;
    ngx_http_err_page_t               *err, *inherited;
    ngx_http_compile_complex_value_t   ccv;

    static const ngx_int_t  statuses[] = {
        NGX_HTTP_BAD_REQUEST, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
    };

    pages = ngx_array_create(cf->pool, 4, sizeof(ngx_http_err_page_t));
    if (pages == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the array may be the parent's: copy it instead of adding to it */
    if (clcf->error_pages != NULL) {
        inherited = clcf->error_pages->elts;

        for (i = 0; i < clcf->error_pages->nelts; i++) {
            err = ngx_array_push(pages);
            if (err == NULL) {
                return NGX_CONF_ERROR;
            }

            *err = inherited[i];
        }
    }

    for (k = 0; k < sizeof(statuses) / sizeof(statuses[0]); k++) {
        err = pages->elts;

        for (i = 0; i < pages->nelts; i++) {
            if (err[i].status == statuses[k]) {
                break;
            }
        }

        if (i < pages->nelts) {
            continue;
        }

        err = ngx_array_push(pages);
        if (err == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(err, sizeof(ngx_http_err_page_t));
        err->status = statuses[k];
        err->overwrite = -1;

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &uri;
        ccv.complex_value = &err->value;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    clcf->error_pages = pages;

    return NGX_CONF_OK;
}


/* hamrahi_redis IP:port | host:port (resolved now) | unix:/path */
static char *
ngx_http_hamrahi_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hamrahi_main_conf_t  *hmcf = conf;

    u_char     *p;
    ngx_str_t  *value;
    ngx_url_t   u;

    (void) cmd;

    if (hmcf->redis_host.len || hmcf->redis_unix.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len > 5 && ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        hmcf->redis_unix.len = value[1].len - 5;
        hmcf->redis_unix.data = ngx_pnalloc(cf->pool, hmcf->redis_unix.len + 1);
        if (hmcf->redis_unix.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(hmcf->redis_unix.data, value[1].data + 5,
                    hmcf->redis_unix.len + 1);
        return NGX_CONF_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value[1];
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hamrahi_redis: invalid address \"%V\"%s%s",
                           &value[1], u.err ? ": " : "",
                           u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    /* an IP literal from now on: hiredis never resolves at run time */
    hmcf->redis_host.data = p;
    hmcf->redis_host.len = ngx_sock_ntop(u.addrs[0].sockaddr,
                                         u.addrs[0].socklen, p,
                                         NGX_SOCKADDR_STRLEN, 0);
    p[hmcf->redis_host.len] = '\0';
    hmcf->redis_port = ngx_inet_get_port(u.addrs[0].sockaddr);

    return NGX_CONF_OK;
}


/* read a secret from a file now; missing or empty fails `nginx -t` */
static char *
ngx_http_hamrahi_secret_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    int          fd;
    ssize_t      n;
    u_char      *buf;
    ngx_str_t   *value, *secret, path;

    secret = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (secret->data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    buf = ngx_pnalloc(cf->pool, NGX_HTTP_HAMRAHI_SECRET_MAX + 1);
    if (buf == NULL) {
        return NGX_CONF_ERROR;
    }

    fd = open((const char *) path.data, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%V: cannot open \"%V\"", &cmd->name, &path);
        return NGX_CONF_ERROR;
    }

    n = read(fd, buf, NGX_HTTP_HAMRAHI_SECRET_MAX + 1);
    close(fd);

    if (n < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%V: cannot read \"%V\"", &cmd->name, &path);
        return NGX_CONF_ERROR;
    }

    if (n > NGX_HTTP_HAMRAHI_SECRET_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"%V\" is longer than %d bytes", &cmd->name,
                           &path, NGX_HTTP_HAMRAHI_SECRET_MAX);
        return NGX_CONF_ERROR;
    }

    /* editors and `echo` add a newline that is not part of the secret */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'
                     || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    {
        n--;
    }

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: \"%V\" is empty",
                           &cmd->name, &path);
        return NGX_CONF_ERROR;
    }

    buf[n] = '\0';
    secret->data = buf;
    secret->len = n;

    return NGX_CONF_OK;
}


static char *
ngx_http_hamrahi_public_base_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hamrahi_main_conf_t  *hmcf = conf;

    size_t      len, cap;
    u_char     *without, *with;
    ngx_str_t  *value;

    (void) cmd;

    if (hmcf->public_base_url.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    len = value[1].len;

    while (len > 0 && value[1].data[len - 1] == '/') {
        len--;
    }

    cap = len + sizeof(":65535");
    without = ngx_pnalloc(cf->pool, 2 * cap);
    if (without == NULL) {
        return NGX_CONF_ERROR;
    }

    with = without + cap;

    if (hamrahi_auth_url_variants((const char *) value[1].data, len,
                                  (char *) without, (char *) with, cap)
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hamrahi_public_base_url: \"%V\" is not an "
                           "http:// or https:// URL", &value[1]);
        return NGX_CONF_ERROR;
    }

    hmcf->public_base_url.data = value[1].data;
    hmcf->public_base_url.len = len;
    hmcf->public_url_without_port.data = without;
    hmcf->public_url_without_port.len = ngx_strlen(without);
    hmcf->public_url_with_port.data = with;
    hmcf->public_url_with_port.len = ngx_strlen(with);

    return NGX_CONF_OK;
}


static char *
ngx_http_hamrahi_hooks(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hamrahi_loc_conf_t  *hlcf = conf;

    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_hamrahi_main_conf_t  *hmcf;

    (void) cmd;

    if (hlcf->hooks) {
        return "is duplicate";
    }

    hlcf->hooks = 1;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hamrahi_module);
    hmcf->hooks_used = 1;

    if (hmcf->metrics_zone == NULL
        && ngx_http_hamrahi_metrics_add_zone(cf, hmcf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_hamrahi_hooks_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_hamrahi_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_hamrahi_main_conf_t  *hmcf;

    (void) cmd;
    (void) conf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hamrahi_module);

    if (hmcf->metrics_zone == NULL
        && ngx_http_hamrahi_metrics_add_zone(cf, hmcf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_hamrahi_status_handler;

    return NGX_CONF_OK;
}


/*
 * The command connection serves the hooks and the panels' resume reads: run
 * it when either is configured. This module is initialised first (config
 * lists it first), so the connection is up before the panel module starts.
 */
static ngx_uint_t
ngx_http_hamrahi_redis_needed(ngx_cycle_t *cycle,
    ngx_http_hamrahi_main_conf_t *hmcf)
{
    ngx_http_hamrahi_panel_main_conf_t  *pmcf;

    if (hmcf->hooks_used) {
        return 1;
    }

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_hamrahi_panel_module);

    return pmcf != NULL && pmcf->used;
}


static ngx_int_t
ngx_http_hamrahi_init_process(ngx_cycle_t *cycle)
{
    ngx_http_hamrahi_main_conf_t  *hmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_hamrahi_module);
    if (hmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_hamrahi_metrics_init_process(hmcf);

    if (!ngx_http_hamrahi_redis_needed(cycle, hmcf)) {
        return NGX_OK;
    }

    return ngx_http_hamrahi_redis_init_process(cycle, hmcf);
}


static void
ngx_http_hamrahi_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_hamrahi_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_hamrahi_module);

    if (hmcf != NULL && ngx_http_hamrahi_redis_needed(cycle, hmcf)
        && (ngx_process == NGX_PROCESS_WORKER
            || ngx_process == NGX_PROCESS_SINGLE))
    {
        ngx_http_hamrahi_redis_exit_process();
    }
}


/* A request header by name (case-insensitive), or NULL. */
ngx_table_elt_t *
ngx_http_hamrahi_request_header(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * A worker-lifetime timer that never keeps a quitting worker alive
 * (cancelable): the module's reconnect and retry timers.
 */
void
ngx_http_hamrahi_timer_init(ngx_event_t *ev, ngx_event_handler_pt handler,
    void *data, ngx_log_t *log)
{
    ev->handler = handler;
    ev->data = data;
    ev->log = log;
    ev->cancelable = 1;
}
