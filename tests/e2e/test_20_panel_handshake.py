"""Panel WebSocket handshake and token checks (DESIGN.md section 3, issue 4):
everything refused is refused before the 101, with a JSON reason."""

import base64
import hashlib
import json
import socket
import time

import pytest

from wsraw import GUID, ORIGIN, WS, Raw, env, token


def test_101_with_the_accept_key_of_rfc6455():
    c = Raw(token())
    status, hdrs = c.response()
    assert status == 101
    want = base64.b64encode(hashlib.sha1((c.key + GUID).encode()).digest()).decode()
    assert hdrs["sec-websocket-accept"] == want
    assert hdrs["upgrade"].lower() == "websocket"
    assert "upgrade" in hdrs["connection"].lower()
    # no subprotocol and no extension are negotiated
    assert "sec-websocket-protocol" not in hdrs
    assert "sec-websocket-extensions" not in hdrs
    c.close()


def test_extensions_offered_are_not_accepted():
    c = Raw(token(), headers={"Sec-WebSocket-Extensions": "permessage-deflate",
                              "Sec-WebSocket-Protocol": "chat"})
    status, hdrs = c.response()
    assert status == 101
    assert "sec-websocket-extensions" not in hdrs
    assert "sec-websocket-protocol" not in hdrs
    c.close()


@pytest.mark.parametrize("tok,why", [
    (None, "no token"),
    (lambda: token(key=b"wrong-secret"), "signature"),
    (lambda: token(exp_in=-120), "expired"),
    (lambda: token(nbf=int(time.time()) + 600), "not valid yet"),
    (lambda: token(role="admin"), "role operator|supervisor"),
    (lambda: token(station=""), "station"),
    (lambda: token(sub=""), "sub"),
    (lambda: token(alg="none"), "HS256"),
    (lambda: token(alg="HS512"), "HS256"),
    (lambda: "not.a.jwt", "well-formed"),
])
def test_bad_token_is_401_json_before_any_upgrade(tok, why):
    value = tok() if tok else None
    c = Raw(headers={"Authorization": ("Bearer " + value) if value else None})
    status, hdrs = c.response()
    assert status == 401
    assert hdrs["content-type"] == "application/json"
    assert hdrs["www-authenticate"].startswith("Bearer")
    body = c.json_body(hdrs)
    assert body["error"] == "unauthorized"
    assert why in body["detail"], body
    c.close()


def test_expired_within_the_leeway_is_accepted():
    c = Raw(token(exp_in=-10))
    assert c.response()[0] == 101
    c.close()


def test_token_in_the_query_is_accepted_and_masked_in_the_access_log():
    tok = token(sub="query-token-user")
    c = Raw(path=f"{WS}?x=1&access_token={tok}")
    assert c.response()[0] == 101
    c.close()
    signature = tok.rsplit(".", 1)[1]
    log = env()["raw"]["HAMRAHI_RUN_DIR"] + "/log/nginx-access.log"
    # the line is written once the upgrade is done; wait for it, bounded
    deadline = time.monotonic() + 5
    while True:
        with open(log, errors="replace") as f:
            text = f.read()
        if "access_token=****" in text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "access_token=****" in text
    assert signature not in text


@pytest.mark.parametrize("headers,status", [
    ({"Upgrade": None}, 400),
    ({"Upgrade": "h2c"}, 400),
    ({"Connection": "keep-alive"}, 400),
    ({"Connection": "keep-alive, Upgrade"}, 101),
    ({"Upgrade": "WebSocket"}, 101),
    ({"Sec-WebSocket-Version": "8"}, 426),
    ({"Sec-WebSocket-Version": None}, 426),
    ({"Sec-WebSocket-Key": "short"}, 400),
    ({"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}, 400),
    ({"Sec-WebSocket-Key": None}, 400),
])
def test_upgrade_request_checks(headers, status):
    c = Raw(token(), headers=headers)
    got, hdrs = c.response()
    assert got == status, (got, c.buf)
    if status == 426:
        assert hdrs["sec-websocket-version"] == "13"
    if status != 101:
        assert c.json_body(hdrs)["error"] in ("not_websocket", "websocket_version",
                                              "websocket_key")
    c.close()


def test_a_body_on_the_handshake_is_refused():
    c = Raw(token(), headers={"Content-Length": "5"}, extra=b"hello")
    status, hdrs = c.response()
    assert status == 400
    assert c.json_body(hdrs)["error"] == "not_websocket"
    c.close()


def raw_request(data):
    """The whole reply: the request asks the server to close after it."""
    e = env()
    s = socket.create_connection((e["host"], e["port"]), timeout=5)
    s.sendall(data)
    reply = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    return reply


def test_post_is_405_with_allow_get():
    reply = raw_request(b"POST /v1/panel/ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        b"Content-Length: 0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 405")
    assert b"\r\nAllow: GET\r\n" in reply


def test_http10_is_refused_with_http_version():
    reply = raw_request(b"GET /v1/panel/ws HTTP/1.0\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    assert b'"error":"http_version"' in reply


@pytest.mark.parametrize("query", [
    "since=abc&epoch=e", "since=5", "epoch=e", "since=&epoch=e",
    "since=99999999999999999999&epoch=e", "since=5&epoch=" + "e" * 65,
])
def test_bad_resume_arguments_are_400(query):
    c = Raw(token(), path=f"{WS}?{query}")
    status, hdrs = c.response()
    assert status == 400, query
    assert c.json_body(hdrs)["error"] == "bad_resume"
    c.close()


@pytest.mark.parametrize("origin,status", [
    (None, 101),                           # not a browser
    ("https://panel.example.org", 101),
    ("HTTPS://Panel.Example.org", 101),    # scheme and host compare without case
    ("http://127.0.0.1:8080", 101),
    ("https://evil.example", 403),
    ("https://panel.example.org.evil", 403),
    ("http://127.0.0.1:8081", 403),
    ("null", 403),
])
def test_origin_allow_list(origin, status):
    c = Raw(token(), path=ORIGIN, headers={"Origin": origin})
    got, hdrs = c.response()
    assert got == status
    if status == 403:
        assert c.json_body(hdrs)["error"] == "forbidden_origin"
    c.close()


def test_any_origin_where_no_list_is_configured():
    c = Raw(token(), headers={"Origin": "https://anywhere.example"})
    assert c.response()[0] == 101
    c.close()


def test_refusals_are_json():
    c = Raw(None)
    status, hdrs = c.response()
    assert status == 401
    assert set(json.loads(c.body(int(hdrs["content-length"])))) == {"error", "detail"}
    c.close()
