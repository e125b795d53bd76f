"""Signalling hooks: authentication and validation before anything is stored."""

import json

from hamrahi import hook_signature


def entries_for(stack, session_id):
    return [e for e in stack.redis.xrevrange("hamrahi:events", count=200)
            if e[1].get("session_id") == session_id]


def test_signed_activation_is_stored_with_receive_time(stack, session_id, citizen):
    before = __import__("time").time() * 1000
    r = stack.activate(session_id, citizen=citizen[0])
    stream_id = r.json()["id"]
    entries = stack.redis.xrange("hamrahi:events", stream_id, stream_id)
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields["type"] == "activated"
    assert fields["session_id"] == session_id
    assert abs(int(fields["at_ms"]) - before) < 2000
    assert json.loads(fields["payload"])["citizen_id"] == citizen[0]


def test_unsigned_hook_is_rejected_and_not_stored(stack, session_id):
    r = stack.post_hook(session_id, "activated", {"citizen_id": "cit-1", "operator_id": "op-1",
                                                  "station_id": "st-1"}, sign=False)
    assert r.status == 401
    assert r.json()["error"]
    assert entries_for(stack, session_id) == []


def test_wrongly_signed_hook_is_rejected_and_not_stored(stack, session_id):
    r = stack.post_hook(session_id, "activated", {"citizen_id": "cit-1", "operator_id": "op-1",
                                                  "station_id": "st-1"}, secret=b"not-the-secret")
    assert r.status == 401
    assert r.json()["error"]
    assert entries_for(stack, session_id) == []


def test_signature_of_another_body_is_rejected(stack, session_id):
    sig = hook_signature(stack.hook_secret, b'{"state":"failed","reason":"x"}')
    r = stack.post_hook(session_id, "stream", {"state": "active"}, sign=False,
                        headers={"X-Hamrahi-Signature": sig})
    assert r.status == 401
    assert entries_for(stack, session_id) == []


def test_stale_signature_is_rejected(stack, session_id):
    body = json.dumps({"state": "active"}).encode()
    sig = hook_signature(stack.hook_secret, body, t=int(__import__("time").time()) - 600)
    r = stack.post_hook(session_id, "stream", None, sign=False, raw=body,
                        headers={"X-Hamrahi-Signature": sig})
    assert r.status == 401
    assert entries_for(stack, session_id) == []


def test_malformed_json_is_400(stack, session_id):
    r = stack.post_hook(session_id, "activated", None, raw=b'{"citizen_id": "cit-1", ')
    assert r.status == 400
    assert r.json()["error"]
    assert entries_for(stack, session_id) == []


def test_missing_field_is_400(stack, session_id):
    r = stack.post_hook(session_id, "activated", {"citizen_id": "cit-1", "station_id": "st-1"})
    assert r.status == 400
    assert r.json()["error"]
    assert entries_for(stack, session_id) == []
