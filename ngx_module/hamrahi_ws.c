/*
 * RFC 6455 codec, server side. See hamrahi_ws.h for the contract.
 */

#include <string.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "hamrahi_ws.h"


#define HAMRAHI_WS_GUID  "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum {
    HAMRAHI_WS_ST_HEADER = 0,
    HAMRAHI_WS_ST_PAYLOAD,
    HAMRAHI_WS_ST_DONE
};


static int
hamrahi_utf8_start(hamrahi_utf8_t *u, uint8_t c)
{
    u->lo = 0x80;
    u->hi = 0xbf;

    if (c < 0x80) {
        u->need = 0;
    } else if (c >= 0xc2 && c <= 0xdf) {
        u->need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        u->need = 2;
        if (c == 0xe0) {
            u->lo = 0xa0;           /* no overlong 3-byte form */
        } else if (c == 0xed) {
            u->hi = 0x9f;           /* no UTF-16 surrogates */
        }
    } else if (c >= 0xf0 && c <= 0xf4) {
        u->need = 3;
        if (c == 0xf0) {
            u->lo = 0x90;           /* no overlong 4-byte form */
        } else if (c == 0xf4) {
            u->hi = 0x8f;           /* nothing above U+10FFFF */
        }
    } else {
        return 0;
    }

    return 1;
}


int
hamrahi_utf8_feed(hamrahi_utf8_t *u, const uint8_t *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (u->need == 0) {
            if (!hamrahi_utf8_start(u, p[i])) {
                return 0;
            }
            continue;
        }

        if (p[i] < u->lo || p[i] > u->hi) {
            return 0;
        }

        u->need--;
        u->lo = 0x80;
        u->hi = 0xbf;
    }

    return 1;
}


int
hamrahi_utf8_complete(const hamrahi_utf8_t *u)
{
    return u->need == 0;
}


int
hamrahi_ws_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    switch (code) {
    case 1000: case 1001: case 1002: case 1003:
    case 1007: case 1008: case 1009: case 1010: case 1011:
    case 1012: case 1013: case 1014:
        return 1;
    default:
        return 0;   /* 1004-1006 and 1015 must never be on the wire */
    }
}


void
hamrahi_ws_parser_init(hamrahi_ws_parser_t *p, uint64_t max_message)
{
    memset(p, 0, sizeof(*p));
    p->max_message = max_message;
    p->header_need = 2;
}


static size_t
hamrahi_ws_fail(hamrahi_ws_parser_t *p, hamrahi_ws_event_t *ev,
    uint16_t code, const char *why, size_t used)
{
    p->state = HAMRAHI_WS_ST_DONE;
    ev->kind = HAMRAHI_WS_EV_ERROR;
    ev->close_code = code;
    ev->error = why;
    return used;
}


/* Checks the first two header bytes; returns NULL or why they are bad. */
static const char *
hamrahi_ws_check_start(hamrahi_ws_parser_t *p)
{
    uint8_t  b0 = p->header[0], b1 = p->header[1];
    int      opcode = b0 & 0x0f;

    if (b0 & 0x70) {
        return "reserved bits set";
    }

    if (!(b1 & 0x80)) {
        return "unmasked client frame";
    }

    switch (opcode) {
    case HAMRAHI_WS_OP_CLOSE:
    case HAMRAHI_WS_OP_PING:
    case HAMRAHI_WS_OP_PONG:
        if (!(b0 & 0x80)) {
            return "fragmented control frame";
        }
        if ((b1 & 0x7f) > HAMRAHI_WS_CONTROL_MAX) {
            return "control frame too long";
        }
        return NULL;

    case HAMRAHI_WS_OP_CONT:
        return p->message_opcode ? NULL : "continuation without a message";

    case HAMRAHI_WS_OP_TEXT:
    case HAMRAHI_WS_OP_BINARY:
        return p->message_opcode ? "new message inside a fragmented one"
                                 : NULL;
    default:
        return "unknown opcode";
    }
}


static uint64_t
hamrahi_ws_header_length(const hamrahi_ws_parser_t *p)
{
    uint64_t  n;
    size_t    i;

    n = p->header[1] & 0x7f;

    if (n == 126) {
        n = ((uint64_t) p->header[2] << 8) | p->header[3];

    } else if (n == 127) {
        n = 0;
        for (i = 2; i < 10; i++) {
            n = (n << 8) | p->header[i];
        }
    }

    return n;
}


/*
 * The header is complete: take its length and mask, and open or continue the
 * message. Returns NULL or why the frame must be refused.
 */
static const char *
hamrahi_ws_begin_frame(hamrahi_ws_parser_t *p, uint16_t *code)
{
    uint64_t  len;

    *code = HAMRAHI_WS_CLOSE_PROTOCOL;

    if ((p->header[1] & 0x7f) == 127 && (p->header[2] & 0x80)) {
        return "64-bit length with the top bit set";
    }

    len = hamrahi_ws_header_length(p);
    memcpy(p->mask, p->header + p->header_need - 4, 4);
    p->mask_pos = 0;
    p->remaining = len;
    p->frame_opcode = p->header[0] & 0x0f;
    p->frame_fin = (p->header[0] & 0x80) != 0;
    p->control_len = 0;

    if (p->frame_opcode & 0x8) {
        return NULL;
    }

    if (p->frame_opcode != HAMRAHI_WS_OP_CONT) {
        p->message_opcode = p->frame_opcode;
        p->message_len = 0;
        memset(&p->utf8, 0, sizeof(p->utf8));
    }

    /* checked against what the header announces, before any byte arrives */
    if (p->max_message
        && (len > p->max_message || p->message_len > p->max_message - len))
    {
        *code = HAMRAHI_WS_CLOSE_TOO_BIG;
        return "message too big";
    }

    p->message_len += len;

    return NULL;
}


/* Collects header bytes; returns how many it used. */
static size_t
hamrahi_ws_read_header(hamrahi_ws_parser_t *p, const uint8_t *buf, size_t len)
{
    size_t  n;

    n = p->header_need - p->header_have;
    if (n > len) {
        n = len;
    }

    memcpy(p->header + p->header_have, buf, n);
    p->header_have += n;

    if (p->header_have == 2) {
        switch (p->header[1] & 0x7f) {
        case 126:
            p->header_need = 2 + 2 + 4;
            break;
        case 127:
            p->header_need = 2 + 8 + 4;
            break;
        default:
            p->header_need = 2 + 4;
        }
    }

    return n;
}


static void
hamrahi_ws_unmask(hamrahi_ws_parser_t *p, uint8_t *buf, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        buf[i] ^= p->mask[(p->mask_pos + i) & 3];
    }

    p->mask_pos = (p->mask_pos + len) & 3;
}


static void
hamrahi_ws_next_frame(hamrahi_ws_parser_t *p)
{
    p->state = HAMRAHI_WS_ST_HEADER;
    p->header_have = 0;
    p->header_need = 2;
}


/* A whole control frame is in p->control: turn it into an event. */
static size_t
hamrahi_ws_control_event(hamrahi_ws_parser_t *p, hamrahi_ws_event_t *ev,
    size_t used)
{
    hamrahi_utf8_t  u;

    ev->data = p->control;
    ev->len = p->control_len;

    if (p->frame_opcode == HAMRAHI_WS_OP_PING) {
        ev->kind = HAMRAHI_WS_EV_PING;
        hamrahi_ws_next_frame(p);
        return used;
    }

    if (p->frame_opcode == HAMRAHI_WS_OP_PONG) {
        ev->kind = HAMRAHI_WS_EV_PONG;
        hamrahi_ws_next_frame(p);
        return used;
    }

    if (p->control_len == 0) {
        ev->close_code = HAMRAHI_WS_CLOSE_NO_STATUS;

    } else if (p->control_len == 1) {
        return hamrahi_ws_fail(p, ev, HAMRAHI_WS_CLOSE_PROTOCOL,
                               "close frame of one byte", used);
    } else {
        ev->close_code = (uint16_t) ((p->control[0] << 8) | p->control[1]);
        ev->data = p->control + 2;
        ev->len = p->control_len - 2;

        if (!hamrahi_ws_close_code_valid(ev->close_code)) {
            return hamrahi_ws_fail(p, ev, HAMRAHI_WS_CLOSE_PROTOCOL,
                                   "invalid close code", used);
        }

        memset(&u, 0, sizeof(u));
        if (!hamrahi_utf8_feed(&u, ev->data, ev->len)
            || !hamrahi_utf8_complete(&u))
        {
            return hamrahi_ws_fail(p, ev, HAMRAHI_WS_CLOSE_BAD_DATA,
                                   "close reason is not UTF-8", used);
        }
    }

    ev->kind = HAMRAHI_WS_EV_CLOSE;
    p->state = HAMRAHI_WS_ST_DONE;
    return used;
}


/* Payload bytes of a data frame: unmask, check, hand them out. */
static size_t
hamrahi_ws_data_event(hamrahi_ws_parser_t *p, uint8_t *buf, size_t n,
    hamrahi_ws_event_t *ev, size_t used)
{
    int  text;

    text = p->message_opcode == HAMRAHI_WS_OP_TEXT;

    hamrahi_ws_unmask(p, buf, n);
    p->remaining -= n;

    if (text && !hamrahi_utf8_feed(&p->utf8, buf, n)) {
        return hamrahi_ws_fail(p, ev, HAMRAHI_WS_CLOSE_BAD_DATA,
                               "text message is not UTF-8", used);
    }

    ev->kind = HAMRAHI_WS_EV_DATA;
    ev->opcode = p->message_opcode;
    ev->fin = p->remaining == 0 && p->frame_fin;
    ev->data = buf;
    ev->len = n;

    if (ev->fin) {
        if (text && !hamrahi_utf8_complete(&p->utf8)) {
            return hamrahi_ws_fail(p, ev, HAMRAHI_WS_CLOSE_BAD_DATA,
                                   "text message ends inside a character",
                                   used);
        }
        p->message_opcode = 0;
    }

    if (p->remaining == 0) {
        hamrahi_ws_next_frame(p);
    }

    return used;
}


static size_t
hamrahi_ws_parse_payload(hamrahi_ws_parser_t *p, uint8_t *buf, size_t len,
    hamrahi_ws_event_t *ev, size_t used)
{
    size_t  n;

    n = p->remaining < len ? (size_t) p->remaining : len;

    if (!(p->frame_opcode & 0x8)) {
        return hamrahi_ws_data_event(p, buf, n, ev, used + n);
    }

    hamrahi_ws_unmask(p, buf, n);
    memcpy(p->control + p->control_len, buf, n);
    p->control_len += n;
    p->remaining -= n;

    if (p->remaining == 0) {
        return hamrahi_ws_control_event(p, ev, used + n);
    }

    return used + n;
}


size_t
hamrahi_ws_parse(hamrahi_ws_parser_t *p, uint8_t *buf, size_t len,
    hamrahi_ws_event_t *ev)
{
    size_t       used;
    uint16_t     code;
    const char  *why;

    memset(ev, 0, sizeof(*ev));
    used = 0;

    if (p->state == HAMRAHI_WS_ST_DONE) {
        return len;
    }

    while (ev->kind == HAMRAHI_WS_EV_NONE) {

        if (p->state == HAMRAHI_WS_ST_PAYLOAD) {
            if (used == len) {
                return used;
            }
            used = hamrahi_ws_parse_payload(p, buf + used, len - used, ev,
                                            used);
            continue;
        }

        if (used == len) {
            return used;
        }

        used += hamrahi_ws_read_header(p, buf + used, len - used);

        if (p->header_have == 2) {
            why = hamrahi_ws_check_start(p);
            if (why) {
                return hamrahi_ws_fail(p, ev, HAMRAHI_WS_CLOSE_PROTOCOL, why,
                                       used);
            }
        }

        if (p->header_have < p->header_need) {
            continue;
        }

        why = hamrahi_ws_begin_frame(p, &code);
        if (why) {
            return hamrahi_ws_fail(p, ev, code, why, used);
        }

        p->state = HAMRAHI_WS_ST_PAYLOAD;

        if (p->remaining == 0) {
            /* an empty frame: an event now, or nothing (non-final data) */
            if (p->frame_opcode & 0x8) {
                return hamrahi_ws_control_event(p, ev, used);
            }
            if (p->frame_fin) {
                return hamrahi_ws_data_event(p, buf + used, 0, ev, used);
            }
            hamrahi_ws_next_frame(p);
        }
    }

    return used;
}


size_t
hamrahi_ws_frame_header(uint8_t out[HAMRAHI_WS_HEADER_MAX], int opcode,
    uint64_t payload_len)
{
    int  i;

    out[0] = (uint8_t) (0x80 | (opcode & 0x0f));

    if (payload_len < 126) {
        out[1] = (uint8_t) payload_len;
        return 2;
    }

    if (payload_len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t) (payload_len >> 8);
        out[3] = (uint8_t) payload_len;
        return 4;
    }

    out[1] = 127;
    for (i = 0; i < 8; i++) {
        out[2 + i] = (uint8_t) (payload_len >> (56 - 8 * i));
    }

    return 10;
}


size_t
hamrahi_ws_close_frame(uint8_t out[2 + HAMRAHI_WS_CONTROL_MAX],
    uint16_t code, const char *reason)
{
    size_t  n;

    n = reason ? strlen(reason) : 0;
    if (n > HAMRAHI_WS_CONTROL_MAX - 2) {
        n = HAMRAHI_WS_CONTROL_MAX - 2;
    }

    out[0] = 0x80 | HAMRAHI_WS_OP_CLOSE;
    out[1] = (uint8_t) (2 + n);
    out[2] = (uint8_t) (code >> 8);
    out[3] = (uint8_t) code;
    if (n) {
        memcpy(out + 4, reason, n);
    }

    return 4 + n;
}


int
hamrahi_ws_accept_key(const char *key, size_t key_len,
    char out[HAMRAHI_WS_ACCEPT_LEN + 1])
{
    unsigned char  raw[18], digest[SHA_DIGEST_LENGTH];
    unsigned char  buf[64];
    size_t         guid_len = sizeof(HAMRAHI_WS_GUID) - 1;

    /* base64 of 16 bytes: 22 symbols and "==" */
    if (key_len != 24 || key[22] != '=' || key[23] != '=') {
        return -1;
    }

    if (EVP_DecodeBlock(raw, (const unsigned char *) key, 24) != 18) {
        return -1;
    }

    memcpy(buf, key, key_len);
    memcpy(buf + key_len, HAMRAHI_WS_GUID, guid_len);
    SHA1(buf, key_len + guid_len, digest);

    EVP_EncodeBlock((unsigned char *) out, digest, SHA_DIGEST_LENGTH);
    out[HAMRAHI_WS_ACCEPT_LEN] = '\0';

    return 0;
}
