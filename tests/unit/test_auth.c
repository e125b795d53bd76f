/*
 * hamrahi_auth.c against known vectors. The Twilio vectors were computed with
 * the official helper (Debian's python3-twilio 7.7):
 *   RequestValidator(token).compute_signature(url, params)
 * the hook vector with Python's hmac.new(secret, t + "." + body, sha256).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hamrahi_auth.h"


#define HOOK_SECRET  "whsec_test"
#define HOOK_T       1700000000
#define HOOK_BODY    "{\"citizen_id\":\"cit-1\"}"
#define HOOK_MAC \
    "e8aec8688d99b6201ceb5155f1dc86b0dec800a73b15b31d257c4ffbac2f53b9"
#define HOOK_HEADER  "t=1700000000,v1=" HOOK_MAC

#define TWILIO_TOKEN "tok-abc"
#define TWILIO_URL \
    "http://127.0.0.1:8080/v1/telephony/status?session=s-1&leg=citizen"
#define TWILIO_BODY \
    "CallSid=CA00000000000000000000000000000001&CallStatus=ringing" \
    "&To=%2B15550000001&AccountSid=AC1&Note=a+b%26c%3Dd+%C3%A9"
#define TWILIO_SIG   "OFthw5G3sbWguhMJja0LQKCbS9w="


static hamrahi_auth_result_t
verify_hook(const char *header, const char *body, int64_t now)
{
    return hamrahi_auth_verify_hook((const unsigned char *) HOOK_SECRET,
                                    strlen(HOOK_SECRET), header,
                                    strlen(header),
                                    (const unsigned char *) body,
                                    strlen(body), now,
                                    HAMRAHI_AUTH_TOLERANCE_S, NULL, NULL);
}


static void
test_hook_known_vector(void **state)
{
    int64_t        t;
    unsigned char  mac[HAMRAHI_AUTH_SHA256_LEN];
    char           hex[2 * HAMRAHI_AUTH_SHA256_LEN + 1];

    (void) state;

    assert_int_equal(hamrahi_auth_verify_hook(
                         (const unsigned char *) HOOK_SECRET,
                         strlen(HOOK_SECRET), HOOK_HEADER,
                         strlen(HOOK_HEADER),
                         (const unsigned char *) HOOK_BODY,
                         strlen(HOOK_BODY), HOOK_T + 10,
                         HAMRAHI_AUTH_TOLERANCE_S, mac, &t),
                     HAMRAHI_AUTH_OK);

    hamrahi_auth_hex(mac, sizeof(mac), hex);
    assert_string_equal(hex, HOOK_MAC);
    assert_int_equal(t, HOOK_T);
}


static void
test_hook_tampered_body(void **state)
{
    (void) state;

    assert_int_equal(verify_hook(HOOK_HEADER, "{\"citizen_id\":\"cit-2\"}",
                                 HOOK_T),
                     HAMRAHI_AUTH_MISMATCH);
    assert_int_equal(verify_hook(HOOK_HEADER, "", HOOK_T),
                     HAMRAHI_AUTH_MISMATCH);
}


static void
test_hook_time_window(void **state)
{
    (void) state;

    assert_int_equal(verify_hook(HOOK_HEADER, HOOK_BODY, HOOK_T + 300),
                     HAMRAHI_AUTH_OK);
    assert_int_equal(verify_hook(HOOK_HEADER, HOOK_BODY, HOOK_T - 300),
                     HAMRAHI_AUTH_OK);
    assert_int_equal(verify_hook(HOOK_HEADER, HOOK_BODY, HOOK_T + 301),
                     HAMRAHI_AUTH_EXPIRED);
    assert_int_equal(verify_hook(HOOK_HEADER, HOOK_BODY, HOOK_T - 301),
                     HAMRAHI_AUTH_EXPIRED);
}


static void
test_hook_header_variants(void **state)
{
    static const char *const  accepted[] = {
        " t=1700000000 , v1=" HOOK_MAC " ",
        "v1=" HOOK_MAC ",t=1700000000",
        "t=1700000000,v0=whatever,v1=" HOOK_MAC,
        /* secret rotation: a second v1 for the new secret */
        "t=1700000000,v1=00000000000000000000000000000000000000000000000000"
        "00000000000000,v1=" HOOK_MAC,
        "t=1700000000,v1=E8AEC8688D99B6201CEB5155F1DC86B0DEC800A73B15B31D257"
        "C4FFBAC2F53B9",
    };
    size_t                    i;

    (void) state;

    for (i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        assert_int_equal(verify_hook(accepted[i], HOOK_BODY, HOOK_T),
                         HAMRAHI_AUTH_OK);
    }
}


static void
test_hook_header_malformed(void **state)
{
    static const struct {
        const char             *header;
        hamrahi_auth_result_t   expected;
    } rows[] = {
        { "", HAMRAHI_AUTH_MISSING },
        { "t=1700000000", HAMRAHI_AUTH_MALFORMED },
        { "v1=" HOOK_MAC, HAMRAHI_AUTH_MALFORMED },
        { "t=,v1=" HOOK_MAC, HAMRAHI_AUTH_MALFORMED },
        { "t=-1700000000,v1=" HOOK_MAC, HAMRAHI_AUTH_MALFORMED },
        { "t=17e8,v1=" HOOK_MAC, HAMRAHI_AUTH_MALFORMED },
        { "t=1700000000,t=1700000000,v1=" HOOK_MAC, HAMRAHI_AUTH_MALFORMED },
        { "t=1700000000,v1=abc", HAMRAHI_AUTH_MALFORMED },
        { "t=1700000000,v1=" HOOK_MAC "00", HAMRAHI_AUTH_MALFORMED },
        { "t=1700000000,v1=zz" HOOK_MAC, HAMRAHI_AUTH_MALFORMED },
        { "t=1700000000;v1=" HOOK_MAC, HAMRAHI_AUTH_MALFORMED },
        { "t=1700000000,garbage", HAMRAHI_AUTH_MALFORMED },
        { "t=9999999999999,v1=" HOOK_MAC, HAMRAHI_AUTH_MALFORMED },
    };
    size_t  i;

    (void) state;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(verify_hook(rows[i].header, HOOK_BODY, HOOK_T),
                         rows[i].expected);
    }
}


static void
test_twilio_documented_vector(void **state)
{
    hamrahi_kv_t  params[] = {
        { "To", 2, "+18005551212", 12 },
        { "From", 4, "+12349013030", 12 },
        { "Digits", 6, "1234", 4 },
        { "Caller", 6, "+12349013030", 12 },
        { "CallSid", 7, "CA1234567890ABCDE", 17 },
    };
    const char   *url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    char          sig[HAMRAHI_AUTH_TWILIO_B64 + 1];

    (void) state;

    assert_int_equal(hamrahi_auth_twilio_signature(
                         (const unsigned char *) "12345", 5, url,
                         strlen(url), params, 5, sig), 0);
    assert_string_equal(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
}


static int
parse_twilio_body(char *buf, size_t cap, hamrahi_kv_t *params, size_t n)
{
    strncpy(buf, TWILIO_BODY, cap - 1);
    buf[cap - 1] = '\0';

    return hamrahi_form_parse(buf, strlen(buf), params, n);
}


static void
test_twilio_form_body(void **state)
{
    hamrahi_kv_t  params[16];
    char          body[256], sig[HAMRAHI_AUTH_TWILIO_B64 + 1];
    int           n;

    (void) state;

    n = parse_twilio_body(body, sizeof(body), params, 16);
    assert_int_equal(n, 5);

    assert_int_equal(hamrahi_auth_twilio_signature(
                         (const unsigned char *) TWILIO_TOKEN,
                         strlen(TWILIO_TOKEN), TWILIO_URL,
                         strlen(TWILIO_URL), params, (size_t) n, sig), 0);
    assert_string_equal(sig, TWILIO_SIG);
}


static hamrahi_auth_result_t
verify_twilio(const char *base, const char *path, hamrahi_kv_t *params,
    size_t n, const char *sig)
{
    char         without[256], with[256], url1[512], url2[512];
    const char  *urls[2];
    size_t       lens[2];

    assert_int_equal(hamrahi_auth_url_variants(base, strlen(base), without,
                                               with, sizeof(without)), 0);
    snprintf(url1, sizeof(url1), "%s%s", without, path);
    snprintf(url2, sizeof(url2), "%s%s", with, path);

    urls[0] = url1;
    urls[1] = url2;
    lens[0] = strlen(url1);
    lens[1] = strlen(url2);

    return hamrahi_auth_verify_twilio((const unsigned char *) TWILIO_TOKEN,
                                      strlen(TWILIO_TOKEN), urls, lens, 2,
                                      params, n, sig, strlen(sig));
}


static void
test_twilio_verify(void **state)
{
    hamrahi_kv_t  params[16];
    char          body[256];
    const char   *path = "/v1/telephony/status?session=s-1&leg=citizen";
    int           n;

    (void) state;

    n = parse_twilio_body(body, sizeof(body), params, 16);

    assert_int_equal(verify_twilio("http://127.0.0.1:8080", path, params,
                                   (size_t) n, TWILIO_SIG),
                     HAMRAHI_AUTH_OK);

    /* a base URL without the port the provider used does not match */
    assert_int_equal(verify_twilio("http://127.0.0.1", path, params,
                                   (size_t) n,
                                   "OFthw5G3sbWguhMJja0LQKCbS9w="),
                     HAMRAHI_AUTH_MISMATCH);

    assert_int_equal(verify_twilio("http://127.0.0.1:8080", path, params,
                                   (size_t) n, "OFthw5G3sbWguhMJja0LQKCbS9x="),
                     HAMRAHI_AUTH_MISMATCH);
    assert_int_equal(verify_twilio("http://127.0.0.1:8080", path, params,
                                   (size_t) n, "short"),
                     HAMRAHI_AUTH_MALFORMED);
    assert_int_equal(verify_twilio("http://127.0.0.1:8080", path, params,
                                   (size_t) n, ""),
                     HAMRAHI_AUTH_MISSING);

    params[1].value = "completed";
    params[1].value_len = 9;
    assert_int_equal(verify_twilio("http://127.0.0.1:8080", path, params,
                                   (size_t) n, TWILIO_SIG),
                     HAMRAHI_AUTH_MISMATCH);
}


static void
test_twilio_default_port_variants(void **state)
{
    static const char *const  bases[] = {
        "http://example.org", "http://example.org:80",
    };
    /* signed over http://example.org:80/... and http://example.org/... */
    static const char *const  sigs[] = {
        "oIv3fVfoSqxQfels+2vtznUvjPU=", "Nd5jPGu295KSh4RXx3ZvAZGm3B4=",
    };
    const char               *path = "/v1/telephony/dial?session=s-1&step=1";
    hamrahi_kv_t              params[] = { { "CallSid", 7, "CA1", 3 } };
    size_t                    i, j;

    (void) state;

    for (i = 0; i < 2; i++) {
        for (j = 0; j < 2; j++) {
            assert_int_equal(verify_twilio(bases[i], path, params, 1,
                                           sigs[j]),
                             HAMRAHI_AUTH_OK);
        }
    }
}


static void
test_url_variants(void **state)
{
    static const struct {
        const char  *base, *without, *with;
    } rows[] = {
        { "http://127.0.0.1:8080", "http://127.0.0.1",
          "http://127.0.0.1:8080" },
        { "http://h.example", "http://h.example", "http://h.example:80" },
        { "https://h.example", "https://h.example", "https://h.example:443" },
        { "https://h.example/base", "https://h.example/base",
          "https://h.example:443/base" },
        { "https://h.example:8443/b", "https://h.example/b",
          "https://h.example:8443/b" },
    };
    char    without[128], with[128];
    size_t  i;

    (void) state;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(hamrahi_auth_url_variants(rows[i].base,
                                                   strlen(rows[i].base),
                                                   without, with, 128), 0);
        assert_string_equal(without, rows[i].without);
        assert_string_equal(with, rows[i].with);
    }

    assert_int_equal(hamrahi_auth_url_variants("ftp://x", 7, without, with,
                                               128), -1);
    assert_int_equal(hamrahi_auth_url_variants("127.0.0.1", 9, without, with,
                                               128), -1);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_known_vector),
        cmocka_unit_test(test_hook_tampered_body),
        cmocka_unit_test(test_hook_time_window),
        cmocka_unit_test(test_hook_header_variants),
        cmocka_unit_test(test_hook_header_malformed),
        cmocka_unit_test(test_twilio_documented_vector),
        cmocka_unit_test(test_twilio_form_body),
        cmocka_unit_test(test_twilio_verify),
        cmocka_unit_test(test_twilio_default_port_variants),
        cmocka_unit_test(test_url_variants),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
