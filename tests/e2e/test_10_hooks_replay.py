"""Replay protection of the signalling hooks: a signed request already stored
is refused with 409 and the id it was stored under; anything else is new.
(The retry after a 503 is in test_80_hooks_redis_chaos.py: it stops Redis.)"""

import json
import time

from hamrahi import events_of, hook_signature, http


def send(stack, session_id, kind, body, signature):
    return http("POST", f"{stack.url}/v1/sos/sessions/{session_id}/{kind}", body,
                {"Content-Type": "application/json", "X-Hamrahi-Signature": signature})


def test_replayed_request_is_409_with_the_first_id(stack, session_id):
    body = json.dumps({"state": "failed", "reason": "ice"}).encode()
    sig = hook_signature(stack.hook_secret, body)
    first = send(stack, session_id, "stream", body, sig)
    assert first.status == 202, (first.status, first.body)
    stream_id = first.json()["id"]
    for _ in range(3):
        again = send(stack, session_id, "stream", body, sig)
        assert again.status == 409, (again.status, again.body)
        assert again.headers["Content-Type"].startswith("application/json")
        assert again.json()["error"] == "replayed"
        assert again.json()["id"] == stream_id
    assert [e[0] for e in events_of(stack, session_id)] == [stream_id]


def test_replay_key_lives_as_long_as_the_signature(stack, session_id):
    body = json.dumps({"reason": "ttl"}).encode()
    t = int(time.time()) - 100
    r = send(stack, session_id, "released", body, hook_signature(stack.hook_secret, body, t=t))
    assert r.status == 202
    keys = stack.redis.keys(f"hamrahi:replay:{session_id}:*")
    assert len(keys) == 1, keys
    assert keys[0].startswith(f"hamrahi:replay:{session_id}:released:")
    assert stack.redis.get(keys[0]) == r.json()["id"]
    ttl_ms = stack.redis.pttl(keys[0])
    # accepted until t + 300 s, so remembered about 200 s more (+1 s margin)
    assert 195_000 < ttl_ms <= 202_000, ttl_ms


def test_same_body_for_two_sessions_in_one_second_is_not_a_replay(stack, session_id):
    """The signature covers t and the body only: two sessions can be sent
    byte-identical hooks in the same second, and both must be stored."""
    body = json.dumps({"state": "active"}).encode()
    sig = hook_signature(stack.hook_secret, body)
    a = send(stack, session_id + "-a", "stream", body, sig)
    b = send(stack, session_id + "-b", "stream", body, sig)
    assert (a.status, b.status) == (202, 202), (a.body, b.body)
    assert len(events_of(stack, session_id + "-a")) == 1
    assert len(events_of(stack, session_id + "-b")) == 1


def test_same_body_on_another_route_is_not_a_replay(stack, session_id):
    body = json.dumps({"state": "failed", "reason": "x"}).encode()
    sig = hook_signature(stack.hook_secret, body)
    assert send(stack, session_id, "stream", body, sig).status == 202
    assert send(stack, session_id, "released", body, sig).status == 202
    assert len(events_of(stack, session_id)) == 2


def test_resigned_request_is_new(stack, session_id):
    """The same body signed at another second is another request (a sender
    that retries must resend the original signature to be deduplicated)."""
    body = json.dumps({"reason": "twice"}).encode()
    now = int(time.time())
    first = send(stack, session_id, "released", body, hook_signature(stack.hook_secret, body, t=now))
    second = send(stack, session_id, "released", body,
                  hook_signature(stack.hook_secret, body, t=now - 1))
    assert (first.status, second.status) == (202, 202)
    assert first.json()["id"] != second.json()["id"]


def test_refused_request_leaves_no_replay_key(stack, session_id):
    """Nothing is remembered for a request that was not stored."""
    body = b'{"state":"bogus"}'
    r = send(stack, session_id, "stream", body, hook_signature(stack.hook_secret, body))
    assert r.status == 400
    assert stack.redis.keys(f"hamrahi:replay:{session_id}:*") == []


def test_script_cache_flushed_is_not_an_outage(stack, session_id):
    """The module sends its script by SHA1; a Redis that lost its script
    cache answers NOSCRIPT and gets the script's text instead."""
    stack.redis.script_flush()
    body = json.dumps({"reason": "after SCRIPT FLUSH"}).encode()
    sig = hook_signature(stack.hook_secret, body)
    r = send(stack, session_id, "released", body, sig)
    assert r.status == 202, (r.status, r.body)
    assert send(stack, session_id, "released", body, sig).status == 409
    assert len(events_of(stack, session_id)) == 1
