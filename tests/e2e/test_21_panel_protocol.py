"""RFC 6455 on a raw socket, by the Autobahn test suite's case families
(framing, ping/pong, reserved bits, opcodes, fragmentation, UTF-8, close,
limits); each case asserts the exact reply or close code."""

import time

import pytest

from wsraw import (FASTPING, OP_CLOSE, OP_PING, OP_PONG, SMALL, Raw, close_frame, frame,
                   token, upgraded)


def ping_roundtrip(c, payload=b"sync"):
    """Proves the server has processed everything sent before."""
    c.send(frame(OP_PING, payload))
    assert c.recv_frame() == (OP_PONG, True, payload)


# --- ping/pong (Autobahn 2.*) -------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125)), "héllo".encode()])
def test_ping_is_answered_with_a_pong_of_the_same_payload(payload):
    c = upgraded()
    c.send(frame(OP_PING, payload))
    assert c.recv_frame() == (OP_PONG, True, payload)
    c.close()


def test_unsolicited_pong_is_ignored():
    c = upgraded()
    c.send(frame(OP_PONG, b"unasked"))
    ping_roundtrip(c)
    c.close()


def test_ten_pings_get_ten_pongs_in_order():
    c = upgraded()
    c.send(b"".join(frame(OP_PING, b"%d" % i) for i in range(10)))
    for i in range(10):
        assert c.recv_frame() == (OP_PONG, True, b"%d" % i)
    c.close()


# --- framing (Autobahn 1.*) ----------------------------------------------------

def test_frames_sent_with_the_upgrade_request_are_processed():
    c = Raw(token(), extra=frame(OP_PING, b"early") + frame(OP_PING, b"two"))
    assert c.response()[0] == 101
    assert c.recv_frame() == (OP_PONG, True, b"early")
    assert c.recv_frame() == (OP_PONG, True, b"two")
    c.close()


def test_one_frame_byte_by_byte():
    c = upgraded()
    f = frame(OP_PING, b"x" * 100)
    for i in range(len(f)):
        c.send(f[i:i + 1])
    assert c.recv_frame() == (OP_PONG, True, b"x" * 100)
    c.close()


def test_many_frames_in_one_write():
    c = upgraded()
    c.send(b"".join(frame(OP_PING, bytes([i])) for i in range(50)))
    for i in range(50):
        assert c.recv_frame() == (OP_PONG, True, bytes([i]))
    c.close()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_and_binary_messages_of_every_length_encoding_are_read(size):
    """Panels only listen: their messages are read and dropped, whatever
    the 7-bit, 16-bit or 64-bit length form."""
    c = upgraded()
    c.send(frame(0x1, "a" * size) + frame(0x2, b"\x00" * size))
    ping_roundtrip(c)
    c.close()


def test_a_message_larger_than_one_read_buffer_is_streamed():
    c = upgraded()
    c.send(frame(0x2, b"z" * 60000, fin=False) + frame(0x0, b"z" * 4000))
    ping_roundtrip(c)
    c.close()


# --- fragmentation (Autobahn 5.*) -----------------------------------------------

def test_fragmented_text_with_pings_between_the_fragments():
    c = upgraded()
    c.send(frame(0x1, "Hel", fin=False) + frame(OP_PING, b"mid") + frame(0x0, "l", fin=False)
           + frame(OP_PING, b"mid2") + frame(0x0, "o"))
    assert c.recv_frame() == (OP_PONG, True, b"mid")
    assert c.recv_frame() == (OP_PONG, True, b"mid2")
    ping_roundtrip(c)
    c.close()


def test_empty_fragments_are_fine():
    c = upgraded()
    c.send(frame(0x1, "", fin=False) + frame(0x0, "", fin=False) + frame(0x0, ""))
    ping_roundtrip(c)
    c.close()


# --- UTF-8 (Autobahn 6.*) ----------------------------------------------------

def test_utf8_split_inside_characters_across_fragments_is_valid():
    c = upgraded()
    c.send(frame(0x1, b"\xe2\x82", fin=False) + frame(0x0, b"\xac\xf0\x9f", fin=False)
           + frame(0x0, b"\x98\x80"))
    ping_roundtrip(c)
    c.close()


@pytest.mark.parametrize("text", [
    "κόσμε".encode(), b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbd", b"\xf4\x8f\xbf\xbf",
])
def test_valid_utf8_edge_cases(text):
    c = upgraded()
    c.send(frame(0x1, text))
    ping_roundtrip(c)
    c.close()


# --- everything that fails the connection, with its close code ----------------

@pytest.mark.parametrize("data,code", [
    # masking (RFC 6455 5.1)
    (frame(0x1, b"hi", mask=False), 1002),
    (frame(OP_PING, b"hi", mask=False), 1002),
    # reserved bits (Autobahn 3.*)
    (frame(0x1, b"hi", rsv=4), 1002),
    (frame(0x1, b"hi", rsv=2), 1002),
    (frame(0x1, b"hi", rsv=1), 1002),
    (frame(OP_PING, b"", rsv=7), 1002),
    # opcodes (Autobahn 4.*)
    (frame(0x3, b""), 1002),
    (frame(0x7, b"x"), 1002),
    (frame(0xB, b""), 1002),
    (frame(0xF, b"x"), 1002),
    # control frames (Autobahn 2.5, 5.1, 5.2)
    (frame(OP_PING, b"x", fin=False), 1002),
    (frame(OP_PONG, b"x", fin=False), 1002),
    (frame(OP_PING, b"x" * 126), 1002),
    (frame(OP_CLOSE, b"\x03\xe8" + b"x" * 124), 1002),
    # fragmentation (Autobahn 5.*)
    (frame(0x0, b"x"), 1002),
    (frame(0x0, b"x", fin=False), 1002),
    (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),
    (frame(0x1, b"a", fin=False) + frame(0x2, b"b"), 1002),
    # UTF-8 (Autobahn 6.*)
    (frame(0x1, b"\xc0\xaf"), 1007),                       # overlong
    (frame(0x1, b"\xed\xa0\x80"), 1007),                   # surrogate
    (frame(0x1, b"\xf4\x90\x80\x80"), 1007),               # above U+10FFFF
    (frame(0x1, b"\xff"), 1007),
    (frame(0x1, b"ok\x80"), 1007),                         # lone continuation
    (frame(0x1, b"\xe2\x82", fin=False) + frame(0x0, b""), 1007),  # ends inside a char
    (frame(0x1, b"\xe2\x82\x28", fin=False), 1007),        # fails before the end
    # close frames (Autobahn 7.*)
    (close_frame(1005), 1002),                             # never on the wire
    (close_frame(1006), 1002),
    (close_frame(1015), 1002),
    (close_frame(999), 1002),
    (close_frame(1004), 1002),
    (close_frame(1016), 1002),
    (close_frame(2000), 1002),
    (close_frame(5000), 1002),
    (frame(OP_CLOSE, b"\x03"), 1002),                       # one-byte payload
    (close_frame(1000, b"\xff"), 1007),                    # reason not UTF-8
])
def test_protocol_violation_closes_with_code(data, code):
    c = upgraded()
    c.send(data)
    c.expect_close(code)
    assert c.eof()


def test_nothing_is_read_after_a_protocol_error():
    c = upgraded()
    c.send(frame(0x1, b"hi", mask=False) + frame(OP_PING, b"ignored"))
    c.expect_close(1002)   # and no pong before it
    assert c.eof()


# --- close handshake (Autobahn 7.*) --------------------------------------------

def test_client_close_is_echoed_then_the_server_closes_tcp():
    c = upgraded()
    c.send(close_frame(1000, b"bye"))
    c.expect_close(1000)
    assert c.eof()


def test_close_without_a_code_is_answered_with_1000():
    c = upgraded()
    c.send(frame(OP_CLOSE))
    c.expect_close(1000)
    assert c.eof()


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes_are_echoed(code):
    c = upgraded()
    c.send(close_frame(code, b"reason"))
    c.expect_close(code)
    assert c.eof()


def test_frames_after_the_close_frame_are_ignored():
    c = upgraded()
    c.send(close_frame(1000) + frame(OP_PING, b"late"))
    _, before = c.expect_close(1000)
    assert before == 0     # no pong for the ping behind the close
    assert c.eof()
    assert b"late" not in c.buf


def test_client_vanishing_without_close_frees_the_panel():
    c = upgraded()
    c.s.close()
    d = upgraded()        # the worker goes on serving
    ping_roundtrip(d)
    d.close()


# --- limits --------------------------------------------------------------------

def test_max_message_is_checked_on_the_frame_header():
    c = upgraded(path=SMALL)          # hamrahi_panel_max_message 1k
    c.send(frame(0x2, b"", length=1 << 40)[:14])   # announces 1 TiB, sends none
    c.expect_close(1009)
    assert c.eof()


def test_max_message_counts_every_fragment():
    c = upgraded(path=SMALL)
    c.send(frame(0x2, b"a" * 600, fin=False) + frame(0x0, b"a" * 600))
    c.expect_close(1009)
    assert c.eof()


def test_a_message_of_exactly_max_message_is_fine():
    c = upgraded(path=SMALL)
    c.send(frame(0x1, b"a" * 1024))
    ping_roundtrip(c)
    c.close()


# --- idle ping and dead peer -----------------------------------------------------

def test_idle_panel_is_pinged_then_dropped_when_it_never_answers():
    c = upgraded(path=FASTPING)       # hamrahi_panel_ping_interval 1s
    t0 = time.monotonic()
    op, fin, payload = c.recv_frame(timeout=5)
    assert op == OP_PING
    assert 0.5 < time.monotonic() - t0 < 3
    assert c.eof(timeout=5)           # no pong: cut one interval later
    assert time.monotonic() - t0 < 6


def test_answered_pings_keep_the_panel_open():
    c = upgraded(path=FASTPING)
    for _ in range(3):
        op, _, payload = c.recv_frame(timeout=5)
        assert op == OP_PING
        c.send(frame(OP_PONG, payload))
    c.send(close_frame(1000))
    c.expect_close(1000)


def test_client_traffic_postpones_the_idle_ping():
    c = upgraded(path=FASTPING)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        c.send(frame(0x1, b"still here"))
        ping_roundtrip(c, b"mine")    # a server ping here would fail this
        time.sleep(0.2)               # the pacing of a live client, not a sync
    c.close()


def test_pong_payload_of_a_server_ping_is_not_checked_strictly():
    c = upgraded(path=FASTPING)
    op, _, payload = c.recv_frame(timeout=5)
    assert op == OP_PING
    c.send(frame(OP_PONG, b"other"))  # RFC 6455 5.5.3: any pong counts as alive
    op, _, _ = c.recv_frame(timeout=5)
    assert op == OP_PING              # the next idle ping, not a close
    c.close()


def test_close_reason_of_a_protocol_error_is_short_text():
    c = upgraded()
    c.send(frame(0x1, b"hi", mask=False))
    reason, _ = c.expect_close(1002)
    assert len(reason) <= 123
    reason.decode("utf-8")
