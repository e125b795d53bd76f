/*
 * Panel tokens: HS256 JSON Web Tokens (RFC 7519) with the claims of
 * DESIGN.md section 3 (sub, role, station, exp). Pure: no nginx header; the
 * HMAC is OpenSSL's, the JSON is jansson's.
 */

#ifndef HAMRAHI_JWT_H
#define HAMRAHI_JWT_H

#include <stddef.h>
#include <stdint.h>


#define HAMRAHI_JWT_MAX_LEN     8192    /* longer tokens are refused */
#define HAMRAHI_JWT_CLAIM_MAX   128     /* sub and station, with the NUL */

typedef enum {
    HAMRAHI_JWT_OK = 0,
    HAMRAHI_JWT_MALFORMED,
    HAMRAHI_JWT_BAD_ALG,
    HAMRAHI_JWT_BAD_SIGNATURE,
    HAMRAHI_JWT_EXPIRED,
    HAMRAHI_JWT_NOT_YET_VALID,
    HAMRAHI_JWT_BAD_CLAIMS
} hamrahi_jwt_status_t;

typedef enum {
    HAMRAHI_ROLE_OPERATOR = 1,
    HAMRAHI_ROLE_SUPERVISOR
} hamrahi_role_t;

typedef struct {
    char             sub[HAMRAHI_JWT_CLAIM_MAX];
    char             station[HAMRAHI_JWT_CLAIM_MAX];
    hamrahi_role_t   role;
    int64_t          exp;
} hamrahi_jwt_claims_t;


/*
 * Verifies signature (HS256 only), exp and nbf (each with leeway seconds),
 * and the claims; fills *claims only on HAMRAHI_JWT_OK.
 */
hamrahi_jwt_status_t hamrahi_jwt_verify(const char *token, size_t len,
    const uint8_t *key, size_t key_len, int64_t now, int64_t leeway,
    hamrahi_jwt_claims_t *claims);

/* A short reason for the 401 body and the log; never contains the token. */
const char *hamrahi_jwt_reason(hamrahi_jwt_status_t status);


#endif /* HAMRAHI_JWT_H */
