"""Issue 6 end to end, AC8: the stream and the fallback call racing at the
watchdog boundary. The stream wins while her phone still rings: the call is
cancelled and no fallback record stays. The call connects first: the later
stream is ignored and WebRTC is abandoned."""

from hamrahi import (abandon_entries, child_calls, citizen_call, event_applied,
                     sandbox_hangup, session_state, wait_until)

WATCHDOG_MS = 5000
FALLBACK_FIELDS = ("webrtc_failed_at", "fallback_reason", "call_initiated_at",
                   "provider_call_ref")


def stream_active(stack, session_id):
    r = stack.post_hook(session_id, "stream", {"state": "active"})
    assert r.status == 202, r.body
    return r


def test_ac8_stream_active_while_ringing_cancels_the_call(stack, session_id, citizen,
                                                         script):
    cid, phone = citizen
    script(phone, "answer", after_ms=20000)  # rings well past the race
    stack.activate(session_id, citizen=cid, operator="op-1")
    call = wait_until(lambda: (lambda c: c if c and c["status"] == "ringing" else None)(
        citizen_call(stack, session_id)), WATCHDOG_MS / 1000 + 5,
        what="the fallback call ringing")
    wait_until(lambda: (stack.session_row(session_id) or {}).get("provider_call_ref"), 5,
               what="the fallback recorded")

    applied = stream_active(stack, session_id)
    wait_until(lambda: citizen_call(stack, session_id)["status"] == "canceled", 5,
               what="the call canceled at the provider")
    wait_until(lambda: event_applied(stack, applied), 5, what="stream_active applied")
    row = wait_until(lambda: (lambda r: r if r["webrtc_active_at"] and all(
        r[f] is None for f in FALLBACK_FIELDS) else None)(stack.session_row(session_id)), 5,
        what="the fallback fields cleared")
    assert row["state"] == "webrtc_active"
    assert abandon_entries(stack, session_id) == []
    assert child_calls(stack, session_id) == []
    assert len(stack.sandbox_calls(to=phone)) == 1
    assert call["sid"] == citizen_call(stack, session_id)["sid"]


def test_ac8_call_connected_first_ignores_the_late_stream(stack, session_id, citizen,
                                                          script):
    cid, phone = citizen
    script(phone, "answer", after_ms=200)
    stack.activate(session_id, citizen=cid, operator="op-1")
    call = wait_until(lambda: (lambda c: c if c and c["status"] == "in-progress" else None)(
        citizen_call(stack, session_id)), WATCHDOG_MS / 1000 + 5,
        what="the fallback call answered")
    wait_until(lambda: session_state(stack, session_id) == "phone_connected", 5,
               what="phone_connected")

    applied = stream_active(stack, session_id)
    wait_until(lambda: event_applied(stack, applied), 5, what="stream_active applied")
    row = stack.session_row(session_id)
    assert row["state"] == "phone_connected"
    assert row["webrtc_active_at"] is None
    assert row["provider_call_ref"] == call["sid"]
    assert citizen_call(stack, session_id)["status"] == "in-progress"
    assert len(abandon_entries(stack, session_id)) == 1

    sandbox_hangup(stack, call["sid"])
    wait_until(lambda: session_state(stack, session_id) == "closed", 10,
               what="the session closed")
    assert [c["status"] for c in child_calls(stack, session_id)] in ([], ["completed"],
                                                                    ["canceled"])
