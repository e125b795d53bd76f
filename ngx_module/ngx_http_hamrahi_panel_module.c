/*
 * ngx_http_hamrahi_panel_module: the police panel's WebSocket
 * (GET /v1/panel/ws). Directives, configuration and the per-worker start
 * and stop of the fan-out; the connection itself is hamrahi_panel.c.
 */

#include "hamrahi_panel.h"
#include "hamrahi_fanout.h"


#define NGX_HTTP_HAMRAHI_PANEL_SECRET_MAX  4096


static void *ngx_http_hamrahi_panel_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_hamrahi_panel_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_hamrahi_panel_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_hamrahi_panel_postconfiguration(ngx_conf_t *cf);
static char *ngx_http_hamrahi_panel_ws(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hamrahi_panel_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hamrahi_panel_allow_origin(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_hamrahi_panel_read_secret(ngx_conf_t *cf,
    ngx_str_t *path, ngx_str_t *secret);
static ngx_int_t ngx_http_hamrahi_panel_init_process(ngx_cycle_t *cycle);
static void ngx_http_hamrahi_panel_exit_process(ngx_cycle_t *cycle);


/* clang-format off */
static ngx_command_t  ngx_http_hamrahi_panel_commands[] = {

    { ngx_string("hamrahi_panel_ws"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_hamrahi_panel_ws,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hamrahi_panel_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_hamrahi_panel_secret_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hamrahi_panel_max_message"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hamrahi_panel_loc_conf_t, max_message),
      NULL },

    { ngx_string("hamrahi_panel_send_queue"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hamrahi_panel_loc_conf_t, send_queue),
      NULL },

    { ngx_string("hamrahi_panel_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hamrahi_panel_loc_conf_t, ping_interval),
      NULL },

    { ngx_string("hamrahi_panel_allow_origin"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_hamrahi_panel_allow_origin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_hamrahi_panel_module_ctx = {
    NULL,                                       /* preconfiguration */
    ngx_http_hamrahi_panel_postconfiguration,   /* postconfiguration */

    ngx_http_hamrahi_panel_create_main_conf,    /* create main configuration */
    NULL,                                       /* init main configuration */

    NULL,                                       /* create server configuration */
    NULL,                                       /* merge server configuration */

    ngx_http_hamrahi_panel_create_loc_conf,     /* create location configuration */
    ngx_http_hamrahi_panel_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_hamrahi_panel_module = {
    NGX_MODULE_V1,
    &ngx_http_hamrahi_panel_module_ctx,         /* module context */
    ngx_http_hamrahi_panel_commands,            /* module directives */
    NGX_HTTP_MODULE,                            /* module type */
    NULL,                                       /* init master */
    NULL,                                       /* init module */
    ngx_http_hamrahi_panel_init_process,        /* init process */
    NULL,                                       /* init thread */
    NULL,                                       /* exit thread */
    ngx_http_hamrahi_panel_exit_process,        /* exit process */
    NULL,                                       /* exit master */
    NGX_MODULE_V1_PADDING
};
/* clang-format on */


static void *
ngx_http_hamrahi_panel_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_hamrahi_panel_main_conf_t));
}


static void *
ngx_http_hamrahi_panel_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_hamrahi_panel_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hamrahi_panel_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->secret = { 0, NULL };
     */

    conf->ws = NGX_CONF_UNSET;
    conf->max_message = NGX_CONF_UNSET_SIZE;
    conf->send_queue = NGX_CONF_UNSET_SIZE;
    conf->ping_interval = NGX_CONF_UNSET_MSEC;
    conf->origins = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_hamrahi_panel_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_hamrahi_panel_loc_conf_t  *prev = parent;
    ngx_http_hamrahi_panel_loc_conf_t  *conf = child;

    ngx_conf_merge_str_value(conf->secret, prev->secret, "");
    ngx_conf_merge_size_value(conf->max_message, prev->max_message,
                              64 * 1024);
    ngx_conf_merge_size_value(conf->send_queue, prev->send_queue,
                              256 * 1024);
    ngx_conf_merge_msec_value(conf->ping_interval, prev->ping_interval,
                              30000);
    ngx_conf_merge_ptr_value(conf->origins, prev->origins, NULL);

    /* the content handler is not inherited, nor is this */
    if (conf->ws != 1) {
        return NGX_CONF_OK;
    }

    if (conf->secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hamrahi_panel_ws\" needs "
                           "\"hamrahi_panel_secret_file\"");
        return NGX_CONF_ERROR;
    }

    if (conf->max_message == 0 || conf->send_queue == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hamrahi_panel_max_message\" and "
                           "\"hamrahi_panel_send_queue\" must not be 0");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_hamrahi_panel_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_hamrahi_main_conf_t        *hmcf;
    ngx_http_hamrahi_panel_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hamrahi_panel_module);
    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hamrahi_module);

    if (pmcf->used && hmcf->redis_host.len == 0 && hmcf->redis_unix.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"hamrahi_panel_ws\" needs \"hamrahi_redis\" in the "
                      "http block");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_http_hamrahi_panel_ws(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hamrahi_panel_loc_conf_t   *plcf = conf;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_hamrahi_panel_main_conf_t  *pmcf;

    if (plcf->ws != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    plcf->ws = 1;

    pmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hamrahi_panel_module);
    pmcf->used = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_hamrahi_panel_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_hamrahi_panel_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hamrahi_panel_loc_conf_t  *plcf = conf;

    ngx_str_t  *value, path;

    if (plcf->secret.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_hamrahi_panel_read_secret(cf, &path, &plcf->secret)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* hamrahi_panel_allow_origin https://panel.example.org ...; (exact match) */
static char *
ngx_http_hamrahi_panel_allow_origin(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hamrahi_panel_loc_conf_t  *plcf = conf;

    ngx_str_t   *value, *origin;
    ngx_uint_t   i;

    if (plcf->origins != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    plcf->origins = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                     sizeof(ngx_str_t));
    if (plcf->origins == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "http://", 7) != 0
            && ngx_strncmp(value[i].data, "https://", 8) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hamrahi_panel_allow_origin: \"%V\" is not "
                               "an origin (scheme://host[:port])", &value[i]);
            return NGX_CONF_ERROR;
        }

        origin = ngx_array_push(plcf->origins);
        if (origin == NULL) {
            return NGX_CONF_ERROR;
        }

        *origin = value[i];
    }

    return NGX_CONF_OK;
}


/* The key is the file's bytes without surrounding whitespace (newline). */
static ngx_int_t
ngx_http_hamrahi_panel_read_secret(ngx_conf_t *cf, ngx_str_t *path,
    ngx_str_t *secret)
{
    u_char    *buf, *start, *end;
    ssize_t    n;
    ngx_fd_t   fd;

    fd = ngx_open_file(path->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "hamrahi_panel_secret_file: cannot open \"%V\"",
                           path);
        return NGX_ERROR;
    }

    buf = ngx_pnalloc(cf->pool, NGX_HTTP_HAMRAHI_PANEL_SECRET_MAX + 1);
    n = buf ? ngx_read_fd(fd, buf, NGX_HTTP_HAMRAHI_PANEL_SECRET_MAX + 1)
            : -1;

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "hamrahi_panel_secret_file: cannot read \"%V\"",
                           path);
    }

    ngx_close_file(fd);

    if (n == -1) {
        return NGX_ERROR;
    }

    if (n > NGX_HTTP_HAMRAHI_PANEL_SECRET_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hamrahi_panel_secret_file: \"%V\" is longer "
                           "than %d bytes", path,
                           NGX_HTTP_HAMRAHI_PANEL_SECRET_MAX);
        return NGX_ERROR;
    }

    start = buf;
    end = buf + n;

    while (start < end && isspace(*start)) {
        start++;
    }

    while (end > start && isspace(end[-1])) {
        end--;
    }

    if (start == end) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hamrahi_panel_secret_file: \"%V\" is empty",
                           path);
        return NGX_ERROR;
    }

    secret->data = start;
    secret->len = end - start;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hamrahi_panel_init_process(ngx_cycle_t *cycle)
{
    return ngx_http_hamrahi_fanout_init_process(cycle);
}


static void
ngx_http_hamrahi_panel_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_hamrahi_fanout_exit_process(cycle);
}
