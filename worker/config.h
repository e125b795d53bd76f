/*
 * Worker configuration: one file of "key = value" lines ('#' starts a
 * comment), then HAMRAHI_<KEY> environment overrides. Immutable after load.
 * Keys: docs/contracts.md "Worker configuration".
 */

#ifndef HAMRAHI_CONFIG_H
#define HAMRAHI_CONFIG_H

#include <stddef.h>

typedef struct {
    char  redis_host[256];
    int   redis_port;
    char  stream_key[128];
    char  consumer_name[128];
    char  pg_dsn[1024];
    char  provider_base_url[512];
    char  provider_account_sid[128];
    char  provider_auth_token_file[512];
    char  provider_from_number[32];
    char  callback_base_url[512];
    char  metrics_listen[128];
    int   watchdog_ms;
    int   ring_timeout_s;
    int   dial_timeout_s;
    int   backstop_margin_s;
    int   retry_budget_ms;
    int   max_event_age_s;
    int   claim_idle_ms;
    int   directory_refresh_ms;
    int   provider_timeout_ms;
    /* read from provider_auth_token_file, never from the config itself */
    char  provider_auth_token[256];
} config_t;

/* Defaults, then the file (path may be NULL), then the environment.
 * Returns 0, or -1 with err naming the key and the bad value. */
int config_load(config_t *cf, const char *path, char *err, size_t errlen);

#endif /* HAMRAHI_CONFIG_H */
