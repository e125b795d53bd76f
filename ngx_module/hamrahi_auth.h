/*
 * Hook authentication, pure (no nginx header): the signalling hooks'
 * X-Hamrahi-Signature and the telephony provider's X-Twilio-Signature.
 * HMACs come from OpenSSL's libcrypto; every comparison is constant-time.
 */

#ifndef HAMRAHI_AUTH_H
#define HAMRAHI_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "hamrahi_event.h"


#define HAMRAHI_AUTH_TOLERANCE_S   300
#define HAMRAHI_AUTH_MAX_V1        4     /* several during a secret rotation */
#define HAMRAHI_AUTH_SHA256_LEN    32
#define HAMRAHI_AUTH_TWILIO_B64    28    /* base64 of a 20-byte SHA-1 MAC */


typedef enum {
    HAMRAHI_AUTH_OK = 0,
    HAMRAHI_AUTH_MISSING,       /* no signature header */
    HAMRAHI_AUTH_MALFORMED,     /* header does not parse */
    HAMRAHI_AUTH_EXPIRED,       /* timestamp outside the tolerance */
    HAMRAHI_AUTH_MISMATCH       /* well-formed, wrong signature */
} hamrahi_auth_result_t;


/* X-Hamrahi-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...] */
typedef struct {
    int64_t        t;
    const char    *t_text;      /* the digits as sent: they are signed */
    size_t         t_len;
    size_t         nv1;
    unsigned char  v1[HAMRAHI_AUTH_MAX_V1][HAMRAHI_AUTH_SHA256_LEN];
} hamrahi_auth_hook_sig_t;


const char *hamrahi_auth_result_name(hamrahi_auth_result_t res);

hamrahi_auth_result_t hamrahi_auth_parse_hook_header(const char *s,
    size_t len, hamrahi_auth_hook_sig_t *sig);

/*
 * Check X-Hamrahi-Signature against HMAC-SHA256(secret, t "." body) and
 * |now_s - t| <= tolerance_s. On success the MAC and t are copied to mac_out
 * and t_out when they are not NULL (the replay-protection key and its
 * lifetime).
 */
hamrahi_auth_result_t hamrahi_auth_verify_hook(const unsigned char *secret,
    size_t secret_len, const char *header, size_t header_len,
    const unsigned char *body, size_t body_len, int64_t now_s,
    int64_t tolerance_s, unsigned char mac_out[HAMRAHI_AUTH_SHA256_LEN],
    int64_t *t_out);

/*
 * Twilio's signature: base64(HMAC-SHA1(token, url + name1 + value1 + ...))
 * with the POST parameters sorted by name, then value (byte order). Sorts
 * params in place. out receives 28 characters and a NUL. 0 or -1.
 */
int hamrahi_auth_twilio_signature(const unsigned char *token,
    size_t token_len, const char *url, size_t url_len, hamrahi_kv_t *params,
    size_t nparams, char out[HAMRAHI_AUTH_TWILIO_B64 + 1]);

/*
 * Verify X-Twilio-Signature against each of the urls (the public URL with
 * and without its port, as Twilio's own validator does). Sorts params.
 */
hamrahi_auth_result_t hamrahi_auth_verify_twilio(const unsigned char *token,
    size_t token_len, const char *const *urls, const size_t *url_lens,
    size_t nurls, hamrahi_kv_t *params, size_t nparams,
    const char *signature, size_t signature_len);

/*
 * The two spellings of base_url Twilio may have signed: without a port and
 * with one (the default port of the scheme when base_url names none).
 * Written NUL-terminated into the caller's buffers of cap bytes. 0 or -1.
 */
int hamrahi_auth_url_variants(const char *base_url, size_t len,
    char *without_port, char *with_port, size_t cap);

void hamrahi_auth_hex(const unsigned char *in, size_t n, char *out);


#endif /* HAMRAHI_AUTH_H */
