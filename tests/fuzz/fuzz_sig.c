/*
 * libFuzzer target for the signature code of hamrahi_auth.c: the
 * X-Hamrahi-Signature header parser and check, the X-Twilio-Signature check
 * and the public URL variants. Input: "header\nbody" (no newline: all
 * header, empty body).
 * Invariants: a parsed header has a timestamp of at most 12 digits and 1..4
 * MACs; rebuilding the header from the parsed timestamp and the true MAC of
 * the body verifies; a header verifies only if it parses; URL variants are
 * NUL-terminated within their buffers.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hamrahi_auth.h"


#define SECRET  "fuzz-secret"


static void
check_round_trip(const hamrahi_auth_hook_sig_t *sig, const uint8_t *body,
    size_t body_len)
{
    int            n;
    char           header[64 + 2 * HAMRAHI_AUTH_SHA256_LEN];
    char           hex[2 * HAMRAHI_AUTH_SHA256_LEN + 1];
    unsigned int   mac_len;
    unsigned char  mac[EVP_MAX_MD_SIZE];
    unsigned char *text;

    text = malloc(sig->t_len + 1 + body_len);
    if (text == NULL) {
        return;
    }

    memcpy(text, sig->t_text, sig->t_len);
    text[sig->t_len] = '.';
    if (body_len) {
        memcpy(text + sig->t_len + 1, body, body_len);
    }

    HMAC(EVP_sha256(), SECRET, sizeof(SECRET) - 1, text,
         sig->t_len + 1 + body_len, mac, &mac_len);
    free(text);

    hamrahi_auth_hex(mac, HAMRAHI_AUTH_SHA256_LEN, hex);
    n = snprintf(header, sizeof(header), "t=%.*s,v1=%s", (int) sig->t_len,
                 sig->t_text, hex);

    if (hamrahi_auth_verify_hook((const unsigned char *) SECRET,
                                 sizeof(SECRET) - 1, header, (size_t) n,
                                 body, body_len, sig->t,
                                 HAMRAHI_AUTH_TOLERANCE_S, NULL, NULL)
        != HAMRAHI_AUTH_OK)
    {
        abort();
    }
}


static void
fuzz_hook_header(const char *header, size_t header_len, const uint8_t *body,
    size_t body_len)
{
    hamrahi_auth_result_t    parsed, verified;
    hamrahi_auth_hook_sig_t  sig;

    parsed = hamrahi_auth_parse_hook_header(header, header_len, &sig);

    if (parsed == HAMRAHI_AUTH_OK) {
        if (sig.t_text == NULL || sig.t_len == 0 || sig.t_len > 12
            || sig.nv1 == 0 || sig.nv1 > HAMRAHI_AUTH_MAX_V1
            || sig.t_text < header || sig.t_text + sig.t_len > header
                                                              + header_len)
        {
            abort();
        }

        check_round_trip(&sig, body, body_len);
    }

    verified = hamrahi_auth_verify_hook((const unsigned char *) SECRET,
                                        sizeof(SECRET) - 1, header,
                                        header_len, body, body_len,
                                        parsed == HAMRAHI_AUTH_OK ? sig.t : 0,
                                        HAMRAHI_AUTH_TOLERANCE_S, NULL, NULL);

    if (parsed != HAMRAHI_AUTH_OK && verified != parsed) {
        abort();
    }
}


static void
fuzz_twilio(const char *header, size_t header_len, const uint8_t *body,
    size_t body_len)
{
    int            n;
    char          *form;
    size_t         lens[2];
    const char    *urls[2];
    char           without[256], with[256];
    hamrahi_kv_t   params[HAMRAHI_FORM_MAX_PARAMS];

    if (hamrahi_auth_url_variants(header, header_len, without, with,
                                  sizeof(without))
        != 0)
    {
        return;
    }

    if (memchr(without, '\0', sizeof(without)) == NULL
        || memchr(with, '\0', sizeof(with)) == NULL)
    {
        abort();
    }

    form = malloc(body_len ? body_len : 1);
    if (form == NULL) {
        return;
    }

    memcpy(form, body, body_len);
    n = hamrahi_form_parse(form, body_len, params, HAMRAHI_FORM_MAX_PARAMS);

    if (n >= 0) {
        urls[0] = without;
        urls[1] = with;
        lens[0] = strlen(without);
        lens[1] = strlen(with);

        /* a wrong signature of the right length must never pass */
        if (hamrahi_auth_verify_twilio((const unsigned char *) SECRET,
                                       sizeof(SECRET) - 1, urls, lens, 2,
                                       params, (size_t) n,
                                       "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", 28)
            == HAMRAHI_AUTH_OK)
        {
            abort();
        }
    }

    free(form);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char           *copy;
    const uint8_t  *nl, *body;
    size_t          header_len, body_len;

    nl = memchr(data, '\n', size);
    header_len = nl ? (size_t) (nl - data) : size;
    body = nl ? nl + 1 : data + size;
    body_len = size - header_len - (nl ? 1 : 0);

    /* an exact-size copy, so ASan sees any read past the header */
    copy = malloc(header_len ? header_len : 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, header_len);

    fuzz_hook_header(copy, header_len, body, body_len);
    fuzz_twilio(copy, header_len, body, body_len);

    free(copy);

    return 0;
}
