"""The worker end to end, beyond the walking skeleton (test_02): AC4's fields
for a signalling error, AC10 (early release, never-activated sessions),
out-of-order events and duplicate deliveries (docs/worker-state-machine.md,
"Ordering and duplicates")."""

import json
import time

from hamrahi import now_ms, wait_until
from worker_scenarios import (WATCHDOG_MS, assert_complete_record, call_request_ms,
                              fallback_row, new_citizen, new_session_id, no_call_for,
                              stream_at_ms)


def test_ac4_signalling_error_records_all_four_fields(stack, session_id, citizen):
    cid, phone = citizen
    stack.activate(session_id, citizen=cid)
    time.sleep(0.3)
    failed_at = stream_at_ms(stack, stack.post_hook(
        session_id, "stream", {"state": "failed", "reason": "ice_failed"}))
    (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), 3, what="the fallback call")
    # AC2 for a signalling error: the call follows the failure at once.
    assert call_request_ms(call) - failed_at <= 2000
    wait_until(lambda: fallback_row(stack, session_id), 5, what="the fallback record")
    row = assert_complete_record(stack, session_id, call, reason="signalling_error")
    assert abs(row["webrtc_failed_at"].timestamp() * 1000 - failed_at) < 50
    assert row["watchdog_deadline"] is not None


def test_ac10_released_after_one_second_never_calls(stack, session_id, citizen):
    cid, phone = citizen
    stack.activate(session_id, citizen=cid)
    time.sleep(1.0)
    r = stack.post_hook(session_id, "released", {"reason": "citizen_cancelled"})
    assert r.status == 202, r.body
    no_call_for(stack, phone, 6.0)  # 7 s after the activation
    row = wait_until(lambda: (lambda r: r if r and r["released_at"] else None)(
        stack.session_row(session_id)), 5, what="released_at")
    assert row["state"] == "released"
    assert row["fallback_reason"] is None and row["provider_call_ref"] is None


def test_ac10_hooks_of_a_never_activated_session_never_call(stack, citizen):
    cid, phone = citizen
    ids = [new_session_id() for _ in range(3)]
    stack.stream_active(ids[0])
    assert stack.post_hook(ids[1], "stream", {"state": "failed", "reason": "x"}).status == 202
    assert stack.post_hook(ids[2], "released", {"reason": "early"}).status == 202
    # Nothing names the citizen, so no call may reach her; nor any call at all
    # for these sessions (the sandbox knows the session from the callback URL).
    no_call_for(stack, phone, 7.0)
    for sid in ids:
        row = stack.session_row(sid)
        assert row is None or row["provider_call_ref"] is None, row


def test_released_before_activated_blocks_a_later_activation(stack, session_id, citizen):
    cid, phone = citizen
    assert stack.post_hook(session_id, "released", {"reason": "early"}).status == 202
    time.sleep(0.2)
    stack.activate(session_id, citizen=cid)
    no_call_for(stack, phone, 6.5)


def test_stream_active_before_activated_means_no_watchdog(stack, session_id, citizen):
    cid, phone = citizen
    stack.stream_active(session_id)
    time.sleep(0.2)
    stack.activate(session_id, citizen=cid)
    no_call_for(stack, phone, 6.5)
    row = wait_until(lambda: (lambda r: r if r and r["webrtc_active_at"] else None)(
        stack.session_row(session_id)), 5, what="webrtc_active_at")
    assert row["state"] == "webrtc_active"
    assert row["fallback_reason"] is None and row["provider_call_ref"] is None


def test_stream_failed_before_activated_falls_back_at_activation(stack, session_id, citizen):
    cid, phone = citizen
    assert stack.post_hook(session_id, "stream",
                           {"state": "failed", "reason": "ice_failed"}).status == 202
    time.sleep(0.2)
    at = stream_at_ms(stack, stack.activate(session_id, citizen=cid))
    (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), 3, what="the fallback call")
    assert call_request_ms(call) - at < WATCHDOG_MS  # did not wait for the watchdog
    wait_until(lambda: fallback_row(stack, session_id), 5, what="the fallback record")
    assert_complete_record(stack, session_id, call, reason="signalling_error")
    time.sleep(1)
    assert len(stack.sandbox_calls(to=phone)) == 1


def xadd_event(stack, session_id, kind, payload, at=None):
    return stack.redis.xadd("hamrahi:events", {
        "type": kind, "session_id": session_id, "at_ms": str(at or now_ms()),
        "payload": json.dumps(payload, separators=(",", ":"))})


def test_the_same_activation_stored_twice_makes_one_call(stack, session_id, citizen):
    cid, phone = citizen
    payload = {"citizen_id": cid, "operator_id": "op-1", "station_id": "st-1"}
    at = now_ms()
    xadd_event(stack, session_id, "activated", payload, at)
    xadd_event(stack, session_id, "activated", payload, at)
    (call,) = wait_until(lambda: stack.sandbox_calls(to=phone), WATCHDOG_MS / 1000 + 3,
                         what="the fallback call")
    # A third copy after the fallback, and a duplicated failure, change nothing.
    xadd_event(stack, session_id, "activated", payload, at)
    xadd_event(stack, session_id, "stream_failed", {"state": "failed", "reason": "x"})
    xadd_event(stack, session_id, "stream_failed", {"state": "failed", "reason": "x"})
    time.sleep(2)
    assert len(stack.sandbox_calls(to=phone)) == 1
    wait_until(lambda: fallback_row(stack, session_id), 5, what="the fallback record")
    assert_complete_record(stack, session_id, call)


def test_redelivered_entries_apply_once(stack):
    """Two entries are taken by a consumer that then dies without XACK. One
    had its effects committed (its id is in processed_events): when the
    worker claims them (claim_idle_ms) that one is acknowledged without
    effect, the other is applied: its overdue watchdog fires at once."""
    done_sid, todo_sid = new_session_id(), new_session_id()
    (done_cid, done_phone), (todo_cid, todo_phone) = new_citizen(stack), new_citizen(stack)
    # The ghost takes them in the same transaction that adds them, so the
    # worker (blocked in XREADGROUP) cannot see them first. It may take
    # other undelivered entries too: the worker claims those as well.
    pipe = stack.redis.pipeline(transaction=True)
    for sid, cid in ((done_sid, done_cid), (todo_sid, todo_cid)):
        pipe.xadd("hamrahi:events", {
            "type": "activated", "session_id": sid, "at_ms": str(now_ms()),
            "payload": json.dumps({"citizen_id": cid, "operator_id": "op-1",
                                   "station_id": "st-1"})})
    pipe.xreadgroup("fallback", "ghost", {"hamrahi:events": ">"}, count=1000)
    *ids, read = pipe.execute()
    taken = {entry_id for _, entries in read for entry_id, _ in entries}
    assert set(ids) <= taken, (ids, taken)
    stack.sql("INSERT INTO processed_events (stream_id, session_id) VALUES (%s, %s) "
              "ON CONFLICT DO NOTHING RETURNING stream_id", ids[0], done_sid)
    (call,) = wait_until(lambda: stack.sandbox_calls(to=todo_phone), 25,
                         what="the claimed activation's call")
    time.sleep(1)
    assert len(stack.sandbox_calls(to=todo_phone)) == 1
    pending = stack.redis.xpending_range("hamrahi:events", "fallback", "-", "+", 100)
    assert not [p for p in pending if p["message_id"] in ids]
    assert stack.sandbox_calls(to=done_phone) == []
