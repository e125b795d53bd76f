/*
 * RFC 6455 codec for the server side of the panel WebSocket: the handshake
 * accept key, an incremental frame parser, server frame headers, UTF-8 and
 * close code checks. Pure: no nginx header, no I/O, no allocation.
 */

#ifndef HAMRAHI_WS_H
#define HAMRAHI_WS_H

#include <stddef.h>
#include <stdint.h>


#define HAMRAHI_WS_OP_CONT          0x0
#define HAMRAHI_WS_OP_TEXT          0x1
#define HAMRAHI_WS_OP_BINARY        0x2
#define HAMRAHI_WS_OP_CLOSE         0x8
#define HAMRAHI_WS_OP_PING          0x9
#define HAMRAHI_WS_OP_PONG          0xa

#define HAMRAHI_WS_CLOSE_NORMAL         1000
#define HAMRAHI_WS_CLOSE_GOING_AWAY     1001
#define HAMRAHI_WS_CLOSE_PROTOCOL       1002
#define HAMRAHI_WS_CLOSE_NO_STATUS      1005
#define HAMRAHI_WS_CLOSE_BAD_DATA       1007
#define HAMRAHI_WS_CLOSE_POLICY         1008
#define HAMRAHI_WS_CLOSE_TOO_BIG        1009
#define HAMRAHI_WS_CLOSE_INTERNAL       1011
#define HAMRAHI_WS_CLOSE_TRY_AGAIN      1013

#define HAMRAHI_WS_CONTROL_MAX      125
#define HAMRAHI_WS_HEADER_MAX       10      /* server frames: never masked */
#define HAMRAHI_WS_ACCEPT_LEN       28      /* base64 of a SHA-1 digest */


/* Incremental UTF-8 validator: the state carries over between chunks. */
typedef struct {
    uint8_t   need;         /* continuation bytes still expected */
    uint8_t   lo;           /* bounds of the next continuation byte */
    uint8_t   hi;
} hamrahi_utf8_t;

/* 1 valid so far, 0 invalid */
int hamrahi_utf8_feed(hamrahi_utf8_t *u, const uint8_t *p, size_t len);
/* 1 when no sequence is left open (the end of a message is allowed here) */
int hamrahi_utf8_complete(const hamrahi_utf8_t *u);


typedef enum {
    HAMRAHI_WS_EV_NONE = 0,     /* every input byte used: read more */
    HAMRAHI_WS_EV_DATA,         /* payload of a text/binary message */
    HAMRAHI_WS_EV_PING,         /* control payload in data/len */
    HAMRAHI_WS_EV_PONG,
    HAMRAHI_WS_EV_CLOSE,        /* close_code (1005 if none), reason */
    HAMRAHI_WS_EV_ERROR         /* fail the connection with close_code */
} hamrahi_ws_event_kind_t;

typedef struct {
    hamrahi_ws_event_kind_t   kind;
    int                       opcode;   /* DATA: text or binary */
    int                       fin;      /* DATA: last chunk of the message */
    const uint8_t            *data;     /* into buf, or into the parser for */
    size_t                    len;      /* control frames: valid until the
                                           next call */
    uint16_t                  close_code;
    const char               *error;    /* ERROR: static text for the log */
} hamrahi_ws_event_t;

typedef struct {
    uint64_t         max_message;   /* 0: no limit */
    uint64_t         message_len;   /* bytes of the current message so far */
    uint64_t         remaining;     /* payload bytes left in this frame */
    int              state;
    int              message_opcode;    /* 0 when no message is open */
    int              frame_opcode;
    int              frame_fin;
    uint8_t          header[14];
    size_t           header_have;
    size_t           header_need;
    uint8_t          mask[4];
    size_t           mask_pos;
    hamrahi_utf8_t   utf8;
    uint8_t          control[HAMRAHI_WS_CONTROL_MAX];
    size_t           control_len;
} hamrahi_ws_parser_t;


void hamrahi_ws_parser_init(hamrahi_ws_parser_t *p, uint64_t max_message);

/*
 * Parse client bytes. Unmasks payload in place, so buf must be writable.
 * Returns how many bytes were used and one event in *ev. Call again with the
 * rest until it reports HAMRAHI_WS_EV_NONE: an event may use no byte.
 * After a CLOSE or an ERROR the parser ignores all further input.
 */
size_t hamrahi_ws_parse(hamrahi_ws_parser_t *p, uint8_t *buf, size_t len,
    hamrahi_ws_event_t *ev);

/* Writes the header of an unmasked, final server frame; returns its size. */
size_t hamrahi_ws_frame_header(uint8_t out[HAMRAHI_WS_HEADER_MAX], int opcode,
    uint64_t payload_len);

/* A complete close frame (code, optional reason cut to fit); returns size. */
size_t hamrahi_ws_close_frame(uint8_t out[2 + HAMRAHI_WS_CONTROL_MAX],
    uint16_t code, const char *reason);

/* 1 if a peer may send this code in a close frame */
int hamrahi_ws_close_code_valid(unsigned code);

/*
 * Sec-WebSocket-Accept for a Sec-WebSocket-Key. Returns 0 and fills out
 * (NUL-terminated) or -1 when the key is not base64 of 16 bytes.
 */
int hamrahi_ws_accept_key(const char *key, size_t key_len,
    char out[HAMRAHI_WS_ACCEPT_LEN + 1]);


#endif /* HAMRAHI_WS_H */
