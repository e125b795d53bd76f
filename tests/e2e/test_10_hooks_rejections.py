"""Every refusal of the hook module (issue 3, docs/contracts.md "Hook answers"):
the status, the JSON error code, and that nothing reached hamrahi:events."""

import http.client as httpclient
import json
import socket
import time
import urllib.parse
import uuid

import pytest

from hamrahi import (Response, events_of, hook_metrics, hook_signature, http, post_telephony,
                     telephony_token, twilio_signature)

ACTIVATION = {"citizen_id": "cit-none", "operator_id": "op-none", "station_id": "st-hooks"}
MAX_BODY = 16384


def assert_refused(r, status, error, stack, session_id):
    assert r.status == status, (r.status, r.body)
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body["error"] == error, body
    assert body["detail"], body
    assert events_of(stack, session_id) == []


def signed_headers(stack, body, content_type="application/json"):
    return {"Content-Type": content_type,
            "X-Hamrahi-Signature": hook_signature(stack.hook_secret, body)}


def post_raw(stack, path, body, headers):
    return http("POST", stack.url + path, body, headers)


def host_port(stack):
    u = urllib.parse.urlsplit(stack.url)
    return u.hostname, u.port


def raw_exchange(stack, request):
    """Send raw bytes; read one response (status, headers, body), bounded."""
    host, port = host_port(stack)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(request)
        data = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        length = int(headers.get("Content-Length", "0"))
        while len(body) < length and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
    return Response(int(lines[0].split()[1]), body, headers)


def post_without_defaults(stack, path, body, headers):
    """A POST with exactly these headers (urllib would add a Content-Type)."""
    host, port = host_port(stack)
    conn = httpclient.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.read(), dict(resp.getheaders()))
    finally:
        conn.close()


# ---------------------------------------------------------------- 404

@pytest.mark.parametrize("suffix", [
    "/v1/sos/sessions/{s}/unknown",
    "/v1/sos/sessions/{s}/activated/extra",
    "/v1/sos/sessions/{s}/activated/",
    "/v1/sos/sessions/{s}",
    "/v1/sos/sessions/{s}/Activated",
])
def test_unknown_route_is_404(stack, session_id, suffix):
    body = json.dumps(ACTIVATION).encode()
    r = post_raw(stack, suffix.format(s=session_id), body, signed_headers(stack, body))
    assert_refused(r, 404, "not_found", stack, session_id)


def test_unknown_telephony_route_is_404(stack, session_id):
    r = post_telephony(stack, "recording", {"session": session_id, "leg": "citizen"},
                       {"CallSid": "CA1", "CallStatus": "ringing"})
    assert_refused(r, 404, "not_found", stack, session_id)


@pytest.mark.parametrize("bad_id", [
    "a.b", "a%20b", "a%2Fb", "x" * 65, "caf%C3%A9", "a:b",
])
def test_bad_session_id_is_404(stack, session_id, bad_id):
    body = json.dumps(ACTIVATION).encode()
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}{bad_id}/activated", body,
                 signed_headers(stack, body))
    assert r.status == 404, (r.status, r.body)
    assert r.json()["error"] == "not_found"
    assert not [e for e in stack.redis.xrevrange("hamrahi:events", count=2000)
                if e[1].get("session_id", "").startswith(session_id)]


def test_longest_session_id_is_accepted(stack):
    sid = ("e2e-max-" + uuid.uuid4().hex + "x" * 64)[:64]
    r = stack.post_hook(sid, "released", {"reason": "test"})
    assert r.status == 202, (r.status, r.body)
    assert len(events_of(stack, sid)) == 1


# ---------------------------------------------------------------- 405

@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_wrong_method_is_405_with_allow(stack, session_id, method):
    body = json.dumps(ACTIVATION).encode()
    r = http(method, f"{stack.url}/v1/sos/sessions/{session_id}/activated",
             body if method in ("PUT", "PATCH") else None, signed_headers(stack, body))
    assert_refused(r, 405, "method_not_allowed", stack, session_id)
    assert r.headers.get("Allow") == "POST"


def test_wrong_method_on_telephony_is_405(stack, session_id):
    r = http("GET", f"{stack.url}/v1/telephony/status?session={session_id}&leg=citizen")
    assert_refused(r, 405, "method_not_allowed", stack, session_id)
    assert r.headers.get("Allow") == "POST"


# ---------------------------------------------------------------- 415

@pytest.mark.parametrize("content_type", [
    None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
    "application/json-patch+json", "multipart/form-data; boundary=x",
])
def test_wrong_content_type_on_signalling_is_415(stack, session_id, content_type):
    body = json.dumps(ACTIVATION).encode()
    headers = signed_headers(stack, body)
    del headers["Content-Type"]
    if content_type:
        headers["Content-Type"] = content_type
    r = post_without_defaults(stack, f"/v1/sos/sessions/{session_id}/activated", body, headers)
    assert_refused(r, 415, "unsupported_media_type", stack, session_id)


def test_json_content_type_parameters_are_accepted(stack, session_id):
    body = json.dumps({"reason": "test"}).encode()
    headers = signed_headers(stack, body, "Application/JSON ; charset=utf-8")
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}/released", body, headers)
    assert r.status == 202, (r.status, r.body)
    assert len(events_of(stack, session_id)) == 1


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_wrong_content_type_on_telephony_is_415(stack, session_id, content_type):
    params = {"CallSid": "CA1", "CallStatus": "ringing"}
    path = f"/v1/telephony/status?session={session_id}&leg=citizen"
    headers = {"X-Twilio-Signature": twilio_signature(telephony_token(stack), stack.url + path,
                                                      params)}
    if content_type:
        headers["Content-Type"] = content_type
    r = post_without_defaults(stack, path, urllib.parse.urlencode(params).encode(), headers)
    assert_refused(r, 415, "unsupported_media_type", stack, session_id)


# ---------------------------------------------------------------- 413

def padded_activation(size):
    """A valid activation body of exactly `size` bytes."""
    base = dict(ACTIVATION, pad="")
    pad = size - len(json.dumps(base, separators=(",", ":")).encode())
    base["pad"] = "p" * pad
    body = json.dumps(base, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def test_body_at_the_limit_is_accepted(stack, session_id):
    body = padded_activation(MAX_BODY)
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}/activated", body,
                 signed_headers(stack, body))
    assert r.status == 202, (r.status, r.body)
    assert len(events_of(stack, session_id)) == 1
    stack.post_hook(session_id, "released", {"reason": "test"})


def test_content_length_over_the_limit_is_413(stack, session_id):
    body = padded_activation(MAX_BODY + 1)
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}/activated", body,
                 signed_headers(stack, body))
    assert_refused(r, 413, "body_too_large", stack, session_id)


def test_content_length_far_over_the_limit_is_413(stack, session_id):
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}/activated", body,
                 signed_headers(stack, body))
    assert_refused(r, 413, "body_too_large", stack, session_id)


def test_413_comes_before_the_body_is_sent(stack, session_id):
    """Expect: 100-continue with a large Content-Length: refused without
    asking for the body (no 100 Continue first)."""
    host, _ = host_port(stack)
    r = raw_exchange(stack, (f"POST /v1/sos/sessions/{session_id}/activated HTTP/1.1\r\n"
                             f"Host: {host}\r\nContent-Type: application/json\r\n"
                             "Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n"
                             ).encode())
    assert_refused(r, 413, "body_too_large", stack, session_id)


def chunked_post(stack, path, body, headers, chunk=4096):
    host, _ = host_port(stack)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    data = head.encode()
    for i in range(0, len(body), chunk):
        piece = body[i:i + chunk]
        data += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return raw_exchange(stack, data + b"0\r\n\r\n")


def test_chunked_body_over_the_limit_is_413(stack, session_id):
    body = padded_activation(MAX_BODY + 1000)
    r = chunked_post(stack, f"/v1/sos/sessions/{session_id}/activated", body,
                     signed_headers(stack, body))
    assert_refused(r, 413, "body_too_large", stack, session_id)


def test_chunked_telephony_body_over_the_limit_is_413(stack, session_id):
    params = {"CallSid": "CA1", "CallStatus": "ringing", "Pad": "p" * (MAX_BODY + 10)}
    query = {"session": session_id, "leg": "citizen"}
    path = f"/v1/telephony/status?{urllib.parse.urlencode(query)}"
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(telephony_token(stack),
                                                      stack.url + path, params)}
    r = chunked_post(stack, path, urllib.parse.urlencode(params).encode(), headers)
    assert_refused(r, 413, "body_too_large", stack, session_id)


def test_chunked_body_within_the_limit_is_accepted(stack, session_id):
    body = json.dumps({"reason": "chunked"}).encode()
    r = chunked_post(stack, f"/v1/sos/sessions/{session_id}/released", body,
                     signed_headers(stack, body), chunk=5)
    assert r.status == 202, (r.status, r.body)
    assert len(events_of(stack, session_id)) == 1


def test_broken_chunked_framing_is_400(stack, session_id):
    host, _ = host_port(stack)
    r = raw_exchange(stack, (f"POST /v1/sos/sessions/{session_id}/released HTTP/1.1\r\n"
                             f"Host: {host}\r\nContent-Type: application/json\r\n"
                             "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
                             ).encode())
    assert_refused(r, 400, "invalid_json", stack, session_id)


# ---------------------------------------------------------------- 400

@pytest.mark.parametrize("kind,raw,error", [
    ("activated", b'{"citizen_id": "cit-1", ', "invalid_json"),
    ("activated", b"", "invalid_json"),
    ("activated", b"[]", "invalid_json"),
    ("activated", b'"text"', "invalid_json"),
    ("activated", b'{"citizen_id":"c","citizen_id":"d","operator_id":"o","station_id":"s"}',
     "invalid_json"),
    ("activated", b'{"citizen_id":"c\\u0000","operator_id":"o","station_id":"s"}',
     "invalid_json"),
    ("activated", b'{"citizen_id":"\xff","operator_id":"o","station_id":"s"}', "invalid_json"),
    ("activated", b'{"citizen_id":"c","station_id":"s"}', "missing_field"),
    ("activated", b"{}", "missing_field"),
    ("activated", b'{"citizen_id":7,"operator_id":"o","station_id":"s"}', "invalid_field"),
    ("activated", b'{"citizen_id":"","operator_id":"o","station_id":"s"}', "invalid_field"),
    ("activated", b'{"citizen_id":"' + b"x" * 129 + b'","operator_id":"o","station_id":"s"}',
     "invalid_field"),
    ("activated", b'{"citizen_id":["c"],"operator_id":"o","station_id":"s"}', "invalid_field"),
    ("stream", b'{"state":"failed"}', "missing_field"),
    ("stream", b'{"reason":"x"}', "missing_field"),
    ("stream", b'{"state":"bogus"}', "invalid_field"),
    ("stream", b'{"state":1}', "invalid_field"),
    ("stream", b'{"state":"failed","reason":{}}', "invalid_field"),
    ("released", b'{"reason":42}', "invalid_field"),
    ("released", b"null", "invalid_json"),
])
def test_bad_body_is_400(stack, session_id, kind, raw, error):
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}/{kind}", raw, signed_headers(stack, raw))
    assert_refused(r, 400, error, stack, session_id)


@pytest.mark.parametrize("kind,query,params,error", [
    ("status", {"leg": "citizen"}, {"CallSid": "CA1", "CallStatus": "ringing"}, "missing_field"),
    ("status", {"session": "{s}"}, {"CallSid": "CA1", "CallStatus": "ringing"}, "missing_field"),
    ("status", {"session": "{s}", "leg": "citizen"}, {"CallStatus": "ringing"}, "missing_field"),
    ("status", {"session": "{s}", "leg": "citizen"}, {"CallSid": "CA1"}, "missing_field"),
    ("status", {"session": "{s}", "leg": "cit izen"}, {"CallSid": "CA1", "CallStatus": "x"},
     "invalid_field"),
    ("status", {"session": "{s}", "leg": "citizen"}, {"CallSid": "CA1", "CallStatus": "a\x00b"},
     "invalid_field"),
    ("dial", {"session": "{s}"}, {"CallSid": "CA1"}, "missing_field"),
    ("dial", {"session": "{s}", "step": "one"}, {"CallSid": "CA1"}, "invalid_field"),
    ("dial", {"session": "{s}", "step": "1", "attempt": "x"}, {"CallSid": "CA1"},
     "invalid_field"),
    ("dial", {"session": "{s}", "step": "1"}, {"DialCallStatus": "busy"}, "missing_field"),
])
def test_bad_telephony_callback_is_400(stack, session_id, kind, query, params, error):
    query = {k: v.format(s=session_id) for k, v in query.items()}
    r = post_telephony(stack, kind, query, params)
    if kind == "dial" and r.status == 200:
        pytest.fail(f"dial callback answered TwiML instead of 400: {r.body!r}")
    assert_refused(r, 400, error, stack, session_id)


def test_bad_session_in_telephony_query_is_400(stack, session_id):
    r = post_telephony(stack, "status", {"session": session_id + ".x", "leg": "citizen"},
                       {"CallSid": "CA1", "CallStatus": "ringing"})
    assert r.status == 400, (r.status, r.body)
    assert r.json()["error"] == "invalid_field"


def test_undecodable_form_is_400(stack, session_id):
    query = {"session": session_id, "leg": "citizen"}
    path = f"/v1/telephony/status?{urllib.parse.urlencode(query)}"
    raw = b"CallSid=CA1&CallStatus=%zz"
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": "A" * 27 + "="}
    r = post_raw(stack, path, raw, headers)
    assert_refused(r, 400, "invalid_form", stack, session_id)


# ---------------------------------------------------------------- 401

def signalling_401(stack, session_id, signature, body=None):
    body = body if body is not None else json.dumps(ACTIVATION).encode()
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hamrahi-Signature"] = signature
    return post_raw(stack, f"/v1/sos/sessions/{session_id}/activated", body, headers)


def test_missing_signature_is_401(stack, session_id):
    assert_refused(signalling_401(stack, session_id, None), 401, "bad_signature", stack,
                   session_id)


@pytest.mark.parametrize("header", [
    "", "garbage", "t=,v1=", "t=abc,v1=" + "0" * 64, "v1=" + "0" * 64,
    "t={t}", "t={t},v1=xyz", "t={t},v1=" + "0" * 63, "t={t},v1=" + "g" * 64,
    "t={t},t={t},v1=" + "0" * 64, "t=-{t},v1=" + "0" * 64,
])
def test_malformed_signature_is_401(stack, session_id, header):
    r = signalling_401(stack, session_id, header.format(t=int(time.time())))
    assert_refused(r, 401, "bad_signature", stack, session_id)


@pytest.mark.parametrize("skew", [-301 - 5, 301 + 5, -3600, 10 ** 9])
def test_signature_outside_300_s_is_401(stack, session_id, skew):
    body = json.dumps(ACTIVATION).encode()
    sig = hook_signature(stack.hook_secret, body, t=int(time.time()) + skew)
    assert_refused(signalling_401(stack, session_id, sig, body), 401, "bad_signature", stack,
                   session_id)


def test_signature_inside_the_window_is_accepted(stack, session_id):
    body = json.dumps({"reason": "skewed clock"}).encode()
    sig = hook_signature(stack.hook_secret, body, t=int(time.time()) - 250)
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}/released", body,
                 {"Content-Type": "application/json", "X-Hamrahi-Signature": sig})
    assert r.status == 202, (r.status, r.body)


def test_wrong_secret_is_401(stack, session_id):
    body = json.dumps(ACTIVATION).encode()
    sig = hook_signature(b"not-the-secret", body)
    assert_refused(signalling_401(stack, session_id, sig, body), 401, "bad_signature", stack,
                   session_id)


def test_signature_of_another_body_is_401(stack, session_id):
    body = json.dumps(ACTIVATION).encode()
    sig = hook_signature(stack.hook_secret, body + b" ")
    assert_refused(signalling_401(stack, session_id, sig, body), 401, "bad_signature", stack,
                   session_id)


def test_signed_body_naming_another_session_is_400(stack, session_id):
    """A body that names its session binds its signature to it: the same
    signed release cannot be replayed to stop another session's fallback."""
    other = f"other-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"reason": "citizen_cancelled", "session_id": other}).encode()
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}/released", body,
                 signed_headers(stack, body))
    assert_refused(r, 400, "session_mismatch", stack, session_id)
    r = post_raw(stack, f"/v1/sos/sessions/{other}/released", body, signed_headers(stack, body))
    assert r.status == 202, (r.status, r.body)
    (entry,) = events_of(stack, other)
    assert json.loads(entry[1]["payload"])["session_id"] == other


def test_one_good_v1_among_several_is_accepted(stack, session_id):
    """Secret rotation: the sender may sign with the old and the new secret."""
    body = json.dumps({"reason": "rotation"}).encode()
    good = hook_signature(stack.hook_secret, body)
    t, v1 = good.split(",")
    sig = f"{t},v1={'0' * 64},{v1}"
    r = post_raw(stack, f"/v1/sos/sessions/{session_id}/released", body,
                 {"Content-Type": "application/json", "X-Hamrahi-Signature": sig})
    assert r.status == 202, (r.status, r.body)


def test_missing_twilio_signature_is_401(stack, session_id):
    r = post_telephony(stack, "status", {"session": session_id, "leg": "citizen"},
                       {"CallSid": "CA1", "CallStatus": "ringing"}, sign=False)
    assert_refused(r, 401, "bad_signature", stack, session_id)


def test_twilio_signature_with_wrong_token_is_401(stack, session_id):
    r = post_telephony(stack, "status", {"session": session_id, "leg": "citizen"},
                       {"CallSid": "CA1", "CallStatus": "ringing"}, token="wrong-token")
    assert_refused(r, 401, "bad_signature", stack, session_id)


def test_twilio_signature_for_another_session_is_401(stack, session_id):
    params = {"CallSid": "CA1", "CallStatus": "ringing"}
    other = f"{stack.url}/v1/telephony/status?session=other&leg=citizen"
    r = post_telephony(stack, "status", {"session": session_id, "leg": "citizen"}, params,
                       signed_url=other)
    assert_refused(r, 401, "bad_signature", stack, session_id)


@pytest.mark.parametrize("signature", ["", "short", "A" * 28, "A" * 29])
def test_malformed_twilio_signature_is_401(stack, session_id, signature):
    r = post_telephony(stack, "status", {"session": session_id, "leg": "citizen"},
                       {"CallSid": "CA1", "CallStatus": "ringing"}, sign=False,
                       headers={"X-Twilio-Signature": signature})
    assert_refused(r, 401, "bad_signature", stack, session_id)


def test_signature_is_checked_before_the_body(stack, session_id):
    """An unsigned request learns nothing about the body rules."""
    r = signalling_401(stack, session_id, None, b"not json")
    assert_refused(r, 401, "bad_signature", stack, session_id)


# ---------------------------------------------------------------- metrics

def test_rejections_are_counted(stack, session_id):
    before = hook_metrics(stack)
    signalling_401(stack, session_id, None)
    http("GET", f"{stack.url}/v1/sos/sessions/{session_id}/activated")
    after = hook_metrics(stack)
    key = 'hamrahi_hook_rejections_total{reason="bad_signature"}'
    assert after[key] >= before[key] + 1
    key = 'hamrahi_hook_rejections_total{reason="method_not_allowed"}'
    assert after[key] >= before[key] + 1
    key = 'hamrahi_hook_requests_total{route="activated",status="401"}'
    assert after[key] >= before.get(key, 0) + 1
    for name in ("hamrahi_redis_up{worker=\"0\"}", "hamrahi_redis_up{worker=\"1\"}",
                 "hamrahi_redis_reconnects_total", "hamrahi_xadd_latency_seconds_count",
                 "hamrahi_panel_connections", "hamrahi_panel_opened_total",
                 'hamrahi_panel_closes_total{code="1000"}',
                 "hamrahi_panel_frames_delivered_total",
                 "hamrahi_panel_resync_required_total",
                 "hamrahi_panel_slow_consumer_cuts_total"):
        assert name in after, name
