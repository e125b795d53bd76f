/*
 * Hook authentication (see hamrahi_auth.h). Pure: no nginx header, no clock,
 * no I/O; the caller passes the time in.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hamrahi_auth.h"


#define HAMRAHI_AUTH_T_MAX_DIGITS  12


static int hamrahi_auth_hex_value(char c);
static int hamrahi_auth_parse_hex(const char *s, size_t len,
    unsigned char *out, size_t out_len);
static int hamrahi_auth_parse_item(const char *key, size_t key_len,
    const char *val, size_t val_len, hamrahi_auth_hook_sig_t *sig);
static int hamrahi_auth_kv_cmp(const void *a, const void *b);


const char *
hamrahi_auth_result_name(hamrahi_auth_result_t res)
{
    switch (res) {
    case HAMRAHI_AUTH_OK:
        return "ok";
    case HAMRAHI_AUTH_MISSING:
        return "missing";
    case HAMRAHI_AUTH_MALFORMED:
        return "malformed";
    case HAMRAHI_AUTH_EXPIRED:
        return "expired";
    case HAMRAHI_AUTH_MISMATCH:
        return "mismatch";
    }

    return "unknown";
}


static int
hamrahi_auth_hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


static int
hamrahi_auth_parse_hex(const char *s, size_t len, unsigned char *out,
    size_t out_len)
{
    size_t  i;
    int     hi, lo;

    if (len != out_len * 2) {
        return -1;
    }

    for (i = 0; i < out_len; i++) {
        hi = hamrahi_auth_hex_value(s[2 * i]);
        lo = hamrahi_auth_hex_value(s[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return -1;
        }

        out[i] = (unsigned char) (hi << 4 | lo);
    }

    return 0;
}


void
hamrahi_auth_hex(const unsigned char *in, size_t n, char *out)
{
    static const char  digits[] = "0123456789abcdef";
    size_t             i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }

    out[2 * n] = '\0';
}


/* one "key=value" item of the header; unknown keys are ignored */
static int
hamrahi_auth_parse_item(const char *key, size_t key_len, const char *val,
    size_t val_len, hamrahi_auth_hook_sig_t *sig)
{
    size_t  i;

    if (key_len == 1 && key[0] == 't') {
        if (sig->t_text != NULL || val_len == 0
            || val_len > HAMRAHI_AUTH_T_MAX_DIGITS)
        {
            return -1;
        }

        sig->t = 0;

        for (i = 0; i < val_len; i++) {
            if (val[i] < '0' || val[i] > '9') {
                return -1;
            }

            sig->t = sig->t * 10 + (val[i] - '0');
        }

        sig->t_text = val;
        sig->t_len = val_len;
        return 0;
    }

    if (key_len == 2 && key[0] == 'v' && key[1] == '1') {
        if (sig->nv1 == HAMRAHI_AUTH_MAX_V1) {
            return -1;
        }

        if (hamrahi_auth_parse_hex(val, val_len, sig->v1[sig->nv1],
                                   HAMRAHI_AUTH_SHA256_LEN) != 0)
        {
            return -1;
        }

        sig->nv1++;
    }

    return 0;
}


hamrahi_auth_result_t
hamrahi_auth_parse_hook_header(const char *s, size_t len,
    hamrahi_auth_hook_sig_t *sig)
{
    const char  *p, *end, *item_end, *eq, *key, *val;
    size_t       key_len, val_len;

    memset(sig, 0, sizeof(*sig));

    if (s == NULL || len == 0) {
        return HAMRAHI_AUTH_MISSING;
    }

    p = s;
    end = s + len;

    while (p < end) {
        item_end = memchr(p, ',', (size_t) (end - p));
        if (item_end == NULL) {
            item_end = end;
        }

        while (p < item_end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        eq = memchr(p, '=', (size_t) (item_end - p));
        if (eq == NULL) {
            return HAMRAHI_AUTH_MALFORMED;
        }

        key = p;
        key_len = (size_t) (eq - p);
        val = eq + 1;
        val_len = (size_t) (item_end - val);

        while (val_len > 0
               && (val[val_len - 1] == ' ' || val[val_len - 1] == '\t'))
        {
            val_len--;
        }

        if (hamrahi_auth_parse_item(key, key_len, val, val_len, sig) != 0) {
            return HAMRAHI_AUTH_MALFORMED;
        }

        p = item_end + 1;
    }

    if (sig->t_text == NULL || sig->nv1 == 0) {
        return HAMRAHI_AUTH_MALFORMED;
    }

    return HAMRAHI_AUTH_OK;
}


hamrahi_auth_result_t
hamrahi_auth_verify_hook(const unsigned char *secret, size_t secret_len,
    const char *header, size_t header_len, const unsigned char *body,
    size_t body_len, int64_t now_s, int64_t tolerance_s,
    unsigned char mac_out[HAMRAHI_AUTH_SHA256_LEN], int64_t *t_out)
{
    size_t                   i, signed_len;
    unsigned int             mac_len;
    unsigned char           *signed_text;
    unsigned char            mac[EVP_MAX_MD_SIZE];
    int                      match;
    hamrahi_auth_result_t    res;
    hamrahi_auth_hook_sig_t  sig;

    res = hamrahi_auth_parse_hook_header(header, header_len, &sig);
    if (res != HAMRAHI_AUTH_OK) {
        return res;
    }

    if (sig.t > now_s + tolerance_s || sig.t < now_s - tolerance_s) {
        return HAMRAHI_AUTH_EXPIRED;
    }

    signed_len = sig.t_len + 1 + body_len;

    signed_text = malloc(signed_len);
    if (signed_text == NULL) {
        return HAMRAHI_AUTH_MISMATCH;
    }

    memcpy(signed_text, sig.t_text, sig.t_len);
    signed_text[sig.t_len] = '.';
    if (body_len > 0) {
        memcpy(signed_text + sig.t_len + 1, body, body_len);
    }

    mac_len = 0;
    if (HMAC(EVP_sha256(), secret, (int) secret_len, signed_text, signed_len,
             mac, &mac_len) == NULL)
    {
        mac_len = 0;
    }

    free(signed_text);

    if (mac_len != HAMRAHI_AUTH_SHA256_LEN) {
        return HAMRAHI_AUTH_MISMATCH;
    }

    /* compare against every v1 so the time taken does not say which one */
    match = -1;
    for (i = 0; i < sig.nv1; i++) {
        if (CRYPTO_memcmp(mac, sig.v1[i], HAMRAHI_AUTH_SHA256_LEN) == 0) {
            match = (int) i;
        }
    }

    if (match < 0) {
        return HAMRAHI_AUTH_MISMATCH;
    }

    if (mac_out != NULL) {
        memcpy(mac_out, mac, HAMRAHI_AUTH_SHA256_LEN);
    }

    if (t_out != NULL) {
        *t_out = sig.t;
    }

    return HAMRAHI_AUTH_OK;
}


static int
hamrahi_auth_bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int  rc;

    rc = memcmp(a, b, alen < blen ? alen : blen);
    if (rc != 0) {
        return rc;
    }

    return (alen > blen) - (alen < blen);
}


static int
hamrahi_auth_kv_cmp(const void *a, const void *b)
{
    const hamrahi_kv_t  *x = a, *y = b;
    int                  rc;

    rc = hamrahi_auth_bytes_cmp(x->name, x->name_len, y->name, y->name_len);
    if (rc != 0) {
        return rc;
    }

    return hamrahi_auth_bytes_cmp(x->value, x->value_len, y->value,
                                  y->value_len);
}


int
hamrahi_auth_twilio_signature(const unsigned char *token, size_t token_len,
    const char *url, size_t url_len, hamrahi_kv_t *params, size_t nparams,
    char out[HAMRAHI_AUTH_TWILIO_B64 + 1])
{
    size_t          i, len;
    unsigned int    mac_len;
    unsigned char  *text, *p;
    unsigned char   mac[EVP_MAX_MD_SIZE];

    if (nparams > 1) {
        qsort(params, nparams, sizeof(hamrahi_kv_t), hamrahi_auth_kv_cmp);
    }

    len = url_len;
    for (i = 0; i < nparams; i++) {
        len += params[i].name_len + params[i].value_len;
    }

    text = malloc(len > 0 ? len : 1);
    if (text == NULL) {
        return -1;
    }

    p = text;
    memcpy(p, url, url_len);
    p += url_len;

    for (i = 0; i < nparams; i++) {
        memcpy(p, params[i].name, params[i].name_len);
        p += params[i].name_len;
        memcpy(p, params[i].value, params[i].value_len);
        p += params[i].value_len;
    }

    mac_len = 0;
    if (HMAC(EVP_sha1(), token, (int) token_len, text, len, mac, &mac_len)
        == NULL)
    {
        mac_len = 0;
    }

    free(text);

    if (mac_len != 20) {
        return -1;
    }

    EVP_EncodeBlock((unsigned char *) out, mac, (int) mac_len);

    return 0;
}


hamrahi_auth_result_t
hamrahi_auth_verify_twilio(const unsigned char *token, size_t token_len,
    const char *const *urls, const size_t *url_lens, size_t nurls,
    hamrahi_kv_t *params, size_t nparams, const char *signature,
    size_t signature_len)
{
    size_t  i;
    int     match;
    char    expected[HAMRAHI_AUTH_TWILIO_B64 + 1];

    if (signature == NULL || signature_len == 0) {
        return HAMRAHI_AUTH_MISSING;
    }

    if (signature_len != HAMRAHI_AUTH_TWILIO_B64) {
        return HAMRAHI_AUTH_MALFORMED;
    }

    match = 0;
    for (i = 0; i < nurls; i++) {
        if (hamrahi_auth_twilio_signature(token, token_len, urls[i],
                                          url_lens[i], params, nparams,
                                          expected) != 0)
        {
            continue;
        }

        match |= CRYPTO_memcmp(expected, signature, HAMRAHI_AUTH_TWILIO_B64)
                 == 0;
    }

    return match ? HAMRAHI_AUTH_OK : HAMRAHI_AUTH_MISMATCH;
}


int
hamrahi_auth_url_variants(const char *base_url, size_t len,
    char *without_port, char *with_port, size_t cap)
{
    const char  *host, *host_end, *colon, *path;
    const char  *default_port;
    size_t       prefix_len, path_len;
    int          n;

    host = memchr(base_url, ':', len);
    if (host == NULL || (size_t) (host - base_url) + 3 > len
        || memcmp(host, "://", 3) != 0)
    {
        return -1;
    }

    host += 3;
    prefix_len = (size_t) (host - base_url);

    if (prefix_len == sizeof("https://") - 1
        && memcmp(base_url, "https", 5) == 0)
    {
        default_port = "443";

    } else if (prefix_len == sizeof("http://") - 1
               && memcmp(base_url, "http", 4) == 0)
    {
        default_port = "80";

    } else {
        return -1;
    }

    host_end = memchr(host, '/', len - prefix_len);
    if (host_end == NULL) {
        host_end = base_url + len;
    }

    path = host_end;
    path_len = (size_t) (base_url + len - path);

    colon = memchr(host, ':', (size_t) (host_end - host));
    if (colon == host) {
        return -1;
    }

    if (colon == NULL) {
        colon = host_end;
    }

    n = snprintf(without_port, cap, "%.*s%.*s", (int) (colon - base_url),
                 base_url, (int) path_len, path);
    if (n < 0 || (size_t) n >= cap) {
        return -1;
    }

    if (colon < host_end) {
        n = snprintf(with_port, cap, "%.*s", (int) len, base_url);

    } else {
        n = snprintf(with_port, cap, "%.*s:%s%.*s",
                     (int) (host_end - base_url), base_url, default_port,
                     (int) path_len, path);
    }

    if (n < 0 || (size_t) n >= cap) {
        return -1;
    }

    return 0;
}
