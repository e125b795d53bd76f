/*
 * HS256 JWT verification for panel tokens. See hamrahi_jwt.h.
 */

#include <string.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hamrahi_jwt.h"


#define HAMRAHI_JWT_DECODED_MAX  (HAMRAHI_JWT_MAX_LEN / 4 * 3 + 3)


static int
hamrahi_b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}


/* Unpadded base64url (RFC 7515 section 2); returns the size or -1. */
static long
hamrahi_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    size_t    i, n;
    uint32_t  acc;
    int       v, bits;

    if (len % 4 == 1 || len / 4 * 3 + 2 > cap) {
        return -1;
    }

    acc = 0;
    bits = 0;
    n = 0;

    for (i = 0; i < len; i++) {
        v = hamrahi_b64url_value((unsigned char) in[i]);
        if (v < 0) {
            return -1;
        }

        acc = (acc << 6) | (uint32_t) v;
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t) (acc >> bits);
        }
    }

    /* leftover bits must be zero, or two spellings would decode alike */
    if (acc & ((1u << bits) - 1)) {
        return -1;
    }

    return (long) n;
}


static json_t *
hamrahi_jwt_load_part(const char *part, size_t len)
{
    uint8_t  buf[HAMRAHI_JWT_DECODED_MAX];
    long     n;
    json_t  *json;

    n = hamrahi_b64url_decode(part, len, buf, sizeof(buf));
    if (n < 0) {
        return NULL;
    }

    json = json_loadb((const char *) buf, (size_t) n, JSON_REJECT_DUPLICATES,
                      NULL);
    if (json != NULL && !json_is_object(json)) {
        json_decref(json);
        return NULL;
    }

    return json;
}


static hamrahi_jwt_status_t
hamrahi_jwt_check_header(const char *part, size_t len)
{
    json_t       *header;
    const char   *alg;
    int           ok;

    header = hamrahi_jwt_load_part(part, len);
    if (header == NULL) {
        return HAMRAHI_JWT_MALFORMED;
    }

    alg = json_string_value(json_object_get(header, "alg"));
    /* a critical extension we do not know must make the token invalid */
    ok = alg != NULL && strcmp(alg, "HS256") == 0
         && json_object_get(header, "crit") == NULL;

    json_decref(header);

    return ok ? HAMRAHI_JWT_OK : HAMRAHI_JWT_BAD_ALG;
}


static hamrahi_jwt_status_t
hamrahi_jwt_check_signature(const char *token, size_t signed_len,
    const char *sig, size_t sig_len, const uint8_t *key, size_t key_len)
{
    uint8_t       given[64], expected[EVP_MAX_MD_SIZE];
    unsigned int  expected_len;
    long          n;

    n = hamrahi_b64url_decode(sig, sig_len, given, sizeof(given));

    if (HMAC(EVP_sha256(), key, (int) key_len, (const uint8_t *) token,
             signed_len, expected, &expected_len) == NULL)
    {
        return HAMRAHI_JWT_BAD_SIGNATURE;
    }

    if (n != (long) expected_len
        || CRYPTO_memcmp(given, expected, expected_len) != 0)
    {
        return HAMRAHI_JWT_BAD_SIGNATURE;
    }

    return HAMRAHI_JWT_OK;
}


/* Copies a non-empty string claim without embedded NUL; 0 if it is not one. */
static int
hamrahi_jwt_copy_claim(json_t *payload, const char *name, char *out,
    size_t cap)
{
    json_t      *v;
    const char  *s;
    size_t       len;

    v = json_object_get(payload, name);
    s = json_string_value(v);
    if (s == NULL) {
        return 0;
    }

    len = json_string_length(v);
    if (len == 0 || len >= cap || strlen(s) != len) {
        return 0;
    }

    memcpy(out, s, len + 1);
    return 1;
}


static int
hamrahi_jwt_number(json_t *payload, const char *name, int64_t *out)
{
    json_t  *v;
    double   d;

    v = json_object_get(payload, name);

    if (json_is_integer(v)) {
        *out = (int64_t) json_integer_value(v);
        return 1;
    }

    if (json_is_real(v)) {
        d = json_real_value(v);
        if (d < -9e15 || d > 9e15) {
            return 0;
        }
        *out = (int64_t) d;
        return 1;
    }

    return 0;
}


static hamrahi_jwt_status_t
hamrahi_jwt_check_claims(json_t *payload, int64_t now, int64_t leeway,
    hamrahi_jwt_claims_t *claims)
{
    int64_t      nbf;
    const char  *role;

    if (!hamrahi_jwt_number(payload, "exp", &claims->exp)) {
        return HAMRAHI_JWT_BAD_CLAIMS;
    }

    /* written so that a huge exp cannot overflow */
    if (now - leeway > claims->exp) {
        return HAMRAHI_JWT_EXPIRED;
    }

    if (json_object_get(payload, "nbf") != NULL) {
        if (!hamrahi_jwt_number(payload, "nbf", &nbf)) {
            return HAMRAHI_JWT_BAD_CLAIMS;
        }
        if (now + leeway < nbf) {
            return HAMRAHI_JWT_NOT_YET_VALID;
        }
    }

    role = json_string_value(json_object_get(payload, "role"));
    if (role != NULL && strcmp(role, "operator") == 0) {
        claims->role = HAMRAHI_ROLE_OPERATOR;

    } else if (role != NULL && strcmp(role, "supervisor") == 0) {
        claims->role = HAMRAHI_ROLE_SUPERVISOR;

    } else {
        return HAMRAHI_JWT_BAD_CLAIMS;
    }

    if (!hamrahi_jwt_copy_claim(payload, "sub", claims->sub,
                                sizeof(claims->sub))
        || !hamrahi_jwt_copy_claim(payload, "station", claims->station,
                                   sizeof(claims->station)))
    {
        return HAMRAHI_JWT_BAD_CLAIMS;
    }

    return HAMRAHI_JWT_OK;
}


hamrahi_jwt_status_t
hamrahi_jwt_verify(const char *token, size_t len, const uint8_t *key,
    size_t key_len, int64_t now, int64_t leeway, hamrahi_jwt_claims_t *claims)
{
    const char            *dot1, *dot2, *end;
    json_t                *payload;
    hamrahi_jwt_status_t   rc;
    hamrahi_jwt_claims_t   got;

    if (len == 0 || len > HAMRAHI_JWT_MAX_LEN || key_len == 0) {
        return HAMRAHI_JWT_MALFORMED;
    }

    end = token + len;
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t) (end - dot1 - 1)) : NULL;

    if (dot2 == NULL || dot1 == token || dot2 == dot1 + 1 || dot2 + 1 == end
        || memchr(dot2 + 1, '.', (size_t) (end - dot2 - 1)) != NULL)
    {
        return HAMRAHI_JWT_MALFORMED;
    }

    rc = hamrahi_jwt_check_header(token, (size_t) (dot1 - token));
    if (rc != HAMRAHI_JWT_OK) {
        return rc;
    }

    /* nothing of the payload is believed before the signature holds */
    rc = hamrahi_jwt_check_signature(token, (size_t) (dot2 - token), dot2 + 1,
                                     (size_t) (end - dot2 - 1), key, key_len);
    if (rc != HAMRAHI_JWT_OK) {
        return rc;
    }

    payload = hamrahi_jwt_load_part(dot1 + 1, (size_t) (dot2 - dot1 - 1));
    if (payload == NULL) {
        return HAMRAHI_JWT_MALFORMED;
    }

    memset(&got, 0, sizeof(got));
    rc = hamrahi_jwt_check_claims(payload, now, leeway, &got);
    json_decref(payload);

    if (rc == HAMRAHI_JWT_OK) {
        *claims = got;
    }

    return rc;
}


const char *
hamrahi_jwt_reason(hamrahi_jwt_status_t status)
{
    switch (status) {
    case HAMRAHI_JWT_OK:
        return "valid";
    case HAMRAHI_JWT_MALFORMED:
        return "token is not a well-formed JWT";
    case HAMRAHI_JWT_BAD_ALG:
        return "token algorithm must be HS256";
    case HAMRAHI_JWT_BAD_SIGNATURE:
        return "token signature does not match";
    case HAMRAHI_JWT_EXPIRED:
        return "token has expired";
    case HAMRAHI_JWT_NOT_YET_VALID:
        return "token is not valid yet";
    case HAMRAHI_JWT_BAD_CLAIMS:
        return "token needs sub, station, exp and role operator|supervisor";
    }

    return "token rejected";
}
