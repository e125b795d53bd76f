#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

typedef struct {
    const char *key;
    size_t      offset;
    size_t      size;   /* 0: an int */
    long        min;
    long        max;
} config_key_t;

#define STR(k)         { #k, offsetof(config_t, k), sizeof(((config_t *) 0)->k), 0, 0 }
#define INT(k, lo, hi) { #k, offsetof(config_t, k), 0, lo, hi }

static const config_key_t keys[] = {
    STR(redis_host),
    INT(redis_port, 1, 65535),
    STR(stream_key),
    STR(consumer_name),
    STR(pg_dsn),
    STR(provider_base_url),
    STR(provider_account_sid),
    STR(provider_auth_token_file),
    STR(provider_from_number),
    STR(callback_base_url),
    STR(metrics_listen),
    INT(watchdog_ms, 100, 600000),
    INT(ring_timeout_s, 5, 600),
    INT(dial_timeout_s, 5, 600),
    INT(backstop_margin_s, 1, 3600),
    INT(retry_budget_ms, 0, 3600000),
    INT(max_event_age_s, 1, 86400 * 30),
    INT(claim_idle_ms, 100, 3600000),
    INT(directory_refresh_ms, 500, 86400000),
    INT(provider_timeout_ms, 100, 60000),
};


static void
set_defaults(config_t *cf)
{
    memset(cf, 0, sizeof(*cf));
    strcpy(cf->redis_host, "127.0.0.1");
    cf->redis_port = 6380;
    strcpy(cf->stream_key, "hamrahi:events");
    strcpy(cf->consumer_name, "worker-1");
    strcpy(cf->pg_dsn, "host=127.0.0.1 port=5433 dbname=hamrahi user=postgres");
    strcpy(cf->provider_base_url, "http://127.0.0.1:8090");
    strcpy(cf->provider_from_number, "+15550009999");
    strcpy(cf->callback_base_url, "http://127.0.0.1:8080");
    strcpy(cf->metrics_listen, "127.0.0.1:9101");
    cf->watchdog_ms = 5000;
    cf->ring_timeout_s = 30;
    cf->dial_timeout_s = 20;
    cf->backstop_margin_s = 10;
    cf->retry_budget_ms = 60000;
    cf->max_event_age_s = 3600;
    cf->claim_idle_ms = 10000;
    cf->directory_refresh_ms = 10000;
    cf->provider_timeout_ms = 5000;
}


static int
set_value(config_t *cf, const config_key_t *k, const char *value,
          const char *where, char *err, size_t errlen)
{
    char  *end;
    long   n;

    if (k->size > 0) {
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "%s: %s is too long", where, k->key);
            return -1;
        }
        strcpy((char *) cf + k->offset, value);
        return 0;
    }
    errno = 0;
    n = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || n < k->min
        || n > k->max)
    {
        snprintf(err, errlen, "%s: %s = \"%s\" is not an integer in %ld..%ld",
                 where, k->key, value, k->min, k->max);
        return -1;
    }
    *(int *) ((char *) cf + k->offset) = (int) n;
    return 0;
}


static const config_key_t *
find_key(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(keys[i].key, name) == 0) {
            return &keys[i];
        }
    }
    return NULL;
}


static char *
trim(char *s)
{
    char *end;

    while (isspace((unsigned char) *s)) {
        s++;
    }
    end = s + strlen(s);
    while (end > s && isspace((unsigned char) end[-1])) {
        *--end = '\0';
    }
    return s;
}


static int
parse_line(config_t *cf, char *line, const char *where, char *err,
           size_t errlen)
{
    const config_key_t *k;
    char               *eq, *name, *value, *hash;

    hash = strchr(line, '#');
    if (hash != NULL) {
        *hash = '\0';
    }
    name = trim(line);
    if (*name == '\0') {
        return 0;
    }
    eq = strchr(name, '=');
    if (eq == NULL) {
        snprintf(err, errlen, "%s: expected \"key = value\"", where);
        return -1;
    }
    *eq = '\0';
    value = trim(eq + 1);
    name = trim(name);
    k = find_key(name);
    if (k == NULL) {
        snprintf(err, errlen, "%s: unknown key \"%s\"", where, name);
        return -1;
    }
    return set_value(cf, k, value, where, err, errlen);
}


static int
load_file(config_t *cf, const char *path, char *err, size_t errlen)
{
    FILE *f;
    char  line[2048], where[600];
    int   lineno = 0, rc = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        rc = parse_line(cf, line, where, err, errlen);
    }
    fclose(f);
    return rc;
}


static int
load_env(config_t *cf, char *err, size_t errlen)
{
    char         name[160], *p;
    const char  *value;
    size_t       i;

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(name, sizeof(name), "HAMRAHI_%s", keys[i].key);
        for (p = name; *p; p++) {
            *p = (char) toupper((unsigned char) *p);
        }
        value = getenv(name);
        if (value != NULL
            && set_value(cf, &keys[i], value, name, err, errlen) != 0)
        {
            return -1;
        }
    }
    return 0;
}


static int
load_token(config_t *cf, char *err, size_t errlen)
{
    FILE   *f;
    size_t  n;

    if (cf->provider_auth_token_file[0] == '\0') {
        snprintf(err, errlen, "provider_auth_token_file is not set");
        return -1;
    }
    f = fopen(cf->provider_auth_token_file, "r");
    if (f == NULL) {
        snprintf(err, errlen, "provider_auth_token_file = \"%s\": %s",
                 cf->provider_auth_token_file, strerror(errno));
        return -1;
    }
    n = fread(cf->provider_auth_token, 1, sizeof(cf->provider_auth_token) - 1,
              f);
    fclose(f);
    cf->provider_auth_token[n] = '\0';
    {
        char *t = trim(cf->provider_auth_token);

        memmove(cf->provider_auth_token, t, strlen(t) + 1);
    }
    if (cf->provider_auth_token[0] == '\0') {
        snprintf(err, errlen, "provider_auth_token_file = \"%s\" is empty",
                 cf->provider_auth_token_file);
        return -1;
    }
    return 0;
}


int
config_load(config_t *cf, const char *path, char *err, size_t errlen)
{
    set_defaults(cf);
    if (path != NULL && load_file(cf, path, err, errlen) != 0) {
        return -1;
    }
    if (load_env(cf, err, errlen) != 0) {
        return -1;
    }
    if (cf->provider_account_sid[0] == '\0') {
        snprintf(err, errlen, "provider_account_sid is not set");
        return -1;
    }
    return load_token(cf, err, errlen);
}
