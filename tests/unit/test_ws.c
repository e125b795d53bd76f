/*
 * hamrahi_ws.c: accept key, frame parser (Autobahn's case families: framing,
 * ping/pong, reserved bits, opcodes, fragmentation, UTF-8, close, limits),
 * frame builder.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "hamrahi_ws.h"


#define MAX_EVENTS  1024

static const uint8_t  test_mask[4] = { 0x37, 0xfa, 0x21, 0x3d };

typedef struct {
    hamrahi_ws_event_kind_t  kind;
    int                      opcode;
    int                      fin;
    uint16_t                 close_code;
    uint8_t                  data[256];
    size_t                   len;
} seen_t;

typedef struct {
    seen_t   ev[MAX_EVENTS];
    size_t   n;
    uint8_t  message[4096];     /* DATA payload joined up */
    size_t   message_len;
} trace_t;


/* Appends one masked client frame; returns the new buffer length. */
static size_t
put_frame(uint8_t *buf, size_t at, uint8_t b0, const void *payload,
    size_t len)
{
    const uint8_t  *p = payload;
    size_t          i;

    buf[at++] = b0;

    if (len < 126) {
        buf[at++] = (uint8_t) (0x80 | len);
    } else {
        buf[at++] = 0x80 | 126;
        buf[at++] = (uint8_t) (len >> 8);
        buf[at++] = (uint8_t) len;
    }

    memcpy(buf + at, test_mask, 4);
    at += 4;

    for (i = 0; i < len; i++) {
        buf[at + i] = p[i] ^ test_mask[i & 3];
    }

    return at + len;
}


static void
record(trace_t *t, const hamrahi_ws_event_t *ev)
{
    seen_t  *s;

    assert_true(t->n < MAX_EVENTS);
    s = &t->ev[t->n++];
    s->kind = ev->kind;
    s->opcode = ev->opcode;
    s->fin = ev->fin;
    s->close_code = ev->close_code;
    s->len = ev->len < sizeof(s->data) ? ev->len : sizeof(s->data);
    if (s->len) {
        memcpy(s->data, ev->data, s->len);
    }

    if (ev->kind == HAMRAHI_WS_EV_DATA && ev->len) {
        assert_true(t->message_len + ev->len <= sizeof(t->message));
        memcpy(t->message + t->message_len, ev->data, ev->len);
        t->message_len += ev->len;
    }
}


/* One letter per event, data only at a message's end: "PTOBC". */
static void
signature(const trace_t *t, char *out)
{
    size_t  i;

    for (i = 0; i < t->n; i++) {
        switch (t->ev[i].kind) {
        case HAMRAHI_WS_EV_DATA:
            if (t->ev[i].fin) {
                *out++ = t->ev[i].opcode == HAMRAHI_WS_OP_TEXT ? 'T' : 'B';
            }
            break;
        case HAMRAHI_WS_EV_PING:
            *out++ = 'P';
            break;
        case HAMRAHI_WS_EV_PONG:
            *out++ = 'O';
            break;
        case HAMRAHI_WS_EV_CLOSE:
            *out++ = 'C';
            break;
        default:
            *out++ = 'E';
        }
    }
    *out = '\0';
}


/* Feeds buf in pieces of `step` bytes (0: all at once), records events. */
static void
feed(hamrahi_ws_parser_t *p, uint8_t *buf, size_t len, size_t step,
    trace_t *t)
{
    hamrahi_ws_event_t  ev;
    size_t              at, piece, used, guard;

    memset(t, 0, sizeof(*t));

    for (at = 0; at < len; at += piece) {
        piece = step && step < len - at ? step : len - at;
        used = 0;

        for (guard = 0; guard < 1000; guard++) {
            used += hamrahi_ws_parse(p, buf + at + used, piece - used, &ev);
            assert_true(used <= piece);
            if (ev.kind == HAMRAHI_WS_EV_NONE) {
                break;
            }
            record(t, &ev);
        }

        assert_int_equal(used, piece);
    }
}


static void
feed_one(uint8_t *buf, size_t len, uint64_t max, trace_t *t)
{
    hamrahi_ws_parser_t  p;

    hamrahi_ws_parser_init(&p, max);
    feed(&p, buf, len, 0, t);
}


static void
expect_error(uint8_t *buf, size_t len, uint64_t max, uint16_t code)
{
    trace_t  t;

    feed_one(buf, len, max, &t);
    assert_true(t.n >= 1);
    assert_int_equal(t.ev[t.n - 1].kind, HAMRAHI_WS_EV_ERROR);
    assert_int_equal(t.ev[t.n - 1].close_code, code);
}


static void
test_accept_key_rfc_example(void **state)
{
    char  out[HAMRAHI_WS_ACCEPT_LEN + 1];

    (void) state;

    assert_int_equal(hamrahi_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24,
                                           out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}


static void
test_accept_key_rejects_bad_keys(void **state)
{
    static const char  *bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ",           /* no padding */
        "dGhlIHNhbXBsZSBub25jZQ=",
        "dGhlIHNhbXBsZSBub25jZQ===",
        "dGhlIHNhbXBsZSBub25j!Q==",         /* not base64 */
        "dGhlIHNhbXBsZSBub25jZQZZ",         /* 18 bytes, no "==" */
    };
    char                out[HAMRAHI_WS_ACCEPT_LEN + 1];
    size_t              i;

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(hamrahi_ws_accept_key(bad[i], strlen(bad[i]), out),
                         -1);
    }
}


static void
test_frame_header_lengths(void **state)
{
    static const struct {
        uint64_t  len;
        size_t    size;
        uint8_t   b1;
    } rows[] = {
        { 0, 2, 0 },
        { 125, 2, 125 },
        { 126, 4, 126 },
        { 65535, 4, 126 },
        { 65536, 10, 127 },
        { 0x123456789aULL, 10, 127 },
    };
    uint8_t  h[HAMRAHI_WS_HEADER_MAX];
    uint64_t got;
    size_t   i, j, n;

    (void) state;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        n = hamrahi_ws_frame_header(h, HAMRAHI_WS_OP_TEXT, rows[i].len);
        assert_int_equal(n, rows[i].size);
        assert_int_equal(h[0], 0x81);
        assert_int_equal(h[1], rows[i].b1);

        got = n == 2 ? h[1] : 0;
        for (j = 2; j < n; j++) {
            got = (got << 8) | h[j];
        }
        assert_true(got == rows[i].len);
    }
}


static void
test_close_frame_builder(void **state)
{
    uint8_t  f[2 + HAMRAHI_WS_CONTROL_MAX];
    char     longreason[300];
    size_t   n;

    (void) state;

    n = hamrahi_ws_close_frame(f, 1008, "slow consumer");
    assert_int_equal(n, 4 + 13);
    assert_int_equal(f[0], 0x88);
    assert_int_equal(f[1], 15);
    assert_int_equal((f[2] << 8) | f[3], 1008);
    assert_memory_equal(f + 4, "slow consumer", 13);

    n = hamrahi_ws_close_frame(f, 1001, NULL);
    assert_int_equal(n, 4);

    memset(longreason, 'x', sizeof(longreason) - 1);
    longreason[sizeof(longreason) - 1] = '\0';
    n = hamrahi_ws_close_frame(f, 1000, longreason);
    assert_int_equal(n, 2 + HAMRAHI_WS_CONTROL_MAX);
    assert_int_equal(f[1], HAMRAHI_WS_CONTROL_MAX);
}


static void
test_rfc_masked_hello(void **state)
{
    uint8_t  buf[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                       0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    trace_t  t;

    (void) state;

    feed_one(buf, sizeof(buf), 0, &t);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].kind, HAMRAHI_WS_EV_DATA);
    assert_int_equal(t.ev[0].opcode, HAMRAHI_WS_OP_TEXT);
    assert_true(t.ev[0].fin);
    assert_int_equal(t.message_len, 5);
    assert_memory_equal(t.message, "Hello", 5);
}


/* several frames in one read, and the same bytes one at a time */
static void
test_many_frames_any_split(void **state)
{
    uint8_t              buf[2048], text[300];
    char                 sig[16];
    size_t               len, step;
    trace_t              t;
    hamrahi_ws_parser_t  p;

    (void) state;

    memset(text, 'a', sizeof(text));
    len = put_frame(buf, 0, 0x89, "p1", 2);
    len = put_frame(buf, len, 0x81, text, sizeof(text));
    len = put_frame(buf, len, 0x8a, "", 0);
    len = put_frame(buf, len, 0x82, "\x00\xff", 2);
    len = put_frame(buf, len, 0x88, "\x03\xe8" "bye", 5);

    for (step = 0; step <= 7; step++) {
        uint8_t  copy[2048];

        memcpy(copy, buf, len);     /* the parser unmasks in place */
        hamrahi_ws_parser_init(&p, 0);
        feed(&p, copy, len, step, &t);

        signature(&t, sig);
        assert_string_equal(sig, "PTOBC");
        assert_int_equal(t.ev[0].len, 2);
        assert_memory_equal(t.ev[0].data, "p1", 2);
        assert_int_equal(t.ev[t.n - 1].close_code, 1000);
        assert_int_equal(t.ev[t.n - 1].len, 3);
        assert_memory_equal(t.ev[t.n - 1].data, "bye", 3);
        assert_int_equal(t.message_len, sizeof(text) + 2);
        assert_memory_equal(t.message, text, sizeof(text));
    }
}


static void
test_fragments_with_interleaved_ping(void **state)
{
    uint8_t  buf[256];
    size_t   len;
    trace_t  t;

    (void) state;

    len = put_frame(buf, 0, 0x01, "Hel", 3);
    len = put_frame(buf, len, 0x89, "x", 1);
    len = put_frame(buf, len, 0x00, "", 0);
    len = put_frame(buf, len, 0x80, "lo", 2);

    feed_one(buf, len, 0, &t);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.ev[0].kind, HAMRAHI_WS_EV_DATA);
    assert_false(t.ev[0].fin);
    assert_int_equal(t.ev[1].kind, HAMRAHI_WS_EV_PING);
    assert_int_equal(t.ev[2].kind, HAMRAHI_WS_EV_DATA);
    assert_true(t.ev[2].fin);
    assert_int_equal(t.ev[2].opcode, HAMRAHI_WS_OP_TEXT);
    assert_int_equal(t.message_len, 5);
    assert_memory_equal(t.message, "Hello", 5);
}


static void
test_empty_text_message(void **state)
{
    uint8_t  buf[16];
    size_t   len;
    trace_t  t;

    (void) state;

    len = put_frame(buf, 0, 0x81, "", 0);
    feed_one(buf, len, 0, &t);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].kind, HAMRAHI_WS_EV_DATA);
    assert_true(t.ev[0].fin);
    assert_int_equal(t.ev[0].len, 0);
}


static void
test_protocol_errors_1002(void **state)
{
    static const struct {
        uint8_t      b0;
        size_t       len;
        const char  *why;       /* for the reader */
    } rows[] = {
        { 0xc1, 1, "RSV1" },
        { 0xa1, 1, "RSV2" },
        { 0x91, 1, "RSV3" },
        { 0x83, 1, "opcode 3" },
        { 0x87, 1, "opcode 7" },
        { 0x8b, 1, "opcode B" },
        { 0x8f, 1, "opcode F" },
        { 0x09, 1, "fragmented ping" },
        { 0x08, 0, "fragmented close" },
        { 0x89, 126, "ping too long" },
        { 0x80, 1, "continuation without a message" },
        { 0x00, 1, "continuation without a message, not final" },
    };
    uint8_t  buf[300], payload[200];
    size_t   i, len;

    (void) state;

    memset(payload, 'a', sizeof(payload));

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        len = put_frame(buf, 0, rows[i].b0, payload, rows[i].len);
        expect_error(buf, len, 0, HAMRAHI_WS_CLOSE_PROTOCOL);
    }
}


static void
test_unmasked_frame_1002(void **state)
{
    uint8_t  buf[] = { 0x81, 0x02, 'h', 'i' };

    (void) state;

    expect_error(buf, sizeof(buf), 0, HAMRAHI_WS_CLOSE_PROTOCOL);
}


static void
test_new_message_inside_fragmented_1002(void **state)
{
    uint8_t  buf[64];
    size_t   len;

    (void) state;

    len = put_frame(buf, 0, 0x01, "a", 1);
    len = put_frame(buf, len, 0x81, "b", 1);
    expect_error(buf, len, 0, HAMRAHI_WS_CLOSE_PROTOCOL);
}


static void
test_64bit_length_top_bit_1002(void **state)
{
    uint8_t  buf[] = { 0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1,
                       1, 2, 3, 4 };

    (void) state;

    expect_error(buf, sizeof(buf), 0, HAMRAHI_WS_CLOSE_PROTOCOL);
}


static void
test_max_message_checked_on_header_1009(void **state)
{
    /* announces 2^40 bytes but sends none: refused on the header alone */
    uint8_t  big[] = { 0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4 };
    uint8_t  buf[300], payload[200];
    size_t   len;
    trace_t  t;

    (void) state;

    expect_error(big, sizeof(big), 1024, HAMRAHI_WS_CLOSE_TOO_BIG);

    memset(payload, 'a', sizeof(payload));
    len = put_frame(buf, 0, 0x01, payload, 60);
    len = put_frame(buf, len, 0x80, payload, 60);
    feed_one(buf, len, 120, &t);
    assert_int_equal(t.ev[t.n - 1].kind, HAMRAHI_WS_EV_DATA);
    assert_int_equal(t.message_len, 120);

    len = put_frame(buf, 0, 0x01, payload, 60);
    len = put_frame(buf, len, 0x80, payload, 61);
    feed_one(buf, len, 120, &t);
    assert_int_equal(t.ev[t.n - 1].kind, HAMRAHI_WS_EV_ERROR);
    assert_int_equal(t.ev[t.n - 1].close_code, HAMRAHI_WS_CLOSE_TOO_BIG);
    assert_int_equal(t.message_len, 60);
}


static void
test_utf8_across_fragments(void **state)
{
    /* U+20AC (E2 82 AC) and U+1F600 (F0 9F 98 80) cut across frames */
    uint8_t  buf[64];
    size_t   len, step;
    trace_t  t;

    (void) state;

    for (step = 0; step <= 3; step++) {
        hamrahi_ws_parser_t  p;

        len = put_frame(buf, 0, 0x01, "\xe2\x82", 2);
        len = put_frame(buf, len, 0x00, "\xac\xf0\x9f", 3);
        len = put_frame(buf, len, 0x80, "\x98\x80", 2);

        hamrahi_ws_parser_init(&p, 0);
        feed(&p, buf, len, step, &t);
        assert_int_equal(t.ev[t.n - 1].kind, HAMRAHI_WS_EV_DATA);
        assert_true(t.ev[t.n - 1].fin);
        assert_int_equal(t.message_len, 7);
    }
}


static void
test_utf8_errors_1007(void **state)
{
    uint8_t  buf[64];
    size_t   len;

    (void) state;

    /* message ends inside a character */
    len = put_frame(buf, 0, 0x01, "a\xe2\x82", 3);
    len = put_frame(buf, len, 0x80, "", 0);
    expect_error(buf, len, 0, HAMRAHI_WS_CLOSE_BAD_DATA);

    /* fails fast, in the first fragment */
    len = put_frame(buf, 0, 0x01, "\xc0\xaf", 2);
    expect_error(buf, len, 0, HAMRAHI_WS_CLOSE_BAD_DATA);

    /* binary messages are not checked */
    len = put_frame(buf, 0, 0x82, "\xc0\xaf", 2);
    {
        trace_t  t;

        feed_one(buf, len, 0, &t);
        assert_int_equal(t.ev[0].kind, HAMRAHI_WS_EV_DATA);
    }
}


static void
test_utf8_table(void **state)
{
    static const struct {
        const char  *s;
        int          valid;
    } rows[] = {
        { "plain ascii", 1 },
        { "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 1 },
        { "\xf4\x8f\xbf\xbf", 1 },              /* U+10FFFF */
        { "\xef\xbf\xbf", 1 },                  /* U+FFFF */
        { "\xf4\x90\x80\x80", 0 },              /* above U+10FFFF */
        { "\xed\xa0\x80", 0 },                  /* surrogate */
        { "\xc0\x80", 0 },                      /* overlong NUL */
        { "\xe0\x80\xaf", 0 },                  /* overlong */
        { "\xf0\x80\x80\xaf", 0 },              /* overlong */
        { "\x80", 0 },                          /* lone continuation */
        { "\xfe", 0 },
        { "\xff", 0 },
        { "\xe2\x82", 0 },                      /* incomplete */
        { "\xce\xba\xe1\xbd", 0 },
    };
    hamrahi_utf8_t  u;
    size_t          i;
    int             ok;

    (void) state;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        memset(&u, 0, sizeof(u));
        ok = hamrahi_utf8_feed(&u, (const uint8_t *) rows[i].s,
                               strlen(rows[i].s))
             && hamrahi_utf8_complete(&u);
        assert_int_equal(ok, rows[i].valid);
    }
}


static void
test_close_codes(void **state)
{
    static const unsigned  valid[] = {
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
        3000, 3999, 4000, 4999,
    };
    static const unsigned  invalid[] = {
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    };
    uint8_t                buf[32], payload[2];
    size_t                 i, len;
    trace_t                t;

    (void) state;

    for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        payload[0] = (uint8_t) (valid[i] >> 8);
        payload[1] = (uint8_t) valid[i];
        len = put_frame(buf, 0, 0x88, payload, 2);
        feed_one(buf, len, 0, &t);
        assert_int_equal(t.n, 1);
        assert_int_equal(t.ev[0].kind, HAMRAHI_WS_EV_CLOSE);
        assert_int_equal(t.ev[0].close_code, valid[i]);
    }

    for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        payload[0] = (uint8_t) (invalid[i] >> 8);
        payload[1] = (uint8_t) invalid[i];
        len = put_frame(buf, 0, 0x88, payload, 2);
        expect_error(buf, len, 0, HAMRAHI_WS_CLOSE_PROTOCOL);
    }
}


static void
test_close_payload_rules(void **state)
{
    uint8_t  buf[32];
    size_t   len;
    trace_t  t;

    (void) state;

    len = put_frame(buf, 0, 0x88, "", 0);
    feed_one(buf, len, 0, &t);
    assert_int_equal(t.ev[0].kind, HAMRAHI_WS_EV_CLOSE);
    assert_int_equal(t.ev[0].close_code, HAMRAHI_WS_CLOSE_NO_STATUS);

    len = put_frame(buf, 0, 0x88, "\x03", 1);
    expect_error(buf, len, 0, HAMRAHI_WS_CLOSE_PROTOCOL);

    len = put_frame(buf, 0, 0x88, "\x03\xe8\xff", 3);
    expect_error(buf, len, 0, HAMRAHI_WS_CLOSE_BAD_DATA);
}


static void
test_input_after_close_is_ignored(void **state)
{
    uint8_t  buf[64];
    size_t   len;
    trace_t  t;

    (void) state;

    len = put_frame(buf, 0, 0x88, "\x03\xe8", 2);
    len = put_frame(buf, len, 0x81, "late", 4);
    buf[len++] = 0xff;      /* garbage too */

    feed_one(buf, len, 0, &t);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].kind, HAMRAHI_WS_EV_CLOSE);
}


static void
test_ping_payload_across_reads(void **state)
{
    uint8_t              buf[200], payload[125];
    size_t               len;
    trace_t              t;
    hamrahi_ws_parser_t  p;

    (void) state;

    memset(payload, 'z', sizeof(payload));
    len = put_frame(buf, 0, 0x89, payload, sizeof(payload));
    hamrahi_ws_parser_init(&p, 0);
    feed(&p, buf, len, 3, &t);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.ev[0].kind, HAMRAHI_WS_EV_PING);
    assert_int_equal(t.ev[0].len, 125);
    assert_memory_equal(t.ev[0].data, payload, 125);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_accept_key_rfc_example),
        cmocka_unit_test(test_accept_key_rejects_bad_keys),
        cmocka_unit_test(test_frame_header_lengths),
        cmocka_unit_test(test_close_frame_builder),
        cmocka_unit_test(test_rfc_masked_hello),
        cmocka_unit_test(test_many_frames_any_split),
        cmocka_unit_test(test_fragments_with_interleaved_ping),
        cmocka_unit_test(test_empty_text_message),
        cmocka_unit_test(test_protocol_errors_1002),
        cmocka_unit_test(test_unmasked_frame_1002),
        cmocka_unit_test(test_new_message_inside_fragmented_1002),
        cmocka_unit_test(test_64bit_length_top_bit_1002),
        cmocka_unit_test(test_max_message_checked_on_header_1009),
        cmocka_unit_test(test_utf8_across_fragments),
        cmocka_unit_test(test_utf8_errors_1007),
        cmocka_unit_test(test_utf8_table),
        cmocka_unit_test(test_close_codes),
        cmocka_unit_test(test_close_payload_rules),
        cmocka_unit_test(test_input_after_close_is_ignored),
        cmocka_unit_test(test_ping_payload_across_reads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
