/*
 * hamrahi_jwt.c: HS256 panel tokens — a published vector, then one row per
 * way a token can be wrong.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hamrahi_jwt.h"


#define NOW     1764000000
#define LEEWAY  30

static const char  key[] = "0123456789abcdef0123456789abcdef";


static size_t
b64url(const void *in, size_t len, char *out)
{
    size_t  i, n;

    n = (size_t) EVP_EncodeBlock((unsigned char *) out, in, (int) len);
    while (n && out[n - 1] == '=') {
        n--;
    }
    for (i = 0; i < n; i++) {
        if (out[i] == '+') {
            out[i] = '-';
        } else if (out[i] == '/') {
            out[i] = '_';
        }
    }
    out[n] = '\0';
    return n;
}


/* header and payload are JSON texts; signs with k */
static void
make_token(const char *header, const char *payload, const char *k, char *out)
{
    unsigned char  mac[EVP_MAX_MD_SIZE];
    unsigned int   mac_len;
    size_t         n;

    n = b64url(header, strlen(header), out);
    out[n++] = '.';
    n += b64url(payload, strlen(payload), out + n);

    HMAC(EVP_sha256(), k, (int) strlen(k), (unsigned char *) out, n, mac,
         &mac_len);

    out[n++] = '.';
    b64url(mac, mac_len, out + n);
}


static hamrahi_jwt_status_t
verify(const char *token, hamrahi_jwt_claims_t *claims)
{
    return hamrahi_jwt_verify(token, strlen(token), (const uint8_t *) key,
                              strlen(key), NOW, LEEWAY, claims);
}


static const char  hs256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";


static void
test_published_vector(void **state)
{
    /* jwt.io's example token, secret "your-256-bit-secret"; it has no
     * role, station or exp, so a correct HMAC gets as far as the claims */
    static const char     tok[] =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5"
        "MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    static const char     secret[] = "your-256-bit-secret";
    hamrahi_jwt_claims_t  c;

    (void) state;

    assert_int_equal(hamrahi_jwt_verify(tok, strlen(tok),
                                        (const uint8_t *) secret,
                                        strlen(secret), NOW, 0, &c),
                     HAMRAHI_JWT_BAD_CLAIMS);
    assert_int_equal(hamrahi_jwt_verify(tok, strlen(tok),
                                        (const uint8_t *) "other", 5, NOW, 0,
                                        &c),
                     HAMRAHI_JWT_BAD_SIGNATURE);
}


static void
test_valid_operator_and_supervisor(void **state)
{
    char                  tok[1024];
    hamrahi_jwt_claims_t  c;

    (void) state;

    make_token(hs256, "{\"sub\":\"op-1\",\"role\":\"operator\","
               "\"station\":\"st-1\",\"exp\":1764000600,\"iat\":1}", key, tok);
    memset(&c, 0, sizeof(c));
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_OK);
    assert_string_equal(c.sub, "op-1");
    assert_string_equal(c.station, "st-1");
    assert_int_equal(c.role, HAMRAHI_ROLE_OPERATOR);
    assert_int_equal(c.exp, 1764000600);

    /* no typ, a fractional exp, extra claims */
    make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"sup-1\",\"role\":"
               "\"supervisor\",\"station\":\"st-2\",\"exp\":1764000600.5,"
               "\"iss\":\"x\",\"aud\":[\"p\"]}", key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_OK);
    assert_int_equal(c.role, HAMRAHI_ROLE_SUPERVISOR);
    assert_string_equal(c.station, "st-2");
}


static void
test_time_claims(void **state)
{
    static const struct {
        const char            *times;
        hamrahi_jwt_status_t   want;
    } rows[] = {
        { "\"exp\":1764000000", HAMRAHI_JWT_OK },
        { "\"exp\":1763999970", HAMRAHI_JWT_OK },           /* leeway */
        { "\"exp\":1763999969", HAMRAHI_JWT_EXPIRED },
        { "\"exp\":0", HAMRAHI_JWT_EXPIRED },
        { "\"exp\":9223372036854775807", HAMRAHI_JWT_OK },
        { "\"exp\":1764000600,\"nbf\":1764000030", HAMRAHI_JWT_OK },
        { "\"exp\":1764000600,\"nbf\":1764000031",
          HAMRAHI_JWT_NOT_YET_VALID },
        { "\"exp\":1764000600,\"nbf\":\"soon\"", HAMRAHI_JWT_BAD_CLAIMS },
        { "\"exp\":\"1764000600\"", HAMRAHI_JWT_BAD_CLAIMS },
        { "\"iat\":1", HAMRAHI_JWT_BAD_CLAIMS },           /* no exp */
    };
    char                  payload[256], tok[1024];
    hamrahi_jwt_claims_t  c;
    size_t                i;

    (void) state;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        snprintf(payload, sizeof(payload), "{\"sub\":\"op-1\",\"role\":"
                 "\"operator\",\"station\":\"st-1\",%s}", rows[i].times);
        make_token(hs256, payload, key, tok);
        assert_int_equal(verify(tok, &c), rows[i].want);
    }
}


static void
test_bad_claims(void **state)
{
    static const char  *payloads[] = {
        "{\"sub\":\"op-1\",\"role\":\"admin\",\"station\":\"st-1\"",
        "{\"sub\":\"op-1\",\"role\":\"Operator\",\"station\":\"st-1\"",
        "{\"sub\":\"op-1\",\"station\":\"st-1\"",
        "{\"sub\":\"op-1\",\"role\":\"operator\"",
        "{\"sub\":\"op-1\",\"role\":\"operator\",\"station\":\"\"",
        "{\"sub\":\"op-1\",\"role\":\"operator\",\"station\":7",
        "{\"role\":\"operator\",\"station\":\"st-1\"",
    };
    char                  payload[256], tok[1024];
    hamrahi_jwt_claims_t  c;
    size_t                i;

    (void) state;

    for (i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        snprintf(payload, sizeof(payload), "%s,\"exp\":1764000600}",
                 payloads[i]);
        make_token(hs256, payload, key, tok);
        assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_CLAIMS);
    }
}


static void
test_long_station_refused(void **state)
{
    char                  station[200], payload[512], tok[2048];
    hamrahi_jwt_claims_t  c;

    (void) state;

    memset(station, 's', sizeof(station) - 1);
    station[sizeof(station) - 1] = '\0';
    snprintf(payload, sizeof(payload), "{\"sub\":\"op-1\",\"role\":"
             "\"operator\",\"station\":\"%s\",\"exp\":1764000600}", station);
    make_token(hs256, payload, key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_CLAIMS);
}


static void
test_algorithm_and_signature(void **state)
{
    static const char     ok[] = "{\"sub\":\"op-1\",\"role\":\"operator\","
                                 "\"station\":\"st-1\",\"exp\":1764000600}";
    char                  tok[1024];
    size_t                n;
    hamrahi_jwt_claims_t  c;

    (void) state;

    make_token("{\"alg\":\"none\"}", ok, key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_ALG);

    make_token("{\"alg\":\"HS512\"}", ok, key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_ALG);

    make_token("{\"typ\":\"JWT\"}", ok, key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_ALG);

    make_token("{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", ok, key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_ALG);

    make_token(hs256, ok, "another secret", tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_SIGNATURE);

    /* one flipped payload byte */
    make_token(hs256, ok, key, tok);
    n = strchr(tok, '.') - tok + 3;
    tok[n] = tok[n] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_SIGNATURE);

    /* truncated signature */
    make_token(hs256, ok, key, tok);
    tok[strlen(tok) - 4] = '\0';
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_BAD_SIGNATURE);
}


static void
test_malformed(void **state)
{
    static const char     ok[] = "{\"sub\":\"op-1\",\"role\":\"operator\","
                                 "\"station\":\"st-1\",\"exp\":1764000600}";
    static const char    *bad[] = {
        "",
        "abc",
        "abc.def",
        "a.b.c.d",
        "..",
        "eyJhbGciOiJIUzI1NiJ9..sig",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "eyJhbGciOiJIUzI1NiJ9=.e30.c2ln",      /* padding */
        "bm90IGpzb24.e30.c2ln",                 /* header not JSON */
        "WzFd.e30.c2ln",                        /* header an array */
    };
    char                  tok[1024];
    hamrahi_jwt_claims_t  c;
    size_t                i;

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(verify(bad[i], &c), HAMRAHI_JWT_MALFORMED);
    }

    /* signed, but the payload is not an object */
    make_token(hs256, "[1,2]", key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_MALFORMED);

    /* duplicate claims are refused rather than guessed at */
    make_token(hs256, "{\"sub\":\"a\",\"sub\":\"b\",\"role\":\"operator\","
               "\"station\":\"st-1\",\"exp\":1764000600}", key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_MALFORMED);

    /* jansson refuses NUL inside strings */
    make_token(hs256, "{\"sub\":\"op\\u0000x\",\"role\":\"operator\","
               "\"station\":\"st-1\",\"exp\":1764000600}", key, tok);
    assert_int_equal(verify(tok, &c), HAMRAHI_JWT_MALFORMED);

    make_token(hs256, ok, key, tok);
    assert_int_equal(hamrahi_jwt_verify(tok, strlen(tok),
                                        (const uint8_t *) key, 0, NOW, 0, &c),
                     HAMRAHI_JWT_MALFORMED);
}


static void
test_reasons_are_set(void **state)
{
    int  s;

    (void) state;

    for (s = HAMRAHI_JWT_OK; s <= HAMRAHI_JWT_BAD_CLAIMS; s++) {
        assert_non_null(hamrahi_jwt_reason((hamrahi_jwt_status_t) s));
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_published_vector),
        cmocka_unit_test(test_valid_operator_and_supervisor),
        cmocka_unit_test(test_time_claims),
        cmocka_unit_test(test_bad_claims),
        cmocka_unit_test(test_long_station_refused),
        cmocka_unit_test(test_algorithm_and_signature),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_reasons_are_set),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
